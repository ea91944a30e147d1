"""The Open Inference Protocol (V2: KServe, MLServer, Triton clients), answering what ``/predict`` answers.

``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata), ``/v2/models/{name}[/versions/{v}]``
(model metadata) and ``.../ready``; ``POST /v2/models/{name}[/versions/{v}]/infer`` takes one BYTES tensor of
texts and answers the tensors ``sentiment`` and ``confidence`` with ``model_version``.  ``name`` is the
registered model's; a version other than the served one is a 404.  Errors are ``{"error": message}``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from app.api.deps import SettingsDep, tag_version
from app.api.routes.predict import score_texts
from app.errors import JSONBodyRoute
from app.model import LoadedModel
from app.protocols import ProtocolError, check_texts, v2_outputs, v2_texts

# its own protocol (the Open Inference Protocol spec), not this API's: kept out of /openapi.json
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=JSONBodyRoute,
                   include_in_schema=False)

class _NotServed(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.response = JSONResponse({"error": message}, status_code=code)


def _model(request: Request, name: str, version: str | None) -> LoadedModel:
    """The served model if it is ``name`` (and ``version``); a 503 while none is loaded, a 404 if another."""
    model = request.app.state.manager.current
    if model is None:
        raise _NotServed(status.HTTP_503_SERVICE_UNAVAILABLE, "no model loaded yet")
    if name != model.identity.name:
        raise _NotServed(status.HTTP_404_NOT_FOUND, f"unknown model {name!r}; this server serves "
                                                    f"{model.identity.name!r}")
    if version is not None and version != model.identity.version:
        raise _NotServed(status.HTTP_404_NOT_FOUND, f"{name} version {version!r} is not served; "
                                                    f"version {model.identity.version} is")
    return model


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The process is up."""
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """A model serves (and no SIGTERM drain started): 200 ``{"ready": true}``, else 503."""
    ok = request.app.state.manager.current is not None and not request.app.state.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Server metadata: this API's name and version."""
    return {"name": "sentiment-mlops", "version": request.app.version, "extensions": []}


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    """The served model's name, version, platform and tensors."""
    try:
        model = _model(request, name, version)
    except _NotServed as err:
        return err.response
    response = JSONResponse({
        "name": model.identity.name, "versions": [model.identity.version], "platform": "mlflow",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "sentiment", "datatype": "BYTES", "shape": [-1]},
                    {"name": "confidence", "datatype": "FP64", "shape": [-1]}],
    })
    tag_version(response, model)
    return response


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    """200 ``{"name", "ready": true}`` while this model (version) serves."""
    try:
        model = _model(request, name, version)
    except _NotServed as err:
        return err.response
    return JSONResponse({"name": model.identity.name, "ready": not request.app.state.draining})


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(request: Request, settings: SettingsDep, name: str, version: str | None = None) -> Response:
    """Score the texts of one BYTES tensor: outputs ``sentiment`` and ``confidence``, one element per text."""
    try:
        _model(request, name, version)
        if "inference-header-content-length" in request.headers:
            raise ProtocolError("binary tensor data (Triton's extension, Inference-Header-Content-Length) is not "
                                "supported: send the tensors as JSON (tritonclient: binary_data=False)")
        body = await request.json()
        texts = check_texts(v2_texts(body), settings.max_batch, settings.max_text_chars)
    except _NotServed as err:
        return err.response
    except json.JSONDecodeError as err:
        return JSONResponse({"error": f"invalid JSON: {err}"}, status_code=status.HTTP_400_BAD_REQUEST)
    except ProtocolError as err:
        return JSONResponse({"error": str(err)}, status_code=status.HTTP_400_BAD_REQUEST)
    predictions, model = await score_texts(request, texts, "/v2/infer")
    answer: dict[str, Any] = {"model_name": model.identity.name, "model_version": model.identity.version}
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    response = JSONResponse({**answer, "outputs": v2_outputs(predictions)})
    tag_version(response, model)
    return response
