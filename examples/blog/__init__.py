"""The example applications' domain: a tiny blog (users and posts).

The FastAPI app (`examples/fastapi_app`), the Flask app (`examples/flask_app`) and the worker
(`examples/worker`) all serve this one domain, so each of them shows only what its framework
adds. The folders are the architecture: models and repositories (data), schemas (the pydantic
edge), services (the use cases, which own the units of work), and the container that wires them.
"""
