"""Running the store's statements inside :meth:`Database.transaction`.

The same Core statements serve every backend. On servers they run on a SQLAlchemy connection
(its compiled cache applies). On SQLite, the hot path, each is compiled once to SQL text and
run on the pooled DBAPI cursor: SQLAlchemy's per-execution machinery was most of the cost of a
``get`` (see benchmarks/bench_store.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

from .errors import WriteIntentError

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

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> None:
        """Execute ``stmt`` once per parameter dict in ``rows``."""


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
_compiled: dict[int, tuple[ClauseElement, str, dict[str, Any]]] = {}


def _sqlite_sql(stmt: ClauseElement) -> tuple[str, dict[str, Any]]:
    """SQL text of ``stmt`` for sqlite3, and the values bound inside it; cached per statement."""
    entry = _compiled.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=_SQLITE, compile_kwargs={"render_postcompile": True})
        entry = (stmt, compiled.string, {k: v for k, v in compiled.params.items() if v is not None})
        # The store prepares a bounded set of statements (store.py); the entry keeps its
        # statement alive, so an id is never reused while cached.
        if len(_compiled) < 1024:
            _compiled[id(stmt)] = entry
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
        sql, bound = _sqlite_sql(stmt)
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

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> None:
        if not self._write:
            raise write_in_read_transaction(stmt)
        sql, bound = _sqlite_sql(stmt)
        self._cursor.executemany(sql, [{**bound, **row} for row in rows] if bound else rows)


class CoreTx:
    """Statements on a SQLAlchemy Core connection (PostgreSQL, MySQL/MariaDB)."""

    __slots__ = ("_conn", "_write")

    def __init__(self, conn: Connection, *, write: bool) -> None:
        self._conn = conn
        self._write = write

    @property
    def connection(self) -> Connection:
        """The connection the statements run on (store.py sizes MySQL statements against it)."""
        return self._conn

    def rows(self, stmt: Statement, params: dict[str, Any] | None = None) -> Sequence[Any]:
        if stmt.is_dml and not self._write:
            raise write_in_read_transaction(stmt)
        return self._conn.execute(stmt, params).all()

    def rowcount(self, stmt: Statement, params: dict[str, Any] | None = None) -> int:
        if stmt.is_dml and not self._write:
            raise write_in_read_transaction(stmt)
        return self._conn.execute(stmt, params).rowcount

    def many(self, stmt: Statement, rows: list[dict[str, Any]]) -> None:
        if not self._write:
            raise write_in_read_transaction(stmt)
        self._conn.execute(stmt, rows)


def write_in_read_transaction(stmt: Statement) -> WriteIntentError:
    """The error for a statement that changes data run in a transaction opened to read: on
    SQLite it would commit on its own, outside the write lock and the schema check."""
    return WriteIntentError(
        f"a {type(stmt).__name__} statement ran in a transaction opened with write=False; "
        "this is a bug in the calling code: open the transaction with write=True"
    )
