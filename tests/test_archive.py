"""The archive: archive_task, restore_task, get/list/count/delete_archived, on every backend; the
conflicts that leave everything as it was; and records as uniqc writes them (NaN, list results)
saved back unchanged."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from uniqc_store import CorruptRecordError, StoreError, TaskConflictError, TaskInfo, TaskShard, TaskStore

from dbutil import raw_execute, raw_rows

T1 = "uqt_00000000000000000000000000000001"
T2 = "uqt_00000000000000000000000000000002"


def task(
    task_id: str, submit_time: str = "2026-01-01T00:00:00+00:00", status: str = "success", **fields: Any
) -> TaskInfo:
    return TaskInfo(task_id, fields.pop("backend", "originq:wuyuan"), status=status, submit_time=submit_time, **fields)


def state(store: TaskStore, *task_ids: str) -> tuple:
    """Everything the store holds about ``task_ids``, live and archived."""
    return (
        store.list(),
        store.list_archived(),
        [store.get_shards(task_id) for task_id in task_ids],
        [store.get_archived_shards(task_id) for task_id in task_ids],
    )


@pytest.fixture
def sharded(store: TaskStore) -> TaskStore:
    """T1 with three shards and a result, error message and metadata; T2 with one shard."""
    store.save(task(T1, result={"00": 7}, metadata={"circuit": "bell"}, error_message="shard 2 failed", shots=30))
    for index in range(3):
        store.save_shard(TaskShard(T1, index, f"job-{index}", "originq:wuyuan", status="success", result={"0": index}))
    store.save(task(T2, "2026-01-02T00:00:00+00:00", "running"))
    store.save_shard(TaskShard(T2, 0, "job-t2", "originq:wuyuan"))
    return store


# -- archive and restore -------------------------------------------------------------------------


def test_archiving_moves_the_task_and_its_shards_out_of_the_live_tables(sharded: TaskStore) -> None:
    live, shards = sharded.get(T1), sharded.get_shards(T1)
    assert sharded.archive_task(T1) is True
    assert sharded.get(T1) is None and sharded.get_shards(T1) == []
    archived = sharded.get_archived(T1)
    assert archived.archived_at is not None
    assert archived == TaskInfo(**{**live.to_dict(), "archived_at": archived.archived_at})
    assert sharded.get_archived_shards(T1) == shards
    assert [t.task_id for t in sharded.list()] == [T2]
    assert sharded.get_shards(T2) != []


def test_the_task_and_its_shards_are_stamped_with_one_archived_at(sharded: TaskStore, db_url: str) -> None:
    sharded.archive_task(T1)
    (task_stamp,) = raw_rows(db_url, "SELECT archived_at FROM archived_tasks")
    shard_stamps = raw_rows(db_url, "SELECT archived_at FROM archived_task_shards ORDER BY shard_index")
    assert shard_stamps == [task_stamp] * 3
    assert sharded.get_archived(T1).archived_at == task_stamp[0]


def test_live_tasks_read_with_no_archived_at(sharded: TaskStore) -> None:
    assert sharded.get(T1).archived_at is None
    assert {t.archived_at for t in sharded.list()} == {None}
    sharded.archive_task(T1)
    sharded.restore_task(T1)
    assert sharded.get(T1).archived_at is None


def test_restoring_moves_the_task_and_its_shards_back_as_they_were(sharded: TaskStore, db_url: str) -> None:
    live, shards = sharded.get(T1), sharded.get_shards(T1)
    sharded.archive_task(T1)
    assert sharded.restore_task(T1) is True
    assert sharded.get(T1) == live
    assert sharded.get_shards(T1) == shards
    assert (sharded.get_archived(T1), sharded.get_archived_shards(T1)) == (None, [])
    assert raw_rows(db_url, "SELECT count(*) FROM archived_task_shards") == [(0,)]
    sharded.delete(T1)  # and the foreign key holds again: the restored shards go with it
    assert raw_rows(db_url, "SELECT count(*) FROM task_shards") == [(1,)]


def test_a_task_without_shards_archives_and_restores(store: TaskStore) -> None:
    store.save(task(T1))
    assert store.archive_task(T1) and store.get_archived_shards(T1) == []
    assert store.restore_task(T1) and store.get(T1) is not None


@pytest.mark.parametrize("method", ["archive_task", "restore_task", "delete_archived"])
def test_moving_or_deleting_an_id_that_is_not_there_returns_false(sharded: TaskStore, method: str) -> None:
    before = state(sharded, T1, T2)
    assert getattr(sharded, method)("uqt_missing") is False
    assert state(sharded, T1, T2) == before


def test_archiving_an_archived_task_again_returns_false(sharded: TaskStore) -> None:
    sharded.archive_task(T1)
    assert sharded.archive_task(T1) is False
    assert sharded.count_archived() == 1


# -- the conflicts: a documented error, and nothing moves --------------------------------------------


def test_archiving_an_id_the_archive_holds_is_a_conflict_and_moves_nothing(sharded: TaskStore) -> None:
    sharded.archive_task(T1)
    sharded.save(task(T1, status="running"))
    sharded.save_shard(TaskShard(T1, 0, "job-new", "dummy"))
    before = state(sharded, T1)
    with pytest.raises(TaskConflictError) as caught:
        sharded.archive_task(T1)
    assert str(caught.value) == (
        f"cannot archive task '{T1}': the archive already holds a task with this id; nothing was moved. Delete "
        f"one of the two first: delete_archived('{T1}') the archived one, or delete('{T1}') the live one (each "
        "with its shards)."
    )
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, ValueError)
    assert state(sharded, T1) == before
    sharded.delete_archived(T1)  # what the message says to do
    assert sharded.archive_task(T1)
    assert [s.platform_task_id for s in sharded.get_archived_shards(T1)] == ["job-new"]


def test_restoring_over_a_live_task_is_a_conflict_and_moves_nothing(sharded: TaskStore) -> None:
    sharded.archive_task(T1)
    sharded.save(task(T1, status="running"))
    before = state(sharded, T1)
    with pytest.raises(TaskConflictError, match=rf"^cannot restore task '{T1}': a live task has this id; nothing"):
        sharded.restore_task(T1)
    assert state(sharded, T1) == before
    sharded.delete(T1)
    assert sharded.restore_task(T1)
    assert len(sharded.get_shards(T1)) == 3


def test_archiving_over_archived_shards_left_without_their_task_is_a_conflict(sharded: TaskStore, db_url: str) -> None:
    raw_execute(
        db_url,
        "INSERT INTO archived_task_shards (uniqc_task_id, shard_index, platform_task_id, backend, status, "
        "submit_time, update_time, archived_at) VALUES (:id, 1, 'stray', 'dummy', 'success', 't', 't', 't')",
        id=T1,
    )
    before = state(sharded, T1)
    with pytest.raises(TaskConflictError, match=rf"delete_archived\('{T1}'\) removes them"):
        sharded.archive_task(T1)
    assert state(sharded, T1) == before
    assert sharded.delete_archived(T1) is False  # no archived task, but its stray shards go
    assert sharded.archive_task(T1)


# -- reading the archive -------------------------------------------------------------------------


@pytest.fixture
def archive(store: TaskStore) -> TaskStore:
    for task_id, day, status, backend in [
        ("a", 1, "success", "sim"), ("b", 3, "failed", "real"), ("c", 2, "failed", "sim"),
        ("d", 4, "cancelled", "real"), ("e", 5, "success", "sim"),
    ]:
        store.save(task(task_id, f"2026-01-0{day}T00:00:00+00:00", status, backend=backend))
        store.archive_task(task_id)
    store.save(task("live", "2026-02-01T00:00:00+00:00", backend="sim"))
    return store


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["e", "d", "b", "c", "a"]),
        ({"status": "failed"}, ["b", "c"]),
        ({"backend": "sim"}, ["e", "c", "a"]),
        ({"backend": "sim", "status": "success"}, ["e", "a"]),
        ({"limit": 2}, ["e", "d"]),
        ({"limit": 2, "offset": 2}, ["b", "c"]),
        ({"offset": 4}, ["a"]),
        ({"status": "running"}, []),
    ],
    ids=["all", "status", "backend", "both", "limit", "limit-offset", "offset", "none"],
)
def test_list_archived_is_newest_first_with_filters(archive: TaskStore, kwargs: dict, expected: list[str]) -> None:
    assert [t.task_id for t in archive.list_archived(**kwargs)] == expected
    assert all(t.archived_at is not None for t in archive.list_archived(**kwargs))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 5), ({"status": "failed"}, 2), ({"backend": "real"}, 2), ({"backend": "real", "status": "failed"}, 1)],
    ids=["all", "status", "backend", "both"],
)
def test_count_archived_counts_only_the_archive(archive: TaskStore, kwargs: dict, expected: int) -> None:
    assert archive.count_archived(**kwargs) == expected
    assert archive.count() == 1


def test_equal_submit_times_list_the_most_recently_archived_first(store: TaskStore) -> None:
    for task_id in ["m", "z", "a", "k"]:
        store.save(task(task_id, "2026-06-01T00:00:00+00:00"))
    for task_id in ["z", "k", "m", "a"]:
        store.archive_task(task_id)
    assert [t.task_id for t in store.list_archived()] == ["a", "m", "k", "z"]
    store.restore_task("k")
    store.archive_task("k")  # archived again: now the most recent
    assert [t.task_id for t in store.list_archived()] == ["k", "a", "m", "z"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.list_archived(status="done"), ValueError, "status 'done' is not a TaskStatus value"),
        (lambda s: s.list_archived(limit=-1), ValueError, "limit must not be negative"),
        (lambda s: s.count_archived(backend=""), ValueError, "backend must not be empty"),
        (lambda s: s.get_archived(None), TypeError, "task_id must be a str"),
        (lambda s: s.archive_task(""), ValueError, "task_id must not be empty"),
        (lambda s: s.restore_task("a\x00"), ValueError, "task_id must not contain NUL"),
        (lambda s: s.delete_archived(1), TypeError, "task_id must be a str"),
    ],
    ids=["list-status", "list-limit", "count-backend", "get-none", "archive-empty", "restore-nul", "delete-int"],
)
def test_bad_archive_arguments_are_refused_and_nothing_changes(
    archive: TaskStore, call, error: type, message: str
) -> None:
    before = state(archive, "a")
    with pytest.raises(error, match=message):
        call(archive)
    assert state(archive, "a") == before


def test_delete_archived_deletes_the_task_and_its_archived_shards_only(sharded: TaskStore, db_url: str) -> None:
    sharded.archive_task(T1)
    sharded.archive_task(T2)
    assert sharded.delete_archived(T1) is True
    assert sharded.get_archived(T1) is None and sharded.get_archived_shards(T1) == []
    assert [s.platform_task_id for s in sharded.get_archived_shards(T2)] == ["job-t2"]
    assert raw_rows(db_url, "SELECT uniqc_task_id FROM archived_task_shards") == [(T2,)]


def test_clear_completed_leaves_the_archive_alone(sharded: TaskStore) -> None:
    sharded.archive_task(T1)
    sharded.save(task("done", status="success"))
    assert sharded.clear_completed() == 1
    assert sharded.count_archived() == 1 and len(sharded.get_archived_shards(T1)) == 3


# -- records as uniqc writes them, saved back unchanged ---------------------------------------------

# Rows as uniqc 0.1.1 writes them: json.dumps() with its defaults (NaN and Infinity as bare words,
# non-ASCII \u-escaped in results), list results for batches, error messages.
UNIQC_RESULT = json.dumps([{"00": 0.5, "11": float("nan")}, {"fidelity": float("inf"), "label": "é"}])
UNIQC_METADATA = json.dumps({"legacy_platform_id": "a1b2", "p": float("-inf")}, ensure_ascii=False)
UNIQC_SHARD_RESULT = json.dumps({"counts": {"0": 3}, "t": float("nan")}, ensure_ascii=False)
TASK_COLUMNS = "task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json, error_message"
SHARD_COLUMNS = (
    "uniqc_task_id, shard_index, platform_task_id, backend, circuit_count, sub_index_offset, status, result_json, "
    "error_message, submit_time, update_time"
)


def write_as_uniqc(db_url: str) -> None:
    raw_execute(
        db_url,
        f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES "
        "(:t1, 'dummy', 'failed', 2, 's1', 'u1', :result, :metadata, 'shard 1: timeout')",
        f"INSERT INTO task_shards ({SHARD_COLUMNS}) VALUES "
        "(:t1, 0, 'a1b2', 'dummy', 2, 0, 'success', :shard_result, NULL, 's1', 'u1'), "
        "(:t1, 1, 'c3d4', 'dummy', 1, 2, 'failed', NULL, 'timeout', 's1', 'u1')",
        f"INSERT INTO archived_tasks ({TASK_COLUMNS}, archived_at) VALUES "
        "(:t2, 'dummy', 'success', 2, 's2', 'u2', :result, :metadata, NULL, 'a2')",
        f"INSERT INTO archived_task_shards ({SHARD_COLUMNS}, archived_at) VALUES "
        "(:t2, 0, 'e5f6', 'dummy', 1, 0, 'success', :shard_result, NULL, 's2', 'u2', 'a2')",
        t1=T1, t2=T2, result=UNIQC_RESULT, metadata=UNIQC_METADATA, shard_result=UNIQC_SHARD_RESULT,
    )


def as_text(records: list[Any]) -> list[str]:
    """Records as comparable text (NaN is not equal to itself)."""
    return [json.dumps(record.to_dict(), sort_keys=True) for record in records]


def test_records_uniqc_wrote_with_nan_and_list_results_are_read_and_saved_back_unchanged(
    store: TaskStore, db_url: str
) -> None:
    write_as_uniqc(db_url)
    live, shards = store.get(T1), store.get_shards(T1)
    archived, archived_shards = store.get_archived(T2), store.get_archived_shards(T2)
    assert isinstance(live.result, list) and math.isnan(live.result[0]["11"]) and live.result[1]["label"] == "é"
    assert live.metadata["p"] == -math.inf and live.error_message == "shard 1: timeout"
    assert archived.archived_at == "a2"

    store.save(live)
    for saved in shards:
        store.save_shard(saved)
    assert as_text([store.get(T1), *store.get_shards(T1)]) == as_text([live, *shards])

    store.save(archived)  # an archived record is a valid task too (archived_at is not stored)
    for saved in archived_shards:
        store.save_shard(saved)
    assert as_text([store.get(T2), *store.get_shards(T2)]) == as_text(
        [TaskInfo(**{**archived.to_dict(), "archived_at": None}), *archived_shards]
    )


def test_a_list_result_survives_archive_and_restore(store: TaskStore) -> None:
    batch = [{"00": 1}, {"11": float("nan")}, []]
    store.save(task(T1, result=batch))
    store.save_shard(TaskShard(T1, 0, "job", "dummy", result=batch))
    store.archive_task(T1)
    assert as_text([store.get_archived(T1)])[0].count("NaN") == 1
    store.restore_task(T1)
    assert json.dumps(store.get(T1).result) == json.dumps(batch)
    assert json.dumps(store.get_shards(T1)[0].result) == json.dumps(batch)


def test_an_archived_task_whose_json_cannot_be_decoded_names_it_and_how_to_remove_it(
    store: TaskStore, db_url: str
) -> None:
    raw_execute(
        db_url,
        f"INSERT INTO archived_tasks ({TASK_COLUMNS}, archived_at) VALUES "
        "(:id, 'dummy', 'success', 1, 's', 'u', NULL, 'not json', NULL, 'a')",
        id=T1,
    )
    with pytest.raises(CorruptRecordError) as caught:
        store.list_archived()
    assert str(caught.value).startswith(f"archived task '{T1}': its metadata (column metadata_json) cannot be decoded")
    assert str(caught.value).endswith(f"removed with delete_archived('{T1}')")
    assert store.delete_archived(T1)
    assert store.list_archived() == []
