"""Rate limiting for any ASGI application: Starlette, FastAPI, or a bare ASGI callable.

::

    app.add_middleware(
        RateLimitMiddleware,
        default_limits="100 per day; 10 per hour",
        routes={"/login": "5/minute", "/api/*": "10/second"},
        application_limits="1000/second",
        storage="redis://127.0.0.1:6379/0",
    )

Every limit that applies to a request (its route pattern's or the defaults, and the
application's) is decided for its client in **one** call, all or nothing: one round trip on
Redis, through ``redis.asyncio``, never blocking the event loop. A rejected request gets a 429
(JSON for clients that accept JSON, a short text otherwise) with ``Retry-After``; every limited
response carries the ``RateLimit-*`` headers. WebSocket handshakes are limited the same way.

Which limits apply to a path:

1. a path matching an ``exempt`` pattern is not limited at all;
2. else an exact ``routes`` pattern (one without ``*``, ``?`` or ``[``) equal to the path;
3. else the first glob or compiled-regex ``routes`` pattern, in the order given, that matches
   the whole path (globs as :mod:`fnmatch`: ``*`` also matches ``/``);
4. else ``default_limits``;

and ``application_limits`` on top of any of these. Each route pattern keeps its own count per
client, shared by every path it matches; the defaults keep one count per client, shared by every
unmatched path; the application limits one, shared by every request.

This module imports no web framework. The FastAPI dependency form (per-endpoint limits) is
:class:`buttress.contrib.fastapi.RateLimit`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Generic, TypeVar, Union, cast, get_args

from buttress._errors import ConfigurationError
from buttress._events import Listener
from buttress._types import check_int, check_name
from buttress.contrib._web import (
    Engine,
    LimitSpec,
    LimitValue,
    _whole_seconds,
    client_address,
    escape_key,
    parse_networks,
    rate_limit_headers,
    rate_limit_policy,
    rejection_body,
)
from buttress.ratelimit import Decision, Limiter, OnStoreError, Rate
from buttress.storage import Storage

__all__ = [
    "ASGIApp",
    "AsgiLimit",
    "KeyFunc",
    "PathPattern",
    "RateLimitMiddleware",
    "RateLimiter",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI application (the same shape as Starlette's ``ASGIApp``)."""

PathPattern = Union[str, re.Pattern[str]]  # noqa: UP007 - a runtime alias
"""A glob (``"/api/*"``) or exact path (``"/login"``) as a str, or a compiled regex."""

Limits = Union[str, Rate, Sequence[Union[str, Rate]]]  # noqa: UP007 - a runtime alias
AsgiLimit = Union[Limits, Callable[[Scope], Limits | None]]  # noqa: UP007 - a runtime alias
"""A limit: ``"10/hour"``, ``"100 per day; 10 per hour"``, rates, a list of those, or a callable
taking the ASGI scope and returning one of those (``None``: no limit) per request."""

KeyFunc = Callable[[Scope], str | None]
"""A key function: the ASGI scope in, the client's key out (``None``: do not limit)."""

T = TypeVar("T")
U = TypeVar("U")

_ON_STORE_ERROR: tuple[str, ...] = get_args(OnStoreError)
_GLOB = frozenset("*?[")
_CACHED = 256  # distinct results of a dynamic limit kept parsed
_PEERS = 4096  # peer addresses kept parsed


def _scoped(value: object, scope: str, where: str) -> tuple[Rate, ...]:
    """``value``'s rates, scoped; errors name where the value was given."""
    try:
        return LimitSpec.make(cast("LimitValue", value), scope).rates("")
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    except TypeError as error:
        raise TypeError(f"{where}: {error}") from None


class _Limits:
    """One declared set of limits: static (scoped once) or dynamic (read per request)."""

    __slots__ = ("_cache", "dynamic", "rates", "scope", "where")

    def __init__(self, value: AsgiLimit, scope: str, where: str) -> None:
        self.scope = scope
        self.where = where
        self.dynamic: Callable[[Scope], Limits | None] | None = None
        self.rates: tuple[Rate, ...] = ()
        self._cache: dict[object, tuple[Rate, ...]] = {}
        if callable(value):
            self.dynamic = value
        else:
            self.rates = _scoped(value, scope, where)

    def resolve(self, scope: Scope) -> tuple[Rate, ...]:
        """The rates for a request (a dynamic limit is called now)."""
        if self.dynamic is None:
            return self.rates
        value = self.dynamic(scope)
        if value is None:
            return ()
        if not isinstance(value, (str, Rate)):
            return _scoped(value, self.scope, self.where)
        found = self._cache.get(value)
        if found is None:
            if len(self._cache) >= _CACHED:
                self._cache.clear()
            found = self._cache[value] = _scoped(value, self.scope, self.where)
        return found


def _label(pattern: object, where: str) -> str:
    """A path pattern's label (the scope of a route's limits); checks its type."""
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            raise TypeError(f"{where}: a regex pattern must be of str, got {pattern!r}")
        return f"re|{pattern.pattern}"
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(
            f"{where}: a path pattern must be a non-empty str or a compiled regex, got {pattern!r}"
        )
    return f"route|{pattern}"


class _Plan:
    """The limits of the paths one route pattern takes (or of the paths no pattern takes).

    They are the pattern's own (or the defaults) and the application's. When none of them is
    dynamic, their rates and their ``RateLimit-Policy`` header are made here, once, not per
    request.
    """

    __slots__ = ("application", "limiter", "limits", "policy", "rates")

    def __init__(self, limits: _Limits | None, application: _Limits | None) -> None:
        self.limits = limits
        self.application = application
        self.rates: tuple[Rate, ...] | None = None  # None: read per request
        self.policy = b""
        # The engine's limiter of ``rates``, found on the first request (fixed rates only).
        self.limiter: Limiter | None = None
        if all(part is None or part.dynamic is None for part in (limits, application)):
            self.rates = (limits.rates if limits else ()) + (
                application.rates if application else ()
            )
            if self.rates:
                self.policy = rate_limit_policy(self.rates).encode("latin-1")

    def resolve(self, scope: Scope) -> tuple[Rate, ...]:
        """Every rate applying to a request (a dynamic limit is called now)."""
        if self.rates is not None:
            return self.rates
        limits, application = self.limits, self.application
        if application is None:
            return () if limits is None else limits.resolve(scope)
        if limits is None:
            return application.resolve(scope)
        return limits.resolve(scope) + application.resolve(scope)


class _PathTable(Generic[T]):
    """Path patterns and what each maps to: exact paths first, then the others in order."""

    def __init__(self) -> None:
        self.exact: dict[str, T] = {}
        self.patterns: list[tuple[re.Pattern[str], T]] = []

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)

    def values(self) -> list[T]:
        return [*self.exact.values(), *(value for _, value in self.patterns)]

    def map(self, function: Callable[[T], U]) -> _PathTable[U]:
        """The same patterns, in the same order, each mapped to ``function`` of its value."""
        table: _PathTable[U] = _PathTable()
        table.exact = {path: function(value) for path, value in self.exact.items()}
        table.patterns = [(pattern, function(value)) for pattern, value in self.patterns]
        return table

    def add(self, pattern: PathPattern, value: T) -> None:
        """Add ``pattern`` (checked by :func:`_label`)."""
        if isinstance(pattern, re.Pattern):
            self.patterns.append((pattern, value))
        elif _GLOB.isdisjoint(pattern):
            self.exact[pattern] = value
        else:
            self.patterns.append((re.compile(fnmatch.translate(pattern)), value))

    def find(self, path: str) -> T | None:
        """What the first matching pattern maps to, or ``None``."""
        found = self.exact.get(path)
        if found is not None:
            return found
        for pattern, value in self.patterns:
            if pattern.fullmatch(path):
                return value
        return None


def _routes(routes: Mapping[PathPattern, AsgiLimit] | None) -> _PathTable[_Limits]:
    table: _PathTable[_Limits] = _PathTable()
    if routes is None:
        return table
    if not isinstance(routes, Mapping):
        raise TypeError(f"routes must be a mapping of path patterns to limits, got {routes!r}")
    for pattern, value in routes.items():
        where = f"routes[{pattern!r}]"
        table.add(pattern, _Limits(value, _label(pattern, where), where))
    return table


def _exempt(exempt: Iterable[PathPattern] | PathPattern) -> _PathTable[bool]:
    table: _PathTable[bool] = _PathTable()
    if isinstance(exempt, (str, re.Pattern)):
        exempt = [exempt]
    elif not isinstance(exempt, Iterable):
        raise TypeError(f"exempt must be a path pattern or a list of them, got {exempt!r}")
    for pattern in exempt:
        _label(pattern, "exempt")
        table.add(pattern, True)
    return table


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (several lines joined with commas), or ``None``."""
    values = [value for key, value in scope.get("headers") or () if key.lower() == name]
    return b",".join(values).decode("latin-1") if values else None


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class RateLimiter:
    """The limits of an ASGI application, its client keys and its store, in one object.

    :class:`RateLimitMiddleware` makes one from its options; make one yourself to share it with
    the FastAPI dependency :class:`buttress.contrib.fastapi.RateLimit` (the same store, keys
    and headers).

    Args:
        routes: Limits by path pattern: ``{"/login": "5/minute", "/api/*": "10/second",
            re.compile("/users/[0-9]+"): "1/second"}``. An exact path wins, then the first
            glob or regex (matching the whole path) in the order given. Each pattern keeps
            its own count per client, shared by every path it matches.
        default_limits: The limits of a path no route pattern matches (one count per client
            shared by all such paths); ``None``: such paths are not limited.
        application_limits: Limits on every request of a client, whatever its path, decided
            together with the route's (scope ``"global"``).
        key: The client's key from the ASGI scope (``None`` from it: the request is not
            limited). Default: the socket peer's address, see ``trusted_proxies``.
        trusted_proxies: Networks or addresses of your reverse proxies: when the peer is one,
            the client is the right-most address of ``Forwarded``/``X-Forwarded-For`` that is
            not. Headers from any other peer are ignored.
        ipv6_prefix: An IPv6 client is keyed by its network of this many bits (default 64: a
            host usually owns a whole /64); 128 keys each address apart.
        cost: Units each request takes: an int, or a callable taking the ASGI scope. A cost of
            0 is not counted.
        exempt: Path patterns (as in ``routes``) never limited, and given no headers.
        strategy: The algorithm: ``fixed-window`` (default), ``sliding-window``,
            ``sliding-window-counter``, ``token-bucket`` or ``gcra``.
        storage: A store, or a storage URL (``"memory://"``, ``"redis://host:6379/0"``).
        on_store_error: What to answer while the store fails: ``"local"`` (decide in this
            process's memory), ``"fail-open"`` (admit) or ``"fail-closed"`` (reject).
        headers: Send the ``RateLimit-*`` headers (a 429 always carries ``Retry-After``).
        legacy_headers: Send ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (a Unix
            time), as Flask-Limiter and slowapi do, instead of the IETF draft's names.
        websockets: Limit WebSocket handshakes too (see :class:`RateLimitMiddleware`).
        name: The name of the limiters in events and logs.
        listeners: Callables receiving the limiters' events.

    Raises:
        ConfigurationError: For a bad limit string (naming the string and where it was given).
        TypeError, ValueError: For any other bad argument.
    """

    def __init__(
        self,
        *,
        routes: Mapping[PathPattern, AsgiLimit] | None = None,
        default_limits: AsgiLimit | None = None,
        application_limits: AsgiLimit | None = None,
        key: KeyFunc | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        ipv6_prefix: int = 64,
        cost: int | Callable[[Scope], int] = 1,
        exempt: Iterable[PathPattern] | PathPattern = (),
        strategy: str = "fixed-window",
        storage: Storage | str = "memory://",
        on_store_error: OnStoreError = "local",
        headers: bool = True,
        legacy_headers: bool = False,
        websockets: bool = True,
        name: str = "asgi",
        listeners: Sequence[Listener] = (),
    ) -> None:
        if on_store_error not in _ON_STORE_ERROR:
            raise ValueError(
                f"on_store_error must be one of {', '.join(_ON_STORE_ERROR)}, "
                f"got {on_store_error!r}"
            )
        check_name(name)
        self.engine = Engine(
            storage,
            strategy=strategy,
            on_store_error=on_store_error,
            name=name,
            listeners=listeners,
        )
        routes_limits = _routes(routes)
        default = (
            None if default_limits is None else _Limits(default_limits, "default", "default_limits")
        )
        application = (
            None
            if application_limits is None
            else _Limits(application_limits, "global", "application_limits")
        )
        exempt_paths = _exempt(exempt)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable taking the ASGI scope, got {key!r}")
        self._key = key
        self._trusted = parse_networks(trusted_proxies)
        self._ipv6_prefix = check_int(ipv6_prefix, "ipv6_prefix", minimum=0)
        if self._ipv6_prefix > 128:
            raise ValueError(f"ipv6_prefix must be between 0 and 128, got {ipv6_prefix}")
        if not callable(cost):
            check_int(cost, "cost", minimum=0)
            every = [*routes_limits.values(), default, application]
            _check_cost(cost, [limits for limits in every if limits is not None])
        self._cost = cost
        for flag, setting in (
            ("headers", headers),
            ("legacy_headers", legacy_headers),
            ("websockets", websockets),
        ):
            if not isinstance(setting, bool):
                raise TypeError(f"{flag} must be True or False, got {setting!r}")
        self.headers = headers
        self.legacy_headers = legacy_headers
        self.websockets = websockets
        # What a request needs is looked up by its path, all of it made here: empty tables are
        # None (not even searched), and each route pattern's plan holds the application's limits.
        self._exempt = exempt_paths or None
        self._routes = routes_limits.map(lambda limits: _Plan(limits, application)) or None
        self._unmatched = (
            None if default is None and application is None else _Plan(default, application)
        )
        # Without a key function or proxies, a client's key is its peer's address: parsing one
        # costs more than the rest of the key, so recent peers are kept (with the escaped key).
        self._by_peer = key is None and not self._trusted
        self._peers: dict[str | None, tuple[str, str]] = {}

    def _plan(self, path: str) -> _Plan | None:
        """The plan of the requests to ``path``; ``None``: they are not limited."""
        if self._exempt is not None and self._exempt.find(path):
            return None
        if self._routes is not None:
            found = self._routes.find(path)
            if found is not None:
                return found
        return self._unmatched

    def _peer(self, scope: Scope) -> tuple[str, str]:
        """The socket peer's address as a client key, and that key escaped."""
        client = scope.get("client")
        peer = str(client[0]) if client else None
        found = self._peers.get(peer)
        if found is None:
            if len(self._peers) >= _PEERS:
                self._peers.clear()
            address = client_address(peer, ipv6_prefix=self._ipv6_prefix)
            found = self._peers[peer] = (address, escape_key(address))
        return found

    def client_key(self, scope: Scope) -> str | None:
        """The key a request is counted under (before escaping), or ``None`` (not limited).

        Args:
            scope: The request's ASGI scope.

        Returns:
            The ``key=`` function's answer, or by default the client's address (``"unknown"``
            when the server gives none, e.g. on a unix socket).
        """
        if self._key is not None:
            return self._key(scope)
        if not self._trusted:
            return self._peer(scope)[0]
        client = scope.get("client")
        return client_address(
            str(client[0]) if client else None,
            forwarded_for=_header(scope, b"x-forwarded-for"),
            forwarded=_header(scope, b"forwarded"),
            trusted=self._trusted,
            ipv6_prefix=self._ipv6_prefix,
        )

    def rates(self, scope: Scope) -> tuple[Rate, ...]:
        """Every limit applying to a request by its path (empty: not limited), scoped.

        Args:
            scope: The request's ASGI scope.

        Returns:
            The route's (or default) rates followed by the application's.
        """
        plan = self._plan(scope["path"])
        return () if plan is None else plan.resolve(scope)

    def _prepare(self, scope: Scope) -> tuple[_Plan, tuple[Rate, ...], str, int] | None:
        """What deciding a request takes: its plan, rates, escaped key and cost.

        ``None`` when the request is not limited (exempt, no limit, no key, or a cost of 0).
        """
        # The common cases written out (each method call is about a thousand instructions):
        # no route table or exemption to search, a client already seen.
        if self._routes is None and self._exempt is None:
            plan = self._unmatched
        else:
            plan = self._plan(scope["path"])
        if plan is None:
            return None
        rates = plan.rates
        if rates is None:
            rates = plan.resolve(scope)
        if not rates:
            return None
        if self._by_peer:
            client = scope.get("client")
            seen = self._peers.get(client[0] if client else None)
            key = seen[1] if seen is not None else self._peer(scope)[1]
        else:
            found = self.client_key(scope)
            if found is None:
                return None
            if not isinstance(found, str) or not found:
                raise TypeError(
                    f"the key function must return a non-empty str or None, got {found!r}"
                )
            key = escape_key(found)
        cost = self._cost
        if callable(cost):
            cost = check_int(cost(scope), "cost", minimum=0)
        if cost == 0:
            return None
        return plan, rates, key, cost

    def _limiter(self, plan: _Plan, rates: tuple[Rate, ...]) -> Limiter:
        """The engine's limiter of ``rates``, kept on ``plan`` when they are its fixed rates."""
        found = self.engine.limiter(rates)
        if rates is plan.rates:
            plan.limiter = found
        return found

    async def check(self, scope: Scope) -> tuple[Decision, tuple[Rate, ...]] | None:
        """Decide a request against every limit applying to it, in one call, all or nothing.

        Args:
            scope: The request's ASGI scope (``http`` or ``websocket``).

        Returns:
            The decision and the rates decided, or ``None`` when the request is not limited
            (exempt, no limit, no key, or a cost of 0). When rejected, nothing was counted.
        """
        prepared = self._prepare(scope)
        if prepared is None:
            return None
        _, rates, key, cost = prepared
        return await self.engine.adecide(key, rates, cost), rates

    def response_headers(self, decision: Decision, rates: Sequence[Rate]) -> list[tuple[str, str]]:
        """The headers describing ``decision``, as configured.

        Args:
            decision: The request's decision.
            rates: The rates decided.

        Returns:
            The ``RateLimit-*`` (or legacy ``X-RateLimit-*``) headers, with ``Retry-After`` on a
            rejection; with ``headers=False``, only ``Retry-After`` on a rejection.
        """
        if self.headers:
            return rate_limit_headers(decision, rates, legacy=self.legacy_headers)
        if decision.allowed:
            return []
        return [h for h in rate_limit_headers(decision, rates) if h[0] == "Retry-After"]

    def _admitted_headers(
        self, decision: Decision, plan: _Plan, rates: tuple[Rate, ...]
    ) -> list[tuple[bytes, bytes]]:
        """:meth:`response_headers` of an admitted request with ``headers=True``, encoded.

        The IETF names are written straight as bytes, the policy made once per plan: the same
        headers as ``rate_limit_headers``, at a fraction of the cost.
        """
        if self.legacy_headers:
            return _encode(rate_limit_headers(decision, rates, legacy=True))
        # The limit and the reset (whole seconds) take few values: their bytes are kept, not
        # formatted again on every request.
        reset = _whole_seconds(decision.reset_after, 0)
        return [
            (b"ratelimit-limit", _DIGITS.get(decision.limit) or _digits(decision.limit)),
            (b"ratelimit-remaining", b"%d" % decision.remaining),
            (b"ratelimit-reset", _DIGITS.get(reset) or _digits(reset)),
            (
                b"ratelimit-policy",
                plan.policy if rates is plan.rates else rate_limit_policy(rates).encode("latin-1"),
            ),
        ]


_DIGITS: dict[int, bytes] = {}  # recent limits and resets, written in ASCII digits
_DIGITS_KEPT = 4096


def _digits(number: int) -> bytes:
    """``number`` in ASCII digits, kept in ``_DIGITS`` for the next time."""
    if len(_DIGITS) >= _DIGITS_KEPT:
        _DIGITS.clear()
    written = _DIGITS[number] = b"%d" % number
    return written


def _check_cost(cost: int, every: list[_Limits]) -> None:
    """Refuse a fixed cost more than the smallest fixed limit: nothing could be admitted."""
    for limits in every:
        if limits.rates and cost > min(rate.limit for rate in limits.rates):
            raise ValueError(
                f"cost {cost} is more than the smallest limit of {limits.where}: no request "
                "could ever be admitted"
            )


class RateLimitMiddleware:
    """Pure ASGI middleware limiting HTTP requests and WebSocket handshakes.

    ::

        app = RateLimitMiddleware(app, routes={"/login": "5/minute"}, default_limits="10/second")
        app.add_middleware(RateLimitMiddleware, limiter=limiter)    # Starlette, FastAPI

    An admitted request goes on to the app, and its response (``http.response.start``, or
    ``websocket.accept``) gets the ``RateLimit-*`` headers, unless the app set them itself. A
    rejected HTTP request gets a 429 without reaching the app. A rejected WebSocket handshake is
    answered with an HTTP 429 if the server supports the ``websocket.http.response``
    extension, else closed with code 1008 (policy violation; servers answer an HTTP 403).
    Other scopes (``lifespan``) pass through untouched.

    Args:
        app: The ASGI application to protect.
        limiter: A :class:`RateLimiter` (to share it with the FastAPI dependency).
        **options: Or the arguments of :class:`RateLimiter`, to make one.

    Raises:
        TypeError: For both ``limiter`` and options, or a ``limiter`` of another type; and
            whatever :class:`RateLimiter` raises for bad options.
    """

    def __init__(self, app: ASGIApp, /, limiter: RateLimiter | None = None, **options: Any) -> None:
        if limiter is None:
            limiter = RateLimiter(**options)
        elif options:
            raise TypeError(
                f"pass either limiter= or RateLimiter's options, not both (got {sorted(options)})"
            )
        elif not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a RateLimiter, got {type(limiter).__name__}")
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        kind = scope["type"]
        limiter = self.limiter
        if kind == "http":
            start = "http.response.start"
        elif kind == "websocket" and limiter.websockets:
            start = "websocket.accept"
        else:
            await self.app(scope, receive, send)
            return
        prepared = limiter._prepare(scope)  # noqa: SLF001 - the limiter's own middleware
        if prepared is None:
            await self.app(scope, receive, send)
            return
        plan, rates, key, cost = prepared
        deciding = plan.limiter if rates is plan.rates else None
        if deciding is None:
            deciding = limiter._limiter(plan, rates)  # noqa: SLF001
        if deciding._direct is not None:  # noqa: SLF001 - memory: answered at once, no await
            decision = deciding.hit(key, cost)
        else:
            decision = await deciding.ahit(key, cost)
        if not decision.allowed:
            rejected = _encode(limiter.response_headers(decision, rates))
            if kind == "http":
                await _reject_http(scope, send, decision, rejected)
            else:
                await _reject_websocket(scope, receive, send, decision, rejected)
            return
        if not limiter.headers:
            await self.app(scope, receive, send)
            return
        headers = limiter._admitted_headers(decision, plan, rates)  # noqa: SLF001
        marker = headers[0][0]  # ratelimit-limit or x-ratelimit-limit

        async def send_with_headers(message: Message) -> None:
            if message["type"] == start:
                present = message.get("headers") or ()
                for name, _ in present:
                    if name.lower() == marker:
                        break  # the app set its own: kept as they are
                else:
                    message = {**message, "headers": [*present, *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _rejection(
    scope: Scope, decision: Decision, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body, media_type = rejection_body(decision, _header(scope, b"accept"))
    return body, [
        (b"content-type", media_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
        *headers,
    ]


async def _reject_http(
    scope: Scope, send: Send, decision: Decision, headers: list[tuple[bytes, bytes]]
) -> None:
    body, all_headers = _rejection(scope, decision, headers)
    await send({"type": "http.response.start", "status": 429, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _reject_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    decision: Decision,
    headers: list[tuple[bytes, bytes]],
) -> None:
    message = await receive()  # the handshake: websocket.connect
    if message["type"] != "websocket.connect":
        return  # the client is gone already
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body, all_headers = _rejection(scope, decision, headers)
        await send({"type": "websocket.http.response.start", "status": 429, "headers": all_headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "Too Many Requests"})
