"""Shared fixtures: a real redis-server per session, clean keys per test, settings factories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ingest.client import Client
from ingest.names import RedisNames
from ingest.redis_server import RedisServer, start_redis_server
from ingest.settings import Settings

# Keep a local Ray on loopback (FACTS.md) and quiet.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port for the whole session, stopped by PID."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"), appendonly=False, daemonize=False)
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on a flushed database: each test starts empty."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def names() -> RedisNames:
    return RedisNames()


@pytest.fixture
def client(redis_client: redis.Redis, names: RedisNames) -> Client:
    return Client(redis_client, names)


@pytest.fixture
def make_settings(tmp_path: Path, redis_server: RedisServer):
    """Factory: settings pointing at the test Redis and private folders, with overrides."""

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "redis_url": redis_server.url,
            "state_dir": tmp_path / "state",
            "work_dir": tmp_path / "work",
            "reports_url": str(tmp_path / "reports"),
            "allow_private_urls": True,
            # Test media are small: keep node-health thresholds from refusing a full disk.
            "max_download_mb": 64,
            "min_free_disk_mb": 64,
            "min_free_memory_mb": 64,
            "_env_file": None,
        }
        base.update(overrides)
        return Settings(**base)  # type: ignore[arg-type]

    return make
