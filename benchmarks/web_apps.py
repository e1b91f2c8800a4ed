"""The applications `benchmarks.web` serves: one tiny route, with and without a rate limiter.

Chosen by environment variables, read by the factories below in the server's worker process:

* ``BENCH_WEB_LIMITER``: ``none``, ``buttress``, ``peer`` (Flask-Limiter for Flask, slowapi
  for FastAPI) or ``ping``: no limiter, one Redis ``PING`` per request on buttress's own
  connection (the transport a decision uses, without its script): the floor for any limiter
  that asks Redis once per request; or ``headers``: no limiter, the four ``RateLimit-*``
  headers (constant values) added to every response, the floor for any limiter that sends them;
* ``BENCH_WEB_STORAGE``: ``memory`` or a ``redis://`` URL;
* ``BENCH_WEB_PREFIX``: the run's key prefix on Redis.

The limit (``1000000000 per hour``) never trips: what is measured is the limiter's cost on an
admitted request.
"""

from __future__ import annotations

import os
from typing import Any

LIMIT = "1000000000 per hour"
PING = b"*1\r\n$4\r\nPING\r\n"
HEADERS = [  # what an admitted request's headers look like under LIMIT
    ("RateLimit-Limit", "1000000000"),
    ("RateLimit-Remaining", "999987654"),
    ("RateLimit-Reset", "2481"),
    ("RateLimit-Policy", "1000000000;w=3600"),
]


def _settings() -> tuple[str, str, str]:
    return (
        os.environ.get("BENCH_WEB_LIMITER", "none"),
        os.environ.get("BENCH_WEB_STORAGE", "memory"),
        os.environ.get("BENCH_WEB_PREFIX", "bench-web"),
    )


def flask_app() -> Any:
    """The Flask application for gunicorn (``benchmarks.web_apps:flask_app()``)."""
    from flask import Flask  # noqa: PLC0415 - imported in the server's process only

    limiter_kind, storage, prefix = _settings()
    app = Flask(__name__)

    @app.route("/")
    def index() -> str:
        return "ok"

    if limiter_kind == "buttress":
        from buttress.contrib.flask import Limiter, get_remote_address  # noqa: PLC0415
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415

        store: Any = (
            "memory://" if storage == "memory" else RedisStorage.from_url(storage, prefix=prefix)
        )
        if storage == "memory":
            Limiter(get_remote_address, app=app, default_limits=[LIMIT], storage_uri="memory://")
        else:
            Limiter(get_remote_address, app=app, default_limits=[LIMIT], storage=store)
    elif limiter_kind == "ping":
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415

        connections = RedisStorage.from_url(storage, prefix=prefix)._connections  # noqa: SLF001

        @app.before_request
        def ping() -> None:
            assert connections is not None  # noqa: S101 - a plain redis:// URL
            link = connections.take()
            link.send(PING)
            link.read()
            connections.give(link)

    elif limiter_kind == "headers":
        app.wsgi_app = _WithHeaders(app.wsgi_app)  # type: ignore[method-assign]
    elif limiter_kind == "peer":
        from flask_limiter import Limiter as PeerLimiter  # noqa: PLC0415
        from flask_limiter.util import get_remote_address as peer_address  # noqa: PLC0415

        PeerLimiter(
            peer_address,
            app=app,
            default_limits=[LIMIT],
            storage_uri="memory://" if storage == "memory" else storage,
            key_prefix=prefix,
            headers_enabled=True,
        )
    return app


def fastapi_app() -> Any:
    """The FastAPI application for uvicorn (``--factory benchmarks.web_apps:fastapi_app``)."""
    from fastapi import FastAPI  # noqa: PLC0415 - imported in the server's process only
    from fastapi.responses import PlainTextResponse  # noqa: PLC0415

    limiter_kind, storage, prefix = _settings()
    app = FastAPI()

    if limiter_kind == "peer":
        # slowapi as its documentation shows it: the limit on the endpoint, which then takes the
        # request. (Its SlowAPIMiddleware, for default limits, cost twice as much here.)
        from fastapi import Request  # noqa: PLC0415
        from slowapi import Limiter as PeerLimiter  # noqa: PLC0415
        from slowapi import _rate_limit_exceeded_handler  # noqa: PLC0415
        from slowapi.errors import RateLimitExceeded  # noqa: PLC0415
        from slowapi.util import get_remote_address as peer_address  # noqa: PLC0415

        peer = PeerLimiter(
            key_func=peer_address,
            storage_uri="memory://" if storage == "memory" else storage,
            key_prefix=prefix,
            headers_enabled=False,  # slowapi can add them only to an endpoint's Response object
        )
        app.state.limiter = peer
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

        async def limited(request: Any) -> str:  # slowapi reads the request
            return "ok"

        # The annotation as a class, not this module's postponed string: FastAPI must see it.
        limited.__annotations__["request"] = Request
        app.get("/", response_class=PlainTextResponse)(peer.limit(LIMIT)(limited))
        return app

    @app.get("/", response_class=PlainTextResponse)
    async def index() -> str:
        return "ok"

    if limiter_kind == "buttress":
        from buttress.contrib.asgi import RateLimitMiddleware  # noqa: PLC0415
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415

        store: Any = (
            "memory://" if storage == "memory" else RedisStorage.from_url(storage, prefix=prefix)
        )
        app.add_middleware(RateLimitMiddleware, default_limits=[LIMIT], storage=store)
    elif limiter_kind == "ping":
        return _PingMiddleware(app, storage, prefix)
    elif limiter_kind == "headers":
        return _HeadersMiddleware(app)
    return app


class _WithHeaders:
    """WSGI: the four headers added to every response, nothing else."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], *info: Any) -> Any:
            return start_response(status, [*headers, *HEADERS], *info)

        return self.app(environ, start)


class _HeadersMiddleware:
    """ASGI: the four headers added to every HTTP response, nothing else."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in HEADERS]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self.headers

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _PingMiddleware:
    """One ``PING`` per HTTP request on buttress's asyncio connection, then the app."""

    def __init__(self, app: Any, url: str, prefix: str) -> None:
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415

        self.app = app
        self.store = RedisStorage.from_url(url, prefix=prefix)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            link = await self.store._opened(2.0)  # noqa: SLF001 - the decisions' own link
            await link.send(PING, 2.0)
        await self.app(scope, receive, send)
