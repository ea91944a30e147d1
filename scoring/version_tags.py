"""The tags on a registered model version that more than one part of the project reads.

* ``eval.<metric>``, ``eval.test_digest``, ``eval.run_id``, ``eval.time``: the test
  scores of PyTorch (the reference), written by the evaluate step;
  ``eval.<backend>.<metric>`` … the same for a serving runtime (``eval.onnx-int8.accuracy``).
  The gate compares them, the server reports them (``GET /model``).
* ``onnx.*``: where the ONNX export logged with the version lies (written at training
  time by :mod:`pipelines.train.onnx_logging`, read by :mod:`scoring.onnx_runtime`
  and the folder export).

The promotion and rollback tags are written and read by :mod:`pipelines.registry` alone.
"""

from __future__ import annotations

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc")

ONNX_RUN_ID = "onnx.run_id"  # the run holding the files
ONNX_PATHS = {False: "onnx.path", True: "onnx.int8_path"}  # artifact path in that run: fp32, int8


def eval_prefix(backend: str = "torch") -> str:
    """Tag prefix of a version's test metrics: ``eval.`` for PyTorch (the reference), else ``eval.<backend>.``."""
    return "eval." if backend == "torch" else f"eval.{backend}."


def recorded_metrics(tags: dict[str, str], backend: str = "torch") -> dict[str, float]:
    """The ``eval.<metric>`` tags of a version (those present, of ``backend``), as numbers."""
    prefix = eval_prefix(backend)
    return {m: float(tags[f"{prefix}{m}"]) for m in METRIC_NAMES if f"{prefix}{m}" in tags}
