"""The library's own indexes (revision s001 of its branch ``uniqc_store``): created on every
database the store opens, as a migration like any other; never counted in ``user_version``;
invisible to uniqc; and back again when one goes missing."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from uniqc_releases import read_release_file
from uniqc_store import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    DB_FILENAME,
    DatabaseRefusedError,
    MigrationError,
    TaskInfo,
    TaskStore,
    schema,
)

from dbutil import raw_execute, raw_rows
from uniqc_files import header, rows_of, snapshot

CURRENT = "0.1.1"


def indexes_at(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {index["name"] for table in ("tasks", "archived_tasks") for index in found.get_indexes(table)}
    finally:
        engine.dispose()


def version_rows(url: str) -> list[str]:
    return sorted(row[0] for row in raw_rows(url, f"SELECT version_num FROM {schema.VERSION_TABLE}"))


def ours(url: str) -> set[str]:
    return set(schema.list_index_names(make_url(url).get_backend_name()))


def open_in_a_new_process(url: str) -> str:
    """Open the store as a fresh process does (the first open checks the schema), and list."""
    code = "import sys; from uniqc_store import TaskStore; print(len(TaskStore(url=sys.argv[1]).list()))"
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_database_of_ours_at_0005_gains_the_indexes_when_opened(db_url: str) -> None:
    schema.upgrade("0005", url=db_url)  # as uniqc_store before the indexes left it
    assert version_rows(db_url) == ["0005"] and not ours(db_url) & indexes_at(db_url)
    with TaskStore(url=db_url) as store:
        store.save(TaskInfo("t", "dummy"))
        assert (store.schema_info()["revision"], store.schema_info()["store_revision"]) == ("0005", schema.STORE_HEAD)
    assert ours(db_url) <= indexes_at(db_url)
    assert version_rows(db_url) == [schema.STORE_HEAD]
    if db_url.startswith("sqlite"):
        assert raw_rows(db_url, "PRAGMA user_version") == [(CURRENT_SCHEMA_VERSION,)]  # never moved by s001


def test_a_missing_index_comes_back_when_a_process_next_opens_the_database(db_url: str) -> None:
    with TaskStore(url=db_url) as store:
        store.save_many(TaskInfo(f"t-{i}", "dummy", status="success") for i in range(30))
    dialect = make_url(db_url).get_backend_name()
    gone = f"{schema.list_index_names(dialect)[0]}"
    raw_execute(db_url, f"DROP INDEX {gone}" + (" ON tasks" if dialect == "mysql" else ""))
    assert gone not in indexes_at(db_url)
    assert open_in_a_new_process(db_url) == "30"
    assert ours(db_url) <= indexes_at(db_url)
    assert version_rows(db_url) == [schema.STORE_HEAD]
    with TaskStore(url=db_url) as store:
        assert store.count(status="success") == 30


def test_the_command_line_says_which_index_was_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / DB_FILENAME}"
    TaskStore(tmp_path).close()
    raw_execute(url, "DROP INDEX uniqc_store_tasks_status_time_idx")
    out = subprocess.run(
        [sys.executable, "-m", "uniqc_store", "--cache-dir", str(tmp_path), "upgrade"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"{tmp_path / DB_FILENAME}: upgraded from revision 0005 + {schema.STORE_HEAD} (missing "
        f"uniqc_store_tasks_status_time_idx) to revision 0005 + {schema.STORE_HEAD} (head)\n"
    )
    assert ours(url) <= indexes_at(url)


def test_a_uniqc_file_gets_the_indexes_and_uniqc_still_opens_it_without_migrating(
    uniqc_release: object, tmp_path: Path
) -> None:
    uniqc = uniqc_release(CURRENT)  # type: ignore[operator]
    theirs = uniqc.TaskStore(cache_dir=tmp_path)
    theirs.save(uniqc.TaskInfo(task_id="uqt_" + "1" * 32, backend="dummy", status="success"))
    path = tmp_path / DB_FILENAME
    url = f"sqlite:///{path}"
    with TaskStore(tmp_path) as store:
        assert store.count() == 1
    assert ours(url) <= indexes_at(url)
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    before = rows_of(path)
    # uniqc 0.1.1 opens it as its own (no migration: same header, same rows), reads and writes it.
    read = read_release_file(uniqc, tmp_path)
    assert list(read["tasks"]) == ["uqt_" + "1" * 32]
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION) and rows_of(path) == before
    uniqc.TaskStore(cache_dir=tmp_path).save(uniqc.TaskInfo(task_id="uqt_" + "2" * 32, backend="dummy"))
    with TaskStore(tmp_path) as store:
        assert [task.task_id for task in store.list(backend="dummy", status="pending")] == ["uqt_" + "2" * 32]


@pytest.mark.parametrize(
    "index_sql",
    [
        "CREATE UNIQUE INDEX uniqc_store_tasks_status_time_idx ON tasks (status, submit_time)",
        "CREATE INDEX uniqc_store_tasks_status_time_idx ON tasks (submit_time, status)",
        "CREATE INDEX uniqc_store_tasks_status_time_idx ON tasks (status, submit_time) WHERE status = 'x'",
        "CREATE INDEX uniqc_store_tasks_status_time_idx ON tasks (status, submit_time DESC)",
        "CREATE INDEX uniqc_store_tasks_status_time_idx ON tasks (status COLLATE NOCASE, submit_time)",
        "CREATE VIEW uniqc_store_tasks_status_time_idx AS SELECT 1",
    ],
    ids=["unique", "other-columns", "partial", "descending", "nocase", "a-view"],
)
def test_a_look_alike_of_our_index_on_a_uniqc_file_is_refused_untouched(
    uniqc_release: object, tmp_path: Path, index_sql: str
) -> None:
    uniqc_release(CURRENT).TaskStore(cache_dir=tmp_path)  # type: ignore[operator]
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute(index_sql)
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(DatabaseRefusedError, match="is not the index uniqc_store makes on tasks"):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_revision_of_the_branch_newer_than_the_library_is_refused_untouched(db_url: str) -> None:
    TaskStore(url=db_url).close()
    raw_execute(db_url, f"UPDATE {schema.VERSION_TABLE} SET version_num = 's999'")
    code = "import sys; from uniqc_store import TaskStore; TaskStore(url=sys.argv[1]).count()"
    out = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "SchemaTooNewError" in out.stderr and "revision 's999' of its own indexes" in out.stderr
    assert "Upgrade uniqc_store" in out.stderr
    assert version_rows(db_url) == ["s999"]


def test_creating_the_indexes_is_one_transaction_that_a_failure_rolls_back(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("mysql"):
        pytest.skip("MySQL/MariaDB commit each CREATE INDEX: there the next open finishes the job")
    schema.upgrade("0005", url=db_url)
    scripts = tmp_path / "scripts"
    shutil.copytree(schema.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (s001,) = (scripts / "versions").glob("s001_*.py")
    failing = "\n\n_unfailing = upgrade\n\n\ndef upgrade() -> None:\n    _unfailing()\n    raise RuntimeError('cut')\n"
    s001.write_text(s001.read_text() + failing)
    with pytest.raises(MigrationError, match=r"rolled back completely.*cut"):
        schema.upgrade(url=db_url, script_dir=scripts)
    assert not ours(db_url) & indexes_at(db_url)
    assert version_rows(db_url) == ["0005"]
    TaskStore(url=db_url).close()
    assert ours(db_url) <= indexes_at(db_url)


LOOK_ALIKES_ON_OURS = {
    "unique": "CREATE UNIQUE INDEX {name} ON tasks ({columns})",
    "other-columns": "CREATE INDEX {name} ON tasks (submit_time, status)",
}


@pytest.mark.parametrize("kind", LOOK_ALIKES_ON_OURS)
def test_a_look_alike_under_our_name_on_one_of_our_databases_is_refused_untouched(db_url: str, kind: str) -> None:
    """Re-created by hand, say, as a unique index: MariaDB's upsert would then overwrite another
    task whose (status, submit_time) is the same."""
    with TaskStore(url=db_url) as store:
        store.save(TaskInfo("t1", "dummy", submit_time="2026-01-01T00:00:00+00:00"))
    dialect = make_url(db_url).get_backend_name()
    name = "uniqc_store_tasks_status_time_idx"
    columns = ", ".join(schema.list_indexes("tasks", dialect)[name])
    raw_execute(db_url, f"DROP INDEX {name}" + (" ON tasks" if dialect == "mysql" else ""))
    raw_execute(db_url, LOOK_ALIKES_ON_OURS[kind].format(name=name, columns=columns))
    before = raw_rows(db_url, "SELECT * FROM tasks"), version_rows(db_url), indexes_at(db_url)
    code = "import sys; from uniqc_store import TaskStore; TaskStore(url=sys.argv[1]).count()"
    out = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "DatabaseRefusedError" in out.stderr
    assert f"'{name}' is not the index uniqc_store makes on tasks" in out.stderr and "Drop it" in out.stderr
    assert (raw_rows(db_url, "SELECT * FROM tasks"), version_rows(db_url), indexes_at(db_url)) == before


def test_our_index_under_another_letter_case_is_ours(tmp_path: Path) -> None:
    """SQLite (and MySQL) compare index names without case: the same index, not a missing one."""
    url = f"sqlite:///{tmp_path / DB_FILENAME}"
    TaskStore(tmp_path).close()
    raw_execute(url, "DROP INDEX uniqc_store_tasks_status_time_idx")
    raw_execute(url, "CREATE INDEX Uniqc_Store_Tasks_Status_Time_Idx ON tasks (status, submit_time)")
    assert open_in_a_new_process(url) == "0"
    assert version_rows(url) == [schema.STORE_HEAD]
    assert "Uniqc_Store_Tasks_Status_Time_Idx" in indexes_at(url)


def test_a_version_table_holding_0005_beside_the_branch_is_refused_untouched(db_url: str) -> None:
    """Alembic never writes it (0005 is an ancestor of every revision of the branch)."""
    TaskStore(url=db_url).close()
    raw_execute(db_url, f"INSERT INTO {schema.VERSION_TABLE} VALUES ('0005')")
    code = "import sys; from uniqc_store import TaskStore; TaskStore(url=sys.argv[1]).count()"
    out = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "are not revisions of uniqc_store" in out.stderr
    assert version_rows(db_url) == sorted(["0005", schema.STORE_HEAD])
