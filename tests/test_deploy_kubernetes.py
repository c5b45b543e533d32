"""deploy/kubernetes/: the manifests validated offline and held against the code they deploy.

No cluster is needed (nor any network). Every Kubernetes object is validated against the
Kubernetes OpenAPI schemas of the oldest and newest versions we claim (``kubernetes-validate``,
strict: an unknown field is an error, where the API server would drop it silently); the
``RayCluster`` against the openAPIV3Schema of KubeRay's CRD (tests/data, v1.7.0), made strict
the same way, and its pod templates against Kubernetes' own PodTemplate. Then the manifests are
held against the code: the chain's Ray resources, the settings' names, the health probes'
commands, the bridge's drain time, the secret files the settings read.
"""

from __future__ import annotations

import copy
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from test_deploy_compose import PENDING_SETTINGS, setting_variables
from typer.testing import CliRunner

from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge.run import DRAIN_EXTRA_S
from vidbrief.cli import app
from vidbrief.health_check import RAY_AGENT_PORT, RAY_HEALTH_PATH

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
OPERATIONS = ROOT / "docs" / "operations.md"  # where the apply commands are documented
#: The openAPIV3Schema of the v1 RayCluster (see its "$comment" and tests/data/README.md).
RAYCLUSTER_SCHEMA = ROOT / "tests" / "data" / "kuberay-v1.7.0-raycluster-v1.schema.json.xz"
#: The oldest and the newest Kubernetes the manifests are checked against.
KUBERNETES_VERSIONS = ("1.30", "1.37")
IMAGE = "vidbrief"
SECRET = "vidbrief-secrets"
#: KubeRay's key for the Ray token in authOptions.secretName (utils.RAY_AUTH_TOKEN_SECRET_KEY).
RAY_TOKEN_KEY = "auth_token"
SECRETS_DIR = "/run/secrets"
#: KubeRay's head Service and GCS port: <RayCluster name>-head-svc:6379.
HEAD_SERVICE_SUFFIX, GCS_PORT = "-head-svc", 6379
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


# ----------------------------------------------------------------------------- helpers


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, object) for every object of every manifest, kustomization.yaml aside."""
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield path.name, doc


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def raycluster() -> dict[str, Any]:
    (cluster,) = objects("RayCluster")
    return cluster


def ray_templates() -> dict[str, dict[str, Any]]:
    """The pod templates of the RayCluster: "head" and each worker group's name."""
    spec = raycluster()["spec"]
    out = {"head": spec["headGroupSpec"]["template"]}
    out.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
    return out


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec we write, by "<kind>/<name>" (the Ray ones as "RayCluster/<group>")."""
    out = {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]
        for kind in ("Deployment", "StatefulSet")
        for doc in objects(kind)
    }
    out.update({f"RayCluster/{g}": t["spec"] for g, t in ray_templates().items()})
    return out


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, spec in pod_specs().items():
        for container in spec["containers"]:
            yield f"{where}/{container['name']}", container


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name → the env entry (with `value` or `valueFrom`)."""
    return {e["name"]: e for e in container.get("env", [])}


def bridge() -> dict[str, Any]:
    return one("Deployment", "vidbrief-bridge")


def bridge_container() -> dict[str, Any]:
    (container,) = bridge()["spec"]["template"]["spec"]["containers"]
    return container


def bridge_settings() -> dict[str, str]:
    """The bridge's VIDBRIEF_* values: its ConfigMaps, then its own env (which wins)."""
    container = bridge_container()
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    values.update({k: e["value"] for k, e in env(container).items() if "value" in e})
    return values


def secret_files(spec: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """File path → (Secret, key, optional) for every secret file a pod spec mounts."""
    mounts = {
        m["name"]: m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])
    }
    out: dict[str, tuple[str, str, bool]] = {}
    for volume in spec.get("volumes", []):
        sources = [{"secret": volume["secret"]}] if "secret" in volume else []
        sources += volume.get("projected", {}).get("sources", [])
        for source in (s["secret"] for s in sources if "secret" in s):
            name = source.get("name") or source.get("secretName")
            for item in source["items"]:
                path = f"{mounts[volume['name']]}/{item['path']}"
                out[path] = (name, item["key"], bool(source.get("optional")))
    return out


def readme_secret_keys() -> set[str]:
    """The keys of the Secret as docs/operations.md's `kubectl create secret` line creates it."""
    text = OPERATIONS.read_text()
    command = re.search(r"kubectl -n vidbrief create secret generic .*?(?:\n\n|```)", text, re.S)
    assert command, "docs/operations.md shows how to create the Secret"
    return set(re.findall(r"--from-literal=([a-z_]+)=", command[0]))


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (the API server prunes them silently)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        closed = "properties" in out and "additionalProperties" not in out
        if closed and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def raycluster_validator() -> jsonschema.Validator:
    schema = json.loads(lzma.decompress(RAYCLUSTER_SCHEMA.read_bytes()))
    assert "kuberay v1.7.0" in schema["$comment"]
    return jsonschema.Draft7Validator(strict(schema))


# ----------------------------------------------------------------------------- schemas


def test_the_kustomization_applies_every_manifest_in_the_namespace():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    (namespace,) = objects("Namespace")
    assert kustomization["namespace"] == namespace["metadata"]["name"] == "vidbrief"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert [i["name"] for i in kustomization["images"]] == [IMAGE]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_object_is_valid(version: str):
    checked = set()
    for name, doc in manifests():
        if doc["kind"] == "RayCluster":
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(map(str, e.path))
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {e.message}")
        checked.add(doc["kind"])
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim"} <= checked


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_ray_pod_templates_are_valid_kubernetes_pod_templates(version: str):
    for group, template in ray_templates().items():
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}}
        try:
            kubernetes_validate.validate({**pod, "template": template}, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"RayCluster {group}: {'.'.join(map(str, e.path))}: {e.message}")


def test_the_raycluster_is_valid_for_the_kuberay_crd(raycluster_validator):
    errors = sorted(raycluster_validator.iter_errors(raycluster()), key=str)
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_kuberay_schema_check_catches_mistakes(raycluster_validator):
    # The check above means something only if it refuses what the operator would mishandle.
    cluster = copy.deepcopy(raycluster())
    worker = cluster["spec"]["workerGroupSpecs"][0]
    worker["rayStartParam"] = worker.pop("rayStartParams")  # a typo the server would prune
    worker["replicas"] = "one"
    worker["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "32 gigs"
    cluster["spec"]["authOptions"]["mode"] = "tokens"
    found = {".".join(map(str, e.path)) for e in raycluster_validator.iter_errors(cluster)}
    assert "spec.workerGroupSpecs.0" in found  # rayStartParam
    assert "spec.workerGroupSpecs.0.replicas" in found
    assert "spec.workerGroupSpecs.0.template.spec.containers.0.resources.limits.memory" in found
    assert "spec.authOptions.mode" in found


def test_every_resource_quantity_is_well_formed():
    for where, container in containers():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            for name, value in resources.get(kind, {}).items():
                assert QUANTITY.match(str(value)), f"{where}: {kind}.{name} = {value!r}"
    for doc in objects("PersistentVolumeClaim"):
        assert QUANTITY.match(doc["spec"]["resources"]["requests"]["storage"])


# ----------------------------------------------------------------------------- Ray


def test_the_ray_nodes_offer_the_resources_the_chain_asks_for():
    spec = raycluster()["spec"]
    head = spec["headGroupSpec"]
    assert "headService" not in head  # its name stays <RayCluster>-head-svc, the bridge's address
    assert float(head["resources"][REPORT_NODE]) >= 1  # the report step runs there
    assert head["rayStartParams"]["num-gpus"] == "0"
    (gpu,) = spec["workerGroupSpecs"]
    assert float(gpu["resources"][DOWNLOAD_SLOT]) >= 1
    (worker,) = gpu["template"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    # No custom resource is spelled in rayStartParams too (KubeRay would let `resources` win).
    for group in (head, gpu):
        assert "resources" not in group["rayStartParams"]


def test_the_cluster_runs_the_ray_the_image_installs():
    import ray

    assert raycluster()["spec"]["rayVersion"] == ray.__version__


def test_every_vidbrief_pod_runs_the_one_image():
    images = {where: c["image"] for where, c in containers()}
    app_images = {w: i for w, i in images.items() if not w.startswith("StatefulSet/redis")}
    assert set(app_images.values()) == {IMAGE}, app_images
    assert images["StatefulSet/redis/redis"].startswith("redis:7")


def test_the_ray_probes_ask_the_node_s_agent_like_vidbrief_health_ray_node():
    for group, template in ray_templates().items():
        (container,) = template["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (RAY_HEALTH_PATH, RAY_AGENT_PORT), group


def test_the_ray_cluster_uses_token_authentication_from_the_secret():
    auth = raycluster()["spec"]["authOptions"]
    assert auth == {"mode": "token", "secretName": SECRET}
    assert RAY_TOKEN_KEY in readme_secret_keys()


# ----------------------------------------------------------------------------- the bridge


def test_the_bridge_joins_the_ray_cluster_through_the_head_service():
    container = bridge_container()
    script = container["args"][0]
    words = shlex.split(script.split("&&")[0])
    gcs = f"{raycluster()['metadata']['name']}{HEAD_SERVICE_SUFFIX}:{GCS_PORT}"
    assert words[:2] == ["ray", "start"] and f"--address={gcs}" in words
    # The bridge's node is there only so that its driver has a raylet: no work there.
    assert "--num-cpus=0" in words and "--num-gpus=0" in words
    assert script.rstrip().endswith("exec vidbrief bridge")  # gets the SIGTERM
    assert bridge_settings()["VIDBRIEF_RAY_ADDRESS"] == gcs
    head_ports = {
        p["name"]: p["containerPort"]
        for p in ray_templates()["head"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports["gcs"] == GCS_PORT
    ray_env = env(container)
    assert ray_env["RAY_AUTH_MODE"]["value"] == "token"
    assert ray_env["RAY_AUTH_TOKEN_PATH"]["value"] in secret_files(
        bridge()["spec"]["template"]["spec"]
    )


def test_every_bridge_pod_is_its_own_consumer():
    name = env(bridge_container())["VIDBRIEF_BRIDGE_NAME"]
    assert name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    rolling = bridge()["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0  # the old bridge drains while the new one reads


def test_the_bridge_has_time_to_drain_before_sigkill():
    grace = float(bridge_settings()["VIDBRIEF_DRAIN_GRACE_SECONDS"])
    period = bridge()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period > grace + DRAIN_EXTRA_S


def test_the_bridge_settings_are_valid_and_point_at_the_volumes(tmp_path: Path, monkeypatch):
    for var in [v for v in os.environ if v.startswith("VIDBRIEF_")]:
        monkeypatch.delenv(var)
    values = bridge_settings()
    for var, value in values.items():
        if var.startswith("VIDBRIEF_"):
            monkeypatch.setenv(var, value)
    monkeypatch.setenv("VIDBRIEF_BRIDGE_NAME", "vidbrief-bridge-7d9c5-x2x8q")  # a pod's name
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "vidbrief_redis_url").write_text("redis://:pw@redis:6379/0\n")
    settings = Settings(secrets_dir=secrets, _env_file=None)  # type: ignore[call-arg]
    assert settings.step_mode == "real" and settings.analysis_on == "gpu"
    assert settings.allow_private_urls is False
    head = ray_templates()["head"]["spec"]
    head_mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in head["volumes"]
    }
    for path in (settings.work_dir, settings.reports_url, settings.dataset_url):
        assert claims[head_mounts[str(path)]], f"{path} is not a volume on the head"
    (gpu,) = [t for g, t in ray_templates().items() if g != "head"]
    gpu_mounts = {m["mountPath"]: m["name"] for m in gpu["spec"]["containers"][0]["volumeMounts"]}
    gpu_claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
        for v in gpu["spec"]["volumes"]
    }
    # The report on the head reads the keyframes the analysis wrote on a worker: one volume.
    assert (
        gpu_claims[gpu_mounts[str(settings.work_dir)]]
        == claims[head_mounts[str(settings.work_dir)]]
    )
    work = one("PersistentVolumeClaim", claims[head_mounts[str(settings.work_dir)]])
    assert work["spec"]["accessModes"] == ["ReadWriteMany"]


# ----------------------------------------------------------------------------- settings, secrets


def named_settings() -> dict[str, set[str]]:
    """Every VIDBRIEF_* name the manifests use, by where: env, ConfigMap keys, secret files."""
    found: dict[str, set[str]] = {}
    for where, container in containers():
        found[where] = {n for n in env(container) if n.startswith("VIDBRIEF_")}
    for config in objects("ConfigMap"):
        found[f"ConfigMap/{config['metadata']['name']}"] = set(config["data"])
    for where, spec in pod_specs().items():
        paths = secret_files(spec)
        found[f"{where} secrets"] = {
            Path(p).name.upper() for p in paths if Path(p).name.startswith("vidbrief_")
        }
    return found


def test_every_vidbrief_name_is_a_real_setting():
    known = setting_variables() | PENDING_SETTINGS
    used = named_settings()
    assert set().union(*used.values()), "no setting named at all"
    for where, names in used.items():
        assert names <= known, f"{where}: unknown settings {sorted(names - known)}"


def test_secrets_reach_the_pods_as_files_only():
    secret_vars = {
        "RAY_AUTH_TOKEN",
        "VIDBRIEF_REDIS_URL",
        "VIDBRIEF_LLM_API_KEY",
        "VIDBRIEF_WEBHOOK_SECRET",
    }
    for where, container in containers():
        for name, entry in env(container).items():
            assert "secretKeyRef" not in entry.get("valueFrom", {}), f"{where}: {name}"
            assert name not in secret_vars, f"{where}: {name} as a variable"
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, where
    for where, spec in pod_specs().items():
        for path, (secret, _key, _optional) in secret_files(spec).items():
            assert secret == SECRET and path.startswith(f"{SECRETS_DIR}/"), (where, path)
    for config in objects("ConfigMap"):
        assert not set(config["data"]) & secret_vars


def test_each_pod_mounts_the_secret_keys_it_needs_and_no_others():
    def keys(where: str) -> dict[str, str]:
        files = secret_files(pod_specs()[where])
        return {Path(p).name: key for p, (_, key, _) in files.items()}

    assert keys("Deployment/vidbrief-bridge") == {
        "vidbrief_redis_url": "vidbrief_redis_url",
        "ray_auth_token": RAY_TOKEN_KEY,
        "vidbrief_llm_api_key": "vidbrief_llm_api_key",
    }
    assert keys("Deployment/vidbrief-webhook-worker") == {
        "vidbrief_redis_url": "vidbrief_redis_url",
        "vidbrief_webhook_secret": "vidbrief_webhook_secret",
    }
    assert keys("StatefulSet/redis") == {"redis_password": "redis_password"}
    for group in ray_templates():
        assert keys(f"RayCluster/{group}") == {}  # KubeRay brings the token itself
    optional = {
        Path(p).name
        for spec in pod_specs().values()
        for p, (_, _, opt) in secret_files(spec).items()
        if opt
    }
    assert optional == {"vidbrief_llm_api_key"}  # no key: the offline brief
    used = {key for spec in pod_specs().values() for _, key, _ in secret_files(spec).values()}
    assert used | {RAY_TOKEN_KEY} == readme_secret_keys() | {"vidbrief_llm_api_key"}


def test_the_secret_files_are_the_ones_the_settings_read(tmp_path: Path):
    spec = pod_specs()["Deployment/vidbrief-webhook-worker"]
    folder = tmp_path / "secrets"
    folder.mkdir()
    values = {
        "vidbrief_redis_url": "redis://:pw@redis:6379/0",
        "vidbrief_webhook_secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
    }
    for path, (_, key, _) in secret_files(spec).items():
        assert Path(path).parent == Path(SECRETS_DIR)
        (folder / Path(path).name).write_text(values[key] + "\n")
    settings = Settings(secrets_dir=folder, _env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == values["vidbrief_redis_url"]
    assert settings.webhook_secret is not None


def test_the_secret_volumes_are_readable_by_the_pod_s_group_only():
    for where, spec in pod_specs().items():
        for volume in spec.get("volumes", []):
            source = volume.get("secret") or volume.get("projected")
            if source is not None:
                assert source["defaultMode"] == 0o440, where
                assert spec["securityContext"]["fsGroup"], where


# ----------------------------------------------------------------------------- probes, security


def test_the_probes_run_vidbrief_health_commands_that_exist():
    runner = CliRunner()
    probed = set()
    for where, container in containers():
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = container.get(kind, {}).get("exec", {}).get("command", [])
            if command[:2] == ["vidbrief", "health"]:
                result = runner.invoke(app, [*command[1:], "--help"])
                assert result.exit_code == 0, f"{where} {kind}: {command}: {result.output}"
                probed.add((where.split("/")[1], command[2]))
    assert ("vidbrief-bridge", "bridge") in probed
    assert ("vidbrief-webhook-worker", "webhook-worker") in probed


def test_every_container_has_a_liveness_probe_and_memory_limits():
    for where, container in containers():
        assert "livenessProbe" in container, where
        assert container["resources"]["requests"], where
        assert container["resources"]["limits"]["memory"], where


def test_every_pod_runs_non_root_with_a_read_only_root_and_no_privileges():
    for where, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "privileged" not in context and "runAsUser" not in context, where


def test_every_mount_has_its_volume_and_every_claim_exists():
    claims = {doc["metadata"]["name"] for doc in objects("PersistentVolumeClaim")}
    for where, spec in pod_specs().items():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {
            t["metadata"]["name"]
            for doc in objects("StatefulSet")
            if where == f"StatefulSet/{doc['metadata']['name']}"
            for t in doc["spec"].get("volumeClaimTemplates", [])
        }
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (where, mount)
        for volume in volumes.values():
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            assert claim is None or claim in claims, (where, claim)
        writable_root = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]}
        assert "/tmp" in writable_root, f"{where}: a read-only root needs a writable /tmp"


def test_redis_keeps_an_append_only_file_on_its_volume_and_needs_a_password():
    redis = one("StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    assert re.search(r"--appendonly\s+yes", script) and "noeviction" in script
    assert "requirepass" in script and "/run/secrets/redis_password" in script
    assert "--requirepass" not in script  # never on the command line (`ps` shows it)
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    service = one("Service", "redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_operations_guide_tells_how_to_apply_it():
    text = OPERATIONS.read_text()
    assert "kubectl apply -k deploy/kubernetes" in text
    assert f"create secret generic {SECRET}" in text


# ----------------------------------------------------------------------------- kustomize


def _kubectl_kustomize() -> subprocess.CompletedProcess[str] | None:
    if shutil.which("kubectl") is None:
        return None
    try:
        return subprocess.run(
            ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is absent")
def test_kustomize_builds_it_into_the_namespace_with_the_image_set():
    built = _kubectl_kustomize()
    assert built is not None and built.returncode == 0, built and built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert len(docs) == len(list(manifests()))
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "vidbrief", doc["metadata"]["name"]
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    found = re.findall(r"^\s*image: (\S+)$", built.stdout, re.M)
    app_images = [i for i in found if not i.startswith("redis:")]
    # The RayCluster's pods too: kustomize rewrites every containers[].image it finds.
    assert len(app_images) == 4 and set(app_images) == {expected}, found
