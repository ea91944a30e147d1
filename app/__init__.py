"""The serving app (FastAPI): ``uvicorn app.main:app``."""
