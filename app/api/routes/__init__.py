"""The API's routers, one module per tag: ``predict``, ``feedback``, ``ops``, ``admin``; ``docs``: the Swagger UI."""
