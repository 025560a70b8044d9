#!/usr/bin/env python
"""The scale benchmark: ``list`` and ``count`` as a store grows, and the server round trips.

Usage::

    python benchmarks/bench_scale.py                 # full run: SQLite 10k vs 1M, servers 10k vs 200k
    python benchmarks/bench_scale.py --quick         # short run: SQLite 10k vs 100k, servers 10k vs 50k
    python benchmarks/bench_scale.py --json out.json # also save every figure as JSON

Other options (see ``--help``): ``--sizes``, ``--server-sizes``, ``--rounds``, ``--cache-dir``,
``--no-servers``, ``--postgres-url``, ``--mysql-url``. Progress goes to stderr, the report to
stdout; the exit status is 1 when a target is missed. Not part of the test run.

What is measured, always against raw SQL running *the same statement text* (the store's own,
compiled once for the dialect) on the same data, in the same process, calls interleaved one by
one (store, raw, store, raw ...) so that drift of a shared machine hits both alike. Every figure
is the median over all calls; every ratio is the median over slices of the ratio of the two
medians in the slice (a paired estimate). Raw calls decode rows into ``TaskInfo`` with the
store's own decoder, so the ratios show what the store adds, not the decoding.

1. SQLite, at each of ``--sizes`` (default 10,000 and 1,000,000 live tasks, and a fifth as many
   archived ones): ``list(limit=50)`` newest first with no filter, a common status spread over
   time, a rare status (20 rows, all among the oldest), a backend, and status + backend (common
   and rare) — on ``tasks`` and on ``archived_tasks``. Targets: the store's time at the largest
   size at most 1.5x its time at the smallest (O(log n + limit)); and, at the largest size,
   ``count(status=...)`` and ``count_by_status()`` no slower than raw: at most 1.05x, or at most
   the fixed cost of a store call more (what a ``get`` of one row costs over raw ``sqlite3``,
   measured in the same run) plus 10 µs — that cost is bench_store.py's subject; here the
   question is the query. The store-vs-raw ratio of ``list`` is printed for information.
2. Servers, when ``UNIQC_STORE_TEST_POSTGRES_URL`` / ``UNIQC_STORE_TEST_MYSQL_URL`` (or the
   options) name one: ``get``, ``save`` (an insert or update of one task) and
   ``list(status, limit=50)`` per call, store vs the raw driver (psycopg / PyMySQL) on one
   persistent autocommit connection running the same statement — one round trip each, the floor.
   Target: at most 1.3x. Then the list scale check as for SQLite at ``--server-sizes`` (default
   10,000 and 200,000 live tasks: a fresh database per size, filled in about a minute, dropped
   at the end). Target 1.5x.

Data: task ``i`` is submitted ``i`` x 7 s after 2025-01-01 (the newest is the largest ``i``);
its status is ``success`` (the common one, ~55 %), ``running``, ``failed`` or ``pending``, except
20 ``cancelled`` tasks (the rare one) among the oldest thousand; 5 backends. SQLite files are
made by ``TaskStore`` (so the layout is the store's own: schema, indexes, WAL), then filled with
``executemany`` of raw ``INSERT`` statements into its tables (much faster than ``save_many`` for a
million rows), and cached under ``--cache-dir`` (default ``$TMPDIR/uniqc-bench-scale``): later
runs reopen them with ``TaskStore``, which upgrades them if this checkout's schema is newer. Server
databases are filled through SQLAlchemy Core ``INSERT`` in batches of 5,000.

HOME is pointed at a temporary directory, and UNIQC_STORE_URL unset, before uniqc_store is
imported, so nothing touches the real ``~/.uniqc``.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

_HOME = tempfile.mkdtemp(prefix="uniqc-bench-scale-home-")
atexit.register(shutil.rmtree, _HOME, True)
os.environ["HOME"] = _HOME
os.environ.pop("UNIQC_STORE_URL", None)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO, "uniqc_store")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark this checkout, installed or not

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from uniqc_store import TaskInfo, TaskStore  # noqa: E402 - after the isolation above
from uniqc_store.execution import compiled_sql  # noqa: E402
from uniqc_store.rows import (  # noqa: E402
    ARCHIVED_TASKS,
    TASKS,
    archived_task_from_row,
    column_names,
    task_from_row,
    task_row,
)
from uniqc_store.statements import statements  # noqa: E402

#: Bump when the generated data change, so that cached files are rebuilt.
DATA_VERSION = 1
BACKENDS = ["originq:wuyuan", "quafu:ScQ-P18", "ibm:brisbane", "dummy", "quark:Baihua"]
COMMON, RARE, RARE_ROWS = "success", "cancelled", 20
OTHERS = ["running", "failed", "pending"]
ONE_BACKEND = BACKENDS[1]
LIMIT = 50
_BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)

SCALE_TARGET = 1.5  # list at the largest size / at the smallest
SERVER_TARGET = 1.3  # store / raw driver, per call
COUNT_TARGET, COUNT_SLACK_US = 1.05, 10.0  # count: store / raw, or the store call's own cost + 10 µs

#: The list cases: (label, status, backend).
CASES = [
    ("no filter", None, None),
    (f"status={COMMON}", COMMON, None),
    (f"status={RARE} (20 oldest)", RARE, None),
    (f"backend={ONE_BACKEND}", None, ONE_BACKEND),
    (f"status={COMMON}+backend", COMMON, ONE_BACKEND),
    (f"status={RARE}+backend", RARE, BACKENDS[0]),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------


def status_of(i: int) -> str:
    if i < 1000 and i % 50 == 7:  # i = 7, 57, ..., 957: the 20 rare ones, among the oldest
        return RARE
    return COMMON if i % 20 < 11 else OTHERS[i % 3]


def backend_of(i: int) -> str:
    # Runs of three, so that backend and status vary independently (a few rare rows per backend).
    return BACKENDS[(i // 3) % len(BACKENDS)]


def rows(n: int, *, archived: bool) -> Iterator[dict[str, Any]]:
    """The rows of ``n`` tasks (or archived tasks), oldest first, as the store's columns."""
    prefix = "a" if archived else "t"
    for i in range(n):
        submitted = _BASE + timedelta(seconds=7 * i)
        status = status_of(i)
        row = {
            "task_id": f"{prefix}{i:08d}",
            "backend": backend_of(i),
            "status": status,
            "shots": 1000,
            "submit_time": submitted.isoformat(),
            "update_time": (submitted + timedelta(seconds=30)).isoformat(),
            "result_json": '{"00": 511, "11": 489}' if status == COMMON else None,
            "metadata_json": f'{{"circuit": "bell", "i": {i}}}',
            "error_message": "calibration drift" if status == "failed" else None,
        }
        if archived:
            row["archived_at"] = (submitted + timedelta(days=1)).isoformat()
        yield row


def batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def sqlite_file(cache: Path, n: int) -> Path:
    """A store file with ``n`` tasks and ``n // 5`` archived ones, built once and cached."""
    directory = cache / f"sqlite-{n}-v{DATA_VERSION}"
    done = directory / "complete"
    if done.exists():
        with TaskStore(directory):  # upgrades a file cached before a schema change
            pass
        return directory / "tasks.sqlite"
    shutil.rmtree(directory, ignore_errors=True)
    started = time.monotonic()
    with TaskStore(directory) as store:
        path = store.db_path
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table, count, archived in ((TASKS, n, False), (ARCHIVED_TASKS, n // 5, True)):
            names = column_names(table)
            sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(':' + c for c in names)})"
            conn.execute("BEGIN")
            for batch in batches(rows(count, archived=archived), 50_000):
                conn.executemany(sql, batch)
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    done.write_text(f"{n}\n")
    log(f"  built {path} ({n:,} tasks) in {time.monotonic() - started:.0f} s")
    return path


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Interleaved timings of two contenders, per slice (ns)."""

    a: list[list[int]] = field(default_factory=list)
    b: list[list[int]] = field(default_factory=list)

    def run(self, first: Callable[[int], object], second: Callable[[int], object], calls: int) -> None:
        gc.collect()
        ta: list[int] = []
        tb: list[int] = []
        clock = time.perf_counter_ns
        for i in range(calls):
            t0 = clock()
            first(i)
            t1 = clock()
            second(i)
            t2 = clock()
            ta.append(t1 - t0)
            tb.append(t2 - t1)
        self.a.append(ta)
        self.b.append(tb)

    def median_us(self, side: str) -> float:
        values = [v for part in (self.a if side == "a" else self.b) for v in part]
        return statistics.median(values) / 1e3

    def ratio(self) -> float:
        return statistics.median(
            statistics.median(x) / statistics.median(y) for x, y in zip(self.a, self.b, strict=True)
        )


@dataclass
class Check:
    section: str
    what: str
    figures: str
    value: float
    target: str
    ok: bool | None  # None: for information


class Report:
    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.headers: dict[str, str] = {}

    def section(self, name: str, header: str) -> None:
        self.headers[name] = header

    def add(self, section: str, what: str, figures: str, value: float, target: str, ok: bool | None) -> None:
        self.checks.append(Check(section, what, figures, value, target, ok))
        log(f"  {_line(self.checks[-1])}")

    def print(self) -> None:
        section = None
        for check in self.checks:
            if check.section != section:
                section = check.section
                print(f"\n{section}")
                print(f"  {'':44} {self.headers.get(section, ''):54} {'ratio':>6}  target")
            print(f"  {_line(check)}")
        missed = [c for c in self.checks if c.ok is False]
        checked = [c for c in self.checks if c.ok is not None]
        summary = f"\n{len(checked) - len(missed)} of {len(checked)} targets met"
        if missed:
            summary += "; missed: " + "; ".join(f"{c.section}: {c.what}" for c in missed)
        print(summary)


def _line(check: Check) -> str:
    mark = "" if check.ok is None else ("ok" if check.ok else "MISSED")
    return f"{check.what:44} {check.figures:54} {check.value:5.2f}x  {check.target} {mark}".rstrip()


def us(value: float) -> str:
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


# -- the list and count cases -------------------------------------------------------------------


class Lister:
    """The store's ``list``/``list_archived`` and the same statement on a raw connection."""

    def __init__(self, store: TaskStore, run_raw: Callable[[str, dict[str, Any]], list[Any]], dialect: Any) -> None:
        self.store = store
        self.run_raw = run_raw
        self.sql = statements(store._db.dialect)
        self.dialect = dialect

    def calls(
        self, archived: bool, status: str | None, backend: str | None
    ) -> tuple[Callable[[int], object], Callable[[int], object]]:
        queries = self.sql.archived if archived else self.sql.tasks
        stmt = queries.list(status is not None, backend is not None, True, False)
        sql, bound = compiled_sql(stmt, self.dialect) if self.dialect is not None else compiled_sql(stmt)
        params = {**bound, "limit": LIMIT}
        if status is not None:
            params["status"] = status
        if backend is not None:
            params["backend"] = backend
        decode = archived_task_from_row if archived else task_from_row
        listing = self.store.list_archived if archived else self.store.list
        run_raw = self.run_raw

        def store_call(_: int) -> object:
            return listing(status=status, backend=backend, limit=LIMIT)

        def raw_call(_: int) -> object:
            return [decode(row) for row in run_raw(sql, params)]

        return store_call, raw_call


def scale_checks(report: Report, section: str, listers: dict[int, Lister], rounds: int, calls: int) -> None:
    """list at the smallest and the largest size, interleaved; the ratio largest/smallest."""
    small, large = min(listers), max(listers)
    report.section(section, f"store: {small:,} -> {large:,}; raw SQL at {large:,}")
    for archived in (False, True):
        table = "archived_tasks" if archived else "tasks"
        for label, status, backend in CASES:
            s_store, s_raw = listers[small].calls(archived, status, backend)
            l_store, l_raw = listers[large].calls(archived, status, backend)
            found = [s_store(0), l_store(0)]  # also warms up (the page cache too)
            if [len(x) for x in found] != [len(s_raw(0)), len(l_raw(0))]:  # type: ignore[arg-type]
                raise SystemExit(f"{table} {label}: the store and the raw SQL disagree")
            scale, vs_raw = Pair(), Pair()
            for _ in range(rounds):
                scale.run(l_store, s_store, calls)
                vs_raw.run(l_store, l_raw, calls)
            ratio = scale.ratio()
            figures = (
                f"{us(scale.median_us('b'))} -> {us(scale.median_us('a'))}; "
                f"raw {us(vs_raw.median_us('b'))} ({vs_raw.ratio():.2f}x)"
            )
            report.add(section, f"{table}: {label}", figures, ratio, f"<= {SCALE_TARGET}", ratio <= SCALE_TARGET)


def count_checks(
    report: Report, section: str, store: TaskStore, raw: sqlite3.Connection, rounds: int, calls: int
) -> None:
    sql = statements("sqlite")
    get_sql, _ = compiled_sql(sql.tasks.get)
    overhead = Pair()  # what any store call costs over raw sqlite3: a get of one row
    for _ in range(rounds):
        overhead.run(
            lambda _: store.get("t00000001"),
            lambda _: task_from_row(raw.execute(get_sql, {"task_id": "t00000001"}).fetchall()[0]),
            calls * 5,
        )
    per_call = max(0.0, overhead.median_us("a") - overhead.median_us("b"))
    slack = per_call + COUNT_SLACK_US
    report.section(section, f"store vs raw SQL (a store call's own cost: {per_call:.1f} µs)")
    cases: list[tuple[str, Callable[[int], object], Callable[[int], object]]] = []
    for status in (COMMON, RARE):
        text_, bound = compiled_sql(sql.tasks.count(True, False))
        params = {**bound, "status": status}
        cases.append((
            f"count(status={status})",
            lambda _, s=status: store.count(status=s),
            lambda _, t=text_, p=params: raw.execute(t, p).fetchone()[0],
        ))
    by_status, _ = compiled_sql(sql.tasks.count_by_status)
    cases.append((
        "count_by_status()", lambda _: store.count_by_status(), lambda _: dict(raw.execute(by_status).fetchall())
    ))
    for label, store_call, raw_call in cases:
        if store_call(0) != raw_call(0):
            raise SystemExit(f"{label}: the store and the raw SQL disagree")
        pair = Pair()
        for _ in range(rounds):
            pair.run(store_call, raw_call, calls)
        ratio = pair.ratio()
        extra = pair.median_us("a") - pair.median_us("b")
        report.add(
            section,
            label,
            f"store {us(pair.median_us('a'))}, raw {us(pair.median_us('b'))} ({extra:+.1f} µs)",
            ratio,
            f"<= {COUNT_TARGET} or +{slack:.0f} µs",
            ratio <= COUNT_TARGET or extra <= slack,
        )


def run_sqlite(report: Report, cache: Path, sizes: list[int], rounds: int, calls: int) -> None:
    listers: dict[int, Lister] = {}
    opened: list[tuple[TaskStore, sqlite3.Connection]] = []
    for n in sizes:
        log(f"SQLite, {n:,} tasks")
        path = sqlite_file(cache, n)
        store = TaskStore(path.parent)
        raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        opened.append((store, raw))
        listers[n] = Lister(store, lambda sql, params, raw=raw: raw.execute(sql, params).fetchall(), None)
    try:
        title = f"SQLite: list(limit={LIMIT}) newest first, {min(sizes):,} vs {max(sizes):,} tasks"
        scale_checks(report, title, listers, rounds, calls)
        store, raw = opened[sizes.index(max(sizes))]
        count_checks(report, f"SQLite: counts at {max(sizes):,} tasks", store, raw, rounds, max(3, calls // 10))
    finally:
        for store, raw in opened:
            store.close()
            raw.close()


# -- servers -----------------------------------------------------------------------------------------


class Server:
    """A fresh database on a server, dropped by :meth:`drop`."""

    def __init__(self, kind: str, admin_url: str) -> None:
        self.kind = kind
        self.admin = make_url(admin_url)
        self.name = f"uniqc_bench_scale_{uuid.uuid4().hex[:10]}"
        self.engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with self.engine.connect() as conn:
            quoted = f'"{self.name}"' if kind == "postgresql" else f"`{self.name}` CHARACTER SET utf8mb4"
            conn.execute(text(f"CREATE DATABASE {quoted}"))
        self.url = self.admin.set(database=self.name)

    def fill(self, n: int) -> None:
        started = time.monotonic()
        with TaskStore(url=self.url):  # creates the store's layout
            pass
        engine = create_engine(self.url)
        try:
            for table, count, archived in ((TASKS, n, False), (ARCHIVED_TASKS, n // 5, True)):
                for batch in batches(rows(count, archived=archived), 5000):
                    with engine.begin() as conn:
                        conn.execute(insert(table), batch)
            with engine.begin() as conn:
                for table in ("tasks", "archived_tasks"):
                    conn.execute(text(f"ANALYZE {table}" if self.kind == "postgresql" else f"ANALYZE TABLE {table}"))
        finally:
            engine.dispose()
        log(f"  filled {self.kind} with {n:,} tasks in {time.monotonic() - started:.0f} s")

    def raw(self) -> Any:
        """One persistent autocommit connection of the raw driver."""
        url = self.url
        if self.kind == "postgresql":
            import psycopg

            return psycopg.connect(
                host=url.host, port=url.port or 5432, user=url.username, password=url.password or None,
                dbname=url.database, autocommit=True,
            )
        import pymysql

        return pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password or "",
            database=url.database, autocommit=True, charset="utf8mb4",
        )

    def drop(self) -> None:
        from uniqc_store import database

        for db in list(database._registry.values()):  # close this process's pooled connections
            if db.url.database == self.name:
                db.close_connections()
        with self.engine.connect() as conn:
            if self.kind == "postgresql":
                conn.execute(text(f'DROP DATABASE "{self.name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE `{self.name}`"))
        self.engine.dispose()


def per_call_checks(
    report: Report, section: str, store: TaskStore, conn: Any, n: int, rounds: int, calls: int
) -> None:
    report.section(section, "store vs raw driver, one persistent connection")
    dialect = store._db.engine.dialect
    sql = statements(store._db.dialect)
    cursor = conn.cursor()
    get_sql, _ = compiled_sql(sql.tasks.get, dialect)
    upsert_sql, _ = compiled_sql(sql.upsert_task, dialect)
    list_stmt = sql.tasks.list(True, False, True, False)
    list_sql, bound = compiled_sql(list_stmt, dialect)
    list_params = {**bound, "status": COMMON, "limit": LIMIT}
    step = max(1, n // 997)
    ids = [f"t{(i * step) % n:08d}" for i in range(997)]

    def raw_get(i: int) -> object:
        cursor.execute(get_sql, {"task_id": ids[i % len(ids)]})
        found = cursor.fetchall()
        return task_from_row(found[0]) if found else None

    def raw_list(_: int) -> object:
        cursor.execute(list_sql, list_params)
        return [task_from_row(row) for row in cursor.fetchall()]

    fresh = iter(range(10**9))

    def new_task() -> TaskInfo:
        return TaskInfo(f"bench-{next(fresh)}-{uuid.uuid4().hex[:6]}", BACKENDS[0], metadata={"circuit": "bell"})

    def raw_save(_: int) -> object:
        task = new_task()
        now = datetime.now(timezone.utc).isoformat()
        cursor.execute(upsert_sql, task_row(task, now))  # one statement, autocommit: one round trip
        task.update_time = now
        return task

    cases = [
        ("get(task_id)", lambda i: store.get(ids[i % len(ids)]), raw_get),
        ("save(task) (a new task)", lambda _: store.save(new_task()), raw_save),
        (f"list(status={COMMON}, limit={LIMIT})", lambda _: store.list(status=COMMON, limit=LIMIT), raw_list),
    ]
    for label, store_call, raw_call in cases:
        for i in range(20):  # warm up: connections, prepared statements, caches
            store_call(i)
            raw_call(i)
        pair = Pair()
        for _ in range(rounds):
            pair.run(store_call, raw_call, calls)
        ratio = pair.ratio()
        figures = f"store {us(pair.median_us('a'))}, raw driver {us(pair.median_us('b'))}"
        report.add(section, label, figures, ratio, f"<= {SERVER_TARGET}", ratio <= SERVER_TARGET)


def _runner(cursor: Any) -> Callable[[str, dict[str, Any]], list[Any]]:
    def run(sql: str, params: dict[str, Any]) -> list[Any]:
        cursor.execute(sql, params)
        return list(cursor.fetchall())

    return run


def run_server(report: Report, kind: str, admin_url: str, sizes: list[int], rounds: int, calls: int) -> None:
    servers: dict[int, Server] = {}
    opened: list[tuple[TaskStore, Any]] = []
    try:
        listers: dict[int, Lister] = {}
        for n in sizes:
            log(f"{kind}, {n:,} tasks")
            server = servers[n] = Server(kind, admin_url)
            server.fill(n)
            store = TaskStore(url=server.url)
            conn = server.raw()
            opened.append((store, conn))

            listers[n] = Lister(store, _runner(conn.cursor()), store._db.engine.dialect)
        small = min(sizes)
        store, conn = opened[sizes.index(small)]
        per_call_checks(report, f"{kind}: per call at {small:,} tasks", store, conn, small, rounds, calls * 4)
        title = f"{kind}: list(limit={LIMIT}) newest first, {small:,} vs {max(sizes):,} tasks"
        scale_checks(report, title, listers, rounds, calls)
    finally:
        for store, conn in opened:
            store.close()
            conn.close()
        for server in servers.values():
            server.drop()


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run: smaller sizes, fewer calls")
    parser.add_argument("--sizes", help="SQLite sizes, comma-separated (default 10000,1000000; quick 10000,100000)")
    parser.add_argument("--server-sizes", help="server sizes (default 10000,200000; quick 10000,50000)")
    parser.add_argument("--rounds", type=int, help="slices per case (default 7; quick 3)")
    parser.add_argument("--calls", type=int, help="calls per contender per slice (default 40; quick 15)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "uniqc-bench-scale",
                        help="where generated SQLite files are kept between runs")
    parser.add_argument("--no-servers", action="store_true", help="SQLite only")
    parser.add_argument("--postgres-url", default=os.environ.get("UNIQC_STORE_TEST_POSTGRES_URL"))
    parser.add_argument("--mysql-url", default=os.environ.get("UNIQC_STORE_TEST_MYSQL_URL"))
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)

    def sizes_of(value: str | None, default: str) -> list[int]:
        sizes = sorted({int(x) for x in (value or default).split(",")})
        if len(sizes) != 2 or sizes[0] < 1000:
            parser.error("give two sizes of at least 1000, e.g. 10000,1000000")
        return sizes

    sizes = sizes_of(args.sizes, "10000,100000" if args.quick else "10000,1000000")
    server_sizes = sizes_of(args.server_sizes, "10000,50000" if args.quick else "10000,200000")
    rounds = args.rounds or (3 if args.quick else 7)
    calls = args.calls or (15 if args.quick else 40)
    cache = args.cache_dir.expanduser().resolve()
    if str(cache).startswith(str(Path(os.path.expanduser("~")) / ".uniqc")):
        parser.error("--cache-dir must not be under ~/.uniqc")
    cache.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    report = Report()
    run_sqlite(report, cache, sizes, rounds, calls)
    if not args.no_servers:
        for kind, url in (("postgresql", args.postgres_url), ("mysql", args.mysql_url)):
            if url:
                run_server(report, kind, url, server_sizes, rounds, calls)
            else:
                log(f"{kind}: skipped (no URL: see --help)")
    print(
        f"bench_scale: {'quick' if args.quick else 'full'} run, {rounds} slices x {calls} calls per case, "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {time.monotonic() - started:.0f} s"
    )
    report.print()
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in report.checks], indent=2, ensure_ascii=False))
    return 1 if any(c.ok is False for c in report.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
