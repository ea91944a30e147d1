"""The monitor stage: the reference profile, drift statistics against the inference log, the report."""
