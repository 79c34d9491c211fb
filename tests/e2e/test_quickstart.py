"""The quickstart example (`make demo`) runs as a user runs it and says what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import postgres_url

ROOT = Path(__file__).resolve().parents[2]


def run_quickstart(url: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), url],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_on_a_sqlite_file_tells_the_story(tmp_path: Path) -> None:
    out = run_quickstart(f"sqlite:///{tmp_path / 'quickstart.db'}", tmp_path)
    assert "first_or_create made user #1" in out
    assert "first_or_create again found user #1, name still 'Ada'" in out
    assert "rolled back to its savepoint" in out
    assert "holds 2 users (ada@example.com, grace@example.com) and 1 post" in out
    # on_commit hooks ran after their commits, in order, and never for the rolled-back work.
    assert out.index("first_or_create made") < out.index("on_commit: the first unit of work")
    assert "on_commit: the outer block committed Grace." in out
    assert "'email': 'ada@example.com'" in out


def test_quickstart_runs_on_postgresql(tmp_path: Path) -> None:
    url = postgres_url()
    engine = create_engine(url)
    with engine.begin() as connection:  # start from an empty schema
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    try:
        out = run_quickstart(url, tmp_path)
    finally:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    assert "holds 2 users (ada@example.com, grace@example.com) and 1 post" in out
