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
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, exc, inspect, text
from sqlalchemy.engine import Connection

from . import database as dbmod
from .database import Database
from .errors import (
    DatabaseError,
    ForeignDatabaseError,
    MigrationError,
    NotADatabaseError,
    SchemaTooNewError,
    StoreError,
)
from .models import Base

if TYPE_CHECKING:  # Alembic is imported only when a migration runs: opening at head stays cheap
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext

try:  # advisory file locks; without them (Windows) SQLite's own locking still protects the data
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

APPLICATION_ID = 0x554E4943  # b"UNIC"
#: The newest revision this library knows; a test checks it against the script directory, so
#: opening a database that is already at head never loads the Alembic scripts.
HEAD_REVISION = "0001"
CURRENT_SCHEMA_VERSION = int(HEAD_REVISION)

PACKAGE_DIR = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
#: Columns that exist on servers only, maintained by the database and not part of the model.
SERVER_ONLY_COLUMNS = {"tasks": {"seq"}}
SERVER_ONLY_INDEXES = {"tasks_seq_key"}
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
    revision: str | None  # alembic_version's row, None when absent or empty

    @property
    def at_head(self) -> bool:
        return self.revision == HEAD_REVISION and self.user_version in (None, CURRENT_SCHEMA_VERSION)


def read_state(db: Database, conn: Connection) -> SchemaState:
    """Read the header and revision of ``db`` and refuse what is not ours or too new.

    Reads only. On a file in WAL mode, closing the connection may still checkpoint the file;
    :func:`check_file_header` refuses from the raw bytes before any connection exists.

    Raises:
        NotADatabaseError: the file is not an SQLite database.
        ForeignDatabaseError: the file's ``application_id`` is another program's.
        SchemaTooNewError: the schema is newer than this library knows.
    """
    application_id = user_version = None
    try:
        if db.is_sqlite:
            application_id, user_version = conn.exec_driver_sql(
                "SELECT * FROM pragma_application_id(), pragma_user_version()"
            ).one()
            application_id &= 0xFFFFFFFF
            _refuse_header(db, application_id, user_version)
        revision = None
        if inspect(conn).has_table(VERSION_TABLE):
            revision = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()
        if db.is_sqlite and user_version and revision is None:
            _refuse_unless_uniqc_layout(db, conn, user_version)
    except exc.DBAPIError as error:
        raise db.translate(error) from error
    if revision is not None and not _known(revision):
        raise _too_new(db, f"revision {revision!r}")
    return SchemaState(application_id, user_version, revision)


V1_COLUMNS = [
    "task_id", "backend", "status", "shots", "submit_time", "update_time", "result_json", "metadata_json",
]


def _refuse_unless_uniqc_layout(db: Database, conn: Connection, user_version: int) -> None:
    """A file with a version but no revision is adopted only if it really is uniqc's."""
    columns = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(tasks)")]
    if columns != V1_COLUMNS:
        raise ForeignDatabaseError(
            f"{db.path} has user_version {user_version} but no uniqc tasks table "
            f"(found columns {columns or 'none'}); it was left untouched"
        )


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_file_header(db: Database) -> None:
    """Refuse a file from the 100 raw bytes of its header, before SQLite opens it.

    Opening a foreign file in WAL mode, even only to read it, would checkpoint its WAL into it
    and delete its ``-wal``/``-shm`` files when the connection closes. Only call this while the
    process has no connection to the file: closing another descriptor of a database file drops
    every POSIX lock the process's SQLite connections hold on it.
    """
    assert db.path is not None
    try:
        with open(db.path, "rb") as file:
            head = file.read(100)
        wal = Path(f"{db.path}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
    except OSError as error:
        raise DatabaseError(f"cannot read {db.path}: {error.strerror or error}") from error
    if not head:
        return  # empty: a new file, ours to initialise
    # The magic string, and the payload fractions that every valid header has (64, 32, 32).
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC) or head[21:24] != b"\x40\x20\x20":
        raise NotADatabaseError(f"{db.path} is not an SQLite database; it was left untouched")
    _refuse_header(db, int.from_bytes(head[68:72], "big"), int.from_bytes(head[60:64], "big", signed=True))
    if wal_size:
        # The header's newest values may still be in the WAL: read them without the right to
        # write, so that closing cannot checkpoint the WAL into the file.
        uri = f"file:{urllib.parse.quote(str(db.path))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                application_id, user_version = conn.execute(
                    "SELECT * FROM pragma_application_id(), pragma_user_version()"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise db.translate(error) from error
        _refuse_header(db, application_id & 0xFFFFFFFF, user_version)


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
                return tx.rows(_USER_VERSION)[0][0] == CURRENT_SCHEMA_VERSION
            return [tuple(row) for row in tx.rows(_REVISION)] == [(HEAD_REVISION,)]
    except DatabaseError:
        return False  # ensure_schema() then finds out what is wrong, and says so


def _known(revision: str) -> bool:
    return revision.isdigit() and 0 < int(revision) <= CURRENT_SCHEMA_VERSION


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
        MigrationError: a revision failed; it was rolled back completely.
    """
    with db.schema_mutex:
        db.ready = False
        try:
            _before_connecting(db)
            with db.connect() as conn:
                state = read_state(db, conn)
                conn.commit()
            if not state.at_head:
                with _locked_connection(db) as (conn, state):
                    if not state.at_head:  # else another process migrated while we waited
                        from alembic import command

                        command.upgrade(_config_for(conn), "head")
        except BaseException:
            # Keep no connection to a file that is not ours, or that the caller may now move
            # away (a later open must start on whatever is at the path then).
            db.engine.dispose()
            raise
        if db.is_sqlite:
            db.secure_file()
            db.schema_version = CURRENT_SCHEMA_VERSION
        db.ready = True


def peek_state(db: Database) -> SchemaState:
    """The schema state of an existing database, read without changing anything (the same
    checks as on open, in the same order; nothing is created, migrated or stamped).

    Raises:
        DatabaseRefusedError: as :func:`ensure_schema`.
    """
    with db.schema_mutex:
        try:
            if db.is_sqlite and not db.has_connections():
                check_file_header(db)
            with db.connect() as conn:
                return read_state(db, conn)
        except StoreError:
            db.engine.dispose()  # keep no connection open on a file that is not ours
            raise


def _before_connecting(db: Database) -> None:
    """What must happen before any connection of this process opens an SQLite file."""
    if not db.is_sqlite:
        return
    if db.file_id is not None and db.file_changed():
        db.forget_file()  # deleted or replaced behind our back: start on the new one
    db.prepare_file()
    if not db.has_connections():
        check_file_header(db)


def upgrade(
    revision: str = "head",
    *,
    url: str | None = None,
    cache_dir: Path | str | None = None,
    script_dir: Path | str | None = None,
) -> None:
    """Upgrade a database to ``revision``, through the same path as ``alembic upgrade``.

    The database is chosen as :class:`~uniqc_store.TaskStore` chooses it; ``script_dir`` replaces
    the bundled revisions (for testing revisions of your own).
    """
    from alembic import command

    _run_command(command.upgrade, revision, url, cache_dir, script_dir)


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
    with _migrating(dbmod.resolve_url(cache_dir, url)) as conn:
        fn(_config_for(conn, script_dir=script_dir), revision)


_PREPARED = "uniqc_store.prepared"


def _config_for(conn: Connection, *, script_dir: Path | str | None = None) -> Config:
    """A Config whose connection already holds the migration lock and passed every check."""
    config = alembic_config(conn, script_dir=script_dir)
    config.attributes[_PREPARED] = True
    return config


@contextmanager
def _migrating(url: Any) -> Iterator[Connection]:
    """A locked connection to the database at ``url`` for an explicit Alembic command."""
    with dbmod.opened(url) as db, db.schema_mutex:
        db.ready = False  # every store of this process re-checks the schema afterwards
        _before_connecting(db)
        with _locked_connection(db) as (conn, _):
            yield conn
        if db.is_sqlite:
            db.secure_file()


@contextmanager
def _locked_connection(db: Database) -> Iterator[tuple[Connection, SchemaState]]:
    """A connection holding the migration lock, the database checked, SQLite in WAL mode.

    The connection is outside any transaction, as Alembic needs it to run each revision in a
    transaction of its own.
    """
    with db.connect(migrations=True) as conn, _migration_lock(db, conn):
        state = read_state(db, conn)  # refusals first: nothing below may touch a foreign file
        conn.commit()
        if db.is_sqlite:
            # Persistent and needs no transaction; set once, after the checks above.
            if conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            conn.commit()
            conn.execution_options(**{dbmod.WRITE_OPTION: True})
        yield conn, state


@contextmanager
def _migration_lock(db: Database, conn: Connection) -> Iterator[None]:
    """Serialize check-and-upgrade across processes and hosts.

    SQLite: an ``flock`` on the database's directory (never on the database file itself:
    closing another descriptor of that file would drop SQLite's own POSIX locks).
    PostgreSQL: a session advisory lock. MySQL/MariaDB: ``GET_LOCK`` on a per-database name.
    """
    try:
        if db.is_sqlite:
            assert db.path is not None
            if fcntl is None:  # pragma: no cover
                yield
                return
            fd = os.open(db.path.parent, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock
        elif db.dialect == "postgresql":
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
    if context.is_offline_mode():
        raise MigrationError(
            "offline (--sql) migrations are not supported: the SQLite header is written by a hook "
            "that needs a live connection; run the command without --sql"
        )
    attributes = context.config.attributes
    connection = attributes.get("connection")
    if connection is not None and attributes.get(_PREPARED):
        _run_migrations(context, connection)
        return
    if connection is not None:
        # Somebody else's connection: it names the database, but has neither the lock, nor the
        # checks, nor (on SQLite) a BEGIN that makes DDL transactional. Use one of ours.
        url: Any = connection.engine.url
    else:
        url = context.get_x_argument(as_dictionary=True).get("url")
    try:
        with _migrating(dbmod.resolve_url(url=url)) as conn:
            _run_migrations(context, conn)
    except StoreError as error:
        if connection is not None or context.config.cmd_opts is None:
            raise
        from alembic.util import CommandError

        raise CommandError(str(error)) from error  # the alembic command line prints one line


def _run_migrations(context: EnvironmentContext, conn: Connection) -> None:
    is_sqlite = conn.dialect.name == "sqlite"
    context.configure(
        connection=conn,
        target_metadata=_target_metadata(conn.dialect.name),
        version_table=VERSION_TABLE,
        # One transaction per revision: a failing revision rolls back alone, completely.
        transaction_per_migration=True,
        # Alembic assumes SQLite cannot roll back DDL; it can, since BEGIN is ours (database.py).
        transactional_ddl=True if is_sqlite else None,
        on_version_apply=_stamp_header,
        include_object=_include_object,
        compare_type=True,
        render_as_batch=is_sqlite,
    )
    try:
        migrating = context.get_revision_argument() is not None
    except KeyError:  # current, check: no destination, so nothing to adopt or write
        migrating = False
    if migrating:
        _adopt_uniqc_file(context.get_context(), context.script)
    from alembic.util import CommandError

    try:
        with context.begin_transaction():
            context.run_migrations()
    except (StoreError, CommandError):
        raise  # already ours, or Alembic refusing the command itself (nothing was run)
    except Exception as error:
        reason = error.orig if isinstance(error, exc.DBAPIError) else error
        raise MigrationError(
            f"a schema migration failed and its revision was rolled back ({type(reason).__name__}: {reason}); "
            "the database stays at the last revision that completed"
        ) from error


@functools.cache
def _target_metadata(dialect: str) -> MetaData:
    """The model as each backend declares it.

    uniqc's layout says ``task_id TEXT PRIMARY KEY``, which SQLite lets be NULL (the model says so);
    servers make every primary key column NOT NULL, so compare against that there.
    """
    if dialect == "sqlite":
        return Base.metadata
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    Base.metadata.tables["tasks"].to_metadata(metadata).c.task_id.nullable = False
    return metadata


def _adopt_uniqc_file(migration: MigrationContext, script: Any) -> None:
    """Stamp a file written by uniqc itself (``user_version`` > 0, no revision) at its version."""
    conn = migration.connection
    if conn is None or conn.dialect.name != "sqlite":
        return
    try:
        heads = migration.get_current_heads()
        user_version = conn.exec_driver_sql("PRAGMA user_version").scalar()
    finally:
        conn.commit()
    if heads or not user_version:
        return
    with conn.begin():
        migration.stamp(script, f"{user_version:04d}")
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")


def _stamp_header(*, ctx: MigrationContext, step: Any, heads: set[str], run_args: Any) -> None:
    """``on_version_apply`` hook: write the SQLite header inside the step's own transaction."""
    if ctx.dialect.name != "sqlite":
        return  # servers: alembic_version alone is the version record
    version = max((int(head) for head in heads), default=0)
    ctx.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    ctx.execute(f"PRAGMA user_version = {version}")


def _include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Keep server-only bookkeeping (the insertion sequence) out of autogenerate's comparison."""
    if type_ == "column" and reflected and name in SERVER_ONLY_COLUMNS.get(obj.table.name, ()):
        return False
    if type_ in ("index", "unique_constraint") and reflected and name in SERVER_ONLY_INDEXES:
        return False
    return True


__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "HEAD_REVISION",
    "alembic_config",
    "downgrade",
    "ensure_schema",
    "peek_state",
    "read_state",
    "run_env",
    "script_location",
    "still_at_head",
    "upgrade",
]
