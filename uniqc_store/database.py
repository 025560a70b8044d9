"""Where a store's data lives: URL resolution, engines shared per database, the file's permissions.

One :class:`Database` exists per database URL in a process, shared by every ``TaskStore`` on
that URL, so that a web gateway constructing a store per request reuses one engine and its pooled
connections. The registry is reset in a forked child: SQLite and server connections must never
cross a ``fork()``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import (
    DatabaseError,
    DriverNotInstalledError,
    InvalidTaskError,
    InvalidTaskTypeError,
    NotADatabaseError,
    UnsupportedDatabaseError,
)

ENV_URL = "UNIQC_STORE_URL"
DB_FILENAME = "tasks.sqlite"
DEFAULT_CACHE_DIR = Path.home() / ".uniqc" / "cache"

#: How long an SQLite connection waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Files that SQLite keeps beside a database, by suffix.
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
#: Databases with no open store whose engines (and idle connections) are kept for reuse.
IDLE_DATABASES_KEPT = 8

# dialect name -> (the one driver uniqc_store supports, the extra that installs it)
SUPPORTED = {
    "sqlite": ("pysqlite", None),
    "postgresql": ("psycopg", "postgresql"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
}
# execution option that makes an SQLite transaction start with BEGIN IMMEDIATE
WRITE_OPTION = "uniqc_store_write"


def default_cache_dir() -> Path:
    """Return ``~/.uniqc/cache`` for the current ``HOME`` (looked up at call time)."""
    return Path.home() / ".uniqc" / "cache"


def resolve_url(cache_dir: Path | str | None = None, url: str | URL | None = None) -> URL:
    """Return the database URL a store opens: ``url``, else ``cache_dir``, else ``$UNIQC_STORE_URL``,
    else the default SQLite file.

    Raises:
        InvalidTaskTypeError: an argument has the wrong type.
        InvalidTaskError: both arguments are given, or ``cache_dir`` is an existing regular file.
        UnsupportedDatabaseError: the URL is malformed or names an unsupported database or driver.
    """
    if cache_dir is not None and url is not None:
        raise InvalidTaskError("give either cache_dir or url, not both")
    if url is None and cache_dir is None:
        url = os.environ.get(ENV_URL) or None
    if url is not None:
        return _normalise_url(url)
    if cache_dir is None:
        directory = default_cache_dir()
    elif isinstance(cache_dir, (str, os.PathLike)):
        directory = Path(cache_dir).expanduser()
    else:
        raise InvalidTaskTypeError(f"cache_dir must be a path or a str, got {type(cache_dir).__name__}")
    if directory.exists() and not directory.is_dir():
        raise InvalidTaskError(f"cache_dir {str(directory)!r} is a file, not a directory")
    return URL.create("sqlite", database=str((directory / DB_FILENAME).absolute()))


def _normalise_url(url: str | URL) -> URL:
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except exc.ArgumentError as error:
            raise UnsupportedDatabaseError(f"not a database URL: {url!r}") from None
    elif isinstance(url, URL):
        parsed = url
    else:
        raise InvalidTaskTypeError(f"url must be a str or sqlalchemy URL, got {type(url).__name__}")
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: uniqc_store supports sqlite, postgresql+psycopg and mysql+pymysql "
            f"(or mariadb+pymysql), not {backend!r}"
        )
    driver, extra = SUPPORTED[backend]
    if parsed.drivername == backend:
        if backend != "sqlite":  # SQLAlchemy's default drivers for servers are not ours
            parsed = parsed.set(drivername=f"{backend}+{driver}")
    elif parsed.get_driver_name() != driver:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: the {parsed.get_driver_name()!r} driver is not supported; use {backend}+{driver}://"
        )
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise UnsupportedDatabaseError(
                f"{mask(parsed)}: uniqc_store needs an SQLite file path, e.g. sqlite:////path/to/tasks.sqlite"
            )
        parsed = parsed.set(database=str(Path(parsed.database).expanduser().absolute()))
    return parsed


def mask(url: URL) -> str:
    """Render ``url`` with its password hidden."""
    return url.render_as_string(hide_password=True)


class _Gate:
    """Lets any number of operations in at once, or one exclusive holder (``clear_all``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._exclusive = False

    def __enter__(self) -> None:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._active -= 1
            if not self._active:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Database:
    """One database as this process uses it: its engine, its schema state and its locks.

    Attributes:
        url: The full URL (with password); never print it, use :attr:`display_url`.
        display_url: The URL with its password hidden.
        dialect: ``"sqlite"``, ``"postgresql"``, ``"mysql"`` or ``"mariadb"``.
        path: The SQLite file, or None on a server.
        engine: Engine for reads (and for everything on servers).
        writer: The same engine whose SQLite transactions begin with ``BEGIN IMMEDIATE``.
        ready: True once the schema was found at head; cleared by ``clear_all``.
    """

    def __init__(self, url: URL) -> None:
        self.url = url
        self.display_url = mask(url)
        self.dialect = url.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.path = Path(url.database) if self.is_sqlite else None
        self.engine = _create_engine(url)
        self.writer = self.engine.execution_options(**{WRITE_OPTION: True})
        self.ready = False
        self.gate = _Gate()
        self.schema_mutex = threading.Lock()
        self.users = 0

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

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
            raise DatabaseError(f"cannot create the database {self.path}: {error.strerror or error}") from error

    def delete_file(self) -> None:
        """Close every pooled connection, then delete the SQLite file and its siblings.

        The caller holds :attr:`gate` exclusively, so no connection is checked out; connections
        are closed before the files go, because SQLite deletes its ``-wal``/``-shm`` files by name
        when the last connection closes and would otherwise delete a new database's files.
        """
        assert self.path is not None
        self.ready = False
        self.engine.dispose()
        for name in (self.path.name, *(self.path.name + suffix for suffix in SQLITE_SIBLINGS)):
            try:
                (self.path.parent / name).unlink()
            except FileNotFoundError:
                pass

    def translate(self, error: exc.DBAPIError) -> DatabaseError:
        """Turn a driver error into the library's own, naming the database (password hidden)."""
        message = str(error.orig).strip() or type(error.orig).__name__
        if self.is_sqlite and "file is not a database" in message:
            return NotADatabaseError(f"{self.path} is not an SQLite database ({message}); it was left untouched")
        return DatabaseError(f"{self.display_url}: {message}")


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


def _create_engine(url: URL) -> Engine:
    backend = url.get_backend_name()
    try:
        if backend == "sqlite":
            engine = create_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                hide_parameters=True,
            )
            _configure_sqlite(engine)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_recycle=3600, hide_parameters=True)
    except ImportError as error:
        driver, extra = SUPPORTED[backend]
        raise DriverNotInstalledError(
            f"{mask(url)}: the {driver} driver is not installed ({error}); "
            f"install it with: pip install 'uniqc_store[{extra}]'"
        ) from None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):  # type: ignore[no-untyped-def]
        # pysqlite opens transactions implicitly and commits before DDL, which defeats
        # transactional DDL; take control of BEGIN ourselves (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Per-connection settings only: nothing here writes to the file, so a foreign file
        # that is about to be refused stays untouched. WAL is switched on once, in schema.py.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writes take the write lock up front, so a transaction never has to upgrade a read
        # lock (which fails at once with SQLITE_BUSY in WAL mode instead of waiting).
        # Reads run without BEGIN: each is a single statement, atomic on its own.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


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
        database.engine.dispose(close=False)
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
