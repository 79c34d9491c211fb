"""A throwaway PgBouncer in transaction pooling mode, started by the test run itself.

`pgbouncer` comes from the machine (Debian's `pgbouncer` package, which `.ci/run` installs) and
pools the throwaway PostgreSQL server of `scripts/with-postgres`. Without it the tests that need
it skip with a reason, unless UOW_REQUIRE_PGBOUNCER=1 (set by `.ci/run`), where they fail.

The pool is small (`POOL_SIZE` server connections for many clients), all opened at start, and
lent round-robin (`server_round_robin`: the least recently used idle one first), so even one
client's consecutive transactions, and statements outside a transaction, go to different server
connections: a statement that relies on state another one left on a server connection (a
prepared statement, a session setting) fails there, every time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.servers import free_port, server_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

STARTUP_TIMEOUT = 20.0
POOL_SIZE = 3


def pgbouncer_binary() -> str:
    """The pgbouncer executable (Debian installs it in /usr/sbin, not on every PATH), or skip
    (fail when UOW_REQUIRE_PGBOUNCER=1) if there is none."""
    return server_binary("pgbouncer", "pgbouncer", "UOW_REQUIRE_PGBOUNCER", "/usr/sbin/pgbouncer")


@contextmanager
def running_pgbouncer(postgres_url: str) -> Iterator[str]:
    """Start PgBouncer (transaction pooling) in front of the server at `postgres_url`, on a free
    loopback port; yield `postgres_url` pointed at it; stop it and delete its files."""
    binary = pgbouncer_binary()
    server = make_url(postgres_url)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="uow-pgbouncer."))
    user = server.username or "postgres"
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {directory / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {POOL_SIZE}",
                f"min_pool_size = {POOL_SIZE}",
                "server_round_robin = 1",
                "server_idle_timeout = 0",
                "max_client_conn = 1000",
                f"logfile = {directory / 'pgbouncer.log'}",
                f"pidfile = {directory / 'pgbouncer.pid'}",
                "ignore_startup_parameters = extra_float_digits",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.getuid() == 0:
        # PgBouncer refuses to run as root: it runs as the user PostgreSQL runs as.
        shutil.chown(directory, "postgres")
        for path in directory.iterdir():
            shutil.chown(path, "postgres")
        command[1:1] = ["-u", "postgres"]
    with open(directory / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until_listening(port, process, directory)
        url = server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        open_every_server_connection(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def open_every_server_connection(url: str) -> None:
    """Have PgBouncer open all POOL_SIZE server connections now (again, if a test ended some:
    it reopens them only as needed): as many clients, each holding one in a transaction at the
    same time."""
    engine = create_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None})
    with ExitStack() as stack:
        for _ in range(POOL_SIZE):
            connection = stack.enter_context(engine.connect())
            connection.execute(text("SELECT 1"))  # begins a transaction: the server stays lent
    engine.dispose()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
    # Readiness polling (not synchronisation by sleeping): connect until PgBouncer accepts.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            log = directory / "pgbouncer.log"
            detail = log.read_text() if log.exists() else ""
            stderr = (directory / "stderr.log").read_text()
            pytest.fail(
                f"pgbouncer exited with {process.returncode}: {stderr}{detail}", pytrace=False
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
