"""The blog under FastAPI, async: `uvicorn examples.fastapi_async_app.main:create_app --factory`."""
