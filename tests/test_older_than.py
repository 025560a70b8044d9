"""``archive_completed`` and ``clear_completed(older_than=...)``: which finished tasks count as older
(times with any offset, naive times, garbage), moves and deletes with their shards in batches on
every backend, conflicts with the archive, Ctrl-C between batches, and the command line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from uniqc_store import (
    DB_FILENAME,
    InvalidTaskError,
    InvalidTaskTypeError,
    SweepResult,
    TaskInfo,
    TaskShard,
    TaskStore,
)
from uniqc_store.cli import main
from uniqc_store.sweep import is_older, older_than_cutoff, parse_age

from dbutil import raw_execute, raw_rows

CUTOFF = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
OLD = "2026-01-01T00:00:00+00:00"
NEW = "2999-12-01T00:00:00+00:00"  # never older than now


# -- the age rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("0s", timedelta(0)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        (" 7d ", timedelta(days=7)),
    ],
)
def test_ages_are_a_whole_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize(
    "text", ["30", "d", "30x", "-1.5d", "1.5d", "30 days", "30D", "", "1d2h", "9" * 13 + "d", "--1d", "+1d"]
)
def test_other_ages_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidTaskError, match="expected a whole number and a unit, s, m, h, d or w"):
        parse_age(text)


@pytest.mark.parametrize(
    "text", ["\u0663\u0660d", "\uff13\uff10d", "3\u0660d"], ids=["arabic-indic", "fullwidth", "mixed"]
)
def test_digits_other_than_ascii_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidTaskError, match="write the number with the ASCII digits 0-9"):
        parse_age(text)


def test_a_negative_age_is_refused_by_name() -> None:
    with pytest.raises(InvalidTaskError, match=r"older-than '-1d': an age cannot be negative"):
        parse_age("-1d")


@pytest.mark.parametrize(
    "text",
    ["99999999999d", "999999999d", "999999999999w", "142857142w"],
    ids=["beyond-timedelta", "timedelta-max-days", "beyond-timedelta-weeks", "before-year-1"],
)
def test_an_age_whose_cutoff_would_be_before_the_year_1_is_refused(text: str) -> None:
    with pytest.raises(InvalidTaskError, match="is too large: now minus it is before the year 1"):
        parse_age(text)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-06-01T11:59:59.999999+00:00", True),
        ("2026-06-01T12:00:00+00:00", False),  # older than: strictly before the cutoff
        ("2026-06-01T13:30:00+02:00", True),  # 11:30 UTC
        ("2026-06-01T10:30:00-02:00", False),  # 12:30 UTC
        ("2026-06-01T11:00:00Z", True),
        ("2026-05-31T23:59:59", True),  # naive: older in every zone from UTC-12 to UTC+14
        ("2026-06-01T00:00:00", None),  # naive, within a day of the cutoff: cannot tell
        ("2026-06-02T01:59:59", None),
        ("2026-06-02T02:00:00", False),  # naive: newer in every zone
        ("not a time", None),
        ("", None),
        (None, None),
        (1717243200, None),
        ("9999-12-31T23:59:59", False),
        ("0001-01-01T00:00:00", True),
    ],
)
def test_update_times_are_compared_as_instants_and_never_guessed(stored: object, expected: bool | None) -> None:
    assert is_older(stored, CUTOFF) is expected


def test_the_cutoff_is_now_minus_a_timedelta_or_an_aware_datetime() -> None:
    now = datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert older_than_cutoff(timedelta(days=30), now) == CUTOFF.replace(hour=0, day=1)
    assert older_than_cutoff(CUTOFF.astimezone(timezone(timedelta(hours=8)))) == CUTOFF
    with pytest.raises(InvalidTaskError, match="too large: now minus it is before the year 1"):
        older_than_cutoff(timedelta.max, now)
    with pytest.raises(InvalidTaskError, match="before the year 1 in UTC"):
        older_than_cutoff(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))


@pytest.mark.parametrize(
    ("stored", "cutoff"),
    [
        ("0001-01-01T05:00:00", datetime(1, 1, 1, tzinfo=timezone.utc)),
        ("0001-01-01T05:00:00", datetime(1, 1, 1, 10, tzinfo=timezone.utc)),
        ("9999-12-31T13:00:00", datetime(9999, 12, 31, 23, tzinfo=timezone.utc)),
    ],
    ids=["year-1-at-its-start", "year-1-within-a-day", "year-9999-within-a-day"],
)
def test_naive_times_at_the_ends_of_the_calendar_within_a_day_of_the_cutoff_cannot_be_told(
    stored: str, cutoff: datetime
) -> None:
    assert is_older(stored, cutoff) is None


@pytest.mark.parametrize(
    ("older_than", "error", "message"),
    [
        (timedelta(seconds=-1), InvalidTaskError, "must not be negative"),
        (timedelta(days=999_999_999), InvalidTaskError, "too large"),
        (datetime(2026, 1, 1), InvalidTaskError, "must be timezone-aware"),
        (30, InvalidTaskTypeError, "got int"),
        ("30d", InvalidTaskTypeError, "got str"),
    ],
)
def test_bad_older_than_values_are_refused_before_anything_changes(
    store: TaskStore, older_than: object, error: type[Exception], message: str
) -> None:
    store.save(TaskInfo("done", "dummy", status="success"))
    for call in (store.archive_completed, store.clear_completed):
        with pytest.raises(error, match=message):
            call(older_than=older_than)  # type: ignore[arg-type]
    assert [task.task_id for task in store.list()] == ["done"]


@pytest.mark.parametrize("batch_size", [0, -5, 100_001, True, 2.0])
def test_bad_batch_sizes_are_refused(store: TaskStore, batch_size: object) -> None:
    with pytest.raises(InvalidTaskError, match="batch_size"):
        store.archive_completed(batch_size=batch_size)  # type: ignore[arg-type]


# -- on every backend ------------------------------------------------------------------------------


def stamp(db_url: str, update_times: dict[str, str]) -> None:
    """Set update_time behind the store's back (a save stamps the current time)."""
    for task_id, value in update_times.items():
        raw_execute(
            db_url, "UPDATE tasks SET update_time = :value WHERE task_id = :task_id", value=value, task_id=task_id
        )


@pytest.fixture
def finished(store: TaskStore, db_url: str) -> TaskStore:
    """Old and new tasks in every status, two shards each; one unreadable and one naive time."""
    times = {}
    for status in ("success", "failed", "cancelled", "running", "pending"):
        for age, when in (("old", OLD), ("new", NEW)):
            task_id = f"{status}-{age}"
            store.save(TaskInfo(task_id, "dummy", status=status))
            for index in range(2):
                store.save_shard(TaskShard(task_id, index, f"{task_id}-{index}", "dummy", status=status))
            times[task_id] = when
    store.save(TaskInfo("garbled", "dummy", status="success"))
    store.save(TaskInfo("naive-old", "dummy", status="failed"))
    store.save(TaskInfo("naive-close", "dummy", status="failed"))
    times.update({"garbled": "yesterday", "naive-old": "2026-05-01T08:00:00", "naive-close": "2026-06-01T08:00:00"})
    stamp(db_url, times)
    return store


OLD_FINISHED = ["cancelled-old", "failed-old", "naive-old", "success-old"]
LIVE_AFTER = {
    "cancelled-new", "failed-new", "garbled", "naive-close", "pending-new", "pending-old", "running-new", "running-old",
    "success-new",
}


def test_archive_completed_moves_the_old_finished_tasks_with_their_shards(finished: TaskStore) -> None:
    shards = {task_id: finished.get_shards(task_id) for task_id in OLD_FINISHED}
    result = finished.archive_completed(older_than=CUTOFF)
    assert result == SweepResult(tasks=4, skipped=2, conflicts=(), cutoff=CUTOFF.isoformat())
    assert sorted(task.task_id for task in finished.list_archived()) == OLD_FINISHED
    assert {task.task_id for task in finished.list()} == LIVE_AFTER
    for task_id in OLD_FINISHED:
        assert finished.get_archived_shards(task_id) == shards[task_id]
        assert finished.get_shards(task_id) == []
    assert finished.count_shards() == 2 * 7  # the live tasks with shards keep theirs


def test_clear_completed_older_than_deletes_the_old_finished_tasks_with_their_shards(
    finished: TaskStore, db_url: str
) -> None:
    result = finished.clear_completed(older_than=CUTOFF, batch_size=2)
    assert result == SweepResult(tasks=4, skipped=2, conflicts=(), cutoff=CUTOFF.isoformat())
    assert {task.task_id for task in finished.list()} == LIVE_AFTER
    assert finished.count_archived() == 0
    assert raw_rows(db_url, "SELECT count(*) FROM task_shards") == [(2 * 7,)]


def test_clear_completed_without_older_than_is_uniqcs_call(finished: TaskStore) -> None:
    assert finished.clear_completed(["failed"]) == 4
    assert finished.clear_completed() == 5


def test_without_older_than_archive_completed_moves_every_finished_task(finished: TaskStore) -> None:
    assert finished.archive_completed(terminal_statuses=["success"]) == SweepResult(tasks=3)
    assert finished.archive_completed().tasks == 6


def test_each_batch_is_stamped_with_one_archived_at(store: TaskStore, db_url: str) -> None:
    store.save_many(TaskInfo(f"t{i:02d}", "dummy", status="success") for i in range(10))
    assert store.archive_completed(older_than=timedelta(0), batch_size=3).tasks == 10
    stamps = [row[0] for row in raw_rows(db_url, "SELECT archived_at FROM archived_tasks ORDER BY task_id")]
    batches = [stamps[i : i + 3] for i in range(0, 10, 3)]
    assert all(len(set(batch)) == 1 for batch in batches)
    assert len(set(stamps)) == len(batches)


def test_ids_the_archive_already_holds_stay_live_and_are_reported(finished: TaskStore, db_url: str) -> None:
    finished.save(TaskInfo("dup", "dummy", status="success"))
    finished.archive_task("dup")
    finished.save(TaskInfo("dup", "dummy", status="success"))
    finished.save(TaskInfo("shards-only", "dummy", status="success"))
    finished.save_shard(TaskShard("shards-only", 0, "job", "dummy"))
    finished.archive_task("shards-only")
    raw_execute(db_url, "DELETE FROM archived_tasks WHERE task_id = 'shards-only'")
    finished.save(TaskInfo("shards-only", "dummy", status="success"))
    stamp(db_url, {"dup": OLD, "shards-only": OLD})
    result = finished.archive_completed(older_than=CUTOFF)
    assert result.conflicts == ("dup", "shards-only")
    assert result.tasks == 4
    assert finished.get("dup") is not None and finished.get("shards-only") is not None
    assert finished.archive_completed(older_than=CUTOFF).tasks == 0


# -- rows without a task_id (SQLite lets uniqc's TEXT PRIMARY KEY be NULL) --------------------------


def add_rows_without_id(directory: Path) -> None:
    """20 old successful tasks, and four rows whose task_id is NULL: an old finished one, a finished
    one whose time cannot be told, a running one and a new finished one (the last two are not
    the sweep's)."""
    with TaskStore(directory) as store:
        store.save_many(TaskInfo(f"t{i:02d}", "dummy", status="success") for i in range(20))
    conn = sqlite3.connect(directory / DB_FILENAME)
    conn.execute("UPDATE tasks SET update_time = ?", (OLD,))
    conn.executemany(
        "INSERT INTO tasks (task_id, backend, status, submit_time, update_time) VALUES (NULL, 'dummy', ?, ?, ?)",
        [("success", OLD, OLD), ("failed", OLD, "yesterday"), ("running", OLD, OLD), ("cancelled", OLD, NEW)],
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("batch_size", [1, 2, 3, 500], ids=lambda n: f"batch-{n}")
@pytest.mark.parametrize("archive", [True, False], ids=["archive_completed", "clear_completed"])
def test_rows_without_a_task_id_are_skipped_and_counted_and_the_sweep_goes_on(
    tmp_path: Path, archive: bool, batch_size: int
) -> None:
    add_rows_without_id(tmp_path)
    with TaskStore(tmp_path) as store:
        sweep = store.archive_completed if archive else store.clear_completed
        result = sweep(older_than=CUTOFF, batch_size=batch_size)
        assert result == SweepResult(tasks=20, skipped=2, conflicts=(), cutoff=CUTOFF.isoformat(), without_id=2)
        assert store.count_archived() == (20 if archive else 0)
        assert store.count() == 4  # the four rows without an id, untouched
        assert sweep(older_than=CUTOFF, batch_size=batch_size) == SweepResult(
            skipped=2, cutoff=CUTOFF.isoformat(), without_id=2
        )
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    assert conn.execute("SELECT count(*) FROM tasks WHERE task_id IS NULL").fetchone() == (4,)
    conn.close()


def test_the_command_says_why_rows_without_a_task_id_were_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_rows_without_id(tmp_path)
    assert main(["archive-completed", "--older-than", "1d", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("archived 20 completed tasks not updated since ")
    assert lines[1:] == [
        "skipped 2 completed tasks with no task_id (NULL), which no command can move or delete ('check' reports "
        "them, with the SQL that removes them)"
    ]


# -- Ctrl-C between batches ------------------------------------------------------------------------

SWEEPER = """
import sys
from datetime import timedelta
from uniqc_store import TaskStore
TaskStore(sys.argv[1]).archive_completed(older_than=timedelta(0), batch_size=int(sys.argv[2]))
"""


def test_an_interrupted_archive_has_moved_whole_batches_only(tmp_path: Path) -> None:
    tasks, batch = 6000, 50
    with TaskStore(tmp_path) as store:
        store.save_many(TaskInfo(f"t{i:05d}", "dummy", status="success") for i in range(tasks))
        for i in range(0, tasks, 7):
            store.save_shard(TaskShard(f"t{i:05d}", 0, f"job-{i}", "dummy"))
            store.save_shard(TaskShard(f"t{i:05d}", 1, f"job-{i}b", "dummy"))
        process = subprocess.Popen([sys.executable, "-c", SWEEPER, str(tmp_path), str(batch)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while store.count_archived() < 10 * batch and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        archived = store.count_archived()
        assert 0 < archived < tasks, "the interrupt came too late to test anything"
        assert process.returncode != 0 and b"KeyboardInterrupt" in err
        assert archived % batch == 0
        live = {task.task_id for task in store.list()}
        moved = {task.task_id for task in store.list_archived()}
        assert not live & moved and len(live | moved) == tasks
        for i in range(0, tasks, 7):
            task_id = f"t{i:05d}"
            shards = store.get_archived_shards(task_id) if task_id in moved else store.get_shards(task_id)
            assert [shard.shard_index for shard in shards] == [0, 1]
        assert store.count_shards() + store.count_shards(archived=True) == 2 * len(range(0, tasks, 7))
        assert store.archive_completed(older_than=timedelta(0)).tasks == tasks - archived
    assert os.path.exists(tmp_path / "tasks.sqlite")


# -- the command line ------------------------------------------------------------------------------


def test_the_commands_take_older_than(finished: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Older than 2026-03-01: the three with OLD times (naive-old, 2026-05-01, is newer in every zone).
    age = (datetime.now(timezone.utc) - datetime(2026, 3, 1, tzinfo=timezone.utc)).days
    assert main(["archive-completed", "--older-than", f"{age}d", "--url", db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("archived 3 completed tasks not updated since 2026-")
    assert lines[1:] == [
        "skipped 1 completed task whose update_time cannot be compared with the cutoff (not a time, or a time "
        "without an offset within a day of it)"
    ]
    assert sorted(task.task_id for task in finished.list_archived()) == ["cancelled-old", "failed-old", "success-old"]
    assert main(["clear-completed", "--older-than", "0s", "--url", db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("deleted 2 completed tasks not updated since 20")
    assert lines[1:] == [
        "skipped 1 completed task whose update_time cannot be compared with the cutoff (not a time, or a time "
        "without an offset within a day of it)"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--older-than=30x"], "expected a whole number and a unit"),
        (["--older-than", "30"], "expected a whole number and a unit"),
        (["--older-than=-3d"], "older-than '-3d': an age cannot be negative"),
        (["--older-than", "-3d"], "older-than '-3d': an age cannot be negative"),
        (["--older-than", "\u0663\u0660d"], "write the number with the ASCII digits 0-9"),
        (["--older-than", "999999999d"], "older-than '999999999d' is too large: now minus it is before the year 1"),
    ],
    ids=["no-unit", "no-unit-either", "negative-joined", "negative-apart", "arabic-indic-digits", "before-year-1"],
)
def test_a_bad_older_than_is_one_error_line_and_changes_nothing(
    finished: TaskStore, db_url: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = finished.list()
    for command in ("clear-completed", "archive-completed"):
        assert main([command, *argv, "--url", db_url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("uniqc-store: error: argument --older-than: older-than ")
        assert message in err and len(err.splitlines()) == 1
    assert finished.list() == before
    assert finished.count_archived() == 0


def test_the_command_names_the_ids_the_archive_already_holds(
    store: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.save(TaskInfo("dup", "dummy", status="success"))
    store.archive_task("dup")
    store.save(TaskInfo("dup", "dummy", status="failed"))
    store.save(TaskInfo("other", "dummy", status="failed"))
    assert main(["archive-completed", "--url", db_url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "archived 1 completed task",
        "left 1 completed task live whose id the archive already holds: 'dup' ('delete --archived ID' or "
        "'delete ID' clears the way)",
    ]
    assert store.get("dup").status == "failed" and store.get_archived("dup").status == "success"
