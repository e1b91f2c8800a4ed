"""Rate limits for Flask apps, declared the way Flask-Limiter declares them, decided by buttress.

The chapter's app runs with its imports changed::

    from flask import Flask
    from buttress.contrib.flask import Limiter, get_remote_address

    app = Flask(__name__)
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["100 per day", "10 per hour"],
        storage_uri="memory://",
        strategy="fixed-window",
    )

    @app.route("/limited")
    def limited():
        return "This route is limited by the default limits."

    @app.route("/more_limited")
    @limiter.limit("2/minute")
    def more_limited():
        return "This route has its own, stricter limit."

Every limit that applies to a request (the route's own or the defaults, shared limits, the
application's) is decided in **one** operation: one atomic call to the store, all or nothing, so
that a request one limit rejects consumes nothing from the others. A rejected request gets a 429
(JSON for JSON clients, short text otherwise) through :class:`RateLimitExceeded`, which
``@app.errorhandler(429)`` can replace; every limited response carries the ``RateLimit-*``
headers. When the store (Redis) fails, the limiter's ``on_store_error`` policy answers: never a
500. See ``docs/flask.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast, get_args

from flask import Blueprint, Flask, Request, Response, after_this_request, current_app, request
from werkzeug.exceptions import TooManyRequests
from werkzeug.local import LocalProxy

from buttress._errors import ConfigurationError
from buttress._events import Listener
from buttress.contrib._web import (
    DEFAULT_ERROR,
    Engine,
    LimitSpec,
    LimitValue,
    client_address,
    describe_limit,
    escape_key,
    parse_networks,
    rate_limit_headers,
    rate_limit_policy,
    rejection_body,
)
from buttress.ratelimit import ALGORITHMS, Decision, Rate
from buttress.ratelimit import Limiter as RateLimiter
from buttress.ratelimit._limiter import OnStoreError
from buttress.storage import Storage, storage_from_url

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Limiter", "RateLimitExceeded", "get_remote_address", "remote_address"]

KeyFunc = Callable[[], str]
"""A key function: called in the request context, returns who is limited (an address, a user)."""

Proxies = Union[str, Iterable[Union[str, ipaddress.IPv4Network, ipaddress.IPv6Network]]]  # noqa: UP007
"""Trusted proxies: ``"10.0.0.0/8"``, addresses or networks, or a list of them."""

Cost = Union[int, Callable[[], int]]  # noqa: UP007 - a runtime alias
Limits = Union[LimitValue, Sequence[LimitValue]]  # noqa: UP007 - a runtime alias
_Target = TypeVar("_Target", bound=Union[Callable[..., Any], Blueprint])  # noqa: UP007

_EXTENSION = "buttress.flask"  # app.extensions[_EXTENSION][limiter] is the limiter's per-app state
_ROUTE = "route"  # the scope of per-route limits, completed with the endpoint at request time
_ALIASES = {"moving-window": "sliding-window"}  # Flask-Limiter's names
_ON_STORE_ERROR: tuple[str, ...] = get_args(OnStoreError)
_KEYS_KEPT = 4096  # clients whose escaped keys are kept (all are forgotten beyond)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

# The object behind Flask's ``request`` proxy (werkzeug's documented way to unwrap a proxy).
# Every attribute read through a proxy looks the object up again (about a microsecond each): the
# hook below, run on every request, looks it up once and reads the object.
_current_request = cast("LocalProxy[Request]", request)._get_current_object  # noqa: SLF001


def _header_names() -> tuple[str, ...]:
    """Every header name :func:`rate_limit_headers` can send (a rejection's, either style)."""
    rejected = Decision(False, 1, 0, 1.0, 1.0, Rate(1, 1))
    return tuple(
        name
        for legacy in (False, True)
        for name, _ in rate_limit_headers(rejected, (rejected.rate,), legacy=legacy)
    )


_HEADER_NAMES_SENT = _header_names()
# In lower case, for _with_headers to see whether a response has one already.
_HEADER_NAMES = frozenset(name.lower() for name in _HEADER_NAMES_SENT)


def get_remote_address() -> str:
    """The address of the current request's socket peer, as Flask-Limiter's function returns it.

    Behind a reverse proxy that is the proxy's address, and every client would share one limit:
    use :func:`remote_address` with ``trusted_proxies`` there.

    Returns:
        ``request.remote_addr``, or ``"127.0.0.1"`` when the server does not give one.
    """
    return _current_request().remote_addr or "127.0.0.1"


def remote_address(trusted_proxies: Proxies | None = None, *, ipv6_prefix: int = 64) -> KeyFunc:
    """Make a key function returning the client's address, safe behind proxies.

    ``X-Forwarded-For`` and ``Forwarded`` are read only when the socket peer is one of the
    ``trusted_proxies``; then the right-most address that is not a trusted proxy is the client.
    From any other peer they change nothing, so a client cannot spoof its way out of its limit.
    An IPv6 client is keyed by its ``/ipv6_prefix`` network (a host usually owns a whole /64).

    Args:
        trusted_proxies: Addresses or networks of your proxies (``"10.0.0.0/8"``, a list).
        ipv6_prefix: The prefix length IPv6 clients are keyed by (0 to 128; 128: each address).

    Returns:
        A function of no arguments, to call in a request context.

    Raises:
        TypeError, ValueError: For a proxy that is not an address or network, or a bad prefix.
    """
    trusted = parse_networks(trusted_proxies)
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
        raise TypeError(f"ipv6_prefix must be an int, got {ipv6_prefix!r}")
    if not 0 <= ipv6_prefix <= 128:
        raise ValueError(f"ipv6_prefix must be between 0 and 128, got {ipv6_prefix}")

    def key() -> str:
        current = _current_request()
        headers = current.headers
        return client_address(
            current.remote_addr,
            forwarded_for=", ".join(headers.getlist("X-Forwarded-For")) or None,
            forwarded=", ".join(headers.getlist("Forwarded")) or None,
            trusted=trusted,
            ipv6_prefix=ipv6_prefix,
        )

    return key


class RateLimitExceeded(TooManyRequests):
    """The 429 raised when a limit rejects a request.

    Flask answers with the response built by the extension (see :class:`Limiter`), or with what
    ``@app.errorhandler(429)`` (or ``@app.errorhandler(RateLimitExceeded)``) returns; the rate
    limit headers and ``Retry-After`` are added to either.

    Args:
        decision: The rejecting decision.
        message: The error message (default: ``"Too Many Requests: <limit>"``).
        response: The response Flask sends when no error handler replaces it.

    Attributes:
        decision: The rejecting :class:`~buttress.ratelimit.Decision` (its ``rate`` is the
            binding limit).
        limit: The binding limit in words (``"10 per 1 hour"``).
        retry_after: Whole seconds until the request could be admitted (``Retry-After``).
        description: The message.
    """

    def __init__(
        self, decision: Decision, message: str | None = None, response: Response | None = None
    ) -> None:
        self.decision = decision
        self.limit = describe_limit(decision.rate)
        retry_after = max(1, math.ceil(decision.retry_after or 0.0))
        super().__init__(message or f"{DEFAULT_ERROR}: {self.limit}", response, retry_after)
        self.retry_after: int = retry_after


@dataclass(frozen=True)
class _Declared:
    """A limit declared with :meth:`Limiter.limit` or :meth:`Limiter.shared_limit`."""

    spec: LimitSpec
    shared: bool
    override_defaults: bool


_Specs = tuple[tuple[LimitSpec, Union[tuple[Rate, ...], None]], ...]  # noqa: UP007
"""The specs applying to an endpoint and method, each with its rates unless they are dynamic."""


@dataclass(frozen=True)
class _Fixed:
    """A plan's decision when only its key is read from the request (the usual case).

    Every spec has fixed rates, no ``exempt_when``, and the same key function and int cost:
    then deciding a request is one call to one limiter, found once with the plan.
    """

    key_func: KeyFunc
    cost: int
    rates: tuple[Rate, ...]  # every rate, once each, in the specs' order
    policy: str  # their RateLimit-Policy header
    limiter: RateLimiter  # the engine's limiter deciding ``rates`` together
    owners: dict[Rate, LimitSpec]  # a rate's first spec, when it has a message or on_breach


@dataclass(frozen=True)
class _Plan:
    """What to decide for the requests of one method to one endpoint.

    Attributes:
        specs: The specs that apply, for :meth:`Limiter._decide` (empty: nothing to decide).
        fixed: Their decision made ready, when nothing but the key depends on the request.
    """

    specs: _Specs
    fixed: _Fixed | None = None


@dataclass
class _AppState:
    """A limiter's configuration for one app, resolved by :meth:`Limiter.init_app`."""

    engine: Engine
    key_func: KeyFunc
    defaults: tuple[LimitSpec, ...]
    application: tuple[LimitSpec, ...]
    enabled: bool
    headers_enabled: bool
    legacy_headers: bool
    # header_name_mapping, and the lower-case names a response's own headers are replaced by
    renamed: dict[str, str] = field(default_factory=dict)
    replaced: frozenset[str] = _HEADER_NAMES
    # (endpoint, method) -> what to decide, made on the first such request
    plans: dict[tuple[str, str], _Plan] = field(default_factory=dict)
    version: int = 0


_Outcome = tuple[Decision, tuple[Rate, ...], Union[LimitSpec, None]]  # noqa: UP007
"""A request's decision (the binding limit's), every rate decided, and the spec the binding limit
came from (when it has an error message or ``on_breach``)."""

_Deferred = tuple[Callable[[Response], bool], RateLimiter, str, int]
"""A ``deduct_when`` group checked before the view: its predicate, the limiter of its rates,
the key and the cost to count if the predicate holds for the response."""

_Decided = tuple[Decision, str, _AppState]
"""What the request's environ keeps for the headers: the decision, the ``RateLimit-Policy`` of
every rate decided, and the app's state (its header settings)."""


def _header_name_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Check ``header_name_mapping``: our header names (any case) to the names to send."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise TypeError(f"header_name_mapping must be a mapping, got {mapping!r}")
    ours = {name.lower(): name for name in _HEADER_NAMES_SENT}
    renamed: dict[str, str] = {}
    for name, to in mapping.items():
        if not isinstance(name, str) or name.lower() not in ours:
            raise ValueError(
                f"header_name_mapping: {name!r} is not a header buttress sends (one of "
                f"{', '.join(sorted(ours.values()))})"
            )
        if not isinstance(to, str) or not to or not to.isascii() or ":" in to or " " in to:
            raise ValueError(f"header_name_mapping: {to!r} is not a valid header name")
        renamed[ours[name.lower()]] = to
    return renamed


def _strategy(value: object) -> str:
    name = _ALIASES.get(value, value) if isinstance(value, str) else value
    if name not in ALGORITHMS:
        raise ConfigurationError(
            f"strategy must be one of {', '.join(ALGORITHMS)} (or moving-window, Flask-Limiter's "
            f"name for sliding-window), got {value!r}"
        )
    return str(name)


def _on_store_error(value: object) -> OnStoreError:
    if value not in _ON_STORE_ERROR:
        raise ConfigurationError(
            f"on_store_error must be one of {', '.join(_ON_STORE_ERROR)}, got {value!r}"
        )
    return value  # type: ignore[return-value]


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def _specs(
    limits: Limits | None,
    scope: str,
    *,
    per_method: bool = False,
    cost: Cost = 1,
    exempt_when: Callable[[], bool] | None = None,
    deduct_when: Callable[[Response], bool] | None = None,
) -> tuple[LimitSpec, ...] | None:
    """One spec per item of a ``default_limits`` or ``application_limits`` list."""
    if limits is None:
        return None
    items = [limits] if isinstance(limits, (str, Rate)) or callable(limits) else list(limits)
    return tuple(
        LimitSpec.make(
            item,
            scope,
            per_method=per_method,
            cost=cost,
            exempt_when=exempt_when,
            deduct_when=deduct_when,
        )
        for item in items
    )


def _unwrapped(view: object) -> list[object]:
    """A view and what it wraps (``functools.wraps`` chains), where declarations may sit."""
    chain: list[object] = []
    while view is not None and len(chain) < 64 and all(view is not seen for seen in chain):
        chain.append(view)
        view = getattr(view, "__wrapped__", None)
    return chain


class Limiter:
    """Rate limits for a Flask app, with Flask-Limiter's constructor and decorators.

    Limits are strings such as ``"10 per hour"`` or ``"100/day; 10/hour"``, :class:`Rate`
    objects, lists of those, or callables returning one per request (dynamic limits, e.g. by the
    user's plan). Arguments left as ``None`` are read from ``app.config`` at :meth:`init_app`
    (``BUTTRESS_STORAGE_URI``, ``BUTTRESS_STORAGE_OPTIONS``, ``BUTTRESS_DEFAULT_LIMITS``,
    ``BUTTRESS_APPLICATION_LIMITS``, ``BUTTRESS_STRATEGY``, ``BUTTRESS_HEADERS_ENABLED``,
    ``BUTTRESS_LEGACY_HEADERS``, ``BUTTRESS_ON_STORE_ERROR``, ``BUTTRESS_ENABLED``,
    ``BUTTRESS_TRUSTED_PROXIES``), else take the default shown.

    Args:
        key_func: Who is limited: a function of no arguments returning a str, called in the
            request context (:func:`get_remote_address`, a user id). ``None``: the client's
            address by :func:`remote_address` with ``trusted_proxies`` and ``ipv6_prefix``.
        app: The app, for :meth:`init_app` now (else call it later: the factory pattern).
        default_limits: Limits of every route that declares none of its own, per route and
            per client.
        default_limits_per_method: Count each HTTP method of a route apart.
        default_limits_cost: What a request costs under the defaults (an int or a function).
        default_limits_exempt_when: When it returns true, the defaults do not apply.
        default_limits_deduct_when: A function of the response: the defaults count a request
            only when it returns true (see :meth:`limit`).
        application_limits: Limits of the whole app per client, across all routes (scope
            ``"global"``).
        application_limits_per_method: Count each HTTP method apart.
        application_limits_cost: What a request costs under the application limits.
        application_limits_exempt_when: When it returns true, they do not apply.
        strategy: ``"fixed-window"`` (default), ``"sliding-window"`` (also accepted as
            ``"moving-window"``), ``"sliding-window-counter"``, ``"token-bucket"`` or ``"gcra"``.
        storage_uri: Where the counts live: ``"memory://"`` (default; this process) or a Redis
            URL (``"redis://127.0.0.1:6379/0"``; shared by every process).
        storage_options: Passed to the store (``{"prefix": "myapp", "timeout": 0.1}`` for Redis).
        storage: A store object instead of ``storage_uri`` (shared by every app initialised).
        headers_enabled: Send the ``RateLimit-*`` headers (default true). ``Retry-After`` is
            sent on a 429 either way.
        legacy_headers: Send ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (a Unix time),
            as Flask-Limiter does, instead (default false).
        on_store_error: While the store fails: ``"local"`` (default; count in this process),
            ``"fail-open"`` (admit) or ``"fail-closed"`` (reject).
        enabled: ``False`` turns every limit off (default true).
        trusted_proxies: For the default key function only (with ``key_func=None``).
        ipv6_prefix: For the default key function only (default 64).
        key_prefix: Prepended to every key, to keep several limiters on one store apart.
        on_breach: Called with the :class:`RateLimitExceeded` when a limit without an
            ``on_breach`` of its own rejects; a return value other than ``None`` is the response
            instead of the 429.
        header_name_mapping: Other names for the headers sent, e.g.
            ``{"RateLimit-Remaining": "X-Quota-Left"}`` (keys: the names buttress sends, any
            case).
        name: The limiters' name in events and logs.
        listeners: Receive the limiters' events (decisions, ``StoreDegraded``...).

    Raises:
        ConfigurationError: For a bad limit string (naming it), strategy or fault policy.
        TypeError, ValueError: For other bad arguments, naming them.
    """

    def __init__(
        self,
        key_func: KeyFunc | None = None,
        *,
        app: Flask | None = None,
        default_limits: Limits | None = None,
        default_limits_per_method: bool = False,
        default_limits_cost: Cost = 1,
        default_limits_exempt_when: Callable[[], bool] | None = None,
        default_limits_deduct_when: Callable[[Response], bool] | None = None,
        application_limits: Limits | None = None,
        application_limits_per_method: bool = False,
        application_limits_cost: Cost = 1,
        application_limits_exempt_when: Callable[[], bool] | None = None,
        strategy: str | None = None,
        storage_uri: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        storage: Storage | None = None,
        headers_enabled: bool | None = None,
        legacy_headers: bool | None = None,
        on_store_error: OnStoreError | None = None,
        enabled: bool | None = None,
        trusted_proxies: Proxies | None = None,
        ipv6_prefix: int = 64,
        key_prefix: str = "",
        on_breach: Callable[[RateLimitExceeded], Any] | None = None,
        header_name_mapping: Mapping[str, str] | None = None,
        name: str = "flask",
        listeners: Sequence[Listener] = (),
    ) -> None:
        if isinstance(key_func, Flask):
            raise TypeError(
                "the first argument is the key function (Flask-Limiter 3 order): write "
                "Limiter(get_remote_address, app=app)"
            )
        if key_func is not None and not callable(key_func):
            raise TypeError(f"key_func must be callable, got {key_func!r}")
        if key_func is not None and trusted_proxies is not None:
            raise TypeError(
                "trusted_proxies applies to the default key function only: pass "
                "key_func=remote_address(trusted_proxies=...) or leave key_func out"
            )
        if storage is not None and (storage_uri is not None or storage_options):
            raise TypeError("pass storage= or storage_uri= (with storage_options=), not both")
        if storage is not None and not isinstance(storage, Storage):
            raise TypeError(f"storage must be a store, got {type(storage).__name__}")
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {key_prefix!r}")
        self._key_func = key_func
        if on_breach is not None and not callable(on_breach):
            raise TypeError(f"on_breach must be callable, got {on_breach!r}")
        self._on_breach = on_breach
        self._header_names = _header_name_mapping(header_name_mapping)
        self._defaults = _specs(
            default_limits,
            _ROUTE,
            per_method=default_limits_per_method,
            cost=default_limits_cost,
            exempt_when=default_limits_exempt_when,
            deduct_when=default_limits_deduct_when,
        )
        self._application = _specs(
            application_limits,
            "global",
            per_method=application_limits_per_method,
            cost=application_limits_cost,
            exempt_when=application_limits_exempt_when,
        )
        # Kept to build the specs of limits read from app.config the same way.
        self._default_options: dict[str, Any] = {
            "per_method": default_limits_per_method,
            "cost": default_limits_cost,
            "exempt_when": default_limits_exempt_when,
            "deduct_when": default_limits_deduct_when,
        }
        self._application_options: dict[str, Any] = {
            "per_method": application_limits_per_method,
            "cost": application_limits_cost,
            "exempt_when": application_limits_exempt_when,
        }
        self._strategy = None if strategy is None else _strategy(strategy)
        self._storage_uri = storage_uri
        self._storage_options = dict(storage_options or {})
        self._storage = storage
        self._headers_enabled = headers_enabled
        self._legacy_headers = legacy_headers
        self._on_store_error = None if on_store_error is None else _on_store_error(on_store_error)
        self._enabled = enabled
        self._trusted_proxies = None if trusted_proxies is None else parse_networks(trusted_proxies)
        self._ipv6_prefix = ipv6_prefix
        remote_address(self._trusted_proxies, ipv6_prefix=ipv6_prefix)  # checks the prefix now
        self._key_prefix = escape_key(key_prefix) if key_prefix else ""
        self.name = name
        self.listeners = tuple(listeners)
        # Declarations, by the view function or blueprint they were applied to.
        self._declared: dict[object, list[_Declared]] = {}
        self._exempt: set[object] = set()
        self._filters: list[Callable[[], bool]] = []
        self._version = 0  # bumped by every declaration: cached plans are then made again
        self._environ_key = f"buttress.limits.{id(self)}"
        self._keys: dict[str, str] = {}  # a key function's value -> the key in the store
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"Limiter(name={self.name!r})"

    # -- configuration --------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Limit ``app``'s requests: read its config, make the store, register the hooks.

        May be called for several apps (each gets its own store unless ``storage=`` was given).

        Raises:
            ConfigurationError: For a bad value in ``app.config``, naming it.
        """
        config = app.config

        def pick(argument: Any, key: str, default: Any) -> Any:
            return argument if argument is not None else config.get(key, default)

        strategy = _strategy(pick(self._strategy, "BUTTRESS_STRATEGY", "fixed-window"))
        on_store_error = _on_store_error(
            pick(self._on_store_error, "BUTTRESS_ON_STORE_ERROR", "local")
        )
        storage = self._storage
        if storage is None:
            uri = pick(self._storage_uri, "BUTTRESS_STORAGE_URI", "memory://")
            options = {**config.get("BUTTRESS_STORAGE_OPTIONS", {}), **self._storage_options}
            storage = storage_from_url(uri, **options)
        key_func = self._key_func
        trusted = pick(self._trusted_proxies, "BUTTRESS_TRUSTED_PROXIES", None)
        if key_func is None:
            key_func = remote_address(trusted, ipv6_prefix=self._ipv6_prefix)
        elif trusted is not None:
            raise ConfigurationError(
                "BUTTRESS_TRUSTED_PROXIES applies to the default key function only, but this "
                "limiter has a key_func: use key_func=remote_address(trusted_proxies=...)"
            )
        defaults = self._defaults
        if defaults is None:
            found = config.get("BUTTRESS_DEFAULT_LIMITS")
            defaults = _specs(found, _ROUTE, **self._default_options) or ()
        application = self._application
        if application is None:
            found = config.get("BUTTRESS_APPLICATION_LIMITS")
            application = _specs(found, "global", **self._application_options) or ()
        state = _AppState(
            engine=Engine(
                storage,
                strategy=strategy,
                on_store_error=on_store_error,
                name=self.name,
                listeners=self.listeners,
            ),
            key_func=key_func,
            defaults=defaults,
            application=application,
            enabled=_flag(pick(self._enabled, "BUTTRESS_ENABLED", True), "BUTTRESS_ENABLED"),
            headers_enabled=_flag(
                pick(self._headers_enabled, "BUTTRESS_HEADERS_ENABLED", True),
                "BUTTRESS_HEADERS_ENABLED",
            ),
            legacy_headers=_flag(
                pick(self._legacy_headers, "BUTTRESS_LEGACY_HEADERS", False),
                "BUTTRESS_LEGACY_HEADERS",
            ),
            renamed=self._header_names,
            replaced=_HEADER_NAMES | {name.lower() for name in self._header_names.values()},
        )
        registry: dict[Limiter, _AppState] = app.extensions.setdefault(_EXTENSION, {})
        if self not in registry:
            check = self._check_request

            def check_request() -> Response | None:
                return check(registry)

            app.before_request(check_request)
            # The headers go on in the WSGI layer, as the response starts: a list of tuples
            # appended to, not a werkzeug ``Headers`` that validates each value and is copied
            # again on the way out (about 4 µs a request), and every response gets them, an
            # error handler's 429 included.
            app.wsgi_app = _HeaderWriter(app.wsgi_app, self._environ_key)  # type: ignore[method-assign]
        registry[self] = state

    # -- declarations ---------------------------------------------------------------------------

    def limit(
        self,
        limit_value: LimitValue,
        *,
        key_func: KeyFunc | None = None,
        per_method: bool = False,
        methods: Iterable[str] | None = None,
        error_message: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        override_defaults: bool = True,
        cost: Cost = 1,
        deduct_when: Callable[[Response], bool] | None = None,
        on_breach: Callable[[RateLimitExceeded], Any] | None = None,
    ) -> Callable[[_Target], _Target]:
        """Limit a view (or every view of a blueprint), per route and per client.

        Works above or below ``@app.route``, on views registered before or after
        :meth:`init_app`, and on blueprints: ``limiter.limit("10/minute")(blueprint)``.

        Args:
            limit_value: The limits, or a callable returning them per request.
            key_func: Who is limited, for this limit only (default: the limiter's).
            per_method: Count each HTTP method apart.
            methods: Only these methods count (default: all).
            error_message: The message of the 429 this limit causes.
            exempt_when: When it returns true, this limit does not apply.
            override_defaults: ``False`` keeps the default limits on this route too.
            cost: What a request costs: an int, or a function returning one (0: not counted).
            deduct_when: A function of the response: the request is counted only when it
                returns true (e.g. ``lambda response: response.status_code >= 400`` counts
                failed logins only). The limit is still checked before the view runs.
            on_breach: Called with the :class:`RateLimitExceeded` when this limit rejects; a
                return value other than ``None`` is the response (made with
                ``app.make_response``) instead of the 429 (default: the limiter's).

        Returns:
            A decorator returning what it decorates, unchanged.

        Raises:
            ConfigurationError: For a bad limit string, naming it.
            TypeError, ValueError: For a bad cost or another bad argument.
        """
        spec = LimitSpec.make(
            limit_value,
            _ROUTE,
            methods=methods,
            per_method=per_method,
            cost=cost,
            exempt_when=exempt_when,
            error_message=error_message,
            key_func=key_func,
            deduct_when=deduct_when,
            on_breach=on_breach,
        )
        return self._declare(_Declared(spec, shared=False, override_defaults=override_defaults))

    def shared_limit(
        self,
        limit_value: LimitValue,
        scope: str,
        *,
        key_func: KeyFunc | None = None,
        per_method: bool = False,
        methods: Iterable[str] | None = None,
        error_message: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        override_defaults: bool = True,
        cost: Cost = 1,
        deduct_when: Callable[[Response], bool] | None = None,
        on_breach: Callable[[RateLimitExceeded], Any] | None = None,
    ) -> Callable[[_Target], _Target]:
        """A limit shared by a group of views: their requests count together, per client.

        Make it once, decorate each view of the group with it::

            search = limiter.shared_limit("100/hour", scope="search")

            @app.route("/search")
            @search
            def search_page(): ...

        Args:
            limit_value: The limits, or a callable returning them per request.
            scope: The group's name; two shared limits with one scope share their counts.
            key_func: As for :meth:`limit`.
            per_method: As for :meth:`limit`.
            methods: As for :meth:`limit`.
            error_message: As for :meth:`limit`.
            exempt_when: As for :meth:`limit`.
            override_defaults: As for :meth:`limit`.
            cost: As for :meth:`limit`.
            deduct_when: As for :meth:`limit`.
            on_breach: As for :meth:`limit`.

        Returns:
            A decorator returning what it decorates, unchanged.

        Raises:
            ConfigurationError: For a bad limit string, naming it.
            TypeError, ValueError: For a scope that is not a non-empty str, or a bad argument.
        """
        if not isinstance(scope, str) or not scope:
            raise TypeError(f"scope must be a non-empty str, got {scope!r}")
        spec = LimitSpec.make(
            limit_value,
            f"shared/{scope}",
            methods=methods,
            per_method=per_method,
            cost=cost,
            exempt_when=exempt_when,
            error_message=error_message,
            key_func=key_func,
            deduct_when=deduct_when,
            on_breach=on_breach,
        )
        return self._declare(_Declared(spec, shared=True, override_defaults=override_defaults))

    def _declare(self, declared: _Declared) -> Callable[[_Target], _Target]:
        def decorate(target: _Target) -> _Target:
            if not callable(target) and not isinstance(target, Blueprint):
                raise TypeError(f"a limit decorates a view function or a blueprint, got {target!r}")
            self._declared.setdefault(target, []).append(declared)
            self._version += 1
            return target

        return decorate

    def exempt(self, target: _Target) -> _Target:
        """Exempt a view (or every view of a blueprint) from every limit of this limiter.

        Returns:
            ``target``, unchanged.
        """
        if not callable(target) and not isinstance(target, Blueprint):
            raise TypeError(f"exempt takes a view function or a blueprint, got {target!r}")
        self._exempt.add(target)
        self._version += 1
        return target

    def request_filter(self, function: Callable[[], bool]) -> Callable[[], bool]:
        """Register a function that exempts a request from every limit when it returns true.

        Returns:
            ``function``, unchanged (it is usable as a decorator).
        """
        if not callable(function):
            raise TypeError(f"request_filter takes a function, got {function!r}")
        self._filters.append(function)
        return function

    @property
    def current_decision(self) -> Decision | None:
        """The decision on the current request (the binding limit's), or ``None`` if unlimited.

        Raises:
            RuntimeError: Outside a request context.
        """
        decided: _Decided | None = _current_request().environ.get(self._environ_key)
        return None if decided is None else decided[0]

    # -- requests -------------------------------------------------------------------------------
    #
    # This runs on every request: it reads Flask's request through ``_current_request()`` once,
    # finds the app's state in the registry its hook was made with, and the work that does not
    # depend on the request is done once per endpoint and method, in the plan.

    def _check_request(self, registry: dict[Limiter, _AppState]) -> Response | None:
        """Decide the request before its view runs (a ``before_request`` hook).

        ``registry`` holds the limiters of the app the hook was registered on.
        """
        current = _current_request()
        state = registry.get(self)
        endpoint = current.endpoint
        if (
            state is None
            or not state.enabled
            or endpoint is None  # no route: a 404 (or 405) is not counted, as in Flask-Limiter
            or endpoint == "static"
            or endpoint.endswith(".static")
            or (self._filters and any(function() for function in self._filters))
        ):
            return None
        method = current.method
        if state.version != self._version:  # a declaration since: the plans are made again
            state.plans = {}
            state.version = self._version
        plan = state.plans.get((endpoint, method))
        if plan is None:
            plan = state.plans[endpoint, method] = self._make_plan(state, endpoint, method)
        fixed = plan.fixed
        if fixed is not None:  # the usual case: one call to one limiter
            key_func = fixed.key_func
            # The chapter's key function, read here without looking the request up again.
            value = (
                current.remote_addr or "127.0.0.1" if key_func is get_remote_address else key_func()
            )
            key = self._keys.get(value) if type(value) is str else None
            decision = fixed.limiter.hit(key or self._key_of(key_func, value), fixed.cost)
            current.environ[self._environ_key] = (decision, fixed.policy, state)
            if decision.allowed:
                return None
            owner = fixed.owners.get(decision.rate) if fixed.owners else None
        else:
            outcome = self._decide(state, plan.specs, method) if plan.specs else None
            if outcome is None:
                return None
            decision, rates, owner = outcome
            current.environ[self._environ_key] = (decision, rate_limit_policy(rates), state)
            if decision.allowed:
                return None
        return self._reject(current, decision, owner)

    def _reject(self, current: Request, decision: Decision, owner: LimitSpec | None) -> Response:
        """Answer a rejected request: ``on_breach``'s response, else raise the 429."""
        message = owner.error_message if owner is not None else None
        body, content_type = rejection_body(decision, current.headers.get("Accept"), message)
        error = RateLimitExceeded(
            decision, message, Response(body, status=429, content_type=content_type)
        )
        on_breach = owner.on_breach if owner is not None and owner.on_breach else self._on_breach
        if on_breach is not None:
            answer = on_breach(error)
            if answer is not None:
                return current_app.make_response(answer)
        raise error

    def _make_plan(self, state: _AppState, endpoint: str, method: str) -> _Plan:
        specs = self._resolve(state, endpoint, method)
        # Fixed limits are parsed and scoped once here, dynamic ones on every request.
        pairs = tuple(
            (spec, None if callable(spec.value) else spec.rates(method)) for spec in specs
        )
        return _Plan(pairs, self._fixed(state, pairs))

    def _fixed(self, state: _AppState, specs: _Specs) -> _Fixed | None:
        """The decision :meth:`_decide` would make, made ready, if only the key is left to read.

        ``None`` when a spec reads the request (dynamic limits, a cost function, ``exempt_when``)
        or when the specs take several decisions (other key functions or costs).
        """
        counted: list[tuple[LimitSpec, tuple[Rate, ...], int]] = []
        for spec, rates in specs:
            cost = spec.cost
            if (
                rates is None
                or spec.exempt_when is not None
                or spec.deduct_when is not None
                or not isinstance(cost, int)
            ):
                return None
            if cost != 0:  # a cost of 0 is not counted
                counted.append((spec, rates, cost))
        if not counted:
            return None
        key_func = counted[0][0].key_func or state.key_func
        cost = counted[0][2]
        if any(
            (spec.key_func or state.key_func) is not key_func or spec_cost != cost
            for spec, _, spec_cost in counted
        ):
            return None
        # As _decide makes it: every rate once, in order; a rate's owner is its first spec.
        rates = tuple(dict.fromkeys(rate for _, spec_rates, _ in counted for rate in spec_rates))
        owners: dict[Rate, LimitSpec] = {}
        for spec, spec_rates, _ in counted:
            for rate in spec_rates:
                owners.setdefault(rate, spec)
        return _Fixed(
            key_func=key_func,
            cost=cost,
            rates=rates,
            policy=rate_limit_policy(rates),
            limiter=state.engine.limiter(rates),
            owners={
                rate: spec
                for rate, spec in owners.items()
                if spec.error_message is not None or spec.on_breach is not None
            },
        )

    def _resolve(self, state: _AppState, endpoint: str, method: str) -> tuple[LimitSpec, ...]:
        """The specs that apply to requests of ``method`` to ``endpoint``, in Flask-Limiter's way.

        A route's own limits replace the limits of its blueprints, which replace the defaults,
        unless every one of them says ``override_defaults=False``. Limits whose ``methods`` leave
        out ``method`` do not count as the route's own for it.
        """
        app = current_app
        views = _unwrapped(app.view_functions.get(endpoint))
        blueprints = [app.blueprints[name] for name in request.blueprints if name in app.blueprints]
        if any(target in self._exempt for target in [*views, *blueprints]):
            return ()
        route = [d for v in views for d in self._declared.get(v, ()) if d.spec.applies(method)]
        group = [d for b in blueprints for d in self._declared.get(b, ()) if d.spec.applies(method)]
        scope = f"{_ROUTE}/{endpoint}"
        chosen = [d.spec if d.shared else dataclasses.replace(d.spec, scope=scope) for d in route]
        if all(not d.override_defaults for d in route):
            chosen += [
                d.spec if d.shared else dataclasses.replace(d.spec, scope=scope) for d in group
            ]
            if all(not d.override_defaults for d in group):
                chosen += [
                    dataclasses.replace(spec, scope=scope)
                    for spec in state.defaults
                    if spec.applies(method)
                ]
        application = [spec for spec in state.application if spec.applies(method)]
        return (*application, *chosen)

    def _key(self, function: KeyFunc) -> str:
        """The store key of the client ``function`` names."""
        return self._key_of(function, function())

    def _key_of(self, function: KeyFunc, value: object) -> str:
        """The store key of the client ``function`` named by returning ``value``."""
        if not isinstance(value, str) or not value:
            raise TypeError(
                f"the key function {function!r} must return a non-empty str, got {value!r}"
            )
        key = self._keys.get(value)
        if key is None:  # escaped once per client, not on each of its requests
            key = escape_key(value)
            key = f"{self._key_prefix}:{key}" if self._key_prefix else key
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[value] = key
        return key

    def _decide(self, state: _AppState, specs: _Specs, method: str) -> _Outcome | None:
        """Decide every applicable spec: one decision per distinct (key, cost), usually one.

        Specs with another key function or cost than the rest cannot share their decision;
        their groups are decided one after another and the first rejection stops the rest (the
        groups decided before it keep their counts). Specs with ``deduct_when`` are checked
        first, counting nothing; what they count is counted after the response, if their
        predicate holds for it.
        """
        groups: dict[tuple[str, int, Callable[[Response], bool] | None], list[Rate]] = {}
        owners: dict[Rate, LimitSpec] = {}
        keys: dict[KeyFunc, str] = {}
        for spec, fixed in specs:
            if spec.exempt_when is not None and spec.exempt_when():
                continue
            cost = spec.request_cost()
            if cost == 0:
                continue
            function = spec.key_func or state.key_func
            key = keys.get(function)
            if key is None:
                key = keys[function] = self._key(function)
            rates = spec.rates(method) if fixed is None else fixed
            groups.setdefault((key, cost, spec.deduct_when), []).extend(rates)
            for rate in rates:
                owners.setdefault(rate, spec)
        binding: Decision | None = None
        decided: list[Rate] = []
        deferred: list[_Deferred] = []
        # The checks first (they count nothing), then the groups counted now.
        for (key, cost, deduct_when), grouped in sorted(
            groups.items(), key=lambda item: item[0][2] is None
        ):
            together = tuple(dict.fromkeys(grouped))
            decided.extend(together)
            limiter = state.engine.limiter(together)
            if deduct_when is None:
                decision = limiter.hit(key, cost)
            else:
                decision = limiter.peek(key, cost)
                deferred.append((deduct_when, limiter, key, cost))
            if binding is None or not decision.allowed or decision.remaining < binding.remaining:
                binding = decision
            if not decision.allowed:
                break
        if binding is None:
            return None
        if deferred and binding.allowed:
            after_this_request(functools.partial(_deduct, deferred))
        return binding, tuple(dict.fromkeys(decided)), owners.get(binding.rate)


def _deduct(deferred: list[_Deferred], response: Response) -> Response:
    """Count the ``deduct_when`` groups whose predicate holds for ``response`` (after it)."""
    for deduct_when, limiter, key, cost in deferred:
        if deduct_when(response):
            limiter.hit(key, cost)
    return response


class _HeaderWriter:
    """WSGI middleware adding a limiter's ``RateLimit-*`` headers as the response starts.

    The request's decision is in its environ (put there by the ``before_request`` hook); a
    response without one (an unlimited route, a 404) is passed on untouched. Headers of those
    names the response already has are replaced.
    """

    __slots__ = ("environ_key", "wsgi_app")

    def __init__(self, wsgi_app: WSGIApplication, environ_key: str) -> None:
        self.wsgi_app = wsgi_app
        self.environ_key = environ_key

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        key = self.environ_key

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            decided: _Decided | None = environ.get(key)
            if decided is not None:
                headers = _with_headers(headers, decided)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def _with_headers(headers: list[tuple[str, str]], decided: _Decided) -> list[tuple[str, str]]:
    """``headers`` with those describing the decision, replacing any of the same names."""
    decision, policy, state = decided
    ours = rate_limit_headers(decision, (), legacy=state.legacy_headers, policy=policy)
    if not state.headers_enabled:
        ours = [(name, value) for name, value in ours if name == "Retry-After"]
    if state.renamed:
        renamed = state.renamed
        ours = [(renamed.get(name, name), value) for name, value in ours]
    replaced = state.replaced
    for name, _ in headers:
        if name.lower() in replaced:  # one to replace: drop every one of those names
            return [(name, value) for name, value in headers if name.lower() not in replaced] + ours
    return headers + ours
