"""Apps served by real servers in ``test_servers.py`` (imported by gunicorn/uvicorn workers).

Configured by environment variables: ``TEST_WEB_REDIS`` (the Redis URL), ``TEST_WEB_PREFIX`` (the
run's key prefix), ``TEST_WEB_LIMIT`` (the route's limit) and ``TEST_WEB_WS_LIMIT`` (the limit of
WebSocket handshakes to ``/ws``, ASGI only).
"""

from __future__ import annotations

import os
import time
from typing import Any


def flask_app() -> Any:
    """The Flask app: ``/limited`` under ``TEST_WEB_LIMIT``, shared on Redis by every worker."""
    from flask import Flask  # noqa: PLC0415 - imported in the server's process

    from buttress.contrib.flask import Limiter, get_remote_address  # noqa: PLC0415

    app = Flask(__name__)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=os.environ["TEST_WEB_REDIS"],
        storage_options={"prefix": os.environ["TEST_WEB_PREFIX"]},
    )

    @app.route("/limited")
    @limiter.limit(os.environ["TEST_WEB_LIMIT"])
    def limited() -> str:
        time.sleep(0.05)  # long enough for concurrent requests to spread over the workers
        return f"pid {os.getpid()}"

    return app


def asgi_app() -> Any:
    """A bare ASGI app behind the middleware: ``/limited`` under ``TEST_WEB_LIMIT``, on Redis."""
    from buttress.contrib.asgi import RateLimitMiddleware  # noqa: PLC0415
    from buttress.storage.redis import RedisStorage  # noqa: PLC0415

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":  # an echo, once the handshake is admitted
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": f"echo {message.get('text')}"})
            await send({"type": "websocket.close", "code": 1000})
            return
        # Blocking on purpose: a worker busy with one request cannot accept the next, so
        # concurrent requests spread over the workers (the limit must hold across them).
        time.sleep(0.05)  # noqa: ASYNC251 - see above
        body = f"pid {os.getpid()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    store = RedisStorage.from_url(
        os.environ["TEST_WEB_REDIS"], prefix=os.environ["TEST_WEB_PREFIX"]
    )
    return RateLimitMiddleware(
        app,
        routes={
            "/limited": os.environ["TEST_WEB_LIMIT"],
            "/ws": os.environ.get("TEST_WEB_WS_LIMIT", "3/hour"),
        },
        storage=store,
    )
