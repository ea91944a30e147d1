"""Benchmarks of sentiment-mlops (``make bench``): serving vs peers, training, pipeline overhead, quality.

Scripts, not timed tests: each prints its figures as tables and writes them to
``bench/results/<name>.json``; ``python -m bench`` runs them all and refreshes the
figures in ``BENCHMARKS.md``.
"""
