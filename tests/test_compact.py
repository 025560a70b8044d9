"""``compact_store`` and ``uniqc-store compact``: an SQLite file shrinks and keeps every record, its
header and its mode; another process's write lock or open transaction makes it refuse with nothing
changed; saves committed by other processes around it are all kept; servers are told no."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uniqc_store import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    DB_FILENAME,
    DatabaseError,
    ForeignDatabaseError,
    TaskInfo,
    TaskShard,
    TaskStore,
    UnsupportedDatabaseError,
    compact_store,
)
from uniqc_store.cli import main
from uniqc_store.compact import COMPACT_WAIT_S

from uniqc_files import header, snapshot, write_foreign_file

# A second process that takes a lock on the file, says so, and holds it until its stdin closes.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(sys.argv[2])
conn.execute("SELECT count(*) FROM tasks").fetchone()
print("holding", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@pytest.fixture
def bloated(tmp_path: Path) -> Iterator[Path]:
    """A store that held 3000 tasks with shards and large results, 2900 of them deleted since."""
    with TaskStore(tmp_path) as store:
        store.save_many(
            TaskInfo(f"t{i:05d}", "dummy", status="success", result={"counts": "x" * 2000}) for i in range(3000)
        )
        for i in range(0, 3000, 30):
            store.save_shard(TaskShard(f"t{i:05d}", 0, f"job-{i}", "dummy"))
        for i in range(100, 3000):
            store.delete(f"t{i:05d}")
    yield tmp_path


def records(directory: Path) -> tuple[list[TaskInfo], int]:
    with TaskStore(directory) as store:
        return store.list(), store.count_shards()


@pytest.fixture
def holder(bloated: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []

    def hold(statement: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(bloated / DB_FILENAME), statement],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline() == "holding\n"
        return process

    yield hold
    for process in processes:
        process.communicate(timeout=30)


def test_compacting_shrinks_the_file_and_keeps_every_record_its_header_and_its_mode(bloated: Path) -> None:
    path = bloated / DB_FILENAME
    before = records(bloated)
    inode = path.stat().st_ino
    report = compact_store(bloated)
    assert report.path == str(path)
    assert report.size_after < report.size_before / 5
    wal = Path(f"{path}-wal")
    assert report.size_after == path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert records(bloated) == before
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_ino == inode


def test_the_command_prints_the_sizes_before_and_after(bloated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compact", "--cache-dir", str(bloated)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"compacted {bloated / DB_FILENAME}: ") and out.endswith(" bytes (file and WAL)\n")
    before, after = (int(n.replace(",", "")) for n in out.split(": ")[1].split(" bytes")[0].split(" -> "))
    assert after < before


@pytest.mark.parametrize(
    "statement", ["BEGIN IMMEDIATE", "BEGIN"], ids=["another-process-holds-the-write-lock", "an-open-read-transaction"]
)
def test_compact_is_refused_while_another_process_holds_a_transaction(
    bloated: Path, holder: Callable[[str], subprocess.Popen[str]], statement: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = records(bloated)
    holder(statement)
    size = os.stat(bloated / DB_FILENAME).st_size
    with pytest.raises(DatabaseError, match="another connection holds its write lock or has a transaction open"):
        compact_store(bloated)
    assert main(["compact", "--cache-dir", str(bloated)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uniqc-store: error: cannot compact ") and "nothing was changed" in err
    assert os.stat(bloated / DB_FILENAME).st_size == size
    assert records(bloated) == before


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_compact_is_refused_while_a_reader_holds_a_snapshot_taken_when_the_wal_was_empty(
    bloated: Path, holder: Callable[[str], subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # Such a reader reads the file alone: a truncating checkpoint does not wait for it, and a
    # VACUUM beside it would leave the whole rebuilt file in the WAL, which it keeps from being
    # moved into the file: the file and its WAL grow instead of shrinking.
    path = bloated / DB_FILENAME
    before = records(bloated)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0)
    conn.close()
    assert wal_size(path) == 0
    reader = holder("BEGIN")
    size = path.stat().st_size
    started = time.monotonic()
    with pytest.raises(DatabaseError, match="another connection holds its write lock or has a transaction open"):
        compact_store(bloated)
    assert time.monotonic() - started >= COMPACT_WAIT_S
    assert main(["compact", "--cache-dir", str(bloated)]) == 2
    assert "nothing was changed" in capsys.readouterr().err
    assert path.stat().st_size == size
    assert wal_size(path) <= 32 + 24 + 4096  # at most the one page committed to find the reader out
    assert records(bloated) == before
    reader.communicate(timeout=30)  # the reader ends its transaction: compact goes ahead
    report = compact_store(bloated)
    assert report.size_after < size / 5 and wal_size(path) == 0
    assert records(bloated) == before


def test_compact_waits_for_a_reader_that_ends_within_the_wait(bloated: Path) -> None:
    path = bloated / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    brief = HOLDER.replace("import ", "import time, ").replace("sys.stdin.read()", "time.sleep(0.5)")
    reader = subprocess.Popen([sys.executable, "-c", brief, str(path), "BEGIN"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline() == "holding\n"
    report = compact_store(bloated)
    assert report.size_after < report.size_before / 5 and wal_size(path) == 0
    reader.communicate(timeout=30)


WRITER = """
import sys
from uniqc_store import TaskInfo, TaskStore
store = TaskStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.save(TaskInfo(f"w{i:05d}", "dummy", status="success"))
print("done", flush=True)
"""


def test_saves_committed_by_another_process_around_compact_are_all_kept(bloated: Path) -> None:
    saves = 400
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(bloated), str(saves)], stdout=subprocess.PIPE, text=True
    )
    compacted = 0
    while writer.poll() is None:
        try:
            compact_store(bloated)
            compacted += 1
        except DatabaseError as error:  # refused while the writer held the lock: try again
            assert "cannot compact" in str(error)
        time.sleep(0.01)
    assert writer.communicate(timeout=60)[0] == "done\n"
    compact_store(bloated)
    assert compacted >= 1
    with TaskStore(bloated) as store:
        assert store.count() == 100 + saves
        assert {f"w{i:05d}" for i in range(saves)} <= {task.task_id for task in store.list()}


def test_a_foreign_file_is_refused_untouched(tmp_path: Path) -> None:
    write_foreign_file(tmp_path / DB_FILENAME, 0x12345678)
    before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError):
        compact_store(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_missing_file_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="there is no database at"):
        compact_store(tmp_path / "nowhere")
    assert list(tmp_path.iterdir()) == []


def test_servers_are_told_compact_is_for_sqlite(
    store: TaskStore, db_url: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "sqlite":
        pytest.skip("servers only")
    with pytest.raises(UnsupportedDatabaseError, match="compact works on SQLite files only"):
        compact_store(url=db_url)
    assert main(["compact", "--url", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uniqc-store: error: compact works on SQLite files only") and len(err.splitlines()) == 1
