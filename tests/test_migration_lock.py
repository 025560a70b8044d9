"""The migration lock, proved on every backend: a second process opening a database while the
first is migrating it waits, then finds it at head.

The first process runs ``schema.upgrade`` with a copy of the bundled revisions one of which, once
its work is done but before its transaction commits, creates a marker file and waits for a 'go'
file: the migration is held inside the window the lock protects (between reading the schema
state and committing the last revision). A second process then opens a ``TaskStore`` on the same
database. With the lock it waits (seen in /proc/locks, pg_locks or the MySQL process list) and,
once released, finds the database at head; without it, it migrates too, and fails. Held in the
first revision, the second process finds a database being created; held in s001 (the first of
the library's own indexes, which with the v5 data migration are the long steps on a large file),
one whose earlier revisions are committed and only the last ones are missing.

On SQLite the first migrator also holds SQLite's write lock, and the second's migration would
wait for that lock as well, re-reading the revision once it has it; but only for SQLite's busy
timeout. So there the first is held past that timeout: a long migration (a data migration of a
large file, say) must not make the processes that open the file meanwhile fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from uniqc_store import CURRENT_SCHEMA_VERSION, HEAD_REVISION, schema
from uniqc_store.database import SQLITE_BUSY_TIMEOUT_S

from dbutil import raw_rows

pytestmark = pytest.mark.slow

#: Longest any one step may take before the test fails instead of hanging.
STEP_TIMEOUT_S = 60.0
#: How long to look for the second process waiting on the lock before releasing the first anyway.
SEE_WAITING_S = 20.0
#: How long the first migrator is held, at least, once the second has started opening.
HOLD_S = {"sqlite": SQLITE_BUSY_TIMEOUT_S + 3.0, "postgresql": 0.0, "mysql": 0.0}

HOLD = '''

# Added by tests/test_migration_lock.py: hold the migration open, before it commits, until the
# test says go.
_upgrade_unheld = upgrade


def upgrade() -> None:
    import pathlib
    import time

    _upgrade_unheld()
    pathlib.Path({marker!r}).touch()
    deadline = time.monotonic() + {timeout}
    while not pathlib.Path({go!r}).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never said go")
        time.sleep(0.02)
'''

FIRST = "import sys; from uniqc_store import schema; schema.upgrade(url=sys.argv[1], script_dir=sys.argv[2])"
SECOND = """
import pathlib, sys
from uniqc_store import TaskInfo, TaskStore
pathlib.Path(sys.argv[2]).touch()
with TaskStore(url=sys.argv[1]) as store:
    store.save(TaskInfo("second", "sim"))
    print(store.schema_info()["revision"])
"""


def held_scripts(tmp_path: Path, marker: Path, go: Path, revision: str) -> Path:
    """A copy of the bundled revisions whose ``revision`` holds its migration open until ``go`` exists."""
    scripts = tmp_path / "scripts"
    shutil.copytree(schema.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (held,) = (scripts / "versions").glob(f"{revision}_*.py")
    timeout = STEP_TIMEOUT_S + max(HOLD_S.values())
    held.write_text(held.read_text() + HOLD.format(marker=str(marker), go=str(go), timeout=timeout))
    return scripts


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str, *watched: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in watched:
            if process.poll() is not None:
                pytest.fail(f"{what}: a process ended first (exit {process.returncode}):\n{process.stderr.read()}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def waiting_for_the_lock(backend: str, url: str, pid: int) -> bool:
    """True while process ``pid`` (or, on a server, any session on this test's database) waits
    for the migration lock."""
    if backend == "sqlite":
        try:
            locks = Path("/proc/locks").read_text()
        except OSError:  # not Linux: the caller falls back to waiting SEE_WAITING_S
            return False
        # A blocked request reads "N: -> FLOCK  ADVISORY  WRITE <pid> <dev:inode> 0 EOF".
        return any(
            fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid)
            for fields in (line.split() for line in locks.splitlines())
            if len(fields) > 5
        )
    if backend == "postgresql":
        sql = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    else:
        sql = "SELECT count(*) FROM information_schema.processlist WHERE state = 'User lock' AND db = DATABASE()"
    return raw_rows(url, sql)[0][0] > 0


# s001 builds the first of the library's own indexes, the longest step on a large file.
@pytest.mark.parametrize("held", ["0001", "s001"], ids=["held-in-the-first-revision", "held-in-an-index"])
def test_a_store_opened_during_another_process_s_migration_waits_for_it_then_finds_head(
    db_url: str, backend: str, tmp_path: Path, held: str
) -> None:
    marker, go, opening = tmp_path / "first-is-migrating", tmp_path / "go", tmp_path / "second-is-opening"
    scripts = held_scripts(tmp_path, marker, go, held)
    first = python(FIRST, db_url, str(scripts))
    second = None
    try:
        wait_for(marker.exists, STEP_TIMEOUT_S, "the first process reaching its held migration", first)
        second = python(SECOND, db_url, str(opening))
        wait_for(opening.exists, STEP_TIMEOUT_S, "the second process starting", second)
        started = time.monotonic()
        waited = False
        while not waited and second.poll() is None and time.monotonic() < started + SEE_WAITING_S:
            waited = waiting_for_the_lock(backend, db_url, second.pid)
            time.sleep(0.05)
        while second.poll() is None and time.monotonic() < started + HOLD_S[backend]:
            time.sleep(0.1)
        finished_early = second.poll() is not None
        go.touch()
        _, first_err = first.communicate(timeout=STEP_TIMEOUT_S)
        second_out, second_err = second.communicate(timeout=STEP_TIMEOUT_S)
    finally:
        go.touch()  # never leave the first process waiting out its timeout
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate(timeout=10)

    assert first.returncode == 0, f"the first migrator failed:\n{first_err}"
    assert second.returncode == 0, f"the second opener failed:\n{second_err}"
    assert second_out.strip() == HEAD_REVISION
    assert raw_rows(db_url, f"SELECT version_num FROM {schema.VERSION_TABLE}") == [(schema.STORE_HEAD,)]
    assert raw_rows(db_url, "SELECT task_id FROM tasks") == [("second",)]
    if backend == "sqlite":
        assert raw_rows(db_url, "PRAGMA user_version") == [(CURRENT_SCHEMA_VERSION,)]
    assert not finished_early, "the second opener finished while the first was still migrating"
    assert waited, "the second opener was never seen waiting for the migration lock"
