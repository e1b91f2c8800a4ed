"""Shared breakers on a Redis Cluster: the basics of ``test_shared.py`` again, on a private cluster.

The cluster is the session's own (``redis_cluster``, see ``tests/_redis_server.py``). The classes
imported below are collected again in this module, where ``store`` is a counting store on the
cluster; then breakers whose state lives on each of the three masters work side by side.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("redis")

from redis.crc import key_slot

from buttress import CircuitOpen
from buttress.breaker import CircuitBreaker, State
from tests._redis_server import PrivateCluster
from tests.breaker.test_shared import Boom, CountingStore, fail, ok
from tests.breaker.test_shared import TestHalfOpen as TestClusterHalfOpen
from tests.breaker.test_shared import TestRoundTrips as TestClusterRoundTrips
from tests.breaker.test_shared import TestViews as TestClusterViews

__all__ = ["TestClusterHalfOpen", "TestClusterRoundTrips", "TestClusterViews"]

PREFIX = f"cluster-breaker-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def store(redis_cluster: PrivateCluster) -> AsyncIterator[CountingStore]:
    made = CountingStore(url=redis_cluster.url, prefix=PREFIX)
    yield made
    await made.aclose()


@pytest.fixture
def name() -> str:
    return f"shared-{uuid.uuid4().hex[:8]}"


def names_on_every_master(cluster: PrivateCluster) -> dict[int, str]:
    """A breaker name whose keys live on each master."""
    found: dict[int, str] = {}
    while len(found) < len(cluster.ports):
        name = f"b-{uuid.uuid4().hex[:8]}"
        found.setdefault(cluster.node_of(f"{{{PREFIX}:breaker:{name}}}"), name)
    return found


class TestSpread:
    def test_breakers_on_every_master_open_for_every_process(self, store, redis_cluster):
        names = names_on_every_master(redis_cluster)
        slots = {key_slot(f"{{{PREFIX}:breaker:{name}}}".encode()) for name in names.values()}
        for port, name in names.items():
            here = CircuitBreaker(name, storage=store, registry=None, fail_max=2)
            there = CircuitBreaker(name, storage=store, registry=None, fail_max=2, sync_interval=0)
            there.call(ok)  # learns CLOSED
            for _ in range(2):
                with contextlib.suppress(Boom):
                    here.call(fail)
            assert here.state is State.OPEN, port
            with contextlib.suppress(CircuitOpen):
                there.call(ok)  # admitted on its view, or not: its write teaches OPEN
            with pytest.raises(CircuitOpen):
                there.call(ok)
        assert {store._cluster.slots[slot] for slot in slots} == {
            ("127.0.0.1", port) for port in redis_cluster.ports
        }

    async def test_async_breakers_on_every_master(self, store, redis_cluster):
        for name in names_on_every_master(redis_cluster).values():
            breaker = CircuitBreaker(name, storage=store, registry=None, fail_max=1)
            with contextlib.suppress(Boom):
                await breaker.acall(self._afail)
            assert breaker.state is State.OPEN

    @staticmethod
    async def _afail() -> None:
        raise Boom
