"""``POST /admin/reload``: load what MODEL_URI points at now and swap it in (bearer ``ADMIN_TOKEN``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse

from app.api.deps import BODY_TOO_LARGE, ManagerDep, require_admin
from app.schemas import ErrorMessage, ReloadResponse

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/reload", response_model=ReloadResponse,
             responses={401: {"model": ErrorMessage, "description": "missing or wrong token"},
                        403: {"model": ErrorMessage, "description": "ADMIN_TOKEN unset"},
                        502: {"model": ReloadResponse,
                              "description": "the new version could not be loaded; the old one still serves"},
                        **BODY_TOO_LARGE})
async def reload(
    request: Request, manager: ManagerDep,
    force: Annotated[bool, Query(description="reload even if the version is unchanged")] = False,
) -> Any:
    """Load the version MODEL_URI points at now and swap it in (the old one serves until then)."""
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(request.app.state.loader, manager.reload, "admin", force)
    body = ReloadResponse(**{k: v for k, v in result.as_dict().items() if k != "origin"})
    if result.status == "failed":
        return JSONResponse(body.model_dump(), status_code=status.HTTP_502_BAD_GATEWAY)
    return body
