"""Running the store's statements inside :meth:`Database.transaction`.

The same Core statements serve every backend. Each is compiled once per dialect to SQL text and
run on a pooled DBAPI cursor: SQLAlchemy's per-execution machinery was most of the cost of a
``get`` on SQLite (see benchmarks/bench_store.py), and most of what the store added on servers
beyond the round trips (see benchmarks/bench_scale.py).

Servers' connections run in autocommit mode: a read is its one statement, one round trip; a
write transaction sends ``BEGIN`` and ``COMMIT`` itself. Before, a ``get`` cost four round trips
(the pool's pre-ping, ``BEGIN``, the ``SELECT``, ``ROLLBACK``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement

from .errors import DatabaseError, WriteIntentError

if TYPE_CHECKING:
    from sqlalchemy import Select, TextClause
    from sqlalchemy.sql.dml import UpdateBase
    from typing_extensions import Unpack

#: A SELECT of any columns.
AnySelect: TypeAlias = "Select[Unpack[tuple[Any, ...]]]"
#: What a transaction runs: statements that both compile (SQLite) and execute (servers).
Statement: TypeAlias = "AnySelect | UpdateBase | TextClause"


class Tx(Protocol):
    """The statements of one transaction; SQLite and servers run them differently."""

    def rows(self, stmt: Statement, params: dict[str, Any] | None = None) -> Sequence[Any]:
        """Execute ``stmt`` and return all its rows (sqlite3 tuples or SQLAlchemy ``Row``s)."""

    def rowcount(self, stmt: Statement, params: dict[str, Any] | None = None) -> int:
        """Execute ``stmt`` and return the number of rows it changed."""

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> int:
        """Execute ``stmt`` once per parameter dict in ``rows``; return the number of rows changed
        in all (sqlite3, psycopg and PyMySQL each add up the counts of an ``executemany``)."""


#: How long a statement waits for another connection's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: The busy timeout each store connection gives SQLite itself. A KeyboardInterrupt (or any
#: exception a signal handler raises) only takes effect once SQLite's C busy loop returns, so
#: the waiting is done in slices of this length by :func:`execute_waiting`, in Python.
SQLITE_BUSY_SLICE_S = 0.1
_SQLITE_BUSY = 5  # primary result code; extended codes (BUSY_RECOVERY ...) share the low byte


def is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return bool(code & 0xFF == _SQLITE_BUSY)
    return str(error).startswith("database is locked")


def execute_waiting(cursor: sqlite3.Cursor, sql: str, params: Any = ()) -> sqlite3.Cursor:
    """Run ``sql``, retrying while another connection holds a conflicting lock, for up to
    :data:`SQLITE_BUSY_TIMEOUT_S` in all.

    Only for statements that SQLite allows to be retried after ``SQLITE_BUSY``: those run
    outside an explicit transaction (reads, ``BEGIN IMMEDIATE``) and ``COMMIT``.
    """
    try:
        return cursor.execute(sql, params)
    except sqlite3.OperationalError as error:
        if not is_busy(error):
            raise
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            return cursor.execute(sql, params)
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise


# pysqlite's named paramstyle: a statement's parameters pass as the dict they already are.
_SQLITE = sqlite_dialect.dialect(paramstyle="named")
# {dialect name: {id(statement): (statement, SQL text, values bound inside it)}}
_compiled: dict[str, dict[int, tuple[ClauseElement, str, dict[str, Any]]]] = {}


def compiled_sql(stmt: ClauseElement, dialect: Dialect = _SQLITE) -> tuple[str, dict[str, Any]]:
    """SQL text of ``stmt`` for ``dialect``'s driver, and the values bound inside it; cached per
    statement and dialect. (The store's statements need no bind or result processing on its
    drivers: keys, times and JSON are text, numbers are integers.)"""
    cache = _compiled.get(dialect.name)
    if cache is None:
        cache = _compiled.setdefault(dialect.name, {})
    entry = cache.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        entry = (stmt, compiled.string, {k: v for k, v in compiled.params.items() if v is not None})
        # The store prepares a bounded set of statements (statements.py); the entry keeps its
        # statement alive, so an id is never reused while cached.
        if len(cache) < 1024:
            cache[id(stmt)] = entry
    return entry[1], entry[2]


class SQLiteTx:
    """Statements on an sqlite3 cursor, compiled once to SQL text (the measured hot path)."""

    __slots__ = ("_cursor", "_write")

    def __init__(self, cursor: sqlite3.Cursor, *, write: bool) -> None:
        self._cursor = cursor
        self._write = write

    def _execute(self, stmt: Statement, params: dict[str, Any] | None) -> sqlite3.Cursor:
        if stmt.is_dml and not self._write:
            raise write_in_read_transaction(stmt)
        sql, bound = compiled_sql(stmt)
        if bound:
            params = {**bound, **params} if params else bound
        if self._cursor.connection.in_transaction:
            # Inside BEGIN IMMEDIATE the write lock is already ours; SQLite does not allow
            # retrying a statement of an explicit transaction after SQLITE_BUSY anyway.
            return self._cursor.execute(sql, params or {})
        return execute_waiting(self._cursor, sql, params or {})

    def rows(self, stmt: Statement, params: dict[str, Any] | None = None) -> list[Any]:
        return self._execute(stmt, params).fetchall()

    def rowcount(self, stmt: Statement, params: dict[str, Any] | None = None) -> int:
        return self._execute(stmt, params).rowcount

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> int:
        if not self._write:
            raise write_in_read_transaction(stmt)
        sql, bound = compiled_sql(stmt)
        return self._cursor.executemany(sql, [{**bound, **row} for row in rows] if bound else rows).rowcount

    def command(self, sql: str) -> None:
        """Run ``sql`` (SQL text, no parameters; its rows are dropped), waiting while the file is
        busy: ``BEGIN`` and a first read that fix one snapshot for a whole copy (transfer.py)."""
        execute_waiting(self._cursor, sql).fetchall()


class KeptConnections:
    """An engine's pool with a short cut: up to :attr:`KEEP` connections stay checked out of it
    between units of work, idle, and go to the next unit of work after ``alive`` says yes (on a
    server, a poll of the socket; an SQLite file never drops one): SQLAlchemy's checkout and
    checkin cost more than the store's own work on a ``get``.

    A kept connection is never inside a transaction. Disposing of the engine closes them all
    (``engine_disposed``); after a ``fork()`` the child forgets them without closing
    (:meth:`forget`), as the engine forgets its own.
    """

    KEEP = 5

    def __init__(
        self,
        engine: Engine,
        alive: Callable[[PoolProxiedConnection], bool],
        in_transaction: Callable[[Any], bool],
    ) -> None:
        self.engine = engine
        self._alive = alive
        self._in_transaction = in_transaction
        #: The driver's base exception class.
        self.error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._idle: list[PoolProxiedConnection] = []
        event.listen(engine, "engine_disposed", lambda _: self.forget(close=True))

    def get(self) -> PoolProxiedConnection:
        while True:
            try:
                raw = self._idle.pop()  # atomic: no lock needed
            except IndexError:
                return self.engine.raw_connection()  # the pool's checkout polls the socket too
            if raw.dbapi_connection is not None and self._alive(raw):
                return raw
            raw.invalidate()  # closed by the server while idle: a new one replaces it

    def put(self, raw: PoolProxiedConnection) -> None:
        dbapi = raw.dbapi_connection
        if dbapi is None or len(self._idle) >= self.KEEP or self._in_transaction(dbapi):
            raw.close()  # back to the pool, which rolls back an open transaction (database.py)
        else:
            self._idle.append(raw)

    def forget(self, *, close: bool) -> None:
        """Let every kept connection go: closed, or (in a forked child) only dropped."""
        idle, self._idle = self._idle, []
        if close:
            for raw in idle:
                raw.invalidate()


_CURSOR = "uniqc_store.cursor"  # key of a pooled server connection's cursor in its record's info
_KEPT_ROWS = 1000  # a cursor whose last result had more rows is closed rather than kept


class ServerTx:
    """Statements on a pooled server connection (PostgreSQL, MySQL/MariaDB) in autocommit mode.

    ``begin``: the transaction sends ``BEGIN`` before its first statement and ``COMMIT`` in
    :meth:`finish`; without it each statement commits on its own (reads, and writes of a single
    statement, which is atomic by itself).

    A server restart, an idle timeout or a killed session leaves dead connections in the pool.
    The pool's checkout notices most of them without a round trip (database.py); one that died
    after that check fails on its first statement. That statement, when nothing has been done on
    the connection yet, is sent again once on a fresh connection if it is safe to repeat: ``BEGIN``,
    a read, or (``retry_first``) a write the caller knows to be idempotent — if it was applied
    and only the reply was lost, applying it again changes nothing. Later statements, ``COMMIT``
    included, are never repeated: their error is raised (a lost ``COMMIT`` may have committed).
    """

    __slots__ = (
        "_begin", "_connections", "_cursor", "_engine", "_error", "_raw", "_retry", "_translatable", "_translate",
        "_used", "_write",
    )  # fmt: skip

    def __init__(
        self,
        connections: KeptConnections,
        translate: Callable[[BaseException], Exception],
        translatable: tuple[type[BaseException], ...],
        *,
        write: bool,
        begin: bool,
        retry_first: bool,
    ) -> None:
        self._connections = connections
        self._translate = translate  # a driver or pool error -> the library's own
        self._translatable = translatable
        self._engine = connections.engine
        self._write = write
        self._begin = begin
        self._retry = retry_first or begin or not write
        self._error = connections.error
        self._used = False  # a statement of this transaction reached the server and was answered
        self._raw: PoolProxiedConnection | None = None
        self._cursor: Any = None

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    @property
    def connection(self) -> PoolProxiedConnection:
        """The pooled connection the statements run on (packets.py sizes MySQL statements on it)."""
        assert self._raw is not None
        return self._raw

    def __enter__(self) -> ServerTx:
        try:
            try:
                self.open()
            except BaseException as error:
                self.close(error)
                raise
        except self._translatable as error:
            raise self._translate(error) from error
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        failure = exc
        try:
            try:
                if failure is None:
                    self.finish()
            except BaseException as error:
                failure = error
                raise
            finally:
                self.close(failure)
        except self._translatable as error:
            raise self._translate(error) from error
        if failure is not None and _interrupted(failure):
            # The driver swallowed an interrupt (psycopg: "cannot exit pipeline mode while
            # busy", raised while handling a KeyboardInterrupt): it is the interrupt that ends
            # the call. (The connection was discarded above.)
            raise failure.__context__ from None  # type: ignore[misc]
        if failure is not None and isinstance(failure, self._translatable):
            raise self._translate(failure) from failure

    def open(self) -> None:
        """Check a connection out of the pool, and send ``BEGIN`` if the transaction has one."""
        self._checkout()
        if self._begin:
            self._send("BEGIN", None)

    def finish(self) -> None:
        """Commit, if the transaction began with ``BEGIN``.

        Raises:
            DatabaseError: the connection was lost while committing: the server may have
                applied the transaction or not, and the message says so.
        """
        if not self._begin:
            return
        try:
            self._send("COMMIT", None)  # never repeated: BEGIN was answered
        except self._error as error:
            if not self._lost(error):
                raise
            assert self._raw is not None
            self._raw.invalidate(error)  # dead: close() lets it go
            translated = self._translate(error)
            raise DatabaseError(
                f"{translated} — the connection was lost while committing, so this call's writes may "
                "have been applied or not: read the records back before doing it again"
            ) from error

    def close(self, failure: BaseException | None) -> None:
        """Return the connection to the pool; discard it instead if ``failure`` may have left it
        unusable: an interrupt (KeyboardInterrupt, a signal handler's exception) can stop the
        driver half-way through a message, and a lost connection is dead. An open transaction
        is rolled back on the way back into the pool (database.py)."""
        raw = self._raw
        if raw is None:
            return
        try:
            if failure is not None and (
                not isinstance(failure, Exception) or self._lost(failure) or _interrupted(failure)
            ):
                raw.invalidate(failure if isinstance(failure, Exception) else None)
                raw.close()
            else:
                self._connections.put(raw)
        finally:
            self._raw = self._cursor = None

    def _checkout(self) -> Any:
        self._raw = self._connections.get()
        self._cursor = None
        return self._kept_cursor()

    def _kept_cursor(self) -> Any:
        # One cursor per DBAPI connection, made once (a psycopg cursor costs microseconds to
        # build); the connection record's info is cleared when it reconnects.
        assert self._raw is not None
        info = self._raw.info
        cursor = info.get(_CURSOR)
        if cursor is None:
            cursor = info[_CURSOR] = self._raw.cursor()
        self._cursor = cursor
        return cursor

    def _drop_cursor(self) -> None:
        cursor, self._cursor = self._cursor, None
        if self._raw is not None:
            self._raw.info.pop(_CURSOR, None)
        if cursor is not None:
            cursor.close()

    def _lost(self, error: BaseException) -> bool:
        raw = self._raw
        return isinstance(error, self._error) and self._engine.dialect.is_disconnect(
            cast(Any, error), raw.dbapi_connection if raw is not None else None, self._cursor
        )

    def _send(self, sql: str, params: dict[str, Any] | None) -> Any:
        cursor = self._cursor if self._cursor is not None else self._kept_cursor()
        try:
            cursor.execute(sql, params)
        except Exception as error:
            if self._used or not self._retry or not self._lost(error):
                raise
            # A connection that died in the pool: nothing of this transaction has been done.
            assert self._raw is not None
            self._raw.invalidate(error)
            self._raw.close()
            self._raw = None
            # Whatever killed it (a restart, every session killed) may have killed the other
            # idle connections too, in ways a poll of their sockets does not show yet: retry on
            # a new one. Disposing closes the idle ones; connections in use go on, then close.
            self._engine.dispose()
            cursor = self._checkout()
            cursor.execute(sql, params)
        self._used = True
        return cursor

    def _execute(self, stmt: Statement, params: dict[str, Any] | None) -> Any:
        if stmt.is_dml and not self._write:
            raise write_in_read_transaction(stmt)
        sql, bound = compiled_sql(stmt, self._engine.dialect)
        if bound:
            params = {**bound, **params} if params else bound
        return self._send(sql, params)

    def rows(self, stmt: Statement, params: dict[str, Any] | None = None) -> Sequence[Any]:
        rows: Sequence[Any] = self._execute(stmt, params).fetchall()
        if len(rows) > _KEPT_ROWS:
            self._drop_cursor()  # a kept cursor keeps its last result; let a large one go
        return rows

    def rowcount(self, stmt: Statement, params: dict[str, Any] | None = None) -> int:
        count: int = self._execute(stmt, params).rowcount
        return count

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> int:
        if not self._write:
            raise write_in_read_transaction(stmt)
        sql, bound = compiled_sql(stmt, self._engine.dialect)
        self._used = True  # never repeated: it may have been applied in part
        cursor = self._cursor
        cursor.executemany(sql, [{**bound, **row} for row in rows] if bound else rows)
        count: int = cursor.rowcount
        return count

    def stream(self, stmt: AnySelect, params: dict[str, Any], size: int) -> Iterator[Sequence[Any]]:
        """Yield the rows of ``stmt`` in batches of at most ``size``; on PostgreSQL from a
        server-side cursor (memory stays bounded on this side), inside a transaction of its own
        that the connection's return to the pool ends."""
        sql, bound = compiled_sql(stmt, self._engine.dialect)
        if bound:
            params = {**bound, **params}
        if self._engine.dialect.name != "postgresql":
            cursor = self._send(sql, params)
            try:
                while rows := cursor.fetchmany(size):
                    yield rows
            finally:
                self._drop_cursor()
            return
        self._send("BEGIN", None)  # a server-side cursor lives in a transaction
        dbapi_connection: Any = self.connection.dbapi_connection
        cursor = dbapi_connection.cursor(name="uniqc_store_stream")
        try:
            cursor.itersize = size
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

    def scalar(self, sql: str) -> Any:
        """The first column of the first row of ``sql`` (driver SQL text, no parameters)."""
        return self._send(sql, None).fetchone()[0]

    def command(self, sql: str) -> None:
        """Send ``sql`` (driver SQL text, no parameters, no rows): the ``BEGIN`` of a snapshot read
        that spans a whole copy (transfer.py); the connection's return to the pool ends it."""
        self._send(sql, None)


def _interrupted(error: BaseException) -> bool:
    """Whether ``error`` was raised while handling an interrupt (KeyboardInterrupt, a signal
    handler's exception), which it then hid."""
    context = error.__context__
    return context is not None and not isinstance(context, (Exception, GeneratorExit))


def write_in_read_transaction(stmt: Statement) -> WriteIntentError:
    """The error for a statement that changes data run in a transaction opened to read: on
    SQLite it would commit on its own, outside the write lock and the schema check."""
    return WriteIntentError(
        f"a {type(stmt).__name__} statement ran in a transaction opened with write=False; "
        "this is a bug in the calling code: open the transaction with write=True"
    )
