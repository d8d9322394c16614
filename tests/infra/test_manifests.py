"""The deployment files agree with the code: ports, settings, probes, images, streams.

Runs in `make test` (no cluster needed); `make infra-check` adds schema validation, the
security scan and the YAML lint.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tailor_core.settings import DEFAULT_PORTS, SERVICE_NAMES
from tailor_core.streams import Stream

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra/k8s"
_spec = importlib.util.spec_from_file_location("render_k8s", ROOT / "tools/render_k8s.py")
assert _spec is not None
assert _spec.loader is not None
render_k8s = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_k8s)

OVERLAYS = sorted(p.parent for p in (K8S / "overlays").rglob("kustomization.yaml"))
#: Settings that are set by the entrypoint, not the environment.
NOT_FROM_ENV = {"service"}


def _settings_fields(service: str) -> set[str]:
    definition = importlib.import_module(f"tailor_{service}.bootstrap").DEFINITION
    return {f"TAILOR_{name.upper()}" for name in definition.settings_class.model_fields} - {
        f"TAILOR_{n.upper()}" for n in NOT_FROM_ENV
    }


def _rendered(overlay: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = render_k8s.render(overlay)
    return documents


def _one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_overlay_renders(overlay: Path) -> None:
    documents = _rendered(overlay)
    assert documents
    assert all(d["metadata"].get("namespace") for d in documents)


@pytest.mark.parametrize("env", ["dev", "prod"])
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_service_alone_has_everything_it_needs(env: str, service: str) -> None:
    documents = _rendered(K8S / f"overlays/{env}/services/{service}")
    kinds = {d["kind"] for d in documents}
    assert kinds == {
        "ServiceAccount", "ConfigMap", "Deployment", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    assert all(d["metadata"]["name"] == f"tailor-{service}" for d in documents)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_ports_probes_and_settings_match_the_code(service: str) -> None:
    documents = _rendered(K8S / f"overlays/prod/services/{service}")
    grpc_port, metrics_port = DEFAULT_PORTS[service]
    config = _one(documents, "ConfigMap", f"tailor-{service}")["data"]
    deployment = _one(documents, "Deployment", f"tailor-{service}")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["grpc"], ports["metrics"]) == (grpc_port, metrics_port)
    assert (config["TAILOR_GRPC_PORT"], config["TAILOR_METRICS_PORT"]) == (
        str(grpc_port),
        str(metrics_port),
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # "" is the overall status every Tailor server reports (tailor_core.server).
        assert container[probe]["grpc"] == {"port": grpc_port, "service": ""}
    from_secrets = {e["name"] for e in container["env"]}
    assert _settings_fields(service) <= set(config) | from_secrets
    assert set(config) | from_secrets <= _settings_fields(service)
    grace = float(config["TAILOR_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= 3 * grace
    [migrate] = pod["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == container["image"]
    assert container["image"].endswith(f"/tailor-{service}:0.1.0")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_services_reach_nats_and_consent_where_the_manifests_put_them() -> None:
    documents = _rendered(K8S / "overlays/prod")
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    for service in SERVICE_NAMES:
        config = _one(documents, "ConfigMap", f"tailor-{service}")["data"]
        host, port = re.fullmatch(r"nats://([\w-]+):(\d+)", config["TAILOR_NATS_URL"]).groups()  # type: ignore[union-attr]
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        host, port = config["TAILOR_CONSENT_ADDR"].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        assert config["TAILOR_STREAM_REPLICAS"] == "3"  # prod: replicated streams
    nats = _one(documents, "StatefulSet", "tailor-nats")
    assert nats["spec"]["replicas"] == 3


def test_the_deployment_guide_names_every_stream() -> None:
    guide = (ROOT / "docs/deploy.md").read_text()
    assert all(f"`{stream.value}`" in guide for stream in Stream)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_image_holds_only_its_own_service(service: str) -> None:
    dockerfile = (ROOT / f"services/{service}/Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, flags=re.MULTILINE)
    assert copied == ["libs/protos", "libs/core", f"services/{service}"]
    assert all((ROOT / path).is_dir() for path in copied)
    assert "[embedded]" not in dockerfile
    assert re.search(r"^USER 10001", dockerfile, flags=re.MULTILINE)
    assert "tailor_core.healthcheck" in dockerfile
    grpc_port, metrics_port = DEFAULT_PORTS[service]
    assert f"TAILOR_GRPC_PORT={grpc_port}" in dockerfile
    assert f"TAILOR_METRICS_PORT={metrics_port}" in dockerfile


def test_compose_runs_the_five_services_with_nats_and_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {*SERVICE_NAMES, "nats", "postgres"}
    for service in SERVICE_NAMES:
        entry = compose["services"][service]
        assert entry["build"]["dockerfile"] == f"services/{service}/Dockerfile"
        assert entry["environment"]["TAILOR_PG_SCHEMA"] == service


def test_the_renderer_refuses_what_it_would_not_render_like_kustomize(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(render_k8s.RenderError, match="configMapGenerator"):
        render_k8s.render(tmp_path)
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - target: {kind: Deployment}\n"
        "    patch: '[{op: replace, path: /spec/replicas, value: 2}]'\n"
    )
    with pytest.raises(render_k8s.RenderError, match="matches nothing"):
        render_k8s.render(tmp_path)
