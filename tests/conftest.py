"""Shared fixtures: a real redis-server per session, clean keys per test, settings factories, a
bridge factory, the webhook receiver and webhook worker processes. Plain helpers (functions,
constants) live in helpers.py; test modules import helpers, never each other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from helpers import (
    FAST_STEPS_S,
    WEBHOOK_BACKOFF_S,
    WEBHOOK_SECRET,
    WEBHOOK_TIMEOUT_S,
    stop_worker,
)
from receiver import Receiver
from s3_server import S3Server, dummy_aws_env

from ingest.client import Client
from ingest.names import RedisNames
from ingest.redis_server import RedisServer, start_redis_server
from ingest.settings import Settings

if TYPE_CHECKING:
    from raybridge.run import BridgeHandle

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _keep_test_rays_private() -> None:
    """The Rays the tests start in this process (``ray.init(address="local")``, cluster_utils)
    stay on 127.0.0.1 and take no other node: what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 does,
    switched in Ray's parsed copy of it (read once, on import) rather than exported. In the
    environment it would reach every program the tests start, and ``ray start --address``
    aborts under it (tests/test_ops_ray_cluster.py starts real ``ray start`` nodes).
    raybridge.run switches it the same way, around its private Ray only."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


_keep_test_rays_private()

REPO = Path(__file__).resolve().parents[1]


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
def make_settings(tmp_path: Path, redis_server: RedisServer) -> Callable[..., Settings]:
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


@pytest.fixture
def bridge(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Iterator[Callable[..., BridgeHandle]]:
    """Factory: a bridge actor with synthetic steps in the Ray the test module connected
    (settings as keyword overrides; ``redis_url`` for another Redis); drained at the end."""
    from raybridge.run import start_bridge

    started: list[BridgeHandle] = []

    def start(*, redis_url: str | None = None, **overrides: object) -> BridgeHandle:
        overrides.setdefault("step_mode", "synthetic")
        overrides.setdefault("synthetic_seconds", FAST_STEPS_S)
        overrides.setdefault("retry_backoff_seconds", 0.05)
        url = redis_url or redis_server.url
        started.append(start_bridge(make_settings(redis_url=url, **overrides), url))
        return started[-1]

    yield start
    for handle in started:
        with suppress(Exception):
            handle.stop(grace_s=0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback (tests/receiver.py)."""
    rx = Receiver().start()
    yield rx
    rx.close()


@pytest.fixture
def start_worker(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Factory: ``python -m webhooks`` in its own session (stopped by process group)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
        env.update(
            PYTHONPATH=str(REPO),
            VIDBRIEF_REDIS_URL=redis_server.url,
            VIDBRIEF_WEBHOOK_SECRET=WEBHOOK_SECRET,
            VIDBRIEF_WEBHOOK_BACKOFF_SECONDS=",".join(map(str, WEBHOOK_BACKOFF_S)),
            VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS=str(WEBHOOK_TIMEOUT_S),
            VIDBRIEF_ALLOW_PRIVATE_URLS="true",
            VIDBRIEF_STATE_DIR=str(tmp_path / "state"),
        )
        env.update(env_overrides)
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "webhooks"],
            cwd=tmp_path,  # no stray .env from the repository
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_worker(proc)


@pytest.fixture
def on_bridge(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Callable[..., Any]:
    """Run ``action(bridge)`` on a Bridge with a fake launcher (tests/fake_launcher.py) and
    the test Redis, group created, its loop never started: its parts (admission, fleet, the
    job runner) are driven directly. Settings as keyword overrides (bridge name ``b1``)."""
    from fake_launcher import FakeLauncher

    from raybridge.actor import Bridge

    def go(
        action: Callable[[Bridge], Awaitable[Any]],
        launcher: FakeLauncher | None = None,
        **overrides: Any,
    ) -> Any:
        async def main() -> Any:
            settings = make_settings(**{"bridge_name": "b1", **overrides})
            bridge = Bridge(settings, redis_server.url, launcher=launcher or FakeLauncher())
            try:
                await bridge.stream.ensure_group()
                return await action(bridge)
            finally:
                await bridge.redis.aclose()

        return asyncio.run(main())

    return go


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A local S3-compatible server (moto) for the module (tests/s3_server.py)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, dummy credentials, and the endpoint as the setting names it."""
    from pipeline import storage

    dummy_aws_env(monkeypatch)
    monkeypatch.setenv(storage.S3_ENDPOINT_ENV, s3.endpoint_url)
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name
