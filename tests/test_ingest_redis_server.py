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


def test_a_restarted_embedded_redis_listens_where_the_last_one_did(tmp_path):
    """A running bridge keeps the URL it was given: after `vidbrief redis stop` and a restart,
    the same URL must reach the new server, and a client connected before reconnects."""
    embedded = EmbeddedRedis(tmp_path)
    server, _ = embedded.ensure()
    try:
        client = server.client()
        client.set("k", "v")
        embedded.stop()
        restarted, started_now = embedded.ensure()
        assert started_now and restarted.pid != server.pid
        assert restarted.url == server.url
        assert client.get("k") == "v"  # the old client, reconnected (AOF kept the key)
    finally:
        embedded.stop()


def test_redis_cli_accepts_the_embedded_url(tmp_path):
    """The README's `redis-cli -u "$(vidbrief redis url)" XADD …` line, as written."""
    import shutil
    import subprocess

    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    embedded = EmbeddedRedis(tmp_path)
    server, _ = embedded.ensure()
    try:
        job = '{"url": "https://example.com/talk.mp4"}'
        added = subprocess.run(
            ["redis-cli", "-u", server.url, "XADD", "vidbrief:jobs", "*", "job", job],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert added.returncode == 0 and "WRONGPASS" not in added.stdout + added.stderr
        assert server.client().xlen("vidbrief:jobs") == 1
    finally:
        embedded.stop()


def test_a_running_bridge_finds_a_restarted_embedded_redis(tmp_path, make_settings):
    """The bridge loop (fake launcher) keeps beating into the embedded Redis across a restart."""
    import asyncio
    import json
    import time

    from fake_launcher import FakeLauncher

    from raybridge.actor import Bridge

    embedded = EmbeddedRedis(tmp_path)
    server, _ = embedded.ensure()
    settings = make_settings(redis_url=server.url, heartbeat_seconds=0.1, bridge_name="b1")
    names = settings.names

    def beat_after(t: float) -> bool:
        try:
            raw = server.client(socket_connect_timeout=0.5).hget(names.bridges, "b1")
        except Exception:
            return False
        return raw is not None and json.loads(raw)["updated_at"] > t

    async def main() -> None:
        bridge = Bridge(settings, server.url, launcher=FakeLauncher())
        runner = asyncio.create_task(bridge.run())
        await bridge.ready()
        try:
            embedded.stop()
            await asyncio.sleep(0.5)  # the bridge's loops meet a closed port meanwhile
            await asyncio.to_thread(embedded.ensure)
            restarted_at = time.time()
            deadline = time.monotonic() + 15
            while not beat_after(restarted_at):
                assert time.monotonic() < deadline, "no heartbeat after the restart"
                await asyncio.sleep(0.1)
        finally:
            await bridge.drain(grace_s=0)
            await runner

    try:
        asyncio.run(main())
    finally:
        embedded.stop()
