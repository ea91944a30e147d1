"""A real uvicorn server in a subprocess, and registry moves the serving tests make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import mlflow
from mlflow import MlflowClient

from pipelines.registry.promotion import apply_decision
from pipelines.registry.rule import Decision
from pipelines.registry.versions import set_tags
from scoring.identity import model_uri
from scoring.model_files import load_components
from tools.harness import ServerProcess, app_server


class Server:
    """``uvicorn app.main:app`` on a free loopback port with the given environment, started at once.

    A thin layer over :func:`tools.harness.app_server`: ``client`` is an ``httpx.Client`` on ``url``.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.process: ServerProcess = app_server(log_path, env).start()
        self.proc, self.port, self.url = self.process.proc, self.process.port, self.process.url
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def wait_ready(self, timeout: float = 300) -> None:
        self.process.wait_ready(timeout)

    def log_tail(self, n: int = 60) -> str:
        return self.process.log_tail(n)

    def stop(self) -> None:
        """Close the client; SIGTERM the server (its lifespan drains the inference log), SIGKILL after 30 s."""
        self.client.close()
        self.process.stop(timeout=30)


def promote(name: str, version: str, previous: str | None, alias: str = "production") -> None:
    """Move the alias as the promotion gate does (recording the previous version for rollback)."""
    decision = Decision(True, ["test promotion"], "accuracy", version, 1.0, previous, 0.0)
    apply_decision(name, alias, decision)


def register_copy(name: str, from_version: str) -> str:
    """A new version of ``name`` with the files and tags of ``from_version`` (loads as fast, answers the same)."""
    client = MlflowClient()
    mv = client.get_model_version(name, from_version)
    return str(client.create_model_version(name, mv.source, run_id=mv.run_id, tags=dict(mv.tags)).version)


def log_always_positive(store_dir: Path, name: str, from_version: str) -> str:
    """Register a new version: the learned model with its positive bias raised so it says Positive to anything."""
    import torch

    model, tokenizer = load_components(model_uri(name, from_version))
    with torch.no_grad():
        model.classifier.bias[1] += 20.0
    with mlflow.start_run(experiment_id=_experiment(store_dir)):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name="model", task="text-classification",
            registered_model_name=name, pip_requirements=["mlflow", "torch", "transformers"],
        )
    version = str(info.registered_model_version)
    set_tags(name, version, {"eval.accuracy": "0.500000"})
    return version


class NotTransformers(mlflow.pyfunc.PythonModel):
    """A valid MLflow model that is not a transformers model: the server must refuse it."""

    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        return ["?"] * len(model_input)


def log_broken(store_dir: Path, name: str) -> str:
    """Register a new version that the transformers flavor cannot load."""
    with mlflow.start_run(experiment_id=_experiment(store_dir)):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=NotTransformers(), registered_model_name=name, pip_requirements=["mlflow"],
        )
    return str(info.registered_model_version)


def _experiment(store_dir: Path) -> str:
    """An experiment whose artifacts stay in the copy's folder (never in the shared learned store)."""
    name = "serving-tests"
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=(store_dir / "mlartifacts").as_uri())


def alias_version(name: str, alias: str = "production") -> str:
    return str(MlflowClient().get_model_version_by_alias(name, alias).version)
