"""sentiment-mlops's pipeline: the notebook steps' library code, by stage, and their orchestration.

``data`` → ``train`` → ``evaluate`` → ``registry`` (the gate) → [serving: :mod:`scoring`, ``app``]
→ ``monitor`` → back to ``train``; ``flow`` runs the notebooks in that order (the table in
:mod:`pipelines.flow.steps`), ``config`` holds every parameter, ``cli`` is ``python -m pipelines``.
See docs/architecture.md.
"""

__version__ = "1.0.0"
