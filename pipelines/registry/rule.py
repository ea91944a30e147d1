"""The promotion rule, as a pure function: clear the floor, and beat the champion by ``min_delta``.

No registry access here: :mod:`pipelines.registry.promotion` gathers the scores and
applies the :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Decision:
    """The outcome of the champion/challenger gate."""

    promote: bool
    reasons: list[str]
    metric: str
    candidate_version: str
    candidate_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    deltas: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    metric: str,
    min_delta: float,
    min_metric: float,
    candidate_version: str = "",
    champion_version: str | None = None,
    backend: str = "torch",
) -> Decision:
    """The promotion rule: clear the floor, and beat the champion by ``min_delta`` if there is one.

    ``backend`` names the runtime whose test scores ``candidate`` and ``champion`` are (recorded in the reasons).
    """
    score = candidate[metric]
    reasons: list[str] = [f"test scores of the {backend} runtime"]
    ok = True
    if score < min_metric:
        ok = False
        reasons.append(f"{metric} {score:.4f} is below the floor min_metric={min_metric:.4f}")
    else:
        reasons.append(f"{metric} {score:.4f} clears the floor min_metric={min_metric:.4f}")
    deltas: dict[str, float] = {}
    champion_score = None
    if champion is None:
        reasons.append("there is no production version yet")
    else:
        champion_score = champion[metric]
        deltas = {m: candidate[m] - champion[m] for m in candidate if m in champion}
        delta = deltas[metric]
        if delta >= min_delta:
            reasons.append(f"beats production v{champion_version} by {delta:+.4f} {metric} (needs ≥ {min_delta:+.4f})")
        else:
            ok = False
            reasons.append(
                f"does not beat production v{champion_version}: {metric} {score:.4f} vs {champion_score:.4f} "
                f"({delta:+.4f}, needs ≥ {min_delta:+.4f})"
            )
    return Decision(ok, reasons, metric, candidate_version, score, champion_version, champion_score, deltas, backend)
