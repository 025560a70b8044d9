"""Every unit of work states whether it writes: a statement that changes data in a transaction
opened to read is refused before it runs (on SQLite it would commit on its own, outside the write
lock and the schema check), so a new method that forgets its intent fails loudly."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from uniqc_store import TaskInfo, TaskStore
from uniqc_store.errors import WriteIntentError
from uniqc_store.models import Task


@pytest.mark.parametrize("call", ["rowcount", "rows", "many"])
def test_a_write_in_a_read_transaction_is_refused_and_nothing_changes(store: TaskStore, call: str) -> None:
    store.save(TaskInfo("kept", "sim"))
    statement = delete(Task).where(Task.task_id == "kept")
    with pytest.raises(WriteIntentError, match="write=False"), store._transaction(write=False) as tx:
        if call == "many":
            tx.many(statement, [{}])
        else:
            getattr(tx, call)(statement)
    assert store.get("kept") is not None


def test_the_same_write_runs_in_a_write_transaction(store: TaskStore) -> None:
    store.save(TaskInfo("gone", "sim"))
    with store._transaction(write=True) as tx:
        assert tx.rowcount(delete(Task).where(Task.task_id == "gone")) == 1
    assert store.get("gone") is None
