"""Where a store's data lives: engines shared per database, the file's permissions (which URL a
store opens, and how it is shown, is urls.py's job; its names are re-exported here).

One :class:`Database` exists per database URL in a process, shared by every ``TaskStore`` on
that URL, so that a web gateway constructing a store per request reuses one engine and its pooled
connections. The registry is reset in a forked child: SQLite and server connections must never
cross a ``fork()``.
"""

from __future__ import annotations

import os
import select
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection, PoolResetState

from .errors import (
    DatabaseError,
    DriverNotInstalledError,
    InvalidTaskError,
    NotADatabaseError,
    SchemaTooNewError,
    StoreError,
)
from .execution import (
    SQLITE_BUSY_SLICE_S,
    SQLITE_BUSY_TIMEOUT_S,
    KeptConnections,
    ServerTx,
    SQLiteTx,
    Tx,
    execute_waiting,
)

# Re-exported ("X as X"): the package, the CLI and the store use them as database.*.
from .urls import DB_FILENAME as DB_FILENAME
from .urls import DEFAULT_CACHE_DIR as DEFAULT_CACHE_DIR
from .urls import ENV_URL as ENV_URL
from .urls import SUPPORTED as SUPPORTED
from .urls import default_cache_dir as default_cache_dir
from .urls import mask as mask
from .urls import resolve_url as resolve_url
from .urls import scrub as scrub
from .urls import scrub_exception as scrub_exception
from .urls import secrets as secrets

#: Files that SQLite keeps beside a database, by suffix.
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
#: Longest ``clear_all`` waits for the operations of this process already running on the database.
GATE_WAIT_S = 120.0
#: Databases with no open store whose engines (and idle connections) are kept for reuse.
IDLE_DATABASES_KEPT = 8

#: Errors of drivers and of the pool that Database.translate() turns into the library's own.
TRANSLATED = (exc.DBAPIError, sqlite3.Error, exc.TimeoutError, UnicodeEncodeError)
# execution option that makes a migration connection's transactions start with BEGIN IMMEDIATE
WRITE_OPTION = "uniqc_store_write"


class _Gate:
    """Lets any number of operations in at once, or one exclusive holder (``clear_all``).

    Built on a plain lock, whose ``with`` CPython enters and leaves without running Python code
    in between, so a KeyboardInterrupt cannot leave it held (a ``Condition``'s Python-level
    ``__enter__`` can). The rare waits poll. An interrupt can still arrive between an
    operation's entry and its ``try``, leaving it counted; so the exclusive holder waits for
    running operations at most :data:`GATE_WAIT_S`, then gives up with an error rather than
    hang for ever.
    """

    _POLL_S = 0.005

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._exclusive = False

    def __enter__(self) -> None:
        while True:
            with self._lock:
                if not self._exclusive:
                    self._active += 1
                    return
            time.sleep(self._POLL_S)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        while True:
            with self._lock:
                if not self._exclusive:
                    self._exclusive = True
                    break
            time.sleep(self._POLL_S)
        try:
            deadline = time.monotonic() + GATE_WAIT_S
            while True:
                with self._lock:
                    if not self._active:
                        break
                if time.monotonic() >= deadline:
                    raise DatabaseError(
                        f"other operations of this process on the database are still running after "
                        f"{GATE_WAIT_S:.0f} s; nothing was deleted. Try again when they have finished."
                    )
                time.sleep(self._POLL_S)
            yield
        finally:
            with self._lock:
                self._exclusive = False


class _GatedUnit:
    """:meth:`Database.transaction` inside the database's gate, after ``prepare(db)`` (the
    store's schema check): :meth:`Database.unit`. A class rather than a generator, as
    :class:`~uniqc_store.execution.ServerTx` is: it is on every call's path."""

    __slots__ = ("_db", "_inner", "_prepare", "_single", "_write")

    def __init__(self, db: Database, prepare: Callable[[Database], None], write: bool, single: bool) -> None:
        self._db = db
        self._prepare = prepare
        self._write = write
        self._single = single
        self._inner: AbstractContextManager[Tx] | None = None

    def __enter__(self) -> Tx:
        gate = self._db.gate
        gate.__enter__()
        try:
            self._prepare(self._db)
            inner = self._inner = self._db.transaction(write=self._write, single=self._single)
            return inner.__enter__()
        except BaseException:
            self._inner = None
            gate.__exit__(None, None, None)
            raise

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool | None:
        try:
            assert self._inner is not None
            return self._inner.__exit__(exc_type, exc, traceback)
        finally:
            self._db.gate.__exit__(None, None, None)


class Database:
    """One database as this process uses it: its engine, its schema state and its locks.

    Attributes:
        url: The full URL (with password); never print it, use :attr:`display_url`.
        display_url: The URL with its password hidden.
        dialect: ``"sqlite"``, ``"postgresql"``, ``"mysql"`` or ``"mariadb"``.
        path: The SQLite file, or None on a server.
        engine: The engine of the store's own work (pooled, no connection events: the hot path).
        ready: True once the schema was found at head; cleared by ``clear_all`` and migrations.
    """

    def __init__(self, url: URL) -> None:
        self.url = url
        self.display_url = mask(url)
        self.dialect = url.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.path: Path | None = None
        if self.is_sqlite:
            assert url.database is not None  # resolve_url() gives every SQLite URL a file path
            self.path = Path(url.database)
        self.engine = _create_engine(url)
        # What transaction() translates: the server driver's own errors too (statements run on
        # its cursor there, not through SQLAlchemy, which would wrap them in exc.DBAPIError).
        self._errors: tuple[type[BaseException], ...] = TRANSLATED
        self.connections: KeptConnections | None = None
        #: SQLite: connections kept out of the pool between units of work, as on servers (the
        #: pool's checkout and checkin cost more than a one-row read): a file never drops one.
        self._kept: KeptConnections | None = None
        if not self.is_sqlite:
            self._errors += (self.engine.dialect.loaded_dbapi.Error,)
            self.connections = KeptConnections(self.engine, _idle_and_open, _in_transaction_test(self.dialect))
        else:
            self._kept = KeptConnections(self.engine, _always, _sqlite_in_transaction)
        self._migration_engine: Engine | None = None
        self._orm_engine: Engine | None = None
        self.ready = False
        self.file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file found at head
        self.schema_version: int | None = None  # its user_version then (set by schema.py)
        self.gate = _Gate()
        self.schema_mutex = threading.Lock()
        self.users = 0

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    @property
    def migration_engine(self) -> Engine:
        """Engine for migrations: unpooled, and on SQLite every transaction starts with an
        explicit ``BEGIN`` so that DDL is transactional (see :func:`_configure_sqlite`)."""
        if self._migration_engine is None:
            self._migration_engine = _create_engine(self.url, for_migrations=True)
        return self._migration_engine

    @property
    def orm_engine(self) -> Engine:
        """The engine of ``TaskStore.session()``: the store's own, whose pooled connections on a
        server run in autocommit mode, set back to the server's default isolation level while
        a session uses them (so that a session's queries share one transaction, as usual)."""
        if self.is_sqlite:
            return self.engine
        if self._orm_engine is None:
            level = self.engine.dialect.default_isolation_level  # known: the store has connected
            self._orm_engine = self.engine.execution_options(isolation_level=level)
        return self._orm_engine

    def unit(
        self, *, write: bool, single: bool, prepare: Callable[[Database], None]
    ) -> AbstractContextManager[Tx]:
        """:meth:`transaction` inside :attr:`gate`, after ``prepare(self)`` (the store's check
        that the schema is at head): every call of a store."""
        return _GatedUnit(self, prepare, write, single)

    def transaction(self, *, write: bool, single: bool = False) -> AbstractContextManager[Tx]:
        """One unit of work: begin, commit, roll back on any error, translate driver errors.

        Both run on a pooled DBAPI connection with pre-compiled SQL. SQLite: writes in
        ``BEGIN IMMEDIATE``, reads as single autocommit statements. Servers (autocommit
        connections): reads statement by statement, writes between ``BEGIN`` and ``COMMIT`` —
        except with ``single``, a write of one idempotent statement, which commits on its own
        (one round trip instead of three) and may be sent again after a lost connection (see
        :class:`~uniqc_store.execution.ServerTx`).
        Whatever ends the block, a KeyboardInterrupt or a signal handler's exception included,
        the connection goes back to the pool outside any transaction, or is discarded.
        """
        if self.connections is None:
            return self._sqlite_transaction(write)
        # A class-based context manager (no generator): on a server's one-round-trip read every
        # microsecond of the store's own shows (see benchmarks/bench_scale.py).
        return ServerTx(
            self.connections, self.translate, self._errors, write=write, begin=write and not single, retry_first=single
        )

    @contextmanager
    def _sqlite_transaction(self, write: bool) -> Iterator[Tx]:
        assert self._kept is not None
        try:
            raw = self._kept.get()
            try:
                cursor = cast(sqlite3.Cursor, raw.cursor())  # pysqlite's; typed as the generic DBAPICursor
                if cursor.connection.in_transaction:
                    _end_transaction(raw)  # left open by an interrupted earlier use
                if write:
                    # Take the write lock up front: upgrading a read lock later fails at once
                    # with SQLITE_BUSY in WAL mode, instead of waiting for the busy timeout.
                    execute_waiting(cursor, "BEGIN IMMEDIATE")
                    self._check_unchanged_schema(cursor)
                yield SQLiteTx(cursor, write=write)
                if write:
                    execute_waiting(cursor, "COMMIT")
            finally:
                try:
                    if raw.dbapi_connection is not None and raw.dbapi_connection.in_transaction:
                        _end_transaction(raw)
                finally:
                    self._kept.put(raw)  # kept if outside a transaction, else back to the pool
        except TRANSLATED as error:
            raise self.translate(error) from error

    @contextmanager
    def connect(self, *, migrations: bool = False) -> Iterator[Connection]:
        """A Core connection for schema work (the migration engine's if ``migrations``), with
        driver and pool errors translated as in :meth:`transaction`."""
        try:
            with (self.migration_engine if migrations else self.engine).connect() as conn:
                yield conn
        except TRANSLATED as error:
            raise self.translate(error) from error

    def prepare_file(self) -> None:
        """Create the SQLite file's directory (0700) and the empty file (0600) if missing.

        SQLite gives the ``-wal``/``-shm``/``-journal`` files the mode of the database file, so
        creating it 0600 here keeps every sibling private too, whatever the umask.
        """
        assert self.path is not None
        try:
            _make_private_dirs(self.path.parent)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as error:
            # resolve_url() checked the path; this is a race with another process, or a file
            # system that refuses what it allowed then (full, read-only, quota).
            failed = f" ({error.filename})" if error.filename and str(error.filename) != str(self.path) else ""
            raise DatabaseError(
                f"cannot create the database {self.path}{failed}: {error.strerror or error}"
            ) from error

    def file_changed(self) -> bool:
        """True if the SQLite file at :attr:`path` is gone or is no longer the one found at head."""
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.file_id

    def forget_file(self) -> None:
        """Let go of a file that was deleted or replaced behind our back (another process's
        ``clear_all``): later connections open whatever is at the path now. (SQLite checks that
        a file is unmoved before it checkpoints and deletes ``-wal``/``-shm`` on close, so
        closing the old file's connections leaves the new file's alone.)"""
        self.engine.dispose()
        self.file_id = None
        self.ready = False

    def has_connections(self) -> bool:
        """True if the store's engine holds any connection, idle or in use."""
        pool: Any = self.engine.pool
        held: int = pool.checkedin() + pool.checkedout()
        return held > 0

    def secure_file(self) -> None:
        """Record the file found at head, and make it and its siblings private (0600) if they
        are not: uniqc itself, or an earlier run under a loose umask, may have created them."""
        assert self.path is not None
        for name in (self.path.name, *(self.path.name + suffix for suffix in SQLITE_SIBLINGS)):
            path = self.path.parent / name
            try:
                if os.stat(path).st_mode & 0o077:
                    os.chmod(path, 0o600)
            except FileNotFoundError:
                continue
            except OSError as error:
                raise DatabaseError(f"cannot make {path} private: {error.strerror or error}") from error
        st = os.stat(self.path)
        self.file_id = (st.st_dev, st.st_ino)

    def close_connections(self) -> None:
        """Close every pooled connection of this process to the database and forget what was
        known about its schema (the next call checks it again)."""
        self.ready = False
        self.engine.dispose()
        if self._migration_engine is not None:
            self._migration_engine.dispose()
        self.file_id = None

    def delete_file(self) -> None:
        """Close every pooled connection, then delete the SQLite file and its siblings.

        The caller holds :attr:`gate` exclusively, so no connection is checked out; connections
        are closed before the files go, because SQLite deletes its ``-wal``/``-shm`` files by name
        when the last connection closes and would otherwise delete a new database's files.
        """
        assert self.path is not None
        self.close_connections()
        for name in (self.path.name, *(self.path.name + suffix for suffix in SQLITE_SIBLINGS)):
            try:
                (self.path.parent / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise DatabaseError(f"cannot delete {self.path.parent / name}: {error.strerror or error}") from error

    def _check_unchanged_schema(self, cursor: sqlite3.Cursor) -> None:
        # Under the write lock, so no other program can change it until we commit: never write
        # rows of our layout into a schema another program has migrated meanwhile.
        found = cursor.execute("PRAGMA user_version").fetchone()[0]
        if self.schema_version is not None and found != self.schema_version:
            self.ready = False  # the next call re-checks, and refuses or migrates as on open
            error = SchemaTooNewError if found > self.schema_version else DatabaseError
            raise error(
                f"{self.path} changed to user_version {found} while in use (this uniqc_store writes "
                f"{self.schema_version}); nothing was written. Another program migrated it: if it "
                "is newer, upgrade uniqc_store (pip install -U uniqc_store)."
            )

    def translate(self, error: BaseException) -> StoreError:
        """Turn one of :data:`TRANSLATED` into the library's own error, naming the database
        (password hidden).

        Credentials are scrubbed out of the message and, in place, out of ``error`` and every
        exception chained to it, since the caller raises the result ``from error``: a server
        quotes an ``init_command`` or ``options`` value it cannot run, for one.
        """
        hidden = secrets(self.url)
        scrub_exception(error, hidden)
        if isinstance(error, exc.TimeoutError):  # every pooled connection stayed busy
            return DatabaseError(f"{self.display_url}: no connection became free: {error}")
        if isinstance(error, UnicodeEncodeError):  # the driver met text that is not valid Unicode
            return InvalidTaskError(f"a value is not valid UTF-8 text: {error.reason}")
        orig = getattr(error, "orig", error)
        message = scrub(str(orig).strip(), hidden) or type(orig).__name__
        if self.is_sqlite and "file is not a database" in message:
            return NotADatabaseError(f"{self.path} is not an SQLite database ({message}); it was left untouched")
        return DatabaseError(f"{self.display_url}: {message}")


def _end_transaction(raw: Any) -> None:
    """Roll back the open transaction of a pooled SQLite connection; if even that fails (or is
    interrupted), discard the connection, which closes it and so releases its locks."""
    try:
        raw.dbapi_connection.rollback()
    except BaseException:
        raw.invalidate()
        raise


def _make_private_dirs(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _create_engine(url: URL, *, for_migrations: bool = False) -> Engine:
    backend = url.get_backend_name()
    pooling: dict[str, Any] = {"poolclass": NullPool} if for_migrations else {}
    try:
        if backend == "sqlite":
            if not pooling:
                # Connections to a file are cheap, and a thread waiting for the write lock
                # holds one: let the pool grow rather than time out before the busy timeout.
                # Database.transaction() ends what it began, whatever interrupts it; the pool's
                # rollback on return (a no-op outside a transaction, < 1 µs) is the second line.
                pooling = {"pool_size": 5, "max_overflow": -1, "pool_reset_on_return": "rollback"}
            # The store's connections wait in short slices (execute_waiting), so that Ctrl-C
            # takes effect promptly; migrations wait in SQLite, under the migration lock.
            timeout = SQLITE_BUSY_TIMEOUT_S if for_migrations else SQLITE_BUSY_SLICE_S
            engine = create_engine(
                url,
                connect_args={"timeout": timeout, "check_same_thread": False},
                hide_parameters=True,
                **pooling,
            )
            _configure_sqlite(engine, transactional_ddl=for_migrations)
            return engine
        if pooling:  # migrations: SQLAlchemy's transactions, as Alembic expects
            return create_engine(url, hide_parameters=True, **pooling)
        # The store's own: autocommit connections (ServerTx sends BEGIN/COMMIT around writes),
        # no pre-ping round trip (checked without one, see _configure_server), and no
        # rollback round trip on every return to the pool (PyMySQL sends one even when idle).
        engine = create_engine(
            url, hide_parameters=True, isolation_level="AUTOCOMMIT", pool_recycle=3600, pool_reset_on_return=None
        )
        _configure_server(engine)
        return engine
    except ImportError as error:
        driver, extra = SUPPORTED[backend]
        raise DriverNotInstalledError(
            f"{mask(url)}: the {driver} driver is not installed ({error}); "
            f"install it with: pip install 'uniqc_store[{extra}]'"
        ) from None


def _configure_sqlite(engine: Engine, *, transactional_ddl: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, connection_record: ConnectionPoolEntry) -> None:
        # pysqlite opens transactions implicitly and commits before DDL, which defeats
        # transactional DDL; take control of BEGIN ourselves (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Per-connection settings only: nothing here writes to the file, so a foreign file
        # that is about to be refused stays untouched. WAL is switched on once, in schema.py.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    if not transactional_ddl:
        return  # the store's own engine: Database.transaction() issues BEGIN itself

    # Only on the migration engine: a connection event listener slows every statement, but
    # Alembic begins its transactions through SQLAlchemy, so BEGIN has to be emitted here.
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_server(engine: Engine) -> None:
    in_transaction = _in_transaction_test(engine.dialect.name)

    if engine.dialect.name in ("mysql", "mariadb"):

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
            # Given status and backend, MariaDB may intersect the single-column indexes of both
            # and sort what matches (75 ms for a page at 200k tasks) rather than walk the index
            # made for that list (0.9 ms). Off for the store's own sessions only; unlike an index
            # hint, it cannot fail when an index has gone missing.
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET SESSION optimizer_switch = 'index_merge_intersection=off'")

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        # Instead of the pre-ping round trip: a connection the server has closed (restart, idle
        # timeout, killed session) has something to read — the server's goodbye, or the end of
        # the stream — while a live idle one has nothing. The pool replaces it with a new one.
        if not _idle_and_open(proxy):
            raise exc.DisconnectionError("the server closed the connection")

    @event.listens_for(engine, "reset")
    def _on_reset(dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        # Back into the pool outside any transaction, at the cost of a round trip only when one
        # is open (a write interrupted between its statements).
        if in_transaction(dbapi_connection):
            dbapi_connection.rollback()


def _always(raw: PoolProxiedConnection) -> bool:
    return True


def _sqlite_in_transaction(conn: sqlite3.Connection) -> bool:
    return conn.in_transaction


_MYSQL_IN_TRANSACTION = 0x0001  # SERVER_STATUS_IN_TRANS, a status flag of every MySQL protocol reply


def _in_transaction_test(dialect: str) -> Any:
    """A function telling, from the driver's state and without a round trip, whether a DBAPI
    connection of ``dialect`` is inside a transaction."""
    if dialect == "postgresql":
        from psycopg.pq import TransactionStatus

        return lambda conn: conn.pgconn.transaction_status != TransactionStatus.IDLE
    return lambda conn: bool(conn.server_status & _MYSQL_IN_TRANSACTION)


_POLLER = "uniqc_store.poller"  # key of a pooled server connection's poll object in its record's info


def _idle_and_open(raw: PoolProxiedConnection) -> bool:
    """True if the pooled connection's socket is open and has nothing to read (a poll, no round
    trip). The poll object is made once per DBAPI connection (the record's info is cleared when
    it reconnects)."""
    poll = raw.info.get(_POLLER)
    if poll is None:
        dbapi_connection: Any = raw.dbapi_connection
        try:
            if getattr(dbapi_connection, "closed", False):  # psycopg's flag
                return False
            sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL's socket, None once closed
            fd = sock.fileno() if sock is not None else dbapi_connection.fileno()
        except Exception:  # noqa: BLE001 - whatever fails here, the connection is of no use
            return False
        if fd < 0:
            return False
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            poll = raw.info[_POLLER] = lambda: bool(poller.poll(0))
        else:  # Windows
            poll = raw.info[_POLLER] = lambda: bool(select.select([fd], [], [], 0)[0])
    return not poll()


# ---------------------------------------------------------------------------------------------
# The per-process registry.

_registry: OrderedDict[str, Database] = OrderedDict()
# Re-entrant: a store's finalizer may call release() from a garbage collection inside acquire().
_registry_lock = threading.RLock()


def acquire(url: URL) -> Database:
    """Return the process's :class:`Database` for ``url``, creating it if needed, and count a user."""
    key = url.render_as_string(hide_password=False)
    with _registry_lock:
        database = _registry.get(key)
        if database is None:
            database = _registry[key] = Database(url)
        database.users += 1
        _registry.move_to_end(key)
        return database


def release(database: Database) -> None:
    """Count one user less; keep at most :data:`IDLE_DATABASES_KEPT` unused databases' engines."""
    with _registry_lock:
        database.users -= 1
        idle = [key for key, db in _registry.items() if db.users <= 0]
        for key in idle[: max(0, len(idle) - IDLE_DATABASES_KEPT)]:
            _registry.pop(key).engine.dispose()


@contextmanager
def opened(url: URL) -> Iterator[Database]:
    """Use the :class:`Database` for ``url`` for the duration of a ``with`` block."""
    database = acquire(url)
    try:
        yield database
    finally:
        release(database)


def _forget_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.RLock()
    for database in _registry.values():
        # close=False: drop the parent's connections without touching them from the child.
        for kept in (database.connections, database._kept):
            if kept is not None:
                kept.forget(close=False)
        database.engine.dispose(close=False)
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
