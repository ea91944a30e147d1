"""Orchestration: the steps and flows declared in one table, the Papermill runner, the notebooks' side of it."""
