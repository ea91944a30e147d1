"""Client mistakes answered with a 4xx and a message, never a 500.

* 422 in FastAPI's format (``{"detail": [{"loc", "msg", ...}]}``) for bad fields,
  texts over MAX_TEXT_CHARS and batches over MAX_BATCH; the client's input is
  echoed only when short and encodable (never 20 kB, never a lone surrogate);
* 413 (JSON, naming MAX_BODY_BYTES) for bodies over the limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.texts import too_long_message


def check_text_lengths(texts: Sequence[str], limit: int, field: str) -> None:
    """422 (in FastAPI's validation format) for texts over MAX_TEXT_CHARS; ``texts`` errors carry the index."""
    errors = [
        {"type": "string_too_long", "loc": ("body", field, i) if field == "texts" else ("body", field),
         "msg": too_long_message(len(t), limit), "ctx": {"max_length": limit}}
        for i, t in enumerate(texts) if len(t) > limit
    ]
    if errors:
        raise RequestValidationError(errors)


def clean_error(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error safe to echo: the client's input only if short and encodable (never 20 kB or a surrogate)."""
    error = dict(error)
    ctx = error.get("ctx")
    if isinstance(ctx, dict) and isinstance(ctx.get("error"), dict):  # a ValueError that encodes as {}
        error["ctx"] = {k: v for k, v in ctx.items() if k != "error"} or None
        if error["ctx"] is None:
            error.pop("ctx")
    if error.get("type") == "model_attributes_type" and isinstance(error.get("input"), str | bytes):
        error["msg"] += "; send a JSON object with Content-Type: application/json"
    if "input" in error:
        try:
            if len(json.dumps(error["input"], ensure_ascii=False).encode("utf-8")) > 200:
                error.pop("input")
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            error.pop("input")
    return error


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    errors = jsonable_encoder(exc.errors() if isinstance(exc, RequestValidationError) else [])
    return JSONResponse({"detail": [clean_error(e) for e in errors]}, status_code=422)


def check_batch_size(n: int, limit: int) -> None:
    if n > limit:
        raise RequestValidationError([{
            "type": "too_long", "loc": ("body", "texts"), "ctx": {"max_length": limit},
            "msg": f"{n} texts; the limit is MAX_BATCH={limit} per request",
        }])


class BodyLimitMiddleware:
    """413 (JSON, naming MAX_BODY_BYTES) for bodies over the limit, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self, size: int | None = None) -> str:
        over = f"is {size} bytes" if size is not None else "is too large"
        return f"request body {over}; the limit is MAX_BODY_BYTES={self.max_bytes}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self._detail(int(declared))}, status_code=413)(scope, receive, send)
            return
        total = 0

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:  # raised while the endpoint reads the body: FastAPI answers it
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)
