"""``vidbrief config --check`` and the bridge's start: the whole configuration checked before any
work, so a typo fails at once with one line instead of failing every job after its download
and analysis.

    settings        every VIDBRIEF_* value parses (else: exit 4 before anything here runs)
    variables       VIDBRIEF_* names (environment and .env) that no setting has: a warning
                    with the nearest known name (``VIDBRIEF_WINDOWS`` → ``VIDBRIEF_WINDOW``)
    llm             the provider name, base URL and model resolve; then one cheap call (the
                    models list) reaches the endpoint with the key
    storage         the reports and dataset locations name a protocol fsspec knows
    redis           a PING answers (the embedded Redis is only looked for, never started)
    ray             the cluster's address takes a TCP connection (or: a private Ray will start)

Each check gives one line, ``ok``, ``warn`` or ``fail``, with what to change. The exit status
(vidbrief/exits.py): 4 when a value is invalid, 3 when a service does not answer, else 0.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ingest.errors import ConfigError, VidbriefError
from ingest.settings import Settings
from vidbrief.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE, redis_where

ENV_PREFIX = "VIDBRIEF_"
#: Variables read outside the settings (the redis-server binary, the secrets folder).
OTHER_VARIABLES = frozenset({"VIDBRIEF_REDIS_SERVER", "VIDBRIEF_SECRETS_DIR"})
#: How long a reachability check waits.
CONNECT_TIMEOUT_S = 3.0
#: How close a name must be to a known one to be suggested (difflib's ratio).
SUGGEST_CUTOFF = 0.6


@dataclass(frozen=True)
class Finding:
    """One line of the check: level ``ok``, ``warn`` or ``fail``; ``code`` the exit status a
    failure means (4 invalid, 3 unreachable)."""

    level: str
    what: str
    detail: str
    code: int = EXIT_OK


def ok(what: str, detail: str) -> Finding:
    return Finding("ok", what, detail)


def warn(what: str, detail: str) -> Finding:
    return Finding("warn", what, detail)


def invalid(what: str, detail: str) -> Finding:
    return Finding("fail", what, detail, EXIT_CONFIG)


def unreachable(what: str, detail: str) -> Finding:
    return Finding("fail", what, detail, EXIT_UNREACHABLE)


def exit_code(findings: Iterable[Finding]) -> int:
    """4 if anything is invalid, else 3 if anything is unreachable, else 0."""
    codes = {f.code for f in findings}
    return EXIT_CONFIG if EXIT_CONFIG in codes else max(codes, default=EXIT_OK)


# ---------------------------------------------------------------- the checks
def check_all(settings: Settings, *, network: bool = True) -> list[Finding]:
    """Every check; ``network`` False leaves out the ones that talk to a service."""
    checks: list[Callable[[Settings], list[Finding]]] = [unknown_variables, llm_static, storage]
    if network:
        checks += [redis_reachable, ray_reachable, llm_endpoint]
    return [finding for check in checks for finding in check(settings)]


def for_the_bridge(findings: Iterable[Finding]) -> list[Finding]:
    """The findings as they stop a bridge from starting: an LLM endpoint that does not answer
    now is a warning (its jobs' brief step retries; the bridge has other work), any other
    failure stands."""
    return [
        warn(f.what, f.detail) if f.what == "llm endpoint" and f.code == EXIT_UNREACHABLE else f
        for f in findings
    ]


def known_variables() -> set[str]:
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES


def unknown_variables(_settings: Settings, env_file: Path = Path(".env")) -> list[Finding]:
    """A warning for each VIDBRIEF_* variable no setting reads, with the nearest known name."""
    known = known_variables()
    found = {k for k in os.environ if k.upper().startswith(ENV_PREFIX)} | _dotenv_names(env_file)
    findings = []
    for name in sorted(found):
        if name.upper() in known:
            continue
        near = difflib.get_close_matches(name.upper(), known, n=1, cutoff=SUGGEST_CUTOFF)
        hint = f"did you mean {near[0]}?" if near else "no setting has this name: it is ignored"
        findings.append(warn("variables", f"{name} is not a setting; {hint}"))
    return findings


def _dotenv_names(env_file: Path) -> set[str]:
    from dotenv import dotenv_values

    if not env_file.is_file():
        return set()
    return {k for k in dotenv_values(env_file) if k.upper().startswith(ENV_PREFIX)}


def llm_static(settings: Settings) -> list[Finding]:
    """The provider, base URL and model resolve (no call)."""
    from pipeline.llm import resolve_config

    try:
        config = resolve_config(settings)
    except ConfigError as e:
        return [invalid("llm", str(e))]
    if config is None:
        configured = settings.llm_provider or settings.llm_base_url
        why = "its provider has no VIDBRIEF_LLM_API_KEY" if configured else "no provider set"
        return [ok("llm", f"offline extractive brief ({why})")]
    return [ok("llm", f"{config.provider}, model {config.model}")]


def llm_endpoint(settings: Settings) -> list[Finding]:
    """One cheap call to the configured endpoint."""
    from pipeline.llm import check_endpoint, resolve_config

    try:
        config = resolve_config(settings)
    except ConfigError:
        return []  # llm_static said so
    if config is None:
        return []
    try:
        return [ok("llm endpoint", check_endpoint(config))]
    except VidbriefError as e:
        text = str(e)
        bad_key = "VIDBRIEF_LLM_API_KEY" in text or "VIDBRIEF_LLM_MODEL" in text
        return [(invalid if bad_key else unreachable)("llm endpoint", text)]


def storage(settings: Settings) -> list[Finding]:
    """The reports and dataset locations: a path, or a URL of a protocol fsspec knows."""
    from fsspec.registry import known_implementations

    findings = []
    for variable, url in (
        ("VIDBRIEF_REPORTS_URL", settings.reports_url),
        ("VIDBRIEF_DATASET_URL", settings.dataset_url),
    ):
        if not url:
            continue
        scheme = urlsplit(url).scheme
        if scheme and len(scheme) > 1 and scheme not in known_implementations:
            known = "a path, or file://, s3://, gs:// … as fsspec knows them"
            findings.append(invalid("storage", f"{variable}: no {scheme}:// filesystem ({known})"))
    endpoint = settings.s3_endpoint_url
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        findings.append(invalid("storage", "VIDBRIEF_S3_ENDPOINT_URL must be an http(s) URL"))
    return findings or [ok("storage", f"reports to {settings.reports_url}")]


def redis_reachable(settings: Settings) -> list[Finding]:
    """A PING, bounded in time; the embedded Redis only looked for."""
    import redis

    from ingest.redis_server import EmbeddedRedis

    if settings.redis_url is None:
        server = EmbeddedRedis(settings.state_dir).find()
        if server is None:
            return [ok("redis", "embedded; not running (commands that produce work start it)")]
        url = server.url
    else:
        url = settings.redis_url.get_secret_value()
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as e:
        return [invalid("redis", f"{redis_where(url)} refused the credentials: {e}")]
    except redis.exceptions.RedisError as e:
        return [unreachable("redis", f"cannot reach {redis_where(url)}: {e}")]
    finally:
        client.close()
    return [ok("redis", f"{redis_where(url)} answers")]


def ray_reachable(settings: Settings) -> list[Finding]:
    """The cluster's address takes a TCP connection (its GCS, or its Ray client server)."""
    from raybridge.run import ray_address

    address, named_by = ray_address(settings)
    if not address:
        return [ok("ray", "no VIDBRIEF_RAY_ADDRESS or RAY_ADDRESS: a private local Ray")]
    if address in ("auto", "local"):
        return [ok("ray", f"{named_by}={address}: found by Ray on this machine at start")]
    host, port = _host_port(address)
    if host is None:
        return [invalid("ray", f"{named_by}={address!r} is not host:port or ray://host:port")]
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        return [unreachable("ray", f"cannot reach {host}:{port} ({named_by}): {e}")]
    return [ok("ray", f"{host}:{port} ({named_by}) takes connections")]


#: Ray's default ports: the GCS of ``host``, the client server of ``ray://host``.
RAY_GCS_PORT, RAY_CLIENT_PORT = 6379, 10001


def _host_port(address: str) -> tuple[str | None, int]:
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    default = RAY_CLIENT_PORT if parts.scheme == "ray" else RAY_GCS_PORT
    try:
        return parts.hostname, int(parts.port or default)
    except ValueError:
        return None, 0


def show(findings: Iterable[Finding], *, quiet_ok: bool = False) -> list[str]:
    """The findings as aligned lines (``quiet_ok``: the warnings and failures only)."""
    from vidbrief.terminal import clean

    return [
        f"{f.level:<4}  {f.what:<12}  {clean(f.detail)}"
        for f in findings
        if not (quiet_ok and f.level == "ok")
    ]
