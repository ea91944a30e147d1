"""Screenshots of what a reviewer looks at: the MLflow UI, the serving app's Swagger UI, JupyterLab.

``make screenshots`` runs this file: it builds a throw-away MLflow store (two tiny
pipeline runs on real Rotten Tomatoes snippets), starts ``mlflow server``, the
serving app and ``jupyter lab`` on free loopback ports (:mod:`tools.harness`) and
captures each page with headless Debian Chromium driven by Playwright into
``screenshots/``.  ``tests/test_review_browser.py`` starts the same servers
(:func:`mlflow_ui`, :func:`serving_app`), drives the same pages through the helpers
below and asserts what they show.

The browser only ever reaches 127.0.0.1: every other request is aborted, except
Swagger UI's CDN assets, which are answered from the ``swagger-ui-bundle-v2``
package when the app's ``/docs`` page asks for them.  See docs/review.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools import harness
from tools.harness import ROOT, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, FrameLocator, Locator, Page, Route

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
VIEWPORT = {"width": 1440, "height": 900}
TIMEOUT_MS = 120_000  # the UI's first requests are slow on a busy 2-core machine
SWAGGER_CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "data:", "blob:", "about:")
# MLflow UI preferences (localStorage): the "Model training" sidebar, the assistant panel closed
MLFLOW_UI_STORAGE = {
    "mlflow.workflowType_v1": '"machine_learning"',
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}
SHOTS = (
    "01-registered-model", "02-model-version", "03-run-metrics",
    "04-experiment-runs", "05-notebook-preview", "06-swagger-ui", "07-swagger-predict", "08-jupyterlab",
)
EXAMPLE_REVIEW = "A warm, funny and beautifully acted film. I would happily watch it again."


# -- servers (tools.harness: each a ServerProcess; ``with`` starts and stops it) ----------------
def sqlite_path(tracking_uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI."""
    if not tracking_uri.startswith("sqlite:///"):
        raise ValueError(f"expected a sqlite:/// tracking URI, got {tracking_uri!r}")
    return Path(tracking_uri.removeprefix("sqlite:///"))


def mlflow_ui(tracking_uri: str, log_dir: Path) -> ServerProcess:
    """``mlflow server`` on the store (artifacts beside its database) on a free loopback port."""
    artifacts = sqlite_path(tracking_uri).parent / "mlartifacts"
    return harness.mlflow_server(tracking_uri, artifacts, log_dir / "mlflow-server.log")


def serving_app(tracking_uri: str, workdir: Path, model_uri: str = "models:/sentiment@production",
                ) -> ServerProcess:
    """The serving app on a free loopback port, serving ``model_uri`` from the store, its state in ``workdir``."""
    port = harness.free_port()
    env = {
        "MODEL_URI": model_uri, "MLFLOW_TRACKING_URI": tracking_uri, "PORT": str(port), "RELOAD_INTERVAL_S": "0",
        "INFERENCE_DB": str(workdir / "inference.db"), "SENTIMENT_MLOPS_HOME": str(workdir),
    }
    return harness.app_server(workdir / "app.log", env, port)


# -- what to show --------------------------------------------------------------------------
@dataclass(frozen=True)
class Targets:
    """The store's objects the pages show."""

    model_name: str
    production_version: str
    experiment_id: str
    metrics_run_id: str
    notebook_run_id: str
    notebook_artifact: str  # e.g. notebook/evaluate.html


def find_targets(tracking_uri: str, model_name: str = "sentiment", experiment_name: str = "sentiment",
                 metrics_step: str = "evaluate", notebook_step: str = "evaluate", alias: str = "production") -> Targets:
    """Look up the aliased version and the newest step runs (preferring the aliased version's) in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    production = client.get_model_version_by_alias(model_name, alias)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise LookupError(f"no experiment {experiment_name!r} in {tracking_uri}")

    def step_run(step: str) -> str:
        runs = client.search_runs([experiment.experiment_id], f"tags.step = '{step}'",
                                  order_by=["attributes.start_time DESC"])
        if not runs:
            raise LookupError(f"no {step!r} run in experiment {experiment_name!r}")
        same = [r for r in runs if r.data.tags.get("model_version") == str(production.version)]
        return (same or runs)[0].info.run_id

    return Targets(model_name, str(production.version), experiment.experiment_id,
                   step_run(metrics_step), step_run(notebook_step), f"notebook/{notebook_step}.html")


def tiny_dataset(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """``rows`` real Rotten Tomatoes snippets (text, label) as a CSV."""
    from pipelines.data.sources import clean, load_rotten_tomatoes

    path.parent.mkdir(parents=True, exist_ok=True)
    clean(load_rotten_tomatoes()).sample(rows, random_state=seed).to_csv(path, index=False)
    return path


def run_pipeline(tracking_uri: str, workdir: Path, params: dict[str, str], steps: str = "", name: str = "pipeline",
                 ) -> None:
    """``python -m pipelines run`` against the store (output and log in ``workdir``); raise if it fails."""
    cmd = [sys.executable, "-m", "pipelines", "run", "--output-dir", str(workdir / "output" / name)]
    cmd += ["--steps", steps] if steps else []
    for key, value in {"tracking_uri": tracking_uri, **params}.items():
        cmd += ["-p", key, value]
    print(f"[screenshots] {' '.join(cmd[1:])}", flush=True)
    env = harness.child_env({"SENTIMENT_MLOPS_HOME": str(workdir), "MLFLOW_TRACKING_URI": tracking_uri})
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"{name} failed ({code}):\n{log.read_text()[-3000:]}")


def build_demo_store(root: Path, rows: int = 400, runs: Sequence[dict[str, str]] = ({"epochs": "1"}, {"epochs": "2"}),
                     ) -> str:
    """Run the whole pipeline once per entry of ``runs`` on a tiny dataset into a new store in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    dataset = tiny_dataset(root / "reviews.csv", rows)
    for i, overrides in enumerate(runs, 1):
        params = {"dataset": str(dataset), "max_length": "32", "min_metric": "0", **overrides}
        run_pipeline(uri, root, params, name=f"pipeline-run{i}")
    return uri


# -- the browser ---------------------------------------------------------------------------
def _route(route: Route) -> None:
    """Loopback passes; Swagger UI's CDN files come from the local bundle; anything else is aborted."""
    url = route.request.url
    if url.startswith(LOOPBACK):
        route.continue_()
        return
    if url.startswith(SWAGGER_CDN):
        try:
            from swagger_ui_bundle import swagger_ui_path
        except ImportError:
            route.abort()
            return
        local = Path(swagger_ui_path) / url.removeprefix(SWAGGER_CDN).split("?")[0]
        if local.is_file():
            route.fulfill(path=local)
            return
    route.abort()


@contextmanager
def browser(viewport: dict[str, int] | None = None) -> Iterator[BrowserContext]:
    """A headless Debian Chromium context (1440x900, scale 1) that reaches only loopback."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install chromium")
    storage = json.dumps(MLFLOW_UI_STORAGE)
    init = f"try {{ for (const [k, v] of Object.entries({storage})) localStorage.setItem(k, v); }} catch (e) {{}}"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            context = chromium.new_context(viewport=viewport or VIEWPORT, device_scale_factor=1, locale="en-US",
                                           timezone_id="UTC")
            context.set_default_timeout(TIMEOUT_MS)
            context.add_init_script(init)
            context.route("**/*", _route)
            yield context
        finally:
            chromium.close()


def open_registered_model(page: Page, mlflow_url: str, model_name: str) -> None:
    """The registered model's page, its versions table loaded."""
    page.goto(f"{mlflow_url}/#/models/{model_name}")
    page.get_by_role("link", name=re.compile(r"^Version \d+$")).first.wait_for()


def version_row(page: Page, version: str) -> Locator:
    """The versions table's row of one version."""
    link = page.get_by_role("link", name=f"Version {version}", exact=True)
    return page.locator("tr, [role=row]").filter(has=link)


def alias_chip(scope: Page | Locator, alias: str = "production") -> Locator:
    """The ``@ alias`` chip(s) inside ``scope`` (a version row, or a version's page)."""
    return scope.get_by_text(re.compile(rf"^@\s*{re.escape(alias)}$"))


def open_model_version(page: Page, mlflow_url: str, model_name: str, version: str) -> None:
    """A version's details page, its aliases and tags loaded."""
    page.goto(f"{mlflow_url}/#/models/{model_name}/versions/{version}")
    page.get_by_role("heading", name=f"Version {version}").wait_for()
    page.get_by_text("Aliases").first.wait_for()


def open_run(page: Page, mlflow_url: str, experiment_id: str, run_id: str) -> None:
    """A run's overview page, its metrics table loaded."""
    page.goto(f"{mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}")
    page.get_by_text("Metrics (").first.wait_for()


def metric_row(page: Page, name: str) -> Locator:
    """The run page's metrics-table row of one metric."""
    return page.locator("tr, [role=row]").filter(has=page.get_by_text(name, exact=True))


def open_experiment_runs(page: Page, mlflow_url: str, experiment_id: str, expand: bool = True,
                         first_step: str = "eda") -> None:
    """The experiment's runs table; with ``expand`` each pipeline run shows its step runs (``first_step`` too)."""
    page.goto(f"{mlflow_url}/#/experiments/{experiment_id}/runs")
    page.get_by_text("pipeline-").first.wait_for()
    if expand:
        button = "button[data-component-id*='runnamecellrenderer']"  # the +/- beside a parent run's name
        parents = page.locator("[role=row][row-id]").filter(has=page.locator(button))
        for row_id in parents.evaluate_all("rows => rows.map(r => r.getAttribute('row-id'))"):
            page.locator(f"[role=row][row-id='{row_id}'] {button}").click()
        page.get_by_text(first_step, exact=True).first.wait_for()
        unfocus(page)


def unfocus(page: Page) -> None:
    """No hover or focus ring in the picture."""
    page.mouse.move(VIEWPORT["width"] - 1, VIEWPORT["height"] // 2)
    page.evaluate("document.activeElement && document.activeElement.blur()")


def open_artifact(page: Page, mlflow_url: str, experiment_id: str, run_id: str, path: str) -> FrameLocator:
    """A run's artifact in the artifact viewer; returns the HTML preview's frame."""
    page.goto(f"{mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}")
    page.locator("iframe").first.wait_for()
    frame = page.frame_locator("iframe").first
    frame.locator("h1").first.wait_for()
    return frame


def open_swagger(page: Page, app_url: str) -> None:
    """The app's Swagger UI, its operations listed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{app_url}/docs")
    try:
        page.locator(".opblock-summary-path").first.wait_for()
    except PlaywrightTimeout as err:
        raise RuntimeError("Swagger UI did not render: its files (asked from cdn.jsdelivr.net) come from the "
                           "swagger-ui-bundle-v2 package here (pip install -e '.[dev]')") from err


def operation(page: Page, method: str, path: str) -> Locator:
    """One operation's block in Swagger UI (exact path)."""
    paths = page.locator(".opblock-summary-path").filter(has_text=re.compile(rf"^{re.escape(path)}$"))
    return page.locator(f".opblock-{method.lower()}").filter(has=paths)


def try_predict(page: Page, app_url: str, text: str) -> dict[str, Any]:
    """Swagger UI: ``POST /predict`` → "Try it out" with ``text`` → "Execute"; returns the response body shown."""
    open_swagger(page, app_url)
    block = operation(page, "post", "/predict")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.locator("textarea.body-param__text").fill(json.dumps({"text": text}, indent=2))
    block.get_by_role("button", name="Execute").click()
    body = block.locator(".live-responses-table .response-col_description pre").first
    body.wait_for()
    body.evaluate("e => e.scrollIntoView({block: 'center'})")
    return json.loads(body.inner_text())


def open_lab_notebook(page: Page, lab_url: str, token: str, name: str, heading: str = "") -> None:
    """A notebook open in JupyterLab (``lab_url``, ``token``), its kernel idle; scrolled to ``heading`` if given."""
    page.goto(f"{lab_url}/lab/tree/{name}?token={token}")
    page.locator(".jp-Notebook h1").first.wait_for()
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for()  # the status bar: kernel started
    if heading:
        page.locator(".jp-Notebook h2", has_text=heading).first.evaluate("h => h.scrollIntoView({block: 'start'})")


# -- screenshots ---------------------------------------------------------------------------
def capture(context: BrowserContext, mlflow_url: str, app_url: str, targets: Targets, out_dir: Path,
            lab_url: str = "", lab_token: str = "", settle_s: float = 2.0) -> list[Path]:
    """Take the screenshots of SHOTS into ``out_dir`` (the last one if JupyterLab at ``lab_url`` serves
    evaluate.ipynb)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = context.new_page()
    shots: list[Path] = []

    def shot(name: str) -> None:
        page.wait_for_timeout(settle_s * 1000)  # let charts and fonts settle
        path = out_dir / f"{name}.png"
        page.screenshot(path=path)
        shots.append(path)
        print(f"[screenshots] {path}", flush=True)

    # the version rows list every tag: a taller page shows both versions
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1600})
    open_registered_model(page, mlflow_url, targets.model_name)
    alias_chip(version_row(page, targets.production_version)).wait_for()
    shot(SHOTS[0])
    page.set_viewport_size(VIEWPORT)
    open_model_version(page, mlflow_url, targets.model_name, targets.production_version)
    shot(SHOTS[1])
    open_run(page, mlflow_url, targets.experiment_id, targets.metrics_run_id)
    shot(SHOTS[2])
    open_experiment_runs(page, mlflow_url, targets.experiment_id)
    shot(SHOTS[3])
    frame = open_artifact(page, mlflow_url, targets.experiment_id, targets.notebook_run_id, targets.notebook_artifact)
    frame.locator("h2").first.evaluate("h => h.scrollIntoView({block: 'start'})")
    shot(SHOTS[4])
    open_swagger(page, app_url)
    shot(SHOTS[5])
    try_predict(page, app_url, EXAMPLE_REVIEW)
    unfocus(page)
    shot(SHOTS[6])
    if lab_url:
        open_lab_notebook(page, lab_url, lab_token, "evaluate.ipynb", "Test metrics")
        shot(SHOTS[7])
    page.close()
    return shots


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="where the PNGs go")
    parser.add_argument("--store", type=Path, help="use this folder's mlflow.db instead of building a new store")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away store (its path is printed)")
    parser.add_argument("--rows", type=int, default=400, help="snippets in the tiny dataset")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="sentiment-screenshots-"))
        if not args.keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        store = args.store.resolve() if args.store else work / "store"
        uri = f"sqlite:///{store / 'mlflow.db'}" if args.store else build_demo_store(store, args.rows)
        print(f"[screenshots] store {uri}", flush=True)
        targets = find_targets(uri)
        executed = sorted(store.glob("output/*/evaluate.ipynb"), key=lambda p: p.stat().st_mtime)
        (work / "lab").mkdir()
        if executed:  # the last run's executed notebook, opened in JupyterLab
            shutil.copy(executed[-1], work / "lab" / "evaluate.ipynb")
        token = secrets.token_hex(16)
        ui, app = stack.enter_context(mlflow_ui(uri, work)), stack.enter_context(serving_app(uri, work))
        lab = stack.enter_context(harness.jupyter_lab(work / "lab", work, token)) if executed else None
        mlflow_url, app_url = ui.wait_ready().url, app.wait_ready().url  # they all start at once
        if lab is not None:
            lab.wait_ready()
        else:
            print(f"[screenshots] no executed evaluate.ipynb under {store}/output: no JupyterLab screenshot")
        context = stack.enter_context(browser())
        shots = capture(context, mlflow_url, app_url, targets, args.out, lab.url if lab else "", token)
    print(f"[screenshots] {len(shots)} screenshots in {args.out}" + (f"; store kept in {work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
