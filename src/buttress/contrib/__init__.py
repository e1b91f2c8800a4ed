"""Integrations with web frameworks, on the buttress limiter.

- :mod:`buttress.contrib.flask`: Flask-Limiter's API (``pip install 'buttress[flask]'``);
- :mod:`buttress.contrib.asgi`: pure ASGI middleware for Starlette, FastAPI or any ASGI app (no
  dependency);
- :mod:`buttress.contrib.fastapi`: a per-endpoint FastAPI dependency.

They share :mod:`buttress.contrib._web`: client keys behind proxies, key escaping, the headers
and the 429 bodies, and one decision per request for all its limits.
"""
