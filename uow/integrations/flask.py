"""Flask: the context-local session is removed at the end of every request (and app context).

```python
app = Flask(__name__)
init_app(app, db)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uow.integrations._common import missing, remove_sessions

if TYPE_CHECKING:
    from flask import Flask

    from uow.integrations._common import DatabaseSource

try:
    import flask  # noqa: F401
except ImportError as err:
    raise missing("flask", err) from err

__all__ = ["init_app"]


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
