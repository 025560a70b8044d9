"""Alembic revisions and the header hook: pytest-alembic's checklist, on every backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from uniqc_store import (
    APPLICATION_ID,
    CURRENT_SCHEMA_VERSION,
    DB_FILENAME,
    HEAD_REVISION,
    ForeignDatabaseError,
    MigrationError,
    SchemaTooNewError,
    TaskInfo,
    TaskStore,
    schema,
)

from conftest import create_server_database
from dbutil import raw_rows, tables_at
from uniqc_files import header, v1_rows_through_legacy_ids, write_foreign_file, write_uniqc_v1_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The id of a revision one past what the library knows, as a test adds it on top of head.
NEXT_REVISION = f"{CURRENT_SCHEMA_VERSION + 1:04d}"


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(schema.alembic_config())


def revisions_in_order() -> list[str]:
    """Every revision, each after what it revises or depends on (uniqc's schema, then the branch)."""
    return [r.revision for r in reversed(list(script().walk_revisions()))]


def schema_revisions() -> list[str]:
    return [revision for revision in revisions_in_order() if revision not in schema.STORE_REVISIONS]


#: What the version table holds at head, and with one more revision of uniqc's schema on top.
HEAD_ROWS = tuple(sorted(schema.HEAD_ROWS))
NEXT_ROWS = (NEXT_REVISION, schema.STORE_HEAD)




def state(url: str) -> tuple:
    """(the version table's rows, sorted; user_version or None) as the database says."""
    present = "uniqc_store_version" in tables_at(url)
    rows = raw_rows(url, "SELECT version_num FROM uniqc_store_version") if present else []
    user_version = None
    if url.startswith("sqlite"):
        user_version = raw_rows(url, "PRAGMA user_version")[0][0]
    return tuple(sorted(row[0] for row in rows)), user_version


def expected_user_version(url: str, *rows: str) -> int | None:
    """uniqc's schema version of a database whose version table holds ``rows``: the highest
    revision of uniqc's schema among them and what the branch's revisions depend on."""
    versions = [int(schema.STORE_REVISIONS.get(row, row)) for row in rows]
    return max(versions, default=0) if url.startswith("sqlite") else None


def test_a_single_head_the_librarys_own_branch_forking_from_uniqcs_head_and_the_library_knows_it() -> None:
    assert script().get_heads() == [schema.STORE_HEAD]
    assert int(HEAD_REVISION) == CURRENT_SCHEMA_VERSION
    branch = [script().get_revision(revision) for revision in schema.STORE_REVISIONS]
    # One chain, forking from the revision of uniqc's schema the library says it forks from.
    assert [r.down_revision for r in branch] == [
        schema.STORE_REVISIONS["s001"], *(r.revision for r in branch[:-1])
    ]
    assert set(schema.STORE_REVISIONS.values()) == {HEAD_REVISION}
    assert all(r.branch_labels == {schema.STORE_BRANCH} for r in branch)
    assert script().get_revision(f"{schema.STORE_BRANCH}@head").revision == schema.STORE_HEAD
    # Each creates the index the library expects of it (its checks and the model say the same).
    for revision in branch:
        table, name = schema.STORE_INDEX_REVISIONS[revision.revision]
        assert (table, name) == (revision.module.TABLE, revision.module.NAME)
        assert schema.list_indexes(table, "postgresql")[name] == (*revision.module.COLUMNS, "seq")
        assert schema.list_indexes(table, "sqlite").get(name) in (revision.module.COLUMNS, None)


def test_revision_ids_are_consecutive_zero_padded_integers_then_the_branchs_own() -> None:
    revisions = schema_revisions()
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert list(schema.STORE_REVISIONS) == [f"s{n:03d}" for n in range(1, len(schema.STORE_REVISIONS) + 1)]
    for revision in script().walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")


def test_base_to_head_and_back(db_url: str) -> None:
    schema.upgrade(url=db_url)
    assert state(db_url) == (HEAD_ROWS, expected_user_version(db_url, *HEAD_ROWS))
    assert "tasks" in tables_at(db_url)
    schema.downgrade("base", url=db_url)
    assert state(db_url) == ((), expected_user_version(db_url))
    assert "tasks" not in tables_at(db_url)


def test_the_stairway_each_revision_up_down_and_up_again(db_url: str) -> None:
    previous: tuple[str, ...] = ()
    for revision in revisions_in_order():  # each branch revision runs after what it depends on
        schema.upgrade(revision, url=db_url)
        assert state(db_url) == ((revision,), expected_user_version(db_url, revision))
        schema.downgrade(previous[0] if previous else "base", url=db_url)
        assert state(db_url) == (previous, expected_user_version(db_url, *previous))
        schema.upgrade(revision, url=db_url)
        assert state(db_url) == ((revision,), expected_user_version(db_url, revision))
        previous = (revision,)


def test_alembic_check_finds_no_drift_between_the_model_and_the_revisions(db_url: str) -> None:
    schema.upgrade(url=db_url)
    # Through the command line's path: env.py opens the database named by -x url=.
    out = _alembic(["-x", f"url={db_url}", "check"], {})
    assert out.returncode == 0, out.stderr
    assert "No new upgrade operations detected" in out.stdout + out.stderr


def test_the_header_hook_stamps_application_id_and_user_version_on_every_step(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / DB_FILENAME}"
    schema.upgrade(url=url)
    assert header(tmp_path / DB_FILENAME) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    schema.downgrade("base", url=url)
    assert header(tmp_path / DB_FILENAME) == (APPLICATION_ID, 0)


def _scripts_with(tmp_path: Path, body: str) -> Path:
    """A copy of the bundled revisions plus a revision :data:`NEXT_REVISION` on top of head, with
    ``body`` as its upgrade()."""
    scripts = tmp_path / "scripts"
    shutil.copytree(schema.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    upgrade_body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    (scripts / "versions" / f"{NEXT_REVISION}_extra.py").write_text(
        '"""A revision made by the test suite."""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f'revision = "{NEXT_REVISION}"\ndown_revision = "{HEAD_REVISION}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{upgrade_body}\n\n\n"
        'def downgrade():\n    op.drop_table("extra")\n'
    )
    return scripts


FAILING = f"""
op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))
op.execute("INSERT INTO extra (id) VALUES (1)")
op.execute("UPDATE tasks SET backend = 'clobbered'")
raise RuntimeError("revision {NEXT_REVISION} failed half-way")
"""


def test_a_failing_revision_is_rolled_back_completely(db_url: str, backend: str, tmp_path: Path) -> None:
    if backend == "mysql":
        pytest.skip("MySQL/MariaDB commit DDL implicitly: a failing revision cannot be rolled back there")
    with TaskStore(url=db_url) as store:
        store.save(TaskInfo("t", "sim"))
    before = (state(db_url), tables_at(db_url), raw_rows(db_url, "SELECT task_id, backend FROM tasks"))
    with pytest.raises(MigrationError, match=rf"rolled back completely.*revision {NEXT_REVISION} failed half-way"):
        schema.upgrade(url=db_url, script_dir=_scripts_with(tmp_path, FAILING))
    assert (state(db_url), tables_at(db_url), raw_rows(db_url, "SELECT task_id, backend FROM tasks")) == before
    with TaskStore(url=db_url) as store:
        assert store.get("t").backend == "sim"


FAILING_AFTER_DDL = f"""
op.execute(
    "INSERT INTO tasks (task_id, backend, status, submit_time, update_time) "
    "VALUES ('by-{NEXT_REVISION}', 'sim', 'pending', 't', 't')"
)
op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))
op.add_column("tasks", sa.Column("note", sa.Text))
raise RuntimeError("revision {NEXT_REVISION} failed half-way")
"""


def test_a_failing_revision_on_mysql_is_reported_as_partly_committed(tmp_path: Path) -> None:
    url, drop = create_server_database("mysql")
    try:
        TaskStore(url=url).close()
        with pytest.raises(MigrationError) as caught:
            schema.upgrade(url=url, script_dir=_scripts_with(tmp_path, FAILING_AFTER_DDL))
        message = str(caught.value)
        assert f"revision {NEXT_REVISION} failed half-way" in message
        assert "rolled back completely" not in message and "could not be rolled back" in message
        assert "may have been committed" in message and "data changes" in message
        assert f"{schema.VERSION_TABLE} still names revision {schema.STORE_HEAD}" in message
        assert "repair it by hand" in message and "restore a backup" in message
        # What it says is what happened: the row, the table and the column stayed, the version did not move.
        assert state(url) == (HEAD_ROWS, None)
        assert "extra" in tables_at(url)
        columns = raw_rows(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'tasks'",
        )
        assert "note" in [column for (column,) in columns]
        assert raw_rows(url, "SELECT task_id FROM tasks") == [(f"by-{NEXT_REVISION}",)]
    finally:
        drop()


def test_a_failure_in_a_later_revision_keeps_the_earlier_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / DB_FILENAME}"
    with pytest.raises(MigrationError):
        schema.upgrade(url=url, script_dir=_scripts_with(tmp_path, FAILING))
    assert state(url) == (HEAD_ROWS, CURRENT_SCHEMA_VERSION)
    assert "extra" not in tables_at(url)


def test_a_database_upgraded_past_what_the_library_knows_is_then_refused(db_url: str, tmp_path: Path) -> None:
    extra_table = 'op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))'
    schema.upgrade(url=db_url, script_dir=_scripts_with(tmp_path, extra_table))
    newer = (NEXT_ROWS, expected_user_version(db_url, *NEXT_ROWS))
    assert state(db_url) == newer
    before = tables_at(db_url)
    with pytest.raises(SchemaTooNewError, match="Upgrade uniqc_store"):
        TaskStore(url=db_url)
    assert state(db_url) == newer and tables_at(db_url) == before


def test_opening_a_database_at_head_loads_no_alembic_code(tmp_path: Path) -> None:
    TaskStore(tmp_path).close()
    code = (
        "import sys\n"
        "from uniqc_store import TaskStore\n"
        f"s = TaskStore({str(tmp_path)!r}); s.count()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def _alembic(args: list[str], env: dict[str, str], cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    alembic = Path(sys.executable).with_name("alembic")
    full_env = {key: value for key, value in os.environ.items() if key != "UNIQC_STORE_URL"}
    full_env.update(env)
    return subprocess.run([str(alembic), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=full_env)


def test_the_alembic_command_line_upgrades_reports_and_downgrades(db_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return _alembic(["-x", f"url={db_url}", *args], {})

    assert run("upgrade", "head").returncode == 0
    current = run("current")
    assert current.returncode == 0 and f"{schema.STORE_HEAD} (head)" in current.stdout
    assert run("check").returncode == 0
    assert run("downgrade", HEAD_REVISION).returncode == 0  # the library's own indexes go
    assert state(db_url) == ((HEAD_REVISION,), expected_user_version(db_url, HEAD_REVISION))
    assert run("downgrade", "base").returncode == 0
    assert state(db_url) == ((), expected_user_version(db_url))
    assert run("upgrade", "heads").returncode == 0  # (the same, while there is one head)
    with TaskStore(url=db_url) as store:
        store.save(TaskInfo("t", "sim"))
        assert store.count() == 1


def test_the_alembic_command_line_uses_the_environment_then_the_default_file(
    tmp_path: Path, isolated_home: Path
) -> None:
    env_file = tmp_path / "from-env.sqlite"
    out = _alembic(["upgrade", "head"], {"HOME": str(isolated_home), "UNIQC_STORE_URL": f"sqlite:///{env_file}"})
    assert out.returncode == 0, out.stderr
    assert header(env_file) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    out = _alembic(["upgrade", "head"], {"HOME": str(isolated_home)})
    assert out.returncode == 0, out.stderr
    default = isolated_home / ".uniqc" / "cache" / DB_FILENAME
    assert header(default) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert os.stat(default.parent).st_mode & 0o777 == 0o700


def test_alembic_upgrade_adopts_a_file_written_by_uniqc(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    written = write_uniqc_v1_file(path, rows=5)
    before = path.read_bytes()
    out = _alembic(["-x", f"url=sqlite:///{path}", "current"], {})
    assert out.returncode == 0 and path.read_bytes() == before  # 'current' writes nothing
    assert "uniqc_store_version" not in tables_at(f"sqlite:///{path}")
    out = _alembic(["-x", f"url=sqlite:///{path}", "upgrade", "head"], {})
    assert out.returncode == 0, out.stderr
    # Adopted at 0001 (no revision creates uniqc's tasks table again), then upgraded from there.
    assert "Running upgrade  -> 0001" not in out.stderr and "Running upgrade 0001 -> 0002" in out.stderr
    assert state(f"sqlite:///{path}") == (HEAD_ROWS, CURRENT_SCHEMA_VERSION)
    assert v1_rows_through_legacy_ids(path) == sorted(written)


def test_the_alembic_command_line_refuses_a_foreign_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "foreign.sqlite"
    write_foreign_file(path, 42)
    before = path.read_bytes()
    out = _alembic(["-x", f"url=sqlite:///{path}", "upgrade", "head"], {})
    assert out.returncode != 0
    assert "0x0000002A" in out.stderr and "0x554E4943" in out.stderr
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["foreign.sqlite"]


def _upgrade_with_a_connection_of_ones_own(url: str, script_dir: Path | None = None) -> None:
    # The embedding the style guide describes: a Config built in code, a connection passed in.
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            command.upgrade(schema.alembic_config(conn, script_dir=script_dir), "heads")
    finally:
        engine.dispose()


def test_command_upgrade_with_a_connection_of_ones_own_migrates_that_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / DB_FILENAME}"
    _upgrade_with_a_connection_of_ones_own(url)
    assert state(url) == (HEAD_ROWS, CURRENT_SCHEMA_VERSION)


def test_command_upgrade_with_a_connection_of_ones_own_still_refuses_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    write_foreign_file(path, 7)
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError):
        _upgrade_with_a_connection_of_ones_own(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_command_upgrade_with_a_connection_of_ones_own_rolls_a_failing_revision_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / DB_FILENAME}"
    with pytest.raises(MigrationError):
        _upgrade_with_a_connection_of_ones_own(url, _scripts_with(tmp_path, FAILING))
    assert state(url) == (HEAD_ROWS, CURRENT_SCHEMA_VERSION)
    assert "extra" not in tables_at(url)


def test_the_alembic_command_line_reports_a_refusal_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "newer.sqlite"
    write_uniqc_v1_file(path)
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {CURRENT_SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    out = _alembic(["-x", f"url=sqlite:///{path}", "upgrade", "head"], {})
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert f"user_version {CURRENT_SCHEMA_VERSION + 1}" in out.stderr and "Upgrade uniqc_store" in out.stderr
