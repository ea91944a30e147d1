"""MLflow's scoring protocol, so clients and tools written for ``mlflow models serve`` work unchanged.

``POST /invocations`` takes ``dataframe_split`` / ``dataframe_records`` / ``instances`` / ``inputs``
(:func:`app.protocols.mlflow_texts`) and answers ``{"predictions": [...]}``, one ``/predict`` answer per text;
``GET /ping`` is 200 while a model serves; ``GET /version`` is the MLflow version, as MLflow's server says it.
Errors use MLflow's body: ``{"error_code": ..., "message": ...}``.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.deps import SettingsDep, tag_version
from app.api.routes.predict import score_texts
from app.errors import JSONBodyRoute
from app.protocols import ProtocolError, check_texts, mlflow_texts

# its own protocol (MLflow's docs), not this API's: kept out of /openapi.json and its contract tests
router = APIRouter(tags=["mlflow scoring protocol"], route_class=JSONBodyRoute, include_in_schema=False)

def _error(code: int, error_code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": error_code, "message": message}, status_code=code)


@router.post("/invocations")
async def invocations(request: Request, settings: SettingsDep) -> Response:
    """``mlflow models serve``'s endpoint: ``{"predictions": [{sentiment, confidence, model_version}, ...]}``."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return _error(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST",
                      f"Content-Type must be application/json, not {media_type or 'none'!r}")
    try:
        body = await request.json()
        texts = check_texts(mlflow_texts(body), settings.max_batch, settings.max_text_chars)
    except json.JSONDecodeError as err:
        return _error(status.HTTP_400_BAD_REQUEST, "MALFORMED_REQUEST", f"invalid JSON: {err}")
    except ProtocolError as err:
        return _error(status.HTTP_400_BAD_REQUEST, "BAD_REQUEST", str(err))
    if request.app.state.manager.current is None:
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE", "no model loaded yet")
    predictions, model = await score_texts(request, texts, "/invocations")
    version = model.identity.version
    response = JSONResponse({"predictions": [{**p, "model_version": version} for p in predictions]})
    tag_version(response, model)
    return response


@router.get("/ping", response_class=PlainTextResponse)
async def ping(request: Request) -> Any:
    """200 while a model serves (``mlflow models serve``'s health check), else 503."""
    if request.app.state.manager.current is None or request.app.state.draining:
        return PlainTextResponse("not ready\n", status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return "\n"


@router.get("/version", response_class=PlainTextResponse)
async def version() -> str:
    """The MLflow version (as ``mlflow models serve`` answers it; the model's version is in ``/model``)."""
    return importlib.metadata.version("mlflow-skinny" if _has("mlflow-skinny") else "mlflow")


def _has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False
