"""Build a store from a URL: :func:`storage_from_url`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from buttress._errors import ConfigurationError
from buttress.storage._base import Storage
from buttress.storage.memory import MemoryStorage

__all__ = ["storage_from_url"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+unix")


def storage_from_url(url: str, **options: Any) -> Storage:
    """Build a store from a URL.

    Args:
        url: ``memory://``, ``redis://``, ``rediss://`` or ``unix://`` (see the module docstring).
        **options: Passed to the store's constructor (e.g. ``prefix=``, ``timeout=`` for Redis,
            ``clock=`` for memory).

    Raises:
        ConfigurationError: For an unknown scheme or a malformed URL.
        ImportError: For a Redis URL when the ``redis`` package is not installed.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryStorage(**options)
    if scheme in _REDIS_SCHEMES:
        from buttress.storage.redis import RedisStorage  # noqa: PLC0415 - an optional extra

        return RedisStorage.from_url(url, **options)
    raise ConfigurationError(
        f"unsupported storage URL {url!r}: the scheme must be one of memory, "
        f"{', '.join(_REDIS_SCHEMES)}"
    )
