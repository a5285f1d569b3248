"""deploy/k8s/components/: the kustomize components for the credential sources that fetch their own keys.

Each overlay is rendered with each component added as its header says (a `components:` line in a copy of
the overlay) by the kustomize built into kubectl, validated against the Kubernetes schemas as
test_deploy.py validates the plain overlays, and compared with the plain overlay: a component changes only
what it is for. The ConfigMap it renders is then loaded into the exporter's own settings, as the pod would.
"""

from __future__ import annotations

import copy
import ipaddress
import shutil
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from test_deploy import (
    DNS_PORT,
    DOCKERFILE,
    HTTPS_PORT,
    K8S,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    REDIS_PORT,
    SECRET_EXAMPLE_FILE,
    ImageFacts,
    Manifest,
    configmap_data,
    container_environment,
    egress_problems,
    image_facts,
    load_manifests,
    one,
    parse_dockerfile,
    render,
    secret_env_names,
    secret_file_problems,
    secret_problems,
    security_problems,
    settings_from_environment,
    unknown_env_names,
    writable_path_problems,
)

from exporter.errors import ConfigError
from exporter.settings import Settings

WORKLOAD, METADATA = "workload-identity", "metadata-credentials"
COMPONENTS = (WORKLOAD, METADATA)
SOURCE = {WORKLOAD: "workload-identity", METADATA: "metadata"}
TOKEN_VOLUME = "identity-token"
TOKEN_MOUNT = PurePosixPath("/var/run/secrets/dli-exporter/identity")
METADATA_NETWORK = ipaddress.ip_network("169.254.169.254/32")
METADATA_PORT = 80
METADATA_RULE = {
    "to": [{"ipBlock": {"cidr": str(METADATA_NETWORK)}}],
    "ports": [{"port": METADATA_PORT, "protocol": "TCP"}],
}
# What the components may change in the ConfigMap: the source, its settings, and the key files they drop.
CONFIG_KEYS = ("EXPORTER_CREDENTIALS", "EXPORTER_IDP_ID", "EXPORTER_ID_TOKEN_FILE")
KEY_FILES = ("EXPORTER_AK_FILE", "EXPORTER_SK_FILE")
Rendered = dict[tuple[str, str], list[Manifest]]


def with_component(workdir: Path, component: str, overlay: str) -> Path:
    """A copy of deploy/k8s whose overlay has the header's line `components: [../../components/NAME]`."""
    copied = workdir / component / overlay / "k8s"
    shutil.copytree(K8S, copied)
    kustomization = copied / "overlays" / overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + f"\ncomponents:\n  - ../../components/{component}\n")
    return kustomization.parent


@pytest.fixture(scope="module")
def plain() -> dict[str, list[Manifest]]:
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """Each overlay with each component, rendered once for the module."""
    workdir = tmp_path_factory.mktemp("components")
    return {
        (component, overlay): render(with_component(workdir, component, overlay))
        for component in COMPONENTS
        for overlay in OVERLAYS
    }


@pytest.fixture(scope="module")
def image() -> ImageFacts:
    return image_facts(parse_dockerfile(DOCKERFILE.read_text()))


def pod_spec(objects: list[Manifest]) -> Manifest:
    spec: Manifest = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def exporter_container(objects: list[Manifest]) -> Manifest:
    (container,) = [item for item in pod_spec(objects)["containers"] if item["name"] == "exporter"]
    return container


def config(objects: list[Manifest]) -> dict[str, str]:
    return configmap_data(objects)["dli-exporter-config"]


def egress(objects: list[Manifest]) -> list[Manifest]:
    rules: list[Manifest] = one(objects, "NetworkPolicy")["spec"]["egress"]
    return rules


def stripped(objects: list[Manifest]) -> list[Manifest]:
    """A copy without everything a component may set: what is left must be the plain overlay."""
    objects = copy.deepcopy(objects)
    data = one(objects, "ConfigMap")["data"]
    for key in (*CONFIG_KEYS, *KEY_FILES):
        data.pop(key, None)
    spec, container = pod_spec(objects), exporter_container(objects)
    spec["volumes"] = [volume for volume in spec["volumes"] if volume["name"] != TOKEN_VOLUME]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != TOKEN_VOLUME]
    one(objects, "NetworkPolicy")["spec"]["egress"] = [r for r in egress(objects) if r != METADATA_RULE]
    return objects


def identities(objects: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((item["kind"], item["metadata"]["name"]) for item in objects)


# --- rendering ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_overlay_with_component_validates(
    composed: Rendered, component: str, overlay: str, version: str
) -> None:
    """Every object of the overlay with the component is valid, strictly, against that version's schemas."""
    assert composed[component, overlay]
    for item in composed[component, overlay]:
        kubernetes_validate.validate(item, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_component_changes_only_what_it_is_for(
    plain: dict[str, list[Manifest]], composed: Rendered, component: str, overlay: str
) -> None:
    """The same objects as the plain overlay, and the same content bar the credential fields."""
    objects = composed[component, overlay]
    assert identities(objects) == identities(plain[overlay])
    assert stripped(objects) == stripped(plain[overlay])
    assert config(objects)["EXPORTER_CREDENTIALS"] == SOURCE[component]
    assert not set(KEY_FILES) & config(objects).keys(), "key files beside a source that fetches its keys"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_component_passes_the_deploy_checks(
    composed: Rendered, image: ImageFacts, component: str, overlay: str
) -> None:
    """test_deploy's checks hold: real settings only, no API token, secrets kept secret, egress as allowed."""
    objects = composed[component, overlay]
    allowed = {DNS_PORT, HTTPS_PORT} | ({REDIS_PORT} if overlay == "redis" else set())
    allowed |= {METADATA_PORT} if component == METADATA else set()
    assert [
        *unknown_env_names(objects),
        *security_problems(objects),
        *secret_problems(objects, secret_env_names(overlay)),
        *secret_file_problems(objects, image.env),
        *writable_path_problems(objects, image),
        *egress_problems(objects, allowed),
    ] == []


# --- workload identity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_token_is_mounted_where_the_configmap_says(composed: Rendered, overlay: str) -> None:
    """A projected service account token, one hour, read-only at the directory of EXPORTER_ID_TOKEN_FILE."""
    objects = composed[WORKLOAD, overlay]
    (volume,) = [item for item in pod_spec(objects)["volumes"] if item["name"] == TOKEN_VOLUME]
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    (mount,) = [item for item in exporter_container(objects)["volumeMounts"] if item["name"] == TOKEN_VOLUME]
    data = config(objects)
    assert token["expirationSeconds"] == 3600
    assert token["audience"].startswith("REPLACE_WITH_"), "the audience is the operator's to set"
    assert data["EXPORTER_IDP_ID"].startswith("REPLACE_WITH_"), "the identity provider is the operator's"
    assert mount == {"name": TOKEN_VOLUME, "mountPath": str(TOKEN_MOUNT), "readOnly": True}
    assert (
        PurePosixPath(data["EXPORTER_ID_TOKEN_FILE"]) == TOKEN_MOUNT / token["path"] == TOKEN_MOUNT / "token"
    )
    assert pod_spec(objects)["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False


# --- metadata -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metadata_service_is_the_one_egress_added(
    plain: dict[str, list[Manifest]], composed: Rendered, overlay: str
) -> None:
    """One rule to 169.254.169.254/32:80 (where EXPORTER_METADATA_URL points), the plain rules unchanged."""
    rules = egress(composed[METADATA, overlay])
    url = urlsplit(config(composed[METADATA, overlay])["EXPORTER_METADATA_URL"])
    assert rules.count(METADATA_RULE) == 1
    assert [rule for rule in rules if rule != METADATA_RULE] == egress(plain[overlay])
    assert ipaddress.ip_address(url.hostname or "") in METADATA_NETWORK
    assert (url.port or {"http": 80, "https": 443}[url.scheme]) == METADATA_PORT
    assert egress(composed[WORKLOAD, overlay]) == egress(plain[overlay])


# --- the exporter reads what the components set -------------------------------------------------------------
def deployed_settings(
    objects: list[Manifest], image: ImageFacts, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    (secret,) = load_manifests(SECRET_EXAMPLE_FILE)
    environment = container_environment(exporter_container(objects), configmap_data(objects), image.env)
    return settings_from_environment(environment, secret["stringData"], monkeypatch)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_exporter_takes_the_components_settings(
    composed: Rendered, image: ImageFacts, monkeypatch: pytest.MonkeyPatch, component: str, overlay: str
) -> None:
    """The pod's settings load, name the component's source, and are complete credentials for it."""
    settings = deployed_settings(composed[component, overlay], image, monkeypatch)
    data = config(composed[component, overlay])
    assert settings.credentials == SOURCE[component]
    settings.require_credentials()
    if component == WORKLOAD:
        assert settings.idp_id == data["EXPORTER_IDP_ID"]
        assert settings.id_token_file == Path(data["EXPORTER_ID_TOKEN_FILE"])


@pytest.mark.parametrize("component", COMPONENTS)
def test_key_files_left_in_would_stop_the_exporter(
    composed: Rendered, image: ImageFacts, monkeypatch: pytest.MonkeyPatch, component: str
) -> None:
    """Why the components drop EXPORTER_AK_FILE/_SK_FILE: beside a fetching source they are refused."""
    objects = copy.deepcopy(composed[component, "embedded"])
    one(objects, "ConfigMap")["data"]["EXPORTER_AK_FILE"] = "/etc/dli-exporter/credentials/EXPORTER_AK"
    one(objects, "ConfigMap")["data"]["EXPORTER_SK_FILE"] = "/etc/dli-exporter/credentials/EXPORTER_SK"
    settings = deployed_settings(objects, image, monkeypatch)
    with pytest.raises(ConfigError, match="EXPORTER_AK_FILE is not used with source"):
        settings.require_credentials()


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_says_how_an_overlay_adds_it(component: str) -> None:
    """The header comment gives the overlay's `components:` line, as deploy/observability's does."""
    text = (K8S / "components" / component / "kustomization.yaml").read_text()
    assert f"#     - ../../components/{component}\n" in text
    assert "kind: Component\n" in text
