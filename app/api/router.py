"""All the API's routes in one router, in the order the app lists them (:func:`app.main.create_app` includes it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import admin, docs, feedback, mlflow_scoring, ops, predict, v2

api_router = APIRouter()
api_router.include_router(docs.router)
api_router.include_router(predict.router)
api_router.include_router(feedback.router)
api_router.include_router(ops.router)
api_router.include_router(admin.router)
api_router.include_router(mlflow_scoring.router)
api_router.include_router(v2.router)
