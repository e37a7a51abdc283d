"""pyramid_redisx: Redis as a first-class part of the Pyramid request lifecycle.

config.include("pyramid_redisx")

def view(request):
    request.redis.incr("hits")
"""

from .config import add_redis_client, includeme
from .errors import CommandMayHaveBeenApplied, RedisSettingsError, RedisUnavailable
from .request import get_redis

__all__ = [
    "CommandMayHaveBeenApplied",
    "RedisSettingsError",
    "RedisUnavailable",
    "add_redis_client",
    "get_redis",
    "includeme",
]
__version__ = "0.1.0"
