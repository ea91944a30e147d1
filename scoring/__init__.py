"""The serving-safe core: everything needed to score a text with a registered model, and nothing else.

The serving app, the Docker image, evaluation, monitoring and the batch paths all
score through this package, so they agree on tokenization, long-text windows, the
decision threshold and the runtime. It imports only what the ``serve`` extra
installs (no notebooks, no scikit-learn, no matplotlib); ``tests/test_core_imports.py``
proves it in a virtual environment holding only that extra.

==================  ===========================================================
module              what it holds
==================  ===========================================================
``labels``          label names and the (label, confidence) answer
``config``          ``ScoringConfig``: max_length and the long-text strategy
``scorer``          ``Scorer``: texts → windows → P(positive), in PyTorch
``onnx_runtime``    the same scorer with the forward pass in ONNX Runtime
``onnx_convert``    a transformers classifier → ONNX (fp32) → dynamic int8
``model_files``     reading a logged MLflow transformers model (weights, tokenizer)
``runtimes``        ``load_scorer(uri, backend)``: the one seam for runtimes
``identity``        which registered version a URI or exported folder is
``version_tags``    the model-version tags that more than one side reads
``features``        per-request text features (tokens, unknown-token ratio)
``inference_log``   the prediction log and feedback store (SQLite)
``tracking``        where MLflow state lives; pointing MLflow at it
``clock``           UTC timestamps as the registry and the log write them
==================  ===========================================================
"""
