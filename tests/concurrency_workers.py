"""Child-process side of test_concurrency.py.

Everything here runs in processes started with the ``spawn`` method, so every entry point is a
top-level function taking plain, picklable arguments (URLs as strings). uniqc_store is imported
only after ``HOME`` is set, so a child never sees the developer's real ``~/.uniqc``.

Two kinds of children:

* :func:`serve`: a long-lived pool worker. It imports everything once, then runs jobs sent by the
  test over a pipe, one at a time. Every job starts with ``barrier.wait()``: the test process is
  one of the parties, so all workers (already warm) are released into the race together.
* :func:`write_until_killed`: a writer that acknowledges each save on a pipe after ``save()``
  returned, until the test kills it with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections import Counter
from typing import Any

#: How long a child waits at the barrier for the others before giving up (fail, never hang).
BARRIER_TIMEOUT_S = 60.0

# Statements that only a migrating process executes, counted per job by the Engine-wide hook
# installed in :func:`serve`. Two processes migrating the same database run each of them twice.
_MIGRATION_STATEMENTS = {
    "create_version_table": re.compile(r"^\s*CREATE TABLE uniqc_store_version\b", re.I),
    "insert_version": re.compile(r"^\s*INSERT INTO uniqc_store_version\b", re.I),
    "create_tasks_table": re.compile(r"^\s*CREATE TABLE tasks\b", re.I),
}
_seen: Counter[str] = Counter()


class _UpgradeCounter(logging.Handler):
    """Counts Alembic's "Running upgrade" messages (one per revision this process applies)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Running upgrade"):
            _seen["running_upgrade"] += 1


def _isolate(home: str) -> None:
    os.environ["HOME"] = home
    os.environ.pop("UNIQC_STORE_URL", None)


def _record_statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    for name, pattern in _MIGRATION_STATEMENTS.items():
        if pattern.match(statement):
            _seen[name] += 1


def serve(home: str, conn: Any, barrier: Any) -> None:
    """Pool worker: run ``(job name, args)`` messages from ``conn`` until ``None`` or EOF.

    Replies ``("ok", result)`` or ``("error", traceback text)`` for every job.
    """
    _isolate(home)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import uniqc_store  # noqa: F401  (warm up before any race)

    event.listen(Engine, "before_cursor_execute", _record_statement)
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.setLevel(logging.INFO)
    migration_log.addHandler(_UpgradeCounter())

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        name, args = message
        _seen.clear()
        try:
            reply = ("ok", _JOBS[name](barrier, *args))
        except BaseException:  # noqa: BLE001 - report everything to the parent, the test decides
            reply = ("error", f"worker {os.getpid()}:\n{traceback.format_exc()}")
        conn.send(reply)


def _task(task_id: str, backend: str, shots: int, **extra: Any) -> Any:
    from uniqc_store import TaskInfo

    return TaskInfo(
        task_id=task_id,
        backend=backend,
        status="running" if shots % 2 else "success",
        shots=shots,
        result={"n": shots},
        metadata={"writer": backend, "n": shots, **extra},
    )


def _save_all(store: Any, prefix: str, worker: int, saves: int) -> list[str]:
    """Save ``saves`` new tasks, one per transaction; return the ids whose save() returned."""
    acknowledged = []
    for i in range(saves):
        task = _task(f"{prefix}-{worker}-{i}", f"worker-{worker}", i)
        store.save(task)
        acknowledged.append(task.task_id)
    return acknowledged


def first_open(barrier: Any, url: str, worker: int, saves: int) -> dict[str, Any]:
    """Race the first open of ``url``: construct a store the moment all are released, then save.

    Returns the ids saved (each acknowledged by a returned ``save()``) and the counts of
    migration statements and "Running upgrade" messages this process produced.
    """
    from uniqc_store import TaskStore

    barrier.wait(BARRIER_TIMEOUT_S)
    with TaskStore(url=url) as store:
        saved = _save_all(store, "race", worker, saves)
        revision = store.schema_info()["revision"]
    return {"saved": saved, "revision": revision, "seen": dict(_seen)}


def save_burst(barrier: Any, url: str, worker: int, saves: int) -> list[str]:
    """Open ``url`` the moment all are released and save ``saves`` new tasks."""
    from uniqc_store import TaskStore

    barrier.wait(BARRIER_TIMEOUT_S)
    with TaskStore(url=url) as store:
        return _save_all(store, "burst", worker, saves)


_JOBS = {"first_open": first_open, "save_burst": save_burst}


def write_until_killed(home: str, url: str, acks: Any, limit: int) -> None:
    """Save new tasks one by one; send each id on ``acks`` only after its ``save()`` returned.

    Stops by itself after ``limit`` saves, so it cannot outlive a test that failed to kill it.
    """
    _isolate(home)
    from uniqc_store import TaskStore

    store = TaskStore(url=url)
    acks.send(("open", None))
    for i in range(limit):
        task = _task(f"kill-{i}", "killed-writer", i, padding="x" * 200)
        store.save(task)
        acks.send(("saved", task.task_id))
    acks.send(("done", None))
