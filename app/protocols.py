"""The request bodies of the protocols other model servers speak, read into the texts ``/predict/batch`` scores.

* MLflow's scoring protocol (``mlflow models serve``, ``POST /invocations``): a JSON object with exactly one of
  ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (and optionally ``params``, which this
  model has none of).  The text column is ``text`` (or the only column there is).
* The Open Inference Protocol (KServe V2, MLServer, Triton: ``POST /v2/models/{name}/infer``): one input tensor
  of datatype ``BYTES`` whose ``data`` (flat or nested, row-major) holds the texts and whose ``shape`` multiplies
  out to their number.

Every way a body can be wrong raises :class:`ProtocolError` with a message; the texts then pass the same checks
as ``/predict/batch`` (:func:`check_texts`), so every endpoint accepts and refuses the same texts.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.schemas import Text

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
TEXT_COLUMN = "text"
_TEXTS = TypeAdapter(list[Text])


class ProtocolError(ValueError):
    """A request body the protocol (or this model) cannot take; ``str(err)`` says why."""


def check_texts(values: list[Any], max_batch: int, max_chars: int) -> list[str]:
    """``values`` if they are 1 to ``max_batch`` texts that ``/predict`` would accept, else :class:`ProtocolError`."""
    if not values:
        raise ProtocolError("no texts: send at least one")
    if len(values) > max_batch:
        raise ProtocolError(f"{len(values)} texts; the limit is MAX_BATCH={max_batch} per request")
    try:
        texts = _TEXTS.validate_python(values)
    except ValidationError as err:
        first = err.errors()[0]
        raise ProtocolError(f"text {first['loc'][0]}: {first['msg']}") from None
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise ProtocolError(f"text {i}: {len(text)} characters; the limit is MAX_TEXT_CHARS={max_chars}")
    return texts


def _column(columns: list[Any]) -> int:
    if TEXT_COLUMN in columns:
        return columns.index(TEXT_COLUMN)
    if len(columns) == 1:
        return 0
    raise ProtocolError(f"no {TEXT_COLUMN!r} column among {columns[:10]!r}")


def _record_text(record: Any) -> Any:
    if not isinstance(record, dict):
        return record
    if TEXT_COLUMN in record:
        return record[TEXT_COLUMN]
    if len(record) == 1:
        return next(iter(record.values()))
    raise ProtocolError(f"a record without a {TEXT_COLUMN!r} field: {sorted(record)[:10]!r}")


def mlflow_texts(body: Any) -> list[Any]:
    """The texts of an ``/invocations`` JSON body (not yet checked: see :func:`check_texts`)."""
    if not isinstance(body, dict):
        raise ProtocolError(f"the body must be a JSON object with exactly one of {', '.join(MLFLOW_FORMATS)}")
    given = [key for key in MLFLOW_FORMATS if key in body]
    if len(given) != 1:
        raise ProtocolError(f"the body must have exactly one of {', '.join(MLFLOW_FORMATS)}; got "
                            f"{', '.join(given) or 'none'}")
    unknown = sorted(set(body) - {*MLFLOW_FORMATS, "params"})
    if unknown:
        raise ProtocolError(f"unknown field(s) {unknown[:10]!r}")
    if body.get("params"):
        raise ProtocolError(f"this model takes no params; got {sorted(body['params'])[:10]!r}")
    key, data = given[0], body[given[0]]
    if key == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise ProtocolError('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
        column = _column(list(data.get("columns") or [TEXT_COLUMN]))
        rows = data["data"]
        if not all(isinstance(row, list) and len(row) > column for row in rows):
            raise ProtocolError(f"dataframe_split: every row of data must be a list with column {column}")
        return [row[column] for row in rows]
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise ProtocolError('dataframe_records must be a list of objects, e.g. [{"text": "..."}]')
        return [_record_text(record) for record in data]
    # inputs / instances: a text, a list of texts or records, or {"text": text or list of texts}
    if isinstance(data, dict):
        if TEXT_COLUMN not in data:
            raise ProtocolError(f"{key} as an object needs a {TEXT_COLUMN!r} field")
        data = data[TEXT_COLUMN]
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise ProtocolError(f"{key} must be a text, a list of texts or {{{TEXT_COLUMN!r}: [...]}}")
    return [_record_text(item) for item in data]


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in _flatten(item)]


def v2_texts(body: Any) -> list[Any]:
    """The texts of an Open Inference Protocol ``infer`` body (not yet checked: see :func:`check_texts`)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ProtocolError('the body must be {"inputs": [{"name": ..., "shape": [...], "datatype": "BYTES", '
                            '"data": [...]}]}')
    inputs = body["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"this model takes exactly one input tensor (the texts); got {len(inputs)}")
    tensor = inputs[0]
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise ProtocolError(f"input tensor without {', '.join(missing)}")
    if tensor["datatype"] != "BYTES":
        raise ProtocolError(f"input {tensor['name']!r}: datatype must be BYTES (texts), not {tensor['datatype']!r}")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input {tensor['name']!r}: shape must be a list of non-negative integers")
    texts = _flatten(tensor["data"])
    if math.prod(shape) != len(texts):
        raise ProtocolError(f"input {tensor['name']!r}: shape {shape} holds {math.prod(shape)} elements, "
                            f"data has {len(texts)}")
    return texts


def v2_outputs(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``/predict``'s answers as V2 output tensors: ``sentiment`` (BYTES) and ``confidence`` (FP64), shape [n]."""
    n = len(predictions)
    return [
        {"name": "sentiment", "shape": [n], "datatype": "BYTES", "data": [p["sentiment"] for p in predictions]},
        {"name": "confidence", "shape": [n], "datatype": "FP64", "data": [p["confidence"] for p in predictions]},
    ]
