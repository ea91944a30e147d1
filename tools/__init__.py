"""Development tools shared by the tests, the benchmarks and ``make screenshots`` (not installed with the project).

* :mod:`tools.harness`: server processes on free loopback ports (start, wait ready, log tail, stop);
* :mod:`tools.model_store`: an MLflow store holding one small trained, evaluated and promoted model;
* :mod:`tools.screenshots`: the review screenshots (``make screenshots``).
"""
