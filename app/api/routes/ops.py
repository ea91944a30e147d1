"""Operations: ``/health`` (liveness), ``/ready`` (readiness), ``/model`` (what is served), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import NO_MODEL, ManagerDep, MetricsDep, ServedModel, SettingsDep
from app.schemas import ModelInfo

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/ready", responses=NO_MODEL)
async def ready(model: ServedModel) -> dict[str, str]:
    """A model is loaded and requests are scored."""
    return {"status": "ready", "model_version": model.identity.version}


@router.get("/model", response_model=ModelInfo)
async def model_info(settings: SettingsDep, manager: ManagerDep) -> ModelInfo:
    """What is served: registered name, version, alias, run, evaluation metrics, last reload error."""
    model = manager.current
    info: dict[str, Any] = {
        "loaded": model is not None, "model_uri": settings.model_uri, "backend": settings.backend,
        "reload_interval_s": settings.reload_interval_s, "last_checked_at": manager.last_checked_at,
        "last_reload_error": manager.last_error,
    }
    if model is not None:
        info.update(model.identity.as_dict(), loaded_at=model.loaded_at, load_seconds=round(model.load_seconds, 3),
                    scoring=model.scorer.scoring.model_dump())
    return ModelInfo(**info)


@router.get("/metrics", response_class=Response)
async def metrics(serving_metrics: MetricsDep) -> Response:
    """Prometheus exposition."""
    return Response(serving_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
