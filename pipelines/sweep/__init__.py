"""Parameter sweeps: the train notebook over many parameter sets, in one Optuna study (docs/sweeps.md)."""
