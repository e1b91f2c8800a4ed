"""What the outbound HTTP integrations share: the sans-I/O rules and the per-host policies.

:mod:`buttress.contrib.httpx` and :mod:`buttress.contrib.requests` are thin drivers over this
module: it decides what may be retried (methods, ``Idempotency-Key``, statuses), reads the delay a
server asks for (``Retry-After`` in seconds or as an HTTP-date, ``RateLimit-Reset``,
``X-RateLimit-Reset`` and the ``t=`` of a structured ``RateLimit`` field), names the host a request
goes to, and keeps the policies of each host (a circuit breaker, a bulkhead slot, a client-side
rate limit). It never does I/O and never sleeps: the drivers do, through the policies' clocks.

The order of the policies around one attempt, outermost first::

    retry (budget, backoff, Retry-After, total timeout)
      -> hedge (idempotent requests; async: losers cancelled, sync: on the hedge's threads)
        -> rate limit (waits for the host's quota) -> bulkhead (a slot per host)
          -> circuit breaker (CircuitOpen before any socket) -> fault injection -> the exchange
"""

from __future__ import annotations

import collections
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from buttress._clock import Clock, check_clock, system_clock
from buttress._deadline import current_deadline
from buttress._errors import Timeout
from buttress._events import Listener, check_listeners
from buttress._types import Duration, check_int, check_name, seconds, seconds_or_none
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import KeyedBulkhead
from buttress.chaos import ChaosPolicy, SyntheticResponse
from buttress.chaos._policy import NO_RESULT
from buttress.hedge import Hedge
from buttress.ratelimit import Limiter
from buttress.retry import Retry, RetryBudget, Wait, WaitExponential

__all__ = [
    "DEFAULT_STATUSES",
    "IDEMPOTENT_METHODS",
    "BreakerFactory",
    "HttpCore",
    "ServerFailure",
    "host_key",
    "parse_rate_limit_reset",
    "parse_retry_after",
    "per_host_breaker",
    "raise_for_failure",
    "server_delay",
    "timeout_extension",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""The methods RFC 9110 calls idempotent: retried by default."""

DEFAULT_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried by default: too many requests, and a gateway or server that did not serve."""

DEFAULT_WAIT = WaitExponential(initial=0.1, multiplier=2.0, max=5.0, jitter="full")
"""Backoff between attempts when the server says nothing: 0.1 s doubling, at most 5 s, jittered."""

BreakerFactory = Callable[[str], CircuitBreaker]
"""Makes the circuit breaker of one host key (called once per key, on first use)."""

_EPOCH_THRESHOLD = 1_000_000_000.0  # a "reset" this large is a Unix time, not seconds from now
_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t\s*=\s*(\d+(?:\.\d+)?)")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class _Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


# --- pure parsing --------------------------------------------------------------------------------


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` value: seconds (``"120"``) or an HTTP-date.

    Args:
        value: The header's value.
        now: The current wall-clock time as a Unix timestamp (default :func:`time.time`), for
            HTTP-dates.

    Returns:
        Seconds to wait (``0.0`` for a date in the past), or ``None`` if the value is malformed.
    """
    text = value.strip()
    if not text:
        return None
    try:
        delay = float(text)
    except ValueError:
        pass
    else:
        return delay if math.isfinite(delay) and delay >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; obsolete forms may come without a zone
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_rate_limit_reset(value: str, *, now: float | None = None) -> float | None:
    """Read a ``RateLimit-Reset`` (or ``X-RateLimit-Reset``) value.

    The IETF draft sends seconds until the quota resets; several APIs (GitHub's
    ``X-RateLimit-Reset``) send the Unix time of the reset instead. A number above 10⁹ is taken
    for a Unix time.

    Args:
        value: The header's value.
        now: The current wall-clock time as a Unix timestamp (default :func:`time.time`).

    Returns:
        Seconds until the reset (``0.0`` if it has passed), or ``None`` if malformed.
    """
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number >= _EPOCH_THRESHOLD:
        return max(0.0, number - (time.time() if now is None else now))
    return number


def server_delay(headers: _Headers, *, now: float | None = None) -> float | None:
    """Return the delay a response asks for, from its headers, or ``None`` if it asks for none.

    ``Retry-After`` comes first; then ``RateLimit-Reset``, ``X-RateLimit-Reset`` and the ``t=``
    parameter of a structured ``RateLimit`` field (the draft's later form).

    Args:
        headers: The response headers (any mapping with a case-insensitive ``get``).
        now: The current wall-clock time as a Unix timestamp (default :func:`time.time`).

    Returns:
        Seconds to wait before asking again, or ``None``.
    """
    value = headers.get("retry-after")
    if value is not None:
        delay = parse_retry_after(value, now=now)
        if delay is not None:
            return delay
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        value = headers.get(name)
        if value is not None:
            delay = parse_rate_limit_reset(value, now=now)
            if delay is not None:
                return delay
    value = headers.get("ratelimit")
    if value is not None:
        match = _RATELIMIT_T.search(value)
        if match is not None:
            return float(match.group(1))
    return None


def host_key(scheme: str, host: str, port: int | None) -> str:
    """Name the origin a request goes to: ``"https://api.example.com:443"``.

    Args:
        scheme: The URL scheme.
        host: The host name or address (lower-cased here).
        port: The port, or ``None`` for the scheme's default.

    Returns:
        ``scheme://host:port``, the default key of per-host breakers, bulkheads and rate limits.
    """
    scheme = scheme.lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    host = host.lower()
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def per_host_breaker(
    *,
    fail_max: int | None = None,
    failure_rate: float | None = 0.5,
    window_size: int = 20,
    min_calls: int = 10,
    reset_timeout: Duration = 2.0,
    name: str = "http",
    listeners: Iterable[Listener] = (),
    clock: Clock = system_clock,
    **options: Any,
) -> BreakerFactory:
    """Return a factory of one :class:`~buttress.CircuitBreaker` per host key.

    The defaults open a host's breaker when half of its last 20 calls (at least 10) failed, and
    let one trial call through every 2 seconds until one succeeds.

    Args:
        fail_max: Also open after this many failures in a row (``None``: not on a count).
        failure_rate: The failure rate that opens a breaker (``None``: not on a rate).
        window_size: The calls the rate is measured over.
        min_calls: Calls needed before the rate is judged.
        reset_timeout: Seconds a breaker stays open before a trial call.
        name: The prefix of the breakers' names (``"http https://host:443"``).
        listeners: Callables receiving the breakers' events.
        clock: The time source.
        **options: More :class:`~buttress.CircuitBreaker` arguments.

    Returns:
        A function of the host key making its breaker (not registered in the breaker registry,
        where two clients of one host would replace each other's breakers).

    Raises:
        TypeError, ValueError: For bad arguments, at once (a trial breaker is built).
    """
    listeners = tuple(listeners)

    def make(key: str) -> CircuitBreaker:
        return CircuitBreaker(
            f"{name} {key}",
            fail_max=fail_max,
            failure_rate=failure_rate,
            window_size=window_size,
            min_calls=min_calls,
            reset_timeout=reset_timeout,
            listeners=listeners,
            clock=clock,
            registry=None,
            **options,
        )

    make("check")  # bad arguments fail here, when the client is built, not at its first call
    return make


class ServerFailure(Exception):
    """A 5xx response, raised inside the breaker's guard so it counts as a failure (never leaks)."""

    def __init__(self, status: int, key: str, response: Any) -> None:
        super().__init__(f"HTTP {status} from {key}")
        self.response = response


def raise_for_failure(response: Any, key: str) -> None:
    """Raise :class:`ServerFailure` for a 5xx response, inside the breaker's guard.

    Raises:
        ServerFailure: If the status is 500 or above (the driver catches it outside the guard).
    """
    if response.status_code >= 500:
        raise ServerFailure(response.status_code, key, response)


# --- the per-client core -------------------------------------------------------------------------


def _methods(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Collection):
        raise TypeError(f"methods must be a collection of method names, got {value!r}")
    methods = set()
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"methods must hold non-empty str method names, got {item!r}")
        methods.add(item.upper())
    return frozenset(methods)


def _statuses(value: object) -> frozenset[int]:
    if not isinstance(value, Collection):
        raise TypeError(f"statuses must be a collection of HTTP status codes, got {value!r}")
    statuses = set()
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or not 100 <= item <= 599:
            raise ValueError(f"statuses must hold HTTP status codes (100-599), got {item!r}")
        statuses.add(item)
    return frozenset(statuses)


def _header_name(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", value):
        raise ValueError(f"{name} must be an HTTP header name or None, got {value!r}")
    return value.lower()


class HttpCore:
    """The policies of one client, shared by its sync and async drivers (private to contrib).

    Args: see :class:`buttress.contrib.httpx.ResilientTransport`; ``retry_on`` are the adapter's
    exception types worth retrying, ``retry_if`` an optional extra predicate on them.
    """

    def __init__(  # noqa: PLR0912, PLR0915 - one plain check per argument reads best
        self,
        *,
        attempts: int,
        wait: Wait | float | timedelta,
        max_wait: Duration,
        timeout: Duration | None,
        attempt_timeout: Duration | None,
        methods: Collection[str],
        statuses: Collection[int],
        idempotency_header: str | None,
        attempt_header: str | None,
        respect_retry_after: bool,
        budget: RetryBudget | Literal["default"] | None,
        breaker: BreakerFactory | Literal["default"] | None,
        max_hosts: int,
        bulkhead: KeyedBulkhead | int | None,
        rate_limit: Limiter | str | None,
        rate_limit_wait: Duration | None,
        chaos: ChaosPolicy | None,
        hedge: Hedge | None,
        buffer_body: bool,
        key: Callable[[Any], str] | None,
        retry_on: tuple[type[BaseException], ...],
        retry_if: Callable[[BaseException], bool] | None,
        name: str,
        listeners: Iterable[Listener],
        clock: Clock,
    ) -> None:
        check_clock(clock)
        self.clock = clock
        self.name = check_name(name)
        self.listeners = check_listeners(tuple(listeners))
        self.attempts = check_int(attempts, "attempts", minimum=1)
        self.max_wait = seconds(max_wait, "max_wait")
        self.timeout = seconds_or_none(timeout, "timeout", allow_zero=False)
        self.attempt_timeout = seconds_or_none(attempt_timeout, "attempt_timeout", allow_zero=False)
        self.methods = _methods(methods)
        self.statuses = _statuses(statuses)
        self.idempotency_header = _header_name(idempotency_header, "idempotency_header")
        self.attempt_header = _header_name(attempt_header, "attempt_header")
        if not isinstance(respect_retry_after, bool):
            raise TypeError(f"respect_retry_after must be a bool, got {respect_retry_after!r}")
        self.respect_retry_after = respect_retry_after
        if budget == "default":
            budget = RetryBudget(0.2, 10.0, clock=clock)
        elif budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget, 'default' or None, got {budget!r}")
        self.budget = budget
        if breaker == "default":
            breaker = per_host_breaker(name=name, listeners=self.listeners, clock=clock)
        elif breaker is not None and not callable(breaker):
            raise TypeError(
                "breaker must be a function of the host key returning a CircuitBreaker "
                f"(see per_host_breaker), 'default' or None; got {breaker!r}"
            )
        self.breaker_factory = breaker
        self.max_hosts = check_int(max_hosts, "max_hosts", minimum=1)
        self._breakers: collections.OrderedDict[str, CircuitBreaker] = collections.OrderedDict()
        self._lock = threading.Lock()
        if isinstance(bulkhead, int) and not isinstance(bulkhead, bool):
            bulkhead = KeyedBulkhead(
                check_int(bulkhead, "bulkhead", minimum=1),
                max_waiting=1_000_000,
                max_keys=self.max_hosts,
                name=f"{name} bulkhead",
                listeners=self.listeners,
            )
        elif bulkhead is not None and not isinstance(bulkhead, KeyedBulkhead):
            raise TypeError(
                f"bulkhead must be a KeyedBulkhead, a number of slots per host or None; "
                f"got {bulkhead!r}"
            )
        self.bulkhead = bulkhead
        if isinstance(rate_limit, str):
            rate_limit = Limiter(
                rate_limit, algorithm="gcra", name=f"{name} rate limit", clock=clock
            )
        elif rate_limit is not None and not isinstance(rate_limit, Limiter):
            raise TypeError(
                f"rate_limit must be a Limiter, a limit string ('10/second') or None; "
                f"got {rate_limit!r}"
            )
        self.limiter = rate_limit
        self.rate_limit_wait = seconds_or_none(rate_limit_wait, "rate_limit_wait")
        if chaos is not None and not isinstance(chaos, ChaosPolicy):
            raise TypeError(f"chaos must be a ChaosPolicy or None, got {chaos!r}")
        if (
            chaos is not None
            and chaos.result is not NO_RESULT
            and not isinstance(chaos.result, SyntheticResponse)
        ):
            raise TypeError("chaos: a result injected into HTTP calls must be a SyntheticResponse")
        self.chaos = chaos
        if hedge is not None and not isinstance(hedge, Hedge):
            raise TypeError(f"hedge must be a Hedge or None, got {hedge!r}")
        self.hedge = hedge
        if not isinstance(buffer_body, bool):
            raise TypeError(f"buffer_body must be a bool, got {buffer_body!r}")
        self.buffer_body = buffer_body
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the request returning a str, got {key!r}")
        self.key = key
        self.retry: Retry | None = None
        if self.attempts > 1:
            self.retry = Retry(
                attempts=self.attempts,
                timeout=self.timeout,
                wait=wait,
                on=retry_on,
                retry_if=retry_if,
                retry_if_result=self.retry_response,
                pushback=self.pushback if respect_retry_after else None,
                max_wait=self.max_wait,
                budget=budget,
                fallback=_last_response,
                name=name,
                listeners=self.listeners,
                clock=clock,
            )
        elif not isinstance(wait, (Wait, int, float, timedelta)) or isinstance(wait, bool):
            raise TypeError(f"wait must be a Wait or a number of seconds, got {wait!r}")

    # -- decisions (pure) -----------------------------------------------------------------------

    def idempotent_request(self, method: str, headers: _Headers, replayable: bool) -> bool:
        """Whether a request may be sent more than once (retries and hedges on or not).

        It may when its method is idempotent or it carries the idempotency header, and its body
        can be sent again.
        """
        if not replayable:
            return False
        if method.upper() in self.methods:
            return True
        header = self.idempotency_header
        return header is not None and headers.get(header) is not None

    def retryable_request(self, method: str, headers: _Headers, replayable: bool) -> bool:
        """Whether a request may be retried: retries are on and it is idempotent."""
        return self.retry is not None and self.idempotent_request(method, headers, replayable)

    def retry_response(self, response: Any) -> bool:
        """Whether a response asks for another attempt (the ``retry_if_result`` of the retry).

        A response whose server asks for a longer wait than ``max_wait`` is not retried: it is
        returned at once, so that the caller sees the server's answer instead of a doomed retry.
        """
        if response.status_code not in self.statuses:
            return False
        if not self.respect_retry_after:
            return True
        asked = server_delay(response.headers)
        return asked is None or asked <= self.max_wait

    def pushback(self, outcome: object) -> float | None:
        """The delay the failed attempt's server asked for (the ``pushback`` of the retry)."""
        if isinstance(outcome, BaseException):
            return None
        return server_delay(outcome.headers)  # type: ignore[attr-defined]

    def breaker_failure(self, status: int) -> bool:
        """Whether a status counts against the host's breaker: 5xx yes, 4xx (429 too) no."""
        return status >= 500

    def attempt_limit(self, start: float) -> float | None:
        """Seconds the next attempt may take: the attempt timeout, the total and the deadline.

        Raises:
            Timeout: If no time is left.
        """
        limit = self.attempt_timeout
        if self.timeout is not None:
            left = self.timeout - (self.clock.now() - start)
            limit = left if limit is None or left < limit else limit
        deadline = current_deadline()
        if deadline is not None:
            left = deadline.remaining()
            limit = left if limit is None or left < limit else limit
        if limit is not None and limit <= 0:
            raise Timeout(f"{self.name}: no time left for another attempt")
        return limit

    def rate_wait(self, limit: float | None) -> float | None:
        """The longest to wait for the client-side rate limit, within the attempt's time."""
        wait = self.rate_limit_wait
        if limit is not None and (wait is None or limit < wait):
            return limit
        return wait

    # -- per-host state -------------------------------------------------------------------------

    def breaker_for(self, key: str) -> CircuitBreaker | None:
        """The breaker of ``key``, made on first use; at most ``max_hosts`` are kept (LRU)."""
        factory = self.breaker_factory
        if factory is None:
            return None
        breakers = self._breakers
        found = breakers.get(key)
        if found is not None:
            return found
        with self._lock:
            found = breakers.get(key)
            if found is None:
                found = factory(key)
                if not isinstance(found, CircuitBreaker):
                    raise TypeError(f"the breaker factory returned {found!r}, not a CircuitBreaker")
                breakers[key] = found
                while len(breakers) > self.max_hosts:
                    breakers.popitem(last=False)
            return found

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Return ``host key -> breaker`` for every breaker kept now."""
        with self._lock:
            return dict(self._breakers)

    def deposit(self) -> None:
        """Count a request that is not retried into the budget (retried ones are counted by it)."""
        if self.budget is not None:
            self.budget.deposit()


def _last_response(error: BaseException) -> Any:
    """The retry's fallback: give the last response back when responses kept failing.

    Exceptions (connection errors, timeouts) are raised again: the retry has added its note.
    """
    last = getattr(error, "last_result", None)
    if last is not None:
        return last
    raise error


def timeout_extension(original: Mapping[str, float | None] | None, limit: float) -> dict[str, Any]:
    """Return httpx's per-request ``timeout`` extension, each phase bounded by ``limit`` seconds."""
    if not original:
        return {"connect": limit, "read": limit, "write": limit, "pool": limit}
    bounded: dict[str, Any] = {}
    for phase in ("connect", "read", "write", "pool"):
        value = original.get(phase)
        bounded[phase] = limit if value is None or value > limit else value
    return bounded
