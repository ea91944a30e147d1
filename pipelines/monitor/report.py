"""The monitor's report: the signal table, reference-vs-production charts, the HTML page, and logging them."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipelines.monitor.drift import reference_values

REPORT = "drift_report.html"
VERDICT = "drift_verdict.json"


def signal_table(verdict: dict[str, Any]) -> pd.DataFrame:
    """One row per signal: status, test, p-value, effect size, threshold, reason."""
    rows = [
        {"signal": name, "group": s["group"], "status": s["status"], "test": s["test"], "statistic": s["statistic"],
         "p_value": s["p_value"], "effect": s["effect"], "effect_value": s["effect_value"],
         "threshold": s["threshold"], "n_production": s["n_production"], "reason": s["reason"]}
        for name, s in verdict["signals"].items()
    ]
    return pd.DataFrame(rows).set_index("signal") if rows else pd.DataFrame()


def _hist(ax: Any, reference: np.ndarray, production: np.ndarray, title: str, log: bool = False) -> None:
    both = np.concatenate([reference, production]) if len(production) else reference
    lo, hi = np.quantile(both, [0.0, 0.995]) if len(both) else (0, 1)
    if log:
        bins = np.geomspace(max(lo, 1), max(hi, 2), 30)
        ax.set_xscale("log")
    else:
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
    ax.hist(np.clip(reference, bins[0], bins[-1]), bins=bins, density=True, alpha=0.5, label="reference")
    if len(production):
        ax.hist(np.clip(production, bins[0], bins[-1]), bins=bins, density=True, alpha=0.5, label="production")
    ax.set_title(title)
    ax.legend()


def figures(profile: dict[str, Any], rows: pd.DataFrame, verdict: dict[str, Any]) -> dict[str, Figure]:
    """Reference vs production distributions, label mix, traffic over time."""
    out: dict[str, Figure] = {}
    signals = verdict["signals"]

    def title(name: str) -> str:
        s = signals.get(name)
        return f"{name} [{s['status']}]" if s else name

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, key in zip(axes.flat, ("n_chars", "n_tokens", "unk_ratio", "confidence"), strict=True):
        production = rows[key].to_numpy(float) if key in rows else np.array([])
        _hist(ax, reference_values(profile, key), production, title(key), log=key in ("n_chars", "n_tokens"))
    fig.suptitle("Reference (training / validation) vs production window")
    fig.tight_layout()
    out["distributions"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = ["Negative", "Positive"]
    ref = [profile["validation"]["predicted_label_ratio"][n] for n in names]
    train = [profile["train"]["label_ratio"][n] for n in names]
    counts = rows["label"].value_counts() if len(rows) else pd.Series(dtype=int)
    prod = [counts.get(n, 0) / max(1, len(rows)) for n in names]
    x = np.arange(2)
    ax.bar(x - 0.27, train, 0.27, label="training labels")
    ax.bar(x, ref, 0.27, label="predicted on validation")
    ax.bar(x + 0.27, prod, 0.27, label="predicted in production")
    ax.set_xticks(x, names)
    ax.set_ylabel("share")
    ax.set_title(title("predicted_label"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["label_mix"] = fig

    ts = pd.to_datetime(rows["ts"], utc=True, format="ISO8601") if len(rows) else pd.Series(dtype="datetime64[ns, UTC]")
    if len(rows) and ts.max() - ts.min() >= pd.Timedelta(hours=2):
        hourly = rows.assign(ts=ts).set_index("ts").resample("1h")
        fig, ax = plt.subplots(figsize=(10, 3.5))
        hourly.size().plot(ax=ax, label="predictions per hour")
        ax.set_ylabel("predictions")
        ax2 = ax.twinx()
        hourly["confidence"].mean().plot(ax=ax2, color="C1", label="mean confidence")
        ax2.set_ylabel("mean confidence")
        ax.set_title("Traffic in the window")
        fig.tight_layout()
        out["traffic"] = fig
    for fig in out.values():
        plt.close(fig)  # callers display, save or log them; pyplot keeps no reference
    return out


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


_COLOURS = {"drift": "#c62828", "no_drift": "#2e7d32", "insufficient_data": "#9e9e9e"}


def render_report(verdict: dict[str, Any], figs: dict[str, Figure]) -> str:
    """A self-contained HTML drift report (charts embedded as PNG)."""
    e = html.escape
    table = signal_table(verdict)
    table_html = table.to_html(float_format=lambda v: f"{v:.4g}", na_rep="", classes="signals") if len(
        table) else "<p>No signal was tested.</p>"
    meta = verdict.get("model", {}) | verdict.get("window", {})
    charts = "".join(f'<h3>{e(name)}</h3><img src="data:image/png;base64,{_png(fig)}" alt="{e(name)}">'
                     for name, fig in figs.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
.banner{{color:#fff;padding:.8em 1.2em;border-radius:6px;background:{_COLOURS[verdict["verdict"]]}}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:4px 6px;vertical-align:top}}
img{{max-width:100%}}pre{{background:#f5f5f5;padding:1em;overflow:auto;font-size:12px}}
</style></head><body>
<h1>Drift report</h1>
<div class="banner"><b>{e(verdict["verdict"].upper())}</b>
{': ' + e(', '.join(verdict["drifted_signals"])) if verdict["drifted_signals"] else ''}</div>
<ul>{''.join(f'<li>{e(str(k))}: {e(str(v))}</li>' for k, v in meta.items())}</ul>
<h2>Reasons</h2><ul>{''.join(f'<li>{e(r)}</li>' for r in verdict["reasons"])}</ul>
{'<h2>Notes</h2><ul>' + ''.join(f'<li>{e(n)}</li>' for n in verdict["notes"]) + '</ul>' if verdict["notes"] else ''}
<h2>Signals</h2>{table_html}
<h2>Charts</h2>{charts}
<h2>Verdict JSON</h2><pre>{e(json.dumps(verdict, indent=2))}</pre>
</body></html>"""


def log_results(verdict: dict[str, Any], figs: dict[str, Figure], folder: Path) -> Path:
    """Write the report and verdict to ``folder`` and log them (with charts, metrics, tags) to the active run."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / REPORT
    report.write_text(render_report(verdict, figs), encoding="utf-8")
    (folder / VERDICT).write_text(json.dumps(verdict, indent=2))
    mlflow.log_artifact(str(report))
    mlflow.log_artifact(str(folder / VERDICT))
    for name, fig in figs.items():
        mlflow.log_figure(fig, f"plots/drift_{name}.png")
    metrics = {"drift": float(bool(verdict["drift"])), **{f"window_{k}": v for k, v in verdict["counts"].items()}}
    for name, s in verdict["signals"].items():
        for key in ("p_value", "effect_value"):
            if s.get(key) is not None:
                metrics[f"{name}.{key}"] = s[key]
    mlflow.log_metrics(metrics)
    mlflow.set_tags({"verdict": verdict["verdict"], "drifted_signals": ",".join(verdict["drifted_signals"])})
    return report
