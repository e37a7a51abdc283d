"""pyramid_redisx: Redis as a first-class part of the Pyramid request lifecycle.

config.include("pyramid_redisx")

def view(request):
    request.redis.incr("hits")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import add_redis_client, includeme
from .errors import CommandMayHaveBeenApplied, RedisSettingsError, RedisUnavailable
from .request import get_redis

if TYPE_CHECKING:  # real types for type checkers; imported lazily at run time
    from .aio import close_async_redis, get_async_redis
    from .http_cache import http_cache_backend, http_cache_session
    from .queue import MessageQueue, QueueEmpty, QueueFull
    from .tm import RedisTransactionError

# Integrations, imported on first use: the core install (no extras) imports without
# them.
_LAZY = {
    "MessageQueue": "queue",
    "QueueEmpty": "queue",
    "QueueFull": "queue",
    "http_cache_backend": "http_cache",
    "http_cache_session": "http_cache",
    "get_async_redis": "aio",
    "close_async_redis": "aio",
    "RedisTransactionError": "tm",
}

__all__ = [
    "CommandMayHaveBeenApplied",
    "MessageQueue",
    "QueueEmpty",
    "QueueFull",
    "RedisSettingsError",
    "RedisTransactionError",
    "RedisUnavailable",
    "add_redis_client",
    "close_async_redis",
    "get_async_redis",
    "get_redis",
    "http_cache_backend",
    "http_cache_session",
    "includeme",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyramid_redisx' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
