"""``check_store`` and ``uniqc-store check``: a healthy store is ok on every backend; each kind of
damage is one readable line (exit status 1); nothing is ever changed, and what a store would
refuse is refused untouched."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from uniqc_store import (
    DB_FILENAME,
    DatabaseError,
    ForeignDatabaseError,
    TaskInfo,
    TaskShard,
    TaskStore,
    check_store,
    schema,
)
from uniqc_store.cli import main

from dbutil import raw_execute
from uniqc_files import assert_file_and_wal_unchanged, snapshot, write_foreign_file, write_uniqc_v1_file


def fill(store: TaskStore) -> None:
    """Live tasks with shards, and an archived one with its shards."""
    store.save(TaskInfo("a", "originq:wuyuan", status="success", result={"00": 1}, metadata={"k": [1, 2]}))
    store.save_shard(TaskShard("a", 0, "job-a", "originq:wuyuan", status="success", result=[{"0": 1}]))
    store.save(TaskInfo("b", "dummy", status="running"))
    store.save(TaskInfo("c", "dummy", status="failed", error_message="boom"))
    store.save_shard(TaskShard("c", 0, "job-c", "dummy"))
    store.archive_task("c")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def drop_index(db_url: str, backend: str, name: str) -> None:
    raw_execute(db_url, f"DROP INDEX {name}" + (" ON tasks" if backend == "mysql" else ""))


# -- healthy ---------------------------------------------------------------------------------------


def test_a_store_the_library_made_is_healthy_on_every_backend(store: TaskStore, db_url: str) -> None:
    fill(store)
    report = check_store(url=db_url, full=True)
    assert report.problems == ()
    assert report.ok
    assert (report.revision, report.store_revision) == (schema.HEAD_REVISION, schema.STORE_HEAD)


def test_the_command_prints_ok_and_exits_0(
    store: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store)
    code, out, err = run_cli(capsys, "--url", db_url, "check")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{check_store(url=db_url).location}: ok (revision 0005 + {schema.STORE_HEAD} (head))"]


def test_check_json_is_the_report_as_one_object(
    store: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "check", "--json", "--url", db_url)
    assert code == 0
    assert json.loads(out) == {
        "location": check_store(url=db_url).location,
        "revision": schema.HEAD_REVISION,
        "store_revision": schema.STORE_HEAD,
        "full": False,
        "ok": True,
        "problems": [],
    }


def test_a_file_uniqc_wrote_and_the_store_upgraded_is_healthy(tmp_path: Path) -> None:
    write_uniqc_v1_file(tmp_path / DB_FILENAME, rows=20)
    TaskStore(tmp_path).close()
    assert check_store(tmp_path, full=True).problems == ()


# -- damage, one line each -------------------------------------------------------------------------


def test_a_dropped_index_is_named_on_every_backend(
    store: TaskStore, db_url: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    drop_index(db_url, backend, "tasks_status_idx")
    code, out, err = run_cli(capsys, "--url", db_url, "check")
    assert (code, err) == (1, "")
    assert out.splitlines()[1:] == ["- index tasks_status_idx on tasks(status) is missing"]
    assert out.splitlines()[0].endswith(": 1 problem")


def test_a_dropped_index_of_the_librarys_own_says_upgrade_recreates_it(
    store: TaskStore, db_url: str, backend: str
) -> None:
    drop_index(db_url, backend, "uniqc_store_tasks_status_time_idx")
    (problem,) = check_store(url=db_url).problems
    assert "uniqc_store_tasks_status_time_idx" in problem and "upgrade" in problem


def test_a_column_the_model_does_not_have_is_named(store: TaskStore, db_url: str) -> None:
    raw_execute(db_url, "ALTER TABLE tasks ADD COLUMN note TEXT")
    assert check_store(url=db_url).problems == ("table tasks has a column note that the model does not have",)


def test_archived_shards_without_their_task_are_named(store: TaskStore, db_url: str) -> None:
    fill(store)
    raw_execute(db_url, "DELETE FROM archived_tasks WHERE task_id = 'c'")
    assert check_store(url=db_url).problems == (
        "archived_task_shards holds shards of 1 task the archive does not hold ('c'); delete_archived(id) removes them",
    )


def test_json_that_does_not_decode_is_found_by_a_full_check_only(
    store: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store)
    raw_execute(db_url, "UPDATE tasks SET metadata_json = '{oops' WHERE task_id = 'a'")
    raw_execute(db_url, "UPDATE archived_task_shards SET result_json = 'NaNa' WHERE uniqc_task_id = 'c'")
    assert check_store(url=db_url).ok
    problems = check_store(url=db_url, full=True).problems
    assert len(problems) == 2
    assert problems[0].startswith("task 'a': its metadata (column metadata_json) cannot be decoded")
    assert problems[1].startswith("archived shard 0 of task 'c': its result (column result_json) cannot be decoded")
    code, out, _ = run_cli(capsys, "check", "--full", "--json", "--url", db_url)
    assert code == 1
    assert json.loads(out)["problems"] == list(problems)


def test_a_database_behind_head_says_to_upgrade(db_url: str) -> None:
    schema.upgrade("0004", url=db_url)
    (problem,) = check_store(url=db_url).problems
    assert problem.startswith("it is at revision 0004, not 0005 (head)")
    assert "uniqc-store upgrade" in problem


def test_an_empty_server_database_has_no_schema_yet(db_url: str, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("an SQLite path without a file is refused: see the refusal tests")
    assert check_store(url=db_url).problems == (
        "it holds no uniqc_store schema yet (no revision recorded); `uniqc-store upgrade` creates it",
    )


# -- SQLite: what only SQLite reports --------------------------------------------------------------


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A store file, then a raw sqlite3 connection that breaks every rule check_store knows."""
    with TaskStore(tmp_path) as store:
        fill(store)
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO task_shards SELECT 'ghost', 1, platform_task_id, backend, circuit_count, "
                 "sub_index_offset, status, result_json, error_message, submit_time, update_time FROM task_shards")
    conn.execute("INSERT INTO tasks (task_id, backend, status, submit_time, update_time) VALUES "
                 "(NULL, 'dummy', 'success', 't', 't')")
    conn.execute("CREATE TRIGGER wipe AFTER INSERT ON tasks BEGIN DELETE FROM tasks; END")
    conn.commit()
    # An index whose declared column no longer matches what it holds: integrity_check's finding.
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX tasks_status_idx ON tasks(backend)' "
                 "WHERE name = 'tasks_status_idx'")
    conn.commit()
    conn.close()
    return tmp_path


def test_sqlite_damage_is_one_line_per_problem(damaged: Path) -> None:
    problems = check_store(damaged).problems
    assert [p for p in problems if p.startswith("integrity_check: ")] == [
        f"integrity_check: row {n} missing from index tasks_status_idx" for n in (1, 2, 3)
    ]
    others = [p for p in problems if not p.startswith("integrity_check: ")]
    assert others == [
        "foreign_key_check: 1 row of task_shards refers to no row of tasks (task ids 'ghost'; "
        "delete_shards(id) removes them)",
        "table tasks has a trigger wipe, unlike uniqc's (it may change or delete records)",
        "index tasks_status_idx is on tasks(backend), not (status) as the model says",
        "1 row of tasks has no task_id (NULL): no call can read, change or delete it; remove with SQL: "
        "DELETE FROM tasks WHERE task_id IS NULL",
    ]


def test_the_command_lists_the_problems_and_exits_1(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "check", "--cache-dir", str(damaged))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == f"{damaged / DB_FILENAME}: {len(lines) - 1} problems"
    assert all(line.startswith("- ") for line in lines[1:])


def corrupt_page(directory: Path, page: str) -> None:
    """3000 tasks, the WAL moved into the file and removed; then 200 bytes near the end of one page
    scrambled: the root of tasks_status_idx (an interior page: its cells are child page numbers),
    or a leaf of the tasks' table in the middle of the file."""
    with TaskStore(directory) as store:
        store.save_many(TaskInfo(f"t{i}", "dummy", result={"a": "x" * 200}) for i in range(3000))
    path = directory / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tasks_status_idx'").fetchone()[0]
    conn.close()
    for sibling in ("-wal", "-shm"):  # the WAL is empty: the file alone, as after a clean close
        Path(f"{path}{sibling}").unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    number = {"index-interior": root, "table-leaf": len(data) // 4096 // 2}[page]
    start = (number - 1) * 4096
    for offset in range(start + 3800, start + 4000):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("full", [False, True], ids=["check", "check-full"])
@pytest.mark.parametrize("page", ["index-interior", "table-leaf"])
def test_a_malformed_page_is_reported_as_a_problem_line_by_line(
    tmp_path: Path, page: str, full: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_page(tmp_path, page)
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, "check", "--cache-dir", str(tmp_path), *(["--full"] if full else []))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / DB_FILENAME}: {len(lines) - 1} problem{'s' if len(lines) > 2 else ''}"
    assert lines[1].startswith("- integrity_check: database disk image is malformed")
    assert all(line.startswith("- ") for line in lines[1:])
    if page == "index-interior":  # SQLite's integrity_check fails on it; quick_check names the damage
        assert lines[1].endswith("(it stopped SQLite's check; what quick_check finds follows)")
        assert any(line.startswith("- quick_check: On tree page ") for line in lines[2:])
    problems = check_store(tmp_path, full=full).problems
    assert [f"- {problem}" for problem in problems] == lines[1:]
    assert snapshot(tmp_path) == before


def test_a_file_at_a_version_uniqc_wrote_is_compared_with_that_version(tmp_path: Path) -> None:
    write_uniqc_v1_file(tmp_path / DB_FILENAME)
    before = snapshot(tmp_path)
    assert check_store(tmp_path).problems == (
        "it is at uniqc's schema version 1, with no revision recorded; `uniqc-store upgrade` (or opening a "
        "TaskStore) brings it to head",
    )
    assert snapshot(tmp_path) == before


# -- never changes anything ------------------------------------------------------------------------


def test_checking_a_file_with_no_wal_changes_no_byte_and_leaves_no_sibling(tmp_path: Path) -> None:
    code = f"from uniqc_store import TaskStore, TaskInfo; TaskStore({str(tmp_path)!r}).save(TaskInfo('a', 'dummy'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    before = snapshot(tmp_path)
    assert list(before) == [DB_FILENAME]
    assert check_store(tmp_path, full=True).ok
    assert snapshot(tmp_path) == before


def test_checking_reads_what_is_only_in_the_wal_and_changes_neither_file(tmp_path: Path) -> None:
    TaskStore(tmp_path).close()
    writer = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO tasks (task_id, backend, status, submit_time, update_time) VALUES "
                       "(NULL, 'dummy', 'success', 't', 't')")
        before = snapshot(tmp_path)
        assert (tmp_path / f"{DB_FILENAME}-wal").stat().st_size > 0
        (problem,) = check_store(tmp_path).problems
        assert problem.startswith("1 row of tasks has no task_id")
        assert_file_and_wal_unchanged(tmp_path, before)
    finally:
        writer.close()


def test_a_foreign_file_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_foreign_file(tmp_path / DB_FILENAME, 0x12345678)
    before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError):
        check_store(tmp_path)
    code, out, err = run_cli(capsys, "check", "--cache-dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith("uniqc-store: error: ") and "0x12345678" in err and len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_a_missing_file_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="there is no database at"):
        check_store(tmp_path / "nowhere")
    assert list(tmp_path.iterdir()) == []
