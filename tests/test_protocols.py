"""MLflow's scoring protocol and the Open Inference Protocol (V2) answer exactly what ``/predict`` answers.

The payloads are the ones MLflow's own client code builds (``ScoringServerClient``, ``dump_input_data``,
``convert_input_example_to_serving_input``), each also checked against the parser ``mlflow models serve`` uses;
the V2 bodies follow the protocol's spec.  One real uvicorn server on the learned store.
"""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW
from mlflow.deployments import PredictionsResponse
from mlflow.models import convert_input_example_to_serving_input
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.utils.proto_json_utils import dump_input_data
from serving_helpers import Server

from app.protocols import ProtocolError, check_texts, mlflow_texts, v2_texts

TEXTS = [POSITIVE_REVIEW, NEGATIVE_REVIEW, "Loved every minute 😍🍿", "meh."]


# -- the parsers alone -------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
    {"dataframe_split": {"columns": ["id", "text"], "index": [0, 1, 2, 3],
                         "data": [[i, t] for i, t in enumerate(TEXTS)]}},
    {"dataframe_records": [{"text": t} for t in TEXTS]},
    {"inputs": TEXTS}, {"instances": TEXTS}, {"inputs": {"text": TEXTS}}, {"instances": [{"text": t} for t in TEXTS]},
])
def test_every_mlflow_format_yields_the_texts_in_order(body):
    assert mlflow_texts(body) == TEXTS


@pytest.mark.parametrize("body, message", [
    ([1], "JSON object"), ({}, "got none"), ({"inputs": TEXTS, "instances": TEXTS}, "exactly one"),
    ({"inputs": TEXTS, "params": {"top_k": 2}}, "no params"), ({"inputs": TEXTS, "extra": 1}, "unknown field"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": [["x", "y"]]}}, "no 'text' column"),
    ({"dataframe_records": [{"a": 1, "b": 2}]}, "without a 'text' field"), ({"inputs": 3}, "must be a text"),
])
def test_mlflow_bodies_it_cannot_take_say_why(body, message):
    with pytest.raises(ProtocolError, match=message):
        mlflow_texts(body)


def test_v2_tensor_checks():
    tensor = {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}
    assert v2_texts({"inputs": [tensor]}) == ["a", "b"]
    for change, message in [({"datatype": "FP32"}, "BYTES"), ({"shape": [3]}, "holds 3 elements"),
                            ({"shape": "2"}, "list of non-negative")]:
        with pytest.raises(ProtocolError, match=message):
            v2_texts({"inputs": [{**tensor, **change}]})
    with pytest.raises(ProtocolError, match="exactly one input"):
        v2_texts({"inputs": [tensor, tensor]})


def test_texts_get_the_checks_of_predict():
    assert check_texts(["ok"], 2, 10) == ["ok"]
    for values, message in [([], "no texts"), (["a", "b", "c"], "MAX_BATCH=2"), (["  "], "text 0"),
                            (["ok", 5], "text 1"), (["x" * 11], "MAX_TEXT_CHARS=10")]:
        with pytest.raises(ProtocolError, match=message):
            check_texts(values, 2, 10)


# -- against a live server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(learned_tracking, tmp_path_factory):
    folder = tmp_path_factory.mktemp("protocols")
    srv = Server({"MLFLOW_TRACKING_URI": learned_tracking.tracking_uri, "RELOAD_INTERVAL_S": "0",
                  "INFERENCE_DB": str(folder / "log.db"), "TORCH_THREADS": "1"}, folder / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def expected(server):
    """What /predict answers for each of TEXTS (with its version header)."""
    answers = []
    for text in TEXTS:
        response = server.client.post("/predict", json={"text": text})
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == response.json()["model_version"]
        answers.append(response.json())
    return answers


@pytest.mark.e2e
def test_ready_and_model_report_the_version_in_body_and_header(server):
    ready = server.client.get("/ready")
    assert ready.json() == {"status": "ready", "model_version": "1", "last_reload_error": None, "degraded": []}
    assert ready.headers["X-Model-Version"] == "1" and server.client.get("/model").json()["version"] == "1"
    batch = server.client.post("/predict/batch", json={"texts": TEXTS[:2]})
    assert batch.headers["X-Model-Version"] == batch.json()["model_version"] == "1"


@pytest.mark.e2e
def test_mlflow_scoring_client_gets_what_predict_answers(server, expected):
    client = ScoringServerClient("127.0.0.1", server.port)
    client.ping()
    assert client.get_version().strip()[:1].isdigit()
    frame = pd.DataFrame({"text": TEXTS})
    for data in (frame, TEXTS):  # dataframe_split and inputs, as mlflow's client serialises them
        answer = client.invoke(data)
        assert isinstance(answer, PredictionsResponse)
        assert answer.get_predictions(predictions_format="dataframe").to_dict("records") == expected


@pytest.mark.e2e
def test_every_payload_mlflow_models_serve_accepts_gets_what_predict_answers(server, expected):
    frame = pd.DataFrame({"text": TEXTS})
    payloads = {
        "serving input example": convert_input_example_to_serving_input(frame),
        "dataframe_split": dump_input_data(frame),
        "inputs": dump_input_data(TEXTS),
        "instances": dump_input_data(TEXTS, inputs_key="instances"),
        "dataframe_records": json.dumps({"dataframe_records": frame.to_dict(orient="records")}),
    }
    for name, payload in payloads.items():
        parsed = infer_and_parse_data(json.loads(payload))  # what `mlflow models serve` would read
        assert list(pd.DataFrame(parsed).iloc[:, 0]) == TEXTS, name
        response = server.client.post("/invocations", content=payload, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"predictions": expected}, name
        assert response.headers["X-Model-Version"] == "1"


@pytest.mark.e2e
def test_mlflow_protocol_errors_are_4xx_with_a_message(server):
    post = server.client.post
    wrong = post("/invocations", json={"inputs": ["ok", "   "]})
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "BAD_REQUEST" and "text 1" in wrong.json()[
        "message"]
    assert post("/invocations", content="text\nhi\n", headers={"Content-Type": "text/csv"}).status_code == 415
    broken = post("/invocations", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["message"]


@pytest.mark.e2e
def test_open_inference_protocol_answers_what_predict_answers(server, expected):
    get, post = server.client.get, server.client.post
    assert get("/v2/health/live").json() == {"live": True} and get("/v2/health/ready").json() == {"ready": True}
    assert get("/v2").json()["name"] == "sentiment-mlops"
    meta = get("/v2/models/sentiment").json()
    assert meta["versions"] == ["1"] and meta["inputs"][0]["datatype"] == "BYTES"
    assert get("/v2/models/sentiment/versions/1/ready").json() == {"name": "sentiment", "ready": True}
    body = {"id": "req-7", "inputs": [{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]}
    for path in ("/v2/models/sentiment/infer", "/v2/models/sentiment/versions/1/infer"):
        response = post(path, json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["model_name"], answer["model_version"], answer["id"]) == ("sentiment", "1", "req-7")
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["sentiment"]["shape"] == outputs["confidence"]["shape"] == [len(TEXTS)]
        assert [{"sentiment": s, "confidence": c, "model_version": answer["model_version"]} for s, c in
                zip(outputs["sentiment"]["data"], outputs["confidence"]["data"], strict=True)] == expected
        assert response.headers["X-Model-Version"] == "1"
    assert post("/v2/models/other/infer", json=body).status_code == 404
    assert post("/v2/models/sentiment/versions/9/infer", json=body).status_code == 404
    bad = post("/v2/models/sentiment/infer", json={"inputs": [{**body["inputs"][0], "datatype": "FP32"}]})
    assert bad.status_code == 400 and "BYTES" in bad.json()["error"]
    assert not {p for p in httpx.get(server.url + "/openapi.json").json()["paths"] if p.startswith(("/v2", "/inv"))}


@pytest.mark.e2e
def test_tritons_own_v2_client_gets_what_predict_answers(server, expected):
    """tritonclient's HTTP client (also what KServe V2 clients speak): health, metadata, infer with a BYTES tensor."""
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("sentiment")
        metadata = client.get_model_metadata("sentiment")
        assert metadata["versions"] == ["1"] and metadata["inputs"][0]["datatype"] == "BYTES"
        text = triton.InferInput("text", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=False)
        outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("sentiment", "confidence")]
        result = client.infer("sentiment", [text], outputs=outputs, request_id="req-9")
        answer = result.get_response()
        assert (answer["model_name"], answer["model_version"], answer["id"]) == ("sentiment", "1", "req-9")
        sentiments = [s.decode() if isinstance(s, bytes) else s for s in result.as_numpy("sentiment").tolist()]
        confidences = result.as_numpy("confidence").tolist()
        assert [{"sentiment": s, "confidence": c, "model_version": "1"}
                for s, c in zip(sentiments, confidences, strict=True)] == expected
        # Triton's binary tensor extension is not part of the protocol: a 4xx that says so, not a crash
        text.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=True)
        with pytest.raises(triton.InferenceServerException) as refused:
            client.infer("sentiment", [text])
        assert refused.value.status() == "400" and "binary_data=False" in refused.value.message()
    finally:
        client.close()
