"""Batch scoring on Spark (``python -m pipelines spark-predict``): local[2] agrees with the file path.

One local[2] session for the module (``spark-predict`` reuses an active session); a few hundred rows with
bad rows mixed in. Skipped only where pyspark or Java is missing (CI installs both: .ci/run, make install).
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from batch_helpers import answers, cli, review_cells, write_inputs

from pipelines.batch import spark as batch_spark
from pipelines.config import ConfigError

try:  # pyspark installed and Java found
    batch_spark.require_spark()
    NO_SPARK = ""
except ConfigError as err:
    NO_SPARK = str(err)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(NO_SPARK), reason=NO_SPARK or "-")]


@pytest.fixture(scope="module")
def store(learned_tracking):
    return learned_tracking


@pytest.fixture(scope="module")
def spark():
    with batch_spark.session("local[2]", ui=False, chunk_rows=64) as session:
        yield session


@pytest.fixture(scope="module")
def parquet(rt_frame, tmp_path_factory):
    cells, _ = review_cells(rt_frame["text"].sample(300, random_state=5).tolist(), n=200)
    return write_inputs(tmp_path_factory.mktemp("spark-inputs"), cells)["parquet"]


def test_spark_local2_scores_a_parquet_file_as_the_file_path_does(spark, store, parquet, tmp_path):
    out = tmp_path / "spark-predictions"
    code, summary, err = cli("spark-predict", "-i", parquet, "-o", out, "--keep-columns", "id", "--master",
                             "local[2]", "--partitions", "4")
    assert code == 0, err
    local = tmp_path / "local.parquet"
    code, local_summary, err = cli("predict", "-i", parquet, "-o", local, "--keep-columns", "id", "--no-progress")
    assert code == 0, err
    on_spark, on_file = pd.read_parquet(out), pd.read_parquet(local)
    assert sorted(on_spark["row"]) == list(range(len(on_file)))  # every row once, by its index in the file
    assert answers(on_spark) == answers(on_file)
    assert on_spark.sort_values("row")["id"].tolist() == on_file["id"].tolist()
    assert set(on_spark["model_version"]) == {store.version}
    for key in ("rows", "scored", "errors", "error_kinds", "model", "scoring"):
        assert summary[key] == local_summary[key], key
    assert summary["errors"] > 0 and summary["tasks"] == 4
    meta = json.loads((out / batch_spark.METADATA_FILE).read_text())
    assert meta["model"]["source"] == f"models:/{store.model_name}/{store.version}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.parquet", "spark-predictions"]  # no .partial


def test_spark_predict_refuses_bad_input_before_spark_works(spark, store, parquet, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    cases = [
        (["-i", parquet, "-o", tmp_path / "o", "--text-column", "review"], "--text-column: "),
        (["-i", tmp_path / "nope.parquet", "-o", tmp_path / "o"], "--input: "),
        (["-i", parquet, "-o", taken], "--output: "),
        (["-i", parquet, "-o", tmp_path / "o", "--model-uri", "models:/nope/9"], "--model-uri: "),
    ]
    for args, message in cases:
        code, summary, err = cli("spark-predict", *args, "--master", "local[2]")
        assert (code, summary) == (2, None), (args, err)
        assert err.splitlines()[-1].startswith("error: ") and message in err, (args, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
    shutil.rmtree(taken)
