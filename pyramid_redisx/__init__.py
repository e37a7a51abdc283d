"""pyramid_redisx: Redis as a first-class part of the Pyramid request lifecycle.

config.include("pyramid_redisx")

def view(request):
    request.redis.incr("hits")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import redis_py
from .errors import (
    CommandMayHaveBeenApplied,
    RedisCircuitOpen,
    RedisPyUnsupported,
    RedisSettingsError,
    RedisUnavailable,
)

try:
    from .config import add_redis_client, includeme
    from .failsoft import fail_soft
    from .http_cache import http_cache_backend, http_cache_session
    from .queue import MessageQueue, QueueEmpty, QueueFull
    from .request import get_redis
    from .tm import RedisTransactionError
except ImportError:  # a name moved in redis-py: say which, and the fix, not just where
    redis_py.check()  # raises RedisPyUnsupported when the installed redis-py differs
    raise

if TYPE_CHECKING:  # real types for type checkers; imported on first use at run time
    from .aio import close_async_redis, get_async_redis

# The asyncio clients, imported on first use: redis.asyncio (and asyncio) cost a few
# hundred milliseconds of import time that an app without asyncio need not pay. The
# other integrations import their libraries only when used (requests-cache, dogpile).
_LAZY = {
    "get_async_redis": "aio",
    "close_async_redis": "aio",
}

__all__ = [
    "CommandMayHaveBeenApplied",
    "MessageQueue",
    "QueueEmpty",
    "QueueFull",
    "RedisCircuitOpen",
    "RedisPyUnsupported",
    "RedisSettingsError",
    "RedisTransactionError",
    "RedisUnavailable",
    "add_redis_client",
    "close_async_redis",
    "fail_soft",
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
    imported = importlib.import_module(f".{module}", __name__)  # optional: see _LAZY
    value = getattr(imported, name)
    globals()[name] = value
    return value
