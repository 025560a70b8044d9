"""The SQLite file: uniqc's exact layout and header, adoption of uniqc's files, refusals.

(Files written by uniqc's released code itself are in test_uniqc_interop.py.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from uniqc_store import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    DB_FILENAME,
    HEAD_REVISION,
    ForeignDatabaseError,
    NotADatabaseError,
    SchemaTooNewError,
    TaskInfo,
    TaskStore,
    schema,
)
from uniqc_store.versions import LAYOUTS, UNIQC_TABLES, differences, store_layout

from test_migrations import NEXT_REVISION
from uniqc_files import (
    V1_DDL,
    assert_file_and_wal_unchanged,
    header,
    open_with_the_store,
    rows_of,
    snapshot,
    sqlite_layout,
    table_names,
    upgrade_with_the_library,
    v1_rows_through_legacy_ids,
    wal_file_with_a_hot_wal,
    write_foreign_file,
    write_uniqc_v1_file,
)


def test_a_new_file_has_exactly_uniqcs_layout_of_the_current_version(tmp_path: Path) -> None:
    TaskStore(tmp_path).close()
    path = tmp_path / DB_FILENAME
    assert set(LAYOUTS[CURRENT_SCHEMA_VERSION]) == set(UNIQC_TABLES)
    # uniqc's layout, plus this library's own indexes (which uniqc never looks at).
    assert sqlite_layout(path) == store_layout(CURRENT_SCHEMA_VERSION)
    assert differences(sqlite_layout(path), CURRENT_SCHEMA_VERSION) == []
    # Nothing else but the version table, which uniqc never looks at either.
    assert table_names(path) == {*UNIQC_TABLES, "uniqc_store_version"}


def test_revision_0001_lays_out_exactly_what_uniqcs_v1_ddl_does(tmp_path: Path) -> None:
    schema.upgrade("0001", cache_dir=tmp_path / "ours")
    reference = tmp_path / "uniqc.sqlite"
    conn = sqlite3.connect(reference)
    conn.executescript(V1_DDL)
    conn.close()
    assert sqlite_layout(tmp_path / "ours" / DB_FILENAME) == sqlite_layout(reference) == LAYOUTS[1]
    assert [(c.name, c.type) for c in LAYOUTS[1]["tasks"].columns] == [
        ("task_id", "TEXT"), ("backend", "TEXT"), ("status", "TEXT"), ("shots", "INTEGER"),
        ("submit_time", "TEXT"), ("update_time", "TEXT"), ("result_json", "TEXT"), ("metadata_json", "TEXT"),
    ]


@pytest.mark.parametrize("version", range(1, CURRENT_SCHEMA_VERSION + 1), ids=lambda v: f"v{v}")
def test_each_revision_lays_out_uniqcs_layout_of_its_version(tmp_path: Path, version: int) -> None:
    schema.upgrade(f"{version:04d}", cache_dir=tmp_path)
    assert header(tmp_path / DB_FILENAME) == (APPLICATION_ID, version)
    assert sqlite_layout(tmp_path / DB_FILENAME) == LAYOUTS[version]


def test_a_new_file_is_stamped_unic_at_the_current_version_in_wal_mode(sqlite_store: TaskStore) -> None:
    assert header(sqlite_store.db_path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    conn = sqlite3.connect(sqlite_store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # The head of this library's own branch, which depends on (and so stands for) uniqc's head too.
    assert conn.execute("SELECT version_num FROM uniqc_store_version").fetchall() == [(schema.STORE_HEAD,)]
    assert schema.STORE_REVISIONS[schema.STORE_HEAD] == HEAD_REVISION
    conn.close()


def test_a_file_written_by_uniqc_is_adopted_and_its_tasks_keep_their_data_under_uniqc_ids(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    written = write_uniqc_v1_file(path, rows=7)
    with TaskStore(tmp_path) as store:
        assert store.count() == 7
        assert store.get("uniqc-2") is None  # schema v5 gave every legacy task a uqt_ id
        (got,) = [task for task in store.list() if task.metadata.get("legacy_platform_id") == "uniqc-2"]
        assert got.task_id.startswith("uqt_")
        assert (got.backend, got.status, got.shots, got.result) == (
            "originq:wuyuan", "failed", 1026, {"00": 2, "11": 7}
        )
        assert got.metadata == {"circuit": "bell", "n": 2, "label": "ñ", "legacy_platform_id": "uniqc-2"}
        assert store.schema_info()["revision"] == HEAD_REVISION
    assert v1_rows_through_legacy_ids(path) == sorted(written)
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)


def test_what_we_write_uniqc_reads_with_plain_sqlite3(sqlite_store: TaskStore) -> None:
    sqlite_store.save(TaskInfo("t-1", "sim", status="success", result={"00": 1}, shots=9, metadata={"q": "é"}))
    sqlite_store.save(TaskInfo("t-2", "sim", status="failed", error_message="超时"))
    conn = sqlite3.connect(sqlite_store.db_path)
    rows = conn.execute("SELECT * FROM tasks ORDER BY task_id").fetchall()
    conn.close()
    assert rows[0][:4] == ("t-1", "sim", "success", 9)
    assert rows[0][6:] == ('{"00": 1}', '{"q": "é"}', None)
    assert rows[1][6:] == (None, "{}", "超时")


@pytest.mark.parametrize("application_id", [0x12345678, 1, -1], ids=["other-app", "small", "negative"])
def test_a_foreign_file_is_refused_byte_for_byte_untouched(tmp_path: Path, application_id: int) -> None:
    write_foreign_file(tmp_path / DB_FILENAME, application_id)
    before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError) as caught:
        TaskStore(tmp_path)
    assert isinstance(caught.value, RuntimeError)
    assert f"0x{application_id & 0xFFFFFFFF:08X}" in str(caught.value) and "0x554E4943" in str(caught.value)
    assert snapshot(tmp_path) == before  # same bytes, and no -wal/-shm/-journal left behind
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a database\n" * 40, os.urandom(8192), b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["text", "random", "broken-header"],
)
def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    (tmp_path / DB_FILENAME).write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(NotADatabaseError, match="not an SQLite database"):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_file_from_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    write_uniqc_v1_file(path, wal=False)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(
        SchemaTooNewError, match=rf"user_version 7.*schema version {CURRENT_SCHEMA_VERSION}.*Upgrade uniqc_store"
    ):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_file_at_an_unknown_newer_revision_is_refused_untouched(tmp_path: Path) -> None:
    # Written by another process, so that no connection of this one stays open on the file.
    code = f"from uniqc_store import TaskStore, TaskInfo; TaskStore({str(tmp_path)!r}).save(TaskInfo('t', 'sim'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"UPDATE uniqc_store_version SET version_num = '{NEXT_REVISION}'")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(SchemaTooNewError, match=f"revision '{NEXT_REVISION}'"):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == before


def test_clear_all_deletes_the_file_and_its_siblings(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.save(TaskInfo("t", "sim"))
    (tmp_path / f"{DB_FILENAME}-journal").write_bytes(b"")  # a stale journal, as a crash leaves
    store.clear_all()
    assert sorted(os.listdir(tmp_path)) == []
    assert store.get("t") is None
    assert header(tmp_path / DB_FILENAME) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)


def test_clear_all_leaves_no_store_of_the_process_writing_into_the_deleted_file(tmp_path: Path) -> None:
    first, second = TaskStore(tmp_path), TaskStore(tmp_path)
    second.save(TaskInfo("before", "sim"))
    first.clear_all()
    second.save(TaskInfo("after", "sim"))
    with TaskStore(tmp_path) as third:
        assert [t.task_id for t in third.list()] == ["after"]
    assert [r[0] for r in rows_of(tmp_path / DB_FILENAME)] == ["after"]


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_the_cache_directory_and_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        cache = tmp_path / "a" / "cache"
        with TaskStore(cache) as store:
            store.save(TaskInfo("t", "sim"))
            names = sorted(os.listdir(cache))
            modes = {name: os.stat(cache / name).st_mode & 0o777 for name in names}
    finally:
        os.umask(old)
    assert names == [DB_FILENAME, f"{DB_FILENAME}-shm", f"{DB_FILENAME}-wal"]
    assert set(modes.values()) == {0o600}
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert os.stat(cache.parent).st_mode & 0o777 == 0o700


def test_the_default_location_is_under_home(isolated_home: Path) -> None:
    with TaskStore() as store:
        store.save(TaskInfo("t", "sim"))
        assert store.db_path == isolated_home / ".uniqc" / "cache" / DB_FILENAME
        assert store.cache_dir == isolated_home / ".uniqc" / "cache"
    assert header(isolated_home / ".uniqc" / "cache" / DB_FILENAME)[0] == APPLICATION_ID


def test_uniqc_store_url_names_the_database_when_no_argument_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIQC_STORE_URL", f"sqlite:///{tmp_path}/elsewhere.sqlite")
    with TaskStore() as store:
        assert store.db_path == tmp_path / "elsewhere.sqlite"
        assert store.url == f"sqlite:///{tmp_path}/elsewhere.sqlite"
    assert (tmp_path / "elsewhere.sqlite").exists()


def test_clear_all_reaches_stores_that_name_the_same_file_another_way(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    by_dir = TaskStore(tmp_path / "real")
    by_link = TaskStore(url=f"sqlite:///{tmp_path / 'link' / DB_FILENAME}")
    by_link.save(TaskInfo("before", "sim"))
    by_dir.clear_all()
    by_link.save(TaskInfo("after", "sim"))
    assert [r[0] for r in rows_of(tmp_path / "real" / DB_FILENAME)] == ["after"]
    assert by_link.db_path == by_dir.db_path




@pytest.mark.parametrize(
    "opener", [open_with_the_store, upgrade_with_the_library], ids=["TaskStore", "schema.upgrade"]
)
@pytest.mark.parametrize("header_in_wal", [False, True], ids=["header-in-file", "header-in-wal"])
@pytest.mark.parametrize(
    ("application_id", "user_version", "error"),
    [(0x0BADF00D, 0, ForeignDatabaseError), (APPLICATION_ID, 9, SchemaTooNewError)],
    ids=["foreign", "too-new"],
)
def test_a_refused_file_in_wal_mode_keeps_its_wal_and_its_bytes(
    tmp_path: Path, application_id: int, user_version: int, error: type, header_in_wal: bool, opener
) -> None:
    wal_file_with_a_hot_wal(
        tmp_path / DB_FILENAME, application_id=application_id, user_version=user_version, header_in_wal=header_in_wal
    )
    before = snapshot(tmp_path)
    assert f"{DB_FILENAME}-wal" in before
    with pytest.raises(error):
        opener(tmp_path)
    assert_file_and_wal_unchanged(tmp_path, before)


def test_a_file_left_with_loose_permissions_is_made_private_once_found_ours(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    write_uniqc_v1_file(path)
    os.chmod(path, 0o644)
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("t", "sim"))
        assert {name: os.stat(tmp_path / name).st_mode & 0o777 for name in os.listdir(tmp_path)} == {
            DB_FILENAME: 0o600, f"{DB_FILENAME}-wal": 0o600, f"{DB_FILENAME}-shm": 0o600,
        }


def test_schema_info_after_clear_all_reports_a_fresh_private_file_at_head(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = TaskStore(tmp_path)
        store.clear_all()
        info = store.schema_info()
    finally:
        os.umask(old)
    assert (info["revision"], info["user_version"]) == (HEAD_REVISION, CURRENT_SCHEMA_VERSION)
    assert os.stat(tmp_path / DB_FILENAME).st_mode & 0o777 == 0o600


def test_a_file_deleted_by_another_program_is_recreated_not_written_blindly(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.save(TaskInfo("before", "sim"))
    for name in os.listdir(tmp_path):  # what uniqc's own clear_all does, from another process
        os.unlink(tmp_path / name)
    store.save(TaskInfo("after", "sim"))
    assert [r[0] for r in rows_of(tmp_path / DB_FILENAME)] == ["after"]
    with TaskStore(tmp_path) as other:
        assert [t.task_id for t in other.list()] == ["after"]


def test_a_file_upgraded_by_a_newer_program_meanwhile_is_refused_on_the_next_open(tmp_path: Path) -> None:
    TaskStore(tmp_path).save(TaskInfo("t", "sim"))
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {CURRENT_SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match=f"user_version {CURRENT_SCHEMA_VERSION + 1}"):
        TaskStore(tmp_path)


def test_every_spelling_of_a_file_shares_one_database(tmp_path: Path) -> None:
    a = TaskStore(tmp_path)
    b = TaskStore(url=f"sqlite+pysqlite:///{tmp_path}/./{DB_FILENAME}")
    b.save(TaskInfo("before", "sim"))
    a.clear_all()
    b.save(TaskInfo("after", "sim"))
    assert [r[0] for r in rows_of(tmp_path / DB_FILENAME)] == ["after"]
    assert b.url == a.url == f"sqlite:///{tmp_path / DB_FILENAME}"


@pytest.mark.parametrize(
    "ddl", ["CREATE TABLE other(x)", "CREATE TABLE tasks(id INTEGER PRIMARY KEY, title TEXT, done INTEGER)"],
    ids=["no-tasks-table", "a-todo-apps-tasks-table"],
)
def test_a_file_claiming_a_version_without_uniqcs_tasks_table_is_refused_untouched(tmp_path: Path, ddl: str) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(ddl)
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(ForeignDatabaseError, match=r"user_version 1 but not uniqc's layout for it \(table tasks"):
        TaskStore(tmp_path)
    assert snapshot(tmp_path) == before
    # Doing what the message says — moving the file away — gives a working store at once.
    (tmp_path / DB_FILENAME).rename(tmp_path.parent / f"{tmp_path.name}-moved.sqlite")
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("t", "sim"))
        assert store.count() == 1


def test_store_connections_commit_with_full_synchronous_durability(sqlite_store: TaskStore) -> None:
    # Every save must be on disk when it returns (WAL + synchronous=FULL, as uniqc's store).
    raw = sqlite_store._db.engine.raw_connection()
    try:
        assert raw.cursor().execute("PRAGMA synchronous").fetchone() == (2,)
        raw.cursor().execute("SELECT count(*) FROM tasks").fetchone()  # a read picks up WAL mode
        assert raw.cursor().execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_a_schema_migrated_by_another_program_while_in_use_gets_no_rows_of_ours(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.save(TaskInfo("before", "sim"))
    newer = CURRENT_SCHEMA_VERSION + 1
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(f"PRAGMA user_version = {newer}")  # a newer uniqc migrated the file meanwhile
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match=f"changed to user_version {newer} while in use"):
        store.save(TaskInfo("after", "sim"))
    with pytest.raises(SchemaTooNewError):
        store.save(TaskInfo("after", "sim"))
    assert [r[0] for r in rows_of(tmp_path / DB_FILENAME)] == ["before"]


@pytest.mark.parametrize("header_in_wal", [False, True], ids=["header-in-file", "header-in-wal"])
def test_the_cli_upgrade_refuses_a_foreign_wal_file_keeping_its_bytes(tmp_path: Path, header_in_wal: bool) -> None:
    from uniqc_store import cli

    wal_file_with_a_hot_wal(
        tmp_path / DB_FILENAME, application_id=0x0BADF00D, user_version=0, header_in_wal=header_in_wal
    )
    before = snapshot(tmp_path)
    assert cli.main(["--cache-dir", str(tmp_path), "upgrade"]) == 2
    assert_file_and_wal_unchanged(tmp_path, before)
