"""A real uvicorn server in a subprocess, and registry moves the serving tests make."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
from mlflow import MlflowClient

from pipelines import registry

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``uvicorn app.main:app`` on a free loopback port with the given environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONUNBUFFERED": "1", **env}
        full_env.pop("MLFLOW_RUN_ID", None)
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.client.get("/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def wait_for(check: Any, timeout: float = 120, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; return it (or fail with the last value)."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def promote(name: str, version: str, previous: str | None, alias: str = "production") -> None:
    """Move the alias as the promotion gate does (recording the previous version for rollback)."""
    decision = registry.Decision(True, ["test promotion"], "accuracy", version, 1.0, previous, 0.0)
    registry.apply_decision(name, alias, decision)


def log_always_positive(store_dir: Path, name: str, from_version: str) -> str:
    """Register a new version: the learned model with its positive bias raised so it says Positive to anything."""
    import torch

    model, tokenizer = registry.load_components(registry.model_uri(name, from_version))
    with torch.no_grad():
        model.classifier.bias[1] += 20.0
    with mlflow.start_run(experiment_id=_experiment(store_dir)):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name="model", task="text-classification",
            registered_model_name=name, pip_requirements=["mlflow", "torch", "transformers"],
        )
    version = str(info.registered_model_version)
    registry.set_tags(name, version, {"eval.accuracy": "0.500000"})
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
