"""Integrations with web frameworks: :mod:`buttress.contrib.flask` and :mod:`buttress.contrib.asgi`.

Each needs its extra (``pip install 'buttress[flask]'``; the ASGI middleware needs nothing).
"""
