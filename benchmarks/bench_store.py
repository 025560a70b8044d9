#!/usr/bin/env python
"""Benchmark ``TaskStore`` against the two plain-``sqlite3`` ways of using the same file.

Usage::

    python benchmarks/bench_store.py                  # full run (about 4 minutes on 2 cores)
    python benchmarks/bench_store.py --quick          # short run (about 40 s on 2 idle cores)
    python benchmarks/bench_store.py --json out.json  # also save every figure as JSON
    python benchmarks/bench_store.py --dir /mnt/ssd   # put the database files under DIR

Other options (see ``--help``): ``--rounds``, ``--tasks``, ``--procs``, ``--proc-saves``,
``--ops`` (run only some operations, e.g. ``--ops save,get``), ``--seed``, ``--keep``.
The script is not part of the test run. Progress goes to stderr, the report to stdout. If
``TaskStore.save_many`` does not exist, the bulk-load row reads "n/a (save_many missing)".
``--quick``: 2 rounds, fewer calls per round, one bulk load and one multi-process run each.

Contenders, each on its own copy of the same file at the head revision (created by ``TaskStore``,
so header, DDL, indexes, WAL mode and rows are byte-for-byte the same):

* ``project``: ``uniqc_store.TaskStore`` through its public API only.
* ``B1`` (per-call connection, uniqc's original way): a new ``sqlite3`` connection for every
  call, ``PRAGMA journal_mode=WAL`` and ``PRAGMA foreign_keys=ON`` on each, commit, close.
  Opening a store reads ``application_id`` and ``user_version`` on a connection of its own.
* ``B2`` (persistent raw): one ``sqlite3`` connection (``isolation_level=None``), hand-written
  SQL, ``BEGIN IMMEDIATE``/``COMMIT`` around writes: the floor for a Python store on this format.

Both baselines build ``TaskInfo`` objects from rows and encode/decode JSON as the store does
(``json.dumps(..., ensure_ascii=False)``, ``update_time`` stamped with
``datetime.now(timezone.utc).isoformat()``, the same ``INSERT ... ON CONFLICT(task_id) DO UPDATE``
upsert); they skip the store's argument validation. Every contender commits with
``synchronous=FULL`` in WAL mode, so a save is durable when it returns.

Method: one process; rounds are interleaved (round 1: every operation for project, B1, B2;
round 2: the same again ...) so that drift of the machine hits every contender alike; within a
round the cheap operations are cut into slices, each run by project, B1, B2 in turn. Every call
is timed with ``time.perf_counter_ns``. The table shows each contender's median over all calls,
in microseconds, and the ratios ``B1/project`` (speed-up over B1) and ``project/B2`` (cost over
the floor) as the median over slices of the ratio of the two medians within the slice (a paired
estimate: slow spells of a shared machine cancel out), checked against the targets. The bulk load
and the multi-process run give one sample per round each; their ratios pair by round.

* ``save``: a new task is saved (insert), then changed and saved again (update); both calls
  are samples (the insert and update medians are printed separately below the table).
* ``get``: random existing ids out of the ``--tasks`` tasks.
* ``construct store + get``: project ``with TaskStore(cache_dir) as s: s.get(id)`` while another
  store on the same directory is open (the steady state of a process that constructs stores
  per request); B1 opens (a connection reading the header) then gets on a new connection.
* ``list(status, limit=50)`` / ``count(status)``: over ``--tasks`` tasks (default 100,000).
* ``bulk load``: ``--tasks`` tasks into an empty copy of the file: project
  ``TaskStore.save_many``; B2 one ``executemany`` inside ``BEGIN IMMEDIATE``/``COMMIT``; B1
  ``executemany`` on one per-call connection. Opening the store/connection is outside the timing
  for project and B2 and inside it for B1 (that is its way).
* ``N processes x M saves``: ``--procs`` processes (multiprocessing, 'spawn' context) each open
  their contender's store/connection, wait on a barrier, then do ``--proc-saves`` saves
  (insert/update pairs) on one fresh file; wall time from the first start to the last finish
  (opening and imports happen before the barrier, outside the timing); every row is checked after.
  Baselines use the project's busy timeout (60 s), so nobody fails under contention.

HOME is pointed at a temporary directory, and UNIQC_STORE_URL unset, before uniqc_store is
imported, so nothing touches the real ``~/.uniqc``. Database files go in a
``tempfile.mkdtemp()`` directory (or one made inside ``--dir``), deleted at the end unless
``--keep``. ``gc.freeze()`` is called after the test data are built so that collections do not
keep rescanning them; ``gc.collect()`` runs before every batch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy

# -- isolation: must happen before uniqc_store is imported (it reads HOME at import time) ---------

_HOME_ENV = "UNIQC_BENCH_HOME"
_OWN_HOME = not os.environ.get(_HOME_ENV)
if _OWN_HOME:  # the parent; spawned children inherit the variable and reuse its directory
    os.environ[_HOME_ENV] = tempfile.mkdtemp(prefix="uniqc-bench-home-")
    atexit.register(shutil.rmtree, os.environ[_HOME_ENV], True)
os.environ["HOME"] = os.environ[_HOME_ENV]
os.environ.pop("UNIQC_STORE_URL", None)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO, "uniqc_store")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark this checkout, installed or not

import uniqc_store  # noqa: E402 - after the isolation above: importing reads HOME
from uniqc_store import TaskInfo, TaskStore  # noqa: E402 - after the isolation above
from uniqc_store.rows import task_decoder  # noqa: E402 - after the isolation above
from uniqc_store.versions import LAYOUTS  # noqa: E402 - after the isolation above

DB_FILENAME = "tasks.sqlite"
APPLICATION_ID = 0x554E4943
USER_VERSION = uniqc_store.CURRENT_SCHEMA_VERSION
BUSY_TIMEOUT_S = 60.0  # the same busy timeout as the project's, so nobody fails under contention
LIST_STATUS = "running"
LIST_LIMIT = 50

# The baselines read and write uniqc's v1 columns of ``tasks`` (the later ones keep their defaults).
V1_COLUMNS = [column.name for column in LAYOUTS[1]["tasks"].columns]
_COLS = ", ".join(V1_COLUMNS)
SQL_UPSERT = (
    f"INSERT INTO tasks ({_COLS}) VALUES ({', '.join('?' * len(V1_COLUMNS))}) "
    "ON CONFLICT(task_id) DO UPDATE SET backend = excluded.backend, status = excluded.status, "
    "shots = excluded.shots, update_time = excluded.update_time, "
    "result_json = excluded.result_json, metadata_json = excluded.metadata_json"
)
SQL_GET = f"SELECT {_COLS} FROM tasks WHERE task_id = ?"
# The same ordering as TaskStore.list: newest submit_time first, ties by most recent insertion.
SQL_LIST = f"SELECT {_COLS} FROM tasks WHERE status = ? ORDER BY submit_time DESC, rowid DESC LIMIT ?"
SQL_COUNT = "SELECT count(*) FROM tasks WHERE status = ?"


class NotApplicable(Exception):
    """This contender has no way to do this operation (the reason is the message)."""


# -- what the baselines do by hand: the row <-> TaskInfo conversion -----------------------------


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def encode(task: TaskInfo, now: str) -> tuple[Any, ...]:
    status = task.status
    if isinstance(status, Enum):
        status = status.value
    result = task.result
    return (
        task.task_id,
        task.backend,
        status,
        task.shots,
        task.submit_time,
        now,
        None if result is None else json.dumps(result, ensure_ascii=False, allow_nan=False),
        json.dumps(task.metadata, ensure_ascii=False, allow_nan=False),
    )


# Rows become TaskInfo objects exactly as the store makes them (same code, same cost).
decode = task_decoder(V1_COLUMNS)


# -- the contenders -------------------------------------------------------------------------------


class Project:
    """uniqc_store.TaskStore, public API only."""

    name = "project"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = TaskStore(directory)

    def save(self, task: TaskInfo) -> None:
        self.store.save(task)

    def get(self, task_id: str) -> TaskInfo | None:
        return self.store.get(task_id)

    def construct_get(self, task_id: str) -> TaskInfo | None:
        with TaskStore(self.directory) as store:
            return store.get(task_id)

    def list(self, status: str, limit: int) -> list[TaskInfo]:
        return self.store.list(status=status, limit=limit)

    def count(self, status: str) -> int:
        return self.store.count(status=status)

    def bulk(self, tasks: list[TaskInfo]) -> None:
        save_many = getattr(self.store, "save_many", None)
        if save_many is None:
            raise NotApplicable("save_many missing")
        save_many(tasks)

    def close(self) -> None:
        self.store.close()

    # bulk runs on a fresh file: open outside the timing, and afterwards remove the file through
    # the public API (clear_all closes the store's pooled connections before deleting).
    @classmethod
    def bulk_opened(cls, directory: Path) -> Project:
        return cls(directory)

    def bulk_finished(self) -> None:
        self.store.clear_all()
        self.store.close()


class PerCall:
    """B1: a new sqlite3 connection per call (uniqc's original store)."""

    name = "B1"
    set_synchronous = False  # SQLite's compiled default is FULL; set explicitly if a build differs

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = str(directory / DB_FILENAME)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        if self.set_synchronous:
            conn.execute("PRAGMA synchronous=FULL")
        return conn

    def open(self) -> None:
        """What constructing uniqc's store did: check the header on a connection of its own."""
        conn = self._connect()
        try:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            user_version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.commit()
        finally:
            conn.close()
        if application_id != APPLICATION_ID or user_version != USER_VERSION:
            raise RuntimeError(f"{self.path}: not a uniqc file at head ({application_id:#x}, {user_version})")

    def save(self, task: TaskInfo) -> None:
        now = utc_now()
        row = encode(task, now)
        conn = self._connect()
        try:
            conn.execute(SQL_UPSERT, row)
            conn.commit()
        finally:
            conn.close()
        task.update_time = now

    def get(self, task_id: str) -> TaskInfo | None:
        conn = self._connect()
        try:
            row = conn.execute(SQL_GET, (task_id,)).fetchone()
            conn.commit()
        finally:
            conn.close()
        return None if row is None else decode(row)

    def construct_get(self, task_id: str) -> TaskInfo | None:
        self.open()
        return self.get(task_id)

    def list(self, status: str, limit: int) -> list[TaskInfo]:
        conn = self._connect()
        try:
            rows = conn.execute(SQL_LIST, (status, limit)).fetchall()
            conn.commit()
        finally:
            conn.close()
        return [decode(row) for row in rows]

    def count(self, status: str) -> int:
        conn = self._connect()
        try:
            n = conn.execute(SQL_COUNT, (status,)).fetchone()[0]
            conn.commit()
        finally:
            conn.close()
        return n

    def bulk(self, tasks: list[TaskInfo]) -> None:
        now = utc_now()
        rows = [encode(task, now) for task in tasks]
        conn = self._connect()
        try:
            conn.executemany(SQL_UPSERT, rows)
            conn.commit()
        finally:
            conn.close()
        for task in tasks:
            task.update_time = now

    def close(self) -> None:
        pass

    @classmethod
    def bulk_opened(cls, directory: Path) -> PerCall:
        return cls(directory)

    def bulk_finished(self) -> None:
        pass


class Raw:
    """B2: one persistent sqlite3 connection, explicit BEGIN IMMEDIATE / COMMIT."""

    name = "B2"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.conn = sqlite3.connect(str(directory / DB_FILENAME), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")

    def _write(self, sql: str, params: Any, many: bool = False) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def save(self, task: TaskInfo) -> None:
        now = utc_now()
        self._write(SQL_UPSERT, encode(task, now))
        task.update_time = now

    def get(self, task_id: str) -> TaskInfo | None:
        row = self.conn.execute(SQL_GET, (task_id,)).fetchone()
        return None if row is None else decode(row)

    def construct_get(self, task_id: str) -> TaskInfo | None:
        raise NotApplicable("not applicable")

    def list(self, status: str, limit: int) -> list[TaskInfo]:
        return [decode(row) for row in self.conn.execute(SQL_LIST, (status, limit)).fetchall()]

    def count(self, status: str) -> int:
        return self.conn.execute(SQL_COUNT, (status,)).fetchone()[0]

    def bulk(self, tasks: list[TaskInfo]) -> None:
        now = utc_now()
        rows = [encode(task, now) for task in tasks]
        self._write(SQL_UPSERT, rows, many=True)
        for task in tasks:
            task.update_time = now

    def close(self) -> None:
        self.conn.close()

    @classmethod
    def bulk_opened(cls, directory: Path) -> Raw:
        return cls(directory)

    def bulk_finished(self) -> None:
        self.conn.close()


CONTENDERS: dict[str, Any] = {"project": Project, "B1": PerCall, "B2": Raw}
ORDER = ["project", "B1", "B2"]


# -- test data --------------------------------------------------------------------------------

BACKENDS = ["originq:wuyuan", "quafu:ScQ-P18", "ibm:brisbane", "dummy"]
_BASE_TIME = datetime(2025, 1, 1, tzinfo=timezone.utc)
_STATUS_WEIGHTS = [("success", 55), ("failed", 10), ("cancelled", 5), ("running", 15), ("pending", 15)]


def counts(rng: random.Random, qubits: int = 3) -> dict[str, Any]:
    return {"counts": {format(k, f"0{qubits}b"): rng.randrange(1000) for k in range(2**qubits)}, "shots": 1000}


def make_task(task_id: str, i: int, rng: random.Random | None, status: str) -> TaskInfo:
    submit = (_BASE_TIME + timedelta(seconds=7 * i)).isoformat()
    return TaskInfo(
        task_id=task_id,
        backend=BACKENDS[i % len(BACKENDS)],
        status=status,
        result=counts(rng) if status == "success" and rng is not None else None,
        shots=1000,
        submit_time=submit,
        update_time=submit,
        metadata={"circuit": f"OPENQASM 2.0; qreg q[3]; h q[0]; cx q[0],q[1]; // {i}", "label": "bench ✓",
                  "tags": ["bench", BACKENDS[i % len(BACKENDS)]]},
    )


def dataset(n: int, prefix: str, seed: int) -> list[TaskInfo]:
    rng = random.Random(seed)
    statuses = [s for s, _ in _STATUS_WEIGHTS]
    cumulative = list(itertools.accumulate(w for _, w in _STATUS_WEIGHTS))
    picks = rng.choices(statuses, cum_weights=cumulative, k=n)
    results = [counts(rng) for _ in range(64)]  # distinct payloads of the same shape, shared
    tasks = []
    for i, status in enumerate(picks):
        task = make_task(f"{prefix}-{i:07d}", i, None, status)
        if status == "success":
            task.result = results[i % 64]
        tasks.append(task)
    return tasks


def save_pairs(prefix: str, n: int, seed: int) -> list[TaskInfo]:
    """Pending tasks to insert; :func:`finish` turns one into its update."""
    rng = random.Random(seed)
    return [make_task(f"{prefix}-{i:05d}", 10_000_000 + i, rng, "pending") for i in range(n)]


_DONE = {"counts": {"000": 498, "111": 502}, "shots": 1000}


def finish(task: TaskInfo) -> None:
    task.status = "success"
    task.result = _DONE


# -- files ------------------------------------------------------------------------------------


def checkpointed_copy(source: Path, directory: Path) -> Path:
    """Copy ``source`` (already checkpointed, no WAL content) into a new private directory."""
    directory.mkdir(mode=0o700, parents=True)
    target = directory / DB_FILENAME
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)
    return target


def build_template(root: Path) -> Path:
    """An empty file exactly as TaskStore creates it, checkpointed so it can be copied."""
    directory = root / "template-empty"
    store = TaskStore(directory)
    store.count()
    store.close()
    checkpoint(directory / DB_FILENAME)
    return directory / DB_FILENAME


def build_populated(template: Path, root: Path, tasks: list[TaskInfo]) -> Path:
    """The template plus ``tasks``, written with plain SQL (identical rows for every contender)."""
    path = checkpointed_copy(template, root / "template-populated")
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(SQL_UPSERT, [encode(t, t.update_time) for t in tasks])
    conn.execute("COMMIT")
    conn.close()
    checkpoint(path)
    return path


def checkpoint(path: Path) -> None:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"could not checkpoint {path}")
    finally:
        conn.close()


# -- the machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: Path) -> dict[str, str]:
    real = os.path.realpath(path)
    best: tuple[str, str, str, str] | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                device, mount, fstype, options = parts[:4]
                mount = mount.replace("\\040", " ")
                contains = real == mount or real.startswith(mount.rstrip("/") + "/")
                if contains and (best is None or len(mount) >= len(best[1])):
                    best = (device, mount, fstype, options)
    except OSError:
        pass
    if best is None:
        return {"path": real, "type": "unknown", "device": "?", "mount": "?", "options": ""}
    device, mount, fstype, options = best
    return {"path": real, "type": fstype, "device": device, "mount": mount, "options": options}


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", _REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", _REPO, "status", "--porcelain", "--", "uniqc_store"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' + uncommitted changes in uniqc_store/' if dirty else ''}" if rev else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(workdir: Path) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import alembic

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "alembic": alembic.__version__,
        "uniqc_store": (
            f"{getattr(uniqc_store, '__version__', '?')} ({os.path.dirname(uniqc_store.__file__)}, "
            f"git {git_revision()})"
        ),
        "filesystem": filesystem_of(workdir),
    }


def default_synchronous() -> int:
    conn = sqlite3.connect(":memory:")
    try:
        return conn.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        conn.close()


def project_synchronous(store: TaskStore) -> str:
    """Read-only check of the project's per-connection setting (uses a private attribute)."""
    try:
        with store._db.engine.connect() as conn:
            value = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(value, str(value))
    except Exception as error:  # noqa: BLE001 - whatever fails, the report says "unverified" and why
        return f"unverified ({type(error).__name__})"


# -- the multi-process run ------------------------------------------------------------------------


def _proc_main(kind: str, directory: str, index: int, saves: int, seed: int, barrier: Any, queue: Any) -> None:
    """One writer process: open its contender, wait for the others, save, report its times."""
    try:
        contender = CONTENDERS[kind](Path(directory))
        tasks = save_pairs(f"p{index}", (saves + 1) // 2, seed + index)
        gc.collect()
        barrier.wait(timeout=300)
        start = time.perf_counter_ns()
        for i in range(saves):
            task = tasks[i // 2]
            if i % 2:
                finish(task)
            contender.save(task)
        end = time.perf_counter_ns()
        contender.close()
        queue.put((index, start, end, None))
    except BaseException as error:  # noqa: BLE001 - reported to the parent through the queue
        with contextlib.suppress(Exception):  # release the other writers; this error is the one to report
            barrier.abort()
        queue.put((index, None, None, f"{type(error).__name__}: {error}"))


def run_processes(kind: str, directory: Path, procs: int, saves: int, seed: int) -> int:
    """Wall time (ns) of ``procs`` processes doing ``saves`` saves each on ``directory``."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_proc_main, args=(kind, str(directory), i, saves, seed, barrier, queue))
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    reports = []
    try:
        for _ in workers:
            reports.append(queue.get(timeout=900))
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    errors = [f"process {i}: {err}" for i, _, _, err in reports if err]
    if errors:
        raise RuntimeError(f"{kind}: " + "; ".join(errors))
    # perf_counter_ns is the system-wide monotonic clock on Linux/macOS/Windows: comparable here.
    wall = max(end for _, _, end, _ in reports) - min(start for _, start, _, _ in reports)
    # every save must be there, durable and complete
    conn = sqlite3.connect(str(directory / DB_FILENAME))
    try:
        n = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    finally:
        conn.close()
    expected = procs * ((saves + 1) // 2)
    if n != expected:
        raise RuntimeError(f"{kind}: {n} rows after the multi-process run, expected {expected}")
    return wall


# -- timing -----------------------------------------------------------------------------------


def timed(fn: Callable[..., Any], args: list[Any]) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    append = out.append
    for arg in args:
        t0 = clock()
        fn(arg)
        append(clock() - t0)
    return out


def time_saves(contender: Any, tasks: list[TaskInfo]) -> tuple[list[int], list[int]]:
    clock = time.perf_counter_ns
    inserts, updates = [], []
    for task in tasks:
        t0 = clock()
        contender.save(task)
        t1 = clock()
        finish(task)
        t2 = clock()
        contender.save(task)
        t3 = clock()
        inserts.append(t1 - t0)
        updates.append(t3 - t2)
    return inserts, updates


class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.rounds = args.rounds or (2 if quick else 5)
        self.tasks = args.tasks
        self.procs = args.procs
        self.proc_saves = args.proc_saves
        self.seed = args.seed
        # calls per contender per round, run in `slices` interleaved slices
        self.slices = 2 if quick else 5
        self.save_pairs = 30 if quick else 150
        self.gets = 300 if quick else 2000
        self.constructs = 80 if quick else 400
        self.lists = 8 if quick else 30
        self.counts = 60 if quick else 300
        # the bulk load and the multi-process run are one sample each, in the first rounds only
        self.bulk_rounds = 1 if quick else self.rounds
        self.proc_rounds = 1 if quick else min(self.rounds, 3)


OPS = ["save", "get", "construct", "list", "count", "bulk", "procs"]


def run(settings: Settings, ops: list[str], workdir: Path) -> dict[str, Any]:
    def log(*a: object) -> None:
        print(*a, file=sys.stderr, flush=True)

    samples: dict[str, dict[str, list[list[int]]]] = {}
    missing: dict[str, dict[str, str]] = {}

    def record(op: str, name: str, values: list[int]) -> None:
        samples.setdefault(op, {}).setdefault(name, []).append(values)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log(f"building {settings.tasks:,} tasks ...")
    t0 = time.perf_counter()
    tasks = dataset(settings.tasks, "bench", settings.seed)
    bulk_tasks = tasks  # loaded into empty copies of the template: the same rows again
    template = build_template(workdir)
    populated = build_populated(template, workdir, tasks)
    gc.collect()
    gc.freeze()
    log(f"  done in {time.perf_counter() - t0:.1f} s ({populated.stat().st_size / 1e6:.1f} MB file)")

    if default_synchronous() != 2:
        PerCall.set_synchronous = True
    contenders = {}
    for name in ORDER:
        checkpointed_copy(populated, workdir / name)
        contenders[name] = CONTENDERS[name](workdir / name)
    durability = {
        "project": project_synchronous(contenders["project"].store),
        "B1": "FULL (set per call)" if PerCall.set_synchronous else "FULL (SQLite's compiled default)",
        "B2": "FULL (set on the connection)",
    }

    # sanity: every contender reads the same data the same way
    rng = random.Random(settings.seed)
    probe = tasks[rng.randrange(len(tasks))].task_id
    ref = None
    for name in ORDER:
        c = contenders[name]
        got = (c.get(probe).to_dict(), [t.task_id for t in c.list(LIST_STATUS, LIST_LIMIT)], c.count(LIST_STATUS))
        if ref is None:
            ref = got
        elif got != ref:
            raise SystemExit(f"sanity check failed: {name} disagrees with project on get/list/count")
    expected_count = sum(1 for t in tasks if t.status == LIST_STATUS)
    if ref[2] != expected_count:
        raise SystemExit(f"sanity check failed: count {ref[2]} != {expected_count}")

    # warm-up, unrecorded: compile statements, fill caches
    for name in ORDER:
        c = contenders[name]
        time_saves(c, save_pairs(f"warm-{name}", 5, 0))
        for tid in [t.task_id for t in tasks[:20]]:
            c.get(tid)
            if name != "B2":
                c.construct_get(tid)
        c.list(LIST_STATUS, LIST_LIMIT)
        c.count(LIST_STATUS)

    ids = [t.task_id for t in tasks]
    cheap = ("save", "get", "construct", "list", "count")
    for rnd in range(settings.rounds):
        log(f"round {rnd + 1}/{settings.rounds}")
        rrng = random.Random(settings.seed * 1000 + rnd)
        for op in ops:
            if op == "procs" and rnd >= settings.proc_rounds:
                continue
            if op == "bulk" and rnd >= settings.bulk_rounds:
                continue
            op_started = time.perf_counter()
            # cheap operations: the round's calls are split in slices, each run by project, B1, B2
            # in turn, so that drift is shared at a finer grain; every slice is one pairing unit.
            for part in range(settings.slices if op in cheap else 1):
                get_ids = [rrng.choice(ids) for _ in range(settings.gets // settings.slices)]
                construct_ids = [rrng.choice(ids) for _ in range(settings.constructs // settings.slices)]
                for name in ORDER:
                    c = contenders[name]
                    try:
                        if op == "save":
                            pairs = save_pairs(f"save-r{rnd}s{part}", settings.save_pairs // settings.slices,
                                               settings.seed + rnd)
                            gc.collect()
                            ins, upd = time_saves(c, pairs)
                            record("save", name, ins + upd)
                            record("save_insert", name, ins)
                            record("save_update", name, upd)
                        elif op == "get":
                            gc.collect()
                            record(op, name, timed(c.get, get_ids))
                        elif op == "construct":
                            if name == "B2":
                                raise NotApplicable("not applicable")
                            gc.collect()
                            record(op, name, timed(c.construct_get, construct_ids))
                        elif op == "list":
                            gc.collect()
                            record(op, name, timed(lambda st, c=c: c.list(st, LIST_LIMIT),
                                                   [LIST_STATUS] * (settings.lists // settings.slices)))
                        elif op == "count":
                            gc.collect()
                            record(op, name, timed(c.count, [LIST_STATUS] * (settings.counts // settings.slices)))
                        elif op == "bulk":
                            directory = workdir / f"bulk-{name}-{rnd}"
                            checkpointed_copy(template, directory)
                            loader = CONTENDERS[name].bulk_opened(directory)
                            gc.collect()
                            try:
                                record(op, name, timed(loader.bulk, [bulk_tasks]))
                            finally:
                                loader.bulk_finished()
                                shutil.rmtree(directory, ignore_errors=True)
                        elif op == "procs":
                            directory = workdir / f"procs-{name}-{rnd}"
                            checkpointed_copy(template, directory)
                            try:
                                wall = run_processes(name, directory, settings.procs, settings.proc_saves,
                                                     settings.seed + rnd)
                            finally:
                                shutil.rmtree(directory, ignore_errors=True)
                            record(op, name, [wall])
                    except NotApplicable as why:
                        missing.setdefault(op, {})[name] = str(why)
            done = samples.get(op, {})
            parts = settings.slices if op in cheap else 1
            brief = "  ".join(
                f"{n}={fmt_us(statistics.median(v for r in done[n][-parts:] for v in r) / 1e3)}"
                for n in ORDER if done.get(n)
            )
            log(f"  {op:<10} {brief} µs   ({time.perf_counter() - op_started:.1f} s)")

    for c in contenders.values():
        c.close()
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    load = (load_start, load_end) if load_start is not None else None
    return {"samples": samples, "missing": missing, "durability": durability, "load": load}


# -- report -----------------------------------------------------------------------------------


def fmt_us(us: float) -> str:
    return f"{us:,.0f}" if us >= 10_000 else f"{us:,.1f}"


def quantile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarise(per_slice: list[list[int]]) -> dict[str, Any]:
    flat = sorted(v for r in per_slice for v in r)
    return {
        "median_us": statistics.median(flat) / 1e3,
        "p25_us": quantile(flat, 0.25) / 1e3,
        "p75_us": quantile(flat, 0.75) / 1e3,
        "min_us": flat[0] / 1e3,
        "n": len(flat),
        "slice_medians_us": [statistics.median(r) / 1e3 for r in per_slice if r],
    }


def paired_ratios(numerator: list[list[int]], denominator: list[list[int]]) -> list[float]:
    """Ratio of the two contenders' medians in each slice: both ran back to back, so drift cancels."""
    return [
        statistics.median(a) / statistics.median(b) for a, b in zip(numerator, denominator, strict=False) if a and b
    ]


def rows_spec(settings: Settings) -> list[tuple[str, str, float | None, float | None]]:
    n = f"{settings.tasks // 1000}k" if settings.tasks % 1000 == 0 else f"{settings.tasks:,}"
    return [
        ("save", "save", 4.0, 1.6),
        ("get", "get", 5.0, 5.0),
        ("construct", "construct store + get", 3.0, None),
        ("list", f"list(status, limit=50), {n} tasks", None, 2.0),
        ("count", f"count(status), {n} tasks", None, 1.5),
        ("bulk", f"bulk load {n} with save_many", None, 1.5),
        ("procs", f"{settings.procs} processes × {settings.proc_saves} saves, wall time", 1.0, None),
    ]


def report(settings: Settings, result: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    samples, missing = result["samples"], result["missing"]
    out: dict[str, Any] = {"operations": {}}
    header = (f"{'operation':<42}{'project µs':>12}{'B1 µs':>12}{'B2 µs':>12}"
              f"  {'B1/project':>10} {'target':>6} {'':4}  {'project/B2':>10} {'target':>7} {'':4}  result")
    lines = [header, "-" * len(header)]
    spread = []

    def ratio_cell(op: str, num: str, den: str, limit: float | None, at_least: bool,
                   entry: dict[str, Any], key: str, checks: list[bool]) -> tuple[str, str, str]:
        per = samples.get(op, {})
        if not (per.get(num) and per.get(den)):
            return ("—", "—", "")
        slices = paired_ratios(per[num], per[den])
        ratio = statistics.median(slices)
        pooled = summarise(per[num])["median_us"] / summarise(per[den])["median_us"]
        entry[key] = {"ratio": ratio, "pooled_median_ratio": pooled, "slice_ratios": slices}
        q = sorted(slices)
        spread.append(f"  {op:<10} {num + '/' + den:<11} {ratio:6.2f}×  (per slice: p25 {quantile(q, 0.25):.2f}×, "
                      f"p75 {quantile(q, 0.75):.2f}×, n={len(q)}; ratio of pooled medians {pooled:.2f}×)")
        if limit is None:
            return (f"{ratio:>9.2f}×", "—", "")
        ok = ratio >= limit if at_least else ratio <= limit
        checks.append(ok)
        entry[key]["target"] = f"{'>=' if at_least else '<='} {limit:g}x"
        entry[key]["pass"] = ok
        return (f"{ratio:>9.2f}×", f"{'≥' if at_least else '≤'}{limit:g}×", "PASS" if ok else "FAIL")

    for op, label, b1_min, b2_max in rows_spec(settings):
        if op not in samples and op not in missing:
            continue
        stats = {name: summarise(samples[op][name]) for name in ORDER if samples.get(op, {}).get(name)}
        entry: dict[str, Any] = {"label": label, "contenders": stats, "missing": missing.get(op, {})}
        cells = [fmt_us(stats[name]["median_us"]) if name in stats else "n/a" for name in ORDER]
        out["operations"][op] = entry
        if "project" not in stats:
            why = missing.get(op, {}).get("project", "not measured")
            entry["verdict"] = None
            lines.append(f"{label:<42}{cells[0]:>12}{cells[1]:>12}{cells[2]:>12}  n/a ({why})")
            continue
        checks: list[bool] = []
        b1 = ratio_cell(op, "B1", "project", b1_min, True, entry, "b1_speedup", checks)
        b2 = ratio_cell(op, "project", "B2", b2_max, False, entry, "b2_ratio", checks)
        verdict = "PASS" if checks and all(checks) else ("FAIL" if checks else "—")
        entry["verdict"] = verdict
        lines.append(
            f"{label:<42}{cells[0]:>12}{cells[1]:>12}{cells[2]:>12}"
            f"  {b1[0]:>10} {b1[1]:>6} {b1[2]:<4}  {b2[0]:>10} {b2[1]:>7} {b2[2]:<4}  {verdict}"
        )
    details = []
    for op in ("save_insert", "save_update"):
        if op in samples:
            stats = {name: summarise(samples[op][name]) for name in ORDER if samples[op].get(name)}
            out["operations"][op] = {"label": op.replace("_", " "), "contenders": stats}
            details.append(f"  {op.replace('_', ' '):<40}" + "".join(
                f"{fmt_us(stats[n]['median_us']) if n in stats else 'n/a':>12}" for n in ORDER))
    iqr = []
    for op, *_ in rows_spec(settings):
        entry = out["operations"].get(op)
        if entry and entry.get("contenders") and max(c["n"] for c in entry["contenders"].values()) > 1:
            contenders = entry["contenders"]
            iqr.append(f"  {op:<16}" + "".join(
                f"{fmt_us(c['p25_us']) + ' – ' + fmt_us(c['p75_us']) if (c := contenders.get(n)) else 'n/a':>24}"
                for n in ORDER))

    fs = machine["filesystem"]
    load = result["load"]
    print()
    print("uniqc_store benchmark: project (TaskStore) vs B1 (per-call sqlite3) vs B2 (persistent raw sqlite3)")
    print(f"machine:    {machine['platform']}; {machine['cpu']}; {machine['cpu_count']} CPUs "
          f"({machine['cpus_usable']} usable)")
    print(f"software:   {machine['python']}; SQLite {machine['sqlite']}; SQLAlchemy {machine['sqlalchemy']}; "
          f"Alembic {machine['alembic']}")
    print(f"            uniqc_store {machine['uniqc_store']}")
    print(f"files:      {fs['path']} on {fs['type']} ({fs['device']} mounted at {fs['mount']}, {fs['options']})")
    if fs["type"] in ("tmpfs", "ramfs"):
        print("            WARNING: a RAM filesystem: fsync is free, durability costs are not measured")
    if load:
        busy = max(load) > (machine["cpus_usable"] or 1)
        print(f"load avg:   {load[0]:.2f} at start, {load[1]:.2f} at end"
              + ("  WARNING: other work was competing for the CPUs; expect noise" if busy else ""))
    d = result["durability"]
    print(f"durability: WAL, synchronous: project {d['project']}; B1 {d['B1']}; B2 {d['B2']}")
    print(f"method:     {settings.rounds} rounds, each operation run by project, B1, B2 in turn, cheap ones in "
          f"{settings.slices} interleaved slices per round; per round: {settings.save_pairs} insert+update pairs, "
          f"{settings.gets} gets, {settings.constructs} constructs, {settings.lists} lists, "
          f"{settings.counts} counts; bulk ×1 in {settings.bulk_rounds} round(s), processes ×1 in "
          f"{settings.proc_rounds} round(s)")
    print("            µs = median of all calls; ratios = median over slices (or rounds) of the ratio of the two")
    print("            contenders' medians in that slice; B1/project = speed-up over B1, "
          "project/B2 = cost over the floor")
    print()
    print("\n".join(lines))
    if details:
        print()
        print("  details (median µs)" + " " * 21 + "".join(f"{n:>12}" for n in ORDER))
        print("\n".join(details))
    if iqr:
        print()
        print("  p25 – p75 (µs)  " + "".join(f"{n:>24}" for n in ORDER))
        print("\n".join(iqr))
    if spread:
        print()
        print("  ratio spread")
        print("\n".join(spread))
    failed = [e["label"] for e in out["operations"].values() if e.get("verdict") == "FAIL"]
    print()
    print(f"{len(failed)} row(s) FAIL" + (": " + "; ".join(failed) if failed else ""))
    out["failed"] = failed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and calls)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--dir", metavar="DIR", help="create the database files in a new directory inside DIR")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, --quick 2)")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks for list/count/bulk (default 100000)")
    parser.add_argument("--procs", type=int, default=8, help="writer processes (default 8)")
    parser.add_argument("--proc-saves", type=int, default=300, help="saves per writer process (default 300)")
    parser.add_argument("--ops", help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    args = parser.parse_args(argv)
    ops = OPS if not args.ops else [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown operations {sorted(unknown)}; choose from {OPS}")
    settings = Settings(args)

    workdir = Path(tempfile.mkdtemp(prefix="uniqc-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        machine = machine_info(workdir)
        result = run(settings, ops, workdir)
        summary = report(settings, result, machine)
    finally:
        if args.keep:
            print(f"files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if _OWN_HOME:
            shutil.rmtree(os.environ[_HOME_ENV], ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(f"total time {elapsed:.0f} s")
    if args.json:
        payload = {
            "machine": machine,
            "settings": dict(vars(settings), ops=ops, quick=args.quick),
            "durability": result["durability"],
            "load_average": result["load"],
            "elapsed_s": elapsed,
            **summary,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 1 if summary.get("failed") else 0  # a missed target fails the run


if __name__ == "__main__":
    sys.exit(main())
