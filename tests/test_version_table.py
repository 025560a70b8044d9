"""Where the store keeps its Alembic revision: a table of its own (``uniqc_store_version``), so
that a server database shared with an application that has its own Alembic history keeps both
apart; databases written by uniqc_store 0.1.0 (``alembic_version``) open and are moved over."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from uniqc_store import DatabaseRefusedError, SchemaTooNewError, TaskInfo, TaskStore
from uniqc_store.schema import HEAD_REVISION, LEGACY_VERSION_TABLE, STORE_HEAD, VERSION_TABLE

from dbutil import raw_execute, raw_rows, tables_at
from test_migrations import _alembic
from uniqc_files import write_uniqc_v1_file


def _created_by_another_process(url: str, *task_ids: str) -> None:
    """Create the store's schema (and tasks) from a child process: this process must not know
    the database yet, as a process that finds a database at head trusts its revision after."""
    code = (
        "import sys\nfrom uniqc_store import TaskInfo, TaskStore\n"
        "with TaskStore(url=sys.argv[1]) as store:\n"
        "    for task_id in sys.argv[2:]:\n        store.save(TaskInfo(task_id, 'sim'))\n"
    )
    subprocess.run([sys.executable, "-c", code, url, *task_ids], check=True, timeout=120)


def _as_written_by_0_1_0(url: str, revision: str) -> None:
    """Move the revision into alembic_version, where uniqc_store 0.1.0 kept it."""
    raw_execute(
        url,
        f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO {LEGACY_VERSION_TABLE} VALUES ('{revision}')",
        f"DROP TABLE {VERSION_TABLE}",
    )


@pytest.fixture
def server_url(db_url: str, backend: str) -> str:
    if backend == "sqlite":
        pytest.skip("an SQLite file holds one program's data; sharing is for servers")
    return db_url


def test_a_database_shared_with_another_alembic_application_keeps_both_histories(server_url: str) -> None:
    raw_execute(
        server_url,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(50))",
        f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO {LEGACY_VERSION_TABLE} VALUES ('ae1027a6acf')",
    )
    with TaskStore(url=server_url) as store:
        store.save(TaskInfo("t", "sim"))
        assert store.schema_info()["revision"] == HEAD_REVISION
    assert raw_rows(server_url, f"SELECT version_num FROM {LEGACY_VERSION_TABLE}") == [("ae1027a6acf",)]
    assert raw_rows(server_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(STORE_HEAD,)]
    with TaskStore(url=server_url) as store:  # and again, on a database now at head
        assert store.get("t") is not None


def test_another_applications_own_tasks_table_is_refused_untouched(server_url: str) -> None:
    raw_execute(server_url, "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    with pytest.raises(DatabaseRefusedError, match="already has a table named 'tasks'") as raised:
        TaskStore(url=server_url)
    assert "Upgrade uniqc_store" not in str(raised.value)
    assert tables_at(server_url) == {"tasks"}


def _at_revision_0001_by_another_process(url: str) -> None:
    """The database as uniqc_store 0.1.0 made it (its only revision, 0001), with one task."""
    code = "import sys\nfrom uniqc_store import schema\nschema.upgrade('0001', url=sys.argv[1])\n"
    subprocess.run([sys.executable, "-c", code, url], check=True, timeout=120)
    raw_execute(
        url,
        "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, metadata_json) "
        "VALUES ('kept', 'sim', 'pending', 1, '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00', '{}')",
    )


def test_a_database_written_by_uniqc_store_0_1_0_opens_and_moves_its_revision(db_url: str) -> None:
    _at_revision_0001_by_another_process(db_url)
    _as_written_by_0_1_0(db_url, "0001")
    current = _alembic(["-x", f"url={db_url}", "current"], {})
    assert current.returncode == 0 and "0001" in current.stdout, current.stderr
    assert LEGACY_VERSION_TABLE in tables_at(db_url)  # 'current' only reads
    with TaskStore(url=db_url) as store:
        parent = store.find_uniqc_id_by_platform_id("kept")  # revision 0005 gave it a uniqc id
        assert parent is not None and store.get(parent).metadata == {"legacy_platform_id": "kept"}
        assert store.schema_info()["revision"] == HEAD_REVISION
    assert LEGACY_VERSION_TABLE not in tables_at(db_url)
    assert raw_rows(db_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(STORE_HEAD,)]


@pytest.mark.parametrize(
    ("recorded", "error", "message"),
    [
        ("ae1027a6acf", DatabaseRefusedError, r"holds \['ae1027a6acf'\], which is not a revision of uniqc_store"),
        ("0099", SchemaTooNewError, r"revision '0099', newer than this uniqc_store knows"),
    ],
    ids=["foreign-revision", "newer-revision"],
)
def test_a_version_table_with_a_revision_we_do_not_know_is_refused_with_the_right_advice(
    db_url: str, recorded: str, error: type, message: str
) -> None:
    _created_by_another_process(db_url)
    raw_execute(db_url, f"UPDATE {VERSION_TABLE} SET version_num = '{recorded}'")
    with pytest.raises(error, match=message) as raised:
        TaskStore(url=db_url)
    assert ("Upgrade uniqc_store" in str(raised.value)) == (error is SchemaTooNewError)
    assert raw_rows(db_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(recorded,)]


def test_the_alembic_command_line_refuses_sql_mode_in_one_line(tmp_path: Path) -> None:
    done = _alembic(["-x", f"url=sqlite:///{tmp_path / 'tasks.sqlite'}", "upgrade", "head", "--sql"], {})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "offline (--sql) migrations are not supported" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["current", "check"])
def test_read_only_alembic_commands_create_nothing_where_there_is_no_database(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "not" / "there" / "tasks.sqlite"
    done = _alembic(["-x", f"url=sqlite:///{missing}", command], {})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"there is no database at {missing}" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_alembic_current_on_a_uniqc_file_in_rollback_mode_leaves_its_journal_mode(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite"
    write_uniqc_v1_file(path, wal=False)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
    before = path.read_bytes()
    done = _alembic(["-x", f"url=sqlite:///{path}", "current"], {})
    assert done.returncode == 0, done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.sqlite"]


def test_another_programs_alembic_revision_0001_beside_its_own_tasks_table_is_not_taken_for_ours(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    statements = (
        f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        f"INSERT INTO {LEGACY_VERSION_TABLE} VALUES ('0001')",
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title VARCHAR(50), done INTEGER)",
        "INSERT INTO tasks (id, title, done) VALUES (1, 'buy milk', 0)",
    )
    if backend == "sqlite":
        path = tmp_path / "todo.db"
        conn = sqlite3.connect(path)
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
        before = path.read_bytes()
        with pytest.raises(DatabaseRefusedError, match="another program"):
            TaskStore(url=f"sqlite:///{path}")
        assert path.read_bytes() == before
        return
    raw_execute(db_url, *statements)
    with pytest.raises(DatabaseRefusedError, match="already has a table named 'tasks'"):
        TaskStore(url=db_url)
    assert raw_rows(db_url, f"SELECT version_num FROM {LEGACY_VERSION_TABLE}") == [("0001",)]
    assert tables_at(db_url) == {LEGACY_VERSION_TABLE, "tasks"}


@pytest.mark.parametrize(
    "recorded",
    ["01", "1", "\u0661\u0662\u0663\u0664", "\u00b2\u00b2\u00b2\u00b2"],
    ids=["short", "one-digit", "arabic-digits", "superscripts"],
)
def test_a_revision_that_only_looks_numeric_is_refused_as_not_ours(db_url: str, recorded: str) -> None:
    _created_by_another_process(db_url)
    raw_execute(db_url, f"UPDATE {VERSION_TABLE} SET version_num = '{recorded}'")
    with pytest.raises(DatabaseRefusedError, match="not a revision of uniqc_store"):
        TaskStore(url=db_url)
