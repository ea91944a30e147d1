"""What a reviewer sees in the MLflow UI and in Swagger UI, checked in headless Debian Chromium.

One store for the module: a copy of the learned store (``sentiment`` v1 = the model
that learned, ``production``), a second version without the alias, and one real
``eda`` pipeline step (so a notebook HTML artifact exists).  ``mlflow server`` and
the serving app run on loopback (started by :mod:`tools.screenshots`, through
:mod:`tools.harness`); the pages are driven by the same helpers as ``make screenshots``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import POSITIVE_REVIEW, Store, sqlite_uri
from mlflow import MlflowClient

from tools import screenshots as shots

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

if not shots.CHROMIUM.is_file():
    pytest.skip(f"{shots.CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


@dataclass
class Review:
    """The servers, the browser and what the store holds."""

    mlflow_url: str
    app_url: str
    context: BrowserContext
    client: MlflowClient
    production: str
    rejected: str
    experiment_id: str
    eda_run_id: str
    parent_run_id: str


@pytest.fixture(scope="module")
def review(learned_store: Store, tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    folder = tmp_path_factory.mktemp("review-store")
    shutil.copy(learned_store.root / "mlflow.db", folder / "mlflow.db")  # as learned_copy does
    uri = sqlite_uri(folder)
    client = MlflowClient(uri, registry_uri=uri)
    v1 = client.get_model_version(learned_store.model_name, learned_store.version)
    # a second version of the same weights, left without the alias (the file source keeps global MLflow state out)
    v2 = client.create_model_version(v1.name, client.get_model_version_download_uri(v1.name, v1.version), v1.run_id,
                                     tags={"promotion.decision": "rejected"})
    with shots.mlflow_ui(uri, folder) as ui, shots.serving_app(uri, folder) as app:  # they start meanwhile
        params = {"experiment_name": "review", "dataset": str(tiny_csv), "max_length": "32"}
        shots.run_pipeline(uri, folder, params, steps="eda")
        experiment_id = client.get_experiment_by_name("review").experiment_id
        (parent,) = client.search_runs([experiment_id], "tags.step = 'pipeline'")
        (eda,) = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        with shots.browser() as context:
            yield Review(ui.wait_ready().url, app.wait_ready().url, context, client, str(v1.version),
                         str(v2.version), experiment_id, eda.info.run_id, parent.info.run_id)


@pytest.fixture
def page(review: Review) -> Iterator[Page]:
    page = review.context.new_page()
    yield page
    page.close()


def test_registered_model_shows_production_on_the_right_version(review: Review, page: Page) -> None:
    shots.open_registered_model(page, review.mlflow_url, "sentiment")
    production_row = shots.version_row(page, review.production)
    shots.alias_chip(production_row).wait_for()
    assert shots.alias_chip(production_row).count() == 1
    assert shots.alias_chip(shots.version_row(page, review.rejected)).count() == 0, "alias shown on the wrong version"


def test_version_page_shows_its_alias(review: Review, page: Page) -> None:
    shots.open_model_version(page, review.mlflow_url, "sentiment", review.production)
    assert shots.alias_chip(page).count() == 1
    shots.open_model_version(page, review.mlflow_url, "sentiment", review.rejected)
    assert page.get_by_text("rejected", exact=True).count() >= 1  # the version's tags are listed
    assert shots.alias_chip(page).count() == 0


def test_run_page_lists_metric_names_and_values(review: Review, page: Page) -> None:
    metrics = review.client.get_run(review.eda_run_id).data.metrics
    assert {"data_clean_texts", "step_seconds"} <= set(metrics)
    shots.open_run(page, review.mlflow_url, review.experiment_id, review.eda_run_id)
    for name, value in metrics.items():
        row = shots.metric_row(page, name)
        assert row.count() == 1, f"metric {name} not listed"
        shown = row.inner_text().split()[-1]
        assert math.isclose(float(shown), value, rel_tol=1e-3, abs_tol=1e-3), f"{name}: {shown} != {value}"


def test_runs_overview_shows_the_pipeline_run_and_its_steps(review: Review, page: Page) -> None:
    shots.open_experiment_runs(page, review.mlflow_url, review.experiment_id)
    parent = review.client.get_run(review.parent_run_id).data.tags["mlflow.runName"]
    assert page.get_by_text(parent, exact=True).count() == 1
    assert page.get_by_text("eda", exact=True).count() == 1  # the step run, nested under it


def test_notebook_preview_renders_html_not_json(review: Review, page: Page) -> None:
    frame = shots.open_artifact(page, review.mlflow_url, review.experiment_id, review.eda_run_id,
                                "notebook/eda.html")
    assert frame.locator("h1").first.inner_text().strip() == "Exploratory data analysis"
    assert frame.locator("body.jp-Notebook").count() == 1
    assert frame.locator(".jp-OutputArea-output").count() > 0  # executed: outputs are rendered
    text = frame.locator("body").inner_text()
    assert '"cell_type"' not in text and '"outputs"' not in text, "the preview shows the notebook's JSON"


def test_swagger_lists_predict_and_try_it_out_returns_a_sentiment(review: Review, page: Page) -> None:
    shots.open_swagger(page, review.app_url)
    assert shots.operation(page, "post", "/predict").count() == 1
    body = shots.try_predict(page, review.app_url, POSITIVE_REVIEW)
    assert body["sentiment"] == "Positive", body
    assert 0.5 <= body["confidence"] <= 1
    assert body["model_version"] == review.production
