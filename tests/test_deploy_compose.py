"""The deployment files: compose.yaml, Dockerfile and .dockerignore, checked as text and YAML.

No Docker engine is needed (nor any network): the files are parsed, compose.yaml is validated
against the Compose Specification's JSON schema (tests/data, from compose-go), and both are held
against the code they deploy (settings names, the chain's Ray resources, the bridge's drain
time, the health probes' commands, the secret files the settings read). Where the Compose
plugin is installed, ``docker compose config -q`` validates the file as well; it only parses,
so it needs no engine either.
"""

from __future__ import annotations

import fnmatch
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge.run import DRAIN_EXTRA_S, START_TIMEOUT_S
from vidbrief.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("ray-head", "ray-worker-gpu", "bridge", "webhook-worker")
SERVICES = ("redis", *APP_SERVICES)
RAY_CONTAINERS = ("ray-head", "ray-worker-gpu", "bridge")
#: Redis, Ray's GCS, Ray client server, Ray dashboard.
INTERNAL_PORTS = {6379, 10001, 8265}
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}
#: Secret variables: in .env for Compose's `secrets:`, never a container's environment.
SECRETS = (
    "REDIS_PASSWORD",
    "REDISCLI_AUTH",
    "RAY_AUTH_TOKEN",
    "REDIS_URL",
    "VIDBRIEF_REDIS_URL",
    "VIDBRIEF_LLM_API_KEY",
    "VIDBRIEF_WEBHOOK_SECRET",
)
#: Stand-ins for the variables compose.yaml requires, to resolve its ${...} and its secrets.
DUMMY_ENV = {
    "REDIS_PASSWORD": "pw",
    "REDIS_URL": "redis://:pw@redis:6379/0",
    "RAY_AUTH_TOKEN": "token",
    "VIDBRIEF_WEBHOOK_SECRET": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
    "VIDBRIEF_LLM_API_KEY": "",
}
#: Settings other helpers are adding (the work-folder lifecycle); Settings ignores an
#: unknown VIDBRIEF_ variable, so compose.yaml may pass it before it lands.
PENDING_SETTINGS: frozenset[str] = frozenset()
#: The image's vidbrief user (Dockerfile) and the redis image's redis user.
APP_UID, REDIS_UID = "10001", "999"
SECRETS_DIR = "/run/secrets"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.schema.json.xz"
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a dict; a bare name (passed through) maps to None."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {k: None if v is None else str(v) for k, v in env.items()}
    out: dict[str, str | None] = {}
    for item in env:
        name, sep, value = item.partition("=")
        out[name] = value if sep else None
    return out


def command_line(service: dict[str, Any]) -> str:
    """Entrypoint and command of a service, as one string."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif value:
            parts.extend(str(v) for v in value)
    return " ".join(parts)


def command_args(service: dict[str, Any]) -> list[str]:
    """The words of the command (a `sh -c` script is split like the shell would)."""
    words: list[str] = []
    for part in service.get("command") or []:
        words.extend(shlex.split(part) if " " in part and not part.startswith("--") else [part])
    return words


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` among ``args``."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given twice"
    return values[0] if values else None


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} like Compose does."""

    def resolve(m: re.Match[str]) -> str:
        value, op, arg = env.get(m["name"]), m["op"], m["arg"]
        if op in (":-", "-") and not value:
            return arg
        if op in (":?", "?") and not value:
            raise KeyError(f"{m['name']} is required: {arg}")
        return value or ""

    return INTERPOLATION.sub(resolve, text)


def published_ports(service: dict[str, Any]) -> list[tuple[str, int | None, int]]:
    """(host address, host port, container port) for each port a service publishes."""
    out: list[tuple[str, int | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host_port = entry.get("published")
            out.append(
                (
                    str(entry.get("host_ip", "0.0.0.0")),
                    int(host_port) if host_port else None,
                    int(entry["target"]),
                )
            )
            continue
        spec = str(entry).split("/")[0]
        if spec.startswith("["):  # [::1]:8265:8265
            address, _, spec = spec[1:].partition("]:")
            host_port, _, container = spec.partition(":")
        else:
            fields = spec.split(":")
            address = fields[0] if len(fields) == 3 else "0.0.0.0"
            host_port = fields[-2] if len(fields) >= 2 else ""
            container = fields[-1]
        out.append((address, int(host_port) if host_port else None, int(container)))
    return out


def size_bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)b?", str(size).strip().lower())
    assert m, f"not a size: {size!r}"
    return int(float(m[1]) * 1024 ** " kmgt".index(m[2] or " "))


def duration_seconds(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


def setting_variables() -> set[str]:
    return {f"VIDBRIEF_{name.upper()}" for name in Settings.model_fields}


def service_secrets(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The secrets a service gets: source name → its long-syntax entry (target, uid, mode)."""
    out = {}
    for entry in service.get("secrets") or []:
        entry = {"source": entry} if isinstance(entry, str) else entry
        out[entry["source"]] = entry
    return out


def secret_path(entry: dict[str, Any]) -> str:
    """Where Compose puts a secret in the container (default /run/secrets/<source>)."""
    target = entry.get("target") or entry["source"]
    return target if target.startswith("/") else f"{SECRETS_DIR}/{target}"


def write_secrets(
    compose: dict[str, Any], service: dict[str, Any], folder: Path, env: dict[str, str]
) -> None:
    """The secret files Compose would copy into ``service``, from ``env`` (like .env)."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, entry in service_secrets(service).items():
        value = env.get(compose["secrets"][source]["environment"], "")
        if value:  # Compose leaves out a secret whose variable is empty
            (folder / Path(secret_path(entry)).name).write_text(value + "\n")


def vidbrief_health(test: list[str]) -> list[str] | None:
    """The `vidbrief health ...` words of a healthcheck test, or None."""
    words = test[1:] if test and test[0] in ("CMD", "CMD-SHELL") else test
    if test and test[0] == "CMD-SHELL":
        words = shlex.split(words[0])
    return words if words[:2] == ["vidbrief", "health"] else None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not negate
    return ignored


# ----------------------------------------------------------------------------- services


def test_every_service_is_there(services):
    assert set(SERVICES) <= set(services)


def test_the_app_services_run_the_one_image_built_from_the_dockerfile(services):
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, images
    for name in APP_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")) == DOCKERFILE
    assert DOCKERFILE.is_file()
    assert services["redis"]["image"].startswith("redis:7")
    assert "build" not in services["redis"]


def test_every_service_runs_under_an_init_with_a_restart_policy(services):
    for name in SERVICES:
        assert services[name].get("init") is True, name
        assert services[name].get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_the_gpu_worker_reserves_nvidia_gpus(services):
    devices = services["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") == "all" or int(d.get("count", 0)) >= 1 or d.get("device_ids"))
        for d in devices
    ), devices


def test_the_ray_containers_have_room_for_the_object_store_in_shm(services):
    # Docker's /dev/shm is 64 MB by default; Ray puts its object store there.
    for name in RAY_CONTAINERS:
        assert size_bytes(services[name]["shm_size"]) >= 256 * 2**20, name
    assert size_bytes(services["ray-worker-gpu"]["shm_size"]) >= 2**30


def test_no_redis_or_ray_port_is_published_beyond_loopback(services):
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for address, host_port, container_port in published_ports(service):
            assert address in LOOPBACK, f"{name} publishes {container_port} on {address}"
            ports = {host_port, container_port}
            assert not ports & (INTERNAL_PORTS - {8265}), f"{name} publishes Redis or Ray's GCS"
    assert not services["redis"].get("ports")


def test_redis_keeps_an_append_only_file_needs_a_password_and_is_health_checked(compose, services):
    redis = services["redis"]
    line = command_line(redis)
    assert re.search(r"--appendonly\s+yes", line)
    # The password from its secret file into a config file: never on the command line.
    assert "requirepass" in line and "/run/secrets/redis_password" in line
    assert "--requirepass" not in line and '[ -n "$$password" ]' in line
    assert service_secrets(redis)["redis_password"]["uid"] == REDIS_UID
    assert redis["user"] == "redis"
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "ping" in test and "/run/secrets/redis_password" in test
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]


def test_the_bridge_starts_after_redis_and_the_ray_nodes_are_healthy(services):
    depends = services["bridge"]["depends_on"]
    for name in ("redis", "ray-head", "ray-worker-gpu"):
        assert depends[name]["condition"] == "service_healthy", name
    assert services["ray-worker-gpu"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["webhook-worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


# ----------------------------------------------------------------------------- healthchecks


def test_every_service_has_a_healthcheck(services):
    for name in SERVICES:
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert duration_seconds(check["timeout"]) < duration_seconds(check["interval"]), name


def test_the_vidbrief_healthchecks_run_health_commands_that_exist(services):
    runner = CliRunner()
    probes = {}
    for name in APP_SERVICES:
        words = vidbrief_health(services[name]["healthcheck"]["test"])
        assert words, f"{name}: not a `vidbrief health` probe"
        result = runner.invoke(app, [*words[1:], "--help"])
        assert result.exit_code == 0, f"{name}: {words}: {result.output}"
        probes[name] = words[2]
    assert probes == {
        "ray-head": "ray-node",
        "ray-worker-gpu": "ray-node",
        "bridge": "bridge",
        "webhook-worker": "webhook-worker",
    }


def test_the_bridge_healthcheck_waits_out_the_start_and_tolerates_a_busy_loop(services):
    check = services["bridge"]["healthcheck"]
    words = vidbrief_health(check["test"]) or []
    max_age = float(words[words.index("--max-age") + 1])
    heartbeat = Settings.model_fields["heartbeat_seconds"].default
    assert max_age >= 3 * heartbeat  # three missed beats at least
    assert duration_seconds(check["start_period"]) > START_TIMEOUT_S  # the actors' warm-up
    assert "--name" not in words  # the bridge's own name, VIDBRIEF_BRIDGE_NAME


def test_the_bridge_has_time_to_drain_before_sigkill(services):
    bridge = services["bridge"]
    grace = float(environment(bridge)["VIDBRIEF_DRAIN_GRACE_SECONDS"])
    assert duration_seconds(bridge["stop_grace_period"]) > grace + DRAIN_EXTRA_S
    assert command_line(bridge).rstrip().endswith("exec vidbrief bridge")  # gets the SIGTERM


def test_the_ray_nodes_offer_the_resources_the_chain_asks_for(services):
    head = command_args(services["ray-head"])
    worker = command_args(services["ray-worker-gpu"])
    bridge = command_args(services["bridge"])
    assert "--head" in head and option(head, "num-gpus") == "0"
    assert json.loads(option(head, "resources")).get(REPORT_NODE, 0) >= 1
    assert json.loads(option(worker, "resources")).get(DOWNLOAD_SLOT, 0) >= 1
    gcs = f"ray-head:{option(head, 'port')}"
    assert option(worker, "address") == gcs and option(bridge, "address") == gcs
    # The bridge's container is a node only so that its driver has a raylet: no work there.
    assert option(bridge, "num-cpus") == "0" and option(bridge, "num-gpus") == "0"
    assert environment(services["bridge"])["VIDBRIEF_RAY_ADDRESS"] == gcs


def test_the_ray_cluster_uses_token_authentication_from_a_secret_file(services):
    for name in RAY_CONTAINERS:
        env = environment(services[name])
        assert env["RAY_AUTH_MODE"] == "token", name
        assert "RAY_AUTH_TOKEN" not in env, name
        token = service_secrets(services[name])["ray_auth_token"]
        assert env["RAY_AUTH_TOKEN_PATH"] == secret_path(token), name
    for name in ("redis", "webhook-worker"):
        assert "ray_auth_token" not in service_secrets(services[name]), name


def mounts(service: dict[str, Any]) -> dict[str, str]:
    pairs = (v.split(":")[:2] for v in service.get("volumes", []))
    return {target: source for source, target in pairs}


def test_the_reports_work_and_dataset_volumes_are_where_the_settings_point(compose, services):
    env = environment(services["bridge"])  # the bridge's settings travel to the Ray nodes
    head = mounts(services["ray-head"])
    assert head[env["VIDBRIEF_REPORTS_URL"]] == "reports"  # the report's node
    for name in ("ray-head", "ray-worker-gpu"):  # the report reads the analysis' keyframes
        assert mounts(services[name])[env["VIDBRIEF_WORK_DIR"]] == "work", name
    # The bridge actor, on the head, appends the dataset rows.
    dataset = interpolate(env["VIDBRIEF_DATASET_URL"] or "", {})
    assert head[dataset] == "dataset"
    assert compose["volumes"]["dataset"]["name"] == "vidbrief-dataset"
    assert {"reports", "work", "dataset"} <= set(compose["volumes"])
    assert re.search(r"mkdir -p [^&]*" + re.escape(dataset), DOCKERFILE.read_text())


def test_the_work_volume_is_bounded_by_deleting_finished_work(services):
    env = environment(services["bridge"])
    assert interpolate(env["VIDBRIEF_WORK_RETENTION_SECONDS"] or "", {}) == "0"
    text = COMPOSE.read_text()
    assert "What bounds the `work` volume" in text  # and the comment says how


# ----------------------------------------------------------------------------- settings


def test_every_vidbrief_variable_is_a_real_setting():
    known = setting_variables() | PENDING_SETTINGS
    for path in (COMPOSE, DOCKERFILE):
        used = set(re.findall(r"\bVIDBRIEF_[A-Z0-9_]+", path.read_text()))
        assert used, path
        assert used <= known, f"{path.name}: unknown settings {sorted(used - known)}"


def test_every_vidbrief_secret_file_is_a_real_setting(services):
    known = setting_variables()
    for name, service in services.items():
        for entry in service_secrets(service).values():
            file = Path(secret_path(entry)).name
            if file.startswith("vidbrief_"):
                assert file.upper() in known, f"{name}: {file}"


@pytest.mark.parametrize("name", ["bridge", "webhook-worker"])
def test_the_settings_compose_gives_are_valid(compose, services, monkeypatch, tmp_path, name):
    for var in list(os.environ):
        if var.startswith("VIDBRIEF_"):
            monkeypatch.delenv(var)
    env = environment(services[name])
    for var, value in env.items():
        if value is not None:
            monkeypatch.setenv(var, interpolate(value, DUMMY_ENV))
    write_secrets(compose, services[name], tmp_path / "secrets", DUMMY_ENV)
    settings = Settings(secrets_dir=tmp_path / "secrets", _env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:pw@redis:6379/0"
    assert settings.allow_private_urls is False
    if name == "bridge":
        assert settings.ray_address == "ray-head:6379"
        assert settings.step_mode == "real" and settings.analysis_on == "gpu"
        assert settings.llm_api_key is None  # an empty key: the offline brief
    else:
        assert settings.webhook_secret is not None


def test_private_urls_stay_refused_everywhere(services):
    for name, service in services.items():
        value = environment(service).get("VIDBRIEF_ALLOW_PRIVATE_URLS")
        assert value in (None, "false", "0"), name


def test_secrets_are_compose_secrets_never_environment_variables(compose, services):
    for name, service in services.items():
        env = environment(service)
        assert not set(env) & set(SECRETS), f"{name}: {sorted(set(env) & set(SECRETS))}"
        assert "env_file" not in service, name  # it would hand every secret to the container
    for source, secret in compose["secrets"].items():
        assert secret["environment"] in SECRETS, source  # read from .env, copied as a file
    assert not re.search(r"whsec_[A-Za-z0-9+/=]{8,}", COMPOSE.read_text())


def test_each_service_gets_only_its_secrets_readable_by_its_user_only(services):
    expected = {
        "redis": {"redis_password"},
        "ray-head": {"ray_auth_token"},
        "ray-worker-gpu": {"ray_auth_token"},
        "bridge": {"vidbrief_redis_url", "ray_auth_token", "vidbrief_llm_api_key"},
        "webhook-worker": {"vidbrief_redis_url", "vidbrief_webhook_secret"},
    }
    for name, sources in expected.items():
        given = service_secrets(services[name])
        assert set(given) == sources, name
        uid = REDIS_UID if name == "redis" else APP_UID
        for entry in given.values():
            assert (entry["uid"], entry["gid"]) == (uid, uid), (name, entry)
            assert int(str(entry["mode"]), 8) == 0o400, (name, entry)
            assert secret_path(entry).startswith(f"{SECRETS_DIR}/"), (name, entry)


def test_compose_refuses_to_start_without_the_required_secrets(compose):
    required = compose["x-required-secrets"]
    names = {INTERPOLATION.fullmatch(item)["name"] for item in required}
    optional = {"VIDBRIEF_LLM_API_KEY"}  # empty: the offline brief
    assert names == {s["environment"] for s in compose["secrets"].values()} - optional
    for item in required:
        assert INTERPOLATION.fullmatch(item)["op"] == ":?", item  # unset or empty: stop
        name = INTERPOLATION.fullmatch(item)["name"]
        with pytest.raises(KeyError, match=name):
            interpolate(item, {k: v for k, v in DUMMY_ENV.items() if k != name})
        assert interpolate(item, DUMMY_ENV) == DUMMY_ENV[name]


def test_compose_yaml_is_valid_for_the_compose_specification():
    schema = json.loads(lzma.decompress(COMPOSE_SCHEMA.read_bytes()))
    assert "compose-go" in schema["$comment"]
    resolved = yaml.safe_load(interpolate(COMPOSE.read_text(), DUMMY_ENV).replace("$$", "$"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(resolved)]
    assert not errors, errors
    # The check means something only if it refuses a mistake Compose would refuse.
    broken = {**resolved, "services": {**resolved["services"]}}
    broken["services"]["bridge"] = {**resolved["services"]["bridge"], "healthcheks": {}}
    assert not validator.is_valid(broken)


# ----------------------------------------------------------------------------- Dockerfile


def test_the_dockerfile_builds_a_lean_non_root_image_with_the_vidbrief_entrypoint():
    steps = dockerfile_instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim-bookworm"
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    entrypoints = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["vidbrief"]
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    assert args["TORCH_SPEC"].strip('"').startswith("torch==")
    runs = " ".join(args for word, args in steps if word == "RUN")
    for package in ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"):
        assert package in runs
    assert "--no-install-recommends" in runs and "pip install" in runs


def test_the_dockerfile_fetches_nothing_it_pipes_into_a_shell():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    assert not re.search(r"\b(curl|wget)\b[^\n]*\|\s*(ba|z|da)?sh\b", text)
    assert not re.search(r"^\s*ADD\s+(--\S+\s+)*https?://", text, re.M)
    assert "--trusted-host" not in text and "--allow-unauthenticated" not in text
    assert "chmod 777" not in text


def test_the_build_context_holds_the_code_and_no_secrets():
    for path in (".env", ".venv/bin/python", ".git/config", "tests/test_cli.py"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "README.md", "ingest/settings.py", "vidbrief/cli.py"):
        assert not dockerignored(path), path
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert not dockerignored(source.rstrip("/")), f"COPY {source} is ignored"


# ----------------------------------------------------------------------------- docker compose


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="the docker compose plugin is absent")
def test_docker_compose_validates_the_file():
    base = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}

    def config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = config({**base, **DUMMY_ENV})
    assert result.returncode == 0, result.stderr
    missing = config({**base, **{k: v for k, v in DUMMY_ENV.items() if k != "REDIS_PASSWORD"}})
    assert missing.returncode != 0 and "REDIS_PASSWORD" in missing.stderr
