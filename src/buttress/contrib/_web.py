"""What the Flask extension and the ASGI middleware share: client keys, limits, decisions, replies.

Nothing here imports a web framework. A request's applicable limits (the route's, the shared
ones, the application's) become one tuple of *scoped* rates (see :class:`~buttress.ratelimit.Rate`)
decided for the client's key in **one** operation: all or nothing, one round trip on Redis.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union, cast

from buttress._clock import Clock, system_clock
from buttress._events import Listener
from buttress._types import Duration, check_int
from buttress.ratelimit import ALGORITHMS, Algorithm, Decision, Limiter, Rate, parse_rates
from buttress.ratelimit._limiter import OnStoreError
from buttress.storage import Storage
from buttress.storage._url import resolve_storage

__all__ = [
    "DEFAULT_ERROR",
    "Engine",
    "LimitSpec",
    "LimitValue",
    "ProxyNetworks",
    "client_address",
    "escape_key",
    "parse_networks",
    "rate_limit_headers",
    "rate_limit_policy",
    "rejection_body",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007 - a runtime alias
ProxyNetworks = tuple[IPNetwork, ...]
LimitValue = Union[str, Rate, Sequence[Union[str, Rate]], Callable[[], Any]]  # noqa: UP007
"""A limit: ``"10/hour"``, ``"100 per day; 10 per hour"``, rates, a list of those, or a callable
returning one of those per request (dynamic limits, e.g. by the user's plan)."""

DEFAULT_ERROR = "Too Many Requests"
_MAX_KEY_PART = 200
_SPECIAL = "%:{}# "  # what a key part may not hold as it is
_SPECIAL_SEARCH = re.compile(r"[%:{}# ]").search


def parse_networks(networks: Iterable[str | IPNetwork] | str | None) -> ProxyNetworks:
    """The trusted proxy networks, from ``"10.0.0.0/8"``, addresses, or a list of them.

    Raises:
        TypeError, ValueError: For anything that is not an address or a network.
    """
    if networks is None:
        return ()
    items = [networks] if isinstance(networks, str) else list(networks)
    parsed: list[IPNetwork] = []
    for item in items:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            parsed.append(item)
        elif isinstance(item, str):
            try:
                parsed.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as error:
                raise ValueError(
                    f"trusted_proxies: {item!r} is not an IP address or network"
                ) from error
        else:
            raise TypeError(f"trusted_proxies must hold addresses or networks as str, got {item!r}")
    return tuple(parsed)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_chain(forwarded_for: str | None, forwarded: str | None) -> list[str] | None:
    """The addresses a proxy chain reports, nearest last; ``Forwarded`` wins over XFF."""
    if forwarded:
        chain = []
        for element in forwarded.split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    chain.append(value)
        return chain
    if forwarded_for:
        return forwarded_for.split(",")
    return None


def client_address(
    peer: str | None,
    *,
    forwarded_for: str | None = None,
    forwarded: str | None = None,
    trusted: ProxyNetworks = (),
    ipv6_prefix: int = 128,
) -> str:
    """The client's address for a rate limit key, safe behind proxies.

    The socket peer is the client, unless it is a trusted proxy: then the proxy chain
    (``Forwarded: for=`` or ``X-Forwarded-For``) is read from the right, and the first address
    that is not a trusted proxy is the client. Headers from an untrusted peer change nothing (a
    client cannot spoof its way out of its limit). An IPv6 client is keyed by its ``/ipv6_prefix``
    network, so that a host cannot escape by rotating through its addresses.

    Returns:
        The address (``"203.0.113.7"``, ``"2001:db8:1:2::/64"``), or ``"unknown"`` when the peer
        is not known or not an address (a unix socket).
    """
    address = _address(peer) if peer else None
    if address is None:
        return "unknown"
    if trusted and any(address in network for network in trusted):
        chain = _forwarded_chain(forwarded_for, forwarded)
        if chain:
            for hop in reversed(chain):
                found = _address(hop)
                if found is None:
                    break  # a malformed hop: trust nothing further left
                address = found
                if not any(found in network for network in trusted):
                    break
    if isinstance(address, ipaddress.IPv6Address) and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


def escape_key(part: str) -> str:
    """A key part that cannot reach into another key's space in the store.

    ``%``, ``:``, ``{``, ``}``, ``#``, spaces and other unprintable characters are
    percent-encoded; a part longer than 200 characters once escaped is replaced by ``#`` and its
    SHA-256.
    """
    if len(part) <= _MAX_KEY_PART and part.isprintable() and not _SPECIAL_SEARCH(part):
        return part
    escaped = "".join(
        "".join(f"%{byte:02X}" for byte in c.encode("utf-8", "surrogatepass"))
        if c in _SPECIAL or not c.isprintable()
        else c
        for c in part
    )
    if len(escaped) > _MAX_KEY_PART:
        return "#" + hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()
    return escaped


def _rates(value: Any, where: str) -> tuple[Rate, ...]:
    if isinstance(value, Rate):
        return (value,)
    if isinstance(value, str):
        return parse_rates(value)
    if isinstance(value, (list, tuple)):
        rates: list[Rate] = []
        for item in value:
            rates.extend(_rates(item, where))
        return tuple(rates)
    raise TypeError(f"{where} must be a limit string, a Rate or a list of them, got {value!r}")


@dataclass(frozen=True)
class LimitSpec:
    """One set of limits declared on a route, a group of routes or the application.

    Attributes:
        value: The limits, or a callable returning them per request (dynamic).
        scope: Keeps these limits' state apart: a route's endpoint, a shared limit's name,
            ``"global"`` for application limits.
        methods: Only requests with these methods (upper case) count; ``None``: all.
        per_method: Each method gets its own state (``GET`` and ``POST`` counted apart).
        cost: Units a request takes: an int, or a callable returning one per request.
        exempt_when: A callable; when it returns true the request is not limited by this spec.
        error_message: The body of the 429 when this spec rejects (default: the limit).
        key_func: A key function for this spec only (``None``: the limiter's).
        deduct_when: A callable of the response: the request is counted only when it returns
            true (checked, not counted, before the view runs). Flask only.
        on_breach: A callable of the rejection when this spec rejects; what it returns, if not
            ``None``, is the response. Flask only.
    """

    value: LimitValue
    scope: str
    methods: frozenset[str] | None = None
    per_method: bool = False
    cost: int | Callable[[], int] = 1
    exempt_when: Callable[[], bool] | None = None
    error_message: str | None = None
    key_func: Callable[[], str] | None = None
    deduct_when: Callable[[Any], bool] | None = None
    on_breach: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        for name in ("exempt_when", "deduct_when", "on_breach", "key_func"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable, got {getattr(self, name)!r}")
        if not callable(self.value):
            _rates(self.value, "limit")  # a bad limit fails at declaration, not per request
        if not isinstance(self.cost, int) and not callable(self.cost):
            raise TypeError(f"cost must be an int or a callable, got {self.cost!r}")
        if isinstance(self.cost, int):
            check_int(self.cost, "cost", minimum=0)

    @classmethod
    def make(
        cls,
        value: LimitValue,
        scope: str,
        *,
        methods: Iterable[str] | None = None,
        per_method: bool = False,
        cost: int | Callable[[], int] = 1,
        exempt_when: Callable[[], bool] | None = None,
        error_message: str | None = None,
        key_func: Callable[[], str] | None = None,
        deduct_when: Callable[[Any], bool] | None = None,
        on_breach: Callable[[Any], Any] | None = None,
    ) -> LimitSpec:
        """Check and normalise the arguments of a declaration."""
        if isinstance(methods, str):
            methods = [methods]
        return cls(
            value,
            scope,
            None if methods is None else frozenset(m.upper() for m in methods),
            per_method,
            cost,
            exempt_when,
            error_message,
            key_func,
            deduct_when,
            on_breach,
        )

    def applies(self, method: str) -> bool:
        """Whether this spec limits a request with ``method`` (not counting ``exempt_when``)."""
        return self.methods is None or method.upper() in self.methods

    def rates(self, method: str) -> tuple[Rate, ...]:
        """This spec's rates for a request, scoped (a dynamic value is read now).

        The integrations keep the rates of fixed limits per route, so this runs once for those.
        """
        value = self.value() if callable(self.value) else self.value
        scope = f"{self.scope}|{method.upper()}" if self.per_method else self.scope
        return tuple(rate.scoped(escape_key(scope)) for rate in _rates(value, "limit"))

    def request_cost(self) -> int:
        """The cost of the current request."""
        cost = self.cost() if callable(self.cost) else self.cost
        return check_int(cost, "cost", minimum=0)


class Engine:
    """Decides a request's scoped rates for a key, one limiter per distinct rate tuple.

    Args:
        storage: A store or a storage URL (``memory://``, ``redis://...``).
        strategy: The algorithm (``fixed-window`` and the others of
            :data:`~buttress.ratelimit.ALGORITHMS`).
        on_store_error: The limiter's policy while the store fails.
        store_failures: Store failures in a row after which the store is left alone for
            ``store_cooldown`` seconds.
        store_cooldown: Seconds before a failed store is tried again.
        name: The limiters' name in events and logs.
        listeners: Receive the limiters' events.
        clock: The time source of the memory fallback and the rejection cache.
        max_limiters: Distinct rate tuples kept (dynamic limits make new ones): the least
            recently used is dropped beyond this.

    Every limiter of the engine shares one store and one fault circuit (with its one local
    fallback store): an outage is seen, counted and recovered from once for the whole engine.
    """

    def __init__(
        self,
        storage: Any = "memory://",
        *,
        strategy: str = "fixed-window",
        on_store_error: OnStoreError = "local",
        store_failures: int = 3,
        store_cooldown: Duration = 5.0,
        name: str = "web",
        listeners: Sequence[Listener] = (),
        clock: Clock = system_clock,
        max_limiters: int = 1024,
    ) -> None:
        if strategy not in ALGORITHMS:
            raise ValueError(f"strategy must be one of {', '.join(ALGORITHMS)}, got {strategy!r}")
        # Resolve the store once: every limiter shares it (and its connections).
        self.storage: Storage = resolve_storage(
            storage,
            Storage,  # type: ignore[type-abstract]  # a Protocol, checked at run time
            "a store or a storage URL",
        )
        self.strategy = cast("Algorithm", strategy)
        self.on_store_error: OnStoreError = on_store_error
        self.name = name
        self.listeners = tuple(listeners)
        self._max = check_int(max_limiters, "max_limiters", minimum=1)
        self._limiters: OrderedDict[tuple[Rate, ...], Limiter] = OrderedDict()
        self._lock = threading.Lock()
        # The first limiter checks the common arguments now, and lends its fault circuit to
        # every later one.
        self._options: dict[str, Any] = {
            "algorithm": self.strategy,
            "storage": self.storage,
            "name": name,
            "on_store_error": on_store_error,
            "store_failures": store_failures,
            "store_cooldown": store_cooldown,
            "listeners": self.listeners,
            "clock": clock,
        }
        self._guard = Limiter("1/second", **self._options)._guard  # noqa: SLF001 - shared

    def limiter(self, rates: tuple[Rate, ...]) -> Limiter:
        """The limiter deciding ``rates`` together (made on first use)."""
        found = self._limiters.get(rates)
        if found is not None:
            if len(self._limiters) >= self._max:  # only a full cache needs the order of use
                self._limiters.move_to_end(rates)
            return found
        with self._lock:
            found = self._limiters.get(rates)
            if found is None:
                found = Limiter(rates, **self._options)
                found._guard = self._guard  # noqa: SLF001 - one fault circuit per engine
                self._limiters[rates] = found
                while len(self._limiters) > self._max:
                    self._limiters.popitem(last=False)
            return found

    def decide(self, key: str, rates: tuple[Rate, ...], cost: int = 1) -> Decision:
        """Decide a request of ``cost`` for ``key`` against every rate at once."""
        return self.limiter(rates).hit(key, cost)

    async def adecide(self, key: str, rates: tuple[Rate, ...], cost: int = 1) -> Decision:
        """The coroutine form of :meth:`decide` (never blocks the event loop)."""
        return await self.limiter(rates).ahit(key, cost)


def _whole_seconds(value: float | None, least: int) -> int:
    """Seconds rounded up, float noise aside (3600.0000000000005 is 3600, 3599.5 is 3600)."""
    whole = math.ceil((value or 0.0) - 1e-6)
    return whole if whole > least else least  # not max(): a third of the cost


@functools.lru_cache(maxsize=1024)
def rate_limit_policy(rates: tuple[Rate, ...]) -> str:
    """The ``RateLimit-Policy`` header for ``rates`` (``"100;w=86400, 10;w=3600"``; cached)."""
    return ", ".join(f"{rate.limit};w={math.ceil(rate.period)}" for rate in rates)


def rate_limit_headers(
    decision: Decision,
    rates: Sequence[Rate],
    *,
    legacy: bool = False,
    policy: str | None = None,
) -> list[tuple[str, str]]:
    """The response headers describing ``decision``.

    ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds) and
    ``RateLimit-Policy`` (every limit, ``10;w=3600``) of the IETF httpapi draft, for the limit
    closest to rejecting; ``Retry-After`` (seconds, rounded up) on a rejection; with ``legacy``,
    ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (a Unix time) instead, as Flask-Limiter
    sends them. ``policy``: the ``RateLimit-Policy`` value, when the caller keeps it (it is
    computed from ``rates`` otherwise).
    """
    reset = _whole_seconds(decision.reset_after, 0)
    if legacy:
        headers = [
            ("X-RateLimit-Limit", str(decision.limit)),
            ("X-RateLimit-Remaining", str(decision.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(time.time() + decision.reset_after))),
        ]
    else:
        headers = [
            ("RateLimit-Limit", str(decision.limit)),
            ("RateLimit-Remaining", str(decision.remaining)),
            ("RateLimit-Reset", str(reset)),
            ("RateLimit-Policy", policy if policy is not None else rate_limit_policy(tuple(rates))),
        ]
    if not decision.allowed:
        headers.append(("Retry-After", str(_whole_seconds(decision.retry_after, 1))))
    return headers


def describe_limit(rate: Rate | None) -> str:
    """A rate in words for a 429 body (``"10 per 1 hour"``)."""
    if rate is None:
        return "rate limit"
    text = str(rate)
    limit, _, unit = text.partition("/")
    return f"{limit} per 1 {unit}" if unit else text


def rejection_body(
    decision: Decision, accept: str | None, message: str | None = None
) -> tuple[bytes, str]:
    """The body of a 429 and its content type: JSON for JSON clients, else plain text.

    The body names the limit and the wait, never the store or any internal detail.
    """
    limit = describe_limit(decision.rate)
    retry = _whole_seconds(decision.retry_after, 1)
    text = message or f"{DEFAULT_ERROR}: {limit}"
    accept = (accept or "").lower()
    if "json" in accept and "html" not in accept.split(",")[0]:
        body = {"error": "too_many_requests", "message": text, "limit": limit, "retry_after": retry}
        return json.dumps(body).encode("utf-8"), "application/json"
    return f"{text}. Retry after {retry} s.\n".encode(), "text/plain; charset=utf-8"
