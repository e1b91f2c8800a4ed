"""A private ``redis-server`` for the fault tests: started on a free loopback port, and stopped,
frozen and started again mid-test (never the shared server of ``conftest.py``).

``tests/conftest.py`` loads this module as a pytest plugin, so every test can ask for its
fixtures: ``server`` (a started :class:`PrivateRedis`, killed at teardown), ``stores`` (a
list where a test puts the stores it makes, closed at teardown in the test's event loop) and
``redis_cluster`` (a private Redis Cluster of three masters for the whole session, see
:class:`PrivateCluster`).

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
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = [
    "PrivateCluster",
    "PrivateRedis",
    "free_port",
    "private_server",
    "redis_cluster",
    "server",
    "stores",
]


def free_port() -> int:
    """A loopback TCP port free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, which the test may stop, freeze and start again.

    Args:
        directory: Its working directory (and where its unix socket goes).
        unix: Listen on a unix socket (``socket``) instead of a TCP port.
        tls: ``(certificate, key)``: speak TLS only, on the port (the certificate is its own CA).
    """

    def __init__(
        self, directory: Path, *, unix: bool = False, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.socket = directory / "redis.sock" if unix else None
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}?db=0"
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        if self.socket is not None:
            return ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.tls is not None:
            cert, key = self.tls
            return [
                *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
                *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
                *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
            ]
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def start(self) -> None:
        """Start the server (on the same port every time) and wait until it answers."""
        import redis  # noqa: PLC0415 - the redis extra is optional

        assert self.process is None
        arguments = [*self._arguments(), "--save", "", "--appendonly", "no"]
        arguments += ["--dir", str(self.directory)]
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
        options: dict[str, Any] = {
            "socket_timeout": 2,
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.socket is not None:
            return redis.Redis(unix_socket_path=str(self.socket), **options)
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls[0]))
        return redis.Redis(host="127.0.0.1", port=self.port, **options)


class PrivateCluster:
    """A Redis Cluster of ``size`` masters (no replicas) of this test run's own, on loopback.

    Each node is a ``redis-server --cluster-enabled yes`` on a free port (its cluster bus on
    another), its files in ``directory``; :meth:`start` joins them with
    ``redis-cli --cluster create`` and waits until every node reports ``cluster_state:ok`` and
    agrees on the slot map.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(size)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        """Start the nodes, make them one cluster, wait until it serves every slot."""
        for port in self.ports:
            home = self.directory / str(port)
            home.mkdir()
            arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)]
            arguments += ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            arguments += ["--cluster-config-file", str(home / "nodes.conf")]
            arguments += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
            self.processes.append(
                subprocess.Popen(  # noqa: S603 - a fixed command line of our own
                    ["redis-server", *arguments],  # noqa: S607 - on PATH, checked by the fixture
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait(lambda client: bool(client.ping()), port, "answer PING")
        subprocess.run(  # noqa: S603 - a fixed command line of our own
            [  # noqa: S607 - on PATH, checked by the fixture
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in self.ports:
            self._wait(self._ready, port, "report cluster_state:ok")

    def _ready(self, client: Any) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        served = sum(int(entry[1]) - int(entry[0]) + 1 for entry in self.slots(client))
        return "cluster_state:ok" in text and served == 16384

    @staticmethod
    def slots(client: Any) -> list[Any]:
        """``CLUSTER SLOTS`` as the node of ``client`` sees it."""
        return list(client.execute_command("CLUSTER", "SLOTS"))

    def _wait(self, check: Any, port: int, what: str) -> None:
        import redis  # noqa: PLC0415 - the redis extra is optional

        client = self.client(port)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    if check(client):
                        return
                except redis.RedisError:
                    pass
                if any(p.poll() is not None for p in self.processes):
                    raise RuntimeError("a redis-server of the cluster exited")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node 127.0.0.1:{port} did not {what} within 30 s")
                time.sleep(0.05)
        finally:
            client.close()

    def client(self, port: int) -> Any:
        """A plain (not cluster) client of one node (the caller closes it)."""
        import redis  # noqa: PLC0415 - the redis extra is optional

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)

    def node_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s hash slot."""
        from redis.crc import key_slot  # noqa: PLC0415 - the redis extra is optional

        slot = key_slot(key.encode())
        client = self.client(self.ports[0])
        try:
            for start, end, master, *_ in self.slots(client):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        finally:
            client.close()
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        """Kill every node."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # in case a test left it frozen
                process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []


def private_server(directory: Path, **options: Any) -> Generator[PrivateRedis, None, None]:
    """The body of a ``server`` fixture: a started :class:`PrivateRedis`, killed at teardown.

    ``options`` go to :class:`PrivateRedis` (``unix=True``, ``tls=``).

    Skips the test when ``redis-server`` is not on PATH (fails it instead when
    ``BUTTRESS_REQUIRE_SERVICES=1``).
    """
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed: the fault tests start servers of their own"
        if os.environ.get("BUTTRESS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (BUTTRESS_REQUIRE_SERVICES=1 requires it)", pytrace=False)
        pytest.skip(reason)
    private = PrivateRedis(directory, **options)
    private.start()
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server for this test alone (see :func:`private_server`)."""
    pytest.importorskip("redis")
    yield from private_server(tmp_path)


@pytest.fixture
async def stores() -> AsyncIterator[list[Any]]:
    """The stores a test makes; closed at teardown (in the test's event loop), failed or not."""
    made: list[Any] = []
    yield made
    for store in made:
        await store.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A private Redis Cluster of three masters for the whole session, killed at its end.

    Skips the test when the cluster cannot be started (``redis-server`` or ``redis-cli``
    missing, or the nodes never agree); fails it instead when ``BUTTRESS_REQUIRE_SERVICES=1``.
    """
    require = os.environ.get("BUTTRESS_REQUIRE_SERVICES") == "1"

    def unavailable(reason: str) -> NoReturn:
        if require:
            pytest.fail(f"{reason} (BUTTRESS_REQUIRE_SERVICES=1 requires it)", pytrace=False)
        pytest.skip(reason)

    try:
        import redis  # noqa: F401, PLC0415 - the redis extra is optional
    except ImportError:
        unavailable("the redis package is not installed (pip install 'buttress[redis]')")
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        unavailable(f"{' and '.join(missing)} not installed: the cluster tests start their own")
    cluster = PrivateCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        cluster.stop()
        detail = getattr(error, "stderr", None) or b""
        unavailable(f"could not start a private Redis Cluster: {error} {detail!r}")
    try:
        yield cluster
    finally:
        cluster.stop()
