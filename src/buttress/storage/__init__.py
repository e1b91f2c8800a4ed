"""Where limiter state lives: in this process (``memory://``) or in Redis (``redis://``).

:func:`storage_from_url` builds a store from a URL::

    storage_from_url("memory://")
    storage_from_url("redis://127.0.0.1:6379/0")
    storage_from_url("rediss://user:secret@redis.example:6380/0")     # TLS
    storage_from_url("unix:///run/redis/redis.sock?db=0")             # unix socket
    storage_from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")   # Redis Cluster

The Redis store needs the ``redis`` extra (``pip install 'buttress[redis]'``).
"""

from buttress.storage._base import Storage
from buttress.storage._breaker import BreakerReply, BreakerStorage
from buttress.storage._url import storage_from_url
from buttress.storage.memory import MemoryStorage

__all__ = ["BreakerReply", "BreakerStorage", "MemoryStorage", "Storage", "storage_from_url"]
