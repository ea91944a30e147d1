"""The training curves figure (per-epoch train loss and validation metrics, a student's teacher beside)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def training_curves(history: pd.DataFrame, teacher: pd.DataFrame | None = None) -> Figure:
    """Loss and validation metrics by epoch; a distilled student's ``teacher`` dashed beside it."""
    fig, (loss, val) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss.plot(history.index, history["train_loss"], marker="o")
    loss.set_xlabel("epoch")
    loss.set_title("train loss")
    for col in ("val_accuracy", "val_f1", "val_roc_auc"):
        val.plot(history.index, history[col], marker="o", label=col.removeprefix("val_"))
    if teacher is not None:
        val.plot(teacher.index, teacher["val_accuracy"], marker="x", linestyle="--", color="grey",
                 label="teacher accuracy")
    val.set_xlabel("epoch")
    val.set_title("validation metrics")
    val.legend()
    fig.tight_layout()
    return fig
