"""Quality: the model's test metrics next to the majority and TF-IDF + LR baselines on the same split,
and the test accuracy of every serving variant (PyTorch, ONNX fp32, ONNX int8).

The model is the newest version trained with the default parameters on the full data (the
"full default run"); if the store has none, the production version, and the table says so.

    python -m bench.quality [--tracking-uri URI] [--version N]   # default: $BENCH_TRACKING_URI, see bench.common
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import common

# parameters that change what is trained (a run with all of them at their defaults is a "full default run")
TRAINING_PARAMS = ("dataset", "val_size", "test_size", "max_train_samples", "include_feedback", "model_name",
                   "epochs", "learning_rate", "batch_size", "max_length", "warmup_ratio", "weight_decay",
                   "early_stopping_patience", "tune_threshold", "padding", "seed", "long_text_strategy",
                   "window_stride", "max_windows")


def non_default_params(params: dict[str, str]) -> dict[str, str] | None:
    """Training parameters of a run that differ from the defaults (None if the run logged none)."""
    from pipelines.config import defaults

    if not params:
        return None
    base = defaults()
    return {k: params.get(k, "?") for k in TRAINING_PARAMS if str(base[k]) != params.get(k, "?")}


def pick_version(name: str, version: str = "") -> tuple[Any, str]:
    """The version to report and why it was chosen."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if version:
        return client.get_model_version(name, version), f"v{version} as asked"
    production = client.get_model_version_by_alias(name, common.ALIAS)
    for mv in client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]):
        params = client.get_run(mv.run_id).data.params if mv.run_id else {}
        if non_default_params(params) == {}:
            where = "the production version" if mv.version == production.version else "not production"
            return mv, f"newest full default run ({where})"
    params = client.get_run(production.run_id).data.params if production.run_id else {}
    diff = non_default_params(params)
    why = "params not logged" if diff is None else ", ".join(f"{k}={v}" for k, v in diff.items())
    return production, f"NO full default run in this store: production v{production.version} ({why})"


def variant_metrics(model_uri: str, splits: Any) -> list[dict[str, Any]]:
    """Test metrics, scoring time and agreement with PyTorch of each backend (as the evaluate step logs them)."""
    from pipelines.evaluate.testset import backend_variants

    table = backend_variants(model_uri, splits.test, None, ("torch", "onnx", "onnx-int8"))
    return table.reset_index(names="variant").to_dict("records")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="", help="default: $BENCH_TRACKING_URI, see bench.common")
    parser.add_argument("--version", default="", help="a version instead of the newest full default run")
    args = parser.parse_args(argv)
    started, load_start = time.perf_counter(), common.loadavg()
    common.use_store(args.tracking_uri or common.tracking_uri())

    from mlflow import MlflowClient

    from pipelines.config import build_config
    from pipelines.data.split import load_splits
    from pipelines.evaluate.baselines import baselines
    from pipelines.registry import versions

    mv, why = pick_version(common.MODEL_NAME, args.version)
    uri = f"models:/{mv.name}/{mv.version}"
    params = MlflowClient().get_run(mv.run_id).data.params if mv.run_id else {}
    n_train = int(params.get("max_train_samples", "0") or 0)
    splits = load_splits(build_config({"max_train_samples": n_train}).data)
    print(f"{mv.name} v{mv.version}: {why}; test split {splits.digest} ({len(splits.test)} texts), "
          f"baselines trained on {len(splits.train)} texts", flush=True)
    common.ensure_onnx_logged(uri)
    variants = variant_metrics(uri, splits)
    recorded = versions.eval_metrics(mv, splits.digest)
    model_row = {"model": f"transformer v{mv.version}", **(recorded or {k: variants[0][k] for k in
                                                                       ("accuracy", "precision", "recall", "f1",
                                                                        "roc_auc")})}
    base = baselines(splits)
    rows = [model_row, *({"model": name, **row.to_dict()} for name, row in base.iterrows())]
    if splits.digest == mv.tags.get("eval.test_digest"):
        versions.set_tags(mv.name, mv.version, {f"onnx.{'int8_' if v['variant'] == 'onnx-int8' else ''}test_accuracy":
                                                f"{v['accuracy']:.6f}" for v in variants[1:]})
    cols = ["model", "accuracy", "precision", "recall", "f1", "roc_auc"]
    print(common.table(rows, cols, 4))
    print(common.table(variants, ["variant", "accuracy", "roc_auc", "label_agreement_with_torch",
                                  "max_abs_dp_vs_torch", "scoring_seconds", "texts_per_s"], 4))
    common.write_results("quality", {
        "model_version": mv.version, "chosen_because": why, "run_params": {k: params.get(k) for k in TRAINING_PARAMS},
        "test_digest": splits.digest, "test_texts": len(splits.test), "baseline_train_texts": len(splits.train),
        "metrics_source": "eval.* tags of the version" if recorded else "scored now (PyTorch)",
        "table": rows, "variants": variants,
    }, started, load_start)


if __name__ == "__main__":
    main()
