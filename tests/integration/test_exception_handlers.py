"""`install_exception_handlers`: the HTTP answers to the library's errors, FastAPI and Flask.

Through the frameworks' real test clients, on SQLite and PostgreSQL (whose drivers report a
unique violation differently).
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask, request
from sqlalchemy.exc import IntegrityError

from tests.models import AppUnitOfWork
from uow import Database
from uow.integrations import fastapi as fastapi_integration
from uow.integrations import flask as flask_integration


def fastapi_app(db: Database) -> FastAPI:
    uow = AppUnitOfWork(db)
    app = FastAPI()
    fastapi_integration.install_exception_handlers(app)

    @app.get("/users/{user_id}")
    def read_user(user_id: int) -> dict[str, str]:
        with uow:
            return {"email": uow.users.one(id=user_id).email}

    @app.post("/users")
    def create_user(email: str, name: str | None = None) -> dict[str, int]:
        with uow:
            # name=None breaks the NOT NULL constraint: an integrity error that is not unique.
            return {"id": uow.users.create(email=email, name=name).id}

    return app


def flask_app(db: Database) -> Flask:
    uow = AppUnitOfWork(db)
    app = Flask(__name__)
    flask_integration.install_exception_handlers(app)

    @app.get("/users/<int:user_id>")
    def read_user(user_id: int) -> dict[str, str]:
        with uow:
            return {"email": uow.users.one(id=user_id).email}

    @app.post("/users")
    def create_user() -> dict[str, int]:
        email, name = request.args["email"], request.args.get("name")
        with uow:
            return {"id": uow.users.create(email=email, name=name).id}

    return app


def add_ada(db: Database) -> None:
    with AppUnitOfWork(db) as uow:
        uow.users.create(email="ada@example.com", name="Ada")


def test_both_integrations_answer_a_conflict_with_the_same_detail() -> None:
    assert fastapi_integration.CONFLICT_DETAIL == flask_integration.CONFLICT_DETAIL


# -- FastAPI -----------------------------------------------------------------------------------


def test_fastapi_answers_does_not_exist_with_404_and_its_message(db: Database) -> None:
    reply = TestClient(fastapi_app(db)).get("/users/42")

    assert reply.status_code == 404
    assert reply.json() == {"detail": "no User matches the lookups"}


def test_fastapi_answers_a_unique_violation_with_409_without_the_databases_message(
    db: Database,
) -> None:
    add_ada(db)

    reply = TestClient(fastapi_app(db)).post(
        "/users", params={"email": "ada@example.com", "name": "A"}
    )

    assert reply.status_code == 409
    assert reply.json() == {"detail": fastapi_integration.CONFLICT_DETAIL}
    assert "ada@example.com" not in reply.text


def test_fastapi_leaves_an_integrity_error_that_is_not_unique_a_server_error(db: Database) -> None:
    client = TestClient(fastapi_app(db), raise_server_exceptions=False)

    assert client.post("/users", params={"email": "grace@example.com"}).status_code == 500
    with pytest.raises(IntegrityError):  # the original error, unchanged, for the server's log
        TestClient(fastapi_app(db)).post("/users", params={"email": "grace@example.com"})


def test_fastapi_conflicts_leave_the_table_as_it_was(db: Database) -> None:
    add_ada(db)

    TestClient(fastapi_app(db)).post("/users", params={"email": "ada@example.com", "name": "A"})

    with AppUnitOfWork(db) as uow:
        assert [user.name for user in uow.users.all()] == ["Ada"]


# -- Flask -------------------------------------------------------------------------------------


def test_flask_answers_does_not_exist_with_404_and_its_message(db: Database) -> None:
    reply = flask_app(db).test_client().get("/users/42")

    assert reply.status_code == 404
    assert reply.json == {"detail": "no User matches the lookups"}


def test_flask_answers_a_unique_violation_with_409_without_the_databases_message(
    db: Database,
) -> None:
    add_ada(db)

    reply = flask_app(db).test_client().post("/users?email=ada@example.com&name=A")

    assert reply.status_code == 409
    assert reply.json == {"detail": flask_integration.CONFLICT_DETAIL}
    assert b"ada@example.com" not in reply.data


def test_flask_leaves_an_integrity_error_that_is_not_unique_a_server_error(db: Database) -> None:
    app = flask_app(db)

    assert app.test_client().post("/users?email=grace@example.com").status_code == 500
    app.testing = True  # Flask then lets the original error through to the test
    with pytest.raises(IntegrityError):
        app.test_client().post("/users?email=grace@example.com")
