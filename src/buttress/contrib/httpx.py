"""Resilient outbound HTTP for httpx: a transport with safe retries, breakers and budgets.

::

    import httpx
    from buttress.contrib.httpx import ResilientTransport

    client = httpx.Client(transport=ResilientTransport(), base_url="https://partner.example")
    client.get("/orders/42")      # retried on 503/429/connection errors, Retry-After honoured

One :class:`ResilientTransport` serves ``httpx.Client`` and ``httpx.AsyncClient`` alike (it is
both an ``httpx.BaseTransport`` and an ``httpx.AsyncBaseTransport``). Per request it applies,
outermost first: a retry (idempotent methods or an ``Idempotency-Key`` only; backoff, the
server's ``Retry-After``/``RateLimit-Reset``, a retry budget shared by the client, a total
timeout), an optional hedge (idempotent requests, sync and async), an optional client-side rate
limit and bulkhead per host, a circuit breaker per host (``CircuitOpen`` raised before any
socket is touched), optional fault injection, and the exchange itself with a per-attempt
timeout. See ``docs/http.md``.

Needs the ``httpx`` extra: ``pip install 'buttress[httpx]'``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from datetime import timedelta
from typing import Any, Literal, cast

import httpx

from buttress._clock import Clock, system_clock
from buttress._events import Listener
from buttress._types import Duration
from buttress.breaker import CircuitBreaker
from buttress.bulkhead import BulkheadPermit, KeyedBulkhead
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
    timeout_extension,
)
from buttress.hedge import Hedge
from buttress.ratelimit import Limiter
from buttress.retry import RetryBudget, Wait

__all__ = [
    "DEFAULT_STATUSES",
    "IDEMPOTENT_METHODS",
    "RETRYABLE_ERRORS",
    "ResilientTransport",
    "per_host_breaker",
    "request_key",
]

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
"""The httpx exceptions retried by default: timeouts, connection failures and resets, and a
server that broke off the exchange (``RemoteProtocolError``)."""


def request_key(request: httpx.Request) -> str:
    """The default key of a request's breaker, bulkhead and rate limit: its origin.

    Returns:
        ``scheme://host:port`` (see :func:`buttress.contrib._http.host_key`).
    """
    url = request.url
    return host_key(url.scheme, url.host, url.port)


class _Call:
    """One request through the transport (never shared between requests)."""

    __slots__ = ("attempt", "extensions", "hedged", "key", "lock", "request", "retryable", "start")

    def __init__(
        self, request: httpx.Request, key: str, start: float, retryable: bool, hedged: bool
    ) -> None:
        self.request = request
        self.key = key
        self.start = start
        self.retryable = retryable
        self.hedged = hedged
        self.attempt = 0
        self.extensions = request.extensions
        # Hedged attempts of a sync call number themselves from several threads at once.
        self.lock = threading.Lock() if hedged else None

    @property
    def buffered(self) -> bool:
        """Whether responses are read inside the attempt: the request may be sent again."""
        return self.retryable or self.hedged

    def next_number(self) -> int:
        """Count one more attempt; return its number."""
        lock = self.lock
        if lock is None:
            self.attempt += 1
            return self.attempt
        with lock:
            self.attempt += 1
            return self.attempt

    def hedge_request(self) -> httpx.Request:
        """A copy of the request for a hedge (its own headers and extensions, the same body)."""
        original = self.request
        return httpx.Request(
            original.method,
            original.url,
            headers=original.headers.copy(),
            stream=original.stream,
            extensions=dict(self.extensions),
        )


class _ReleasingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that gives the bulkhead slot back when it is closed."""

    def __init__(self, stream: Any, permit: BulkheadPermit) -> None:
        self._stream = stream
        self._permit = permit

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._permit.release()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._permit.release()


def _synthetic(result: object, request: httpx.Request) -> httpx.Response:
    if not isinstance(result, SyntheticResponse):  # checked when the transport was built
        raise TypeError(f"chaos result must be a SyntheticResponse, got {result!r}")
    return httpx.Response(
        result.status,
        headers=result.headers,
        stream=httpx.ByteStream(result.content),
        extensions={"buttress_chaos": True},
        request=request,
    )


def _rebuilt(response: httpx.Response, content: bytes) -> httpx.Response:
    """The response with its body read: the stream swapped for the bytes (no copy of the rest)."""
    response.stream = httpx.ByteStream(content)
    return response


def _number(call: _Call, request: httpx.Request, core: HttpCore) -> float | None:
    """Start an attempt: count it, name it in the attempt header, bound its timeouts.

    Returns:
        The seconds it may take (``None``: no bound).
    """
    number = call.next_number()
    if core.attempt_header is not None:
        request.headers[core.attempt_header] = str(number)
    limit = core.attempt_limit(call.start)
    _bound(call, request, limit)
    return limit


def _bound(call: _Call, request: httpx.Request, limit: float | None) -> None:
    """Cut the request's connect, read, write and pool timeouts to ``limit`` seconds."""
    if limit is not None:
        request.extensions = {
            **call.extensions,
            "timeout": timeout_extension(call.extensions.get("timeout"), limit),
        }


async def _aclose(response: httpx.Response) -> None:
    await response.aclose()


_DRAIN_LIMIT = 64 * 1024  # a loser's unread body up to this size is read, to keep its connection


def _close(response: httpx.Response) -> None:
    """Close a losing hedge's response, reading a small unread body first.

    So its connection goes back to the pool instead of being closed (``buffer_body=False``).
    """
    try:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) <= _DRAIN_LIMIT:
            response.read()
    except httpx.HTTPError:
        pass  # the connection broke: closing it is all that is left
    finally:
        response.close()


class ResilientTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport that retries safely, breaks circuits per host and respects servers.

    Use one instance per client (``httpx.Client(transport=...)`` or
    ``httpx.AsyncClient(transport=...)``); its retry budget, breakers, bulkhead and rate limit
    are shared by every request of the client. Options of the connection pool (limits, TLS,
    HTTP/2, proxies) go to the wrapped transport: ``ResilientTransport(httpx.HTTPTransport(...))``.

    Args:
        transport: The transport that sends requests: an ``httpx.HTTPTransport`` (sync clients)
            or ``httpx.AsyncHTTPTransport`` (async clients). By default, one of each is made on
            first use.
        attempts: Tries per request, the first included (``1`` turns retries off).
        wait: Backoff between attempts when the server asks for nothing: a
            :class:`~buttress.retry.Wait` or seconds (default: 0.1 s doubling to 5 s, jittered).
        max_wait: The longest wait before a retry. A response whose ``Retry-After`` (or
            ``RateLimit-Reset``) asks for longer is not retried but returned at once.
        timeout: Seconds for the whole request, every attempt and wait included (``None``: no
            total). Each attempt's connect, read, write and pool timeouts are cut to what is
            left; an enclosing :func:`buttress.timeout.deadline` is honoured too.
        attempt_timeout: Seconds for one attempt's connect, read, write and pool phases (each
            also bounded by the client's own timeouts).
        methods: Methods retried as idempotent (default: GET, HEAD, OPTIONS, PUT, DELETE, TRACE).
        statuses: Response statuses retried (default: 429, 502, 503, 504).
        idempotency_header: A request carrying this header is retried whatever its method
            (default ``Idempotency-Key``; ``None`` turns it off).
        attempt_header: A header set to the attempt's number (``"x-attempt"``: 1, 2, ...), so
            that servers can tell retries; ``None`` (the default) sends none.
        respect_retry_after: Wait as long as ``Retry-After`` / ``RateLimit-Reset`` ask (at
            least the backoff, at most ``max_wait``).
        budget: The :class:`~buttress.RetryBudget` every retry draws from: ``"default"``
            allows 20% of requests plus 10 a second over 10 s; pass one to share it between
            clients; ``None`` for none.
        breaker: Makes the circuit breaker of a host key (see :func:`per_host_breaker`);
            ``"default"``: opens at 50% failures of the last 20 calls (10 at least), one trial
            every 2 s; ``None``: no breaker. Exceptions raised by the exchange and 5xx responses
            count as failures, 4xx (429 too) as successes.
        max_hosts: The most host keys whose breakers are kept (least recently used dropped).
        bulkhead: Concurrent requests allowed per host key (an int), or a
            :class:`~buttress.bulkhead.KeyedBulkhead`; ``None``: no limit. Waits for a slot are
            bounded by the request's time.
        rate_limit: A client-side rate limit per host key, to stay under a partner's quota: a
            :class:`~buttress.Limiter` or a limit string (``"50/second"``, GCRA); requests wait
            for admission.
        rate_limit_wait: The longest a request waits for the rate limit (``None``: as long as
            the request's time allows); past it, :class:`~buttress.RateLimited` is raised.
        chaos: A :class:`~buttress.chaos.ChaosPolicy` injected per attempt inside the breaker;
            its ``when`` receives the ``httpx.Request``; a ``result`` must be a
            :class:`~buttress.chaos.SyntheticResponse`.
        hedge: A :class:`~buttress.hedge.Hedge` for idempotent requests (as ``methods`` and
            ``idempotency_header`` say, with a replayable body; with retries on or off): when an
            attempt is slow another is sent, and the first good response (below 500, not to be
            retried) wins. With ``httpx.AsyncClient`` the other is cancelled; with
            ``httpx.Client`` each attempt runs on a thread of the hedge and a loser runs to its
            end, then its response is closed (its connection goes back to the pool). The
            transport's ``close()`` closes the hedge's idle threads.
        buffer_body: Read the body of a retryable (or hedged) request's response inside the
            attempt, so that a connection reset mid-body is retried and the timeouts cover the
            body. Turn it off for large downloads (``client.stream(...)`` then streams, and a
            reset mid-body reaches the caller). Responses with a retryable status are always
            read, so that their connection returns to the pool before the retry.
        key: The key of a request's breaker, bulkhead and rate limit (default
            :func:`request_key`: its origin).
        name: The name of the retry, breakers and other policies, in events and logs.
        listeners: Callables receiving the policies' events.
        clock: The time source (:class:`buttress.testing.FakeClock` in tests).

    Raises:
        TypeError, ValueError: At construction, for bad arguments, naming the argument.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
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
        key: Callable[[httpx.Request], str] | None = None,
        name: str = "httpx",
        listeners: Iterable[Listener] = (),
        clock: Clock = system_clock,
    ) -> None:
        self._sync: httpx.BaseTransport | None = None
        self._async: httpx.AsyncBaseTransport | None = None
        self._given = transport is not None
        if transport is None:
            pass
        elif isinstance(transport, ResilientTransport):
            raise TypeError("transport must not be another ResilientTransport")
        elif isinstance(transport, httpx.BaseTransport):
            self._sync = transport
        elif isinstance(transport, httpx.AsyncBaseTransport):
            self._async = transport
        else:
            raise TypeError(
                f"transport must be an httpx.BaseTransport or AsyncBaseTransport, got {transport!r}"
            )
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
            retry_if=None,
            name=name,
            listeners=listeners,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._key = key or request_key
        self._retrying: Callable[[_Call], httpx.Response] | None = None
        self._aretrying: Callable[[_Call], Any] | None = None
        if core.retry is not None:
            self._retrying = core.retry(self._attempt_maybe_hedged)
            self._aretrying = core.retry(self._aattempt_maybe_hedged)

    def __repr__(self) -> str:
        core = self._core
        return f"ResilientTransport(attempts={core.attempts}, name={core.name!r})"

    # -- inspection -----------------------------------------------------------------------------

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget shared by the client's requests."""
        return self._core.budget

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Return ``host key -> circuit breaker`` for the hosts seen (and still kept)."""
        return self._core.breakers()

    def breaker(self, key: str) -> CircuitBreaker | None:
        """Return the breaker of a host key (``"http://127.0.0.1:8000"``), made if needed."""
        return self._core.breaker_for(key)

    @property
    def inner(self) -> tuple[httpx.BaseTransport | None, httpx.AsyncBaseTransport | None]:
        """The wrapped (sync, async) transports made or given so far."""
        return self._sync, self._async

    # -- the wrapped transports -----------------------------------------------------------------

    def _make_sync(self) -> httpx.BaseTransport:
        with self._lock:
            if self._sync is None:
                if self._given:
                    raise RuntimeError(
                        "this ResilientTransport wraps an async transport: use it with "
                        "httpx.AsyncClient, or give it an httpx.HTTPTransport"
                    )
                self._sync = httpx.HTTPTransport()
            return self._sync

    def _make_async(self) -> httpx.AsyncBaseTransport:
        with self._lock:
            if self._async is None:
                if self._given:
                    raise RuntimeError(
                        "this ResilientTransport wraps a sync transport: use it with "
                        "httpx.Client, or give it an httpx.AsyncHTTPTransport"
                    )
                self._async = httpx.AsyncHTTPTransport()
            return self._async

    def _begin(self, request: httpx.Request) -> _Call:
        core = self._core
        idempotent = core.idempotent_request(
            request.method, request.headers, isinstance(request.stream, httpx.ByteStream)
        )
        return _Call(
            request,
            self._key(request),
            core.clock.now(),
            idempotent and core.retry is not None,
            idempotent and core.hedge is not None,
        )

    def _accept(self, response: httpx.Response) -> bool:
        """Whether a hedged attempt's response may win: below 500, and not one to retry."""
        return response.status_code < 500 and not self._core.retry_response(response)

    # -- sync -----------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the transport's policies (httpx calls this).

        Returns:
            The response: the first good one, or the last one when retries ran out.

        Raises:
            httpx.TransportError: The last connection error or timeout, once retries ran out.
            CircuitOpen: The host's breaker is open (nothing was sent).
            RetryBudgetExhausted, BulkheadFull, RateLimited, Timeout: As their names say.
        """
        call = self._begin(request)
        retrying = self._retrying
        if retrying is not None and call.retryable:
            return retrying(call)
        self._core.deposit()
        if call.hedged:
            return self._attempt_maybe_hedged(call)
        return self._attempt(call, request)

    def _attempt_maybe_hedged(self, call: _Call) -> httpx.Response:
        hedge = self._core.hedge
        if hedge is None or not call.hedged:
            return self._attempt(call, call.request)
        # Every attempt sends a copy: a loser of an earlier round may still be sending one
        # while a retry starts (the client attaches its own request to the response).
        return hedge.run_sync(
            lambda _: self._attempt(call, call.hedge_request()),
            accept=self._accept,
            discard=_close,
            target=f"{call.request.method} {call.key}",
        )

    def _attempt(self, call: _Call, request: httpx.Request) -> httpx.Response:
        core = self._core
        limit = _number(call, request, core)
        permit = None
        if core.limiter is not None:
            core.limiter.acquire(call.key, timeout=core.rate_wait(limit))
        if core.bulkhead is not None:
            permit = core.bulkhead.acquire(call.key, timeout=core.attempt_limit(call.start))
        if permit is not None or core.limiter is not None:
            _bound(call, request, core.attempt_limit(call.start))
        try:
            breaker = core.breaker_for(call.key)
            if breaker is None:
                response = self._exchange(call, request)
            else:
                try:
                    with breaker.guard():
                        response = self._exchange(call, request)
                        raise_for_failure(response, call.key)
                except ServerFailure as failure:
                    response = failure.response
        except BaseException:
            if permit is not None:
                permit.release()
            raise
        if permit is not None:
            if isinstance(response.stream, httpx.ByteStream):
                permit.release()
            else:
                response.stream = _ReleasingStream(response.stream, permit)
        return response

    def _exchange(self, call: _Call, request: httpx.Request) -> httpx.Response:
        core = self._core
        chaos = core.chaos
        if chaos is not None:
            injection = chaos.decide(request)
            if injection is not None:
                result = chaos.apply(injection, f"{request.method} {request.url}")
                if injection.replaces_call:
                    return _synthetic(result, request)
        transport = self._sync or self._make_sync()
        response = transport.handle_request(request)
        if call.buffered and (core.buffer_body or response.status_code in core.statuses):
            stream = cast("httpx.SyncByteStream", response.stream)
            try:
                content = b"".join(stream)
            finally:
                stream.close()
            return _rebuilt(response, content)
        return response

    # -- async ----------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the transport's policies (httpx calls this).

        Returns:
            The response: the first good one, or the last one when retries ran out.

        Raises:
            httpx.TransportError: The last connection error or timeout, once retries ran out.
            CircuitOpen: The host's breaker is open (nothing was sent).
            RetryBudgetExhausted, BulkheadFull, RateLimited, Timeout: As their names say.
        """
        call = self._begin(request)
        retrying = self._aretrying
        if retrying is not None and call.retryable:
            return cast("httpx.Response", await retrying(call))
        self._core.deposit()
        if call.hedged:
            return await self._aattempt_maybe_hedged(call)
        return await self._aattempt(call, request)

    async def _aattempt_maybe_hedged(self, call: _Call) -> httpx.Response:
        hedge = self._core.hedge
        if hedge is None or not call.hedged:
            return await self._aattempt(call, call.request)
        return await hedge.run(
            lambda number: self._aattempt(
                call, call.request if number == 1 else call.hedge_request()
            ),
            accept=self._accept,
            discard=_aclose,
            target=f"{call.request.method} {call.key}",
        )

    async def _aattempt(self, call: _Call, request: httpx.Request) -> httpx.Response:
        core = self._core
        limit = _number(call, request, core)
        permit = None
        if core.limiter is not None:
            await core.limiter.aacquire(call.key, timeout=core.rate_wait(limit))
        if core.bulkhead is not None:
            permit = await core.bulkhead.aacquire(call.key, timeout=core.attempt_limit(call.start))
        if permit is not None or core.limiter is not None:
            _bound(call, request, core.attempt_limit(call.start))
        try:
            breaker = core.breaker_for(call.key)
            if breaker is None:
                response = await self._aexchange(call, request)
            else:
                try:
                    async with breaker.guard():
                        response = await self._aexchange(call, request)
                        raise_for_failure(response, call.key)
                except ServerFailure as failure:
                    response = failure.response
        except BaseException:
            if permit is not None:
                await permit.arelease()
            raise
        if permit is not None:
            if isinstance(response.stream, httpx.ByteStream):
                await permit.arelease()
            else:
                response.stream = _ReleasingStream(response.stream, permit)
        return response

    async def _aexchange(self, call: _Call, request: httpx.Request) -> httpx.Response:
        core = self._core
        chaos = core.chaos
        if chaos is not None:
            injection = chaos.decide(request)
            if injection is not None:
                result = await chaos.aapply(injection, f"{request.method} {request.url}")
                if injection.replaces_call:
                    return _synthetic(result, request)
        transport = self._async or self._make_async()
        response = await transport.handle_async_request(request)
        if call.buffered and (core.buffer_body or response.status_code in core.statuses):
            stream = cast("httpx.AsyncByteStream", response.stream)
            try:
                content = b"".join([chunk async for chunk in stream])
            finally:
                await stream.aclose()
            return _rebuilt(response, content)
        return response

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the wrapped sync transport and the hedge's idle threads (``Client.close()``).

        A hedged attempt still running (a loser) cannot be stopped: it fails on the closed
        connection pool, or ends, and its thread with it.
        """
        try:
            if self._sync is not None:
                self._sync.close()
        finally:
            if self._core.hedge is not None:
                self._core.hedge.close()

    async def aclose(self) -> None:
        """Close the wrapped async transport (``httpx.AsyncClient.aclose`` calls this)."""
        try:
            if self._async is not None:
                await self._async.aclose()
        finally:
            if self._core.hedge is not None:
                self._core.hedge.close()
