"""The ``uniqc-store`` command line: every command, its output formats, exit statuses and errors.

Most tests call :func:`uniqc_store.cli.main` in-process; the subprocess tests at the end run
``python -m uniqc_store`` and the installed ``uniqc-store`` script as a user would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from uniqc_store import DB_FILENAME, HEAD_REVISION, TaskInfo, TaskShard, TaskStore
from uniqc_store.cli import main
from uniqc_store.schema import STORE_HEAD

from uniqc_files import snapshot, write_uniqc_v1_file

#: How the command line names the head: uniqc's schema revision + the library's own indexes'.
HEAD_LABEL = f"{HEAD_REVISION} + {STORE_HEAD} (head)"

ERROR_PREFIX = "uniqc-store: error: "

# Newest last; `list` prints them newest first.
TASKS = [
    TaskInfo("a-success", "originq:wuyuan", status="success", shots=100, submit_time="2024-01-01T00:00:00+00:00"),
    TaskInfo("b-running", "dummy", status="running", shots=200, submit_time="2024-01-02T00:00:00+00:00"),
    TaskInfo("c-failed", "originq:wuyuan", status="failed", shots=300, submit_time="2024-01-03T00:00:00+00:00"),
    TaskInfo(
        "d-pending", "dummy", status="pending", shots=400, submit_time="2024-01-04T00:00:00+00:00",
        metadata={"circuit": "量子"},
    ),
    TaskInfo(
        "e-cancelled", "dummy", status="cancelled", shots=500, submit_time="2024-01-05T00:00:00+00:00",
        result={"00": 3, "11": 5},
    ),
]
NEWEST_FIRST = [task.task_id for task in reversed(TASKS)]


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def assert_one_error_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR_PREFIX), err
    for fragment in fragments:
        assert fragment in lines[0]


def list_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def populated(cache_dir: Path) -> Path:
    """A store in ``cache_dir`` holding :data:`TASKS`."""
    with TaskStore(cache_dir) as store:
        for task in TASKS:
            store.save(task)
    return cache_dir


def stored(cache_dir: Path) -> list[TaskInfo]:
    with TaskStore(cache_dir) as store:
        return store.list()


def foreign_file(path: Path) -> Path:
    """An SQLite database of another program: its own application_id and a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    return path


def random_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(8192))
    return path


# -- upgrade -------------------------------------------------------------------------------------


def test_upgrade_creates_a_missing_database_at_head(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    result = run(capsys, "--cache-dir", cache_dir, "upgrade")
    assert (result.code, result.err) == (0, "")
    db = cache_dir / DB_FILENAME
    assert result.out == f"{db}: created at revision {HEAD_LABEL}\n"
    with TaskStore(cache_dir) as store:
        assert store.schema_info()["revision"] == HEAD_REVISION


def test_upgrade_of_a_database_at_head_says_nothing_was_done(
    capsys: pytest.CaptureFixture[str], populated: Path
) -> None:
    result = run(capsys, "--cache-dir", populated, "upgrade")
    assert result.code == 0
    assert result.out == f"{populated / DB_FILENAME}: already at revision {HEAD_LABEL}; nothing to do\n"
    assert len(stored(populated)) == len(TASKS)


def test_upgrade_adopts_a_file_written_by_uniqc_and_keeps_its_rows(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    write_uniqc_v1_file(cache_dir / DB_FILENAME, rows=3)
    result = run(capsys, "--cache-dir", cache_dir, "upgrade")
    assert result.code == 0
    assert "upgraded from user_version 1" in result.out
    assert result.out.rstrip().endswith(f"to revision {HEAD_LABEL}")
    assert len(stored(cache_dir)) == 3


def test_upgrade_of_an_empty_file_starts_from_base(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / DB_FILENAME).touch()
    result = run(capsys, "--cache-dir", cache_dir, "upgrade")
    assert result.code == 0
    assert result.out.endswith(f": upgraded from base (no revision) to revision {HEAD_LABEL}\n")


# -- info ----------------------------------------------------------------------------------------


def test_info_prints_location_version_header_and_counts(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "info")
    assert (result.code, result.err) == (0, "")
    fields = dict(line.split(":", 1) for line in result.out.splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields == {
        "location": str(populated / DB_FILENAME),
        "revision": HEAD_LABEL,
        "user_version": str(int(HEAD_REVISION)),
        "application_id": "0x554E4943",
        "pending": "1",
        "running": "1",
        "success": "1",
        "failed": "1",
        "cancelled": "1",
        "total": "5",
        "shards": "0",
        "archived": "0",
        "archived_shards": "0",
    }


def test_info_json_parses_and_counts_every_status(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    run(capsys, "--cache-dir", populated, "clear-completed")
    result = run(capsys, "--cache-dir", populated, "info", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert info["location"] == info["path"] == str(populated / DB_FILENAME)
    assert info["url"] == f"sqlite:///{populated / DB_FILENAME}"
    assert (info["revision"], info["store_revision"], info["user_version"], info["application_id"]) == (
        HEAD_REVISION, STORE_HEAD, int(HEAD_REVISION), "0x554E4943",
    )
    assert info["counts"] == {"pending": 1, "running": 1, "success": 0, "failed": 0, "cancelled": 0}
    assert info["total"] == 2
    assert (info["shards"], info["archived"], info["archived_shards"]) == (0, 0, 0)


# -- list ----------------------------------------------------------------------------------------


def test_list_prints_a_table_newest_first(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "list")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0].split() == ["task_id", "status", "backend", "shots", "submit_time"]
    assert lines[1].split() == ["e-cancelled", "cancelled", "dummy", "500", "2024-01-05T00:00:00+00:00"]
    assert list_ids(result.out) == NEWEST_FIRST
    assert len({line.index("2024") for line in lines[1:]}) == 1  # the columns line up


def test_list_of_an_empty_store_prints_only_the_header(capsys: pytest.CaptureFixture[str], cache_dir: Path) -> None:
    result = run(capsys, "--cache-dir", cache_dir, "list")
    assert result.code == 0
    assert result.out.split() == ["task_id", "status", "backend", "shots", "submit_time"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(["--status", "running"], ["b-running"], id="status"),
        pytest.param(["--backend", "dummy"], ["e-cancelled", "d-pending", "b-running"], id="backend"),
        pytest.param(["--limit", "2"], ["e-cancelled", "d-pending"], id="limit"),
        pytest.param(["--limit", "0"], [], id="limit-zero"),
        pytest.param(["--status", "failed", "--backend", "originq:wuyuan"], ["c-failed"], id="status-and-backend"),
        pytest.param(["--status", "success", "--backend", "dummy"], [], id="nothing-matches"),
    ],
)
def test_list_filters_by_status_backend_and_limit(
    capsys: pytest.CaptureFixture[str], populated: Path, options: list[str], expected: list[str]
) -> None:
    result = run(capsys, "--cache-dir", populated, "list", *options)
    assert result.code == 0
    assert list_ids(result.out) == expected


def test_list_json_is_an_array_of_task_dicts(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "list", "--json")
    assert result.code == 0
    assert json.loads(result.out) == [task.to_dict() for task in stored(populated)]
    assert [task["task_id"] for task in json.loads(result.out)] == NEWEST_FIRST
    assert "量子" in result.out  # not \u-escaped


def test_list_json_applies_the_filters(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "list", "--backend", "dummy", "--limit", "1", "--json")
    assert [task["task_id"] for task in json.loads(result.out)] == ["e-cancelled"]


def test_list_keeps_each_task_on_one_line_whatever_its_id(
    capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    with TaskStore(cache_dir) as store:
        store.save(TaskInfo("two\nlines\tand a tab", "dummy"))
    result = run(capsys, "--cache-dir", cache_dir, "list")
    assert result.out.splitlines()[1].startswith("two\\nlines\\tand a tab  ")
    assert len(result.out.splitlines()) == 2


# -- show, delete, clear-completed ---------------------------------------------------------------


def test_show_prints_the_task_as_indented_json(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "show", "d-pending")
    assert (result.code, result.err) == (0, "")
    with TaskStore(populated) as store:
        expected = {**store.get("d-pending").to_dict(), "shards": []}
    assert result.out == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    assert json.loads(result.out)["metadata"] == {"circuit": "量子"}


def test_delete_removes_the_task_and_says_so(capsys: pytest.CaptureFixture[str], populated: Path) -> None:
    result = run(capsys, "--cache-dir", populated, "delete", "b-running")
    assert (result.code, result.out, result.err) == (0, "deleted task b-running\n", "")
    assert "b-running" not in [task.task_id for task in stored(populated)]
    assert len(stored(populated)) == len(TASKS) - 1


def test_clear_completed_deletes_terminal_tasks_and_prints_how_many(
    capsys: pytest.CaptureFixture[str], populated: Path
) -> None:
    result = run(capsys, "--cache-dir", populated, "clear-completed")
    assert (result.code, result.out, result.err) == (0, "deleted 3 completed tasks\n", "")
    assert sorted(task.task_id for task in stored(populated)) == ["b-running", "d-pending"]
    again = run(capsys, "--cache-dir", populated, "clear-completed")
    assert again.out == "deleted 0 completed tasks\n"


@pytest.mark.parametrize("command", ["show", "delete"])
def test_a_missing_task_exits_1_with_one_error_line(
    capsys: pytest.CaptureFixture[str], populated: Path, command: str
) -> None:
    result = run(capsys, "--cache-dir", populated, command, "no-such-task")
    assert (result.code, result.out) == (1, "")
    assert_one_error_line(result.err, "'no-such-task'", "not found")
    assert len(stored(populated)) == len(TASKS)


# -- shards and the archive ----------------------------------------------------------------------


@pytest.fixture
def sharded(populated: Path) -> Path:
    """:data:`TASKS`, two shards of b-running (saved out of order), one of e-cancelled."""
    with TaskStore(populated) as store:
        store.save_shard(TaskShard("b-running", 1, "platform-1", "dummy", circuit_count=2, sub_index_offset=1))
        store.save_shard(TaskShard("b-running", 0, "platform-0", "dummy", status="success", result=[{"0": 5}]))
        store.save_shard(TaskShard("e-cancelled", 0, "platform-e", "dummy", status="cancelled"))
    return populated


def test_show_includes_the_tasks_shards_in_index_order(capsys: pytest.CaptureFixture[str], sharded: Path) -> None:
    result = run(capsys, "--cache-dir", sharded, "show", "b-running")
    assert (result.code, result.err) == (0, "")
    shown = json.loads(result.out)
    with TaskStore(sharded) as store:
        shards = [shard.to_dict() for shard in store.get_shards("b-running")]
        assert shown == {**store.get("b-running").to_dict(), "shards": shards}
    assert [(s["shard_index"], s["platform_task_id"], s["result"]) for s in shown["shards"]] == [
        (0, "platform-0", [{"0": 5}]),
        (1, "platform-1", None),
    ]
    assert shown["archived_at"] is None


def test_show_finds_an_archived_task_with_its_shards_and_says_it_is_archived(
    capsys: pytest.CaptureFixture[str], sharded: Path
) -> None:
    with TaskStore(sharded) as store:
        store.archive_task("e-cancelled")
        archived = store.get_archived("e-cancelled")
    result = run(capsys, "--cache-dir", sharded, "show", "e-cancelled")
    assert result.code == 0
    shown = json.loads(result.out)
    assert shown["archived_at"] == archived.archived_at is not None
    assert [s["platform_task_id"] for s in shown["shards"]] == ["platform-e"]
    assert result.err == (
        f"uniqc-store: note: task e-cancelled is archived (since {archived.archived_at}); "
        "'uniqc-store restore' moves it back\n"
    )


def test_info_counts_shards_and_the_archive(capsys: pytest.CaptureFixture[str], sharded: Path) -> None:
    with TaskStore(sharded) as store:
        store.archive_task("e-cancelled")
        store.archive_task("a-success")
    text = run(capsys, "--cache-dir", sharded, "info")
    fields = {key: value.strip() for key, value in (line.split(":", 1) for line in text.out.splitlines())}
    assert (fields["total"], fields["shards"], fields["archived"], fields["archived_shards"]) == ("3", "2", "2", "1")
    info = json.loads(run(capsys, "--cache-dir", sharded, "info", "--json").out)
    assert (info["total"], info["shards"], info["archived"], info["archived_shards"]) == (3, 2, 2, 1)
    assert sum(info["counts"].values()) == info["total"]


def test_archive_moves_the_task_and_its_shards_and_restore_moves_them_back(
    capsys: pytest.CaptureFixture[str], sharded: Path
) -> None:
    result = run(capsys, "--cache-dir", sharded, "archive", "b-running")
    assert (result.code, result.out, result.err) == (0, "archived task b-running (2 shards)\n", "")
    assert "b-running" not in list_ids(run(capsys, "--cache-dir", sharded, "list").out)
    assert list_ids(run(capsys, "--cache-dir", sharded, "list", "--archived").out) == ["b-running"]
    result = run(capsys, "--cache-dir", sharded, "restore", "b-running")
    assert (result.code, result.out, result.err) == (0, "restored task b-running (2 shards)\n", "")
    assert list_ids(run(capsys, "--cache-dir", sharded, "list").out) == NEWEST_FIRST
    with TaskStore(sharded) as store:
        assert [s.shard_index for s in store.get_shards("b-running")] == [0, 1]
        assert store.count_archived() == 0


def test_list_archived_prints_archived_tasks_newest_first_with_when_they_were_archived(
    capsys: pytest.CaptureFixture[str], populated: Path
) -> None:
    with TaskStore(populated) as store:
        for task_id in ("a-success", "e-cancelled", "c-failed"):
            store.archive_task(task_id)
        stamps = {task.task_id: task.archived_at for task in store.list_archived()}
    result = run(capsys, "--cache-dir", populated, "list", "--archived")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["task_id", "status", "backend", "shots", "submit_time", "archived_at"]
    assert [line.split() for line in lines[1:]] == [
        [task_id, status, backend, shots, submit, stamps[task_id]]
        for task_id, status, backend, shots, submit in (
            ("e-cancelled", "cancelled", "dummy", "500", "2024-01-05T00:00:00+00:00"),
            ("c-failed", "failed", "originq:wuyuan", "300", "2024-01-03T00:00:00+00:00"),
            ("a-success", "success", "originq:wuyuan", "100", "2024-01-01T00:00:00+00:00"),
        )
    ]
    filtered = run(capsys, "--cache-dir", populated, "list", "--archived", "--backend", "originq:wuyuan", "--json")
    with TaskStore(populated) as store:
        assert json.loads(filtered.out) == [t.to_dict() for t in store.list_archived(backend="originq:wuyuan")]
    assert [task["task_id"] for task in json.loads(filtered.out)] == ["c-failed", "a-success"]


def test_delete_archived_removes_only_the_archived_task(capsys: pytest.CaptureFixture[str], sharded: Path) -> None:
    run(capsys, "--cache-dir", sharded, "archive", "e-cancelled")
    result = run(capsys, "--cache-dir", sharded, "delete", "--archived", "e-cancelled")
    assert (result.code, result.out, result.err) == (0, "deleted archived task e-cancelled\n", "")
    with TaskStore(sharded) as store:
        assert (store.count_archived(), store.count_shards(archived=True), store.count()) == (0, 0, 4)
    again = run(capsys, "--cache-dir", sharded, "delete", "--archived", "e-cancelled")
    assert again.code == 1
    assert_one_error_line(again.err, "'e-cancelled' not found in the archive")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["archive", "no-such-task"], "task 'no-such-task' not found", id="archive-missing"),
        pytest.param(["archive", "e-cancelled"], "not found; it is already archived", id="archive-archived"),
        pytest.param(["restore", "no-such-task"], "'no-such-task' not found in the archive", id="restore-missing"),
        pytest.param(["restore", "a-success"], "not found in the archive; it is a live task", id="restore-live"),
    ],
)
def test_archive_or_restore_of_a_task_that_is_not_there_exits_1(
    capsys: pytest.CaptureFixture[str], sharded: Path, argv: list[str], fragment: str
) -> None:
    run(capsys, "--cache-dir", sharded, "archive", "e-cancelled")
    before = snapshot(sharded)
    result = run(capsys, "--cache-dir", sharded, *argv)
    assert (result.code, result.out) == (1, "")
    assert_one_error_line(result.err, fragment)
    assert snapshot(sharded) == before


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["archive", "b-running"], "the archive already holds a task with this id", id="archive"),
        pytest.param(["restore", "b-running"], "a live task has this id", id="restore"),
    ],
)
def test_archive_or_restore_over_an_existing_record_exits_2_and_moves_nothing(
    capsys: pytest.CaptureFixture[str], sharded: Path, argv: list[str], fragment: str
) -> None:
    with TaskStore(sharded) as store:
        store.archive_task("b-running")
        store.save(TaskInfo("b-running", "dummy", status="running"))  # a live task of the same id again
        store.save_shard(TaskShard("b-running", 0, "platform-new", "dummy"))
        before = (store.list(), store.get_shards("b-running"), store.list_archived(),
                  store.get_archived_shards("b-running"))
    result = run(capsys, "--cache-dir", sharded, *argv)
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, "'b-running'", fragment, "nothing was moved")
    with TaskStore(sharded) as store:
        after = (store.list(), store.get_shards("b-running"), store.list_archived(),
                 store.get_archived_shards("b-running"))
    assert after == before


# -- bad usage and bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["list", "--status", "bogus"], "'bogus'", id="unknown-status"),
        pytest.param(["list", "--limit", "-1"], "limit must not be negative", id="negative-limit"),
        pytest.param(["list", "--limit", "two"], "invalid int value", id="non-integer-limit"),
        pytest.param(["frobnicate"], "invalid choice", id="unknown-subcommand"),
        pytest.param([], "required", id="no-subcommand"),
        pytest.param(["list", "--frobnicate"], "unrecognized arguments", id="unknown-option"),
        pytest.param(["show"], "TASK_ID", id="missing-task-id"),
        pytest.param(["show", ""], "task_id must not be empty", id="empty-task-id"),
        pytest.param(["archive"], "TASK_ID", id="archive-without-task-id"),
        pytest.param(["restore", ""], "task_id must not be empty", id="restore-empty-task-id"),
        pytest.param(["list", "--archived", "--status", "done"], "'done'", id="archived-unknown-status"),
        pytest.param(["--url", "sqlite:///x.sqlite", "list"], "not allowed with", id="cache-dir-and-url"),
        pytest.param(["list", "--url", "sqlite:///x.sqlite"], "not both", id="cache-dir-and-url-after-command"),
    ],
)
def test_bad_usage_or_input_exits_2_with_one_error_line(
    capsys: pytest.CaptureFixture[str], populated: Path, argv: list[str], fragment: str
) -> None:
    result = run(capsys, "--cache-dir", populated, *argv)
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, fragment)
    assert len(stored(populated)) == len(TASKS)


def test_cache_dir_that_is_a_regular_file_exits_2_and_leaves_it_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "not-a-directory"
    path.write_bytes(b"plain text\n")
    result = run(capsys, "--cache-dir", path, "info")
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, "is a file, not a directory")
    assert path.read_bytes() == b"plain text\n"


def test_cache_dir_that_cannot_be_created_exits_2_with_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    result = run(capsys, "--cache-dir", tmp_path / "a-file" / "cache", "upgrade")
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, "a-file")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(foreign_file, "application_id 0x000004D2", id="foreign-application-id"),
        pytest.param(random_file, "is not an SQLite database", id="random-bytes"),
    ],
)
@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["upgrade"], id="upgrade"),
        pytest.param(["info", "--json"], id="info"),
        pytest.param(["list"], id="list"),
        pytest.param(["show", "x"], id="show"),
        pytest.param(["delete", "x"], id="delete"),
        pytest.param(["archive", "x"], id="archive"),
        pytest.param(["restore", "x"], id="restore"),
        pytest.param(["list", "--archived"], id="list-archived"),
        pytest.param(["clear-completed"], id="clear-completed"),
    ],
)
def test_a_database_that_is_not_ours_is_refused_with_exit_2_and_left_byte_for_byte_unchanged(
    capsys: pytest.CaptureFixture[str], cache_dir: Path, make, fragment: str, argv: list[str]
) -> None:
    make(cache_dir / DB_FILENAME)
    before = snapshot(cache_dir)
    result = run(capsys, "--cache-dir", cache_dir, *argv)
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, fragment)
    assert snapshot(cache_dir) == before


def test_a_url_naming_an_unsupported_database_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "--url", "oracle://scott:tiger@db.example/orcl", "info")
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, "oracle")
    assert "tiger" not in result.err


def test_an_unreachable_server_exits_2_with_its_password_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    result = run(capsys, "--url", "postgresql://user:s3cret-pw@127.0.0.1:1/tasks", "info")
    assert (result.code, result.out) == (2, "")
    assert_one_error_line(result.err, "127.0.0.1")
    assert "s3cret-pw" not in result.err


# -- choosing the database -----------------------------------------------------------------------


def test_without_options_the_default_location_under_home_is_used(
    capsys: pytest.CaptureFixture[str], isolated_home: Path
) -> None:
    result = run(capsys, "info", "--json")
    assert result.code == 0
    default = isolated_home / ".uniqc" / "cache" / DB_FILENAME
    assert json.loads(result.out)["path"] == str(default)
    assert default.is_file()


def test_without_options_uniqc_store_url_is_honoured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_home: Path
) -> None:
    path = tmp_path / "from-env" / DB_FILENAME
    monkeypatch.setenv("UNIQC_STORE_URL", f"sqlite:///{path}")
    result = run(capsys, "upgrade")
    assert result.out == f"{path}: created at revision {HEAD_LABEL}\n"
    assert path.is_file()
    assert not (isolated_home / ".uniqc").exists()


def test_cache_dir_wins_over_uniqc_store_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, populated: Path
) -> None:
    monkeypatch.setenv("UNIQC_STORE_URL", f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    result = run(capsys, "--cache-dir", populated, "list")
    assert list_ids(result.out) == NEWEST_FIRST
    assert not (tmp_path / "elsewhere.sqlite").exists()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(lambda d: ["--url", f"sqlite:///{d / DB_FILENAME}", "list"], id="url-before-command"),
        pytest.param(lambda d: ["list", "--url", f"sqlite:///{d / DB_FILENAME}"], id="url-after-command"),
        pytest.param(lambda d: ["list", "--cache-dir", str(d)], id="cache-dir-after-command"),
    ],
)
def test_the_location_options_work_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], populated: Path, argv
) -> None:
    result = run(capsys, *argv(populated))
    assert result.code == 0
    assert list_ids(result.out) == NEWEST_FIRST


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_print_to_stdout_and_exit_0(capsys: pytest.CaptureFixture[str], option: str) -> None:
    result = run(capsys, option)
    assert (result.code, result.err) == (0, "")
    assert "uniqc-store" in result.out


# -- as a real process ---------------------------------------------------------------------------

LAUNCHERS = [
    pytest.param([sys.executable, "-m", "uniqc_store"], id="python-m"),
    pytest.param([str(Path(sys.executable).with_name("uniqc-store"))], id="console-script"),
]


@pytest.fixture(params=LAUNCHERS)
def launcher(request: pytest.FixtureRequest) -> list[str]:
    command = request.param
    assert Path(command[0]).exists(), f"{command[0]} is missing: pip install -e the project"
    return command


def run_process(launcher: list[str], *argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launcher, *(str(arg) for arg in argv)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_a_real_process_lists_tasks_as_json_and_exits_0(launcher: list[str], populated: Path, tmp_path: Path) -> None:
    done = run_process(launcher, "--cache-dir", populated, "list", "--json", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert [task["task_id"] for task in json.loads(done.stdout)] == NEWEST_FIRST


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        pytest.param(["show", "no-such-task"], 1, id="missing-task"),
        pytest.param(["restore", "a-success"], 1, id="restore-of-a-live-task"),
        pytest.param(["list", "--status", "bogus"], 2, id="bad-status"),
        pytest.param(["list", "--limit", "-1"], 2, id="negative-limit"),
        pytest.param(["frobnicate"], 2, id="unknown-subcommand"),
    ],
)
def test_a_real_process_fails_with_the_right_status_and_one_error_line(
    launcher: list[str], populated: Path, tmp_path: Path, argv: list[str], code: int
) -> None:
    done = run_process(launcher, "--cache-dir", populated, *argv, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (code, "")
    assert_one_error_line(done.stderr)


def test_a_real_process_refuses_a_foreign_file_untouched(launcher: list[str], tmp_path: Path) -> None:
    path = foreign_file(tmp_path / "other" / "app.db")
    before = path.read_bytes()
    done = run_process(launcher, "--url", f"sqlite:///{path}", "upgrade", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_error_line(done.stderr, "application_id")
    assert path.read_bytes() == before


def test_a_real_process_uses_the_default_location_under_home(
    launcher: list[str], isolated_home: Path, tmp_path: Path
) -> None:
    done = run_process(launcher, "upgrade", cwd=tmp_path)
    default = isolated_home / ".uniqc" / "cache" / DB_FILENAME
    assert (done.returncode, done.stdout) == (0, f"{default}: created at revision {HEAD_LABEL}\n")
    assert default.is_file()


def test_show_of_a_value_too_deep_to_print_is_one_line_not_unexpected(tmp_path: Path, capsys) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("deep", "sim"))
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("UPDATE tasks SET result_json = ? WHERE task_id = 'deep'", ("[" * 990 + "]" * 990,))
    conn.commit()
    conn.close()
    assert main(["--cache-dir", str(tmp_path), "show", "deep"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected" not in err and "nested too deeply" in err


def test_show_in_an_ascii_terminal_says_how_to_fix_the_encoding(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("任务-1", "sim"))
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run(
        [sys.executable, "-m", "uniqc_store", "--cache-dir", str(tmp_path), "show", "任务-1"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert done.returncode == 2 and "PYTHONIOENCODING=utf-8" in done.stderr and "unexpected" not in done.stderr
