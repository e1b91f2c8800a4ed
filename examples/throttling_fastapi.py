"""The chapter's throttling example, as a FastAPI application rate limited with buttress.

The book's Flask application uses Flask-Limiter with the client's address as the key, default
limits of "100 per day" and "10 per hour", and "2/minute" on ``/more_limited``. Here the same
limits are set on :class:`buttress.contrib.asgi.RateLimitMiddleware`:

- ``/limited`` falls under the default limits: the 11th request in an hour gets a 429;
- ``/more_limited`` has a route limit of its own (instead of the defaults, as with
  ``@limiter.limit`` in Flask-Limiter): the 3rd request in a minute gets a 429.

A 429 says which limit was hit and when to come back (``Retry-After``), as JSON for clients that
accept JSON and as text otherwise; every response carries the ``RateLimit-*`` headers. FastAPI's
own pages (``/docs``, ``/openapi.json``) are exempt.

Run it with ``uvicorn examples.throttling_fastapi:app`` or ``python
examples/throttling_fastapi.py`` (uvicorn on http://127.0.0.1:8000), then open
http://127.0.0.1:8000/limited and reload. For limits shared by several server processes, pass
``storage="redis://127.0.0.1:6379/0"``.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from buttress.contrib.asgi import RateLimitMiddleware

app = FastAPI(title="Throttling example")
app.add_middleware(
    RateLimitMiddleware,
    default_limits=["100 per day", "10 per hour"],
    routes={"/more_limited": "2/minute"},
    exempt=["/docs", "/docs/*", "/redoc", "/openapi.json"],
    storage="memory://",
    strategy="fixed-window",
)


@app.get("/limited", response_class=PlainTextResponse)
async def limited_api() -> str:
    """Limited by the default limits."""
    return "Welcome to our API!"


@app.get("/more_limited", response_class=PlainTextResponse)
async def more_limited_api() -> str:
    """Limited to two requests a minute."""
    return "Welcome to our expensive, thus very limited, API!"


def main(argv: list[str] | None = None) -> None:
    """Serve the application with uvicorn on the loopback interface."""
    import uvicorn  # noqa: PLC0415 - only needed to serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    arguments = parser.parse_args(argv)
    uvicorn.run(app, host="127.0.0.1", port=arguments.port)


if __name__ == "__main__":
    main()
