"""The Redis store: limiter state shared by every process, one round trip per decision.

Every operation is one atomic Lua script called by ``EVALSHA`` (redis-py's ``register_script``
objects, which load the script again after a ``NOSCRIPT`` reply, e.g. after a server restart or a
``SCRIPT FLUSH``). The scripts ship as package data in ``buttress/storage/lua/`` and implement the
arithmetic of :mod:`buttress.ratelimit._algorithms` on the server, all rates of a decision at once,
all or nothing, on the server's clock (``TIME``) so that hosts with skewed clocks agree.

Key layout, for a store prefix ``P`` and a limiter key ``K`` (every key of one limiter key shares
the hash tag ``{P:K}``, so that the multi-key scripts work on Redis Cluster)::

    {P:K}:<alg>:<limit>:<period>          the state of one rate (a string; for the sliding
                                          window log, a sorted set of the admitted requests)
    {P:K}:swl:<limit>:<period>:total      the log's sum of costs (and its last entry's number)
    {P:K}:leases                          the concurrency leases (sorted set, score = expiry)

``<alg>`` is ``fw``, ``swl``, ``swc``, ``tb`` or ``gcra``; ``<period>`` is the period in seconds
as Python's ``repr`` writes it (``60.0``). Every state key expires once its state is the same as a
fresh one, and the lease set with its latest lease, so Redis frees what is no longer needed.

Two rate tuples that share a rate share its state here (the memory store keeps one state per
tuple): ``10/second`` on ``user:1`` is the same limit wherever it appears.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript, Script
from redis.retry import Retry

from buttress._errors import ConfigurationError, StorageError
from buttress._types import check_int, seconds
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate

__all__ = ["RedisStorage"]

# algorithm -> (short name in keys, script file, keys per rate)
_ALGORITHMS: dict[str, tuple[str, str, int]] = {
    "fixed-window": ("fw", "fixed_window", 1),
    "sliding-window": ("swl", "sliding_window", 2),
    "sliding-window-counter": ("swc", "sliding_window_counter", 1),
    "token-bucket": ("tb", "token_bucket", 1),
    "gcra": ("gcra", "gcra", 1),
}
_SCRIPTS = (
    *(f"decide:{algorithm}" for algorithm in _ALGORITHMS),
    "reset",
    "lease_acquire",
    "lease_renew",
    "lease_release",
    "lease_count",
)
_DEFAULT_URL = "redis://localhost:6379/0"

# Whole-call bound of the coroutine methods, in multiples of ``timeout``: one for connecting,
# one for the command (each is also bounded by the socket timeouts).
_CALL_BOUND = 2.0


@functools.cache
def _source(name: str) -> str:
    """Return the text of the script ``name``: ``common.lua``, then its own part(s)."""
    lua = resources.files("buttress.storage").joinpath("lua")
    if name.startswith("decide:"):
        parts = ["common", _ALGORITHMS[name.removeprefix("decide:")][1], "decide"]
    else:
        parts = ["common", name]
    return "\n".join(lua.joinpath(f"{part}.lua").read_text("utf-8") for part in parts)


class _Plan:
    """What a decision under one (algorithm, rates) sends, apart from the key and the request."""

    __slots__ = ("distinct", "rates", "script", "suffixes", "tail")

    def __init__(self, algorithm: str, rates: tuple[Rate, ...]) -> None:
        if algorithm not in _ALGORITHMS:
            raise ValueError(
                f"algorithm must be one of {', '.join(_ALGORITHMS)}, got {algorithm!r}"
            )
        if (
            not isinstance(rates, tuple)
            or not rates
            or not all(isinstance(rate, Rate) for rate in rates)
        ):
            raise TypeError("rates must be a non-empty tuple of Rate")
        short, _, per_rate = _ALGORITHMS[algorithm]
        # A rate that appears twice is decided once: its state is one key, and the memory
        # store's two identical states give the same answers as one.
        distinct = tuple(dict.fromkeys(rates))
        suffixes: list[str] = []
        tail: list[str] = []
        for rate in distinct:
            suffix = f":{short}:{rate.limit}:{rate.period!r}"
            suffixes.append(suffix)
            if per_rate == 2:
                suffixes.append(f"{suffix}:total")
            tail += (str(rate.limit), repr(rate.period))
        self.rates = rates  # the tuple this plan was made for (see RedisStorage._plan)
        self.script = f"decide:{algorithm}"
        self.distinct = distinct
        self.suffixes = tuple(suffixes)
        self.tail = tuple(tail)

    def decision(self, reply: Any) -> Decision:
        """Read a decision script's reply: "allowed binding remaining reset_after retry_after"."""
        # bytes, or str for a client made with decode_responses=True: both split and convert.
        allowed, binding, remaining, reset, retry = reply.split()
        rate = self.distinct[int(binding) - 1]
        admitted = allowed in (b"1", "1")
        return Decision(
            admitted,
            rate.limit,
            int(remaining),
            float(reset),
            None if admitted else float(retry),
            rate,
        )


def _address(client: object) -> str:
    """Describe the server a client talks to, without credentials (for error messages)."""
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    if "host" not in kwargs:
        return type(client).__name__
    host = str(kwargs["host"])
    if ":" in host:
        host = f"[{host}]"
    connection_class = getattr(pool, "connection_class", None)
    scheme = "rediss" if "SSL" in getattr(connection_class, "__name__", "") else "redis"
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"


def _check_clients(client: object, async_client: object) -> None:
    # Checked at run time too: passing an asyncio client as `client` is an easy mistake.
    if client is not None and not isinstance(client, redis.Redis):
        hint = ": pass it as async_client=" if isinstance(client, redis.asyncio.Redis) else ""
        raise TypeError(f"client must be a redis.Redis, got {type(client).__name__}{hint}")
    if async_client is not None and not isinstance(async_client, redis.asyncio.Redis):
        raise TypeError(
            f"async_client must be a redis.asyncio.Redis, got {type(async_client).__name__}"
        )


def _client_url(url: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ConfigurationError(
            f"invalid Redis URL {url!r}: expected redis://, rediss://, unix:// or redis+unix://"
        )
    return f"{'unix' if scheme == 'redis+unix' else scheme}://{rest}"


class RedisStorage:
    """Limiter state in Redis, shared by every process that uses the same server and prefix.

    Implements :class:`buttress.storage.Storage`; see the module docstring for the key layout.

    Args:
        client: A ``redis.Redis`` for the synchronous methods. Clients passed in stay yours to
            close; :meth:`close` closes only the clients the store made itself.
        async_client: A ``redis.asyncio.Redis`` for the coroutine methods.
        prefix: The namespace of every key (no ``{`` or ``}``: it goes inside the hash tag).
        url: Where to connect when a client is not given (``redis://``, ``rediss://``,
            ``unix://`` or ``redis+unix://``). The asyncio client is made from it on first use, one
            per event loop. With no client and no URL, ``redis://localhost:6379/0``.
        timeout: Seconds allowed to connect and to each command of the clients made from ``url``
            (a coroutine call as a whole is also cut off after twice this). Redis-py's own
            retries are off for them: a slow or absent server fails fast, and the limiter's
            ``on_store_error`` policy answers.
        **client_options: Passed to ``from_url`` of ``redis.Redis`` and ``redis.asyncio.Redis``
            for the clients made from ``url`` (e.g. ``ssl_ca_certs=``); they override the socket
            timeouts and the retry policy set from ``timeout``.

    Raises:
        TypeError, ValueError: For a bad argument, naming it.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = "buttress",
        url: str | None = None,
        timeout: float = 0.25,
        **client_options: Any,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__} ({prefix!r})")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(
                f"prefix must be a non-empty str without '{{' or '}}' (it goes inside the key's "
                f"hash tag), got {prefix!r}"
            )
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        _check_clients(client, async_client)
        if url is None and client is None and async_client is None:
            url = _DEFAULT_URL
        self._url = None if url is None else _client_url(url)
        self._prefix = prefix
        if client_options and self._url is None:
            raise TypeError(
                f"unexpected keyword arguments {', '.join(sorted(client_options))}: client "
                "options apply only to the clients made from url="
            )
        self._options = client_options
        self._lock = threading.Lock()
        self._owns_client = client is None and self._url is not None
        if client is None and self._url is not None:
            client = redis.Redis.from_url(self._url, **self._sync_options())
        self._client = client
        self._scripts: dict[str, Script] | None = None
        if client is not None:
            self._scripts = {name: client.register_script(_source(name)) for name in _SCRIPTS}
        self._async_client = async_client
        self._async_scripts: dict[str, AsyncScript] | None = None
        if async_client is not None:
            self._async_scripts = {
                name: async_client.register_script(_source(name)) for name in _SCRIPTS
            }
        # Clients made from the URL for each event loop (an asyncio connection belongs to one).
        self._loop_clients: dict[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, dict[str, AsyncScript]]
        ] = {}
        self._address = _address(client if client is not None else async_client)
        self._plans: dict[tuple[str, int], _Plan] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "buttress",
        timeout: float = 0.25,
        **client_options: Any,
    ) -> RedisStorage:
        """Make a store that connects to ``url``.

        The synchronous client is made now (it connects on first use), the asyncio one on the
        first coroutine call.

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS),
                ``unix:///path/to/redis.sock?db=0`` or ``redis+unix:///path?db=0``.
            prefix: The namespace of every key.
            timeout: Seconds allowed to connect and to each command.
            **client_options: Passed to ``redis.Redis.from_url`` and
                ``redis.asyncio.Redis.from_url`` (e.g. ``ssl_ca_certs=``); they override the
                socket timeouts and the retry policy buttress sets.

        Raises:
            ConfigurationError: For a URL that is not a Redis URL.
        """
        return cls(prefix=prefix, url=url, timeout=timeout, **client_options)

    # -- clients ---------------------------------------------------------------------------------

    def _common_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            **self._options,
        }

    def _sync_options(self) -> dict[str, Any]:
        return {"retry": Retry(NoBackoff(), 0), **self._common_options()}

    def _async(self) -> dict[str, AsyncScript]:
        if self._async_scripts is not None:
            return self._async_scripts
        if self._url is None:
            raise ConfigurationError(
                "this RedisStorage has no asyncio client: pass async_client= or url= to use its "
                "coroutine methods"
            )
        loop = asyncio.get_running_loop()
        found = self._loop_clients.get(loop)
        if found is not None:
            return found[1]
        with self._lock:
            found = self._loop_clients.get(loop)
            if found is None:
                # Forget the clients of finished event loops: their connections ended with them.
                for other in [other for other in self._loop_clients if other.is_closed()]:
                    del self._loop_clients[other]
                client = redis.asyncio.Redis.from_url(
                    self._url, **{"retry": AsyncRetry(NoBackoff(), 0), **self._common_options()}
                )
                scripts = {name: client.register_script(_source(name)) for name in _SCRIPTS}
                found = self._loop_clients[loop] = (client, scripts)
        return found[1]

    # -- running scripts -------------------------------------------------------------------------

    def _failure(self, operation: str, why: str) -> StorageError:
        return StorageError(f"Redis {operation} failed on {self._address}: {why}")

    def _run(self, operation: str, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run one script on the synchronous client: one round trip (EVALSHA)."""
        scripts = self._scripts
        if scripts is None:
            raise ConfigurationError(
                "this RedisStorage has only an asyncio client: pass client= or url= to use its "
                "synchronous methods"
            )
        try:
            return scripts[script](keys, args)
        except (redis.RedisError, OSError) as error:
            raise self._failure(operation, f"{type(error).__name__}: {error}") from error

    async def _arun(
        self, operation: str, script: str, keys: Sequence[str], args: Sequence[str]
    ) -> Any:
        """Run one script on the asyncio client, the whole call bounded in time."""
        call = self._async()[script](keys, args)
        bound = self._timeout * _CALL_BOUND
        try:
            return await asyncio.wait_for(call, bound)
        except asyncio.TimeoutError as error:  # (the builtin TimeoutError from 3.11)
            raise self._failure(operation, f"no answer within {bound:g} s") from error
        except (redis.RedisError, OSError) as error:
            raise self._failure(operation, f"{type(error).__name__}: {error}") from error

    # -- arguments -------------------------------------------------------------------------------

    def _tag(self, key: str) -> str:
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} ({key!r})")
        return f"{{{self._prefix}:{key}}}"

    def _plan(self, algorithm: str, rates: tuple[Rate, ...]) -> _Plan:
        # Keyed by the identity of the tuple (a limiter passes the same one every time), which
        # spares hashing every Rate on each decision; the plan keeps the tuple alive.
        plan = self._plans.get((algorithm, id(rates)))
        if plan is None or plan.rates is not rates:
            plan = _Plan(algorithm, rates)
            if len(self._plans) >= 256:
                self._plans.clear()
            self._plans[algorithm, id(rates)] = plan
        return plan

    def _decide_args(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        consume: bool,
        now: float | None,
    ) -> tuple[_Plan, list[str], tuple[str, ...]]:
        plan = self._plan(algorithm, rates)
        if type(cost) is not int or cost < 0:
            check_int(cost, "cost", minimum=0)
        tag = self._tag(key)
        keys = [tag + suffix for suffix in plan.suffixes]
        head = ("" if now is None else repr(float(now)), str(cost), "1" if consume else "0")
        return plan, keys, head + plan.tail

    def _reset_keys(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> list[str]:
        tag = self._tag(key)
        return [tag + suffix for suffix in self._plan(algorithm, rates).suffixes]

    def _leases(self, key: str) -> list[str]:
        return [self._tag(key) + ":leases"]

    @staticmethod
    def _now(now: float | None) -> str:
        return "" if now is None else repr(float(now))

    @staticmethod
    def _lease_id(lease_id: str) -> str:
        if not isinstance(lease_id, str):
            raise TypeError(f"lease_id must be a str, got {type(lease_id).__name__}")
        return lease_id

    def _acquire_args(
        self, limit: int, lease_id: str, ttl: float, now: float | None
    ) -> tuple[str, ...]:
        check_int(limit, "limit", minimum=1)
        ttl = seconds(ttl, "ttl")
        return (self._now(now), str(limit), self._lease_id(lease_id), repr(ttl))

    def _renew_args(self, lease_id: str, ttl: float, now: float | None) -> tuple[str, ...]:
        ttl = seconds(ttl, "ttl")
        return (self._now(now), self._lease_id(lease_id), repr(ttl))

    # -- the Storage protocol --------------------------------------------------------------------

    def decide(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        *,
        consume: bool = True,
        now: float | None = None,
    ) -> Decision:
        """Decide a request of ``cost`` on ``key`` against every rate, all or nothing.

        One round trip: a script that reads, decides and (when every rate admits the request and
        ``consume`` is true) writes every rate's state atomically.

        Args:
            algorithm: One of :data:`buttress.ratelimit.ALGORITHMS`.
            key: The limiter key (e.g. ``"user:42"``).
            rates: The limits, all applied.
            cost: The request's units.
            consume: ``False`` to only look (a peek): nothing is counted.
            now: A time to use instead of the server's clock (for tests).

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        plan, keys, args = self._decide_args(algorithm, key, rates, cost, consume, now)
        return plan.decision(self._run("decide", plan.script, keys, args))

    async def adecide(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        *,
        consume: bool = True,
        now: float | None = None,
    ) -> Decision:
        """The coroutine form of :meth:`decide`."""
        plan, keys, args = self._decide_args(algorithm, key, rates, cost, consume, now)
        return plan.decision(await self._arun("decide", plan.script, keys, args))

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """Forget everything recorded for ``key`` under these rates.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        self._run("reset", "reset", self._reset_keys(algorithm, key, rates), ())

    async def areset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """The coroutine form of :meth:`reset`."""
        await self._arun("reset", "reset", self._reset_keys(algorithm, key, rates), ())

    def acquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """Take a slot for ``lease_id`` if fewer than ``limit`` live leases exist on ``key``.

        Taking a lease id that is already live renews it (it keeps its one slot).

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = self._acquire_args(limit, lease_id, ttl, now)
        return bool(self._run("acquire_lease", "lease_acquire", self._leases(key), args) == 1)

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`acquire_lease`."""
        args = self._acquire_args(limit, lease_id, ttl, now)
        return bool(
            await self._arun("acquire_lease", "lease_acquire", self._leases(key), args) == 1
        )

    def renew_lease(self, key: str, lease_id: str, ttl: float, *, now: float | None = None) -> bool:
        """Extend a live lease to ``ttl`` from now; ``False`` if it had already expired.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = self._renew_args(lease_id, ttl, now)
        return bool(self._run("renew_lease", "lease_renew", self._leases(key), args) == 1)

    async def arenew_lease(
        self, key: str, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`renew_lease`."""
        args = self._renew_args(lease_id, ttl, now)
        return bool(await self._arun("renew_lease", "lease_renew", self._leases(key), args) == 1)

    def release_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """Free a lease's slot; ``False`` if it was not held (expired, or released before).

        Args:
            key: The limiter key.
            lease_id: The lease to free.
            now: A time to use instead of the server's clock (for tests): a lease whose TTL has
                run out by then was not held.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = (self._now(now), self._lease_id(lease_id))
        return bool(self._run("release_lease", "lease_release", self._leases(key), args) == 1)

    async def arelease_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """The coroutine form of :meth:`release_lease`."""
        args = (self._now(now), self._lease_id(lease_id))
        reply = await self._arun("release_lease", "lease_release", self._leases(key), args)
        return bool(reply == 1)

    def count_leases(self, key: str, *, now: float | None = None) -> int:
        """Return how many live leases ``key`` has.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        return int(self._run("count_leases", "lease_count", self._leases(key), (self._now(now),)))

    async def acount_leases(self, key: str, *, now: float | None = None) -> int:
        """The coroutine form of :meth:`count_leases`."""
        reply = await self._arun(
            "count_leases", "lease_count", self._leases(key), (self._now(now),)
        )
        return int(reply)

    def close(self) -> None:
        """Close the synchronous client made by this store (clients passed in stay open).

        In asyncio code, ``await`` :meth:`aclose` instead: it also closes the asyncio client.
        """
        if self._owns_client and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the clients made by this store.

        That is the synchronous one and the asyncio one of the running event loop; clients
        passed in stay open.
        """
        self.close()
        with self._lock:
            found = self._loop_clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()

    def __repr__(self) -> str:
        return f"RedisStorage({self._address!r}, prefix={self._prefix!r})"
