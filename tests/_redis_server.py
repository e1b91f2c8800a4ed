"""A private ``redis-server`` for the fault tests: started on a free loopback port, and stopped,
frozen and started again mid-test (never the shared server of ``conftest.py``).

A test module defines its own ``server`` fixture from :func:`private_server`::

    @pytest.fixture
    def server(tmp_path):
        yield from private_server(tmp_path)

``redis`` is imported lazily, so that a module importing this one can first skip itself with
``pytest.importorskip("redis")``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PrivateRedis", "free_port", "private_server"]


def free_port() -> int:
    """A loopback TCP port free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, which the test may stop, freeze and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on the same port every time) and wait until it answers."""
        import redis  # noqa: PLC0415 - the redis extra is optional

        assert self.process is None
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        arguments += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line of our own
            ["redis-server", *arguments],  # noqa: S607 - found on PATH, checked by the fixture
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down (its port refuses connections until :meth:`start`)."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.frozen:
            process.send_signal(signal.SIGCONT)
            self.frozen = False
        process.kill()
        process.wait(timeout=10)

    def freeze(self) -> None:
        """Stop the server's process without closing its port: connections hang, unanswered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def client(self) -> Any:
        """A plain client of this server (the caller closes it)."""
        import redis  # noqa: PLC0415 - the redis extra is optional
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        # No retries: a refused connection must fail at once while start() waits for the port.
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )


def private_server(directory: Path) -> Iterator[PrivateRedis]:
    """The body of a ``server`` fixture: a started :class:`PrivateRedis`, killed at teardown.

    Skips the test when ``redis-server`` is not on PATH (fails it instead when
    ``BUTTRESS_REQUIRE_SERVICES=1``).
    """
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed: the fault tests start servers of their own"
        if os.environ.get("BUTTRESS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (BUTTRESS_REQUIRE_SERVICES=1 requires it)", pytrace=False)
        pytest.skip(reason)
    private = PrivateRedis(directory)
    private.start()
    try:
        yield private
    finally:
        private.stop()
