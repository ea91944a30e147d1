"""Drift statistics: production traffic from the inference log against a reference profile.

Each signal gets a two-sample test and an effect size, and counts as drift only
when both agree: the p-value is below ``alpha`` divided by the number of tested
signals (Bonferroni, so the false-alarm rate of a whole check stays ≈ alpha) **and**
the effect is at least its threshold (large traffic makes tiny, harmless shifts
significant; the effect floor keeps them from paging anyone).

=================  ========================  ==================================  =====================
signal             rows                      test                                effect (threshold)
=================  ========================  ==================================  =====================
n_chars, n_tokens  all rows in the window    Kolmogorov-Smirnov vs training      PSI (psi_threshold)
unk_ratio          all rows                  Mann-Whitney U vs training          mean rise (unk_ratio_delta)
confidence         rows of the version       Kolmogorov-Smirnov vs validation    PSI (psi_threshold)
predicted_label    rows of the version       χ² (2×2) vs validation              PSI (psi_threshold)
vocabulary         rows with raw text        χ² on out-of-vocabulary word share  PSI (psi_threshold)
domain_classifier  rows with raw text        Mann-Whitney U on out-of-fold       ROC-AUC
                                             scores of TF-IDF + logistic reg.    (domain_auc_threshold)
=================  ========================  ==================================  =====================

Wasserstein distances (raw and in reference standard deviations) are reported
beside KS for the numeric signals.  Fewer than ``min_samples`` rows in the
window gives the verdict ``insufficient_data`` (never a false alarm); a signal
whose own rows are too few is marked ``insufficient_data`` and left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from pipelines.config import MonitorSection
from pipelines.monitor.reference import oov_rate, word_counts
from scoring.labels import LABEL_NAMES

VERDICTS = ("no_drift", "drift", "insufficient_data")
PSI_BINS = 10
_EPS = 1e-4


@dataclass(frozen=True)
class Thresholds:
    """When a signal counts as drift."""

    min_samples: int = 200
    drift_alpha: float = 0.01
    psi_threshold: float = 0.2
    unk_ratio_delta: float = 0.02
    domain_auc_threshold: float = 0.7

    @classmethod
    def from_config(cls, monitor: MonitorSection) -> Thresholds:
        """The thresholds of the monitor section (same parameter names)."""
        return cls(**{name: getattr(monitor, name) for name in cls.__dataclass_fields__})


@dataclass
class Signal:
    """One drift signal: its test, effect size and outcome."""

    name: str
    group: str  # input | output | text
    status: str = "pending"  # pending (computed, not decided) | ok | drift | insufficient_data | skipped
    test: str = ""
    statistic: float | None = None
    p_value: float | None = None
    effect: str = ""  # name of the effect size
    effect_value: float | None = None
    threshold: float | None = None
    n_reference: int = 0
    n_production: int = 0
    reference: dict[str, Any] = field(default_factory=dict)
    production: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def tested(self) -> bool:
        return self.status in ("ok", "drift")

    def as_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, keys to str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# -- effect sizes -------------------------------------------------------------------------
def psi(reference: np.ndarray, production: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins (shares floored at 1e-4)."""
    reference, production = np.asarray(reference, float), np.asarray(production, float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    prod = np.bincount(np.searchsorted(edges, production, side="right"), minlength=len(edges) + 1) / len(production)
    return psi_shares(ref, prod)


def psi_shares(reference: np.ndarray, production: np.ndarray) -> float:
    """PSI of two categorical distributions given as shares."""
    ref = np.clip(np.asarray(reference, float), _EPS, None)
    prod = np.clip(np.asarray(production, float), _EPS, None)
    return float(np.sum((prod - ref) * np.log(prod / ref)))


def _describe(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "p95": float(np.quantile(values, 0.95))}


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


# -- signals --------------------------------------------------------------------------------
def numeric_signal(name: str, group: str, reference: np.ndarray, production: np.ndarray, th: Thresholds) -> Signal:
    """KS test + PSI (+ Wasserstein, reported) of one numeric feature."""
    reference, production = np.asarray(reference, float), np.asarray(production, float)
    ks = stats.ks_2samp(reference, production)
    wasserstein = stats.wasserstein_distance(reference, production)
    std = float(reference.std()) or 1.0
    return Signal(
        name, group, test="ks_2samp", statistic=float(ks.statistic), p_value=float(ks.pvalue), effect="psi",
        effect_value=psi(reference, production), threshold=th.psi_threshold, n_reference=len(reference),
        n_production=len(production), reference=_describe(reference), production=_describe(production),
        details={"wasserstein": wasserstein, "wasserstein_std": wasserstein / std},
    )


def unk_signal(reference: np.ndarray, production: np.ndarray, th: Thresholds) -> Signal:
    """Rise of the unknown-token ratio: Mann-Whitney U (one-sided) + mean delta."""
    reference, production = np.asarray(reference, float), np.asarray(production, float)
    if np.ptp(np.concatenate([reference, production])) == 0:
        p_value, statistic = 1.0, 0.0
    else:
        mw = stats.mannwhitneyu(production, reference, alternative="greater")
        p_value, statistic = float(mw.pvalue), float(mw.statistic)
    return Signal(
        "unk_ratio", "input", test="mannwhitneyu", statistic=statistic, p_value=p_value, effect="mean_delta",
        effect_value=float(production.mean() - reference.mean()), threshold=th.unk_ratio_delta,
        n_reference=len(reference), n_production=len(production),
        reference={**_describe(reference), "share_with_unk": float((reference > 0).mean())},
        production={**_describe(production), "share_with_unk": float((production > 0).mean())},
    )


def label_signal(reference_ratio: dict[str, float], n_reference: int, labels: pd.Series, th: Thresholds) -> Signal:
    """Predicted-label mix: χ² on the 2×2 table of counts + PSI of the shares."""
    names = list(LABEL_NAMES.values())
    prod_counts = np.array([(labels == n).sum() for n in names], float)
    ref_counts = np.array([reference_ratio.get(n, 0.0) * n_reference for n in names])
    table = np.vstack([ref_counts, prod_counts])
    if (table.sum(axis=0) == 0).any():  # one label never occurs anywhere: no test possible
        chi2, p_value = 0.0, 1.0
    else:
        res = stats.chi2_contingency(table, correction=False)
        chi2, p_value = float(res.statistic), float(res.pvalue)
    prod_ratio = prod_counts / max(1.0, prod_counts.sum())
    ref_ratio = ref_counts / max(1.0, ref_counts.sum())
    return Signal(
        "predicted_label", "output", test="chi2_contingency", statistic=chi2, p_value=p_value, effect="psi",
        effect_value=psi_shares(ref_ratio, prod_ratio), threshold=th.psi_threshold, n_reference=n_reference,
        n_production=int(prod_counts.sum()),
        reference={f"share_{n}": float(r) for n, r in zip(names, ref_ratio, strict=True)},
        production={f"share_{n}": float(r) for n, r in zip(names, prod_ratio, strict=True)},
    )


def vocabulary_signal(profile: dict[str, Any], texts: list[str], th: Thresholds) -> Signal:
    """Share of production words outside the training vocabulary (top-N words) vs validation's share."""
    vocabulary = profile["train"]["vocabulary"]["top_words"]
    ref_rate = float(profile["validation"]["oov_rate"])
    ref_words = int(profile["validation"]["word_tokens"])
    oov, total = oov_rate(texts, set(vocabulary))
    rate = oov / max(1, total)
    ref_oov = round(ref_rate * ref_words)
    table = np.array([[ref_oov, ref_words - ref_oov], [oov, total - oov]], float)
    if total == 0 or (table.sum(axis=0) == 0).any():
        chi2, p_value = 0.0, 1.0
    else:
        res = stats.chi2_contingency(table, correction=False)
        chi2, p_value = float(res.statistic), float(res.pvalue)
    counts = word_counts(texts)
    new_words = [w for w, _ in counts.most_common() if w not in vocabulary][:15]
    return Signal(
        "vocabulary", "text", test="chi2_contingency", statistic=chi2, p_value=p_value, effect="psi",
        effect_value=psi_shares([ref_rate, 1 - ref_rate], [rate, 1 - rate]), threshold=th.psi_threshold,
        n_reference=ref_words, n_production=total, reference={"oov_rate": ref_rate},
        production={"oov_rate": rate}, details={"frequent_unknown_words": new_words},
    )


def domain_signal(reference_texts: list[str], texts: list[str], th: Thresholds, seed: int = 0) -> Signal:
    """Can a classifier tell production texts from training texts? Out-of-fold ROC-AUC + Mann-Whitney p-value."""

    rng = np.random.default_rng(seed)
    n = min(len(reference_texts), len(texts), 1000)
    ref = [reference_texts[i] for i in rng.choice(len(reference_texts), n, replace=False)]
    prod = [texts[i] for i in rng.choice(len(texts), n, replace=False)]
    x, y = ref + prod, np.r_[np.zeros(n), np.ones(n)]

    def model() -> Any:
        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=1000),
        )

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    try:
        scores = cross_val_predict(model(), x, y, cv=cv, method="predict_proba")[:, 1]
    except ValueError as err:  # e.g. an empty vocabulary (texts without words)
        return Signal("domain_classifier", "text", status="skipped", reason=f"domain_classifier: {err}")
    auc = float(roc_auc_score(y, scores))
    mw = stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater")
    fitted = model().fit(x, y)
    vocab = fitted[0].get_feature_names_out()
    coef = fitted[1].coef_[0]
    top = [str(vocab[i]) for i in np.argsort(coef)[::-1][:15]]
    return Signal(
        "domain_classifier", "text", test="tfidf_logreg_5fold+mannwhitneyu", statistic=auc, p_value=float(mw.pvalue),
        effect="roc_auc", effect_value=auc, threshold=th.domain_auc_threshold, n_reference=n, n_production=n,
        details={"production_terms": top},
    )


# -- the verdict ----------------------------------------------------------------------------
def reference_values(profile: dict[str, Any], key: str) -> np.ndarray:
    """The profile's sample of a feature: input features from training, model outputs from validation."""
    if key in ("confidence", "p_positive"):
        return np.asarray(profile["validation"][key]["values"], float)
    return np.asarray(profile["train"]["features"][key]["values"], float)


def _decide(signal: Signal, alpha: float) -> Signal:
    significant = signal.p_value is not None and signal.p_value < alpha
    large = signal.effect_value is not None and signal.threshold is not None and signal.effect_value >= signal.threshold
    signal.status = "drift" if significant and large else "ok"
    p, eff = _fmt_p(signal.p_value), f"{signal.effect} {signal.effect_value:.3g}"
    if signal.status == "drift":
        signal.reason = f"{signal.name}: {_shift_text(signal)} ({signal.test} p={p} < {alpha:.2g}; " \
                        f"{eff} ≥ {signal.threshold:g})"
    else:
        why = [] if significant else [f"p={p} ≥ {alpha:.2g}"]
        why += [] if large else [f"{eff} < {signal.threshold:g}"]
        signal.reason = f"{signal.name}: no shift ({'; '.join(why)})"
    return signal


def _shift_text(s: Signal) -> str:
    if s.name in ("n_chars", "n_tokens", "confidence"):
        return f"median {s.reference['median']:.3g} → {s.production['median']:.3g}"
    if s.name == "unk_ratio":
        return f"mean unknown-token ratio {s.reference['mean']:.3f} → {s.production['mean']:.3f}"
    if s.name == "predicted_label":
        return f"positive share {s.reference['share_Positive']:.2f} → {s.production['share_Positive']:.2f}"
    if s.name == "vocabulary":
        words = ", ".join(s.details.get("frequent_unknown_words", [])[:5])
        return f"out-of-vocabulary words {s.reference['oov_rate']:.1%} → {s.production['oov_rate']:.1%} ({words})"
    if s.name == "domain_classifier":
        terms = ", ".join(s.details.get("production_terms", [])[:5])
        return f"production texts are separable from training texts, ROC-AUC {s.effect_value:.2f} ({terms})"
    return "shifted"


def _too_few(name: str, group: str, n: int, th: Thresholds, what: str) -> Signal:
    return Signal(name, group, status="insufficient_data", n_production=n,
                  reason=f"{name}: only {n} {what} (min_samples={th.min_samples})")


def detect(profile: dict[str, Any], window: pd.DataFrame, th: Thresholds, model_version: str = "") -> dict[str, Any]:
    """Compare the window's rows (inference-log columns) with ``profile``; return the verdict dict.

    Output signals (confidence, predicted label) use only rows of ``model_version``
    (rows without a version count as its); input and text signals use every row.
    """
    n = len(window)
    notes: list[str] = []
    own = window
    if model_version and "model_version" in window:
        versions = window["model_version"].astype("string").str.removeprefix("v")
        own = window[versions.isna() | (versions == str(model_version))]
        if len(own) < n:
            notes.append(f"{n - len(own)} of {n} predictions came from other versions than v{model_version}: "
                         f"confidence and label mix use only the {len(own)} of v{model_version}")
    texts = window["text"].dropna().astype(str).tolist() if "text" in window else []
    if n < th.min_samples:
        notes.insert(0, f"only {n} predictions in the window; at least min_samples={th.min_samples} are needed")
        return _verdict("insufficient_data", [], th, n, len(own), len(texts), notes)

    signals: list[Signal] = [
        numeric_signal(c, "input", reference_values(profile, c), window[c].to_numpy(float), th)
        for c in ("n_chars", "n_tokens")
    ]
    signals.append(unk_signal(reference_values(profile, "unk_ratio"), window["unk_ratio"].to_numpy(float), th))
    if len(own) >= th.min_samples:
        signals.append(numeric_signal("confidence", "output", reference_values(profile, "confidence"),
                                      own["confidence"].to_numpy(float), th))
        signals.append(label_signal(profile["validation"]["predicted_label_ratio"], profile["validation"]["n"],
                                    own["label"].astype(str), th))
    else:
        for name in ("confidence", "predicted_label"):
            signals.append(_too_few(name, "output", len(own), th, f"predictions of v{model_version}"))

    if len(texts) >= th.min_samples:
        signals.append(vocabulary_signal(profile, texts, th))
        signals.append(domain_signal(profile["train"]["text_sample"], texts, th))
    elif texts:
        for name in ("vocabulary", "domain_classifier"):
            signals.append(_too_few(name, "text", len(texts), th, "predictions with raw text"))
    else:
        for name in ("vocabulary", "domain_classifier"):
            signals.append(Signal(name, "text", status="skipped",
                                  reason=f"{name}: no raw text in the log (the app's LOG_RAW_TEXT is off)"))

    tested = [s for s in signals if s.status == "pending"]
    alpha = th.drift_alpha / max(1, len(tested))
    for s in tested:
        _decide(s, alpha)
    verdict = "drift" if any(s.status == "drift" for s in signals) else "no_drift"
    return _verdict(verdict, signals, th, n, len(own), len(texts), notes, alpha)


def _verdict(verdict: str, signals: list[Signal], th: Thresholds, n: int, n_own: int, n_text: int,
             notes: list[str], alpha_per_test: float | None = None) -> dict[str, Any]:
    drifted = [s.name for s in signals if s.status == "drift"]
    if verdict == "drift":
        reasons = [s.reason for s in signals if s.status == "drift"]
    elif verdict == "no_drift":
        reasons = [s.reason for s in signals if s.tested]
    else:
        reasons = notes
    return _clean({
        "verdict": verdict,
        "drift": None if verdict == "insufficient_data" else verdict == "drift",
        "drifted_signals": drifted,
        "reasons": reasons,
        "counts": {"predictions": n, "predictions_of_version": n_own, "with_text": n_text},
        "thresholds": {**asdict(th), "alpha_per_test": alpha_per_test},
        "signals": {s.name: s.as_dict() for s in signals},
        "notes": notes,
    })
