"""What the routes depend on, in one place: the request's app settings and state, the served model, the admin and
feedback checks.

Everything is read from ``request.app.state`` (set by :func:`app.main.create_app` and
the lifespan), never from a module global: one process may hold several apps with
different settings (the tests do).  Routes use the ``Annotated`` aliases
(``SettingsDep``, ``ServedModel``, …) as parameter types.
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app import clients
from app.logwriter import LogStore
from app.model import LoadedModel, ModelManager
from app.schemas import ErrorMessage
from app.settings import Settings
from app.telemetry import ServingMetrics


async def get_settings(request: Request) -> Settings:
    """The settings of the app serving the request."""
    return request.app.state.settings


async def get_manager(request: Request) -> ModelManager:
    """The app's model manager (created by the lifespan)."""
    return request.app.state.manager


async def get_metrics(request: Request) -> ServingMetrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


async def get_logstore(request: Request) -> LogStore:
    """The inference log and feedback store (its database opened by the lifespan, else by the first write)."""
    return request.app.state.logstore


def degraded(request: Request) -> list[str]:
    """The components down while the API still serves (``/ready``'s ``degraded``): ``inference_log``."""
    return ["inference_log"] if request.app.state.logstore.degraded else []


# what routes add to their OpenAPI responses: served_model's 503, BodyLimitMiddleware's 413 (any POST)
NO_MODEL: dict[int | str, dict[str, Any]] = {503: {"model": ErrorMessage, "description": "no model loaded (yet)"}}
# the scoring routes' 503 and 504 (app.admission: MAX_CONCURRENCY + MAX_QUEUE, REQUEST_TIMEOUT_S)
SCORING_LIMITS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "no model loaded (yet), or overloaded: MAX_CONCURRENCY + MAX_QUEUE "
                                                "scoring requests in flight (see Retry-After)"},
    504: {"model": ErrorMessage, "description": "not scored within REQUEST_TIMEOUT_S"},
}
BODY_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorMessage, "description": "request body over MAX_BODY_BYTES"},
}


# every answer scored by a model (and /ready) names its version here: which replica served what, behind a balancer
VERSION_HEADER = "X-Model-Version"


def tag_version(response: Response, model: LoadedModel) -> None:
    """Put the served version in ``response``'s :data:`VERSION_HEADER`."""
    response.headers[VERSION_HEADER] = model.identity.version


# what an unauthenticated caller reads instead of a load error (its text names URIs, run ids, paths, exceptions)
HIDDEN_ERROR = "the last load failed; admin callers see why (Authorization: Bearer <ADMIN_TOKEN>)"


def is_admin(request: Request) -> bool:
    """True when ADMIN_TOKEN is set and the request carries it as its bearer token (never raises)."""
    token = request.app.state.settings.admin_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return (token is not None and scheme.lower() == "bearer"
            and secrets.compare_digest(given.strip().encode(), token.get_secret_value().encode()))


def load_error_message(request: Request, message: str | None) -> str | None:
    """``message`` for an admin caller, :data:`HIDDEN_ERROR` for anyone else (None stays None)."""
    if message is None or is_admin(request):
        return message
    return HIDDEN_ERROR


async def served_model(request: Request) -> LoadedModel:
    """The model served now; 503 while there is none (why the load failed: for admin callers only)."""
    model = request.app.state.manager.current
    if model is None:
        error = load_error_message(request, (request.app.state.manager.last_error or {}).get("message"))
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no model loaded: {error or 'still loading'}")
    return model


bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <ADMIN_TOKEN>")


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """403 while ADMIN_TOKEN is unset; 401 (with ``WWW-Authenticate``) unless the bearer token matches it."""
    token = request.app.state.settings.admin_token
    if token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints disabled: set ADMIN_TOKEN to enable them")
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong admin token (send Authorization: Bearer <ADMIN_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


feedback_bearer = HTTPBearer(auto_error=False, scheme_name="FeedbackToken",
                             description="Authorization: Bearer <one of FEEDBACK_TOKENS>")
FEEDBACK_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "missing or unknown feedback token"},
    403: {"model": ErrorMessage, "description": "feedback disabled: no FEEDBACK_TOKENS configured"},
    429: {"model": ErrorMessage, "description": "this credential's rate limit (FEEDBACK_RATE_PER_MINUTE); "
                                                "see Retry-After"},
}


def feedback_sender(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(feedback_bearer)]
) -> str:
    """The hashed id of the feedback token sent; 403 while none is configured, 401 unless one matches, 429 over
    the credential's rate (``Retry-After`` in whole seconds)."""
    state = request.app.state
    if not state.feedback_tokens:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "feedback disabled: set FEEDBACK_TOKENS (or FEEDBACK_TOKENS_FILE) to enable it")
    sender = clients.match_token(credentials.credentials if credentials else "", state.feedback_tokens)
    if sender is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or unknown feedback token (send Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    wait = state.feedback_limiter.take(sender)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"feedback rate limit of this credential reached ({state.settings.feedback_rate_per_minute:g} a minute); "
            f"retry in {math.ceil(wait)} s", headers={"Retry-After": str(math.ceil(wait))},
        )
    return sender


SettingsDep = Annotated[Settings, Depends(get_settings)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
LogStoreDep = Annotated[LogStore, Depends(get_logstore)]
ServedModel = Annotated[LoadedModel, Depends(served_model)]
AdminCaller = Annotated[bool, Depends(is_admin)]
FeedbackSender = Annotated[str, Depends(feedback_sender)]
