"""Configuration: defaults in one place, overrides validated with the parameter named."""

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

from pipelines.config import ConfigError, PipelineConfig, build_config, defaults
from pipelines.steps import RUNNER_PARAMETERS

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_defaults_are_the_embedded_assets():
    d = defaults()
    assert d["model_name"] == "embedded:all-MiniLM-L6-v2"
    assert d["dataset"] == "embedded:rotten_tomatoes"
    assert d["registered_model_name"] == "sentiment" and d["alias"] == "production"


def test_overrides_are_coerced_from_cli_strings(tmp_path):
    cfg = build_config({"epochs": "2", "learning_rate": "3e-5", "tune_threshold": "false"})
    assert (cfg.epochs, cfg.learning_rate, cfg.tune_threshold) == (2, 3e-5, False)
    file = tmp_path / "c.yaml"
    file.write_text("epochs: 3\nbatch_size: 16\n")
    cfg = build_config({"epochs": "5"}, file)
    assert (cfg.epochs, cfg.batch_size) == (5, 16)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"epochs": "0"}, "epochs"),
        ({"epochs": "two"}, "epochs"),
        ({"learning_rate": "-1"}, "learning_rate"),
        ({"promotion_metric": "loss"}, "promotion_metric"),
        ({"padding": "sometimes"}, "padding"),
        ({"promotion_backend": "tensorrt"}, "promotion_backend"),
        ({"epoch": "2"}, "epoch"),
    ],
)
def test_bad_values_name_the_parameter(overrides, named):
    with pytest.raises(ConfigError, match=named):
        build_config(overrides)


def test_missing_config_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="config file"):
        build_config({}, tmp_path / "nope.yaml")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_match_config_defaults(notebook):
    """Every notebook parameter is a pipeline parameter with the same default (or a runner parameter)."""
    params = papermill.inspect_notebook(str(notebook))
    assert set(RUNNER_PARAMETERS) <= set(params), "the runner needs mlflow_run_id and result_path"
    cell = next(c for c in nbformat.read(notebook, 4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == set(params), f"papermill cannot read {sorted(assigned - set(params))} (two '=' on a line?)"
    fields = PipelineConfig.model_fields
    d = defaults()
    for name, spec in params.items():
        if name in RUNNER_PARAMETERS:
            continue
        assert name in fields, f"{notebook.name}: parameter {name} is not in pipelines.config"
        assert eval(spec["default"]) == d[name], f"{notebook.name}: {name} default differs from pipelines.config"


@pytest.mark.parametrize("config_file", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_config_files_are_valid(config_file):
    assert build_config({}, config_file)
