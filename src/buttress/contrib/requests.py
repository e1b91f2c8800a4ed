"""Resilient outbound HTTP for requests: an ``HTTPAdapter`` with safe retries and breakers.

::

    import requests
    from buttress.contrib.requests import ResilientAdapter

    session = requests.Session()
    adapter = ResilientAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.get("https://partner.example/orders/42")   # retried on 503/429/resets, politely

The same rules as :class:`buttress.contrib.httpx.ResilientTransport` (they share
:mod:`buttress.contrib._http`): retries only for idempotent methods or requests carrying an
``Idempotency-Key``; connection errors, timeouts, resets mid-body, 502/503/504 and 429 retried;
``Retry-After`` and ``RateLimit-Reset`` honoured up to ``max_wait``; a retry budget shared by the
session; a circuit breaker per host; optional per-host bulkhead and rate limit; a total timeout
and a per-attempt timeout; optional hedging of idempotent requests (on the hedge's threads).
urllib3's own retries are turned off (``max_retries=0``).

Needs the ``requests`` extra: ``pip install 'buttress[requests]'``.
"""

from __future__ import annotations

import http
import io
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from buttress._clock import Clock, system_clock
from buttress._events import Listener
from buttress._types import Duration
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import KeyedBulkhead
from buttress.chaos import ChaosPolicy, SyntheticResponse
from buttress.contrib._http import (
    DEFAULT_STATUSES,
    DEFAULT_WAIT,
    IDEMPOTENT_METHODS,
    BreakerFactory,
    HttpCore,
    ServerFailure,
    host_key,
    per_host_breaker,
    raise_for_failure,
)
from buttress.hedge import Hedge
from buttress.ratelimit import Limiter
from buttress.retry import RetryBudget, Wait

__all__ = [
    "DEFAULT_STATUSES",
    "IDEMPOTENT_METHODS",
    "RETRYABLE_ERRORS",
    "ResilientAdapter",
    "per_host_breaker",
    "request_key",
]

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
"""The requests exceptions retried by default (not TLS failures: see ``_retryable``)."""

TimeoutArg = float | tuple[float | None, float | None] | None
"""What ``requests`` accepts as ``timeout``: seconds, ``(connect, read)`` or ``None``."""


def _retryable(error: BaseException) -> bool:
    # A certificate or TLS failure will fail the same way again.
    return not isinstance(error, requests.exceptions.SSLError)


def request_key(request: requests.PreparedRequest) -> str:
    """The default key of a request's breaker, bulkhead and rate limit: its origin.

    Returns:
        ``scheme://host:port``.
    """
    parts = urlsplit(request.url or "")
    return host_key(parts.scheme, parts.hostname or "", parts.port)


def _bounded(timeout: Any, limit: float | None) -> Any:
    """Cut a ``requests`` timeout to ``limit`` seconds (each of connect and read)."""
    if limit is None:
        return timeout
    if timeout is None:
        return limit
    if isinstance(timeout, tuple):
        return tuple(limit if part is None or part > limit else part for part in timeout)
    if isinstance(timeout, (int, float)):
        return min(float(timeout), limit)
    if isinstance(timeout, urllib3.Timeout):
        connect, read = timeout.connect_timeout, timeout.read_timeout
        return (
            limit if not isinstance(connect, (int, float)) else min(connect, limit),
            limit if not isinstance(read, (int, float)) else min(read, limit),
        )
    return limit


class _Call:
    """One request through the adapter (never shared between requests)."""

    __slots__ = (
        "attempt",
        "hedged",
        "key",
        "lock",
        "options",
        "request",
        "retryable",
        "start",
        "stream",
        "timeout",
    )

    def __init__(
        self,
        request: requests.PreparedRequest,
        key: str,
        start: float,
        retryable: bool,
        hedged: bool,
        stream: bool,
        timeout: Any,
        options: dict[str, Any],
    ) -> None:
        self.request = request
        self.key = key
        self.start = start
        self.retryable = retryable
        self.hedged = hedged
        self.stream = stream
        self.timeout = timeout
        self.options = options
        self.attempt = 0
        # Hedged attempts number themselves from several threads at once.
        self.lock = threading.Lock() if hedged else None

    def next_number(self) -> int:
        """Count one more attempt; return its number."""
        lock = self.lock
        if lock is None:
            self.attempt += 1
            return self.attempt
        with lock:
            self.attempt += 1
            return self.attempt


_DRAIN_LIMIT = 64 * 1024  # a loser's unread body up to this size is read, to keep its connection


def _close(response: requests.Response) -> None:
    """Close a losing hedge's response, reading a small unread body first.

    So its connection goes back to the pool instead of being closed (``stream=True`` or
    ``buffer_body=False``).
    """
    try:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) <= _DRAIN_LIMIT:
            _ = response.content
    except requests.RequestException:
        pass  # the connection broke: closing it is all that is left
    finally:
        response.close()


class ResilientAdapter(HTTPAdapter):
    """A ``requests`` transport adapter that retries safely and breaks circuits per host.

    Mount one instance on a session for ``http://`` and ``https://``; its budget, breakers,
    bulkhead and rate limit are shared by the session's requests.

    Args:
        attempts: Tries per request, the first included (``1`` turns retries off).
        wait: Backoff between attempts when the server asks for nothing.
        max_wait: The longest wait before a retry; a ``Retry-After`` asking for longer makes
            the response come back at once instead.
        timeout: Seconds for the whole request, every attempt and wait included.
        attempt_timeout: Seconds for one attempt's connect and read (each also bounded by the
            ``timeout=`` of the call).
        methods: Methods retried as idempotent.
        statuses: Statuses retried (default: 429, 502, 503, 504).
        idempotency_header: A request carrying it is retried whatever its method.
        attempt_header: A header set to the attempt's number (e.g. ``"x-attempt"``).
        respect_retry_after: Wait as long as ``Retry-After`` / ``RateLimit-Reset`` ask.
        budget: The shared :class:`~buttress.RetryBudget` (``"default"``: 20% + 10/s).
        breaker: Makes the breaker of a host key (see :func:`per_host_breaker`), ``"default"``
            or ``None``. Exceptions and 5xx responses are failures, 4xx are not.
        max_hosts: The most host keys whose breakers are kept.
        bulkhead: Concurrent requests per host key (an int) or a
            :class:`~buttress.bulkhead.KeyedBulkhead`.
        rate_limit: A client-side rate limit per host key: a :class:`~buttress.Limiter` or a
            limit string; requests wait for admission.
        rate_limit_wait: The longest a request waits for the rate limit.
        chaos: A :class:`~buttress.chaos.ChaosPolicy` injected per attempt inside the breaker
            (its ``when`` receives the ``PreparedRequest``).
        hedge: A :class:`~buttress.hedge.Hedge` for idempotent requests (as ``methods`` and
            ``idempotency_header`` say, with a bytes or str body; retries on or off): each
            attempt runs on a thread of the hedge, another is sent when it is slow, and the
            first good response (below 500, not to be retried) wins; a loser runs to its end,
            then its response is closed. The adapter's ``close()`` closes the hedge's idle
            threads.
        buffer_body: Read a retryable request's response body inside the attempt (unless the
            call streams), so that a reset mid-body is retried.
        key: The key of a request's breaker, bulkhead and rate limit (default: its origin).
        name: The policies' name in events and logs.
        listeners: Callables receiving the policies' events.
        clock: The time source.
        pool_connections: Passed to ``HTTPAdapter``: how many host pools to cache.
        pool_maxsize: Passed to ``HTTPAdapter``: connections kept per host.
        pool_block: Passed to ``HTTPAdapter``: wait for a free connection instead of opening more.

    Raises:
        TypeError, ValueError: At construction, for bad arguments, naming the argument.
    """

    def __init__(
        self,
        *,
        attempts: int = 3,
        wait: Wait | float | timedelta = DEFAULT_WAIT,
        max_wait: Duration = 10.0,
        timeout: Duration | None = None,
        attempt_timeout: Duration | None = None,
        methods: Collection[str] = IDEMPOTENT_METHODS,
        statuses: Collection[int] = DEFAULT_STATUSES,
        idempotency_header: str | None = "idempotency-key",
        attempt_header: str | None = None,
        respect_retry_after: bool = True,
        budget: RetryBudget | Literal["default"] | None = "default",
        breaker: BreakerFactory | Literal["default"] | None = "default",
        max_hosts: int = 1024,
        bulkhead: KeyedBulkhead | int | None = None,
        rate_limit: Limiter | str | None = None,
        rate_limit_wait: Duration | None = None,
        chaos: ChaosPolicy | None = None,
        hedge: Hedge | None = None,
        buffer_body: bool = True,
        key: Callable[[requests.PreparedRequest], str] | None = None,
        name: str = "requests",
        listeners: Iterable[Listener] = (),
        clock: Clock = system_clock,
        pool_connections: int = 10,
        pool_maxsize: int = 10,
        pool_block: bool = False,
    ) -> None:
        self._core = core = HttpCore(
            attempts=attempts,
            wait=wait,
            max_wait=max_wait,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            methods=methods,
            statuses=statuses,
            idempotency_header=idempotency_header,
            attempt_header=attempt_header,
            respect_retry_after=respect_retry_after,
            budget=budget,
            breaker=breaker,
            max_hosts=max_hosts,
            bulkhead=bulkhead,
            rate_limit=rate_limit,
            rate_limit_wait=rate_limit_wait,
            chaos=chaos,
            hedge=hedge,
            buffer_body=buffer_body,
            key=key,
            retry_on=RETRYABLE_ERRORS,
            retry_if=_retryable,
            name=name,
            listeners=listeners,
            clock=clock,
        )
        self._key = key or request_key
        self._retrying: Callable[[_Call], requests.Response] | None = None
        if core.retry is not None:
            self._retrying = core.retry(self._attempt_maybe_hedged)
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=0,
            pool_block=pool_block,
        )

    def __repr__(self) -> str:
        core = self._core
        return f"ResilientAdapter(attempts={core.attempts}, name={core.name!r})"

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget shared by the session's requests."""
        return self._core.budget

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Return ``host key -> circuit breaker`` for the hosts seen (and still kept)."""
        return self._core.breakers()

    def breaker(self, key: str) -> CircuitBreaker | None:
        """Return the breaker of a host key (``"http://127.0.0.1:8000"``), made if needed."""
        return self._core.breaker_for(key)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: TimeoutArg | urllib3.Timeout = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send ``request`` under the adapter's policies (``Session.send`` calls this).

        Returns:
            The response: the first good one, or the last one when retries ran out.

        Raises:
            requests.RequestException: The last connection error or timeout, once retries ran
                out.
            CircuitOpen: The host's breaker is open (nothing was sent).
            RetryBudgetExhausted, BulkheadFull, RateLimited, Timeout: As their names say.
        """
        core = self._core
        body = request.body
        idempotent = core.idempotent_request(
            request.method or "GET",
            request.headers,
            body is None or isinstance(body, (bytes, str)),
        )
        call = _Call(
            request,
            self._key(request),
            core.clock.now(),
            idempotent and core.retry is not None,
            idempotent and core.hedge is not None,
            stream,
            timeout,
            {"verify": verify, "cert": cert, "proxies": proxies},
        )
        retrying = self._retrying
        if retrying is not None and call.retryable:
            return retrying(call)
        core.deposit()
        if call.hedged:
            return self._attempt_maybe_hedged(call)
        return self._attempt(call, request)

    def _accept(self, response: requests.Response) -> bool:
        """Whether a hedged attempt's response may win: below 500, and not one to retry."""
        return response.status_code < 500 and not self._core.retry_response(response)

    def _attempt_maybe_hedged(self, call: _Call) -> requests.Response:
        hedge = self._core.hedge
        if hedge is None or not call.hedged:
            return self._attempt(call, call.request)
        # Every attempt sends a copy: a loser of an earlier round may still be sending one
        # while a retry starts.
        return hedge.run_sync(
            lambda _: self._attempt(call, call.request.copy()),
            accept=self._accept,
            discard=_close,
            target=f"{call.request.method} {call.key}",
        )

    def _attempt(self, call: _Call, request: requests.PreparedRequest) -> requests.Response:
        core = self._core
        number = call.next_number()
        if core.attempt_header is not None:
            request.headers[core.attempt_header] = str(number)
        limit = core.attempt_limit(call.start)
        if core.limiter is not None:
            core.limiter.acquire(call.key, timeout=core.rate_wait(limit))
            limit = core.attempt_limit(call.start)
        permit = None
        if core.bulkhead is not None:
            permit = core.bulkhead.acquire(call.key, timeout=limit)
            limit = core.attempt_limit(call.start)
        try:
            breaker = core.breaker_for(call.key)
            if breaker is None:
                return self._exchange(call, request, limit)
            try:
                with breaker.guard():
                    response = self._exchange(call, request, limit)
                    raise_for_failure(response, call.key)
            except ServerFailure as failure:
                return failure.response  # type: ignore[no-any-return]
            return response
        finally:
            # The body is read by now when it had to be; a streamed body holds no slot.
            if permit is not None:
                permit.release()

    def _exchange(
        self, call: _Call, request: requests.PreparedRequest, limit: float | None
    ) -> requests.Response:
        core = self._core
        chaos = core.chaos
        if chaos is not None:
            injection = chaos.decide(request)
            if injection is not None:
                result = chaos.apply(injection, f"{request.method} {request.url}")
                if injection.replaces_call:
                    return self._synthetic(request, result)
        response = super().send(
            request,
            stream=call.stream,
            timeout=_bounded(call.timeout, limit),
            **call.options,
        )
        status = response.status_code
        if (call.retryable or call.hedged) and (
            (core.buffer_body and not call.stream) or status in core.statuses
        ):
            try:
                _ = response.content  # read here, so that a reset mid-body is retried
            finally:
                response.close()  # the body is read: the connection goes back to the pool
        return response

    def close(self) -> None:
        """Close the connection pools and the hedge's idle threads (``Session.close()``).

        A hedged attempt still running (a loser) cannot be stopped: it ends on its own, and its
        thread with it.
        """
        try:
            super().close()
        finally:
            if self._core.hedge is not None:
                self._core.hedge.close()

    def _synthetic(self, request: requests.PreparedRequest, result: object) -> requests.Response:
        if not isinstance(result, SyntheticResponse):  # checked when the adapter was built
            raise TypeError(f"chaos result must be a SyntheticResponse, got {result!r}")
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(result.content),
            headers=result.headers,
            status=result.status,
            reason=http.HTTPStatus(result.status).phrase,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)
