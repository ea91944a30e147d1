"""deploy/kubernetes/: every manifest valid against the Kubernetes API schemas (offline, ``kubernetes-validate``),
and the Deployment probes, secures and sizes the pod as docs/deploy.md says."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tools.harness import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.33.0"  # the oldest minor still supported upstream when this was written; strict: no unknown fields


def documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(MANIFESTS.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict:
    (doc,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return doc


@pytest.mark.parametrize("path, doc", documents(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_manifest_is_valid_against_the_kubernetes_schema(path, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_catches_a_mistake():
    broken = by_kind("Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}


def test_probes_security_context_volumes_and_shutdown_budget():
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/sentiment-mlops"} <= mounts  # MLflow's downloads, the inference log
    assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in container["volumeMounts"]}
    config = by_kind("ConfigMap")["data"]
    assert {"MODEL_URI", "MLFLOW_TRACKING_URI"} <= set(config) and "ADMIN_TOKEN" in by_kind("Secret")["stringData"]
    settings = Settings(**{k.lower(): v for k, v in config.items() if k != "MLFLOW_TRACKING_URI"})
    probe = container["readinessProbe"]
    assert settings.drain_s > probe["periodSeconds"] * probe["failureThreshold"]  # out of the Service first
    assert pod["terminationGracePeriodSeconds"] >= settings.drain_s + settings.graceful_timeout_s + 10
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]


def test_autoscaler_and_disruption_budget_target_the_deployment():
    deployment, hpa, pdb = by_kind("Deployment"), by_kind("HorizontalPodAutoscaler"), by_kind("PodDisruptionBudget")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind("Service")["spec"]["selector"].items() <= labels.items()
