"""What the throwaway servers of the test run (Redis, PgBouncer, a replica) have in common."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary(name: str, package: str, required_variable: str, *places: str) -> str:
    """The executable `name` (on PATH, or at one of `places`), or skip the test with a reason;
    fail instead when the environment variable `required_variable` is "1" (CI sets it)."""
    found = [shutil.which(name), *places]
    binary = next((path for path in found if path and os.access(path, os.X_OK)), None)
    if binary:
        return binary
    reason = f"no {name} on PATH (Debian: apt-get install {package})"
    if os.environ.get(required_variable) == "1":
        pytest.fail(f"{required_variable}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
