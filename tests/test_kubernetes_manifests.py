"""deploy/kubernetes/: every manifest valid against the Kubernetes API schemas (offline, ``kubernetes-validate``),
the Deployment probes, secures and sizes the pod as docs/deploy.md says, and the kustomization, rendered
(``kubectl kustomize`` where installed, else :func:`render_fields` of the fields it uses), never carries an
empty secret value: without the git-ignored ``secrets.env`` it does not render at all."""

from __future__ import annotations

import base64
import shutil
import subprocess
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
    assert {"MODEL_URI", "MLFLOW_TRACKING_URI"} <= set(config) and "ADMIN_TOKEN" in env_keys(EXAMPLE)
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


# --- the Secret: generated from the git-ignored secrets.env, never committed, never empty -------------------------

EXAMPLE = MANIFESTS / "secrets.env.example"
FILLED = {"ADMIN_TOKEN": "3f9c0e1d7a", "MLFLOW_TRACKING_USERNAME": "serving", "MLFLOW_TRACKING_PASSWORD": "pw-1",
          "INFERENCE_DB_PASSWORD": "pw-2"}


def env_keys(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file as kustomize reads them (comments and blank lines skipped)."""
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value for key, value in pairs}


def render_fields(folder: Path) -> list[dict]:
    """What ``kubectl kustomize`` renders for the fields our kustomization uses: ``resources``, and a
    ``secretGenerator`` from ``envs`` (without the name's hash suffix). Fails like kustomize on a missing file."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [doc for name in spec["resources"] for doc in yaml.safe_load_all((folder / name).read_text()) if doc]
    for generator in spec.get("secretGenerator", []):
        data: dict[str, str] = {}
        for env in generator["envs"]:
            if not (folder / env).is_file():
                raise FileNotFoundError(f"env source files: [{env}]: no such file or directory")
            data.update(env_keys(folder / env))
        labels = generator.get("options", {}).get("labels", {})
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": generator["name"], "labels": labels},
                     "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    return docs


def render(folder: Path) -> list[dict]:
    """The kustomization rendered by ``kubectl kustomize`` (``kustomize build``), or :func:`render_fields`."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return render_fields(folder)
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise FileNotFoundError(proc.stderr.strip())
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def empty_secret_values(docs: list[dict]) -> list[str]:
    """``secret/KEY`` for every Secret value that is empty (in ``data`` or ``stringData``)."""
    return [f"{doc['metadata']['name']}/{key}" for doc in docs if doc["kind"] == "Secret"
            for key, value in {**doc.get("data", {}), **doc.get("stringData", {})}.items()
            if not (base64.b64decode(value) if key in doc.get("data", {}) else value or "").strip()]


def kustomization_copy(tmp_path: Path, env: dict[str, str] | None) -> Path:
    """deploy/kubernetes copied to ``tmp_path`` without any secrets.env of this checkout, plus ``env`` as one."""
    folder = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, folder, ignore=shutil.ignore_patterns("secrets.env"))
    if env is not None:
        (folder / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return folder


def test_no_secret_is_committed_and_secrets_env_is_ignored():
    assert not [path for path, doc in documents() if doc["kind"] == "Secret"]
    assert "Secret" not in {doc["kind"] for name in yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
                            ["resources"] for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc}
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "deploy/kubernetes/secrets.env"], cwd=ROOT,
                             capture_output=True)
    assert tracked.returncode != 0, "secrets.env is committed"
    assert subprocess.run(["git", "check-ignore", "-q", "deploy/kubernetes/secrets.env"], cwd=ROOT).returncode == 0
    assert set(env_keys(EXAMPLE)) == set(FILLED)


@pytest.mark.parametrize("renderer", [render, render_fields], ids=["kubectl", "fields"])
def test_without_secrets_env_nothing_renders(tmp_path, renderer):
    if renderer is render and shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (render_fields covers the fields)")
    with pytest.raises(FileNotFoundError, match=r"secrets\.env"):
        renderer(kustomization_copy(tmp_path, None))


@pytest.mark.parametrize("renderer", [render, render_fields], ids=["kubectl", "fields"])
def test_rendered_secret_is_complete_valid_and_referenced(tmp_path, renderer):
    if renderer is render and shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (render_fields covers the fields)")
    docs = renderer(kustomization_copy(tmp_path, FILLED))
    (secret,) = [doc for doc in docs if doc["kind"] == "Secret"]
    assert empty_secret_values(docs) == []
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == FILLED
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    refs = [src["secretRef"]["name"] for src in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            if "secretRef" in src]
    assert refs == [secret["metadata"]["name"]]  # kustomize renames the reference with the hash suffix


@pytest.mark.parametrize("renderer", [render, render_fields], ids=["kubectl", "fields"])
def test_an_empty_secret_value_is_caught(tmp_path, renderer):
    if renderer is render and shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (render_fields covers the fields)")
    docs = renderer(kustomization_copy(tmp_path, {**FILLED, "INFERENCE_DB_PASSWORD": " "}))
    assert [key.split("/")[1] for key in empty_secret_values(docs)] == ["INFERENCE_DB_PASSWORD"]
    unfilled = renderer(kustomization_copy(tmp_path / "example", env_keys(EXAMPLE)))
    assert sorted(key.split("/")[1] for key in empty_secret_values(unfilled)) == [
        "ADMIN_TOKEN", "INFERENCE_DB_PASSWORD", "MLFLOW_TRACKING_PASSWORD"]


def test_secrets_env_of_this_checkout_has_no_empty_value():
    """The operator's check before applying: ``pytest tests/test_kubernetes_manifests.py -k secrets_env``."""
    if not (MANIFESTS / "secrets.env").is_file():
        pytest.skip("no deploy/kubernetes/secrets.env in this checkout (it is git-ignored)")
    assert empty_secret_values(render(MANIFESTS)) == []


def test_connections_that_cross_the_network_use_tls():
    config = by_kind("ConfigMap")["data"]
    assert config["MLFLOW_TRACKING_URI"].startswith("https://")
    assert "sslmode=verify-full" in config["INFERENCE_DB"]
