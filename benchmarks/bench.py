"""Per-operation cost of the repository API against what users write without it.

    make bench                       # SQLite file + a throwaway PostgreSQL (scripts/with-postgres)
    python benchmarks/bench.py [--quick] [URL ...]

Three columns per operation, measured in the same run on the same database:

- raw driver: sqlite3 / psycopg in autocommit mode, hand-written SQL, one statement per round
  trip and no BEGIN or COMMIT (Django's shape outside `atomic()`);
- SQLAlchemy: a plain `create_engine(url)` with default settings and `with Session(engine) as
  s, s.begin():`, or for the get-or-create family the naive version (SELECT; if nothing, add
  and commit; on a conflict, roll back and SELECT);
- project: the operation in its own `with uow:` block, on the library's `Database(url)`.

The async face gets a table per async driver (asyncpg and psycopg's async connection on
PostgreSQL, aiosqlite on SQLite), measured inside one event loop: the operation in its own
`async with uow:` block on `AsyncDatabase(url)`, against a plain `create_async_engine(url)` with
`async with AsyncSession(engine) as s, s.begin():` (or the naive get-or-create, awaited), and
against the sync project's same operation on the same database.

Per-op costs are the best of several rounds in microseconds; bulk inserts and streams are
timed as a whole. Ratios are time ratios (above 1.00x the project is slower), printed next to
the targets of issue 11. A missed target is reported, never an error. On PostgreSQL started
by scripts/with-postgres, the statements each client sent are read from the server's log.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _async_per_op
import _per_op
import _throughput
import _wire
from _common import Setup

if TYPE_CHECKING:
    from _async_per_op import AsyncTiming
    from _per_op import Timing
    from _throughput import Throughput

LEGEND = """
raw driver: sqlite3 / psycopg in autocommit mode, one statement per round trip, no BEGIN/COMMIT.
SQLAlchemy: a plain create_engine(url), default settings, `with Session(engine) as s,
s.begin():`; for the get-or-create family the naive version (SELECT; add and commit; on a
conflict roll back and SELECT). project: the operation in its own `with uow:` block.
Async tables: AsyncSession is a plain create_async_engine(url), `async with AsyncSession(engine)
as s, s.begin():` (or the naive get-or-create, awaited); project async is the operation in its
own `async with uow:` block on AsyncDatabase(url); project sync the sync table's project column."""

SQLITE_PER_OP = 1.10  # every per-op path, first_or_create miss included
POSTGRES_READS = 0.60  # get, first, first_or_create hit
COPY_VS_CORE = 0.50  # bulk_create(return_objects=False) on PostgreSQL: 2x Core's rows/s
OBJECTS_VS_RETURNING = 1.20  # bulk_create returning objects vs insert(Model).returning(Model)
STREAM_MIB = 10.0  # streaming 200k rows
ASYNC_PER_OP = 1.10  # the async face against plain AsyncSession, every per-op path


def run(url: str, quick: bool) -> list[bool]:
    """Measure and print one database's tables; returns whether each target was met."""
    setup = Setup(url)
    try:
        setup.reset()
        setup.seed(_per_op.SEED)
        per_op = _per_op.measure(setup, quick)
        async_per_op = _async_per_op.measure(setup, quick)
        log = _wire.server_log() if setup.backend == "postgresql" else None
        wire = _wire_counts(setup, log) if log else {}
        bulk_count, bulk = _throughput.bulk(setup, quick)
        floor_count, floor = _throughput.bulk_floor(setup, quick)
        stream, growth = _throughput.stream(setup, quick)
    finally:
        setup.close()
    print(f"\n## {setup.backend}  ({setup.url.render_as_string(hide_password=True)})\n")
    met = _print_per_op(setup.backend, per_op)
    if wire:
        met += _print_wire(wire)
    for driver, timings in async_per_op.items():
        met += _print_async(driver, timings)
    met += _print_throughput(setup.backend, bulk_count, bulk, stream, growth)
    _print_floor(floor_count, floor)
    return met


def _target(backend: str, name: str) -> float | None:
    if backend == "sqlite":
        return SQLITE_PER_OP
    if backend == "postgresql" and name in _per_op.READS:
        return POSTGRES_READS
    return None


def _verdict(ratio: float, target: float | None) -> tuple[str, str, list[bool]]:
    if target is None:
        return "", "", []
    met = ratio <= target
    return f"≤ {target:.2f}x", "yes" if met else "**no**", [met]


def _print_per_op(backend: str, timings: list[Timing]) -> list[bool]:
    print(
        "| operation (µs) | raw driver, autocommit | SQLAlchemy | project "
        "| project / SQLAlchemy | target | met | project / raw |"
    )
    print("|---|---:|---:|---:|---:|---|---|---:|")
    met: list[bool] = []
    for t in timings:
        ratio = t.project / t.plain
        target, verdict, outcome = _verdict(ratio, _target(backend, t.name))
        met += outcome
        baseline = "" if t.baseline == "plain" else f" (vs {t.baseline})"
        print(
            f"| {t.name}{baseline} | {t.raw * 1e6:.0f} | {t.plain * 1e6:.0f} "
            f"| {t.project * 1e6:.0f} | {ratio:.2f}x | {target} | {verdict} "
            f"| {t.project / t.raw:.2f}x |"
        )
    return met


def _print_async(driver: str, timings: list[AsyncTiming]) -> list[bool]:
    wire = all(t.sent for t in timings)
    print(f"\nThe async face on {driver}:\n")
    print(
        "| operation (µs) | SQLAlchemy AsyncSession | project async | project async / "
        "AsyncSession | target | met | project sync | async / sync |"
        + (" statements AsyncSession / project |" if wire else "")
    )
    print("|---|---:|---:|---:|---|---|---:|---:|" + ("---:|" if wire else ""))
    met: list[bool] = []
    for t in timings:
        ratio = t.project / t.plain
        target, verdict, outcome = _verdict(ratio, ASYNC_PER_OP)
        met += outcome
        baseline = "" if t.baseline == "plain" else f" (vs {t.baseline})"
        sent = f" {t.sent['plain']} / {t.sent['project']} |" if wire else ""
        print(
            f"| {t.name}{baseline} | {t.plain * 1e6:.0f} | {t.project * 1e6:.0f} | {ratio:.2f}x "
            f"| {target} | {verdict} | {t.sync * 1e6:.0f} | {t.project / t.sync:.2f}x |{sent}"
        )
    return met


def _wire_counts(setup: Setup, log: Path) -> dict[str, dict[str, int]]:
    """Statements on the wire for one run of each operation, per client, and the round trips
    SQLAlchemy's and the project's took (libpq's trace; their pools hold one warm connection)."""
    counts = {}
    raw = lambda: [setup.raw.conn.pgconn]  # noqa: E731
    plain, project = _wire.pooled_pgconns(setup.plain), _wire.pooled_pgconns(setup.db.engine)
    for op in _per_op.operations(setup):
        fns = {"raw": op.raw, "plain": op.plain, "project": op.project}
        counts[op.name] = {client: _wire.statements(log, client, fn) for client, fn in fns.items()}
        for client, pgconns in (("raw", raw), ("plain", plain), ("project", project)):
            counts[op.name][f"{client} trips"] = _wire.round_trips(pgconns, fns[client])
    return counts


def _print_wire(counts: dict[str, dict[str, int]]) -> list[bool]:
    print(
        "\nStatements the server received for one operation (its log, `log_statement=all`), "
        "and the network round trips they took (libpq's protocol trace):\n"
    )
    print(
        "| operation | raw driver | SQLAlchemy | project | target | met "
        "| round trips: raw / SQLAlchemy / project | target | met |"
    )
    print("|---|---:|---:|---:|---|---|---:|---|---|")
    met: list[bool] = []
    for name, sent in counts.items():
        trips = f"{sent['raw trips']} / {sent['plain trips']} / {sent['project trips']}"
        if name in _per_op.READS:
            target, ok = "exactly 1", sent["project"] == 1
            trip_target, trips_ok = "exactly 1", sent["project trips"] == 1
        else:
            target, ok = "fewer than SQLAlchemy", sent["project"] < sent["plain"]
            trip_target = "fewer than SQLAlchemy"
            trips_ok = sent["project trips"] < sent["plain trips"]
        met.append(trips_ok)
        print(
            f"| {name} | {sent['raw']} | {sent['plain']} | {sent['project']} | {target} "
            f"| {'yes' if ok else 'no'} | {trips} | {trip_target} "
            f"| {'yes' if trips_ok else '**no**'} |"
        )
    return met


def _print_throughput(
    backend: str, count: int, bulk: dict[str, float], stream: Throughput, growth: float
) -> list[bool]:
    copy_target = COPY_VS_CORE if backend == "postgresql" else None
    rows = [
        ("return_objects=False", "Core insert() executemany", "project_rows", "core", copy_target),
        ("objects returned", "insert(Person).returning(Person)", "project", "orm_returning",
         OBJECTS_VS_RETURNING),
        ("objects returned", "Core insert() executemany", "project", "core", None),
    ]  # fmt: skip
    print(
        "\n| bulk_create and streams | raw driver | SQLAlchemy | project "
        "| project / SQLAlchemy | target | met | project / raw |"
    )
    print("|---|---:|---:|---:|---:|---|---|---:|")
    met: list[bool] = []
    for what, baseline, project, plain, goal in rows:
        ratio = bulk[project] / bulk[plain]
        target, verdict, outcome = _verdict(ratio, goal)
        met += outcome
        print(
            f"| bulk_create {count:,} rows, {what} (s), vs {baseline} | {bulk['raw']:.3f} "
            f"| {bulk[plain]:.3f} | {bulk[project]:.3f} | {ratio:.2f}x | {target} | {verdict} "
            f"| {bulk[project] / bulk['raw']:.2f}x |"
        )
    s = stream
    print(
        f"| {s.name}, vs {s.baseline} | {s.raw:,.0f} | {s.plain:,.0f} | {s.project:,.0f} "
        f"| {s.plain / s.project:.2f}x | | | {s.raw / s.project:.2f}x |"
    )
    ok = growth <= STREAM_MIB
    print(
        f"\nStreaming peak memory growth (tracemalloc): {growth:.1f} MiB "
        f"(target ≤ {STREAM_MIB:.0f} MiB at 200,000 rows: {'met' if ok else '**missed**'})"
    )
    return [*met, ok]


def _print_floor(count: int, floor: dict[str, float]) -> None:
    print(f"\nWhat returning {count:,} objects costs at least (each step alone, seconds):\n")
    print("| step | seconds | / Core executemany |")
    print("|---|---:|---:|")
    core = next(iter(floor.values()))
    for name, seconds in floor.items():
        print(f"| {name} | {seconds:.3f} | {seconds / core:.2f}x |")
    least = sum(list(floor.values())[1:])
    print(f"| keys returned + objects built (sum) | {least:.3f} | {least / core:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("urls", nargs="*", help="database URLs (default: a temp SQLite file)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rows")
    args = parser.parse_args()
    urls = list(args.urls)
    if not urls:
        urls.append(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
        if os.environ.get("UOW_TEST_POSTGRES_URL"):
            urls.append(os.environ["UOW_TEST_POSTGRES_URL"])
    print(LEGEND)
    met: list[bool] = []
    for url in urls:
        met += run(url, args.quick)
    print(
        f"\nTargets met: {sum(met)} of {len(met)}. Ratios are time ratios: above 1.00x the "
        "project is slower; a missed target is reported here, not an error."
    )


if __name__ == "__main__":
    main()
