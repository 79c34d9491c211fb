"""The removal hooks never close the session of a unit of work that is still open."""

from __future__ import annotations

import pytest
from celery import Celery
from flask import Flask
from sqlalchemy import select

from tests.models import AppUnitOfWork, User
from uow import Database
from uow.integrations import celery as celery_integration
from uow.integrations import flask as flask_integration


def emails(db: Database) -> list[str]:
    with db.Session() as session:
        return list(session.scalars(select(User.email).order_by(User.email)))


def test_an_eager_task_sent_inside_a_unit_of_work_does_not_close_its_session(
    db: Database,
) -> None:
    app = Celery("eager", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True
    celery_integration.init_app(app, db)
    uow = AppUnitOfWork(db)

    @app.task
    def noop() -> int:
        return 1

    with uow:
        uow.users.create(email="before@example.com", name="Before")
        assert noop.delay().get() == 1  # task_postrun fires here, inside the block
        uow.users.create(email="after@example.com", name="After")

    assert emails(db) == ["after@example.com", "before@example.com"]
    app.close()


def test_an_eager_task_still_removes_the_session_it_left_outside_a_unit_of_work(
    db: Database,
) -> None:
    app = Celery("eager", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True
    celery_integration.init_app(app, db)

    @app.task
    def read() -> int:
        return len(db.s.scalars(select(User)).all())

    assert read.delay().get() == 0
    assert not db.s.registry.has()
    assert db.engine.pool.checkedout() == 0
    app.close()


def test_a_nested_flask_app_context_inside_a_unit_of_work_does_not_close_its_session(
    db: Database,
) -> None:
    app = Flask(__name__)
    flask_integration.init_app(app, db)
    uow = AppUnitOfWork(db)

    @app.post("/users")
    def create() -> dict[str, int]:
        with uow:
            uow.users.create(email="one@example.com", name="One")
            with app.app_context():  # its teardown runs inside the block
                pass
            uow.users.create(email="two@example.com", name="Two")
        return {"count": 2}

    assert app.test_client().post("/users").status_code == 200
    assert emails(db) == ["one@example.com", "two@example.com"]
    assert db.engine.pool.checkedout() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_hook_removes_the_session_once_the_block_has_closed(db: Database) -> None:
    app = Flask(__name__)
    flask_integration.init_app(app, db)
    with app.app_context():
        db.s.execute(select(1))
        assert db.s.registry.has()
    assert not db.s.registry.has()
    assert db.engine.pool.checkedout() == 0
