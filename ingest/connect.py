"""Getting a Redis client for the configured URL, or for the embedded server."""

from __future__ import annotations

import redis
from pydantic import SecretStr

from ingest.redis_server import EmbeddedRedis
from ingest.settings import Settings


def as_secret(url: str | SecretStr) -> SecretStr:
    """A Redis URL (it may hold a password) as a secret: its repr, in a log line, a Ray task's
    arguments or a traceback's locals, shows ``**********``, never the URL."""
    return url if isinstance(url, SecretStr) else SecretStr(url)


def redis_url(settings: Settings, *, start: bool = True) -> str:
    """The Redis URL to use: the configured one, else the embedded server's (started if asked)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    embedded = EmbeddedRedis(settings.state_dir)
    server = embedded.ensure()[0] if start else embedded.find()
    if server is None:
        raise redis.exceptions.ConnectionError(
            "the embedded Redis is not running (start it with `vidbrief redis start`, "
            "or set VIDBRIEF_REDIS_URL)"
        )
    return server.url


def connect(settings: Settings, *, start: bool = True) -> redis.Redis:
    """A client with decoded responses and health checks, for sync code."""
    return redis.Redis.from_url(
        redis_url(settings, start=start),
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
    )
