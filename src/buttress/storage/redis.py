"""The Redis store: limiter state shared by every process, one round trip per decision.

Every operation is one atomic Lua script called by ``EVALSHA``; after a ``NOSCRIPT`` reply (a
server restart, a ``SCRIPT FLUSH``) the store loads the script and calls it again. The scripts ship
as package data in ``buttress/storage/lua/`` and implement the arithmetic of
:mod:`buttress.ratelimit._algorithms` on the server, all rates of a decision at once, all or
nothing, on the server's clock (``TIME``) so that hosts with skewed clocks agree. They need
Redis 6.0 or later (``SET ... KEEPTTL``).

A decision is the hot path, and both ends of it are kept lean: in Redis, one straight script per
algorithm for one rate (a loop only for several), the state read with one ``GET`` (the sliding
window log: one entry of its sorted set) and written with one ``SET``; in Python, a plan per
(algorithm, rates) made once, ``EVALSHA`` called directly with the keys alone (plus the cost when
it is not 1), and a reply of one short string. The ``redis`` extra installs hiredis, with which
redis-py writes commands and reads replies in C.

Key layout, for a store prefix ``P`` and a limiter key ``K`` (every key of one limiter key shares
the hash tag ``{P:K}``, so that the multi-key scripts work on Redis Cluster)::

    {P:K}:<alg>:<limit>:<period>    the state of one rate (a string, binary for the counter,
                                    token bucket and GCRA: big-endian doubles; for the
                                    sliding window log, a sorted set of the admitted requests)
    {P:K}:leases                    the concurrency leases (sorted set, score = expiry)

``<alg>`` is ``fw``, ``swlog``, ``counter``, ``bucket`` or ``tat`` (GCRA); ``<period>`` is the
period in seconds as Python's ``repr`` writes it (``60.0``): the scripts read limit and period back
from the key's name (exactly: ``tonumber`` gives back the same double). Every state key expires
once its state is the same as a fresh one, and the lease set with its latest lease, so Redis frees
what is no longer needed.

Two rate tuples that share a rate share its state, here as in the memory store: ``10/second``
on ``user:1`` is the same limit wherever it appears (a :class:`~buttress.ratelimit.Rate` with a
``scope`` is another rate: its key has ``:<scope>`` after the hash tag).

On a Redis Cluster (a ``redis+cluster://`` URL, or redis-py's cluster clients) the store keeps
the same design: its own connections, now one set per master, and each call sent straight to the
master of its keys' hash slot (computed here, CRC16 of the hash tag) from a slot map read with
``CLUSTER SLOTS``. ``MOVED`` corrects the map and the call is sent again; ``ASK`` is followed
with ``ASKING``; a failed master is a ``StorageError`` at once and has the map read again before
the next call (a failover). See :class:`_Cluster`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, cast

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from buttress._errors import ConfigurationError, StorageError
from buttress._types import check_int, seconds
from buttress.ratelimit._decision import Decision
from buttress.ratelimit._rate import Rate
from buttress.storage._breaker import BREAKER_OPERATIONS, BreakerReply

__all__ = ["RedisStorage"]

# algorithm -> (short name in keys, script file)
_ALGORITHMS: dict[str, tuple[str, str]] = {
    "fixed-window": ("fw", "fixed_window"),
    "sliding-window": ("swlog", "sliding_window"),
    "sliding-window-counter": ("counter", "sliding_window_counter"),
    "token-bucket": ("bucket", "token_bucket"),
    "gcra": ("tat", "gcra"),
}
_DEFAULT_URL = "redis://localhost:6379/0"
_BREAKER_RULES = 13  # the rules a breaker sends with each operation (see lua/breaker.lua)

# asyncio.timeout (3.11+): cheaper than wait_for, which before 3.12 runs the call in a new task.
_timeout_scope: Any = getattr(asyncio, "timeout", None)

# Whole-call bound of the coroutine methods, in multiples of ``timeout``: one for connecting,
# one for the command (each is also bounded by the socket timeouts).
_CALL_BOUND = 2.0


class _Script:
    """One Lua script: its text (bytes, as sent by ``SCRIPT LOAD``) and SHA-1 digest.

    The digest is kept as bytes, which redis-py sends as they are (a str is encoded each time).
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest().encode("ascii")  # noqa: S324 - Redis's name


@functools.cache
def _script(name: str) -> _Script:
    """Return the script ``name``, made of its parts in ``buttress/storage/lua/``.

    A decision script (``decide:<algorithm>``) is ``head.lua``, the algorithm's file and
    ``tail.lua``; every other one is ``common.lua`` and its own file.
    """
    lua = resources.files("buttress.storage").joinpath("lua")
    if name.startswith("decide:"):
        parts = ["head", _ALGORITHMS[name.removeprefix("decide:")][1], "tail"]
    else:
        parts = ["common", name]
    text = "\n".join(lua.joinpath(f"{part}.lua").read_text("utf-8") for part in parts)
    return _Script(text.encode("utf-8"))


class _Plan:
    """What a decision under one (algorithm, rates) sends, apart from the key and the request.

    ``suffixes`` complete ``"{" + prefix + ":" + key`` into each state key (the hash tag's
    closing brace included); ``suffix`` is the first of them.
    """

    __slots__ = (
        "commands",
        "distinct",
        "limit",
        "nkeys",
        "rate",
        "rates",
        "script",
        "single",
        "suffix",
        "suffixes",
    )

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
        short = _ALGORITHMS[algorithm][0]
        # A rate that appears twice is decided once: its state is one key, and the memory
        # store's two identical states give the same answers as one.
        distinct = tuple(dict.fromkeys(rates))
        suffixes = [
            f"}}:{rate.scope}:{short}:{rate.limit}:{rate.period!r}"
            if rate.scope
            else f"}}:{short}:{rate.limit}:{rate.period!r}"
            for rate in distinct
        ]
        self.rates = rates  # the tuple this plan was made for (see RedisStorage._plan)
        self.script = _script(f"decide:{algorithm}")
        self.distinct = distinct
        self.rate = distinct[0]
        self.limit = distinct[0].limit
        self.single = len(distinct) == 1  # the fast path of RedisStorage.decide
        self.suffix = suffixes[0]
        self.suffixes = tuple(suffixes)
        self.nkeys = len(suffixes)
        # key -> the packed EVALSHA of a common decision (RedisStorage._kept_command)
        self.commands: dict[str, bytes] = {}

    def decision(self, reply: Any) -> Decision:
        """Read a decision script's reply: big-endian doubles (see ``lua/head.lua``).

        Raises:
            StorageError: For a reply of another shape (not this version's script).
        """
        size = len(reply) if type(reply) is bytes else -1
        if self.single:
            rate = self.rate
            if size == 16:
                remaining, reset = _TWO(reply)
                return Decision(True, rate.limit, int(remaining), reset, None, rate)
            if size == 24:
                remaining, reset, retry = _THREE(reply)
                return Decision(False, rate.limit, int(remaining), reset, retry, rate)
        elif size == 24:
            index, remaining, reset = _THREE(reply)
            if 1 <= index <= self.nkeys and index == int(index):
                rate = self.distinct[int(index) - 1]
                return Decision(True, rate.limit, int(remaining), reset, None, rate)
        elif size == 32:
            index, remaining, reset, retry = _FOUR(reply)
            if 1 <= index <= self.nkeys and index == int(index):
                rate = self.distinct[int(index) - 1]
                return Decision(False, rate.limit, int(remaining), reset, retry, rate)
        raise StorageError(f"Redis decide failed: unexpected reply {reply!r:.80}")


_TWO = struct.Struct(">dd").unpack
_THREE = struct.Struct(">ddd").unpack
_FOUR = struct.Struct(">dddd").unpack
_COMMANDS_KEPT = 1024  # packed decision commands a plan keeps, by key (about 200 bytes each)

# hiredis's stub types the argument as a one-element tuple; it takes any number of them.
_pack = cast("Callable[[tuple[object, ...]], bytes]", hiredis.pack_command)


class _Closed(Exception):
    """The server closed the connection before any byte of the reply arrived."""


class _Link:
    """One connection of the store's own: redis-py's connection for the handshake, then its socket.

    redis-py makes and sets up the connection (address or unix socket, TLS, credentials,
    database, timeouts, client name); the store then writes commands packed by hiredis straight
    to its socket and reads replies with a hiredis reader of its own. A round trip then costs the
    client about a microsecond, where redis-py's command machinery costs tens.
    """

    __slots__ = ("connection", "reader", "sock")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.sock: Any = None  # None: not connected
        self.reader: Any = None

    def open(self) -> Any:
        """The connected socket (connecting first if needed)."""
        if self.sock is None:
            self.connection.connect()
            sock = getattr(self.connection, "_sock", None)
            if sock is None:
                raise redis.ConnectionError("this redis-py connection exposes no socket")
            _kernel_timeouts(sock)
            self.sock = sock
            self.reader = hiredis.Reader(replyError=redis.ResponseError)
        return self.sock

    def send(self, payload: bytes) -> None:
        """Write ``payload`` (connecting first if needed)."""
        sock = self.sock if self.sock is not None else self.open()
        try:
            sock.sendall(payload)
        except (BlockingIOError, TimeoutError) as error:  # the kernel's timeout, or Python's
            raise redis.TimeoutError("Timeout writing to socket") from error

    def read(self) -> Any:
        """Read one reply (an error reply is returned as a ``ResponseError``, not raised)."""
        reader = self.reader
        reply = reader.gets()
        while reply is False:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, TimeoutError) as error:  # see _kernel_timeouts
                raise redis.TimeoutError("Timeout reading from socket") from error
            if not data:
                raise _Closed
            reader.feed(data)
            reply = reader.gets()
        return reply

    def close(self) -> None:
        """Disconnect (the next use connects again)."""
        self.sock = self.reader = None
        self.connection.disconnect()


def _kernel_timeouts(sock: Any) -> None:
    """Move a plain socket's timeout from Python into the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``).

    A Python socket with a timeout polls before every send and receive: two system calls more
    per round trip, about a microsecond of a decision's time. A blocking socket with the same
    timeouts set in the kernel needs neither; a send or receive that times out fails with
    ``EAGAIN`` (``BlockingIOError``, which :class:`_Link` reports as ``redis.TimeoutError``).
    Only the standard library's own sockets: TLS sockets keep Python's timeout, and so do the
    cooperative sockets of gevent or eventlet (whose descriptors stay non-blocking, so a kernel
    timeout would never fire), sockets without a timeout, Windows (whose options take
    milliseconds, not a ``struct timeval``) and systems without these options.
    """
    timeout = sock.gettimeout()
    kind = type(sock)
    if (
        not timeout
        or (kind.__module__, kind.__qualname__) != ("socket", "socket")
        or sys.platform == "win32"
        or not hasattr(socket, "SO_RCVTIMEO")
    ):
        return
    whole = int(timeout)
    micro = min(max(round((timeout - whole) * 1_000_000), 0 if whole else 1), 999_999)  # 0: forever
    value = struct.pack("@ll", whole, micro)  # struct timeval
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:
        return  # keep Python's timeout
    sock.settimeout(None)


class _Connections:
    """The store's own connections to the server of a synchronous client, reused as a stack.

    Made with the client pool's connection class and settings, but outside the pool and always
    speaking RESP2 (no push messages: client-side caching and other RESP3 notifications stay on
    the client's own connections), used as :class:`_Link`. ``list.pop`` and ``append`` are
    atomic: no lock. After ``fork`` the child makes its own.
    """

    __slots__ = ("_free", "_overrides", "_pid", "_pool")

    def __init__(self, pool: Any, **overrides: Any) -> None:
        self._pool = pool
        # Settings that replace the pool's (a cluster node's host and port).
        self._overrides = {**overrides, "protocol": 2}
        self._free: list[_Link] = []
        self._pid = os.getpid()

    def take(self) -> _Link:
        """A connection for one command."""
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._free, self._pid = [], os.getpid()
        try:
            return self._free.pop()
        except IndexError:
            pool = self._pool
            return _Link(pool.connection_class(**{**pool.connection_kwargs, **self._overrides}))

    def give(self, link: _Link) -> None:
        """Return a connection (connected and in step with the server, or closed)."""
        self._free.append(link)

    def close(self) -> None:
        """Disconnect every idle connection."""
        while self._free:
            self._free.pop().close()


class _AsyncLink(asyncio.Protocol):
    """The store's own asyncio connection on one event loop, shared by its coroutines.

    redis-py's asyncio connection (its class and settings, RESP2) makes the connection and the
    handshake; then the link takes its transport over as the protocol: commands are written as
    they come, without waiting for earlier replies (pipelined), and the replies, parsed by
    hiredis as the bytes arrive (:meth:`data_received`), go back in order, each to the future
    of its command. No reader task sits between the socket and the callers: a reply reaches its
    caller one turn of the event loop sooner, for one task step less per read. A command whose
    caller stopped waiting (a timeout, a cancellation) still gets its reply read and dropped,
    so the replies stay in step. If the connection fails, every waiting command fails and the
    next call opens a new one.
    """

    __slots__ = (
        "_closing",
        "_deadlines",
        "_outgoing",
        "_parser",
        "_timer",
        "connection",
        "dead",
        "ready",
        "transport",
        "waiting",
    )

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: Any = None
        self._parser = hiredis.Reader(replyError=redis.ResponseError)
        # Commands sent during one turn of the event loop go out in one write at its end.
        self._outgoing: list[bytes] = []
        # When each waiting command must have its reply (loop time), and the one timer that
        # watches the oldest: replies come in order, so a late oldest reply means a stuck server.
        self._deadlines: collections.deque[float] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dead = False

    async def open(self) -> None:
        """Connect, then take the transport over; ``ready`` tells waiting callers how it went."""
        try:
            await self._connect()
        except BaseException as error:
            self.dead = True
            with contextlib.suppress(Exception):
                await self.connection.disconnect(nowait=True)
            if not self.ready.done():
                self.ready.set_exception(error)
                self.ready.exception()  # retrieved: no "never retrieved" warning if unused
            raise
        self.ready.set_result(None)

    async def _connect(self) -> None:
        await self.connection.connect()
        stream, writer = self.connection._reader, self.connection._writer  # noqa: SLF001
        if stream is None or writer is None:
            raise redis.ConnectionError("this redis-py connection exposes no stream")
        transport = writer.transport
        # Bytes the stream holds past the handshake's replies (none: redis-py reads a reply
        # whole) are the first of ours; the stream itself is read no more.
        leftover = bytes(getattr(stream, "_buffer", b""))
        transport.set_protocol(self)
        self.transport = transport
        if leftover:
            self.data_received(leftover)
        if not transport.is_reading():  # paused by the stream, when its buffer was full
            transport.resume_reading()
        if transport.is_closing():  # closed while it was the stream's: never to be told
            self._fail(redis.ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the oldest waiting command (asyncio's callback)."""
        parser, waiting, deadlines = self._parser, self.waiting, self._deadlines
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not False:
                future = waiting.popleft()
                deadlines.popleft()
                if not future.done():
                    future.set_result(reply)
                reply = parser.gets()
        except Exception as error:  # noqa: BLE001 - a garbled or unasked reply ends the link
            self._fail(redis.ConnectionError(f"{type(error).__name__}: {error}"))
            if self.transport is not None:
                self.transport.abort()

    def eof_received(self) -> bool:
        """The server closed the connection (asyncio's callback): the transport closes too."""
        self._fail(redis.ConnectionError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is closed (asyncio's callback): fail what waits, forget the streams.

        redis-py's connection is told here, at once, that its streams are gone (its own
        ``disconnect()`` is a coroutine: a task made for it now might never run before the loop
        closes, and the connection would then warn that it was left unclosed).
        """
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "the connection was closed"
        self._fail(redis.ConnectionError(why))
        self.transport = None
        connection = self.connection
        connection._reader = connection._writer = None  # noqa: SLF001 - see _connect

    def _fail(self, failure: BaseException) -> None:
        """End the connection for its users: every waiting command fails with ``failure``."""
        self.dead = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = self.waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_exception(failure)
        self._deadlines.clear()

    def send(self, payload: bytes, within: float) -> asyncio.Future[Any]:
        """Write one packed command; return the future of its reply, due ``within`` seconds.

        An error reply comes back as a ``ResponseError`` value, not raised. If a reply is late,
        the connection is given up and every waiting command fails with ``redis.TimeoutError``.
        """
        if self.dead:
            raise redis.ConnectionError("the connection is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        outgoing = self._outgoing
        if not outgoing:
            loop.call_soon(self._flush)
        outgoing.append(payload)
        self.waiting.append(future)
        deadline = loop.time() + within
        self._deadlines.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._watch, within)
        return future

    def _watch(self, within: float) -> None:
        """The timer: give up on a stuck server, or watch the next oldest command."""
        self._timer = None
        if self.dead or not self._deadlines:
            return
        loop = asyncio.get_running_loop()
        oldest = self._deadlines[0]
        if loop.time() >= oldest:
            self._fail(redis.TimeoutError(f"no answer within {within:g} s"))
            # Disconnect: a late reply must never reach a later command.
            self._closing = loop.create_task(self.close())
        else:
            self._timer = loop.call_at(oldest, self._watch, within)

    def _flush(self) -> None:
        """Write what was sent during this turn of the loop, in one go, in order."""
        outgoing, self._outgoing = self._outgoing, []
        if not self.dead:
            self.transport.write(b"".join(outgoing))

    async def close(self) -> None:
        """Disconnect (every waiting command fails)."""
        self._fail(redis.ConnectionError("the connection was closed"))
        transport = self.transport
        if transport is not None:
            transport.abort()
        await self.connection.disconnect(nowait=True)


_SLOTS = 16384  # the hash slots of a Redis Cluster
_REDIRECTIONS = 5  # MOVED, ASK and TRYAGAIN answers followed for one call before giving up
_TRYAGAIN_PAUSE = 0.01  # seconds before sending again after TRYAGAIN (a slot being migrated)
_REFRESH_PAUSE = 0.1  # seconds at least between two readings of the slot map
_ASKING = _pack(("ASKING",))
_CLUSTER_SLOTS = _pack(("CLUSTER", "SLOTS"))
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

_Node = tuple[str, int]
"""A cluster node's address: (host, port)."""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _Cluster:
    """What the store knows of a Redis Cluster: the master of each hash slot, and its connections.

    The slot map is learned from ``CLUSTER SLOTS`` (asked of the known masters, then of the seed
    nodes, until one answers) before the first command and again when it is *stale*: after a
    ``MOVED`` answer (whose slot is corrected at once) or a failed node (a failover may have
    promoted another), at most once every ``_REFRESH_PAUSE`` seconds. The synchronous
    connections are a :class:`_Connections` per master, made from the settings of ``pool``
    (``None`` for a store with only an asyncio client) with the node's host and port.

    Args:
        seeds: Nodes to ask for the slot map when no known master answers.
        pool: A redis-py connection pool whose connection class and settings the store's own
            synchronous connections use, or ``None``.
        remap: redis-py's ``address_remap`` of the client, if any: maps the address a node
            announces to the address to connect to.
    """

    __slots__ = ("connections", "lock", "nodes", "pool", "refresh_at", "remap", "seeds", "slots")

    def __init__(
        self, seeds: list[_Node], pool: Any, remap: Callable[[_Node], _Node] | None
    ) -> None:
        self.remap = remap
        self.nodes: dict[_Node, _Node] = {}  # each address once, so that equal nodes are one
        self.seeds = [self.node(host, port) for host, port in seeds]
        self.pool = pool
        self.slots: list[_Node | None] = [None] * _SLOTS
        self.refresh_at = 0.0  # the map is stale from this time (monotonic) on; inf: it is not
        self.lock = threading.Lock()  # one synchronous reading of the map at a time
        self.connections: dict[_Node, _Connections] = {}

    @property
    def stale(self) -> bool:
        """Whether the map is to be read again (now)."""
        return time.monotonic() >= self.refresh_at

    def outdated(self) -> None:
        """Mark the map as to be read again (not sooner than ``_REFRESH_PAUSE`` after the last)."""
        if self.refresh_at == float("inf"):
            self.refresh_at = time.monotonic()

    def node(self, host: str, port: int) -> _Node:
        """The node at an announced address (remapped as the client asks)."""
        address = (host, port)
        if self.remap is not None:
            address = self.remap(address)
        return self.nodes.setdefault(address, address)

    def sync_connections(self, node: _Node) -> _Connections:
        """The store's synchronous connections to ``node``."""
        found = self.connections.get(node)
        if found is None:
            made = _Connections(self.pool, host=node[0], port=node[1])
            found = self.connections.setdefault(node, made)  # atomic: one set per node
        return found

    def candidates(self) -> list[_Node]:
        """Whom to ask for the slot map: the known masters, then the seeds."""
        return list(dict.fromkeys([node for node in self.slots if node is not None] + self.seeds))

    def learn(self, reply: Any, asked: _Node) -> None:
        """Take the slot map from a ``CLUSTER SLOTS`` reply given by ``asked``."""
        slots: list[_Node | None] = [None] * _SLOTS
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = _text(master[0])
            if host in ("", "?"):  # the node does not know its own address: the one we used
                host = asked[0]
            node = self.node(host, int(master[1]))
            slots[start : end + 1] = [node] * (end + 1 - start)
        self.slots = slots
        self.refresh_at = float("inf")

    def began_refresh(self) -> None:
        """A reading of the map starts: no other until ``_REFRESH_PAUSE`` later, if it fails."""
        self.refresh_at = time.monotonic() + _REFRESH_PAUSE

    def redirect(
        self, reply: redis.ResponseError, slot: int, node: _Node
    ) -> tuple[_Node, bool, bool] | None:
        """Where an error reply sends the command: ``(node, asking, pause)``, or ``None``.

        ``MOVED <slot> <host>:<port>``: the slot lives there now (the map is corrected);
        ``ASK``: send ``ASKING`` and the command there, this once (a slot being migrated);
        ``TRYAGAIN``: the same node, after a pause. Any other error is the caller's.
        """
        kind, _, rest = str(reply).partition(" ")
        if kind == "TRYAGAIN":
            return node, False, True
        if kind not in ("MOVED", "ASK"):
            if kind == "CLUSTERDOWN":
                self.outdated()
            return None
        host, _, port = rest.partition(" ")[2].rpartition(":")
        target = self.node(host or node[0], int(port))
        if kind == "ASK":
            return target, True, False
        self.slots[slot] = target
        self.outdated()  # other slots have probably moved too
        return target, False, False

    def close(self) -> None:
        """Disconnect every idle synchronous connection."""
        for connections in list(self.connections.values()):
            connections.close()


def _cluster_url(url: str) -> tuple[str, list[_Node]]:
    """Split ``redis+cluster://[[user]:password@]host:port[,host:port...][/0][?options]``.

    Returns:
        A ``redis://`` (or ``rediss://``) URL of the first node with the credentials and
        options (for redis-py to make connections from), and every node given.

    Raises:
        ConfigurationError: When no node is given, a port is not a number, or a database other
            than 0 is asked for (Redis Cluster has only database 0).
    """
    scheme, _, rest = url.partition("://")
    tls = scheme.lower() == "rediss+cluster"
    netloc, _, tail = rest.partition("/")
    netloc, mark, query = netloc.partition("?")
    if mark:  # no path, only options: "host:port?option=..."
        tail = "?" + query
    path, _, query = tail.partition("?")
    credentials, at, hosts = netloc.rpartition("@")
    expected = f"expected {scheme}://host:port[,host:port...]"
    seeds: list[_Node] = []
    for item in hosts.split(","):
        entry = item.strip()
        if entry.startswith("["):  # an IPv6 address: [::1]:7000
            host, _, port = entry[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = entry.partition(":")
        if not host:
            raise ConfigurationError(
                f"invalid Redis Cluster URL {url!r}: no host in {item!r}; {expected}"
            )
        if not port.isdigit() and port != "":
            raise ConfigurationError(
                f"invalid Redis Cluster URL {url!r}: port {port!r} of {host!r} is not a number"
            )
        number = int(port) if port else 6379
        if not 0 < number < 65536:
            raise ConfigurationError(
                f"invalid Redis Cluster URL {url!r}: port {number} is not in 1..65535"
            )
        seeds.append((host, number))
    if path not in ("", "0"):
        raise ConfigurationError(
            f"invalid Redis Cluster URL {url!r}: database {path!r}, but a Redis Cluster has only "
            "database 0"
        )
    first_host, first_port = seeds[0]
    shown = f"[{first_host}]" if ":" in first_host else first_host
    first = f"{'rediss' if tls else 'redis'}://{credentials}{at}{shown}:{first_port}/0"
    return (f"{first}?{query}" if query else first), seeds


def _cluster_address(seeds: list[_Node], tls: bool) -> str:
    """Describe a cluster by its seed nodes (for error messages)."""
    nodes = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in seeds
    )
    return f"{'rediss' if tls else 'redis'}+cluster://{nodes}"


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
    if client is not None and not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
        hint = (
            ": pass it as async_client="
            if isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster))
            else ""
        )
        raise TypeError(
            "client must be a redis.Redis or a redis.cluster.RedisCluster, got "
            f"{type(client).__name__}{hint}"
        )
    if async_client is not None and not isinstance(
        async_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
    ):
        raise TypeError(
            "async_client must be a redis.asyncio.Redis or a redis.asyncio.cluster.RedisCluster, "
            f"got {type(async_client).__name__}"
        )


def _is_cluster_url(url: object) -> bool:
    return isinstance(url, str) and url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def _sync_template(client: redis.cluster.RedisCluster) -> Any:
    """A connection pool of a synchronous cluster client: its connection class and settings."""
    for node in cast("Any", client).get_nodes():
        if node.redis_connection is not None:
            return node.redis_connection.connection_pool
    manager = client.nodes_manager
    node = next(iter(manager.startup_nodes.values()))
    made = cast("Any", manager).create_redis_node(node.host, node.port, **manager.connection_kwargs)
    return made.connection_pool


def _async_template(client: redis.asyncio.cluster.RedisCluster) -> tuple[Any, dict[str, Any]]:
    """The connection class and settings of an asyncio cluster client's nodes."""
    node = next(iter(client.nodes_manager.startup_nodes.values()))
    return node.connection_class, dict(node.connection_kwargs)


def _client_seeds(client: object, async_client: object) -> list[_Node]:
    """The nodes that the cluster clients given know (where to ask for the slot map)."""
    seeds: list[_Node] = []
    if isinstance(client, redis.cluster.RedisCluster):
        seeds += [(node.host, int(node.port)) for node in cast("Any", client).get_nodes()]
        seeds += [
            (node.host, int(node.port)) for node in client.nodes_manager.startup_nodes.values()
        ]
    if isinstance(async_client, redis.asyncio.cluster.RedisCluster):
        manager = async_client.nodes_manager
        seeds += [(node.host, int(node.port)) for node in manager.startup_nodes.values()]
        seeds += [(node.host, int(node.port)) for node in manager.nodes_cache.values()]
    return list(dict.fromkeys(seeds))


def _client_url(url: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ConfigurationError(
            f"invalid Redis URL {url!r}: expected redis://, rediss://, unix://, redis+unix://, "
            "redis+cluster:// or rediss+cluster://"
        )
    return f"{'unix' if scheme == 'redis+unix' else scheme}://{rest}"


class RedisStorage:
    """Limiter state in Redis, shared by every process that uses the same server and prefix.

    Implements :class:`buttress.storage.Storage`; see the module docstring for the key layout.

    Args:
        client: A ``redis.Redis`` for the synchronous methods, or a
            ``redis.cluster.RedisCluster`` for a Redis Cluster (the store then uses its
            connection settings and known nodes, and talks to the masters on connections of its
            own). Clients passed in stay yours to close; :meth:`close` closes only the clients
            the store made itself.
        async_client: A ``redis.asyncio.Redis`` for the coroutine methods, or a
            ``redis.asyncio.cluster.RedisCluster``.
        prefix: The namespace of every key (no ``{`` or ``}``: it goes inside the hash tag).
        url: Where to connect when a client is not given (``redis://``, ``rediss://``,
            ``unix://``, ``redis+unix://``, or ``redis+cluster://host:port[,host:port...]`` and
            ``rediss+cluster://`` for a Redis Cluster). The asyncio client is made from it on first
            use, one per event loop. With no client and no URL, ``redis://localhost:6379/0``.
            Clients and URL must all be for a cluster, or all for one server.
        timeout: Seconds allowed to connect and to each command of the clients made from ``url``
            (a coroutine call as a whole is also cut off after twice this). Redis-py's own
            retries are off for them: a slow or absent server fails fast, and the limiter's
            ``on_store_error`` policy answers.
        **client_options: Passed to ``from_url`` of ``redis.Redis`` and ``redis.asyncio.Redis``
            for the clients made from ``url`` (e.g. ``ssl_ca_certs=``); they override the socket
            timeouts and the retry policy set from ``timeout``.

    Raises:
        TypeError, ValueError: For a bad argument, naming it (``ConfigurationError``, a
            ``ValueError``, for a malformed URL).
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | None = None,
        *,
        async_client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
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
        seeds: list[_Node] | None = None
        self._url: str | None
        if _is_cluster_url(url):
            assert isinstance(url, str)  # noqa: S101 - for type checkers: _is_cluster_url
            self._url, seeds = _cluster_url(url)
        else:
            self._url = None if url is None else _client_url(url)
        clustered = {
            isinstance(given, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))
            for given in (client, async_client)
            if given is not None
        }
        if url is not None:
            clustered.add(seeds is not None)
        if len(clustered) > 1:
            raise ConfigurationError(
                "client, async_client and url must all be for one Redis Cluster or all for one "
                "server, not a mix of the two"
            )
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
        self._client: redis.Redis | redis.cluster.RedisCluster | None = client
        self._async_client = async_client
        self._connections: _Connections | None = None
        # A Redis Cluster's slot map and the store's synchronous connections to its masters.
        self._cluster: _Cluster | None = None
        if True in clustered:
            self._cluster = self._make_cluster(client, async_client, seeds or [])
            tls = "SSL" in getattr(
                getattr(self._cluster.pool, "connection_class", None), "__name__", ""
            )
            tls = tls or (url is not None and url.lower().startswith("rediss+"))
            self._address = _cluster_address(self._cluster.seeds, tls)
        else:
            if isinstance(client, redis.Redis):
                self._connections = _Connections(client.connection_pool)
            self._address = _address(client if client is not None else async_client)
        # Clients made from the URL for each event loop (an asyncio connection belongs to one).
        self._loop_clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}
        # The store's own asyncio connection on each event loop (see _AsyncLink).
        self._links: dict[asyncio.AbstractEventLoop, _AsyncLink] = {}
        # On a Redis Cluster: one per event loop and master.
        self._node_links: dict[tuple[asyncio.AbstractEventLoop, _Node], _AsyncLink] = {}
        self._head = f"{{{prefix}:"  # a state key is head + key + a plan's suffix
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
                ``unix:///path/to/redis.sock?db=0``, ``redis+unix:///path?db=0``, or for a
                Redis Cluster ``redis+cluster://[[user]:password@]host:port[,host:port...]``
                (``rediss+cluster://`` with TLS; the nodes are seeds, any one will do).
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

    @staticmethod
    def _make_cluster(client: object, async_client: object, seeds: list[_Node]) -> _Cluster:
        """The cluster of the clients given, or of the URL (whose first node made ``client``)."""
        pool: Any = None
        remap: Any = None
        if isinstance(client, redis.cluster.RedisCluster):
            pool = _sync_template(client)
            remap = client.nodes_manager.address_remap
        elif isinstance(client, redis.Redis):  # made from the first node of a cluster URL
            pool = client.connection_pool
        if isinstance(async_client, redis.asyncio.cluster.RedisCluster):
            remap = remap or async_client.nodes_manager.address_remap
        seeds = list(dict.fromkeys([*seeds, *_client_seeds(client, async_client)]))
        return _Cluster(seeds, pool, remap)

    def _common_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            **self._options,
        }

    def _sync_options(self) -> dict[str, Any]:
        return {"retry": Retry(NoBackoff(), 0), **self._common_options()}

    def _async(self) -> redis.asyncio.Redis:
        if self._async_client is not None:
            # (never a cluster client: the cluster's links take their settings from its nodes)
            return cast("redis.asyncio.Redis", self._async_client)
        if self._url is None:
            raise ConfigurationError(
                "this RedisStorage has no asyncio client: pass async_client= or url= to use its "
                "coroutine methods"
            )
        loop = asyncio.get_running_loop()
        found = self._loop_clients.get(loop)
        if found is not None:
            return found
        with self._lock:
            found = self._loop_clients.get(loop)
            if found is None:
                # Forget the clients of finished event loops: their connections ended with them.
                for other in [other for other in self._loop_clients if other.is_closed()]:
                    del self._loop_clients[other]
                found = self._loop_clients[loop] = redis.asyncio.Redis.from_url(
                    self._url, **{"retry": AsyncRetry(NoBackoff(), 0), **self._common_options()}
                )
        return found

    # -- running scripts -------------------------------------------------------------------------

    def _failure(self, operation: str, why: str, node: _Node | None = None) -> StorageError:
        where = self._address if node is None else f"{node[0]}:{node[1]} of {self._address}"
        return StorageError(f"Redis {operation} failed on {where}: {why}")

    @staticmethod
    def _why(error: BaseException, bound: float) -> str:
        """Why an asyncio call failed, for its :class:`StorageError`."""
        if isinstance(error, (asyncio.TimeoutError, redis.TimeoutError)):
            return f"no answer within {bound:g} s"
        return f"{type(error).__name__}: {error}"

    def _sync(self) -> redis.Redis | redis.cluster.RedisCluster:
        if self._client is None:
            raise ConfigurationError(
                "this RedisStorage has only an asyncio client: pass client= or url= to use its "
                "synchronous methods"
            )
        return self._client

    def _run(self, operation: str, script: _Script, arguments: tuple[object, ...]) -> Any:
        """Run one script on the synchronous client: one round trip (``EVALSHA``).

        ``arguments`` are those of ``EVALSHA`` after the digest: the number of keys, the keys,
        the arguments. On a Redis Cluster, see :meth:`_run_cluster`; otherwise
        :meth:`_run_command`.
        """
        if self._connections is None:
            cluster = self._cluster
            if cluster is not None and self._client is not None:
                return self._run_cluster(cluster, operation, script, arguments)
            self._sync()  # raises ConfigurationError: no synchronous client
        return self._run_command(operation, script, _pack(("EVALSHA", script.sha, *arguments)))

    def _run_command(self, operation: str, script: _Script, command: bytes) -> Any:
        """Send ``command`` (a packed ``EVALSHA`` of ``script``) and return its reply.

        Not on a Redis Cluster, and only with a synchronous client (see :meth:`_run`). After
        ``NOSCRIPT`` the script is loaded and called again, on the same connection. The command
        goes out on one of the store's own connections (see :class:`_Link`), so the client's
        retry policy does not apply: a failure is reported at once and the caller's fault
        policy answers, except that a reused connection the server had closed (a restart, an
        idle timeout: the reply ends before its first byte) is replaced and the command sent
        once more.
        """
        connections = self._connections
        assert connections is not None  # noqa: S101 - see _run
        reply = self._send(connections, operation, script, command)
        if isinstance(reply, redis.ResponseError):  # the script failed: the link is in step
            raise self._failure(operation, f"ResponseError: {reply}") from reply
        return reply

    def _send(
        self,
        connections: _Connections,
        operation: str,
        script: _Script,
        command: bytes,
        asking: bool = False,
        node: _Node | None = None,
    ) -> Any:
        """Send ``command`` on one of ``connections``; return its reply (an error reply too).

        ``command`` is a packed ``EVALSHA`` of ``script`` (loaded on NOSCRIPT).

        Raises:
            StorageError: When the connection fails.
        """
        link = connections.take()
        try:
            try:
                reused = link.sock is not None
                try:
                    reply = self._exchange(link, script, command, asking)
                except _Closed:
                    link.close()
                    if not reused:
                        raise
                    reply = self._exchange(link, script, command, asking)
            except BaseException:
                link.close()  # a reply may be half read: never reuse the connection as it is
                raise
            finally:
                connections.give(link)
        except _Closed as error:
            raise self._failure(operation, "the server closed the connection", node) from error
        except (redis.RedisError, OSError) as error:
            raise self._failure(operation, f"{type(error).__name__}: {error}", node) from error
        return reply

    @staticmethod
    def _exchange(link: _Link, script: _Script, command: bytes, asking: bool = False) -> Any:
        """Send ``command`` (an ``EVALSHA`` of ``script``) on ``link`` and read its reply.

        After ``NOSCRIPT`` the script is loaded and ``command`` sent again.

        With ``asking``, each ``EVALSHA`` goes after an ``ASKING`` (a cluster's ``ASK``).
        """
        if asking:
            command = _ASKING + command
            link.send(command)
            link.read()  # +OK (were it an error, the EVALSHA's reply would say why)
        else:
            link.send(command)
        reply = link.read()
        if isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"):
            link.send(_pack(("SCRIPT", "LOAD", script.source)))
            loaded = link.read()
            if isinstance(loaded, redis.ResponseError):
                return loaded
            link.send(command)
            if asking:
                link.read()
            reply = link.read()
        return reply

    # -- Redis Cluster ---------------------------------------------------------------------------

    def _run_cluster(
        self, cluster: _Cluster, operation: str, script: _Script, arguments: tuple[object, ...]
    ) -> Any:
        """Run one script on the master of its keys' hash slot: one round trip, as a rule.

        The slot is the first key's (every key of one call has the same hash tag). A ``MOVED``
        answer corrects the map and sends the command to the named node; ``ASK`` sends
        ``ASKING`` and the command there; a node that fails is a ``StorageError`` at once (the
        caller's fault policy answers) and has the map read again before the next call.
        """
        if cluster.stale:
            self._refresh(cluster)
        slot = key_slot(cast("str", arguments[1]).encode())
        node = cluster.slots[slot]
        if node is None:
            problem = self._refresh(cluster, force=True)
            node = cluster.slots[slot]
            if node is None:
                raise self._failure(operation, problem or f"no master serves hash slot {slot}")
        asking = False
        command = _pack(("EVALSHA", script.sha, *arguments))
        for _ in range(_REDIRECTIONS):
            connections = cluster.sync_connections(node)
            try:
                reply = self._send(connections, operation, script, command, asking, node)
            except StorageError:
                cluster.outdated()  # a failover may have given the slot to another master
                raise
            if not isinstance(reply, redis.ResponseError):
                return reply
            hop = cluster.redirect(reply, slot, node)
            if hop is None:
                raise self._failure(operation, f"ResponseError: {reply}", node) from reply
            node, asking, pause = hop
            if pause:
                time.sleep(_TRYAGAIN_PAUSE)
        why = f"still redirected after {_REDIRECTIONS} tries (last: {reply})"
        raise self._failure(operation, why, node)

    def _refresh(self, cluster: _Cluster, *, force: bool = False) -> str | None:
        """Read the slot map from the first master or seed that answers ``CLUSTER SLOTS``.

        One thread at a time; the whole reading is bounded by twice ``timeout`` (each node by
        its connect and socket timeouts). Returns ``None``, or why no node answered.
        """
        with cluster.lock:
            if not (cluster.stale or force):
                return None  # another thread has just read it
            cluster.began_refresh()
            deadline = time.monotonic() + self._timeout * _CALL_BOUND
            problems: list[str] = []
            for node in cluster.candidates():
                if time.monotonic() > deadline:
                    problems.append("out of time")
                    break
                connections = cluster.sync_connections(node)
                link = connections.take()
                try:
                    link.send(_CLUSTER_SLOTS)
                    reply = link.read()
                except (_Closed, redis.RedisError, OSError) as error:
                    link.close()
                    problems.append(f"{node[0]}:{node[1]}: {type(error).__name__}: {error}")
                    continue
                except BaseException:
                    link.close()
                    raise
                finally:
                    connections.give(link)
                if isinstance(reply, redis.ResponseError):
                    problems.append(f"{node[0]}:{node[1]}: {reply}")
                    continue
                cluster.learn(reply, node)
                return None
            return "no node answered CLUSTER SLOTS (" + "; ".join(problems) + ")"

    async def _arun_cluster(
        self, cluster: _Cluster, operation: str, script: _Script, arguments: tuple[object, ...]
    ) -> Any:
        """The coroutine form of :meth:`_run_cluster`, on the store's asyncio connections."""
        bound = self._timeout * _CALL_BOUND
        if cluster.stale:
            await self._arefresh(cluster, bound)
        slot = key_slot(cast("str", arguments[1]).encode())
        node = cluster.slots[slot]
        if node is None:
            problem = await self._arefresh(cluster, bound, force=True)
            node = cluster.slots[slot]
            if node is None:
                raise self._failure(operation, problem or f"no master serves hash slot {slot}")
        asking = False
        for _ in range(_REDIRECTIONS):
            try:
                link = await self._node_opened(node, bound)
                reply = await self._asend(link, script, arguments, bound, asking)
            except (asyncio.TimeoutError, redis.RedisError, OSError) as error:
                cluster.outdated()
                raise self._failure(operation, self._why(error, bound), node) from error
            if not isinstance(reply, redis.ResponseError):
                return reply
            hop = cluster.redirect(reply, slot, node)
            if hop is None:
                raise self._failure(operation, f"ResponseError: {reply}", node) from reply
            node, asking, pause = hop
            if pause:
                await asyncio.sleep(_TRYAGAIN_PAUSE)
        why = f"still redirected after {_REDIRECTIONS} tries (last: {reply})"
        raise self._failure(operation, why, node)

    async def _arefresh(
        self, cluster: _Cluster, bound: float, *, force: bool = False
    ) -> str | None:
        """The coroutine form of :meth:`_refresh` (a concurrent reading does no harm)."""
        if not (cluster.stale or force):
            return None
        cluster.began_refresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        problems: list[str] = []
        for node in cluster.candidates():
            left = deadline - loop.time()
            if left <= 0:
                problems.append("out of time")
                break
            try:
                link = await self._node_opened(node, left)
                reply = await link.send(_CLUSTER_SLOTS, left)
            except (asyncio.TimeoutError, redis.RedisError, OSError) as error:
                problems.append(f"{node[0]}:{node[1]}: {type(error).__name__}: {error}")
                continue
            if isinstance(reply, redis.ResponseError):
                problems.append(f"{node[0]}:{node[1]}: {reply}")
                continue
            cluster.learn(reply, node)
            return None
        return "no node answered CLUSTER SLOTS (" + "; ".join(problems) + ")"

    def _async_template(self) -> tuple[Any, dict[str, Any]]:
        """The connection class and settings of the store's asyncio connections (cluster)."""
        if isinstance(self._async_client, redis.asyncio.cluster.RedisCluster):
            return _async_template(self._async_client)
        pool = self._async().connection_pool  # made from the first node of the cluster URL
        return pool.connection_class, pool.connection_kwargs

    async def _node_link(self, node: _Node) -> _AsyncLink:
        """The store's connection to a cluster node on the running event loop."""
        loop = asyncio.get_running_loop()
        link = self._node_links.get((loop, node))
        if link is None or link.dead:
            connection_class, kwargs = self._async_template()
            overrides = {"host": node[0], "port": node[1], "protocol": 2}
            link = _AsyncLink(connection_class(**{**kwargs, **overrides}))
            with self._lock:
                for other in [other for other in self._node_links if other[0].is_closed()]:
                    del self._node_links[other]  # the connections of finished loops ended
                self._node_links[loop, node] = link
            await link.open()
        elif not link.ready.done():
            await asyncio.shield(link.ready)  # another coroutine is opening it
        return link

    async def _node_opened(self, node: _Node, bound: float) -> _AsyncLink:
        """The open link to ``node``; opening one is bounded by ``bound`` seconds."""
        link = self._node_links.get((asyncio.get_running_loop(), node))
        if link is not None and not link.dead and link.ready.done():
            return link
        if _timeout_scope is None:  # Python 3.10
            return await asyncio.wait_for(self._node_link(node), bound)
        async with _timeout_scope(bound):
            return await self._node_link(node)

    # -- asyncio ---------------------------------------------------------------------------------

    async def _link(self) -> _AsyncLink:
        """The store's connection on the running event loop (opened on first use)."""
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None or link.dead:
            client = self._async()
            pool = client.connection_pool
            link = _AsyncLink(pool.connection_class(**{**pool.connection_kwargs, "protocol": 2}))
            with self._lock:
                for other in [other for other in self._links if other.is_closed()]:
                    del self._links[other]  # the connections of finished loops ended with them
                self._links[loop] = link
            await link.open()
        elif not link.ready.done():
            await asyncio.shield(link.ready)  # another coroutine is opening it
        return link

    async def _opened(self, bound: float) -> _AsyncLink:
        """The open link of the running loop; opening one is bounded by ``bound`` seconds."""
        link = self._links.get(asyncio.get_running_loop())
        if link is not None and not link.dead and link.ready.done():
            return link  # the common case: no timer, no await
        if _timeout_scope is None:  # Python 3.10
            return await asyncio.wait_for(self._link(), bound)
        async with _timeout_scope(bound):
            return await self._link()

    @staticmethod
    async def _asend(
        link: _AsyncLink,
        script: _Script,
        arguments: tuple[object, ...],
        bound: float,
        asking: bool = False,
    ) -> Any:
        """Call the script on ``link`` (loading it on NOSCRIPT); return its reply or error reply.

        With ``asking``, each ``EVALSHA`` goes after an ``ASKING`` (a cluster's ``ASK``).
        """
        command = _pack(("EVALSHA", script.sha, *arguments))
        if asking:
            link.send(_ASKING, bound)  # pipelined; its +OK is read and dropped
        reply = await link.send(command, bound)
        if isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = await RedisStorage._reload(link, script, command, bound, asking)
        return reply

    @staticmethod
    def _reload(
        link: _AsyncLink, script: _Script, command: bytes, bound: float, asking: bool = False
    ) -> asyncio.Future[Any]:
        """After ``NOSCRIPT``: load the script and send ``command`` again, pipelined."""
        link.send(_pack(("SCRIPT", "LOAD", script.source)), bound)
        if asking:
            link.send(_ASKING, bound)
        return link.send(command, bound)

    def _arun(
        self, operation: str, script: _Script, arguments: tuple[object, ...]
    ) -> Awaitable[Any]:
        """Run one script on the store's asyncio connection (await the result).

        ``arguments`` as for :meth:`_run`. On a Redis Cluster, see :meth:`_arun_cluster`;
        otherwise :meth:`_arun_command` (returned, not awaited here: no coroutine in between).
        """
        if self._cluster is not None:
            return self._arun_cluster(self._cluster, operation, script, arguments)
        return self._arun_command(operation, script, _pack(("EVALSHA", script.sha, *arguments)))

    async def _arun_command(self, operation: str, script: _Script, command: bytes) -> Any:
        """Send ``command`` (a packed ``EVALSHA`` of ``script``), each step bounded in time.

        Not on a Redis Cluster. Opening the connection is bounded by a timeout scope; each
        command by the link's one deadline timer (a timeout scope per call would cost more than
        the rest of the call). On an open connection the call is one await on the reply, with
        no coroutine in between (:meth:`_asend` spelled out): every coroutine call is the
        client's CPU per operation.
        """
        bound = self._timeout * _CALL_BOUND
        try:
            link = self._links.get(asyncio.get_running_loop())
            if link is None or link.dead or not link.ready.done():
                link = await self._opened(bound)
            reply = await link.send(command, bound)
            if isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"):
                reply = await self._reload(link, script, command, bound)
        except (asyncio.TimeoutError, redis.RedisError, OSError) as error:
            raise self._failure(operation, self._why(error, bound)) from error
        if isinstance(reply, redis.ResponseError):
            raise self._failure(operation, f"ResponseError: {reply}") from reply
        return reply

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

    def _arguments(
        self, plan: _Plan, key: str, cost: int, consume: bool, now: float | None
    ) -> tuple[object, ...]:
        """The ``EVALSHA`` arguments after the digest (see ``lua/head.lua``).

        ``key`` must be a str and ``cost`` a non-negative int: see :meth:`_decide_arguments`.
        """
        signed = cost if consume else -1 - cost
        if plan.single:
            name = f"{self._head}{key}{plan.suffix}"
            if now is not None:
                return (1, name, signed, repr(float(now)))
            if signed == 1:
                return (1, name)  # a cost of 1 goes without saying
            return (1, name, signed)
        keys = [self._head + key + suffix for suffix in plan.suffixes]
        if now is not None:
            return (plan.nkeys, *keys, signed, repr(float(now)))
        if signed == 1:
            return (plan.nkeys, *keys)
        return (plan.nkeys, *keys, signed)

    def _decide_arguments(
        self,
        algorithm: str,
        key: str,
        rates: tuple[Rate, ...],
        cost: int,
        consume: bool,
        now: float | None,
    ) -> tuple[_Plan, tuple[object, ...] | None]:
        """Check a decision's arguments; return its plan and ``EVALSHA`` arguments.

        The arguments are ``None`` for a common decision, whose packed command the plan keeps
        (see :meth:`_kept_command`): a known rate tuple, a str key, a cost of 1, not a peek,
        the server's clock, on a store that is not a cluster's (a few cheap tests, first).
        """
        plan = self._plans.get((algorithm, id(rates)))
        if (
            plan is not None
            and plan.rates is rates
            and type(key) is str
            and type(cost) is int
            and cost == 1
            and consume
            and now is None
            and self._cluster is None
        ):
            return plan, None
        if plan is None or plan.rates is not rates:
            plan = self._plan(algorithm, rates)
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} ({key!r})")
        if type(cost) is not int or cost < 0:
            cost = int(check_int(cost, "cost", minimum=0))
        return plan, self._arguments(plan, key, cost, consume, now)

    def _kept_command(self, plan: _Plan, key: str) -> bytes:
        """Pack a common decision's ``EVALSHA`` on ``key`` and keep it in ``plan.commands``.

        Packing costs a few thousand instructions; the same client's next decision finds its
        command kept. A plan keeps at most ``_COMMANDS_KEPT`` keys (emptied when full).
        """
        command = _pack(("EVALSHA", plan.script.sha, *self._arguments(plan, key, 1, True, None)))
        commands = plan.commands
        if len(commands) >= _COMMANDS_KEPT:
            commands.clear()
        commands[key] = command
        return command

    def _reset_keys(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> list[str]:
        tag = self._tag(key)[:-1]  # without the closing brace: each suffix starts with it
        return [tag + suffix for suffix in self._plan(algorithm, rates).suffixes]

    def _leases(self, key: str) -> str:
        return self._tag(key) + ":leases"

    @staticmethod
    def _now(now: float | None) -> str:
        return "" if now is None else repr(float(now))

    @staticmethod
    def _lease_id(lease_id: str) -> str:
        if not isinstance(lease_id, str):
            raise TypeError(f"lease_id must be a str, got {type(lease_id).__name__}")
        return lease_id

    def _acquire_args(
        self, key: str, limit: int, lease_id: str, ttl: float, now: float | None
    ) -> tuple[object, ...]:
        check_int(limit, "limit", minimum=1)
        ttl = seconds(ttl, "ttl")
        return (
            1,
            self._leases(key),
            self._now(now),
            str(limit),
            self._lease_id(lease_id),
            repr(ttl),
        )

    def _renew_args(
        self, key: str, lease_id: str, ttl: float, now: float | None
    ) -> tuple[object, ...]:
        ttl = seconds(ttl, "ttl")
        return (1, self._leases(key), self._now(now), self._lease_id(lease_id), repr(ttl))

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
        plan, arguments = self._decide_arguments(algorithm, key, rates, cost, consume, now)
        if arguments is None:
            if self._connections is None:
                self._sync()  # raises ConfigurationError: no synchronous client
            command = plan.commands.get(key) or self._kept_command(plan, key)
            return plan.decision(self._run_command("decide", plan.script, command))
        return plan.decision(self._run("decide", plan.script, arguments))

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
        plan, arguments = self._decide_arguments(algorithm, key, rates, cost, consume, now)
        if arguments is None:
            command = plan.commands.get(key) or self._kept_command(plan, key)
            return plan.decision(await self._arun_command("decide", plan.script, command))
        return plan.decision(await self._arun("decide", plan.script, arguments))

    def reset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """Forget everything recorded for ``key`` under these rates.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        keys = self._reset_keys(algorithm, key, rates)
        self._run("reset", _script("reset"), (len(keys), *keys))

    async def areset(self, algorithm: str, key: str, rates: tuple[Rate, ...]) -> None:
        """The coroutine form of :meth:`reset`."""
        keys = self._reset_keys(algorithm, key, rates)
        await self._arun("reset", _script("reset"), (len(keys), *keys))

    def acquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """Take a slot for ``lease_id`` if fewer than ``limit`` live leases exist on ``key``.

        Taking a lease id that is already live renews it (it keeps its one slot).

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = self._acquire_args(key, limit, lease_id, ttl, now)
        return bool(self._run("acquire_lease", _script("lease_acquire"), args) == 1)

    async def aacquire_lease(
        self, key: str, limit: int, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`acquire_lease`."""
        args = self._acquire_args(key, limit, lease_id, ttl, now)
        return bool(await self._arun("acquire_lease", _script("lease_acquire"), args) == 1)

    def renew_lease(self, key: str, lease_id: str, ttl: float, *, now: float | None = None) -> bool:
        """Extend a live lease to ``ttl`` from now; ``False`` if it had already expired.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = self._renew_args(key, lease_id, ttl, now)
        return bool(self._run("renew_lease", _script("lease_renew"), args) == 1)

    async def arenew_lease(
        self, key: str, lease_id: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """The coroutine form of :meth:`renew_lease`."""
        args = self._renew_args(key, lease_id, ttl, now)
        return bool(await self._arun("renew_lease", _script("lease_renew"), args) == 1)

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
        args = (1, self._leases(key), self._now(now), self._lease_id(lease_id))
        return bool(self._run("release_lease", _script("lease_release"), args) == 1)

    async def arelease_lease(self, key: str, lease_id: str, *, now: float | None = None) -> bool:
        """The coroutine form of :meth:`release_lease`."""
        args = (1, self._leases(key), self._now(now), self._lease_id(lease_id))
        reply = await self._arun("release_lease", _script("lease_release"), args)
        return bool(reply == 1)

    def count_leases(self, key: str, *, now: float | None = None) -> int:
        """Return how many live leases ``key`` has.

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = (1, self._leases(key), self._now(now))
        return int(self._run("count_leases", _script("lease_count"), args))

    async def acount_leases(self, key: str, *, now: float | None = None) -> int:
        """The coroutine form of :meth:`count_leases`."""
        args = (1, self._leases(key), self._now(now))
        reply = await self._arun("count_leases", _script("lease_count"), args)
        return int(reply)

    # -- shared circuit breakers -----------------------------------------------------------------

    def _breaker_args(
        self,
        name: str,
        operation: str,
        rules: tuple[str, ...],
        arguments: tuple[str, ...],
        now: float | None,
    ) -> tuple[object, ...]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if operation not in BREAKER_OPERATIONS:
            raise ValueError(
                f"operation must be one of {', '.join(sorted(BREAKER_OPERATIONS))}, "
                f"got {operation!r}"
            )
        if len(rules) != _BREAKER_RULES:
            raise ValueError(f"rules must hold {_BREAKER_RULES} values, got {len(rules)}")
        tag = f"{{{self._prefix}:breaker:{name}}}"
        keys = (f"{tag}:state", f"{tag}:window", f"{tag}:trials")
        return (3, *keys, self._now(now), operation, *rules, *arguments)

    def breaker(
        self,
        name: str,
        operation: str,
        rules: tuple[str, ...],
        arguments: tuple[str, ...] = (),
        *,
        now: float | None = None,
    ) -> BreakerReply:
        """Run one operation on the shared state of the breaker ``name``: one round trip.

        Implements :class:`buttress.storage.BreakerStorage` (what a shared
        :class:`~buttress.CircuitBreaker` calls; see ``storage/lua/breaker.lua``). Keys:
        ``{P:breaker:NAME}:state``, ``:window`` and ``:trials``, kept while in use and for a
        while after (the rules say how long).

        Raises:
            StorageError: When Redis fails or does not answer in time.
        """
        args = self._breaker_args(name, operation, rules, arguments, now)
        return BreakerReply.parse(self._run(f"breaker {operation}", _script("breaker"), args))

    async def abreaker(
        self,
        name: str,
        operation: str,
        rules: tuple[str, ...],
        arguments: tuple[str, ...] = (),
        *,
        now: float | None = None,
    ) -> BreakerReply:
        """The coroutine form of :meth:`breaker`."""
        args = self._breaker_args(name, operation, rules, arguments, now)
        reply = await self._arun(f"breaker {operation}", _script("breaker"), args)
        return BreakerReply.parse(reply)

    def close(self) -> None:
        """Close the synchronous client made by this store (clients passed in stay open).

        In asyncio code, ``await`` :meth:`aclose` instead: it also closes the asyncio client.
        """
        if self._connections is not None:
            self._connections.close()
        if self._cluster is not None:
            self._cluster.close()
        if self._owns_client and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the clients made by this store.

        That is the synchronous one and the asyncio one of the running event loop; clients
        passed in stay open.
        """
        self.close()
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._loop_clients.pop(loop, None)
            link = self._links.pop(loop, None)
            links = [self._node_links.pop(key) for key in list(self._node_links) if key[0] is loop]
        if link is not None:
            links.append(link)
        for each in links:
            await each.close()
        if found is not None:
            await found.aclose()

    def __repr__(self) -> str:
        return f"RedisStorage({self._address!r}, prefix={self._prefix!r})"
