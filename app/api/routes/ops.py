"""Operations: ``/health`` (liveness), ``/ready`` (readiness), ``/model`` (what is served), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import NO_MODEL, ManagerDep, MetricsDep, ServedModel, SettingsDep, tag_version
from app.schemas import ModelInfo

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/ready", responses=NO_MODEL)
async def ready(request: Request, response: Response, model: ServedModel, manager: ManagerDep) -> dict[str, Any]:
    """A model is loaded and requests are scored: its version, and why the last reload failed (if it did).

    A failed reload keeps the replica ready (the previous version serves); 503 once SIGTERM started the drain.
    """
    if request.app.state.draining:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down: draining before exit")
    tag_version(response, model)
    return {"status": "ready", "model_version": model.identity.version,
            "last_reload_error": (manager.last_error or {}).get("message")}


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
