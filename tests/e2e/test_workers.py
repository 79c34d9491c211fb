"""Real Celery and RQ workers, as in production, over a SQLite file and PostgreSQL.

Each worker is started once per backend (a class-scoped scenario): its parent process touches
the database before forking (a session in its context, an idle pooled connection with a TEMP
table), then the test sends tasks/jobs and reads what each process saw from a journal in Redis
(see tests/e2e/worker_app.py). The tests below check the scenario's results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")
pytest.importorskip("rq")

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import select

from tests.conftest import BACKENDS, make_database, reset_postgres
from tests.e2e import worker_app
from tests.models import Base, User
from tests.redis_server import close_celery_clients
from uow import Database

ROOT = Path(__file__).resolve().parents[2]
RESULT_TIMEOUT = 60.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Celery rounds: two tasks each, meeting at a rendezvous, so each child runs one per round.
CELERY_ROUNDS = ["create", "diagnose", "create", "fail", "create", "diagnose"]
# RQ jobs, run one after another by one worker, each in its own work horse.
RQ_JOBS = ["create", "diagnose", "create", "fail", "create", "diagnose"]


@dataclass
class Run:
    """What a scenario produced: results by label, failures by label and the journal."""

    worker_pid: int
    kinds: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""

    def labels(self, kind: str) -> list[str]:
        return [label for label, k in self.kinds.items() if k == kind]

    def entries(self, phase: str) -> list[dict[str, Any]]:
        return [entry for entry in self.journal if entry["phase"] == phase]

    def start_of(self, label: str) -> dict[str, Any]:
        (entry,) = [e for e in self.entries("start") if e["label"] == label]
        return entry

    def next_in_process(self, label: str) -> dict[str, Any] | None:
        """The start entry of the task that the same process ran right after `label`."""
        start = self.start_of(label)
        following = [
            e
            for e in self.entries("start")
            if e["pid"] == start["pid"] and e["seq"] == start["seq"] + 1
        ]
        return following[0] if following else None


def email(label: str) -> str:
    return f"{label}@example.com"


def emails_in(db: Database) -> set[str]:
    with db.Session() as session:
        return set(session.scalars(select(User.email)))


def worker_env(db: Database, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env["DATABASE_URL"] = db.url.render_as_string(hide_password=False)
    env[worker_app.REDIS_ENV] = redis_url
    return env


def read_journal(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(worker_app.JOURNAL, 0, -1)]


@pytest.fixture(scope="class", params=BACKENDS)
def e2e_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """One empty database per backend and class: the workers of the class share it."""
    backend = str(request.param)
    database = make_database(backend, tmp_path_factory.mktemp(f"workers-{backend}"))
    if backend == "postgresql":
        reset_postgres(database)
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        if backend == "postgresql":
            reset_postgres(database)
        database.dispose()


@pytest.fixture(scope="class")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then wait; kill only if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("the worker did not stop within 30 s of SIGTERM")


# -- Celery ----------------------------------------------------------------------------------


def wait_until_ready(app: Celery, process: subprocess.Popen[bytes], log: Path) -> None:
    # Readiness polling, not synchronisation by sleeping: each ping waits for replies.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not app.control.ping(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the Celery worker did not start:\n{log.read_text()}")


@pytest.fixture(scope="class")
def celery_run(
    e2e_db: Database,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    redis_client.flushdb()
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "tests.e2e.worker_app", "worker"]
    command += ["--pool=prefork", "--concurrency=2", "--loglevel=WARNING"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=worker_env(e2e_db, redis_url), stdout=out, stderr=out
        )
    client = Celery("uow_e2e_client", set_as_current=False)
    worker_app.configure_celery(client, redis_url)
    try:
        wait_until_ready(client, process, log)
        run = Run(worker_pid=process.pid)
        for number, kind in enumerate(CELERY_ROUNDS, start=1):
            pending: dict[str, AsyncResult] = {}
            for side in "ab":
                label = f"{kind[0]}{number}{side}"
                run.kinds[label] = kind
                args: list[Any] = [label] if kind == "diagnose" else [label, email(label)]
                pending[label] = client.send_task(
                    f"uow_e2e.{kind}", args=args, kwargs={"rendezvous": f"round-{number}"}
                )
            for label, result in pending.items():
                try:
                    value = result.get(timeout=RESULT_TIMEOUT, propagate=False)
                except ResultTimeout:
                    pytest.fail(f"no result for {label}; worker log:\n{log.read_text()}")
                if result.successful():
                    run.results[label] = value
                else:
                    run.failures[label] = repr(value)
        run.journal = read_journal(redis_client)
        run.log = log.read_text()
        yield run
    finally:
        close_celery_clients(client)
        stop(process)


def assert_each_created_user_is_stored(db: Database, run: Run, created: list[str]) -> None:
    """Every task or job labelled in `created` committed the user it reported."""
    with db.Session() as session:
        for label in created:
            user = session.get(User, run.results[label]["user_id"])
            assert user is not None
            assert user.email == email(label)


@pytest.mark.slow
class TestCeleryPreforkWorker:
    def test_each_create_task_commits_one_row_the_test_process_can_read(
        self, celery_run: Run, e2e_db: Database
    ) -> None:
        created = celery_run.labels("create")
        assert len(created) == 6
        assert set(celery_run.failures) == set(celery_run.labels("fail")), celery_run.log
        assert emails_in(e2e_db) == {email(label) for label in created}
        assert_each_created_user_is_stored(e2e_db, celery_run, created)

    def test_two_prefork_children_served_the_tasks_and_the_parent_served_none(
        self, celery_run: Run
    ) -> None:
        pids = {entry["pid"] for entry in celery_run.entries("start")}
        assert len(pids) == 2
        assert celery_run.worker_pid not in pids
        # Each child ran one task per round, in order.
        for pid in pids:
            seqs = [e["seq"] for e in celery_run.entries("start") if e["pid"] == pid]
            assert seqs == list(range(1, len(CELERY_ROUNDS) + 1))

    def test_children_forked_after_the_parent_used_the_database_open_their_own_connections(
        self, celery_run: Run
    ) -> None:
        (parent,) = celery_run.entries("parent")
        assert parent["pid"] == celery_run.worker_pid
        assert parent["has_session"] is True
        assert parent["checked_in"] == 1
        firsts = [e for e in celery_run.entries("start") if e["seq"] == 1]
        assert len(firsts) == 2
        for entry in firsts:
            # Neither the parent's session nor its pooled connection reached the child.
            assert entry["has_session"] is False
            assert entry["checked_in"] == 0
        for label in celery_run.labels("diagnose"):
            assert celery_run.results[label]["parent_marker_visible"] is False

    def test_no_task_starts_with_a_session_or_a_connection_left_by_the_previous_task(
        self, celery_run: Run
    ) -> None:
        # The diagnose and failing tasks did leave an open session behind them...
        leaky = celery_run.labels("diagnose") + celery_run.labels("fail")
        ends = [e for e in celery_run.entries("end") if e["label"] in leaky]
        assert len(ends) == len(leaky) == 6
        for end in ends:
            assert (end["has_session"], end["checked_out"], end["in_transaction"]) == (
                True,
                1,
                True,
            )
        # ...and yet the next task in the same process started clean.
        for label in leaky:
            following = celery_run.next_in_process(label)
            if label in {"d6a", "d6b"}:
                assert following is None
                continue
            assert following is not None, label
            assert following["has_session"] is False
            assert following["checked_out"] == 0
        for entry in celery_run.entries("start"):
            assert (entry["has_session"], entry["checked_out"]) == (False, 0), entry

    def test_after_a_failing_task_the_next_task_in_that_process_commits_only_its_own_row(
        self, celery_run: Run, e2e_db: Database
    ) -> None:
        for label in celery_run.labels("fail"):
            assert "RuntimeError" in celery_run.failures[label]
            assert f"{label} failed on purpose" in celery_run.failures[label]
            following = celery_run.next_in_process(label)
            assert following is not None
            assert celery_run.kinds[following["label"]] == "create"
            assert following["label"] in celery_run.results
        # The rows the failing tasks flushed were rolled back, not committed by the next task.
        doomed = {email(label) for label in celery_run.labels("fail")}
        assert not doomed & emails_in(e2e_db)
        for label in ("d6a", "d6b"):
            assert celery_run.results[label]["users"] == 6


# -- RQ --------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def rq_run(e2e_db: Database, redis_url: str, redis_client: redis.Redis) -> Iterator[Run]:
    redis_client.flushdb()
    queue = Queue(worker_app.RQ_QUEUE, connection=redis_client)
    functions = {
        "create": worker_app.create_user_job,
        "diagnose": worker_app.diagnose_job,
        "fail": worker_app.failing_job,
    }
    jobs: dict[str, Job] = {}
    kinds: dict[str, str] = {}
    for number, kind in enumerate(RQ_JOBS, start=1):
        label = f"{kind[0]}{number}"
        kinds[label] = kind
        args: list[Any] = [label] if kind == "diagnose" else [label, email(label)]
        jobs[label] = queue.enqueue(functions[kind], *args)
    command = [sys.executable, "-c", "from tests.e2e.worker_app import run_rq_worker as r; r()"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=worker_env(e2e_db, redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = process.communicate(timeout=RESULT_TIMEOUT)
        run = Run(worker_pid=process.pid, kinds=kinds, log=out.decode(errors="replace"))
        assert process.returncode == 0, run.log
        for label, job in jobs.items():
            job.refresh()
            status = job.get_status()
            if status == JobStatus.FINISHED:
                run.results[label] = job.return_value()
            else:
                result = job.latest_result()
                run.failures[label] = f"{status and status.value}: {result and result.exc_string}"
        run.journal = read_journal(redis_client)
        yield run
    finally:
        stop(process)


@pytest.mark.slow
class TestRqForkingWorker:
    def test_each_create_job_commits_one_row_the_test_process_can_read(
        self, rq_run: Run, e2e_db: Database
    ) -> None:
        created = rq_run.labels("create")
        assert set(rq_run.failures) == {"f4"}, rq_run.log
        assert emails_in(e2e_db) == {email(label) for label in created}
        assert_each_created_user_is_stored(e2e_db, rq_run, created)

    def test_every_job_runs_in_its_own_work_horse_forked_from_a_worker_that_used_the_database(
        self, rq_run: Run
    ) -> None:
        (parent,) = rq_run.entries("parent")
        assert parent["pid"] == rq_run.worker_pid
        assert (parent["has_session"], parent["checked_in"]) == (True, 1)
        pids = [entry["pid"] for entry in rq_run.entries("start")]
        assert len(pids) == len(set(pids)) == len(RQ_JOBS)
        assert rq_run.worker_pid not in pids

    def test_no_job_sees_the_worker_session_or_its_pooled_connection(self, rq_run: Run) -> None:
        for entry in rq_run.entries("start"):
            assert (entry["has_session"], entry["checked_out"], entry["checked_in"]) == (
                False,
                0,
                0,
            ), entry
        for label in rq_run.labels("diagnose"):
            result = rq_run.results[label]
            assert result["parent_marker_visible"] is False
            assert (result["end"]["has_session"], result["end"]["checked_out"]) == (True, 1)

    def test_a_failing_job_is_marked_failed_and_the_next_job_still_works(
        self, rq_run: Run, e2e_db: Database
    ) -> None:
        assert rq_run.failures["f4"].startswith("failed: ")
        assert "RuntimeError: f4 failed on purpose" in rq_run.failures["f4"]
        (end,) = [e for e in rq_run.entries("end") if e["label"] == "f4"]
        assert (end["has_session"], end["checked_out"], end["in_transaction"]) == (True, 1, True)
        assert "user_id" in rq_run.results["c5"]
        assert email("f4") not in emails_in(e2e_db)
        assert rq_run.results["d6"]["users"] == 3
