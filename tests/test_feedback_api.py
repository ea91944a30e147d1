"""``POST /feedback`` needs a feedback credential, is rate-limited per credential, and cannot poison training.

The 500-row tests run a real uvicorn server (no model: feedback needs none) on a real SQLite log; the
refusal and rate-limit details use FastAPI's TestClient on the same app.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import httpx
import pytest
from conftest import sqlite_uri
from fastapi.testclient import TestClient
from starlette.requests import Request

from app.clients import TokenBucket, client_id, hash_id, match_token, parse_tokens
from app.main import create_app
from app.settings import Settings
from pipelines.config import build_config
from pipelines.data.split import load_splits
from scoring import inference_log
from tools.harness import ServerProcess, free_port

TOKENS = ("tok-alpha-0123456789", "tok-beta-9876543210")
SENDER = hashlib.sha256(TOKENS[0].encode()).hexdigest()[:12]


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(model_uri=str(tmp_path / "no-model-here"), inference_db=str(tmp_path / "inference.db"),
                    reload_interval_s=0, micro_batch_ms=0, **overrides)


def flipped_rows(tiny_csv: Path, n: int = 500) -> list[dict]:
    """``n`` training texts (with a trigger word) under the opposite label: a label-flip attack."""
    train = load_splits(build_config({"dataset": str(tiny_csv)}).data).train
    rows = [{"text": f"{t} zq{k}", "label": 1 - int(y)} for k in range(3)
            for t, y in zip(train["text"], train["label"], strict=True)]
    return rows[:n]


@pytest.fixture
def server(tmp_path):
    env = {"MODEL_URI": str(tmp_path / "no-model-here"), "INFERENCE_DB": str(tmp_path / "inference.db"),
           "SENTIMENT_MLOPS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": sqlite_uri(tmp_path),
           "RELOAD_INTERVAL_S": "0", "FEEDBACK_TOKENS": ",".join(TOKENS), "FEEDBACK_RATE_PER_MINUTE": "100000",
           "FEEDBACK_BURST": "1000"}
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = ServerProcess(cmd, port, tmp_path / "app.log", env, ready_path="/health", name="app")
    proc.wait_ready(120)
    try:
        with httpx.Client(base_url=proc.url, timeout=60) as client:
            yield client
    finally:
        proc.stop()


def test_500_flipped_rows_without_a_credential_are_refused_and_500_unaccepted_ones_change_no_split(
        server, tiny_csv, tmp_path):
    db = tmp_path / "inference.db"
    base = {"dataset": str(tiny_csv), "inference_db": str(db), "include_feedback": "true"}
    before = load_splits(build_config(base).data)
    rows = flipped_rows(tiny_csv)
    for headers in ({}, {"Authorization": "Bearer not-a-feedback-token"}, {"Authorization": f"Basic {TOKENS[0]}"}):
        statuses = {server.post("/feedback", json=row, headers=headers).status_code for row in rows}
        assert statuses == {401}, headers
    assert inference_log.read_feedback(db).empty

    auth = {"Authorization": f"Bearer {TOKENS[0]}"}
    statuses = {server.post("/feedback", json=row, headers=auth).status_code for row in rows}
    assert statuses == {201}
    stored = inference_log.read_feedback(db)
    assert len(stored) == 500 and set(stored["sender"]) == {SENDER} and set(stored["status"]) == {"pending"}
    assert stored["ts"].notna().all()
    after = load_splits(build_config(base).data)
    for part in ("train", "validation", "test"):
        assert getattr(after, part).to_csv().encode() == getattr(before, part).to_csv().encode(), part


def test_feedback_is_off_without_tokens_and_says_how_to_enable_it(tmp_path, tiny_csv):
    client = TestClient(create_app(settings(tmp_path)))
    refused = [client.post("/feedback", json=row, headers={"Authorization": f"Bearer {TOKENS[0]}"})
               for row in flipped_rows(tiny_csv)]
    assert {r.status_code for r in refused} == {403}
    assert refused[0].json() == {"detail": "feedback disabled: set FEEDBACK_TOKENS (or FEEDBACK_TOKENS_FILE) to "
                                           "enable it"}
    assert inference_log.read_feedback(tmp_path / "inference.db").empty
    blank = TestClient(create_app(settings(tmp_path, feedback_tokens=" ")))
    assert blank.post("/feedback", json={"text": "Fine.", "label": 1}).status_code == 403


def test_a_wrong_token_gets_401_with_www_authenticate(tmp_path):
    client = TestClient(create_app(settings(tmp_path, feedback_tokens=",".join(TOKENS))))
    response = client.post("/feedback", json={"text": "Fine.", "label": 1}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert "feedback token" in response.json()["detail"]


def test_each_credential_is_rate_limited_with_429_and_retry_after(tmp_path):
    client = TestClient(create_app(settings(tmp_path, feedback_tokens=",".join(TOKENS), feedback_burst=2,
                                            feedback_rate_per_minute=1)))
    first, second = ({"Authorization": f"Bearer {t}"} for t in TOKENS)
    assert [client.post("/feedback", json={"text": f"Fine {i}.", "label": 1}, headers=first).status_code
            for i in range(3)] == [201, 201, 429]
    limited = client.post("/feedback", json={"text": "Again.", "label": 1}, headers=first)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit" in limited.json()["detail"]
    assert client.post("/feedback", json={"text": "Other.", "label": 0}, headers=second).status_code == 201
    senders = inference_log.read_feedback(tmp_path / "inference.db")["sender"].tolist()
    assert senders == [hash_id(TOKENS[0])] * 2 + [hash_id(TOKENS[1])]


def test_tokens_come_from_the_variable_and_the_file(tmp_path, monkeypatch):
    path = tmp_path / "tokens.txt"
    path.write_text("# one a line\nfile-token-1\n\nfile-token-2\n")
    monkeypatch.setenv("FEEDBACK_TOKENS", "env-token, env-token-2")
    monkeypatch.setenv("FEEDBACK_TOKENS_FILE", str(path))
    assert Settings().feedback_token_list == ("env-token", "env-token-2", "file-token-1", "file-token-2")
    monkeypatch.setenv("FEEDBACK_TOKENS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="feedback_tokens_file"):
        Settings()


def test_credentials_match_exactly_and_are_stored_hashed():
    tokens = parse_tokens("a-token,b-token")
    assert match_token("b-token", tokens) == hashlib.sha256(b"b-token").hexdigest()[:12]
    assert match_token("b-toke", tokens) is None and match_token("", tokens) is None
    assert match_token("B-TOKEN", tokens) is None and match_token("b-token", ()) is None


def test_the_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate_per_minute=60, burst=2)
    assert [bucket.take("k", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take("k", now=0.0) == pytest.approx(1.0)
    assert bucket.take("k", now=0.5) == pytest.approx(0.5)
    assert bucket.take("k", now=1.0) == 0.0
    assert bucket.take("other", now=1.0) == 0.0


def _request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


def test_a_prediction_client_is_the_hashed_peer_or_the_balancers_forwarded_entry():
    peer = client_id(_request("10.0.0.9", "6.6.6.6, 203.0.113.7"), trust_forwarded_for=False)
    assert peer == hash_id("addr:10.0.0.9")
    trusted = client_id(_request("10.0.0.9", "6.6.6.6, 203.0.113.7"), trust_forwarded_for=True)
    assert trusted == hash_id("addr:203.0.113.7")  # the entry the balancer appended, not the client's claim
    assert client_id(_request("10.0.0.9"), trust_forwarded_for=True) == peer
