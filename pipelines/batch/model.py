"""The model a batch run scores with: ``--model-uri`` resolved to one version, once, and how to load it.

``models:/NAME@ALIAS`` becomes ``models:/NAME/N`` here (through :func:`scoring.identity.identify`, the one
place a registry URI becomes a version), so every chunk, every Spark worker and a resumed run load the
same weights even if the alias moves meanwhile. Loading goes through :func:`scoring.runtimes.load_scorer`,
the seam the server uses, with the same backend names and long-text overrides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.config import ConfigError
from scoring.identity import RegistryError, identify, local_folder, parse_registry_uri
from scoring.model_files import load_tokenizer_and_scoring
from scoring.runtimes import ScorerLike, load_scorer


@dataclass(frozen=True)
class BatchModel:
    """What ``requested`` meant when the run started, and what to load: ``source`` never names an alias."""

    requested: str
    source: str
    name: str
    version: str
    backend: str
    tracking_uri: str
    scoring_overrides: dict[str, Any] = field(default_factory=dict)

    def load(self, threads: int | None = None, parallel: int | None = None) -> ScorerLike:
        """The scorer (ONNX Runtime: ``parallel`` calls at once on ``threads`` threads each, as in ``load_scorer``)."""
        return load_scorer(self.source, self.backend, threads=threads, parallel=parallel, **self.scoring_overrides)

    def load_checked(self, threads: int | None = None) -> ScorerLike:
        """:meth:`load`, with a failure reported as a ConfigError naming ``--model-uri``."""
        try:
            return self.load(threads)
        except Exception as err:  # not a transformers model, artifacts gone, a bad override…
            raise ConfigError(f"--model-uri: cannot load {self.source} with backend {self.backend}: "
                              f"{type(err).__name__}: {err}") from err

    def scoring_settings(self) -> dict[str, Any]:
        """The long-text settings it scores with (saved with the model, then the overrides), read without the
        weights; ConfigError naming ``--model-uri`` if ``source`` is no transformers model."""
        try:
            return load_tokenizer_and_scoring(self.source, **self.scoring_overrides)[1].model_dump()
        except Exception as err:
            raise ConfigError(f"--model-uri: cannot load {self.source}: {type(err).__name__}: {err}") from err

    def describe(self) -> str:
        """``models:/sentiment@production = sentiment v3 (backend onnx-int8)``: what a run announces."""
        return f"{self.requested} = {self.name or self.source} v{self.version or '?'} (backend {self.backend})"

    def record(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model(requested: str, backend: str, tracking_uri: str,
                  scoring_overrides: dict[str, Any] | None = None) -> BatchModel:
    """Resolve ``requested`` now; ConfigError naming ``--model-uri`` if it names no version and no folder."""
    if parse_registry_uri(requested) is None and not requested.startswith("runs:/") and "://" not in requested \
            and local_folder(requested) is None:
        raise ConfigError(f"--model-uri: {requested} is neither a models:/ or runs:/ URI nor a model folder")
    try:
        identity = identify(requested)
    except RegistryError as err:
        raise ConfigError(f"--model-uri: {err}") from None
    return BatchModel(requested, identity.source or requested, identity.name, identity.version, backend,
                      tracking_uri, dict(scoring_overrides or {}))
