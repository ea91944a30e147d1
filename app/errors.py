"""Client mistakes answered with a 4xx and a message, never a 500.

* JSON bodies are parsed as RFC 8259 has them (:func:`parse_json_body`, on the routes of
  :class:`JSONBodyRoute`): a body that is not UTF-8, ``NaN``/``Infinity``/``-Infinity``, a number out of
  a double's range or nesting too deep is malformed JSON, answered like any other (422 ``json_invalid``)
  rather than a 400 or a value that cannot be echoed;
* 422 in FastAPI's format (``{"detail": [{"loc", "msg", ...}]}``) for bad fields,
  texts over MAX_TEXT_CHARS and batches over MAX_BATCH; the client's input is
  echoed only when short and encodable as JSON (never 20 kB, a lone surrogate, a non-finite number
  or bytes that are not text: :func:`clean_error`);
* 413 (JSON, naming MAX_BODY_BYTES) for bodies over the limit.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.texts import too_long_message

MAX_ECHO_BYTES = 200  # longer inputs are not echoed in a 422


class _NotAJSONNumber(ValueError):
    def __init__(self, token: str, message: str) -> None:
        super().__init__(message)
        self.token, self.message = token, message


def _refuse_constant(name: str) -> Any:
    raise _NotAJSONNumber(name, f"{name} is not JSON: numbers must be finite (RFC 8259 has no NaN or Infinity)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 40 else literal[:37] + "..."
        raise _NotAJSONNumber(literal, f"the number {shown} is out of range (a JSON number must fit a double)")
    return value


def _position(text: str, token: str) -> int:
    """Where ``token`` first stands outside a JSON string in ``text`` (0 if nowhere)."""
    pattern = r'"(?:[^"\\]|\\.)*"|(?<![0-9A-Za-z.+-])' + re.escape(token)
    for match in re.finditer(pattern, text, re.DOTALL):
        if not match.group().startswith('"'):
            return match.start()
    return 0


def parse_json_body(body: bytes) -> Any:
    """``json.loads(body)`` as RFC 8259 has it: every way it can fail is a ``json.JSONDecodeError``.

    The encoding is detected as ``json.loads`` does (UTF-8, or UTF-16/32 by their byte patterns) but
    decoded strictly; ``NaN``, ``Infinity``, ``-Infinity`` and numbers beyond a double are refused (Python
    would read them as non-finite floats, which no JSON response can echo); nesting too deep and integers
    too long for Python are refused too.  FastAPI answers a ``JSONDecodeError`` with a 422 ``json_invalid``.
    """
    encoding = json.detect_encoding(body)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as err:
        position = len(body[: err.start].decode(encoding, "replace"))
        name = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
        raise json.JSONDecodeError(
            f"the body is not valid {name} (byte {err.start}: {err.reason}); JSON is sent as UTF-8",
            body.decode(encoding, "replace"), position,
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotAJSONNumber as err:
        raise json.JSONDecodeError(err.message, text, _position(text, err.token)) from None
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("the body is nested too deeply", text, 0) from None
    except ValueError:  # an integer longer than Python converts
        limit = sys.get_int_max_str_digits()
        raise json.JSONDecodeError(f"a number has more than {limit} digits", text, 0) from None


class JSONBodyRequest(Request):
    """A request whose ``json()`` is :func:`parse_json_body`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route that parses its JSON body with :func:`parse_json_body` (``APIRouter(route_class=...)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return strict_json_handler


def check_text_lengths(texts: Sequence[str], limit: int, field: str) -> None:
    """422 (in FastAPI's validation format) for texts over MAX_TEXT_CHARS; ``texts`` errors carry the index."""
    errors = [
        {"type": "string_too_long", "loc": ("body", field, i) if field == "texts" else ("body", field),
         "msg": too_long_message(len(t), limit), "ctx": {"max_length": limit}}
        for i, t in enumerate(texts) if len(t) > limit
    ]
    if errors:
        raise RequestValidationError(errors)


def _encoded(value: Any) -> tuple[Any, int] | None:
    """``value`` as JSON can carry it and its size in bytes; None if it cannot be (nan, bytes, a surrogate…)."""
    try:
        encoded = jsonable_encoder(value)
        return encoded, len(json.dumps(encoded, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):  # UnicodeError is a ValueError
        return None


def _text(value: Any) -> str:
    """A string that encodes as UTF-8 whatever ``value`` holds (a lone surrogate comes out escaped)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def clean_error(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error safe to echo: ``type``, ``loc``, ``msg``, and whatever else of it JSON can carry.

    The client's input only if short and encodable (never 20 kB, a surrogate, nan, undecodable bytes).
    """
    out: dict[str, Any] = {
        "type": _text(error.get("type", "value_error")),
        "loc": [part if isinstance(part, int) else _text(part) for part in error.get("loc", ())],
        "msg": _text(error.get("msg", "")),
    }
    ctx = error.get("ctx")
    if isinstance(ctx, dict):  # a ValueError in ctx is already in msg
        ctx = {k: v for k, v in ctx.items() if not isinstance(v, BaseException)}
    if out["type"] == "json_invalid" and isinstance(ctx, dict) and isinstance(ctx.get("error"), str):
        out["msg"] += f": {_text(ctx['error'])}"
    if out["type"] == "model_attributes_type" and isinstance(error.get("input"), str | bytes):
        out["msg"] += "; send a JSON object with Content-Type: application/json"
    for key, value in {**error, "ctx": ctx}.items():
        if key in out or (key == "ctx" and not value):
            continue
        encoded = _encoded(value)
        if encoded is not None and encoded[1] <= MAX_ECHO_BYTES:
            out[key] = encoded[0]
    return out


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
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
