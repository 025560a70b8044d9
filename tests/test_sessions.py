"""ORM sessions: ``store.session()`` reads the declarative models after the store's checks, and
refuses every write, which must go through the store's validated, locked methods."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, text

from uniqc_store import (
    ArchivedTask,
    Shard,
    Task,
    TaskInfo,
    TaskShard,
    TaskStore,
    WriteIntentError,
    record_of,
)


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
