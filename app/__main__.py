"""``python -m app``: serve ``app.main:app`` with uvicorn on HOST:PORT (one worker: the model is in memory)."""

import uvicorn

from app.settings import Settings

if __name__ == "__main__":
    settings = Settings()
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, workers=1, log_level="info")
