"""save() and save_many(): insert or update by task_id, on every backend."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from uniqc_store import InvalidTaskError, TaskInfo, TaskStatus, TaskStore
from uniqc_store.store import SAVE_MANY_CHUNK

from dbutil import raw_rows


def test_a_saved_task_reads_back_with_every_field(store: TaskStore) -> None:
    task = TaskInfo(
        "t-1", "originq:wuyuan", status=TaskStatus.SUCCESS, result={"00": 510, "11": 490},
        shots=1000, submit_time="2026-01-01T00:00:00+00:00", metadata={"circuit": "bell"},
    )
    store.save(task)
    assert store.get("t-1") == TaskInfo(
        "t-1", "originq:wuyuan", "success", {"00": 510, "11": 490}, 1000,
        "2026-01-01T00:00:00+00:00", task.update_time, {"circuit": "bell"},
    )


def test_save_stamps_update_time_and_persists_that_same_value(store: TaskStore) -> None:
    task = TaskInfo("t-1", "sim", update_time="1999-01-01T00:00:00+00:00")
    store.save(task)
    assert task.update_time > "2000"
    assert store.get("t-1").update_time == task.update_time


def test_an_update_changes_every_field_but_keeps_the_first_submit_time(store: TaskStore) -> None:
    store.save(TaskInfo("t-1", "sim", submit_time="2026-01-01T00:00:00+00:00", result={"a": 1}, metadata={"m": 1}))
    update = TaskInfo(
        "t-1", "real", status="failed", result=None, shots=7,
        submit_time="2030-01-01T00:00:00+00:00", metadata={"m": 2},
    )
    store.save(update)
    got = store.get("t-1")
    assert (got.backend, got.status, got.result, got.shots, got.metadata) == ("real", "failed", None, 7, {"m": 2})
    assert got.submit_time == "2026-01-01T00:00:00+00:00"
    assert got.update_time == update.update_time
    assert store.count() == 1


@pytest.mark.parametrize("status", [TaskStatus.RUNNING, "running"], ids=["enum-member", "plain-value"])
def test_the_database_holds_the_plain_status_value(store: TaskStore, db_url: str, status: str) -> None:
    store.save(TaskInfo("t-1", "sim", status=status))
    assert raw_rows(db_url, "SELECT status FROM tasks") == [("running",)]
    assert store.get("t-1").status == "running"


def test_the_row_holds_uniqcs_json_text(store: TaskStore, db_url: str) -> None:
    store.save(TaskInfo("t-1", "sim", result={"k": "é"}, metadata={"label": "量子"}))
    store.save(TaskInfo("t-2", "sim"))
    rows = raw_rows(db_url, "SELECT task_id, result_json, metadata_json FROM tasks ORDER BY task_id")
    assert rows == [("t-1", '{"k": "é"}', '{"label": "量子"}'), ("t-2", None, "{}")]


PAYLOADS = {
    "unicode": {"emoji": "🧪⚛️", "cjk": "量子计算", "rtl": "שלום", "nul-free control": "tab\tnewline\n"},
    "nested": {"a": [1, 2.5, {"b": [None, True, False, {"c": "d"}]}], "e": {"f": {"g": {"h": []}}}},
    "numbers": {"big": 2**62, "neg": -17, "float": 0.1, "exp": 1e-300},
    "empty": {},
}


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_result_and_metadata_round_trip_exactly(store: TaskStore, payload: dict) -> None:
    store.save(TaskInfo("t-1", "sim", result=payload, metadata=payload))
    got = store.get("t-1")
    assert got.result == payload and got.metadata == payload
    assert json.dumps(got.result, sort_keys=True) == json.dumps(payload, sort_keys=True)


def test_a_result_of_several_megabytes_round_trips(store: TaskStore) -> None:
    counts = {format(i, "020b"): i for i in range(200_000)}  # about 5 MB of JSON
    store.save(TaskInfo("big", "sim", result={"counts": counts}))
    assert store.get("big").result == {"counts": counts}


def test_save_many_inserts_and_stamps_every_task(store: TaskStore) -> None:
    tasks = [TaskInfo(f"t-{i}", "sim", update_time="old") for i in range(50)]
    store.save_many(tasks)
    assert store.count() == 50
    stamps = {t.update_time for t in tasks}
    assert len(stamps) == 1 and "old" not in stamps
    assert {t.task_id: t.update_time for t in store.list()} == {t.task_id: t.update_time for t in tasks}


def test_save_many_keeps_first_submit_times_on_update(store: TaskStore) -> None:
    store.save(TaskInfo("t-1", "sim", submit_time="2026-01-01T00:00:00+00:00"))
    store.save_many([TaskInfo("t-1", "real", status="success", submit_time="2031-01-01"), TaskInfo("t-2", "sim")])
    got = store.get("t-1")
    assert (got.backend, got.status, got.submit_time) == ("real", "success", "2026-01-01T00:00:00+00:00")
    assert store.count() == 2


def test_save_many_with_one_bad_task_writes_nothing(store: TaskStore) -> None:
    store.save(TaskInfo("keep", "sim", shots=5))
    before = store.get("keep")
    batch = [TaskInfo("keep", "other", shots=9), TaskInfo("new", "sim"), TaskInfo("bad", "sim", status="bogus")]
    stamps = [t.update_time for t in batch]
    with pytest.raises(InvalidTaskError, match=r"tasks\[2\].*bogus"):
        store.save_many(batch)
    assert store.get("keep") == before
    assert store.get("new") is None
    assert [t.update_time for t in batch] == stamps  # nobody was stamped


def test_save_many_of_nothing_is_a_no_op(store: TaskStore) -> None:
    store.save_many([])
    assert store.count() == 0


def test_the_last_duplicate_in_a_batch_wins(store: TaskStore) -> None:
    store.save_many([TaskInfo("t", "a", shots=1), TaskInfo("t", "b", shots=2)])
    got = store.get("t")
    assert (got.backend, got.shots) == ("b", 2)


def _generated(count: int, *, bad_at: int | None = None):
    for n in range(count):
        yield TaskInfo(f"gen-{n}", "sim", shots=-1 if n == bad_at else 100)


def test_save_many_takes_a_generator_across_several_chunks(store: TaskStore) -> None:
    count = 2 * SAVE_MANY_CHUNK + 7
    store.save_many(_generated(count))
    assert store.count() == count
    assert store.get(f"gen-{count - 1}") is not None


def test_save_many_of_a_generator_failing_in_a_later_chunk_writes_nothing(store: TaskStore) -> None:
    store.save(TaskInfo("before", "sim"))
    bad = SAVE_MANY_CHUNK + 500
    with pytest.raises(InvalidTaskError, match=rf"^tasks\[{bad}\]: shots"):
        store.save_many(_generated(2 * SAVE_MANY_CHUNK, bad_at=bad))
    assert [task.task_id for task in store.list()] == ["before"]


def test_save_many_of_a_generator_holds_only_a_chunk_in_memory(sqlite_store: TaskStore) -> None:
    # Measured with tracemalloc (allocations of Python objects, not time): a list of the same
    # tasks costs well over twice this bound.
    count = 50 * SAVE_MANY_CHUNK
    tracemalloc.start()
    try:
        sqlite_store.save_many(_generated(count))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sqlite_store.count() == count
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
