"""The applications `benchmarks.web` serves: one tiny route, with and without a rate limiter.

Chosen by environment variables, read by the factories below in the server's worker process:

* ``BENCH_WEB_LIMITER``: ``none``, ``buttress`` or ``peer`` (Flask-Limiter for Flask, slowapi
  for FastAPI);
* ``BENCH_WEB_STORAGE``: ``memory`` or a ``redis://`` URL;
* ``BENCH_WEB_PREFIX``: the run's key prefix on Redis.

The limit (``1000000000 per hour``) never trips: what is measured is the limiter's cost on an
admitted request.
"""

from __future__ import annotations

import os
from typing import Any

LIMIT = "1000000000 per hour"


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
        from slowapi import Limiter as PeerLimiter  # noqa: PLC0415
        from slowapi.middleware import SlowAPIMiddleware  # noqa: PLC0415
        from slowapi.util import get_remote_address as peer_address  # noqa: PLC0415

        app.state.limiter = PeerLimiter(
            key_func=peer_address,
            default_limits=[LIMIT],
            storage_uri="memory://" if storage == "memory" else storage,
            key_prefix=prefix,
            headers_enabled=False,  # slowapi's middleware cannot inject them into a plain str
        )
        app.add_middleware(SlowAPIMiddleware)

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
    return app
