"""Read replicas: `uow.read_only()` reads from a real streaming replica of the test server.

The module starts a hot standby of the test PostgreSQL server (`pg_basebackup -R`) on another
loopback port, as the server's owner (like scripts/with-postgres), and stops and deletes it at
the end of the module, also after a failure. Without the PostgreSQL binaries the tests skip
(fail with UOW_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from math import inf
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Integer, String, event, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories._connection import BEGUN, LAZY
from repositories.async_repository import AsyncRepository
from repositories.repository import Repository
from tests.conftest import REQUIRE_POSTGRES, postgres_url
from tests.servers import free_port
from uow import AsyncDatabase, AsyncUnitOfWork, Database, UnitOfWork
from uow.errors import SettingsError, UnitOfWorkError
from uow.settings import DatabaseSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "replica_test_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Uow(UnitOfWork):
    items: Repository[Item]


class AsyncUow(AsyncUnitOfWork):
    items: AsyncRepository[Item]


def _find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).exists():
            return str(directory / name)
    return None


def _as_owner(*command: str) -> subprocess.CompletedProcess[str]:
    if os.getuid() == 0:
        line = " ".join(f"'{part}'" for part in command)
        command = ("su", "postgres", "-s", "/bin/sh", "-c", line)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


class Replica:
    def __init__(self, url: str, pg_ctl: str, datadir: str) -> None:
        self.url = url
        self.pg_ctl = pg_ctl
        self.datadir = datadir

    def stop(self) -> None:
        _as_owner(self.pg_ctl, "-D", self.datadir, "-m", "fast", "-w", "stop")


def _wait_replayed(primary: Database, replica_url: str) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    with primary.engine.connect() as connection:
        lsn = connection.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()
    probe = Database(replica_url)
    try:
        deadline = time.monotonic() + 60
        with probe.engine.connect() as connection:
            query = text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)")
            while not connection.execute(query, {"lsn": lsn}).scalar_one():
                assert time.monotonic() < deadline, "the replica did not catch up in 60 s"
                time.sleep(0.05)  # polling the server's replay position, not a timing guess
    finally:
        probe.dispose()


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    primary_url = postgres_url()
    pg_ctl, basebackup = _find_bin("pg_ctl"), _find_bin("pg_basebackup")
    if pg_ctl is None or basebackup is None:
        reason = "no pg_ctl / pg_basebackup binaries to start a replica"
        if REQUIRE_POSTGRES:
            pytest.fail(f"UOW_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    url = make_url(primary_url)
    root = tempfile.mkdtemp(prefix="uow-replica.")
    if os.getuid() == 0:
        shutil.chown(root, "postgres")
    datadir = f"{root}/data"
    port = free_port()
    replica_url = url.set(port=port).render_as_string(hide_password=False)
    replica = Replica(replica_url, pg_ctl, datadir)
    primary = Database(primary_url)
    Base.metadata.create_all(primary.engine)
    try:
        backup = _as_owner(
            basebackup, "-h", "127.0.0.1", "-p", str(url.port), "-U", "postgres",
            "-D", datadir, "-R", "-X", "stream", "--no-sync", "--checkpoint=fast",
        )  # fmt: skip
        assert backup.returncode == 0, backup.stderr
        options = f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c hot_standby=on"
        # At least the primary's settings (a standby refuses to run with fewer connections).
        options += " -c max_connections=200 -c fsync=off"
        started = _as_owner(
            pg_ctl, "-D", datadir, "-l", f"{root}/replica.log", "-w", "-t", "60", "-o", options,
            "start",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr + Path(f"{root}/replica.log").read_text()
        _wait_replayed(primary, replica_url)
        yield replica
    finally:
        replica.stop()
        Base.metadata.drop_all(primary.engine)
        primary.dispose()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(replica: Replica) -> Iterator[Database]:
    database = Database(postgres_url(), replicas=[replica.url], replica_lag_window=60)
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {Item.__tablename__}"))
    _wait_replayed(database, replica.url)
    yield database
    database.dispose()


def _async_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(False)


IN_RECOVERY = text("SELECT pg_is_in_recovery()")


def _in_recovery(session: Any) -> bool:
    return bool(session.execute(IN_RECOVERY).scalar_one())


def test_read_only_reads_from_the_replica_and_writes_go_to_the_primary(db: Database) -> None:
    uow = Uow(db)
    with uow.read_only():
        assert _in_recovery(uow.session)
        assert db.s() is uow.session
    with uow:
        assert not _in_recovery(uow.session)


def test_lazy_begin_applies_on_the_replica(db: Database) -> None:
    uow = Uow(db)
    with uow.read_only():
        assert uow.items.count() == 0
        info = uow.session.connection().info
        assert info.get(LAZY) is True  # the replica engine got the primary's set-up
        assert not info.get(BEGUN)  # the reads sent no BEGIN
        assert _in_recovery(uow.session)


def _turns(uow: Uow, blocks: int) -> list[bool]:
    """For each of `blocks` read-only blocks, whether it read from a replica."""
    seen = []
    for _ in range(blocks):
        with uow.read_only():
            seen.append(_in_recovery(uow.session))
    return seen


def test_round_robin_over_the_replicas(replica: Replica) -> None:
    # The primary's URL as a second "replica" makes the turns visible.
    db = Database(postgres_url(), replicas=[replica.url, postgres_url()])
    try:
        assert _turns(Uow(db), 4) == [True, False, True, False]
    finally:
        db.dispose()


async def test_async_read_only_reads_from_the_replica(replica: Replica) -> None:
    adb = AsyncDatabase(_async_url(postgres_url()), replicas=[_async_url(replica.url)])
    uow = AsyncUow(adb)
    try:
        async with uow.read_only():
            assert (await uow.session.execute(IN_RECOVERY)).scalar_one()
            assert await uow.items.count() == 0
        async with uow:
            assert not (await uow.session.execute(IN_RECOVERY)).scalar_one()
    finally:
        await adb.dispose()


def test_writes_in_read_only_fail_clearly(db: Database) -> None:
    uow = Uow(db)
    with pytest.raises(UnitOfWorkError, match="read_only"), uow.read_only():
        uow.items.create(name="x")
    with pytest.raises(UnitOfWorkError, match="FOR UPDATE"), uow.read_only():
        uow.session.execute(select(Item).with_for_update()).all()
    # What the session cannot see as a write, the replica refuses (SQLSTATE 25006).
    with pytest.raises(DBAPIError, match="read-only transaction"), uow.read_only():
        uow.session.execute(text(f"INSERT INTO {Item.__tablename__} (name) VALUES ('x')"))
    with uow:
        assert uow.items.count() == 0


async def test_async_writes_in_read_only_fail_clearly(replica: Replica) -> None:
    adb = AsyncDatabase(_async_url(postgres_url()), replicas=[_async_url(replica.url)])
    uow = AsyncUow(adb)
    try:
        with pytest.raises(UnitOfWorkError, match="read_only"):
            async with uow.read_only():
                await uow.items.create(name="x")
    finally:
        await adb.dispose()


INSERT = text(f"INSERT INTO {Item.__tablename__} (name) VALUES ('x')")


@pytest.mark.parametrize(
    ("replicas", "options"),
    [([], {}), ([], {"lazy_begin": False}), (["dead"], {})],
    ids=["no replicas", "eager BEGIN", "no replica answers"],
)
def test_the_primary_refuses_sql_writes_in_read_only_too(
    db: Database, replicas: list[str], options: dict[str, Any]
) -> None:
    # Where read_only() runs on the primary, its transaction is READ ONLY there too: writes
    # the session cannot see (SQL text, COPY) fail at the server, as on a replica.
    dead = make_url(postgres_url()).set(port=free_port()).render_as_string(False)
    primary = Database(
        postgres_url(),
        {"pool_size": 1, "max_overflow": 0},  # the read-only block's connection is reused
        replicas=[dead for _ in replicas],
        **options,
    )
    uow = Uow(primary)
    try:
        with pytest.raises(DBAPIError, match="read-only transaction"), uow.read_only():
            uow.session.execute(INSERT)
        with pytest.raises(DBAPIError, match="read-only transaction"), uow.read_only():
            uow.items.bulk_create([{"name": "x"}], return_objects=False)  # COPY
        with uow.read_only():
            assert uow.items.count() == 0
        with uow:  # the same connection, writable again
            uow.session.execute(INSERT)
            uow.items.bulk_create([{"name": "y"}], return_objects=False)
        with uow:
            assert uow.items.count() == 2
    finally:
        primary.dispose()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_the_primary_refuses_sql_writes_in_async_read_only_too(
    db: Database, driver: str
) -> None:
    url = make_url(postgres_url()).set(drivername=f"postgresql+{driver}")
    adb = AsyncDatabase(url, {"pool_size": 1, "max_overflow": 0})
    uow = AsyncUow(adb)
    try:
        with pytest.raises(DBAPIError, match="read-only transaction"):
            async with uow.read_only():
                await uow.session.execute(INSERT)
        async with uow:
            await uow.session.execute(INSERT)
        async with uow:
            assert await uow.items.count() == 1
    finally:
        await adb.dispose()


@pytest.fixture
def paused(db: Database, replica: Replica) -> Iterator[None]:
    """Replay paused on the replica: it sees nothing written from now on, until the end."""
    control = Database(replica.url)
    try:
        with control.engine.connect() as connection:
            connection.execute(text("SELECT pg_wal_replay_pause()"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_wal_replay_resume()"))
                connection.commit()
    finally:
        control.dispose()


def _in_fresh_context(fn: Callable[[], Any]) -> Any:
    """Run `fn` in a new thread: a context that has committed nothing."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_read_your_writes_while_replay_is_paused(db: Database, paused: None) -> None:
    uow = Uow(db)
    with uow:
        uow.items.create(name="ada")
        with uow.read_only():  # nested in a write block: the same transaction
            assert not _in_recovery(uow.session)
            assert uow.items.count() == 1
    with uow.read_only():  # right after this context's write: on the primary
        assert not _in_recovery(uow.session)
        assert uow.items.count() == 1

    def elsewhere() -> tuple[bool, int]:
        with uow.read_only():
            return _in_recovery(uow.session), uow.items.count()

    # Another context goes to the replica, which has not replayed the write.
    assert _in_fresh_context(elsewhere) == (True, 0)


def test_the_window_ends(replica: Replica, paused: None) -> None:
    db = Database(postgres_url(), replicas=[replica.url], replica_lag_window=0)
    uow = Uow(db)
    try:
        with uow:
            uow.items.create(name="ada")
        with uow.read_only():
            assert _in_recovery(uow.session)
            assert uow.items.count() == 0  # replay is paused
    finally:
        db.dispose()


def test_a_read_only_block_commits_nothing_and_leaves_no_window(db: Database) -> None:
    uow = Uow(db)
    with uow:
        uow.items.count()  # a block that only read does not pin later reads to the primary
    with uow.read_only():
        assert _in_recovery(uow.session)


def test_an_unreachable_replica_falls_back_to_the_primary(replica: Replica) -> None:
    dead = make_url(replica.url).set(port=free_port()).render_as_string(False)
    db = Database(postgres_url(), replicas=[dead])
    uow = Uow(db)
    try:
        with uow.read_only():
            assert not _in_recovery(uow.session)
    finally:
        db.dispose()


def test_an_unreachable_replica_is_left_out_for_a_while(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = make_url(replica.url).set(port=free_port()).render_as_string(False)
    db = Database(postgres_url(), replicas=[dead, replica.url])
    attempts: list[str] = []
    event.listen(db.replica_engines[0], "do_connect", lambda *_: attempts.append("dead"))
    uow = Uow(db)
    try:
        # The dead replica's first turn costs one attempt; its next turns go to the other.
        assert (_turns(uow, 4), attempts) == ([True] * 4, ["dead"])
        monkeypatch.setattr(db, "_replica_down_until", [-inf, -inf])  # as after 5 s
        with uow.read_only():
            assert _in_recovery(uow.session)
        assert attempts == ["dead", "dead"]
    finally:
        db.dispose()


def test_bad_replicas_are_refused() -> None:
    with pytest.raises(TypeError, match="list of URLs"):
        Database("sqlite://", replicas="sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replica_lag_window"):
        Database("sqlite://", replicas=[], replica_lag_window=-1)


async def test_with_the_replica_stopped_read_only_still_works(replica: Replica) -> None:
    # The last test of the module: it stops the replica (the fixture's stop is then a no-op).
    db = Database(postgres_url(), replicas=[replica.url])
    adb = AsyncDatabase(_async_url(postgres_url()), replicas=[_async_url(replica.url)])
    uow, async_uow = Uow(db), AsyncUow(adb)

    async def async_in_recovery() -> bool:
        async with async_uow.read_only():
            return bool((await async_uow.session.execute(IN_RECOVERY)).scalar_one())

    try:
        with uow.read_only():  # a pooled connection to the replica, which the stop ends
            assert _in_recovery(uow.session)
        assert await async_in_recovery()
        replica.stop()
        with uow.read_only():
            assert not _in_recovery(uow.session)
            assert uow.items.count() >= 0
        assert not await async_in_recovery()
    finally:
        db.dispose()
        await adb.dispose()


def test_replica_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = f"sqlite:///{tmp_path}/r1.db", f"sqlite:///{tmp_path}/r2.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/primary.db")
    monkeypatch.setenv("DATABASE_REPLICA_URLS", f" {first}, {second} ")
    monkeypatch.setenv("DATABASE_REPLICA_LAG_WINDOW", "0.5")
    settings = DatabaseSettings()
    assert settings.replica_urls == (first, second)
    db = settings.create_database()
    assert [str(engine.url) for engine in db.replica_engines] == [first, second]
    assert db.replica_lag_window == 0.5
    db.dispose()
    monkeypatch.setenv("DATABASE_REPLICA_URLS", json.dumps([second]))
    assert DatabaseSettings().replica_urls == (second,)
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "")
    assert DatabaseSettings().replica_urls == ()


def test_bad_replica_settings_name_the_variable_and_hide_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    monkeypatch.setenv("DATABASE_REPLICA_URLS", '["postgresql+psycopg://u:s3cret@h/db"')
    with pytest.raises(SettingsError, match="DATABASE_REPLICA_URLS") as error:
        DatabaseSettings()
    assert "s3cret" not in str(error.value)
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "nonsense://u:s3cret@h/db")
    with pytest.raises(SettingsError, match="DATABASE_REPLICA_URLS") as error:
        DatabaseSettings()
    assert "s3cret" not in str(error.value)
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "postgresql+psycopg://u:s3cret@h/db")
    assert "s3cret" not in repr(DatabaseSettings())


def test_a_read_only_block_commits_nothing_and_runs_its_callbacks(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/app.db")
    db.create_all(Base.metadata)
    uow, ran = Uow(db), []
    with uow.read_only():
        with pytest.raises(UnitOfWorkError, match="flush"):
            uow.items.create(name="x")
        uow.on_commit(lambda: ran.append(1))
    assert ran == [1]
    with uow:
        assert uow.items.count() == 0
    db.dispose()
