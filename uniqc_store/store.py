"""``TaskStore``: the repository of task records, on SQLite (default) or a database server."""

from __future__ import annotations

import builtins
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import BigInteger, ColumnClause, Delete, Insert, Table, bindparam, delete, func, literal_column, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.sql import ClauseElement

from . import database, schema
from .errors import DatabaseError, InvalidTaskError, InvalidTaskTypeError
from .execution import AnySelect, CoreTx, Tx
from .models import Task
from .records import (
    TERMINAL_STATUSES,
    TaskInfo,
    check_limit,
    check_text,
    status_value,
    status_values,
    task_from_row,
    task_row,
    utc_now,
)

_table = cast(Table, Task.__table__)  # typed as FromClause: Task, declared by __tablename__, maps a Table
_COLUMNS = [_table.c[name] for name in (
    "task_id", "backend", "status", "shots", "submit_time", "update_time", "result_json", "metadata_json",
)]
# Everything but the key and submit_time, which keeps its first value on update.
_UPDATED = [c.name for c in _COLUMNS if c.name not in ("task_id", "submit_time")]
_NO_LIMIT = 2**63 - 1


def _upsert(dialect: str) -> Insert:
    """Each dialect's native upsert, keeping the first submit_time."""
    if dialect in ("mysql", "mariadb"):
        on_duplicate = mysql.insert(_table)
        return on_duplicate.on_duplicate_key_update({name: on_duplicate.inserted[name] for name in _UPDATED})
    on_conflict = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(_table)
    return on_conflict.on_conflict_do_update(
        index_elements=["task_id"], set_={name: on_conflict.excluded[name] for name in _UPDATED}
    )


class _Statements:
    """The statements of one dialect, each built once: SQLAlchemy's compiled cache (servers) and
    the SQLite SQL cache (execution.py, keyed by the statement's id) then always hit, and nothing
    is rebuilt per call.

    The variants of ``list``, ``count`` and ``clear`` are built on first use and kept in dicts of
    this instance, one per dialect for the life of the process; ``setdefault`` keeps the first
    one built, so racing threads all get the same statement object.
    """

    def __init__(self, dialect: str) -> None:
        # Ties of submit_time: the most recently inserted first, by SQLite's rowid or the
        # servers' database-numbered seq column (see revision 0001).
        self._tie: ColumnClause[Any] = literal_column("rowid" if dialect == "sqlite" else "tasks.seq")
        self.upsert = _upsert(dialect)
        self.get = select(*_COLUMNS).where(_table.c.task_id == bindparam("task_id"))
        self.delete = delete(_table).where(_table.c.task_id == bindparam("task_id"))
        self.delete_all = delete(_table)
        self.count_by_status = (
            select(_table.c.status, func.count()).group_by(_table.c.status).order_by(_table.c.status)
        )
        self._lists: dict[tuple[bool, bool, bool, bool], AnySelect] = {}
        self._counts: dict[tuple[bool, bool], AnySelect] = {}
        self._clears: dict[tuple[str, ...], Delete] = {}

    def list(self, status: bool, backend: bool, limit: bool, offset: bool) -> AnySelect:
        key = (status, backend, limit, offset)
        stmt = self._lists.get(key)
        if stmt is None:
            stmt = _where(select(*_COLUMNS), status, backend)
            stmt = stmt.order_by(_table.c.submit_time.desc(), self._tie.desc())
            if limit:
                stmt = stmt.limit(bindparam("limit", type_=BigInteger))
            if offset:
                stmt = stmt.offset(bindparam("offset", type_=BigInteger))
            stmt = self._lists.setdefault(key, stmt)
        return stmt

    def count(self, status: bool, backend: bool) -> AnySelect:
        key = (status, backend)
        stmt = self._counts.get(key)
        if stmt is None:
            stmt = self._counts.setdefault(key, _where(select(func.count()).select_from(_table), status, backend))
        return stmt

    def clear(self, statuses: tuple[str, ...]) -> Delete:
        stmt = self._clears.get(statuses)
        if stmt is None:
            stmt = self._clears.setdefault(statuses, delete(_table).where(_table.c.status.in_(statuses)))
        return stmt


def _where(stmt: AnySelect, status: bool, backend: bool) -> AnySelect:
    if status:
        stmt = stmt.where(_table.c.status == bindparam("status"))
    if backend:
        stmt = stmt.where(_table.c.backend == bindparam("backend"))
    return stmt


_statements: dict[str, _Statements] = {}


# -- MySQL/MariaDB: every statement within the server's max_allowed_packet ------------------------
#
# PyMySQL sends a statement as text, its values quoted and escaped in it, and the server drops the
# connection ("MySQL server has gone away") when the statement is not smaller than
# max_allowed_packet. So the size of every statement is checked before anything is sent.

_PACKET_INFO = "uniqc_store.max_allowed_packet"  # per DBAPI connection: (limit, statement text)
_MAX_PACKET_CEILING = 1 << 30  # the largest max_allowed_packet MySQL and MariaDB accept


def _packet_batches(
    db: database.Database,
    conn: Connection,
    stmt: ClauseElement,
    rows: builtins.list[dict[str, Any]],
    label: Callable[[int], str],
) -> builtins.list[builtins.list[dict[str, Any]]]:
    """Split ``rows`` into batches whose ``executemany`` sends no statement the server would refuse.

    ``label(i)`` names row ``i`` in an error. The session's ``max_allowed_packet`` is read once per
    connection (a ``SET GLOBAL`` reaches only new connections).

    Raises:
        InvalidTaskError: a row alone makes a statement too large; nothing has been sent.
    """
    limit, sql = _packet_limit(conn, stmt)
    # What the server accepts: the statement's bytes plus the protocol's command byte must stay
    # below max_allowed_packet (measured on MariaDB 10.11: a 16777214-byte query passes at 16 MiB,
    # one byte more is refused).
    largest = limit - 2
    batches: builtins.list[builtins.list[dict[str, Any]]] = []
    batch: builtins.list[dict[str, Any]] = []
    total = 0
    for index, row in enumerate(rows):
        size = len(sql) + _size_bound(row)
        if size > largest:  # near the limit: measure exactly what PyMySQL would send
            size = _sent_size(conn, sql, row)
            if size > largest:
                raise _too_large(db, conn, row, label(index), size, limit)
        # PyMySQL turns executemany into multi-row INSERTs of consecutive rows, each no longer
        # than the single-row statements of its rows added up; batches are cut on that sum.
        if batch and total + size > largest:
            batches.append(batch)
            batch, total = [], 0
        batch.append(row)
        total += size
    batches.append(batch)
    return batches


def _core(tx: Tx) -> Connection:
    assert isinstance(tx, CoreTx)
    return tx.connection


def _packet_limit(conn: Connection, stmt: ClauseElement) -> tuple[int, str]:
    cached = conn.info.get(_PACKET_INFO)
    if cached is None:
        limit = int(conn.exec_driver_sql("SELECT @@session.max_allowed_packet").scalar_one())
        cached = conn.info[_PACKET_INFO] = (limit, stmt.compile(dialect=conn.dialect).string)
    return cached


def _size_bound(row: dict[str, Any]) -> int:
    # utf-8 takes at most 4 bytes a character, and escaping at most doubles an ASCII character;
    # numbers and NULL take fewer than 24. (The statement text's placeholders, counted in full
    # by the caller, are longer than nothing.)
    return sum(4 * len(value) + 2 if isinstance(value, str) else 24 for value in row.values())


def _sent_size(conn: Connection, sql: str, params: Any) -> int:
    """Bytes of the statement PyMySQL sends for ``sql`` with ``params``, exactly as it builds it
    (its escaping follows the connection's charset and sql_mode)."""
    raw: Any = conn.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        return len(cursor.mogrify(sql, params).encode(raw.encoding, "surrogateescape"))
    finally:
        cursor.close()


def _too_large(
    db: database.Database, conn: Connection, row: dict[str, Any], label: str, size: int, limit: int
) -> InvalidTaskError:
    fields = {
        name: 0 if row[column] is None else _sent_size(conn, "%s", (row[column],))
        for name, column in (("result", "result_json"), ("metadata", "metadata_json"))
    }
    field = max(fields, key=fields.__getitem__)
    needed = size + 2
    if needed > _MAX_PACKET_CEILING:
        remedy = (
            f"No server takes a statement this large (max_allowed_packet is at most {_MAX_PACKET_CEILING:,}): "
            f"make the {field} smaller."
        )
    else:
        suggested = -(-needed // (1 << 20)) << 20  # whole MiB
        remedy = (
            f"To store it, raise the limit as the server's administrator, e.g. SET GLOBAL "
            f"max_allowed_packet={suggested}; (new connections get it: restart this program; set "
            f"max_allowed_packet in the server's configuration to keep it), or make the {field} smaller."
        )
    return InvalidTaskError(
        f"{label}: {field} is too large for {db.display_url}: saving it takes a statement of {size:,} bytes "
        f"(result {fields['result']:,} bytes, metadata {fields['metadata']:,} bytes as sent: JSON, utf-8, "
        f"quoted and escaped), and the server's max_allowed_packet of {limit:,} bytes allows statements "
        f"of at most {limit - 2:,} bytes. Nothing was written. {remedy}"
    )


class TaskStore:
    """Storage for task records, on an SQLite file or a PostgreSQL / MySQL / MariaDB server.

    Safe to construct many times against the same database, and to share between threads:
    stores on the same URL in one process share one engine and its pooled connections.

    Args:
        cache_dir: Directory that holds ``tasks.sqlite`` (created 0700 if missing).
        url: A database URL instead: ``sqlite:////path/file.sqlite``,
            ``postgresql+psycopg://...`` or ``mysql+pymysql://...``.
            Without either, ``$UNIQC_STORE_URL`` if set, else ``~/.uniqc/cache/tasks.sqlite``.

    Attributes:
        cache_dir: The SQLite file's directory (None on a server).
        db_path: The SQLite file (None on a server).
        url: The database URL, password hidden.

    Raises:
        InvalidTaskError: bad arguments (both given, ``cache_dir`` is a file ...).
        UnsupportedDatabaseError, DriverNotInstalledError: the URL cannot be served.
        DatabaseRefusedError: the database is not ours, or newer than this library; untouched.
        MigrationError: bringing the schema to head failed; the failing revision was rolled back
            (on MySQL/MariaDB only partly: the message says what may remain).
    """

    cache_dir: Path | None
    db_path: Path | None
    url: str

    def __init__(self, cache_dir: Path | str | None = None, *, url: str | URL | None = None) -> None:
        resolved = database.resolve_url(cache_dir, url)
        db = self._db = database.acquire(resolved)
        self._release = weakref.finalize(self, database.release, db)
        self.url = db.display_url
        self.db_path = db.path
        self.cache_dir = db.path.parent if db.path is not None else None
        self._sql = _statements.get(db.dialect) or _statements.setdefault(db.dialect, _Statements(db.dialect))
        self._packet_limited = db.dialect in ("mysql", "mariadb")  # see _packet_batches
        self._closed = False
        with db.gate:
            # Once this process has found the database at head, another store on it costs one
            # stat and one tiny query (a web gateway builds a store per request).
            if not (db.ready and schema.still_at_head(db)):
                schema.ensure_schema(db)

    def __repr__(self) -> str:
        return f"TaskStore(url={self.url!r})"

    __str__ = __repr__

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop using this store; later calls raise :class:`DatabaseError`. Idempotent."""
        self._closed = True
        self._release()

    def _usable(self) -> database.Database:
        if self._closed:
            raise DatabaseError(f"{self!r} is closed")
        return self._db

    @staticmethod
    def _bring_to_head(db: database.Database) -> None:
        """Check the schema (again) when needed; the caller holds ``db.gate``."""
        # The stat notices a file deleted or replaced by another process (a few µs).
        if not db.ready or (db.is_sqlite and db.file_changed()):
            schema.ensure_schema(db)

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Tx]:
        """Run one unit of work: begin, commit, roll back on any error, translate driver errors."""
        db = self._usable()
        with db.gate:
            self._bring_to_head(db)
            with db.transaction(write=write) as tx:
                yield tx

    # -- writes ----------------------------------------------------------------------------------

    def save(self, task_info: TaskInfo) -> None:
        """Insert or update a task record (by ``task_id``).

        Stamps ``task_info.update_time`` with the current time and persists that same value. On
        update every field changes except ``submit_time``, which keeps its first value.

        Raises:
            InvalidTaskTypeError, InvalidTaskError: a field is invalid (the message names it);
                nothing is written. On MySQL/MariaDB also when ``result`` or ``metadata`` is too
                large for the server's ``max_allowed_packet``.
        """
        now = utc_now()
        row = task_row(task_info, now)
        with self._transaction(write=True) as tx:
            if self._packet_limited:
                _packet_batches(self._db, _core(tx), self._sql.upsert, [row], lambda _: f"task {row['task_id']!r}")
            tx.rowcount(self._sql.upsert, row)
        task_info.update_time = now

    def save_many(self, tasks: Iterable[TaskInfo]) -> None:
        """Insert or update many task records in one transaction, as :meth:`save` does each.

        All or nothing: if any task is invalid, nothing is written and no ``update_time`` changes.

        Raises:
            InvalidTaskTypeError: ``tasks`` is not iterable, or an entry is not a :class:`TaskInfo`.
            InvalidTaskTypeError, InvalidTaskError: a field is invalid (or, on MySQL/MariaDB, too
                large for the server's ``max_allowed_packet``); the message starts with ``tasks[i]:``
                and names the field.
        """
        try:
            entries = iter(tasks)
        except TypeError:
            hint = "; use save() for a single task" if isinstance(tasks, TaskInfo) else ""
            raise InvalidTaskTypeError(
                f"tasks must be an iterable of TaskInfo, got {type(tasks).__name__}{hint}"
            ) from None
        tasks = builtins.list(entries)
        now = utc_now()
        rows = []
        for index, task in enumerate(tasks):
            try:
                rows.append(task_row(task, now))
            except ValueError as error:  # also the TypeError subclass
                raise type(error)(f"tasks[{index}]: {error}") from None
        if not rows:
            return
        with self._transaction(write=True) as tx:
            if self._packet_limited:
                batches = _packet_batches(
                    self._db, _core(tx), self._sql.upsert, rows, lambda i: f"tasks[{i}]: task {rows[i]['task_id']!r}"
                )
            else:
                batches = [rows]
            for batch in batches:  # all sized before the first is sent: one transaction still
                tx.many(self._sql.upsert, batch)
        for task in tasks:
            task.update_time = now

    def delete(self, task_id: str) -> bool:
        """Remove a single task. Returns True if it existed."""
        task_id = check_text(task_id, "task_id")
        with self._transaction(write=True) as tx:
            return tx.rowcount(self._sql.delete, {"task_id": task_id}) > 0

    def clear_completed(self, terminal_statuses: Iterable[str] = TERMINAL_STATUSES) -> int:
        """Delete tasks whose status is in ``terminal_statuses``; return how many were deleted."""
        values = tuple(sorted(set(status_values(terminal_statuses))))
        if not values:
            return 0
        with self._transaction(write=True) as tx:
            return tx.rowcount(self._sql.clear(values))

    def clear_all(self) -> None:
        """Delete every task.

        SQLite: deletes the database file and its ``-wal``/``-shm``/``-journal`` siblings, after
        closing every pooled connection to it in this process; the next call (on any store)
        creates a fresh, fully migrated file. Servers: deletes every row, keeping the schema.
        """
        db = self._db
        if db.is_sqlite and not self._closed:
            with db.gate.exclusive(), db.schema_mutex:
                db.delete_file()
            return
        with self._transaction(write=True) as tx:
            tx.rowcount(self._sql.delete_all)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        """Return a task by id, or None if missing."""
        task_id = check_text(task_id, "task_id")
        with self._transaction() as tx:
            rows = tx.rows(self._sql.get, {"task_id": task_id})
        return task_from_row(rows[0]) if rows else None

    def list(
        self,
        *,
        status: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[TaskInfo]:
        """List tasks, newest first by ``submit_time``; equal times: most recently inserted first.

        Raises:
            InvalidTaskError: unknown status, or negative ``limit``/``offset``.
        """
        params = self._filters(status, backend)
        limit = check_limit(limit, "limit")
        offset = check_limit(offset, "offset") or None
        if offset is not None:
            params["offset"] = offset
            if limit is None:
                limit = _NO_LIMIT  # not every backend takes OFFSET without LIMIT
        if limit is not None:
            params["limit"] = limit
        stmt = self._sql.list("status" in params, "backend" in params, limit is not None, offset is not None)
        with self._transaction() as tx:
            rows = tx.rows(stmt, params)
        return [task_from_row(row) for row in rows]

    def count(self, *, status: str | None = None, backend: str | None = None) -> int:
        """Count tasks, optionally only those with ``status`` and/or on ``backend``."""
        params = self._filters(status, backend)
        with self._transaction() as tx:
            count: int = tx.rows(self._sql.count("status" in params, "backend" in params), params)[0][0]
        return count

    def count_by_status(self) -> dict[str, int]:
        """Return ``{status: number of tasks}`` for the statuses present."""
        with self._transaction() as tx:
            return dict(tx.rows(self._sql.count_by_status))

    def schema_info(self) -> dict[str, Any]:
        """Return where the store is and its schema version (revision, and on SQLite the header)."""
        db = self._usable()
        with db.gate:
            self._bring_to_head(db)
            state = schema.current_state(db)
        info: dict[str, Any] = {"url": self.url, "revision": state.revision}
        if self._db.is_sqlite:
            info.update(
                path=str(self.db_path),
                user_version=state.user_version,
                application_id=f"0x{state.application_id:08X}",
            )
        return info

    @staticmethod
    def _filters(status: str | None, backend: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if status is not None:
            params["status"] = status_value(status)
        if backend is not None:
            params["backend"] = check_text(backend, "backend")
        return params
