"""The blog under FastAPI: `uvicorn examples.fastapi_app.main:create_app --factory`."""
