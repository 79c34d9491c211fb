"""A throwaway Redis server for the worker tests, started by the test run itself.

`redis-server` comes from the machine (Debian's `redis-server` package, which `.ci/run`
installs). Without it the tests that need Redis skip with a reason, unless UOW_REQUIRE_REDIS=1
(set by `.ci/run`), where they fail.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tests.servers import free_port, server_binary

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

STARTUP_TIMEOUT = 20.0


def redis_server_binary() -> str:
    """The redis-server executable, or skip (fail when UOW_REQUIRE_REDIS=1) if there is none."""
    return server_binary("redis-server", "redis-server", "UOW_REQUIRE_REDIS")


@contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """Start redis-server on a free loopback port; yield its URL; stop it."""
    binary = redis_server_binary()
    port = free_port()
    command = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=directory
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    # Readiness polling (not synchronisation by sleeping): ask until the server answers PING.
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}", pytrace=False)
        try:
            if client.ping():
                client.close()
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def close_celery_clients(*apps: Any) -> None:
    """Close the broker and backend connections this (test) process opened as a Celery client.

    kombu keeps global connection pools with after-fork hooks: if they still hold channels, a
    child that this process forks later (the PostgreSQL race tests fork eight) tries to close
    them in its after-fork hook and blocks reading a socket it shares with us.
    """
    import kombu.pools

    kombu.pools.reset()  # closes the global pools, the producer pools included
    for app in apps:
        app.close()
        # Let the app make new pools when used again, as Celery does in a forked child.
        app.amqp._producer_pool = None
