"""Optional framework integrations: `fastapi`, `flask`, `celery` and `rq`.

Each module imports its framework when you import the module, and raises an `ImportError` naming
the extra to install (`pip install "uow-repositories[fastapi]"`) when the framework is missing.
Importing `uow` never imports any of them. (`uow.containers` imports dependency-injector,
whose wiring module imports `fastapi.params` by itself when FastAPI is installed.)
"""
