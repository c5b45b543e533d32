"""The embedded Redis: starts, is reused, keeps its data across a restart (AOF), stops."""

from __future__ import annotations

import pytest

from ingest.connect import redis_url
from ingest.redis_server import EmbeddedRedis
from ingest.settings import Settings

pytestmark = pytest.mark.integration


def test_embedded_redis_lifecycle(tmp_path):
    embedded = EmbeddedRedis(tmp_path)
    server, started = embedded.ensure()
    try:
        assert started and server.alive()
        server.client().xadd("vidbrief:jobs", {"job": '{"url": "http://e/v"}'})

        again, started_again = EmbeddedRedis(tmp_path).ensure()
        assert not started_again and again.pid == server.pid

        assert embedded.stop() and not server.alive()
        assert embedded.find() is None

        restarted, started_now = embedded.ensure()
        assert started_now and restarted.pid != server.pid
        assert restarted.client().xlen("vidbrief:jobs") == 1  # survived through the AOF
    finally:
        embedded.stop()
    assert embedded.find() is None


def test_embedded_redis_requires_its_password(tmp_path):
    import redis

    embedded = EmbeddedRedis(tmp_path)
    server, _ = embedded.ensure()
    try:
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        assert (tmp_path / "redis" / "password").stat().st_mode & 0o077 == 0
    finally:
        embedded.stop()


def test_settings_choose_the_configured_url_over_the_embedded_one(tmp_path):
    settings = Settings(
        redis_url="rediss://:s3cret@redis.example.com:6380/0", state_dir=tmp_path, _env_file=None
    )
    assert redis_url(settings) == "rediss://:s3cret@redis.example.com:6380/0"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.masked())
    assert not (tmp_path / "redis").exists()  # nothing was started
