"""The flaky upstream service of ``buttress demo``: a small HTTP server run in its own process.

``python -m buttress.demo._upstream PORT SECONDS SEED [STORAGE [PREFIX]]`` serves ``GET /`` on
127.0.0.1:PORT along a timeline of SECONDS (from the first request on):

* healthy, 30 % of the time: about 10 ms per request (``CAPACITY`` requests at once, the rest
  queue), 5 % of them 503s and 4 % latency spikes of 300 ms;
* an **outage**, the middle third: every request takes 250 ms and gets a 503 (a request that
  arrived during the outage is answered that way, even if it waited in the queue past its end);
* healthy again, the rest of the time.

In front of it sits a throttled API: each client (the ``x-client`` header) may send
``THROTTLE`` requests a second (a buttress ``Limiter``, GCRA; in memory, or on Redis when STORAGE
is a ``redis://`` URL); over it, a 429 with ``Retry-After``. Each client has a service of its own
behind the throttle (the same capacity and seeded faults), so that the load one client causes
cannot slow the other down. ``GET /stats`` answers, in JSON,
how many requests each client sent (``received``) and how many reached the service behind the
throttle (``served``): the load each client put on it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from buttress.ratelimit import Limiter
from buttress.storage import storage_from_url

CAPACITY = 8  # requests the service works on at once (the rest wait in its queue)
THROTTLE = "100/second"  # per client, at the throttled API in front of the service
PHASES = (("healthy", 0.3), ("outage", 0.63), ("recovered", 1.0))  # phase, ends at this fraction


def phase_at(elapsed: float, seconds: float) -> str:
    """The phase of the timeline ``elapsed`` seconds in."""
    for name, end in PHASES:
        if elapsed < end * seconds:
            return name
    return PHASES[-1][0]


class Upstream:
    """The service and the throttle in front of it, counting every request per client."""

    def __init__(self, seconds: float, seed: int, storage: str, prefix: str) -> None:
        self.seconds = seconds
        self.seed = seed
        self.started: float | None = None
        # Each client gets a service of its own (same capacity, same seeded faults), so that
        # what one client does to the service cannot hurt the other's figures.
        self.services: dict[str, tuple[asyncio.Semaphore, random.Random]] = {}
        store = (
            storage_from_url(storage)
            if storage.startswith("memory:")
            else storage_from_url(storage, prefix=prefix)
        )
        self.limiter = Limiter(THROTTLE, algorithm="gcra", storage=store, name="demo-api")
        self.received: dict[str, int] = {}
        self.served: dict[str, int] = {}

    def phase(self) -> str:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return phase_at(now - self.started, self.seconds)

    async def answer(self, client: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request of ``client``."""
        self.received[client] = self.received.get(client, 0) + 1
        decision = await self.limiter.ahit(f"client:{client}")
        if not decision.allowed:
            wait = max(1, int(decision.retry_after or 0.0) + 1)
            return 429, {"Retry-After": str(wait)}, b"throttled"
        self.served[client] = self.served.get(client, 0) + 1
        phase = self.phase()
        service = self.services.get(client)
        if service is None:
            service = (asyncio.Semaphore(CAPACITY), random.Random(f"{self.seed}"))
            self.services[client] = service
        slots, draws = service
        async with slots:
            if phase == "outage":
                await asyncio.sleep(0.25)
                return 503, {}, b"down"
            draw = draws.random()
            await asyncio.sleep(0.3 if draw < 0.04 else draws.uniform(0.005, 0.015))
            if draw > 0.95:
                return 503, {}, b"flaky"
            return 200, {}, b"ok"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection, request after request."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if " " in lines[0] else "/"
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                if path == "/stats":
                    body = json.dumps({"received": self.received, "served": self.served}).encode()
                    status, extra = 200, {"Content-Type": "application/json"}
                else:
                    status, extra, body = await self.answer(headers.get("x-client", "anonymous"))
                reason = {200: "OK", 429: "Too Many Requests", 503: "Service Unavailable"}[status]
                lines_out = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
                lines_out += [f"{name}: {value}" for name, value in extra.items()]
                writer.write(("\r\n".join(lines_out) + "\r\n\r\n").encode("latin-1") + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def serve(port: int, seconds: float, seed: int, storage: str, prefix: str) -> None:
    """Serve until the process is stopped."""
    upstream = Upstream(seconds, seed, storage, prefix)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=512)
    async with server:
        print("ready", flush=True)
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """Parse ``PORT SECONDS SEED [STORAGE [PREFIX]]`` and serve."""
    port, seconds, seed = int(argv[0]), float(argv[1]), int(argv[2])
    storage = argv[3] if len(argv) > 3 else "memory://"
    prefix = argv[4] if len(argv) > 4 else "buttress-demo"
    asyncio.run(serve(port, seconds, seed, storage, prefix))


if __name__ == "__main__":
    main(sys.argv[1:])
