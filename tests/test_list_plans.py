"""The query plans of ``list`` and ``list_archived``: an index delivers each page in order.

A page newest first, with any filter, must cost O(log n + limit): the database walks an index that
ends in the sort key (and the tie column) and stops after ``limit`` rows, instead of reading every
row of the filter and sorting them. Checked on every backend with the store's own statements, on a
small store (the timings at a million tasks are benchmarks/bench_scale.py's job).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, make_url

from uniqc_store import TaskInfo, TaskStore, schema
from uniqc_store.statements import statements

from conftest import BACKENDS, create_server_database
from dbutil import raw_execute

ROWS = 4000
#: Every combination of filters the store's list takes: (status, backend), None for no filter;
#: 'success' is common and spread over time, 'failed' rare and among the oldest.
FILTERS = {
    "all": (None, None),
    "status-common": ("success", None),
    "status-rare-and-old": ("failed", None),
    "backend": (None, "quafu:ScQ-P10"),
    "status+backend-common": ("success", "quafu:ScQ-P10"),
    "status+backend-rare-and-old": ("failed", "quafu:ScQ-P10"),
}
_TASK_COLUMNS = "task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json, error_message"


def _tasks() -> Iterator[TaskInfo]:
    backends = itertools.cycle(["originq:wuyuan", "quafu:ScQ-P10", "ibm:brisbane", "dummy"])
    for i in range(ROWS):
        # A common status spread over time, and a rare one among the oldest.
        status = "failed" if i < 20 else ("success", "running", "pending")[i % 3]
        yield TaskInfo(f"t-{i:05d}", next(backends), status=status, submit_time=f"2026-01-01T00:00:{i:08d}+00:00")


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store of :data:`ROWS` tasks and as many archived ones, one per backend for the module."""
    drop = None
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'tasks.sqlite'}"
    else:
        db_url, drop = create_server_database(request.param)
    try:
        with TaskStore(url=db_url) as store:
            store.save_many(_tasks())
        raw_execute(
            db_url,
            f"INSERT INTO archived_tasks ({_TASK_COLUMNS}, archived_at) "
            f"SELECT {_TASK_COLUMNS}, '2026-02-01T00:00:00+00:00' FROM tasks",
        )
        # What a live database has: statistics (SQLite's planner decides from its indexes alone).
        if request.param != "sqlite":
            for table in ("tasks", "archived_tasks"):
                raw_execute(db_url, f"ANALYZE {table}" if request.param == "postgresql" else f"ANALYZE TABLE {table}")
        yield db_url
    finally:
        if drop is not None:
            drop()


def _explain(conn: Connection, stmt: Any, params: dict[str, Any]) -> list[str]:
    """The plan of ``stmt`` as the database reports it, one string per line or row."""
    compiled = stmt.compile(dialect=conn.dialect)
    values = compiled.construct_params(params)
    dialect = conn.dialect.name
    if dialect == "sqlite":
        positional = tuple(values[name] for name in compiled.positiontup)
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
        return [row[-1] for row in rows]
    if dialect == "postgresql":
        # On a few thousand rows PostgreSQL rightly prefers sorting the handful a filter matches;
        # with sorting and scans priced out, it shows whether an index delivers the order at all
        # (it sorts anyway when none does), which is what decides the cost at a million rows.
        for setting in ("enable_sort", "enable_incremental_sort", "enable_seqscan", "enable_bitmapscan"):
            conn.exec_driver_sql(f"SET LOCAL {setting} = off")
        return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", values).all()]
    result = conn.exec_driver_sql(f"EXPLAIN {compiled}", values)
    return [repr(dict(zip(result.keys(), row, strict=True))) for row in result.all()]


@pytest.mark.parametrize("archived", [False, True], ids=["tasks", "archived_tasks"])
@pytest.mark.parametrize("case", FILTERS)
def test_a_page_is_read_from_an_index_in_order(filled: str, archived: bool, case: str) -> None:
    backend = make_url(filled).get_backend_name()
    status_value, backend_value = FILTERS[case]
    by_status, by_backend = status_value is not None, backend_value is not None
    dialect = statements(make_url(filled).get_backend_name())
    queries = dialect.archived if archived else dialect.tasks
    stmt = queries.list(by_status, by_backend, True, False)
    params: dict[str, Any] = {"limit": 50}
    if by_status:
        params["status"] = status_value
    if by_backend:
        params["backend"] = backend_value
    table = "archived_tasks" if archived else "tasks"
    expected = _expected_index(table, backend, by_status, by_backend)
    engine = create_engine(filled)
    try:
        with engine.connect() as conn:
            plan = _explain(conn, stmt, params)
    finally:
        engine.dispose()
    text = "\n".join(plan)
    if backend == "postgresql" and status_value != "failed":
        # PostgreSQL may walk the unfiltered order instead and skip the few rows of other
        # statuses or backends (as cheap while a third of the rows match); but never sorts.
        assert "Index Scan Backward using uniqc_store_" in text, text
    else:
        assert expected in text, text
    if backend == "sqlite":
        assert "TEMP B-TREE" not in text, text  # no sort of what the filter matched
    elif backend == "postgresql":
        assert "Sort" not in text and "Seq Scan" not in text, text
    else:
        assert "filesort" not in text and "temporary" not in text, text


def _expected_index(table: str, backend: str, by_status: bool, by_backend: bool) -> str:
    dialect = "sqlite" if backend == "sqlite" else backend
    names = schema.list_indexes(table, dialect)
    wanted = ("status", "backend") if by_status and by_backend else ("status",) if by_status else (
        ("backend",) if by_backend else ()
    )
    if not wanted and backend == "sqlite":
        # uniqc's own submit_time index serves the unfiltered order: it ends in the rowid.
        return "tasks_submit_time_idx" if table == "tasks" else "archived_submit_time_idx"
    (name,) = [name for name, columns in names.items() if columns[: len(wanted) + 1] == (*wanted, "submit_time")]
    return name
