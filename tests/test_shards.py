"""Shards: save_shard, get_shards, the platform-id lookups, delete_shards and aggregate_status, on
every backend; the foreign key from a shard to its task, and its ON DELETE CASCADE."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from uniqc_store import (
    UNIQC_TASK_ID_PREFIX,
    CorruptRecordError,
    InvalidTaskError,
    StoreError,
    TaskInfo,
    TaskNotFoundError,
    TaskShard,
    TaskStatus,
    TaskStore,
    generate_uniqc_task_id,
    is_uniqc_task_id,
)

from dbutil import raw_execute, raw_rows

TASK = "uqt_00000000000000000000000000000001"
OTHER = "uqt_00000000000000000000000000000002"


def shard(index: int, platform_task_id: str | None = None, task_id: str = TASK, **fields: Any) -> TaskShard:
    return TaskShard(task_id, index, platform_task_id or f"platform-{task_id[-1]}-{index}", "originq:wuyuan", **fields)


def shard_rows(db_url: str, table: str = "task_shards") -> list[tuple]:
    return raw_rows(db_url, f"SELECT uniqc_task_id, shard_index FROM {table} ORDER BY uniqc_task_id, shard_index")


@pytest.fixture
def task(store: TaskStore) -> TaskStore:
    """The store holding the tasks TASK and OTHER, without shards."""
    store.save(TaskInfo(TASK, "originq:wuyuan", status="running"))
    store.save(TaskInfo(OTHER, "dummy"))
    return store


# -- save_shard and get_shards -------------------------------------------------------------------


def test_a_saved_shard_reads_back_with_every_field(task: TaskStore) -> None:
    saved = TaskShard(
        TASK, 3, "a1b2c3", "originq:wuyuan", circuit_count=4, sub_index_offset=12, status=TaskStatus.FAILED,
        result=[{"00": 1}, {"11": 2}], error_message="calibration expired", submit_time="2026-01-01T00:00:00+00:00",
    )
    task.save_shard(saved)
    assert task.get_shards(TASK) == [
        TaskShard(
            TASK, 3, "a1b2c3", "originq:wuyuan", 4, 12, "failed", [{"00": 1}, {"11": 2}], "calibration expired",
            "2026-01-01T00:00:00+00:00", saved.update_time,
        )
    ]


def test_save_shard_stamps_update_time_and_an_update_keeps_the_first_submit_time(task: TaskStore) -> None:
    first = shard(0, submit_time="2026-01-01T00:00:00+00:00", update_time="old")
    task.save_shard(first)
    assert first.update_time > "2000" and first.update_time != "old"
    update = shard(0, "moved", status="success", result={"0": 9}, submit_time="2031-01-01T00:00:00+00:00")
    task.save_shard(update)
    (got,) = task.get_shards(TASK)
    assert (got.platform_task_id, got.status, got.result) == ("moved", "success", {"0": 9})
    assert got.submit_time == "2026-01-01T00:00:00+00:00"
    assert got.update_time == update.update_time


def test_get_shards_lists_one_tasks_shards_by_shard_index(task: TaskStore) -> None:
    for index in (2, 0, 10, 1):
        task.save_shard(shard(index))
    task.save_shard(shard(0, task_id=OTHER))
    assert [s.shard_index for s in task.get_shards(TASK)] == [0, 1, 2, 10]
    assert [s.uniqc_task_id for s in task.get_shards(OTHER)] == [OTHER]
    assert task.get_shards("uqt_without_shards") == []


def test_the_database_holds_uniqcs_shard_row(task: TaskStore, db_url: str) -> None:
    task.save_shard(shard(0, status=TaskStatus.RUNNING, result={"k": "é"}))
    assert raw_rows(
        db_url, "SELECT uniqc_task_id, shard_index, status, result_json, error_message, circuit_count FROM task_shards"
    ) == [(TASK, 0, "running", '{"k": "é"}', None, 1)]


# -- the foreign key -----------------------------------------------------------------------------


def test_saving_the_task_again_keeps_its_shards(task: TaskStore, db_url: str) -> None:
    task.save_shard(shard(0))
    task.save_shard(shard(1))
    task.save(TaskInfo(TASK, "originq:wuyuan", status="success", result={"00": 1}))
    task.save_many([TaskInfo(TASK, "originq:wuyuan", status="success"), TaskInfo("uqt_new", "dummy")])
    assert [s.shard_index for s in task.get_shards(TASK)] == [0, 1]
    assert shard_rows(db_url) == [(TASK, 0), (TASK, 1)]


def test_deleting_a_task_deletes_its_shards_and_no_others(task: TaskStore, db_url: str) -> None:
    task.save_shard(shard(0))
    task.save_shard(shard(1))
    task.save_shard(shard(0, task_id=OTHER))
    assert task.delete(TASK)
    assert shard_rows(db_url) == [(OTHER, 0)]
    assert task.get_shards(TASK) == []


def test_clear_completed_deletes_the_shards_of_the_tasks_it_deletes(task: TaskStore, db_url: str) -> None:
    task.save(TaskInfo(TASK, "originq:wuyuan", status="success"))
    task.save_shard(shard(0))
    task.save_shard(shard(0, task_id=OTHER))
    assert task.clear_completed() == 1
    assert shard_rows(db_url) == [(OTHER, 0)]


def test_clear_all_deletes_shards_and_the_archive_too(task: TaskStore) -> None:
    task.save_shard(shard(0))
    task.save_shard(shard(0, task_id=OTHER))
    task.archive_task(OTHER)
    task.clear_all()
    assert (task.count(), task.count_shards(), task.count_archived(), task.count_shards(archived=True)) == (0, 0, 0, 0)
    task.save(TaskInfo(TASK, "dummy"))
    task.save_shard(shard(0))
    assert task.count_shards() == 1


def test_a_shard_of_a_task_that_does_not_exist_is_refused_and_nothing_is_written(task: TaskStore, db_url: str) -> None:
    orphan = shard(0, task_id="uqt_missing")
    stamp = orphan.update_time
    with pytest.raises(TaskNotFoundError) as caught:
        task.save_shard(orphan)
    assert str(caught.value) == (
        "cannot save shard 0 of task 'uqt_missing': there is no live task 'uqt_missing'; nothing was written. "
        "Save the task first (or, if it is archived, restore_task('uqt_missing')), then its shards."
    )
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, LookupError)
    assert orphan.update_time == stamp
    assert shard_rows(db_url) == []


def test_a_shard_of_an_archived_task_is_refused_until_the_task_is_restored(task: TaskStore) -> None:
    task.archive_task(TASK)
    with pytest.raises(TaskNotFoundError, match=re.escape(f"restore_task('{TASK}')")):
        task.save_shard(shard(0))
    task.restore_task(TASK)
    task.save_shard(shard(0))
    assert len(task.get_shards(TASK)) == 1


# Each backend's trigger takes the task away after save_shard has found it and before its insert
# runs, as a concurrent delete could: the insert then violates the foreign key itself.
RACE_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER steal BEFORE INSERT ON task_shards BEGIN "
        "UPDATE tasks SET task_id = task_id || '-gone' WHERE task_id = NEW.uniqc_task_id; END"
    ],
    "postgresql": [
        "CREATE FUNCTION steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "UPDATE tasks SET task_id = task_id || '-gone' WHERE task_id = NEW.uniqc_task_id; RETURN NEW; END $$",
        "CREATE TRIGGER steal BEFORE INSERT ON task_shards FOR EACH ROW EXECUTE FUNCTION steal()",
    ],
    "mysql": [
        "CREATE TRIGGER steal BEFORE INSERT ON task_shards FOR EACH ROW "
        "UPDATE tasks SET task_id = CONCAT(task_id, '-gone') WHERE task_id = NEW.uniqc_task_id"
    ],
}


def test_a_task_deleted_between_the_check_and_the_insert_is_the_same_not_found_error(
    task: TaskStore, db_url: str, backend: str
) -> None:
    raw_execute(db_url, *RACE_TRIGGERS[backend])
    with pytest.raises(TaskNotFoundError, match=r"^cannot save shard 0 of task 'uqt_0+1': there is no live task"):
        task.save_shard(shard(0))
    # Rolled back as a whole: the trigger's change too.
    assert raw_rows(db_url, "SELECT task_id FROM tasks ORDER BY task_id") == [(TASK,), (OTHER,)]
    assert shard_rows(db_url) == []


# -- platform ids --------------------------------------------------------------------------------


@pytest.fixture
def platform_ids(task: TaskStore) -> TaskStore:
    task.save_shard(shard(0, "job-1"))
    task.save_shard(shard(1, "job-2"))
    task.save_shard(TaskShard(OTHER, 0, "job-2", "dummy"))  # the same id on another platform
    return task


@pytest.mark.parametrize(
    ("platform_task_id", "on_backend", "expected"),
    [
        ("job-1", None, (TASK, 0)),
        ("job-1", "originq:wuyuan", (TASK, 0)),
        ("job-1", "dummy", None),
        ("job-2", "dummy", (OTHER, 0)),
        ("job-2", "originq:wuyuan", (TASK, 1)),
        ("job-2", None, (TASK, 1)),  # several: the first by (uniqc_task_id, shard_index)
        ("job-3", None, None),
    ],
    ids=["id", "id-and-backend", "other-backend", "shared-id-dummy", "shared-id-originq", "shared-id-any", "missing"],
)
def test_a_shard_is_found_by_its_platform_id_with_or_without_its_backend(
    platform_ids: TaskStore, platform_task_id: str, on_backend: str | None, expected: tuple[str, int] | None
) -> None:
    found = platform_ids.get_shard_by_platform_id(platform_task_id, backend=on_backend)
    assert (found and (found.uniqc_task_id, found.shard_index)) == expected
    uniqc_id = platform_ids.find_uniqc_id_by_platform_id(platform_task_id, backend=on_backend)
    assert uniqc_id == (expected and expected[0])


def test_archived_shards_are_not_found_by_platform_id(platform_ids: TaskStore) -> None:
    platform_ids.archive_task(TASK)
    assert platform_ids.find_uniqc_id_by_platform_id("job-1") is None
    assert platform_ids.find_uniqc_id_by_platform_id("job-2") == OTHER


def test_delete_shards_deletes_one_tasks_shards_and_keeps_the_task(platform_ids: TaskStore) -> None:
    assert platform_ids.delete_shards(TASK) == 2
    assert platform_ids.delete_shards(TASK) == 0
    assert platform_ids.get_shards(TASK) == []
    assert platform_ids.get(TASK) is not None
    assert len(platform_ids.get_shards(OTHER)) == 1


# -- aggregate_status ----------------------------------------------------------------------------

AGGREGATES = [
    ("no-shards", [], "pending"),
    ("one-pending", ["pending"], "running"),
    ("running-and-success", ["running", "success"], "running"),
    ("failed-and-pending", ["failed", "pending"], "running"),
    ("all-success", ["success", "success"], "success"),
    ("one-success", [TaskStatus.SUCCESS], "success"),
    ("success-and-failed", ["success", "failed"], "failed"),
    ("failed-and-cancelled", ["failed", "cancelled"], "failed"),
    ("all-cancelled", ["cancelled", "cancelled"], "cancelled"),
    ("cancelled-and-success", ["cancelled", "success"], "cancelled"),
    ("unknown-status", ["success", "lost"], "running"),
]


@pytest.mark.parametrize(("statuses", "expected"), [c[1:] for c in AGGREGATES], ids=[c[0] for c in AGGREGATES])
def test_aggregate_status_derives_the_tasks_status_from_its_shards(statuses: list[str], expected: str) -> None:
    shards = [shard(i, status=status) for i, status in enumerate(statuses)]
    assert TaskStore.aggregate_status(shards) == expected
    assert type(TaskStore.aggregate_status(shards)) is str


# -- validation ----------------------------------------------------------------------------------


class Opaque:
    pass


BAD_SHARDS = [
    ("uniqc_task_id-empty", {"uniqc_task_id": ""}, ValueError, "uniqc_task_id must not be empty"),
    ("uniqc_task_id-int", {"uniqc_task_id": 7}, TypeError, "uniqc_task_id must be a str"),
    ("uniqc_task_id-too-long", {"uniqc_task_id": "u" * 256}, ValueError, "uniqc_task_id is 256 characters long"),
    ("shard_index-negative", {"shard_index": -1}, ValueError, "shard_index must be between 0 and 2147483647"),
    ("shard_index-over-32-bits", {"shard_index": 2**31}, ValueError, "shard_index must be between 0 and 2147483647"),
    ("shard_index-str", {"shard_index": "0"}, TypeError, "shard_index must be an int, got str"),
    ("shard_index-bool", {"shard_index": False}, TypeError, "shard_index must be an int, got bool"),
    ("platform_task_id-empty", {"platform_task_id": ""}, ValueError, "platform_task_id must not be empty"),
    ("platform_task_id-none", {"platform_task_id": None}, TypeError, "platform_task_id must be a str"),
    ("platform_task_id-nul", {"platform_task_id": "a\x00"}, ValueError, "platform_task_id must not contain NUL"),
    ("platform_task_id-too-long", {"platform_task_id": "p" * 256}, ValueError, "the limit is 255"),
    ("backend-empty", {"backend": ""}, ValueError, "backend must not be empty"),
    ("backend-surrogate", {"backend": "\udc80"}, ValueError, "backend is not valid UTF-8"),
    ("circuit_count-negative", {"circuit_count": -2}, ValueError, "circuit_count must be between 0 and 2147483647"),
    ("circuit_count-float", {"circuit_count": 1.0}, TypeError, "circuit_count must be an int, got float"),
    ("sub_index_offset-huge", {"sub_index_offset": 2**40}, ValueError, "sub_index_offset must be between 0"),
    ("sub_index_offset-none", {"sub_index_offset": None}, TypeError, "sub_index_offset must be an int"),
    ("status-unknown", {"status": "done"}, ValueError, "status 'done' is not a TaskStatus value"),
    ("result-tuple", {"result": (1,)}, TypeError, "result must be a dict or a list, got tuple; pass a list"),
    ("result-int-key", {"result": [{0: 1}]}, TypeError, "result[0]: dict key 0 is int"),
    ("result-object", {"result": {"x": Opaque()}}, TypeError, "result['x']: Opaque is not JSON-serialisable"),
    ("error_message-bytes", {"error_message": b"boom"}, TypeError, "error_message must be a str, got bytes"),
    ("error_message-nul", {"error_message": "bo\x00om"}, ValueError, "error_message must not contain NUL"),
    ("submit_time-too-long", {"submit_time": "2" * 65}, ValueError, "submit_time is 65 characters long"),
]


@pytest.mark.parametrize(("changes", "error", "message"), [c[1:] for c in BAD_SHARDS], ids=[c[0] for c in BAD_SHARDS])
def test_a_bad_shard_is_refused_naming_the_field_and_the_stored_one_stays(
    task: TaskStore, changes: dict, error: type, message: str
) -> None:
    task.save_shard(shard(0, result={"ok": 1}))
    before = task.get_shards(TASK)
    fields = {"uniqc_task_id": TASK, "shard_index": 0, "platform_task_id": "p", "backend": "b", **changes}
    bad = TaskShard(**fields)
    stamp = bad.update_time
    with pytest.raises(error, match=re.escape(message)) as caught:
        task.save_shard(bad)
    assert isinstance(caught.value, InvalidTaskError)
    assert bad.update_time == stamp
    assert task.get_shards(TASK) == before


@pytest.mark.parametrize(
    ("number", "value"),
    [("shard_index", 2**31 - 1), ("circuit_count", 0), ("sub_index_offset", 2**31 - 1)],
    ids=["largest-index", "no-circuits", "largest-offset"],
)
def test_shard_numbers_take_every_value_of_a_32_bit_column(task: TaskStore, number: str, value: int) -> None:
    task.save_shard(TaskShard(TASK, 0, "p", "b", **{number: value}) if number != "shard_index" else shard(value))
    assert getattr(task.get_shards(TASK)[0], number) == value


def test_save_shard_refuses_what_is_not_a_task_shard(task: TaskStore) -> None:
    with pytest.raises(TypeError, match="expected a TaskShard, got TaskInfo"):
        task.save_shard(TaskInfo(TASK, "b"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.get_shards(""), "uniqc_task_id must not be empty"),
        (lambda s: s.get_shards(None), "uniqc_task_id must be a str"),
        (lambda s: s.delete_shards("x\x00"), "uniqc_task_id must not contain NUL"),
        (lambda s: s.get_shard_by_platform_id(5), "platform_task_id must be a str"),
        (lambda s: s.find_uniqc_id_by_platform_id("p", backend=""), "backend must not be empty"),
    ],
    ids=["get-empty", "get-none", "delete-nul", "lookup-int", "lookup-empty-backend"],
)
def test_bad_shard_query_arguments_are_refused(task: TaskStore, call, message: str) -> None:
    with pytest.raises(InvalidTaskError, match=re.escape(message)):
        call(task)


# -- the records ---------------------------------------------------------------------------------


def test_a_task_shard_has_uniqcs_fields_and_defaults_and_round_trips_through_a_dict() -> None:
    made = TaskShard(TASK, 0, "p", "dummy")
    data = made.to_dict()
    assert list(data) == [
        "uniqc_task_id", "shard_index", "platform_task_id", "backend", "circuit_count", "sub_index_offset",
        "status", "result", "error_message", "submit_time", "update_time",
    ]
    assert (made.circuit_count, made.sub_index_offset, made.status, made.result, made.error_message) == (
        1, 0, "pending", None, None,
    )
    assert made.submit_time.endswith("+00:00") and type(data["status"]) is str
    assert TaskShard.from_dict(data) == made
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(InvalidTaskError, match=r"missing required keys \['platform_task_id', 'backend'\]"):
        TaskShard.from_dict({"uniqc_task_id": TASK, "shard_index": 0})
    with pytest.raises(InvalidTaskError, match=r"unknown keys \['archived_at'\]"):
        TaskShard.from_dict({**data, "archived_at": None})


def test_uniqc_task_ids_are_the_prefix_and_32_hex_digits() -> None:
    made = {generate_uniqc_task_id() for _ in range(100)}
    assert len(made) == 100
    assert all(re.fullmatch(r"uqt_[0-9a-f]{32}", task_id) for task_id in made)
    assert UNIQC_TASK_ID_PREFIX == "uqt_"
    assert is_uniqc_task_id(made.pop())
    assert not is_uniqc_task_id("a1b2c3") and not is_uniqc_task_id(None) and not is_uniqc_task_id("UQT_x")


def test_a_shard_whose_result_cannot_be_decoded_is_a_corrupt_record_error_naming_the_shard(
    task: TaskStore, db_url: str
) -> None:
    task.save_shard(shard(0, result={"ok": 1}))
    raw_execute(
        db_url,
        "INSERT INTO task_shards (uniqc_task_id, shard_index, platform_task_id, backend, status, result_json, "
        "submit_time, update_time) VALUES (:id, 1, 'bad', 'dummy', 'success', '{\"00\": ', 't', 't')",
        id=TASK,
    )
    with pytest.raises(CorruptRecordError) as caught:
        task.get_shards(TASK)
    assert str(caught.value).startswith(
        f"shard 1 of task '{TASK}': its result (column result_json) cannot be decoded: JSONDecodeError"
    )
    assert str(caught.value).endswith(f"removed with delete_shards('{TASK}')")
    assert task.get_shard_by_platform_id("platform-1-0").result == {"ok": 1}  # the others stay readable
