"""The HTTP API: the routers (:mod:`app.api.routes`), their dependencies (:mod:`app.api.deps`), all combined in
:data:`app.api.router.api_router`."""
