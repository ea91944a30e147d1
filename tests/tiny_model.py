"""A tiny registered transformers model for tests that need a real model but not a good one.

:func:`register_tiny_model` logs a two-layer, 32-wide BERT classifier with random weights and the embedded
model's tokenizer, the way the train step logs a model (``mlflow.transformers``, a text-classification
pipeline), registers it and points ``production`` at it: seconds on a CPU, no training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

from pipelines.data.embedded import embedded_model_dir
from tools.model_store import sqlite_uri


def register_tiny_model(artifact_location: str | None = None, name: str = "sentiment",
                        alias: str = "production") -> str:
    """Log and register a tiny random classifier in the current tracking store (artifacts under
    ``artifact_location``, default: the store's), move ``alias`` to it; its version."""
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    model = BertForSequenceClassification(config).eval()
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    experiment = mlflow.get_experiment_by_name("tiny") or mlflow.get_experiment(
        mlflow.create_experiment("tiny", artifact_location=artifact_location))
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        info = mlflow.transformers.log_model(transformers_model=pipe, name="model", task="text-classification",
                                             registered_model_name=name, pip_requirements=["mlflow"])
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, alias, version)
    return version


@contextmanager
def tiny_store(folder: Path) -> Iterator[tuple[Path, str]]:
    """A SQLite store in ``folder`` whose sentiment@production is the tiny model, as this process's tracking store
    while in use; its folder and tracking URI."""
    uri = sqlite_uri(folder)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    register_tiny_model((folder / "mlartifacts").as_uri())
    try:
        yield folder, uri
    finally:
        mlflow.set_tracking_uri(previous)
