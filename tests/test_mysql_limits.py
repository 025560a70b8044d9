"""MySQL/MariaDB's max_allowed_packet: a save the server would refuse is refused by the store
first, with a message that says what is too large and how to raise the limit, and nothing stored
changes. On the real server from UNIQC_STORE_TEST_MYSQL_URL (skipped without it).

The server refuses a statement unless its bytes plus the protocol's command byte stay below
``@@max_allowed_packet``: so the largest statement is ``limit - 2`` bytes. The tests find the
payload that makes the store's statement exactly that long, and use the server itself to show
that one byte more really is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, exc

from uniqc_store import InvalidTaskError, TaskInfo, TaskShard, TaskStore
from uniqc_store.records import utc_now
from uniqc_store.rows import TASKS, task_row
from uniqc_store.statements import upsert

from conftest import create_server_database
from dbutil import raw_rows

ROW = (
    "SELECT task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json "
    "FROM tasks ORDER BY task_id"
)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    url, drop = create_server_database("mysql")
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def limit(mysql_url: str) -> int:
    return int(raw_rows(mysql_url, "SELECT @@max_allowed_packet")[0][0])


def blob(n: int) -> dict[str, str]:
    """A result whose JSON grows by exactly one byte, escaped or not, per unit of ``n``."""
    return {"data": "x" * n}


def statement_size(error: InvalidTaskError) -> int:
    found = re.search(r"takes a statement of ([\d,]+) bytes", str(error))
    assert found, str(error)
    return int(found.group(1).replace(",", ""))


def largest_result_that_fits(store: TaskStore, limit: int) -> int:
    """The ``n`` of the largest ``blob(n)`` result the store lets through for task 'big'."""
    with pytest.raises(InvalidTaskError) as caught:
        store.save(TaskInfo("big", "sim", result=blob(limit)))  # surely too large
    return limit - (statement_size(caught.value) - (limit - 2))


def test_a_result_one_byte_over_the_servers_limit_is_refused_and_nothing_changes(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        store.save(TaskInfo("big", "sim", result={"00": 1}, metadata={"run": 1}))
        before = raw_rows(mysql_url, ROW)
        n = largest_result_that_fits(store, limit)

        over = TaskInfo("big", "sim", result=blob(n + 1))
        stamped = over.update_time
        with pytest.raises(InvalidTaskError) as caught:
            store.save(over)
        message = str(caught.value)
        assert message.startswith("task 'big': result is too large")
        assert f"statement of {limit - 1:,} bytes" in message
        assert f"max_allowed_packet of {limit:,} bytes" in message
        assert "SET GLOBAL max_allowed_packet=" in message and "Nothing was written" in message
        assert over.update_time == stamped
        assert raw_rows(mysql_url, ROW) == before
        assert store.get("big").result == {"00": 1}  # and the store's connection still works

        # The server itself refuses that statement: without the store's check, this is what a
        # caller got ("Got a packet bigger than 'max_allowed_packet'", "server has gone away" or,
        # when the server resets the connection mid-send, "Lost connection").
        engine = create_engine(mysql_url)
        dropped = r"max_allowed_packet|gone away|Lost connection"
        try:
            with pytest.raises(exc.OperationalError, match=dropped), engine.begin() as conn:
                conn.execute(upsert("mysql", TASKS), task_row(over, utc_now()))
        finally:
            engine.dispose()
        assert raw_rows(mysql_url, ROW) == before


def test_a_result_at_the_servers_limit_saves_and_reads_back(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        n = largest_result_that_fits(store, limit)
        assert limit - 1_000 < n < limit  # only the statement's own text is added to the result
        store.save(TaskInfo("big", "sim", result=blob(n)))
        assert store.get("big").result == blob(n)
    with TaskStore(url=mysql_url) as store:  # a fresh connection reads it too
        assert [task.result for task in store.list()] == [blob(n)]


def test_oversized_metadata_is_named_as_metadata(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        # Fewer characters than the limit, but two utf-8 bytes each: the limit is on bytes.
        with pytest.raises(InvalidTaskError, match=r"^task 'meta': metadata is too large") as caught:
            store.save(TaskInfo("meta", "sim", result={"0": 1}, metadata={"notes": "é" * (limit // 2)}))
        found = re.search(r"metadata ([\d,]+) bytes", str(caught.value))
        assert found and int(found.group(1).replace(",", "")) > 2 * (limit // 2)
        assert store.count() == 0


def test_save_many_with_one_task_over_the_limit_writes_nothing(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        store.save(TaskInfo("kept", "sim", shots=1))
        before = raw_rows(mysql_url, ROW)
        tasks = [
            TaskInfo("new", "sim"),
            TaskInfo("kept", "changed", shots=2),
            TaskInfo("huge", "sim", result=blob(limit)),
        ]
        stamps = [task.update_time for task in tasks]
        with pytest.raises(InvalidTaskError, match=r"^tasks\[2\]: task 'huge': result is too large"):
            store.save_many(tasks)
        assert raw_rows(mysql_url, ROW) == before
        assert [task.update_time for task in tasks] == stamps


def test_save_many_saves_tasks_that_fit_one_by_one_though_not_in_one_statement(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        tasks = [TaskInfo(f"part-{i}", "sim", result=blob(limit * 2 // 5)) for i in range(3)]
        store.save_many(tasks)
        assert [task.result for task in store.list()] == [blob(limit * 2 // 5)] * 3


def test_a_shard_over_the_servers_limit_is_refused_naming_the_shard_and_nothing_changes(
    mysql_url: str, limit: int
) -> None:
    with TaskStore(url=mysql_url) as store:
        store.save(TaskInfo("uqt_1", "sim"))
        store.save_shard(TaskShard("uqt_1", 0, "p-0", "sim", result={"00": 1}))
        before = raw_rows(mysql_url, "SELECT * FROM task_shards")
        over = TaskShard("uqt_1", 0, "p-0", "sim", result=[blob(limit)])
        stamped = over.update_time
        with pytest.raises(InvalidTaskError, match=r"^shard 0 of task 'uqt_1': result is too large") as caught:
            store.save_shard(over)
        assert "error_message 0 bytes" in str(caught.value) and "Nothing was written" in str(caught.value)
        assert over.update_time == stamped
        assert raw_rows(mysql_url, "SELECT * FROM task_shards") == before


def test_an_oversized_error_message_is_named_as_the_error_message(mysql_url: str, limit: int) -> None:
    with TaskStore(url=mysql_url) as store:
        with pytest.raises(InvalidTaskError, match=r"^task 'failed': error_message is too large"):
            store.save(TaskInfo("failed", "sim", status="failed", error_message="x" * limit))
        assert store.count() == 0
