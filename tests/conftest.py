"""Shared fixtures: the Redis server the storage tests run against.

``BUTTRESS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) names the server; it must be on the
loopback interface. When it cannot be reached the Redis tests are skipped, unless
``BUTTRESS_REQUIRE_SERVICES=1`` (CI), which makes them fail instead. Tests never flush a database:
they write under a prefix unique to the run and delete only those keys afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

# The private redis-server of the fault tests: fixtures ``server`` and ``stores``.
pytest_plugins = ["tests._redis_server"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("BUTTRESS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (BUTTRESS_REQUIRE_SERVICES=1 requires it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the Redis server for tests; skips (or fails) the test when it is unreachable."""
    url = os.environ.get("BUTTRESS_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis  # noqa: PLC0415 - the redis extra is optional
    except ImportError:
        _unavailable("the redis package is not installed (pip install 'buttress[redis]')")
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and parts.hostname not in _LOOPBACK:
        _unavailable(f"BUTTRESS_REDIS_URL={url!r} is not on the loopback interface")
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as error:
        _unavailable(f"no Redis server at {url}: {error}")
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this run; its keys (and only those) are deleted at the end.

    buttress keys start with the hash tag ``{<prefix>:``; tests may extend the prefix (e.g.
    ``f"{redis_prefix}-{n}"``) and those keys are deleted too.
    """
    import redis  # noqa: PLC0415 - the redis extra is optional

    prefix = f"buttress-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=1.0)
    try:
        batch = list(client.scan_iter(match=f"{{{prefix}*", count=1000))
        while batch:
            client.delete(*batch[:1000])
            batch = batch[1000:]
    finally:
        client.close()
