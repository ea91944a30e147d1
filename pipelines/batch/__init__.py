"""The batch stage: score a file of reviews with a registered model, on one machine or on Spark.

``files`` reads CSV / TSV / JSONL / Parquet in chunks and writes Parquet / CSV / JSONL; ``rows`` scores one
chunk of cells with the API's scorer and its rules for bad texts; ``model`` resolves ``--model-uri`` to one
version once; ``checkpoint`` keeps finished chunks on disk and publishes the output by rename; ``predict`` is
the local loop (``python -m pipelines predict``) and ``spark`` the same scoring as a Spark pandas UDF
(``python -m pipelines spark-predict``). See docs/batch.md.
"""
