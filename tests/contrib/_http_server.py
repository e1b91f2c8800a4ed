"""A real HTTP/1.1 server on loopback, scripted to fail: the counterpart of the HTTP client tests.

It runs an asyncio server in a thread of its own, on a free 127.0.0.1 port, with keep-alive.
Each request gets the next :class:`Reply` of the script (or the default one, or what a handler
function returns): a status with headers and a body, after an optional delay, or a connection
dropped before any answer, or a response broken off mid-body. It counts what it received, the
connections it accepted, and the requests whose client went away while it was still waiting to
answer (a cancelled hedge, a timeout).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    """What the server does with one request.

    Attributes:
        status: The status code.
        headers: Extra response headers.
        body: The body.
        delay: Seconds to wait before answering (the client may go away meanwhile).
        drop: Close the connection without answering.
        reset_after: Send the head and this many body bytes, then reset the connection.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    drop: bool = False
    reset_after: int | None = None


@dataclass(frozen=True)
class Received:
    """A request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


def slow_first_attempts(seconds: float) -> Callable[[Received], Reply]:
    """A server handler: the first attempt of each call is slow, hedges answer at once."""

    def handler(request: Received) -> Reply:
        if request.headers.get("x-attempt") == "1":
            return Reply(delay=seconds, body=b"slow")
        return Reply(body=b"fast")

    return handler


def first_attempt_slow_once(
    seconds: float, header: str = "x-attempt"
) -> Callable[[Received], Reply]:
    """A handler: the first request whose ``header`` says attempt 1 waits ``seconds`` ("slow").

    Every other request answers "fast" at once. It goes by the attempt header, not by arrival:
    on a loaded machine a hedge can reach the server before the attempt it hedges.
    """
    slow = [Reply(delay=seconds, body=b"slow")]

    def handler(request: Received) -> Reply:
        if request.headers.get(header) == "1":
            with contextlib.suppress(IndexError):
                return slow.pop()  # atomic: one request only, whatever the threads
        return Reply(body=b"fast")

    return handler


class ScriptedServer:
    """The server; use it as a context manager (it starts and stops with the block)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.default = Reply()
        self.handler: Callable[[Received], Reply] | None = None
        self.received: list[Received] = []
        self.connections = 0
        self.gone = 0  # requests whose client went away before the answer
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        return len(self.received)

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests (then the default applies)."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.received.clear()
            self.connections = 0
            self.gone = 0
        self.default = Reply()
        self.handler = None

    def _next(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            if self._script:
                return self._script.popleft()
        if self.handler is not None:
            return self.handler(request)
        return self.default

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the scripted server did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    # -- one connection -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self._body(reader, headers)
            request = Received(method, path, headers, body, time.monotonic())
            reply = self._next(request)
            if reply.delay > 0:
                try:
                    data = await asyncio.wait_for(reader.read(1), reply.delay)
                except (TimeoutError, asyncio.TimeoutError):
                    data = None
                if data == b"":  # the client went away while we waited
                    with self._lock:
                        self.gone += 1
                    return
            if reply.drop:
                writer.transport.abort()
                return
            writer.write(self._head(reply, method))
            if reply.reset_after is not None:
                writer.write(reply.body[: reply.reset_after])
                await writer.drain()
                writer.transport.abort()
                return
            if method != "HEAD":
                writer.write(reply.body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk[:-2])
        return b""

    @staticmethod
    def _head(reply: Reply, method: str) -> bytes:
        phrase = http.HTTPStatus(reply.status).phrase
        lines = [f"HTTP/1.1 {reply.status} {phrase}"]
        lines.append(f"content-length: {len(reply.body)}")
        lines.extend(f"{name}: {value}" for name, value in reply.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@contextlib.contextmanager
def serving(host: str = "127.0.0.1") -> Iterator[ScriptedServer]:
    """Start a scripted server for the block."""
    with ScriptedServer(host) as server:
        yield server
