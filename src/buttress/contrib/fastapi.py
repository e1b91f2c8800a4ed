"""Per-endpoint rate limits for FastAPI, as a dependency.

::

    limiter = RateLimiter(storage="redis://127.0.0.1:6379/0")
    app = FastAPI()
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)

    @app.post("/login", dependencies=[Depends(RateLimit("5/minute", limiter=limiter))])
    async def login() -> dict[str, str]: ...

The dependency decides in the limiter's engine (the same store, keys and headers as the
middleware's). An admitted request's response gets the ``RateLimit-*`` headers (through FastAPI's
dependency response: for an endpoint that returns data, not a ``Response`` object). A rejected
one raises :class:`RateLimitExceeded`, a Starlette ``HTTPException`` (429, with the headers):
with :func:`rate_limit_exceeded_handler` installed its body is the middleware's (JSON for JSON
clients, text otherwise); without it, FastAPI's ``{"detail": "Too Many Requests: ..."}``.

This module needs Starlette (FastAPI); :mod:`buttress.contrib.asgi` does not.
"""

# No ``from __future__ import annotations``: FastAPI reads the annotations of
# ``RateLimit.__call__`` at run time, and a callable object has no globals to resolve names in.

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from buttress._types import check_int
from buttress.contrib._web import DEFAULT_ERROR, describe_limit, escape_key, rejection_body
from buttress.contrib.asgi import AsgiLimit, KeyFunc, RateLimiter, _Limits
from buttress.ratelimit import Decision, Rate

__all__ = ["RateLimit", "RateLimitExceeded", "rate_limit_exceeded_handler"]

_SCOPES = 1024  # endpoints remembered (a dependency is declared on a few)


class RateLimitExceeded(HTTPException):
    """A request rejected by a :class:`RateLimit` dependency (HTTP 429).

    ``detail`` is the message (``"Too Many Requests: 5 per 1 minute"``), ``headers`` those of the
    rejection (``Retry-After`` and, unless turned off, ``RateLimit-*``).

    Args:
        decision: The rejecting decision.
        rates: The rates decided.
        headers: The response headers.
        accept: The request's ``Accept`` header (JSON or text body).

    Attributes:
        decision: The rejecting decision (``retry_after`` says when to come back).
        rates: The rates decided.
        body: The 429 body the middleware would send (see ``rejection_body``).
        media_type: Its content type.
    """

    def __init__(
        self,
        decision: Decision,
        rates: tuple[Rate, ...],
        headers: Mapping[str, str],
        accept: str | None,
    ) -> None:
        super().__init__(429, f"{DEFAULT_ERROR}: {describe_limit(decision.rate)}", dict(headers))
        self.decision = decision
        self.rates = rates
        self.body, self.media_type = rejection_body(decision, accept)


def rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """Answer a :class:`RateLimitExceeded` as the middleware answers a rejection.

    Install it with ``app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)``.

    Args:
        request: The rejected request.
        exc: The :class:`RateLimitExceeded` raised by the dependency.

    Returns:
        The 429, with the same body and headers as the middleware's.

    Raises:
        TypeError: For another exception (the handler is installed for the wrong type).
    """
    if not isinstance(exc, RateLimitExceeded):
        raise TypeError(f"rate_limit_exceeded_handler got {type(exc).__name__}") from exc
    return Response(exc.body, status_code=429, headers=exc.headers, media_type=exc.media_type)


class RateLimit:
    """A FastAPI dependency limiting the endpoints that declare it.

    Use it as ``Depends(RateLimit(...))`` in an endpoint's parameters or its
    ``dependencies=[...]``, on HTTP endpoints (WebSocket handshakes are limited by the
    middleware). Its limits are decided in one call, apart from the middleware's (which, if
    installed, has already decided its own for the request).

    Args:
        limits: The limits: ``"5/minute"``, ``"100 per day; 10 per hour"``, rates, or a callable
            taking the ASGI scope and returning those (``None``: no limit) per request.
        limiter: The :class:`~buttress.contrib.asgi.RateLimiter` deciding (its store, strategy,
            key function, headers and fault policy).
        scope: The name these limits are counted under. Default: each endpoint its own count
            (named by its module and qualified name); give several endpoints one name to share a
            count.
        cost: Units each request takes: an int, or a callable taking the ASGI scope; 0 is not
            counted.
        key: A key function for these limits only (default: the limiter's).

    Raises:
        ConfigurationError: For a bad limit string.
        TypeError, ValueError: For any other bad argument.
    """

    def __init__(
        self,
        limits: AsgiLimit,
        *,
        limiter: RateLimiter,
        scope: str | None = None,
        cost: int | Callable[[MutableMapping[str, Any]], int] = 1,
        key: KeyFunc | None = None,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a RateLimiter, got {type(limiter).__name__}")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise TypeError(f"scope must be a non-empty str or None, got {scope!r}")
        if not callable(cost):
            check_int(cost, "cost", minimum=0)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable taking the ASGI scope, got {key!r}")
        self.limiter = limiter
        self._value = limits
        self._scope = scope
        self._cost = cost
        self._key = key
        # Checked now (a bad limit fails at declaration), and kept when the scope is given.
        self._fixed = _Limits(limits, f"dep|{scope or '?'}", "RateLimit limits")
        self._by_scope: dict[str, _Limits] = {}

    def _limits(self, scope: MutableMapping[str, Any]) -> _Limits:
        if self._scope is not None:
            return self._fixed
        endpoint = scope.get("endpoint")
        name = (
            f"{endpoint.__module__}.{endpoint.__qualname__}"
            if endpoint is not None and hasattr(endpoint, "__qualname__")
            else str(scope.get("path", ""))
        )
        found = self._by_scope.get(name)
        if found is None:
            if len(self._by_scope) >= _SCOPES:
                self._by_scope.clear()
            found = self._by_scope[name] = _Limits(self._value, f"dep|{name}", "RateLimit limits")
        return found

    async def __call__(self, request: Request, response: Response) -> None:
        """Decide the request; set the headers on admission, raise on rejection.

        Args:
            request: The request (FastAPI passes it).
            response: FastAPI's dependency response, whose headers it merges into the
                response it makes.

        Raises:
            RateLimitExceeded: When a limit rejects the request.
        """
        scope = request.scope
        rates = self._limits(scope).resolve(scope)
        if not rates:
            return
        key = (self._key or self.limiter.client_key)(scope)
        if key is None:
            return
        if not isinstance(key, str) or not key:
            raise TypeError(f"the key function must return a non-empty str or None, got {key!r}")
        cost = self._cost
        if callable(cost):
            cost = check_int(cost(scope), "cost", minimum=0)
        if cost == 0:
            return
        decision = await self.limiter.engine.adecide(escape_key(key), rates, cost)
        headers = self.limiter.response_headers(decision, rates)
        if not decision.allowed:
            raise RateLimitExceeded(decision, rates, dict(headers), request.headers.get("accept"))
        for name, value in headers:
            response.headers[name] = value
