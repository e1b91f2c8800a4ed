"""Build a store from a URL: :func:`storage_from_url`."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlsplit

from buttress._errors import ConfigurationError
from buttress.storage._base import Storage
from buttress.storage.memory import MemoryStorage

__all__ = ["resolve_storage", "storage_from_url"]

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+unix", "redis+cluster", "rediss+cluster")

S = TypeVar("S")


def storage_from_url(url: str, **options: Any) -> Storage:
    """Build a store from a URL.

    Args:
        url: ``memory://``, ``redis://``, ``rediss://``, ``unix://`` or, for a Redis Cluster,
            ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS); see
            the module docstring of :mod:`buttress.storage`.
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


def resolve_storage(storage: object, kind: type[S], what: str) -> S:
    """The store a policy was given: a store object, or a URL for :func:`storage_from_url`.

    Args:
        storage: What the user passed as ``storage``.
        kind: The protocol the store must implement (``Storage``, ``BreakerStorage``).
        what: What a good value is, for the error message (``"a store or a storage URL"``).

    Raises:
        TypeError: For anything else (a store class instead of an instance included), naming
            ``storage``.
        ConfigurationError: For a URL with an unknown scheme.
    """
    if isinstance(storage, str):
        storage = storage_from_url(storage)
    if isinstance(storage, type) or not isinstance(storage, kind):
        raise TypeError(f"storage must be {what}, got {type(storage).__name__}")
    return storage
