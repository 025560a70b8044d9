"""Schema versions: the SQLite header, the Alembic revisions, and running them safely.

The header rules of uniqc's file format, kept here beside the code that runs the migrations:

* ``PRAGMA application_id`` is :data:`APPLICATION_ID` ("UNIC") on every file of ours; 0 means a
  fresh file that may be stamped; anything else belongs to another program and is never touched.
* ``PRAGMA user_version`` is the schema version: ``int(revision)`` of the Alembic revision the
  file is at, 0 at base. uniqc's own store writes the same numbers, so a file uniqc wrote
  (``user_version`` > 0, no ``alembic_version`` table) is adopted by stamping that revision.
* Both are written by :func:`_stamp_header`, an Alembic ``on_version_apply`` hook, inside the
  transaction of each upgrade or downgrade step.

Opening a store and ``alembic upgrade`` take the same path: :func:`run_env` (called by
``migrations/env.py``) under :func:`_locked_connection`, which holds a lock across the whole
check-and-upgrade so that, of many processes opening one database, exactly one migrates.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Column, Index, MetaData, exc, inspect, text
from sqlalchemy.engine import Connection

from . import database as dbmod
from . import sqlite_file, versions
from .database import Database
from .errors import (
    DatabaseError,
    DatabaseRefusedError,
    ForeignDatabaseError,
    MigrationError,
    NotADatabaseError,
    SchemaTooNewError,
    StoreError,
)
from .execution import SQLITE_BUSY_SLICE_S, execute_waiting
from .models import Base

if TYPE_CHECKING:  # Alembic is imported only when a migration runs: opening at head stays cheap
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext, MigrationInfo

try:  # advisory file locks; without them (Windows) SQLite's own locking still protects the data
    import fcntl

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover
    _HAVE_FLOCK = False

APPLICATION_ID = 0x554E4943  # b"UNIC"
#: The newest revision this library knows; a test checks it against the script directory, so
#: opening a database that is already at head never loads the Alembic scripts.
HEAD_REVISION = "0005"
CURRENT_SCHEMA_VERSION = int(HEAD_REVISION)
#: This library's own branch of revisions: what it adds that uniqc never sees (indexes), versioned
#: apart from uniqc's schema so that they never move ``user_version`` (see migrations/versions/s0*).
STORE_BRANCH = "uniqc_store"
#: Each revision of that branch, and the revision of uniqc's schema the branch forks from: the
#: version table holding one of them stands for that one too (Alembic records a revision's
#: ancestors by leaving them out).
STORE_REVISIONS = {f"s{n:03d}": "0005" for n in range(1, 9)}
STORE_HEAD = "s008"
#: The index each revision of the branch creates (its table, its name), one per revision so that no
#: writer waits longer than one index takes to build; the (submit_time, seq) ones exist on servers only.
STORE_INDEX_REVISIONS = {
    revision: (table, f"{versions.STORE_INDEX_PREFIX}{table}_{kind}_idx")
    for revision, (table, kind) in zip(
        STORE_REVISIONS,
        [
            *((table, kind) for table in ("tasks", "archived_tasks") for kind in ("status_time", "backend_time",
                                                                                 "status_backend_time")),
            ("tasks", "time_seq"),
            ("archived_tasks", "time_seq"),
        ],
        strict=True,
    )
}
#: What the version table of a database at head holds (Alembic's heads after ``upgrade heads``).
HEAD_ROWS = frozenset({STORE_HEAD} | ({HEAD_REVISION} if STORE_REVISIONS[STORE_HEAD] != HEAD_REVISION else set()))

PACKAGE_DIR = Path(__file__).resolve().parent
#: The table holding this library's Alembic revision: a name of its own, so that a server
#: database shared with an application that has its own Alembic history keeps both apart.
VERSION_TABLE = "uniqc_store_version"
#: Where uniqc_store 0.1.0 kept it; moved to :data:`VERSION_TABLE` by the next upgrade.
LEGACY_VERSION_TABLE = "alembic_version"
VERSION_TABLES = (VERSION_TABLE, LEGACY_VERSION_TABLE)
#: Columns that exist on servers only, maintained by the database and not part of the model.
SERVER_ONLY_COLUMNS = {"tasks": {"seq"}, "archived_tasks": {"seq"}}
SERVER_ONLY_INDEXES = {"tasks_seq_key", "archived_tasks_seq_key"}
_PG_LOCK_KEY = 0x554E4943_0000_0001  # pg_advisory_lock key of uniqc_store's migrations
_LOCK_WAIT_S = 600


def script_location() -> Path:
    """Return the Alembic script directory: inside the installed wheel, else the source tree's."""
    bundled = PACKAGE_DIR / "migrations"
    if (bundled / "env.py").is_file():
        return bundled
    return PACKAGE_DIR.parent / "migrations"


def alembic_config(connection: Connection | None = None, *, script_dir: Path | str | None = None) -> Config:
    """Build the Alembic :class:`Config` in code.

    ``connection`` names the database to migrate; ``env.py`` runs the migrations on a locked,
    checked connection of the store's own to the same URL (see :func:`run_env`).
    """
    from alembic.config import Config

    config = Config()
    # configparser interpolates '%': escape it in paths (and URLs) set as options.
    config.set_main_option("script_location", str(script_dir or script_location()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class SchemaState:
    """What a database says about its schema version."""

    application_id: int | None  # None on servers
    user_version: int | None  # None on servers
    revision: str | None  # the revision recorded, None when absent or empty
    #: The table the revision was read from: :data:`VERSION_TABLE`, or
    #: :data:`LEGACY_VERSION_TABLE` on a database written by uniqc_store 0.1.0 (moved on upgrade).
    version_table: str | None = None
    #: The revision of this library's own branch (:data:`STORE_BRANCH`), None when not applied.
    store_revision: str | None = None
    #: Indexes that the recorded ``store_revision`` created and that are no longer there.
    missing_indexes: tuple[str, ...] = ()

    @property
    def at_head(self) -> bool:
        return (
            self.revision == HEAD_REVISION
            and self.version_table == VERSION_TABLE
            and self.user_version in (None, CURRENT_SCHEMA_VERSION)
            and self.store_revision == STORE_HEAD
            and not self.missing_indexes
        )


def read_state(db: Database, conn: Connection | None = None) -> SchemaState:
    """Read the header and revision of ``db`` and refuse what is not ours or too new.

    Reads only, and on SQLite through a read-only connection of its own (``conn`` is not used
    there), so that a file about to be refused cannot be changed by the reading: a read-write
    connection may checkpoint a WAL into the file when it closes. On servers ``conn`` is read.

    Raises:
        NotADatabaseError: the file is not an SQLite database.
        ForeignDatabaseError: the file is another program's (its ``application_id``, or tables
            of its own in a file with no uniqc header).
        SchemaTooNewError: the schema is newer than this library knows.
        DatabaseRefusedError: the version table holds revisions that are not uniqc_store's.
    """
    if db.is_sqlite:
        assert db.path is not None
        try:
            facts = sqlite_file.inspect_file(db.path, VERSION_TABLES, ("tasks",))
        except sqlite3.Error as error:
            raise db.translate(error) from error
    else:
        assert conn is not None
        try:
            facts = _server_facts(conn)
        except exc.DBAPIError as error:
            raise db.translate(error) from error
    return _judge(db, facts)


def _server_facts(conn: Connection) -> sqlite_file.FileFacts:
    inspector = inspect(conn)
    # Views too: another application's view named 'tasks' must be refused like its table.
    tables = frozenset(inspector.get_table_names()) | frozenset(inspector.get_view_names())
    columns = {
        table: [column["name"] for column in inspector.get_columns(table)]
        for table in (*VERSION_TABLES, "tasks")
        if table in tables
    }
    version_rows = {
        table: [str(row[0]) for row in conn.exec_driver_sql(f"SELECT version_num FROM {table}")]
        for table in VERSION_TABLES
        if "version_num" in columns.get(table, ())
    }
    # The indexes of the tables this library's branch indexes, to check them against its own.
    shapes = {
        table: {index["name"]: _server_index_shape(index) for index in inspector.get_indexes(table) if index["name"]}
        for table in versions.STORE_INDEXES
        if table in tables
    }
    return sqlite_file.FileFacts(0, 0, tables, version_rows, columns, index_shapes=shapes)


def _server_index_shape(index: Any) -> sqlite_file.IndexShape:
    options = index.get("dialect_options", {})
    return sqlite_file.IndexShape(
        tuple(index["column_names"]),
        unique=bool(index.get("unique")),
        partial=bool(options.get("postgresql_where")),
        descending=any("desc" in sorting for sorting in (index.get("column_sorting") or {}).values()),
    )


def _judge(db: Database, facts: sqlite_file.FileFacts) -> SchemaState:
    """Decide from what a database holds whether it is ours, and at which revision."""
    if db.is_sqlite:
        _refuse_header(db, facts.application_id, facts.user_version)
    revision, store_revision, table = _recorded_revision(db, facts)
    missing = _missing_store_indexes(db, facts, store_revision)
    if revision is None:
        if db.is_sqlite and facts.user_version:
            _refuse_unless_uniqc_layout(db, facts)  # uniqc's own file: adopted at its version
        else:
            _refuse_unless_empty(db, facts)
    elif db.is_sqlite and facts.user_version != int(revision):
        if facts.user_version < int(revision):
            raise DatabaseRefusedError(
                f"{db.path} is inconsistent: its user_version {facts.user_version} is behind the "
                f"revision {revision} recorded in {table}; it was left untouched. Restore it from a backup."
            )
        # uniqc upgraded a file of ours behind our back: re-stamped at its version if it is uniqc's.
        _refuse_unless_uniqc_layout(db, facts)
    if not db.is_sqlite:
        return SchemaState(None, None, revision, table, store_revision, missing)
    return SchemaState(facts.application_id, facts.user_version, revision, table, store_revision, missing)


def _missing_store_indexes(db: Database, facts: sqlite_file.FileFacts, recorded: str | None) -> tuple[str, ...]:
    """The indexes of this library's branch, up to the ``recorded`` revision, that the database lacks.

    Something else under one of their names (an index of other columns, unique, partial,
    descending or with another collation, or on another table; a table or a view) is refused,
    whatever is recorded: it would be taken for ours and never repaired, a unique one would change
    what a save does, and any other would make the revision that creates ours fail.
    """
    missing = []
    objects = {obj.lower() for obj in facts.objects}
    for revision, (table, name) in STORE_INDEX_REVISIONS.items():
        columns = list_indexes(table, db.dialect).get(name)
        if columns is None:
            continue  # a servers-only index on SQLite
        found = {index.lower(): shape for index, shape in facts.index_shapes.get(table, {}).items()}
        shape = found.get(name.lower())
        if shape is None and name.lower() not in objects:
            if recorded is not None and revision <= recorded:
                missing.append(name)
        elif shape != sqlite_file.IndexShape(columns):
            raise DatabaseRefusedError(
                f"{db.path or db.display_url}: {name!r} is not the index uniqc_store makes on {table} "
                f"({', '.join(columns)}; found {shape.describe() if shape else 'another kind of object'}); "
                "it was left untouched. Drop it, and the store creates its own when it next opens the database."
            )
    return tuple(missing)


def list_index_names(dialect: str) -> list[str]:
    """The names of the indexes that this library's branch creates on ``dialect``."""
    return [name for table in versions.STORE_INDEXES for name in list_indexes(table, dialect)]


def list_indexes(table: str, dialect: str) -> dict[str, tuple[str, ...]]:
    """This library's own indexes on ``table`` (``tasks`` or ``archived_tasks``) as ``dialect``
    has them, by name: SQLite's as :data:`versions.STORE_INDEXES` says; on servers each with the tie
    column ``seq`` appended, and (submit_time, seq) for the unfiltered order."""
    indexes = {index.name: index.columns for index in sorted(versions.STORE_INDEXES[table], key=lambda i: i.name)}
    if dialect == "sqlite":
        return indexes
    server = {name: (*columns, "seq") for name, columns in indexes.items()}
    server[f"{versions.STORE_INDEX_PREFIX}{table}_time_seq_idx"] = ("submit_time", "seq")
    return server


def _recorded_revision(db: Database, facts: sqlite_file.FileFacts) -> tuple[str | None, str | None, str | None]:
    """The revisions this library recorded (of uniqc's schema, and of its own branch), and the
    table that holds them.

    Our own table wins. ``alembic_version`` counts only as uniqc_store 0.1.0 left it: revision
    ``0001`` alone, beside uniqc's v1 ``tasks`` table (and on SQLite the header it wrote,
    ("UNIC", 1)); anything else there is another application's Alembic history, which this
    library never reads as its own nor touches.
    """
    rows = facts.version_rows.get(VERSION_TABLE)
    if rows is not None:
        schema_rows = [row for row in rows if not _store_numbered(row)]
        store_rows = [row for row in rows if _store_numbered(row)]
        if (
            len(schema_rows) > 1
            or len(store_rows) > 1
            or (schema_rows and not _known(schema_rows[0]))
            or (store_rows and store_rows[0] not in STORE_REVISIONS)
        ):
            raise _unknown_revisions(db, rows)
        store = store_rows[0] if store_rows else None
        # A branch revision alone in the table stands for the schema revision it forks from too;
        # beside it, only a later revision of uniqc's schema is what Alembic writes.
        revision = schema_rows[0] if schema_rows else (STORE_REVISIONS[store] if store else None)
        if store and schema_rows and int(schema_rows[0]) <= int(STORE_REVISIONS[store]):
            raise _unknown_revisions(db, rows)
        return revision, store, VERSION_TABLE
    if facts.version_rows.get(LEGACY_VERSION_TABLE) == [_LEGACY_REVISION] and _written_by_0_1_0(db, facts):
        return _LEGACY_REVISION, None, LEGACY_VERSION_TABLE
    return None, None, None


_LEGACY_REVISION = "0001"  # the only revision uniqc_store 0.1.0 had


def _written_by_0_1_0(db: Database, facts: sqlite_file.FileFacts) -> bool:
    v1_columns = [column.name for column in versions.LAYOUTS[1]["tasks"].columns]
    columns = [name for name in facts.columns.get("tasks", []) if name not in SERVER_ONLY_COLUMNS["tasks"]]
    if columns != v1_columns:
        return False
    return not db.is_sqlite or (facts.application_id, facts.user_version) == (APPLICATION_ID, 1)


def _unknown_revisions(db: Database, rows: list[str]) -> DatabaseRefusedError:
    schema_rows = [row for row in rows if not _store_numbered(row)]
    store_rows = [row for row in rows if _store_numbered(row)]
    if len(schema_rows) <= 1 and len(store_rows) <= 1 and all(_numbered(row) for row in schema_rows):
        if schema_rows and int(schema_rows[0]) > CURRENT_SCHEMA_VERSION:
            return _too_new(db, f"revision {schema_rows[0]!r}")
        if store_rows and store_rows[0] > STORE_HEAD:
            return _too_new(db, f"revision {store_rows[0]!r} of its own indexes")
    return DatabaseRefusedError(
        f"{db.path or db.display_url}: its {VERSION_TABLE} table holds {rows!r}, which "
        f"{'is not a revision' if len(rows) == 1 else 'are not revisions'} of uniqc_store "
        f"(one of 0001 to {HEAD_REVISION}, or of {', '.join(STORE_REVISIONS)}, or one of each); it was "
        f"left untouched. Something other than uniqc_store wrote that table: restore it from a backup, or "
        f"point uniqc_store at another database."
    )


def _refuse_unless_uniqc_layout(db: Database, facts: sqlite_file.FileFacts) -> None:
    """A file whose ``user_version`` no revision of ours accounts for is taken on only if its
    layout is uniqc's layout at that version, as SQLite reports it."""
    problems = versions.differences(facts.layout, facts.user_version)
    if problems:
        raise ForeignDatabaseError(
            f"{db.path} has user_version {facts.user_version} but not uniqc's layout for it "
            f"({'; '.join(problems)}); it was left untouched"
        )


def _refuse_unless_empty(db: Database, facts: sqlite_file.FileFacts) -> None:
    """A database without our version record is ours to initialise only if it holds nothing
    we would collide with: on SQLite nothing at all (an SQLite file's header says 0, 0 until a
    program stamps it, so an unstamped file with tables is another program's); on a server, no
    ``tasks`` table (other applications' tables may share the database)."""
    ours = {VERSION_TABLE} | ({LEGACY_VERSION_TABLE} if not facts.version_rows.get(LEGACY_VERSION_TABLE) else set())
    if db.is_sqlite:
        foreign = sorted(facts.objects - ours)
        if foreign:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ForeignDatabaseError(
                f"{db.path} is an SQLite database of another program: it has no uniqc header "
                f"(application_id 0, user_version 0) but already holds {listed}; it was left "
                "untouched. uniqc_store creates new files, or opens files uniqc wrote."
            )
    elif "tasks" in facts.objects:
        raise DatabaseRefusedError(
            f"{db.display_url} already has a table named 'tasks' but no {VERSION_TABLE} record: "
            "either another application's table, or what a uniqc_store migration that failed "
            "part-way on MySQL/MariaDB committed (see the error it reported). It was left "
            "untouched: use another database for uniqc_store, or repair or restore this one."
        )


def check_file_header(db: Database) -> None:
    """Refuse a file from the 100 raw bytes of its header, before SQLite opens it.

    Only call this while the process has no connection to the file (see
    :func:`sqlite_file.read_raw_header`).
    """
    assert db.path is not None
    try:
        header = sqlite_file.read_raw_header(db.path)
    except sqlite_file.NotSQLiteError:
        raise NotADatabaseError(f"{db.path} is not an SQLite database; it was left untouched") from None
    except OSError as error:
        raise DatabaseError(f"cannot read {db.path}: {error.strerror or error}") from error
    if header is not None:
        _refuse_header(db, header.application_id, header.user_version)


def _refuse_header(db: Database, application_id: int, user_version: int) -> None:
    if application_id not in (0, APPLICATION_ID):
        raise ForeignDatabaseError(
            f"{db.path} has application_id 0x{application_id:08X}, not uniqc's "
            f"0x{APPLICATION_ID:08X} ('UNIC'): it belongs to another program and was left untouched"
        )
    if user_version > CURRENT_SCHEMA_VERSION:
        raise _too_new(db, f"user_version {user_version}")


_USER_VERSION = text("PRAGMA user_version")
_REVISION = text(f"SELECT version_num FROM {VERSION_TABLE}")


def still_at_head(db: Database) -> bool:
    """Cheaply confirm that a database this process found at head still is: same file, same
    version (another program may have deleted, replaced or upgraded it meanwhile)."""
    if db.is_sqlite and db.file_changed():
        return False
    try:
        with db.transaction(write=False) as tx:
            if db.is_sqlite:
                user_version: int = tx.rows(_USER_VERSION)[0][0]
                return user_version == CURRENT_SCHEMA_VERSION
            return {row[0] for row in tx.rows(_REVISION)} == HEAD_ROWS
    except DatabaseError:
        return False  # ensure_schema() then finds out what is wrong, and says so


def _numbered(revision: str) -> bool:
    """Whether ``revision`` has the form of this library's revision ids: four ASCII digits."""
    return len(revision) == 4 and revision.isascii() and revision.isdigit()


def _known(revision: str) -> bool:
    return _numbered(revision) and 0 < int(revision) <= CURRENT_SCHEMA_VERSION


def schema_version_of(heads: Collection[str]) -> int:
    """uniqc's schema version (``user_version``) of a database whose version table holds ``heads``:
    the highest revision of uniqc's schema among them and what the branch's revisions depend on."""
    versions_ = [int(STORE_REVISIONS.get(head, head)) for head in heads if head in STORE_REVISIONS or _numbered(head)]
    return max(versions_, default=0)


def _store_numbered(revision: str) -> bool:
    """Whether ``revision`` has the form of this library's own branch's ids: 's' and three digits."""
    return len(revision) == 4 and revision[0] == "s" and _numbered("0" + revision[1:])


def _too_new(db: Database, found: str) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"{db.path or db.display_url} is at {found}, newer than this uniqc_store knows "
        f"(schema version {CURRENT_SCHEMA_VERSION}, revision {HEAD_REVISION}); it was left untouched. "
        f"Upgrade uniqc_store (pip install -U uniqc_store) to open it."
    )


def ensure_schema(db: Database) -> None:
    """Bring ``db`` to head if needed, then mark it ready.

    Cheap when the database is already at head: one short read, no Alembic script loading.

    Raises:
        DatabaseRefusedError: (a subclass of) the database is not ours or too new; untouched.
        MigrationError: a revision failed; rolled back completely, except on MySQL/MariaDB
            (see :class:`~uniqc_store.MigrationError`).
    """
    with db.schema_mutex:
        db.ready = False
        try:
            _before_connecting(db)
            state: SchemaState | None
            try:
                state = current_state(db)
            except DatabaseRefusedError:
                if db.is_sqlite:
                    raise
                # MySQL/MariaDB commit DDL as it runs: another process's migration under way
                # looks like a foreign 'tasks' table until it records its revision. Judge again
                # under the lock, once that migration is over.
                state = None
            if state is None or not state.at_head:
                with _locked_connection(db) as (conn, state):
                    if not state.at_head:  # else another process migrated while we waited
                        from alembic import command

                        command.upgrade(_config_for(conn, state), "heads")
        except BaseException:
            # Keep no connection to a file that is not ours, or that the caller may now move
            # away (a later open must start on whatever is at the path then).
            db.engine.dispose()
            raise
        if db.is_sqlite:
            db.secure_file()
            db.schema_version = CURRENT_SCHEMA_VERSION
        db.ready = True


def current_state(db: Database) -> SchemaState:
    """The schema state of a database this process may already use (read-only on SQLite)."""
    if db.is_sqlite:
        return read_state(db)
    with db.connect() as conn:
        state = read_state(db, conn)
        conn.rollback()
        return state


def peek_state(db: Database) -> SchemaState:
    """The schema state of an existing database, read without changing anything (the same
    checks as on open, in the same order; nothing is created, migrated or stamped).

    Raises:
        DatabaseRefusedError: as :func:`ensure_schema`.
        DatabaseError: there is no SQLite file at the path.
    """
    with db.schema_mutex:
        _before_connecting(db, create=False)
        return current_state(db)


def _before_connecting(db: Database, *, create: bool = True) -> None:
    """What must happen before any connection of this process opens an SQLite file: notice a
    file replaced behind our back, create a missing one (or say it is missing), and refuse from
    the raw header."""
    if not db.is_sqlite:
        return
    assert db.path is not None
    if db.file_id is not None and db.file_changed():
        db.forget_file()  # deleted or replaced behind our back: start on the new one
    if create:
        db.prepare_file()
    elif not db.path.exists():
        raise DatabaseError(f"there is no database at {db.path} (nothing was created)")
    _refuse_unless_regular_file(db)
    if not db.has_connections():
        check_file_header(db)


def _refuse_unless_regular_file(db: Database) -> None:
    # Reading a FIFO's header would wait forever, and SQLite would write a device's journal
    # beside it: only a regular file can be a database.
    assert db.path is not None
    try:
        mode = os.stat(db.path).st_mode
    except OSError as error:
        raise DatabaseError(f"cannot read {db.path}: {error.strerror or error}") from error
    if not stat.S_ISREG(mode):
        raise NotADatabaseError(f"{db.path} is not a regular file, so not an SQLite database; it was left untouched")


def check_ours_before_deleting(db: Database) -> None:
    """Refuse to delete an SQLite file that is not ours (another program's file moved onto the
    path, or one newer than this library), with the same checks, read-only, as opening it.
    The caller has closed every connection of this process to the file."""
    assert db.path is not None
    if not os.path.lexists(db.path):
        return
    _refuse_unless_regular_file(db)
    check_file_header(db)
    read_state(db)


def upgrade(
    revision: str = "head",
    *,
    url: str | None = None,
    cache_dir: Path | str | None = None,
    script_dir: Path | str | None = None,
) -> None:
    """Upgrade a database to ``revision``, through the same path as ``alembic upgrade``.

    The database is chosen as :class:`~uniqc_store.TaskStore` chooses it; ``script_dir`` replaces
    the bundled revisions (for testing revisions of your own). ``"head"`` means the head of both
    branches, uniqc's schema and this library's own indexes (Alembic's ``heads``).
    """
    from alembic import command

    _run_command(command.upgrade, "heads" if revision == "head" else revision, url, cache_dir, script_dir)


def downgrade(
    revision: str,
    *,
    url: str | None = None,
    cache_dir: Path | str | None = None,
    script_dir: Path | str | None = None,
) -> None:
    """Downgrade a database to ``revision`` (``"base"`` drops everything), as ``alembic downgrade``."""
    from alembic import command

    _run_command(command.downgrade, revision, url, cache_dir, script_dir)


def _run_command(fn: Any, revision: str, url: Any, cache_dir: Any, script_dir: Path | str | None) -> None:
    with _migrating(dbmod.resolve_url(cache_dir, url)) as (conn, state):
        fn(_config_for(conn, state, script_dir=script_dir), revision)


_PREPARED = "uniqc_store.prepared"
_STATE = "uniqc_store.state"


def _config_for(conn: Connection, state: SchemaState, *, script_dir: Path | str | None = None) -> Config:
    """A Config whose connection already holds the migration lock and passed every check."""
    config = alembic_config(conn, script_dir=script_dir)
    config.attributes[_PREPARED] = True
    config.attributes[_STATE] = state
    return config


@contextmanager
def _migrating(url: Any, *, write: bool = True) -> Iterator[tuple[Connection, SchemaState]]:
    """A locked connection to the database at ``url`` for an explicit Alembic command; with
    ``write=False`` (``alembic current``, ``check``) nothing is created or changed."""
    with dbmod.opened(url) as db, db.schema_mutex:
        db.ready = False  # every store of this process re-checks the schema afterwards
        try:
            _before_connecting(db, create=write)
            with _locked_connection(db, write=write) as locked:
                yield locked
        except BaseException:
            db.engine.dispose()
            raise
        if db.is_sqlite and write:
            db.secure_file()


@contextmanager
def _locked_connection(db: Database, *, write: bool = True) -> Iterator[tuple[Connection, SchemaState]]:
    """A connection holding the migration lock, the database checked, SQLite in WAL mode.

    On SQLite the checks run (read-only) before the migration connection exists, so a refused
    file never meets a connection that could write it. The connection is outside any
    transaction, as Alembic needs it to run each revision in a transaction of its own.
    """
    if db.is_sqlite:
        with _directory_lock(db):
            state = read_state(db)  # refusals first: nothing below may touch a foreign file
            if write and not state.at_head:
                _wait_for_the_write_lock(db)
            with db.connect(migrations=True) as conn:
                if write:
                    # Persistent and needs no transaction; set once, after the checks above.
                    if conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                        conn.exec_driver_sql("PRAGMA journal_mode = WAL")
                    conn.commit()
                    conn.execution_options(**{dbmod.WRITE_OPTION: True})
                yield conn, state
        return
    with db.connect(migrations=True) as conn, _server_lock(db, conn):
        state = read_state(db, conn)
        conn.commit()
        yield conn, state


def _wait_for_the_write_lock(db: Database) -> None:
    """Wait, interruptibly, until no other process holds the file's write lock (uniqc itself,
    say), so that the migrations' own ``BEGIN IMMEDIATE`` rarely has to wait inside SQLite, where
    Ctrl-C cannot reach it."""
    assert db.path is not None
    try:
        conn = sqlite3.connect(db.path, timeout=SQLITE_BUSY_SLICE_S, isolation_level=None)
        try:
            execute_waiting(conn.cursor(), "BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise db.translate(error) from error


@contextmanager
def _directory_lock(db: Database) -> Iterator[None]:
    """Serialize check-and-upgrade of an SQLite file across processes: an ``flock`` on the
    file's directory (never on the database file itself: closing another descriptor of that
    file would drop SQLite's own POSIX locks)."""
    assert db.path is not None
    if not _HAVE_FLOCK:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(db.path.parent, os.O_RDONLY)
    except OSError as error:
        raise DatabaseError(
            f"cannot lock {db.path.parent} for the schema check ({error.strerror or error}): "
            "uniqc_store needs to read and write the database's directory"
        ) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def _server_lock(db: Database, conn: Connection) -> Iterator[None]:
    """Serialize check-and-upgrade on a server: a session advisory lock on PostgreSQL,
    ``GET_LOCK`` on a per-database name on MySQL/MariaDB."""
    try:
        if db.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
            conn.commit()  # the lock is held by the session, across the migrations' transactions
            try:
                yield
            finally:
                _release(conn, f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
        else:
            name = f"uniqc_store.migrate.{conn.exec_driver_sql('SELECT DATABASE()').scalar()}"[:64]
            got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, _LOCK_WAIT_S)).scalar()
            conn.commit()
            if got != 1:
                raise MigrationError(f"{db.display_url}: timed out waiting for another process's migration")
            try:
                yield
            finally:
                _release(conn, "SELECT RELEASE_LOCK(%s)", (name,))
    except exc.DBAPIError as error:
        raise db.translate(error) from error


def _release(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> None:
    if conn.in_transaction():
        conn.rollback()
    conn.exec_driver_sql(sql, params)
    conn.commit()


# ---------------------------------------------------------------------------------------------
# What migrations/env.py runs.


def run_env(context: EnvironmentContext) -> None:
    """Run an Alembic command's migrations: the body of ``migrations/env.py``.

    With ``config.attributes["connection"]`` (the library's path) that connection is used as it
    is: the caller holds the migration lock. Otherwise (the ``alembic`` command line) the target is
    ``-x url=URL``, else ``$UNIQC_STORE_URL``, else the default file, opened and locked here.
    """
    from alembic.util import CommandError

    from_command_line = context.config.cmd_opts is not None
    if context.is_offline_mode():
        message = (
            "offline (--sql) migrations are not supported: the SQLite header is written by a hook "
            "that needs a live connection; run the command without --sql"
        )
        raise CommandError(message) if from_command_line else MigrationError(message)
    attributes = context.config.attributes
    connection = attributes.get("connection")
    if connection is not None and attributes.get(_PREPARED):
        _run_migrations(context, connection, attributes[_STATE])
        return
    if connection is not None:
        # Somebody else's connection: it names the database, but has neither the lock, nor the
        # checks, nor (on SQLite) a BEGIN that makes DDL transactional. Use one of ours.
        url: Any = connection.engine.url
    else:
        url = context.get_x_argument(as_dictionary=True).get("url")
    try:
        with _migrating(dbmod.resolve_url(url=url), write=_migrates(context)) as (conn, state):
            _run_migrations(context, conn, state)
    except StoreError as error:
        if connection is not None or not from_command_line:
            raise
        raise CommandError(str(error)) from error  # the alembic command line prints one line


def _migrates(context: EnvironmentContext) -> bool:
    """Whether the command moves the database to a revision (upgrade, downgrade, stamp), as
    opposed to only reading it (current, check)."""
    from alembic.util import CommandError

    try:
        return context.get_revision_argument() is not None
    except KeyError:  # current, check: no destination
        return False
    except CommandError:  # a destination Alembic cannot resolve ('head' of two branches): it says so next
        return True


def _run_migrations(context: EnvironmentContext, conn: Connection, state: SchemaState) -> None:
    is_sqlite = conn.dialect.name == "sqlite"
    migrating = _migrates(context)
    # A database of uniqc_store 0.1.0 keeps its revision in alembic_version until it is migrated.
    reading_legacy = not migrating and state.version_table == LEGACY_VERSION_TABLE
    context.configure(
        connection=conn,
        target_metadata=_target_metadata(conn.dialect.name),
        version_table=LEGACY_VERSION_TABLE if reading_legacy else VERSION_TABLE,
        # One transaction per revision: a failing revision rolls back alone, completely.
        transaction_per_migration=True,
        # Alembic assumes SQLite cannot roll back DDL; it can, since BEGIN is ours (database.py).
        transactional_ddl=True if is_sqlite else None,
        on_version_apply=_stamp_header,
        include_object=_include_object,
        compare_type=True,
        render_as_batch=is_sqlite,
    )
    if migrating:
        _move_legacy_version_table(context.get_context(), context.script, state)
        _adopt_uniqc_file(context.get_context(), context.script)
        _forget_missing_indexes(context.get_context(), state)
    from alembic.util import CommandError

    try:
        with context.begin_transaction():
            context.run_migrations()
    except (StoreError, CommandError):
        raise  # already ours, or Alembic refusing the command itself (nothing was run)
    except Exception as error:
        reason = error.orig if isinstance(error, exc.DBAPIError) else error
        failure = f"{type(reason).__name__}: {reason}"
        if conn.dialect.name in ("mysql", "mariadb"):
            raise MigrationError(_partly_committed(context.get_context(), failure)) from error
        raise MigrationError(
            f"a schema migration failed and its revision was rolled back completely ({failure}); "
            "the database stays at the last revision that completed"
        ) from error


def _partly_committed(migration: MigrationContext, failure: str) -> str:
    """What a failed revision leaves on MySQL/MariaDB, where it cannot be rolled back."""
    try:
        heads = migration.get_current_heads()
        at = f"revision {heads[0]}" if heads else "no revision"
    except exc.DBAPIError as error:  # the failure may have cost the connection: say what we know
        at = f"the last revision that completed (it could not be read: {error.orig})"
    # (The read's transaction is ended with the migration lock, see _release.)
    return (
        f"a schema migration failed ({failure}) and could not be rolled back: MySQL/MariaDB commit "
        "every DDL statement (CREATE, ALTER, DROP ...) implicitly, so the failing revision's statements "
        "up to the failure may have been committed, data changes made before its last DDL statement "
        f"included, while {migration.version_table} still names {at}. The schema may now match no "
        "revision: inspect the database and repair it by hand (undo what the failing revision did), "
        "or restore a backup, before retrying the upgrade"
    )


@functools.cache
def _target_metadata(dialect: str) -> MetaData:
    """The model as each backend declares it.

    uniqc's layout says ``task_id TEXT PRIMARY KEY``, which SQLite lets be NULL (the model says so);
    servers make every primary key column NOT NULL, so compare against that there.
    """
    if dialect == "sqlite":
        return Base.metadata
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        copy = table.to_metadata(metadata)
        if "task_id" in copy.c:
            copy.c.task_id.nullable = False
        if table.name in versions.STORE_INDEXES:
            # The branch's indexes end in the tie column seq there (not compared itself).
            copy.append_column(Column("seq", BigInteger, nullable=False))
            for index in [index for index in copy.indexes if index.name in list_indexes(table.name, "sqlite")]:
                copy.indexes.discard(index)
            for name, columns in list_indexes(table.name, dialect).items():
                Index(name, *(copy.c[column] for column in columns))
    return metadata


def _move_legacy_version_table(migration: MigrationContext, script: Any, state: SchemaState) -> None:
    """Move the revision of a database written by uniqc_store 0.1.0 from ``alembic_version`` to
    :data:`VERSION_TABLE`, in one transaction (MySQL/MariaDB commit each DDL statement: an
    interruption there leaves both tables, and the next upgrade finishes the move)."""
    conn = migration.connection
    if conn is None or state.version_table != LEGACY_VERSION_TABLE or state.revision is None:
        return
    with conn.begin():
        if not migration.get_current_heads():
            migration.stamp(script, state.revision)
        conn.exec_driver_sql(f"DROP TABLE {LEGACY_VERSION_TABLE}")


def _forget_missing_indexes(migration: MigrationContext, state: SchemaState) -> None:
    """When an index of this library's branch has gone missing (dropped by hand, or by a table
    rebuild of a later uniqc step), remove the branch's record, so that the upgrade runs its
    revision again: it creates the indexes that are not there, and only those."""
    conn = migration.connection
    if conn is None or not state.missing_indexes or state.store_revision is None or state.revision is None:
        return
    with conn.begin():
        conn.execute(
            text(f"DELETE FROM {VERSION_TABLE} WHERE version_num = :revision"), {"revision": state.store_revision}
        )
        if not migration.get_current_heads():  # the branch's record stood for the schema revision too
            conn.execute(text(f"INSERT INTO {VERSION_TABLE} VALUES (:revision)"), {"revision": state.revision})


def _adopt_uniqc_file(migration: MigrationContext, script: Any) -> None:
    """Stamp a file whose ``user_version`` is ahead of its revision (none, for a file uniqc wrote;
    an older one, for a file of ours that uniqc upgraded) at that version. :func:`read_state`
    has checked that the layout is uniqc's for that version."""
    conn = migration.connection
    if conn is None or conn.dialect.name != "sqlite":
        return
    try:
        heads = migration.get_current_heads()
        user_version = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
    finally:
        conn.commit()
    if user_version <= schema_version_of(heads):
        return
    with conn.begin():
        migration.stamp(script, f"{user_version:04d}")
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")


def _stamp_header(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
) -> None:
    """``on_version_apply`` hook (Alembic passes each argument by name): write the SQLite header
    inside the step's own transaction."""
    if ctx.dialect.name != "sqlite":
        return  # servers: the version table alone is the version record
    version = schema_version_of(heads)
    ctx.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    ctx.execute(f"PRAGMA user_version = {version}")


def _include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Keep server-only bookkeeping (the insertion sequence) out of autogenerate's comparison."""
    if type_ == "column" and name in SERVER_ONLY_COLUMNS.get(obj.table.name, ()):
        return False
    return not (type_ in ("index", "unique_constraint") and reflected and name in SERVER_ONLY_INDEXES)


#: ``target_metadata(dialect)``: the model as ``dialect``'s backend declares it (on servers every
#: ``task_id`` is NOT NULL), what ``alembic check`` and :func:`uniqc_store.check_store` compare a
#: live database with.
target_metadata = _target_metadata
#: ``include_object(obj, name, type_, reflected, compare_to)``: the ``include_object`` hook of
#: that comparison; False for the server-only insertion sequence and its unique index.
include_object = _include_object


__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "HEAD_REVISION",
    "alembic_config",
    "downgrade",
    "ensure_schema",
    "include_object",
    "peek_state",
    "read_state",
    "run_env",
    "script_location",
    "still_at_head",
    "target_metadata",
    "upgrade",
]
