"""Files that are not ours are refused with every byte kept, on every path that opens a file:
the store, the library's upgrade, the CLI and the ``alembic`` command line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from uniqc_store import (
    DB_FILENAME,
    DatabaseRefusedError,
    ForeignDatabaseError,
    NotADatabaseError,
    TaskInfo,
    TaskStore,
    cli,
    schema,
)

from dbutil import raw_execute
from uniqc_files import (
    assert_file_and_wal_unchanged,
    open_with_the_store,
    snapshot,
    upgrade_with_the_library,
    wal_file_with_a_hot_wal,
)

PROJECT = Path(__file__).resolve().parent.parent




def _cli(command: str) -> Callable[[Path], None]:
    def run(directory: Path) -> None:
        code = cli.main(["--cache-dir", str(directory), command])
        if code == 2:
            raise ForeignDatabaseError(f"uniqc-store {command} refused it")
        raise AssertionError(f"uniqc-store {command} exited {code}")

    return run


def _alembic(directory: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url=sqlite:///{directory / DB_FILENAME}", "upgrade", "head"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        raise ForeignDatabaseError(done.stderr)
    raise AssertionError("alembic upgraded a foreign file")


OPENERS = pytest.mark.parametrize(
    "opener",
    [open_with_the_store, upgrade_with_the_library, _cli("info"), _cli("upgrade"), _alembic],
    ids=["TaskStore", "schema.upgrade", "cli-info", "cli-upgrade", "alembic"],
)

# (application_id, user_version, the program's own schema)
FOREIGN_FILES = pytest.mark.parametrize(
    ("application_id", "user_version", "ddl"),
    [
        (0, 1, "CREATE TABLE notes(body TEXT)"),
        (0, 0, "CREATE TABLE items(sku TEXT PRIMARY KEY, count INTEGER)"),
        (0, 0, "CREATE TABLE tasks(id INTEGER PRIMARY KEY, title TEXT, done INTEGER)"),
    ],
    ids=["versioned-without-tasks", "inventory-db", "todo-db-with-its-own-tasks"],
)


@OPENERS
@FOREIGN_FILES
def test_a_foreign_file_whose_writer_died_with_a_hot_wal_keeps_file_and_wal(
    tmp_path: Path, opener: Callable[[Path], None], application_id: int, user_version: int, ddl: str
) -> None:
    wal_file_with_a_hot_wal(
        tmp_path / DB_FILENAME, application_id=application_id, user_version=user_version, header_in_wal=False, ddl=ddl
    )
    before = snapshot(tmp_path)
    assert f"{DB_FILENAME}-wal" in before
    with pytest.raises(ForeignDatabaseError):
        opener(tmp_path)
    assert_file_and_wal_unchanged(tmp_path, before)


@OPENERS
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
@FOREIGN_FILES
def test_a_foreign_file_at_rest_is_refused_without_any_byte_or_sibling_changing(
    tmp_path: Path, opener: Callable[[Path], None], application_id: int, user_version: int, ddl: str, journal_mode: str
) -> None:
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute(ddl)
    conn.execute(f"PRAGMA application_id = {application_id}")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    assert list(before) == [DB_FILENAME]
    with pytest.raises(ForeignDatabaseError):
        opener(tmp_path)
    assert snapshot(tmp_path) == before  # header bytes 18-19 (journal mode) included


def test_an_unstamped_file_with_tables_is_refused_with_a_message_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "inventory.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items(sku TEXT PRIMARY KEY)")
    conn.execute("CREATE INDEX items_idx ON items(sku)")
    conn.commit()
    conn.close()
    with pytest.raises(ForeignDatabaseError, match=r"another program.*already holds items, items_idx.*left untouched"):
        TaskStore(url=f"sqlite:///{path}")


@pytest.mark.parametrize("content", [b"", None], ids=["empty-file", "missing-file"])
def test_an_empty_or_missing_file_is_still_created_and_stamped(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "fresh.sqlite"
    if content is not None:
        path.write_bytes(content)
    with TaskStore(url=f"sqlite:///{path}") as store:
        store.save(TaskInfo("t", "sim"))
        assert store.schema_info()["application_id"] == "0x554E4943"


def test_a_file_of_ours_downgraded_to_base_opens_again(tmp_path: Path) -> None:
    TaskStore(tmp_path).close()
    schema.downgrade("base", cache_dir=tmp_path)
    with TaskStore(tmp_path) as store:
        assert store.schema_info()["revision"] == schema.HEAD_REVISION


def test_clear_all_refuses_to_delete_another_programs_file_moved_onto_the_path(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.save(TaskInfo("t", "sim"))
    (tmp_path / DB_FILENAME).unlink()  # another program replaces the file while the store is open
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("PRAGMA application_id = 305419896")
    conn.execute("CREATE TABLE notes(body TEXT)")
    conn.commit()
    conn.close()
    before = {name: digest for name, digest in snapshot(tmp_path).items() if name == DB_FILENAME}
    with pytest.raises(ForeignDatabaseError):
        store.count()
    with pytest.raises(ForeignDatabaseError):
        store.clear_all()
    assert {name: digest for name, digest in snapshot(tmp_path).items() if name == DB_FILENAME} == before


def test_a_fifo_at_the_path_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / DB_FILENAME)
    with pytest.raises(NotADatabaseError, match="not a regular file"):
        TaskStore(tmp_path)
    assert cli.main(["--cache-dir", str(tmp_path), "info"]) == 2


def test_a_view_named_tasks_on_a_server_is_refused_untouched(db_url: str, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("servers: on SQLite any object makes an unstamped file foreign")
    raw_execute(db_url, "CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    raw_execute(db_url, "CREATE VIEW tasks AS SELECT id FROM orders")
    with pytest.raises(DatabaseRefusedError, match="already has a table named 'tasks'"):
        TaskStore(url=db_url)
    engine = create_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == {"orders"}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("task_id TEXT PRIMARY KEY", "task_id TEXT COLLATE NOCASE PRIMARY KEY"),
        ("status TEXT NOT NULL", "status TEXT NOT NULL CHECK (status <> 'success')"),
        ("CREATE INDEX IF NOT EXISTS tasks_backend_idx ON tasks(backend);",
         "CREATE INDEX IF NOT EXISTS tasks_backend_idx ON tasks(backend);\n"
         "CREATE TRIGGER wipe AFTER INSERT ON tasks BEGIN DELETE FROM tasks WHERE task_id <> NEW.task_id; END;"),
    ],
    ids=["nocase-ids", "check-constraint", "trigger"],
)
def test_a_versioned_file_whose_sql_differs_in_what_no_pragma_shows_is_refused(
    tmp_path: Path, before: str, after: str
) -> None:
    from uniqc_files import APPLICATION_ID, V1_DDL

    assert before in V1_DDL
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.executescript(V1_DDL.replace(before, after))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    snapshot_before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError, match="not uniqc's layout"):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == snapshot_before
