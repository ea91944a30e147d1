"""``python -m app``: serve the API on HOST:PORT with a drain on SIGTERM (:mod:`app.server`)."""

from app.server import serve

if __name__ == "__main__":
    serve()
