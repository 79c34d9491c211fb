"""The blog's background jobs under Celery: `celery -A examples.worker.tasks worker`."""
