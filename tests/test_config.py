"""Configuration: defaults in one place, overrides validated with the parameter named."""

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

from pipelines import cli
from pipelines.config import SECTIONS, ConfigError, DataSection, PipelineConfig, build_config, defaults, expand
from pipelines.flow.notebook import RUNNER_PARAMETERS
from pipelines.flow.runner import NOTEBOOKS_DIR, run_pipeline
from pipelines.flow.steps import FLOWS, STEPS, check_parameters, steps_of
from scoring.config import ScoringConfig

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


def test_sections_partition_the_flat_config():
    names = [n for section in SECTIONS.values() for n in section.model_fields]
    assert len(names) == len(set(names)), "a parameter name belongs to one section only"
    assert set(names) == set(PipelineConfig.model_fields)
    cfg = build_config({"epochs": "2", "dataset": "reviews.csv", "long_text_strategy": "truncate"})
    assert isinstance(cfg.data, DataSection) and cfg.data.dataset == "reviews.csv"
    assert cfg.train.epochs == 2 and cfg.scoring == ScoringConfig(long_text_strategy="truncate")
    assert set(cfg.model_fields_set) == {"epochs", "dataset", "long_text_strategy"}  # what the user gave


def test_every_notebook_is_a_step_of_the_table():
    assert {nb.stem for nb in NOTEBOOKS} == set(STEPS)
    assert {s for flow in FLOWS.values() for s in flow} == set(STEPS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_are_what_its_step_takes(notebook):
    """The parameters cell declares exactly the step's parameters (pipelines/flow/steps.py), with config defaults."""
    params = papermill.inspect_notebook(str(notebook))
    cell = next(c for c in nbformat.read(notebook, 4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == set(params), f"papermill cannot read {sorted(assigned - set(params))} (two '=' on a line?)"
    step = STEPS[notebook.stem]
    assert set(params) == set(step.parameters) | set(RUNNER_PARAMETERS), (
        f"missing {sorted(set(step.parameters) - set(params))}, not taken {sorted(set(params) - set(step.parameters))}")
    d = defaults()
    for name in step.parameters:
        assert eval(params[name]["default"]) == d[name], f"{notebook.name}: {name} default differs from the config"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_do_not_shadow_its_parameters(notebook):
    """``notebook.config(globals())`` reads every config name back from the notebook's globals: an import of the
    same name would win (the evaluate notebook once imported a module named like the ``aggregation`` parameter)."""
    imported = {alias.asname or alias.name.split(".")[0]
                for cell in nbformat.read(notebook, 4).cells if cell.cell_type == "code"
                for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names}
    assert not imported & (set(papermill.inspect_notebook(str(notebook))) | set(PipelineConfig.model_fields))


def test_a_step_that_loads_data_takes_every_data_parameter():
    """So no data parameter is dropped on the way (the evaluate step once lacked include_feedback)."""
    for step in STEPS.values():
        if "dataset" in step.parameters:
            assert set(DataSection.model_fields) <= set(step.parameters), step.name


def test_a_parameter_no_step_of_the_run_takes_is_refused():
    cfg = build_config({"epochs": "2", "min_delta": "0.01"})
    with pytest.raises(ConfigError, match=r"epochs, min_delta: not taken .*\(eda\).*epochs is taken by train"):
        check_parameters(cfg, steps_of(["eda"]))
    check_parameters(cfg, steps_of(FLOWS["retrain"]))  # train takes epochs, promote takes min_delta
    with pytest.raises(ConfigError, match="epochs is taken by train"):
        check_parameters(build_config({"epochs": "2"}), steps_of(FLOWS["monitor"]))
    with pytest.raises(ConfigError, match="unknown step"):
        steps_of(["deploy"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rollback", "-p", "epochs", "2"], "parameter(s) epochs: not taken by `rollback`"),
        (["history", "-p", "alias", "staging"], "parameter(s) alias: not taken by `history`"),
        (["run", "--steps", "eda", "-p", "min_delta", "0.1"], "min_delta: not taken by the step(s) run here (eda)"),
        (["monitor", "-p", "learning_rate", "1e-4"], "learning_rate is taken by train"),
    ],
)
def test_cli_refuses_parameters_its_command_does_not_take(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_expand_replaces_sections_by_their_fields():
    assert expand(["scoring", "seed"]) == (*ScoringConfig.model_fields, "seed")
    with pytest.raises(KeyError, match="neither a config section"):
        expand(["trainer"])


@pytest.mark.parametrize("config_file", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_config_files_are_valid(config_file):
    assert build_config({}, config_file)


def test_a_notebook_that_drops_a_parameter_is_refused_before_any_step_runs(tmp_path):
    """The runner never drops a parameter silently: the evaluate notebook without include_feedback is refused."""
    for nb in NOTEBOOKS_DIR.glob("*.ipynb"):
        (tmp_path / nb.name).write_bytes(nb.read_bytes())
    evaluate = nbformat.read(tmp_path / "evaluate.ipynb", 4)
    cell = next(c for c in evaluate.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("include_feedback"))
    nbformat.write(evaluate, tmp_path / "evaluate.ipynb")
    with pytest.raises(ConfigError, match=r"evaluate.ipynb does not declare .* missing \['include_feedback'\]"):
        run_pipeline(build_config({}), ("eda", "evaluate"), output_dir=tmp_path / "out", notebooks_dir=tmp_path)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
