"""End to end through real servers: several worker processes share one limit on the real Redis.

gunicorn serves the Flask app and uvicorn the ASGI app, each with several workers, on a free
loopback port; many concurrent requests from one client: a limit of N admits exactly N, whichever
worker answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 25
REQUESTS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - loopback only
            return reply.status, reply.read().decode(), _lower(reply.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), _lower(error.headers.items())


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


class Served:
    """A server process in its own process group, stopped with the test."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            [part.replace("{port}", str(self.port)) for part in command],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"the server exited: {stderr[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail("the server did not start in 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def environment(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "TEST_WEB_REDIS": redis_url,
        "TEST_WEB_PREFIX": f"{redis_prefix}-servers-{os.urandom(3).hex()}",
        "TEST_WEB_LIMIT": f"{LIMIT}/hour",
    }


def hammer(url: str) -> tuple[Counter[int], set[str]]:
    """``REQUESTS`` requests from 12 threads at once; the statuses and the workers that answered."""
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: get(url), range(REQUESTS)))
    statuses = Counter(status for status, _, _ in replies)
    workers = {body for status, body, _ in replies if status == 200}
    for status, _, headers in replies:
        if status == 429:
            assert int(headers["retry-after"]) > 0
    return statuses, workers


SERVERS = {
    # gunicorn (sync workers) serving the Flask app; uvicorn serving the bare ASGI app.
    "gunicorn": "-m gunicorn --workers 3 --bind 127.0.0.1:{port} --log-level warning "
    "tests.contrib.server_apps:flask_app()",
    "uvicorn": "-m uvicorn --factory tests.contrib.server_apps:asgi_app --workers 3 "
    "--host 127.0.0.1 --port {port} --log-level warning",
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_workers_share_one_limit_on_redis(server: str, environment: dict[str, str]) -> None:
    served = Served([sys.executable, *SERVERS[server].split()], environment)
    try:
        served.wait_ready("/limited")
        statuses, workers = hammer(served.url("/limited"))
    finally:
        served.stop()
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert len(workers) >= 2, "every admitted request was served by one worker"


WS_LIMIT = 3


@pytest.mark.parametrize("implementation", ["websockets", "websockets-sansio"])
def test_websocket_handshakes_are_limited_by_a_real_server(
    implementation: str, environment: dict[str, str]
) -> None:
    """uvicorn's WebSocket protocols: a handshake over the limit is an HTTP 429, not an upgrade."""
    from websockets.exceptions import InvalidStatus  # noqa: PLC0415

    command = (
        f"-m uvicorn --factory tests.contrib.server_apps:asgi_app --ws {implementation} "
        "--host 127.0.0.1 --port {port} --log-level warning"
    )
    served = Served(
        [sys.executable, *command.split()], {**environment, "TEST_WEB_WS_LIMIT": f"{WS_LIMIT}/hour"}
    )
    try:
        served.wait_ready("/ws")
        url = f"ws://127.0.0.1:{served.port}/ws"
        outcomes = [_echo_once(url, number) for number in range(WS_LIMIT + 2)]
    finally:
        served.stop()
    echoes = [outcome for outcome in outcomes if isinstance(outcome, str)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, InvalidStatus)]
    assert echoes == [f"echo hello {number}" for number in range(WS_LIMIT)]
    assert len(refused) == 2
    for rejection in refused:
        assert rejection.response.status_code == 429
        assert int(rejection.response.headers["Retry-After"]) > 0
        assert b"Too Many Requests" in rejection.response.body


def _echo_once(url: str, number: int) -> str | Exception:
    """One WebSocket session: the echo of ``hello <number>``, or the refused handshake's error."""
    from websockets.exceptions import InvalidStatus  # noqa: PLC0415
    from websockets.sync.client import connect  # noqa: PLC0415

    try:
        with connect(url, open_timeout=10) as session:
            assert session.response is not None
            assert session.response.headers["RateLimit-Remaining"] == str(WS_LIMIT - 1 - number)
            session.send(f"hello {number}")
            return str(session.recv(timeout=10))
    except InvalidStatus as error:
        return error
