"""ORM sessions: ``store.session()`` reads the declarative models after the store's checks and
refuses every write; ``store.session(write=True)`` writes only what the store would accept, under
its write lock and header checks; ``raw_sql=True`` lets unchecked statements through."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from uniqc_store import (
    ArchivedShard,
    ArchivedTask,
    InvalidTaskError,
    InvalidTaskTypeError,
    SchemaTooNewError,
    Shard,
    Task,
    TaskConflictError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
    WriteIntentError,
    model_of,
    record_of,
)

from dbutil import raw_rows


def _fill(store: TaskStore) -> None:
    store.save(TaskInfo("big-1", "originq:wuyuan", status="success", shots=4000, result={"00": 1}))
    store.save(TaskInfo("big-2", "originq:wuyuan", status="running", shots=3000, error_message="slow"))
    store.save(TaskInfo("small", "originq:wuyuan", status="success", shots=100))
    store.save(TaskInfo("other", "dummy", status="success", shots=5000))
    store.save_shard(TaskShard("big-1", 0, "p-0", "originq:wuyuan", status="success"))
    store.save_shard(TaskShard("big-1", 1, "p-1", "originq:wuyuan", status="success"))
    store.save(TaskInfo("old", "dummy", status="failed"))
    store.archive_task("old")


def test_a_session_answers_an_ad_hoc_query_over_the_models(store: TaskStore) -> None:
    _fill(store)
    with store.session() as session:
        by_status = session.execute(
            select(Task.status, func.count())
            .where(Task.backend == "originq:wuyuan", Task.shots > 2000)
            .group_by(Task.status)
            .order_by(Task.status)
        ).all()
        assert [tuple(row) for row in by_status] == [("running", 1), ("success", 1)]
        task = session.get(Task, "big-1")
        assert task is not None and [shard.platform_task_id for shard in task.shards] == ["p-0", "p-1"]
        assert session.scalars(select(ArchivedTask.task_id)).all() == ["old"]


def test_record_of_gives_what_the_store_itself_reads(store: TaskStore) -> None:
    _fill(store)
    with store.session() as session:
        assert record_of(session.get(Task, "big-2")) == store.get("big-2")
        assert record_of(session.get(ArchivedTask, "old")) == store.get_archived("old")
        shards = session.scalars(select(Shard).order_by(Shard.shard_index)).all()
        assert [record_of(shard) for shard in shards] == store.get_shards("big-1")


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.add(Task(task_id="sneaky", backend="x", status="bogus", shots=1, submit_time="t", update_time="t")),
        lambda s: setattr(s.get(Task, "small"), "status", "not-a-status"),
        lambda s: s.delete(s.get(Task, "small")),
    ],
    ids=["add", "change", "delete"],
)
def test_a_session_cannot_flush_writes(store: TaskStore, write) -> None:
    _fill(store)
    with store.session() as session:
        write(session)
        with pytest.raises(WriteIntentError, match="only reads"):
            session.flush()
    assert store.get("small").status == "success" and store.get("sneaky") is None


@pytest.mark.parametrize(
    "statement",
    [delete(Task), text("DELETE FROM tasks")],
    ids=["orm-delete", "text-delete"],
)
def test_a_session_refuses_to_execute_anything_but_a_select(store: TaskStore, statement) -> None:
    _fill(store)
    with store.session() as session, pytest.raises(WriteIntentError, match="only reads"):
        session.execute(statement)
    assert store.count() == 4


# -- writable sessions ---------------------------------------------------------------------------


def test_a_writable_session_writes_records_the_store_reads_back(store: TaskStore) -> None:
    _fill(store)
    with store.session(write=True) as session:
        session.add(model_of(TaskInfo("new", "dummy", status="running", result=[{"0": 1}], metadata={"k": [1]})))
        session.get(Task, "small").status = "failed"
        session.delete(session.get(Task, "big-1"))  # and its shards, by the foreign key
        session.add(Shard(uniqc_task_id="big-2", shard_index=0, platform_task_id="p-9", backend="originq:wuyuan"))
        session.commit()
    new = store.get("new")
    assert (new.status, new.result, new.metadata) == ("running", [{"0": 1}], {"k": [1]})
    assert store.get("small").status == "failed"
    assert store.get("big-1") is None and store.get_shards("big-1") == []
    [shard] = store.get_shards("big-2")
    assert (shard.circuit_count, shard.sub_index_offset, shard.status) == (1, 0, "pending")  # the record's defaults


def test_a_flush_stamps_update_time_and_writes_the_stores_own_json_text(store: TaskStore, db_url: str) -> None:
    store.save(TaskInfo("t", "dummy"))
    before = store.get("t").update_time
    with store.session(write=True) as session:
        task = session.get(Task, "t")
        task.metadata_json = '{"b":[1,2],  "a":{}}'
        task.result_json = ""
        session.add(Task(task_id="bare", backend="dummy"))
        session.commit()
    after = store.get("t")
    assert after.update_time > before and after.metadata == {"b": [1, 2], "a": {}}
    assert raw_rows(db_url, "SELECT metadata_json, result_json FROM tasks WHERE task_id = 't'") == [
        ('{"b": [1, 2], "a": {}}', None)
    ]
    bare = store.get("bare")
    expected = TaskInfo("bare", "dummy", submit_time=bare.submit_time, update_time=bare.update_time)
    assert bare == expected and bare.update_time == after.update_time  # one stamp per flush


def _set(column: str, value: object) -> Callable[[Session], None]:
    return lambda session: setattr(session.get(Task, "small"), column, value)


def _add(model: type, **columns: object) -> Callable[[Session], None]:
    return lambda session: session.add(model(**columns))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("status", "done"), "Task 'small': status 'done' is not a TaskStatus value"),
        (_set("shots", -1), "Task 'small': shots must be between 0 and"),
        (_set("shots", "100"), "Task 'small': shots must be an int"),
        (_set("backend", ""), "Task 'small': backend must not be empty"),
        (_set("backend", "x" * 256), "Task 'small': backend is 256 characters long; the limit is 255"),
        (_set("error_message", "a\x00b"), "Task 'small': error_message must not contain NUL"),
        (_set("result_json", "{not json"), "Task 'small': result_json is not JSON text"),
        (_set("result_json", "42"), "Task 'small': result must be a dict or a list, got int"),
        (_set("metadata_json", "[1]"), "Task 'small': metadata must be a dict, got list"),
        (_set("metadata_json", {"k": 1}), "Task 'small': metadata_json must be JSON text or None, got dict"),
        (_set("result_json", "[" * 101 + "]" * 101), "nested 101 levels deep"),
        (_set("submit_time", None), "Task 'small': submit_time must be a str"),
        (_add(Task, task_id="", backend="dummy"), "Task '': task_id must not be empty"),
        (
            _add(ArchivedTask, task_id="a", backend="dummy"),
            "ArchivedTask 'a': archived_at must be a str, got NoneType",
        ),
        (
            _add(Shard, uniqc_task_id="big-1", shard_index=2**31, platform_task_id="p", backend="b"),
            "Shard 2147483648 of task 'big-1': shard_index must be between 0 and 2147483647",
        ),
        (
            _add(ArchivedShard, uniqc_task_id="old", shard_index=0, platform_task_id="p", backend="b", status="x"),
            "ArchivedShard 0 of task 'old': status 'x' is not a TaskStatus value",
        ),
    ],
    ids=[
        "status",
        "negative-shots",
        "str-shots",
        "empty-backend",
        "long-backend",
        "nul",
        "result-not-json",
        "result-a-number",
        "metadata-a-list",
        "metadata-not-text",
        "too-deep",
        "no-submit-time",
        "empty-id",
        "archived-without-archived_at",
        "shard-index",
        "archived-shard-status",
    ],
)
def test_a_writable_session_refuses_what_the_store_would_refuse_and_writes_nothing(
    store: TaskStore, db_url: str, change: Callable[[Session], None], message: str
) -> None:
    _fill(store)
    before = raw_rows(db_url, "SELECT * FROM tasks ORDER BY task_id")
    with store.session(write=True) as session:
        session.add(model_of(TaskInfo("valid", "dummy")))  # in the same flush: not written either
        change(session)
        with pytest.raises(InvalidTaskError) as refused:
            session.commit()
        assert message in str(refused.value)
    assert raw_rows(db_url, "SELECT * FROM tasks ORDER BY task_id") == before
    assert store.count_shards(archived=True) == 0 and store.get_archived("a") is None


def test_a_shard_of_a_task_that_is_not_live_is_refused_by_the_database(store: TaskStore) -> None:
    _fill(store)
    with store.session(write=True) as session:
        session.add(model_of(TaskShard("old", 0, "p", "dummy")))  # "old" is archived
        with pytest.raises(IntegrityError):
            session.commit()
    assert store.get_shards("old") == [] and store.count_shards() == 2


_ROW = {"task_id": "x", "backend": "b", "status": "done", "shots": 1, "submit_time": "t", "update_time": "t"}


@pytest.mark.parametrize(
    ("statement", "done"),
    [
        (text("DELETE FROM tasks"), lambda store: store.count() == 0),
        (update(Task).values(status="running"), lambda store: store.count(status="running") == 4),
        (insert(Task).values(**_ROW), lambda store: store.count() == 5),  # unchecked: status 'done'
    ],
    ids=["text", "orm-update", "orm-insert"],
)
def test_a_writable_session_runs_unchecked_statements_only_with_raw_sql(store: TaskStore, statement, done) -> None:
    _fill(store)
    with store.session(write=True) as session:
        with pytest.raises(WriteIntentError, match="cannot be checked row by row"):
            session.execute(statement)
        with pytest.raises(WriteIntentError, match="cannot be checked row by row"):
            session.connection().execute(statement)  # past the session's own execute()
    assert store.count() == 4 and store.count(status="running") == 1
    with store.session(write=True, raw_sql=True) as session:
        session.execute(statement)
        session.commit()
    assert done(store)


def test_a_read_only_session_refuses_writes_on_its_connection_too(store: TaskStore) -> None:
    _fill(store)
    with store.session() as session, pytest.raises(WriteIntentError, match="only reads"):
        session.connection().execute(text("DELETE FROM tasks"))
    assert store.count() == 4


def test_a_writable_session_runs_orm_deletes(store: TaskStore) -> None:
    _fill(store)
    with store.session(write=True) as session:
        session.execute(delete(Task).where(Task.shots > 2000))
        session.commit()
    assert sorted(task.task_id for task in store.list()) == ["small"]
    assert store.count_shards() == 0


def test_raw_sql_needs_write(store: TaskStore) -> None:
    with pytest.raises(InvalidTaskError, match="raw_sql=True needs write=True"):
        store.session(raw_sql=True)
    with pytest.raises(InvalidTaskTypeError, match="must be True or False"):
        store.session(write="yes")  # type: ignore[arg-type]


# -- conversions ---------------------------------------------------------------------------------


def test_model_of_is_the_inverse_of_record_of(store: TaskStore) -> None:
    task = TaskInfo("t", "dummy", status=TaskStatus.SUCCESS, result={"0": 1.5}, metadata={"a": None}, error_message="")
    archived = TaskInfo("a", "dummy", archived_at="2026-01-01T00:00:00+00:00")
    shard = TaskShard("t", 3, "p", "dummy", circuit_count=2, sub_index_offset=4, result=[{"0": 1}])
    assert type(model_of(task)) is Task and record_of(model_of(task)) == TaskInfo(**task.to_dict())
    assert type(model_of(archived)) is ArchivedTask and record_of(model_of(archived)) == archived
    assert type(model_of(shard)) is Shard and record_of(model_of(shard)) == shard
    archived_shard = model_of(shard, archived_at="2026-01-01T00:00:00+00:00")
    assert type(archived_shard) is ArchivedShard and record_of(archived_shard) == shard
    with store.session(write=True) as session:
        session.add_all([model_of(task), model_of(archived), model_of(TaskShard("t", 0, "p", "dummy"))])
        session.commit()
    assert store.get("t").result == {"0": 1.5} and store.get_archived("a").archived_at == archived.archived_at


@pytest.mark.parametrize(
    ("record", "error", "message"),
    [
        (TaskInfo("t", "dummy", metadata={0: 1}), InvalidTaskTypeError, "metadata: dict key 0 is int"),
        (TaskShard("t", -1, "p", "b"), InvalidTaskError, "shard_index must be between 0"),
        (TaskInfo("t", "dummy", update_time=""), InvalidTaskError, "update_time must not be empty"),
        ({"task_id": "t"}, InvalidTaskTypeError, "expected a TaskInfo or TaskShard, got dict"),
    ],
    ids=["json-key", "shard-index", "update-time", "not-a-record"],
)
def test_model_of_refuses_a_record_the_store_would_refuse(record, error, message) -> None:
    with pytest.raises(error, match=message):
        model_of(record)


# -- the store's rules: lock, header, interrupts, clear_all (SQLite) ---------------------------------


def _outsider_can_write(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return False
    finally:
        conn.close()


def test_a_writable_session_holds_the_write_lock_from_its_first_write_to_commit(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    path = sqlite_store.db_path
    with sqlite_store.session(write=True) as session:
        session.get(Task, "small")
        assert _outsider_can_write(path)  # reading alone takes no lock
        session.get(Task, "small").shots = 7
        session.flush()
        assert not _outsider_can_write(path)
        session.commit()
        assert _outsider_can_write(path)
    assert sqlite_store.get("small").shots == 7


def test_a_writable_session_waits_for_another_writer_then_writes(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    other = sqlite3.connect(sqlite_store.db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, other.execute, ["ROLLBACK"]).start()
    started = time.monotonic()
    with sqlite_store.session(write=True) as session:
        session.get(Task, "small").shots = 8
        session.commit()
    other.close()
    assert time.monotonic() - started >= 0.4 and sqlite_store.get("small").shots == 8


def test_a_writable_session_refuses_to_write_into_a_file_migrated_meanwhile(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    with sqlite_store.session(write=True) as session:
        session.get(Task, "small").shots = 9
        conn = sqlite3.connect(sqlite_store.db_path)
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
        conn.close()
        with pytest.raises(SchemaTooNewError, match="changed to user_version 99 while in use"):
            session.commit()
    conn = sqlite3.connect(sqlite_store.db_path)
    assert conn.execute("SELECT shots FROM tasks WHERE task_id = 'small'").fetchone() == (100,)
    conn.close()
    assert _outsider_can_write(sqlite_store.db_path)


def test_an_interrupt_while_a_session_waits_for_the_lock_leaves_no_lock_and_writes_nothing(
    sqlite_store: TaskStore,
) -> None:
    _fill(sqlite_store)
    other = sqlite3.connect(sqlite_store.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    started = time.monotonic()
    try:
        with sqlite_store.session(write=True) as session, pytest.raises(KeyboardInterrupt):
            session.get(Task, "small").shots = 10
            session.commit()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 1.0  # the wait is interruptible, in slices
    other.execute("ROLLBACK")
    other.close()
    assert _outsider_can_write(sqlite_store.db_path)
    assert sqlite_store.get("small").shots == 100
    sqlite_store.save(TaskInfo("after", "dummy"))  # the store carries on


def test_clear_all_waits_for_a_writable_session_to_end(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    session = sqlite_store.session(write=True)
    session.get(Task, "small").shots = 11
    session.flush()
    clearing = threading.Thread(target=sqlite_store.clear_all)
    clearing.start()
    clearing.join(0.5)
    assert clearing.is_alive() and sqlite_store.db_path.exists()
    session.commit()
    session.close()
    clearing.join(30)
    assert not clearing.is_alive() and sqlite_store.count() == 0


def test_a_savepoint_in_a_writable_session_begins_the_stores_write_transaction(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    with sqlite_store.session(write=True) as session:
        session.get(Task, "small")
        conn = sqlite3.connect(sqlite_store.db_path)
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
        conn.close()
        with pytest.raises(SchemaTooNewError, match="changed to user_version 99"), session.begin_nested():
            session.get(Task, "small").shots = 12
    assert _outsider_can_write(sqlite_store.db_path)
    conn = sqlite3.connect(sqlite_store.db_path)
    assert conn.execute("SELECT shots FROM tasks WHERE task_id = 'small'").fetchone() == (100,)
    conn.close()


# -- writes that bypass a flush (adversarial probes, issue 10) -------------------------------------


_BOGUS = {"task_id": "z", "backend": "", "status": "bogus", "shots": -5, "submit_time": "x", "update_time": "x"}


@pytest.mark.parametrize(
    ("method", "write"),
    [
        ("bulk_save_objects", lambda s: s.bulk_save_objects([Task(**_BOGUS, metadata_json="not json")])),
        ("bulk_insert_mappings", lambda s: s.bulk_insert_mappings(Task, [{**_BOGUS, "metadata_json": "nope"}])),
        ("bulk_update_mappings", lambda s: s.bulk_update_mappings(Task, [{"task_id": "small", "status": "bogus"}])),
    ],
    ids=["save-objects", "insert-mappings", "update-mappings"],
)
def test_the_bulk_methods_are_refused_as_they_write_unchecked(store: TaskStore, db_url: str, method, write) -> None:
    _fill(store)
    before = raw_rows(db_url, "SELECT * FROM tasks ORDER BY task_id")
    with store.session(write=True) as session:
        with pytest.raises(WriteIntentError, match=rf"session\.{method}\(\) writes rows without a flush.*add\(\)"):
            write(session)
        session.commit()
    with store.session() as session, pytest.raises(WriteIntentError, match=rf"{method}\(\) writes: .*only reads"):
        write(session)
    assert raw_rows(db_url, "SELECT * FROM tasks ORDER BY task_id") == before
    assert len(store.list()) == 4  # every row still reads back
    with store.session(write=True, raw_sql=True) as session:  # the escape hatch, unchecked
        write(session)
        session.commit()
    assert store.count_by_status().get("bogus") == 1


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.execute(insert(Task), [_ROW]),  # ORM bulk INSERT by a list of dicts
        lambda s: s.execute(update(Task), [{"task_id": "small", "status": "bogus"}]),  # bulk UPDATE by key
        lambda s: s.query(Task).filter(Task.task_id == "small").update({"shots": -1}),  # legacy Query
        lambda s: s.connection().exec_driver_sql("UPDATE tasks SET status = 'bogus'"),
        lambda s: s.execute(select(Task).where(text("shots > 0"))),  # text anywhere may hold a write
        lambda s: s.execute(delete(ArchivedTask)),  # would leave the archived shards behind
    ],
    ids=["bulk-insert", "bulk-update", "query-update", "driver-sql", "nested-text", "delete-archived"],
)
def test_every_other_unchecked_write_is_refused_without_raw_sql(store: TaskStore, db_url: str, write) -> None:
    _fill(store)
    before = [raw_rows(db_url, f"SELECT * FROM {t} ORDER BY 1") for t in ("tasks", "archived_tasks")]
    with store.session(write=True) as session:
        with pytest.raises(WriteIntentError, match="cannot be checked row by row"):
            write(session)
        session.commit()
    assert [raw_rows(db_url, f"SELECT * FROM {t} ORDER BY 1") for t in ("tasks", "archived_tasks")] == before


def test_a_query_delete_and_a_merge_without_load_stay_checked(store: TaskStore) -> None:
    _fill(store)
    with store.session(write=True) as session:
        assert session.query(Task).filter(Task.task_id == "other").delete() == 1  # deletes run
        detached = session.get(Task, "small")
        session.commit()
        session.expunge(detached)
        merged = session.merge(detached, load=False)  # attaches without a write
        merged.shots = -1
        with pytest.raises(InvalidTaskError, match="Task 'small': shots must be between 0 and"):
            session.commit()
    assert store.get("other") is None and store.get("small").shots == 100


def _cte_writes() -> list[object]:
    """Statements that write from inside a SELECT: data-modifying CTEs, which only PostgreSQL
    compiles and runs (the guard refuses them before they reach any database)."""
    return [
        select(delete(Shard).returning(Shard.uniqc_task_id).cte("gone")),
        select(update(Task).values(status="bogus", shots=-1).returning(Task.task_id).cte("changed")),
        select(Task).where(Task.task_id.in_(select(update(Task).values(shots=-1).returning(Task.task_id).cte()))),
    ]


def test_a_write_inside_a_select_is_refused(store: TaskStore, db_url: str, backend: str) -> None:
    _fill(store)
    snapshot = (
        "SELECT task_id, status, shots FROM tasks UNION ALL SELECT uniqc_task_id, status, shard_index FROM task_shards"
    )
    before = sorted(raw_rows(db_url, snapshot))
    for statement in _cte_writes():
        with store.session() as session, pytest.raises(WriteIntentError, match="only reads"):
            session.execute(statement)
    with store.session(write=True) as session:
        for statement in _cte_writes()[1:]:
            with pytest.raises(WriteIntentError, match="an UPDATE statement inside a SELECT cannot be checked"):
                session.execute(statement)
            with pytest.raises(WriteIntentError, match="an UPDATE statement inside a SELECT cannot be checked"):
                session.connection().execute(statement)
        session.commit()
    assert sorted(raw_rows(db_url, snapshot)) == before
    if backend == "postgresql":  # a DELETE inside a SELECT runs where a DELETE does
        with store.session(write=True) as session:
            assert session.execute(_cte_writes()[0]).all() == [("big-1",), ("big-1",)]
            session.commit()
        assert store.count_shards() == 0


def test_a_read_only_session_is_read_only_at_the_database_too(store: TaskStore, db_url: str, backend: str) -> None:
    _fill(store)
    with store.session() as session:
        assert session.get(Task, "small") is not None
        raw = session.connection().connection.dbapi_connection
        cursor = raw.cursor()
        with pytest.raises(Exception, match=r"(?i)read.?only"):  # past every guard: the driver itself
            cursor.execute("UPDATE tasks SET status = 'bogus' WHERE task_id = 'small'")
        cursor.close()
    if backend == "postgresql":
        with store.session() as session:
            assert session.scalar(select(func.current_setting("transaction_read_only"))) == "on"
    assert store.get("small").status == "success" and store.count_shards() == 2
    # The connection went back to the pool writable: the same DBAPI connection writes again.
    cursor = raw.cursor()
    cursor.execute("UPDATE tasks SET shots = 101 WHERE task_id = 'small'")
    cursor.close()
    if backend == "sqlite":
        assert raw.execute("PRAGMA query_only").fetchone() == (0,)
    else:
        raw.commit()  # the pool's connections autocommit: nothing to commit, but say so
    assert store.get("small").shots == 101
    store.save(TaskInfo("after", "dummy"))


def test_a_read_only_sessions_error_leaves_its_connection_writable(sqlite_store: TaskStore) -> None:
    _fill(sqlite_store)
    with sqlite_store.session() as session:
        raw = session.connection().connection.dbapi_connection
        with pytest.raises(WriteIntentError):
            session.execute(delete(Task))
        session.rollback()
        assert raw.execute("PRAGMA query_only").fetchone() == (0,)
        session.get(Task, "small")  # a new transaction: read-only again
        assert session.connection().connection.dbapi_connection.execute("PRAGMA query_only").fetchone() == (1,)
    assert raw.execute("PRAGMA query_only").fetchone() == (0,)


def test_a_shard_appended_to_its_tasks_collection_takes_the_tasks_id(store: TaskStore) -> None:
    store.save(TaskInfo("d", "dummy"))
    with store.session(write=True) as session:
        task = session.get(Task, "d")
        task.shards.append(Shard(shard_index=0, platform_task_id="p0", backend="dummy"))
        session.add(Shard(task=task, shard_index=1, platform_task_id="p1", backend="dummy", status="running"))
        session.commit()
    assert [(s.uniqc_task_id, s.shard_index, s.status) for s in store.get_shards("d")] == [
        ("d", 0, "pending"),
        ("d", 1, "running"),
    ]
    with store.session(write=True) as session:
        task = session.get(Task, "d")
        task.shards.append(Shard(shard_index=-1, platform_task_id="p", backend="dummy"))
        with pytest.raises(InvalidTaskError, match="Shard -1 of task 'd': shard_index must be between 0"):
            session.commit()
    assert len(store.get_shards("d")) == 2


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            _add(
                ArchivedShard, uniqc_task_id="nobody", shard_index=0, platform_task_id="p", backend="b", archived_at="t"
            ),
            TaskNotFoundError,
            "ArchivedShard 0 of task 'nobody': the archive holds no task 'nobody'",
        ),
        (
            lambda s: setattr(s.get(ArchivedShard, ("old", 0)), "uniqc_task_id", "nobody"),
            TaskNotFoundError,
            "ArchivedShard 0 of task 'nobody': the archive holds no task 'nobody'",
        ),
        (
            _add(ArchivedTask, task_id="small", backend="b", archived_at="t"),
            TaskConflictError,
            "ArchivedTask 'small': a live task has this id",
        ),
        (
            lambda s: setattr(s.get(ArchivedTask, "old"), "task_id", "small"),
            TaskConflictError,
            "ArchivedTask 'small': a live task has this id",
        ),
        (
            lambda s: s.delete(s.get(ArchivedTask, "old")),
            TaskConflictError,
            "ArchivedTask 'old': deleting or renaming it would leave the archived shards of task 'old' behind",
        ),
    ],
    ids=["orphan-shard", "shard-moved-away", "archived-and-live", "renamed-to-a-live-id", "delete-leaving-shards"],
)
def test_the_archive_keeps_its_shape(store: TaskStore, db_url: str, change, error, message) -> None:
    _fill(store)
    store.save_shard(TaskShard("small", 0, "p", "dummy"))
    store.archive_task("small")
    store.save(TaskInfo("small", "dummy"))  # live again, as save() may: the archive holds it too
    store.restore_task("old")
    store.archive_task("old")  # archived with a shard
    with store.session(write=True) as session:  # each query flushes first: load, then change
        archived, shard = session.get(ArchivedTask, "small"), session.get(ArchivedShard, ("small", 0))
        session.add(
            ArchivedShard(uniqc_task_id="old", shard_index=0, platform_task_id="p", backend="b", archived_at="t")
        )
        session.delete(archived)
        session.delete(shard)
        session.commit()
    before = [raw_rows(db_url, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("archived_tasks", "archived_task_shards")]
    with store.session(write=True) as session:
        change(session)
        with pytest.raises(error, match=message):
            session.commit()
    assert [
        raw_rows(db_url, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("archived_tasks", "archived_task_shards")
    ] == before


def test_a_session_may_move_a_task_to_the_archive_in_one_flush(store: TaskStore) -> None:
    _fill(store)
    stamp = "2026-01-01T00:00:00+00:00"
    with store.session(write=True) as session:
        task = session.get(Task, "big-1")
        shards = [model_of(record_of(shard), archived_at=stamp) for shard in task.shards]  # load first
        session.add_all([model_of(record_of(task), archived_at=stamp), *shards])
        session.delete(task)  # in the same flush: checked after its statements ran
        session.commit()
    assert store.get("big-1") is None and store.get_archived("big-1").archived_at == "2026-01-01T00:00:00+00:00"
    assert [shard.platform_task_id for shard in store.get_archived_shards("big-1")] == ["p-0", "p-1"]
    with store.session(write=True) as session:  # and delete it with its shards
        archived = session.get(ArchivedTask, "big-1")
        for shard in archived.shards:
            session.delete(shard)
        session.delete(archived)
        session.commit()
    assert store.get_archived("big-1") is None and store.get_archived_shards("big-1") == []
