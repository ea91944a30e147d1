"""Operations: ``/health`` (liveness), ``/ready`` (readiness), ``/model`` (what is served), ``/metrics``.

``/ready`` and ``/model`` are unauthenticated (probes, dashboards): they name the version and whether the last
reload failed, but the model's URI, run id, source and the load error's text only for admin callers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import (
    NO_MODEL,
    AdminCaller,
    ManagerDep,
    MetricsDep,
    ServedModel,
    SettingsDep,
    degraded,
    load_error_message,
    tag_version,
)
from app.schemas import ModelInfo

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (the model may still be loading)."""
    return {"status": "ok"}


@router.get("/ready", responses=NO_MODEL)
async def ready(request: Request, response: Response, model: ServedModel, manager: ManagerDep) -> dict[str, Any]:
    """A model is loaded and requests are scored: its version, and why the last reload failed (if it did).

    A failed reload keeps the replica ready (the previous version serves); so does an unreachable inference log
    (``degraded``: ``["inference_log"]``; predictions serve, their rows wait or are dropped, /feedback answers 503).
    503 once SIGTERM started the drain.
    """
    if request.app.state.draining:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down: draining before exit")
    tag_version(response, model)
    return {"status": "ready", "model_version": model.identity.version,
            "last_reload_error": load_error_message(request, (manager.last_error or {}).get("message")),
            "degraded": degraded(request)}


INTERNAL = ("model_uri", "run_id", "source")  # /model's fields only admin callers get


@router.get("/model", response_model=ModelInfo)
async def model_info(settings: SettingsDep, manager: ManagerDep, admin: AdminCaller) -> ModelInfo:
    """What is served: registered name, version, alias, evaluation metrics, when the last reload failed;
    with the admin token also the model's URI, run id, source and the load error's text."""
    model = manager.current
    error = manager.last_error
    info: dict[str, Any] = {
        "loaded": model is not None, "model_uri": settings.model_uri, "backend": settings.backend,
        "reload_interval_s": settings.reload_interval_s, "last_checked_at": manager.last_checked_at,
        "last_reload_error": error if admin or error is None else {k: v for k, v in error.items() if k != "message"},
    }
    if model is not None:
        info.update(model.identity.as_dict(), loaded_at=model.loaded_at, load_seconds=round(model.load_seconds, 3),
                    scoring=model.scorer.scoring.model_dump())
    if not admin:
        info.update(dict.fromkeys(INTERNAL))
    return ModelInfo(**info)


@router.get("/metrics", response_class=Response)
async def metrics(serving_metrics: MetricsDep) -> Response:
    """Prometheus exposition."""
    return Response(serving_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
