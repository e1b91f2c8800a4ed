"""Integrations: web frameworks, HTTP clients and metrics.

Throttling inbound requests, on the buttress limiter:

- :mod:`buttress.contrib.flask`: Flask-Limiter's API (``pip install 'buttress[flask]'``);
- :mod:`buttress.contrib.asgi`: pure ASGI middleware for Starlette, FastAPI or any ASGI app (no
  dependency);
- :mod:`buttress.contrib.fastapi`: a per-endpoint FastAPI dependency.

They share :mod:`buttress.contrib._web`: client keys behind proxies, key escaping, the headers
and the 429 bodies, and one decision per request for all its limits.

Resilient outbound HTTP (retries, Retry-After, retry budget, a breaker per host, hedging):

- :mod:`buttress.contrib.httpx`: ``ResilientTransport`` for ``httpx.Client`` and
  ``httpx.AsyncClient`` (``buttress[httpx]``);
- :mod:`buttress.contrib.requests`: ``ResilientAdapter`` for ``requests.Session``
  (``buttress[requests]``).

Metrics and tracing, from buttress's events:

- :mod:`buttress.contrib.prometheus`: ``PrometheusListener`` (``buttress[prometheus]``);
- :mod:`buttress.contrib.otel`: ``OpenTelemetryListener``, metrics and span events
  (``buttress[otel]``).
"""
