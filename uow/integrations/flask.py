"""Flask: the context-local session is removed at the end of every request (and app context),
and the library's errors get their HTTP answers.

```python
app = Flask(__name__)
init_app(app, db)
install_exception_handlers(app)  # DoesNotExist → 404, a unique violation → 409
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from repositories._integrity import is_unique_violation
from uow.errors import DoesNotExist
from uow.integrations._common import missing, remove_sessions

if TYPE_CHECKING:
    from flask import Flask

    from uow.integrations._common import DatabaseSource

try:
    import flask  # noqa: F401
except ImportError as err:
    raise missing("flask", err) from err

__all__ = [
    "CONFLICT_DETAIL",
    "does_not_exist_handler",
    "init_app",
    "install_exception_handlers",
    "unique_violation_handler",
]

CONFLICT_DETAIL = "a row with the same unique value already exists"
"""The `detail` of a 409 (as FastAPI's): never the database's message, which quotes values."""

_Json = tuple[dict[str, Any], int]


def init_app(app: Flask, *databases: DatabaseSource) -> None:
    """Remove each database's context-local session when an app context ends.

    Flask tears the app context down after every request, including one whose view raised, and
    after `with app.app_context():` in scripts and CLI commands, so no session (and no pooled
    connection) outlives a request. This is the shortcut for:

    ```python
    @app.teardown_appcontext
    def remove_session(exc):
        db.s.remove()
    ```

    Args:
        app: the Flask application.
        databases: the Databases, or callables returning them (such as a container's
            `db.database` provider, resolved at each teardown so that overrides apply).
    """
    sources = tuple(databases)

    def _remove_sessions(exc: BaseException | None) -> None:
        remove_sessions(sources)

    app.teardown_appcontext(_remove_sessions)
    app.extensions.setdefault("uow", []).extend(sources)


def install_exception_handlers(app: Flask) -> None:
    """Answer `DoesNotExist` with a 404 and a unique violation with a 409, app-wide.

    The same answers, as JSON `{"detail": ...}`, as
    [FastAPI's][uow.integrations.fastapi.install_exception_handlers]. This is the shortcut for:

    ```python
    app.register_error_handler(DoesNotExist, does_not_exist_handler)
    app.register_error_handler(IntegrityError, unique_violation_handler)
    ```

    Other integrity errors (NOT NULL, foreign key, CHECK) stay server errors (500).
    """
    app.register_error_handler(DoesNotExist, does_not_exist_handler)
    app.register_error_handler(IntegrityError, unique_violation_handler)


def does_not_exist_handler(error: DoesNotExist) -> _Json:
    """404, with the error's message as `detail` (the library's names the model, no values)."""
    return {"detail": str(error)}, 404


def unique_violation_handler(error: IntegrityError) -> _Json:
    """409 for a unique violation; any other integrity error is raised again (a 500).

    The `detail` is [`CONFLICT_DETAIL`][uow.integrations.flask.CONFLICT_DETAIL].
    """
    if not is_unique_violation(error):
        raise error
    return {"detail": CONFLICT_DETAIL}, 409
