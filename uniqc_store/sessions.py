"""ORM sessions on a store's database (``TaskStore.session()``), held to the store's rules.

A session reads the declarative models. One opened with ``write=True`` may also write them, but
only as the store's own methods write: every new or changed instance is checked at flush as
``save``/``save_shard`` check a record (rows.py's :func:`~uniqc_store.rows.row_of`), the archive
keeps its shape (no archived shard without its archived task, no archived task that is also
live), and its writes run in a write transaction of the store's kind — after the store's opening
checks, with SQLite's write lock taken by ``BEGIN IMMEDIATE`` in interruptible slices and
``user_version`` re-read under it. Anything that cannot be checked row by row (SQL text, Core
``INSERT``/``UPDATE`` statements anywhere in a statement — a data-modifying CTE too —, DDL, the
legacy ``bulk_*`` methods) is refused unless the session was opened with ``raw_sql=True``.

Three guards enforce this. ``do_orm_execute`` refuses a statement before the session even takes
a connection; a ``before_cursor_execute`` listener on each connection the session uses catches
what does not pass through the session (``session.connection().execute(...)``) and begins the
write transaction at the first statement that writes; only a flush of the session itself
(:meth:`_StoreSession.flush`) may write row by row. A read-only session is also read-only at the
database: its transactions are ``READ ONLY`` on PostgreSQL and MySQL/MariaDB, and its SQLite
connection runs with ``PRAGMA query_only`` until it goes back to the pool.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import TextClause, event, exists, inspect, select
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Delete, Insert, Update, UpdateBase

from . import database
from .errors import (
    DatabaseError,
    InvalidTaskError,
    InvalidTaskTypeError,
    TaskConflictError,
    TaskNotFoundError,
    WriteIntentError,
)
from .execution import execute_waiting
from .models import ArchivedShard, ArchivedTask, Shard, Task
from .records import utc_now
from .rows import ARCHIVED_SHARDS, ARCHIVED_TASKS, STAMPED, TASKS, label_of, row_of

_MODELS = (Task, ArchivedTask, Shard, ArchivedShard)

_READ_ONLY = (
    "a store's session opened without write=True only reads; change records with the store's "
    "methods (save, save_shard, delete, archive_task ...), or open store.session(write=True)"
)
_UNCHECKED = (
    "cannot be checked row by row, so a store's session does not run it; load the instances and "
    "change them (each is checked at flush), or open store.session(write=True, raw_sql=True) to "
    "run it unchecked"
)

#: Each read-only PostgreSQL session's engine: the ORM engine whose transactions begin READ ONLY
#: (psycopg's ``read_only``, set at checkout and reset when the connection goes back to the pool).
_READ_ONLY_ENGINES: weakref.WeakKeyDictionary[database.Database, Engine] = weakref.WeakKeyDictionary()


def open_session(
    db: database.Database, bring_to_head: Callable[[database.Database], None], *, write: bool, raw_sql: bool
) -> Session:
    """A session on ``db``'s engine. The caller has checked the database and brought it to head
    under ``db.gate``; ``bring_to_head`` does it again (under the gate) as each write transaction
    of the session begins."""
    if not isinstance(write, bool) or not isinstance(raw_sql, bool):
        raise InvalidTaskTypeError(f"write and raw_sql must be True or False, got {write!r} and {raw_sql!r}")
    if raw_sql and not write:
        raise InvalidTaskError("raw_sql=True needs write=True: SQL text may change data")
    engine = db.orm_engine
    if not write and db.dialect == "postgresql":
        engine = _READ_ONLY_ENGINES.get(db) or _READ_ONLY_ENGINES.setdefault(
            db, engine.execution_options(postgresql_readonly=True)
        )
    # Reads alone never flush; a writable session flushes before a query, as sessions usually do.
    session = _StoreSession(bind=engine, autoflush=write)  # transactions as SQLAlchemy's, on servers too
    rules = _Rules(db, session, bring_to_head, write=write, raw_sql=raw_sql)
    session.uniqc_rules = rules
    event.listen(session, "do_orm_execute", rules.on_execute)
    event.listen(session, "before_flush", rules.before_flush)
    event.listen(session, "after_begin", rules.after_begin)
    if write:
        event.listen(session, "after_flush", rules.after_flush)
        event.listen(session, "after_transaction_create", rules.transaction_created)
        event.listen(session, "after_transaction_end", rules.transaction_ended)
        # A session dropped in the middle of a transaction must not keep clear_all() waiting.
        weakref.finalize(session, rules.gate.release)
    return session


class _StoreSession(Session):
    """A session whose own flushes are known to its guards, and whose legacy bulk methods (which
    write rows without a flush, so unchecked) are refused unless it runs raw SQL."""

    uniqc_rules: _Rules

    def flush(self, objects: Any = None) -> None:
        rules = self.uniqc_rules
        outer = rules.flushing
        rules.flushing = True  # every flush (autoflush, commit's) comes through here
        try:
            super().flush(objects)
        finally:
            rules.flushing = outer

    def bulk_save_objects(self, *args: Any, **kwargs: Any) -> None:
        self.uniqc_rules.refuse_bulk("bulk_save_objects")
        super().bulk_save_objects(*args, **kwargs)

    def bulk_insert_mappings(self, *args: Any, **kwargs: Any) -> None:
        self.uniqc_rules.refuse_bulk("bulk_insert_mappings")
        super().bulk_insert_mappings(*args, **kwargs)

    def bulk_update_mappings(self, *args: Any, **kwargs: Any) -> None:
        self.uniqc_rules.refuse_bulk("bulk_update_mappings")
        super().bulk_update_mappings(*args, **kwargs)


class _GateHold:
    """The session's place in ``db.gate`` (see database._Gate): held for each write-session
    transaction, so that ``clear_all()`` in this process never deletes the file under it."""

    def __init__(self, db: database.Database) -> None:
        self._db = db
        self.held = False

    def take(self) -> None:
        self._db.gate.__enter__()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._db.gate.__exit__(None, None, None)


def _what_it_runs(statement: Any) -> tuple[str | None, bool]:
    """``(refusal, writes)`` for a compiled or ORM statement: what a session without ``raw_sql``
    refuses in it (None: nothing), and whether it may change data. The whole statement is walked:
    a ``DELETE ... RETURNING`` or ``UPDATE`` inside a SELECT (a CTE on PostgreSQL) writes too."""
    if isinstance(statement, TextClause):
        return "SQL text", True
    refusal: str | None = None
    writes = False
    nested_text = False
    for element in visitors.iterate(statement):
        if isinstance(element, UpdateBase):
            writes = True
            where = "" if element is statement else f" inside a {type(statement).__name__.upper()}"
            if isinstance(element, (Insert, Update)):
                return f"an {type(element).__name__.upper()} statement{where}", True
            if isinstance(element, Delete) and getattr(element.table, "name", None) == ARCHIVED_TASKS.name:
                refusal = (
                    f"a DELETE of archived tasks{where} (it would leave their archived shards behind; "
                    "store.delete_archived(id) deletes both)"
                )
            elif not isinstance(element, Delete):
                return f"a {type(element).__name__} statement{where}", True
        elif isinstance(element, TextClause):
            nested_text = True
    if refusal is None and nested_text:
        # SQL text inside a query (``select(...).from_statement(text(...))``, ``where(text(...))``)
        # may hold anything, a data-modifying CTE included.
        refusal = "SQL text inside a statement"
    return refusal, writes


class _Rules:
    """The event listeners of one session."""

    def __init__(
        self,
        db: database.Database,
        session: Session,
        bring_to_head: Callable[[database.Database], None],
        *,
        write: bool,
        raw_sql: bool,
    ) -> None:
        self.db = db
        self.write = write
        self.raw_sql = raw_sql
        self.flushing = False  # set by _StoreSession.flush: the statements are the flush's own
        self.gate = _GateHold(db)
        self._bring_to_head = bring_to_head
        self._session = weakref.ref(session)  # the listeners must not keep the session alive
        # Filled in before_flush, checked in after_flush (inside the flush's transaction).
        self._archived_owners: dict[str, ArchivedShard] = {}
        self._archived_tasks: dict[str, ArchivedTask] = {}
        self._archived_gone: dict[str, ArchivedTask] = {}

    # -- what a session may execute --------------------------------------------------------------

    def refuse_bulk(self, method: str) -> None:
        if not self.write:
            raise WriteIntentError(f"session.{method}() writes: {_READ_ONLY}")
        if not self.raw_sql:
            raise WriteIntentError(
                f"session.{method}() writes rows without a flush, so they cannot be checked; a store's "
                "session does not run it. Use session.add() or session.merge() (each instance is checked "
                "at flush), or open store.session(write=True, raw_sql=True) to run it unchecked"
            )

    def on_execute(self, state: ORMExecuteState) -> None:
        if self.raw_sql:
            return
        refusal, writes = _what_it_runs(state.statement)
        if not self.write:
            if writes or not state.is_select:
                raise WriteIntentError(_READ_ONLY)
        elif refusal is not None:
            raise WriteIntentError(f"{refusal} {_UNCHECKED}")

    def after_begin(self, session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        if not self.write:
            _read_only_at_the_database(self.db, connection)
        event.listen(connection, "before_cursor_execute", self.before_cursor_execute)

    def before_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        if self.flushing:  # the session's own flush: checked instance by instance in before_flush
            if not self.write:
                raise WriteIntentError(_READ_ONLY)
            self._begin_writing(conn)
            return
        compiled = None if context is None else context.compiled
        refusal: str | None = "SQL text or DDL"
        writes = True
        if compiled is not None and not getattr(context, "isddl", False):
            refusal, writes = _what_it_runs(compiled.statement)
        if not self.write:
            if writes:
                raise WriteIntentError(_READ_ONLY)
            return  # a SELECT (or a savepoint); the database refuses a write hidden in SQL text
        if refusal is not None and not self.raw_sql:
            raise WriteIntentError(f"{refusal} {_UNCHECKED}")
        if writes or not getattr(getattr(compiled, "statement", None), "is_select", False):
            # A SAVEPOINT would begin a deferred SQLite transaction: begin ours first.
            self._begin_writing(conn)

    # -- the write transaction -------------------------------------------------------------------

    def transaction_created(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None:
            return  # a savepoint or subtransaction: the root one holds the gate
        self.gate.take()
        try:
            self._bring_to_head(self.db)
        except BaseException:
            self.gate.release()
            raise

    def transaction_ended(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self.gate.release()

    def _begin_writing(self, conn: Connection) -> None:
        """Make sure the statement about to run is inside a write transaction of the store's kind."""
        if not self.gate.held:
            raise WriteIntentError(
                "this session's transaction began without the store's checks (they failed: see the "
                "earlier error); nothing was written. Call session.rollback(), then try again"
            )
        db = self.db
        if not db.is_sqlite:
            return  # SQLAlchemy has begun the server transaction; the schema was checked at its start
        raw: Any = conn.connection.dbapi_connection
        if raw.in_transaction:
            return  # this transaction holds the write lock already
        if db.file_changed():
            raise DatabaseError(
                f"{db.path} was deleted or replaced since this session's transaction began (another "
                "program's clear_all?); nothing was written. Call session.rollback(), then try again"
            )
        cursor: sqlite3.Cursor = raw.cursor()
        try:
            # As Database.transaction() does: the lock up front, waiting in interruptible slices,
            # then user_version re-read under it.
            execute_waiting(cursor, "BEGIN IMMEDIATE")
            db._check_unchanged_schema(cursor)
        except BaseException as error:
            if raw.in_transaction:
                raw.rollback()
            if isinstance(error, sqlite3.Error):
                raise db.translate(error) from error
            raise
        finally:
            cursor.close()

    # -- what a flush may write ------------------------------------------------------------------

    def before_flush(self, session: Session, flush_context: UOWTransaction, instances: Any) -> None:
        if not self.write:
            if session.new or session.dirty or session.deleted:
                raise WriteIntentError(
                    "a store's session opened without write=True only reads: it cannot flush new, changed "
                    "or deleted instances; use the store's methods, or store.session(write=True) "
                    "(session.rollback() discards the changes)"
                )
            return
        now = utc_now()
        changed = [obj for obj in session.dirty if session.is_modified(obj, include_collections=False)]
        self._archived_owners.clear()
        self._archived_tasks.clear()
        self._archived_gone.clear()
        for instance, new in [*((obj, True) for obj in session.new), *((obj, False) for obj in changed)]:
            if not isinstance(instance, _MODELS):
                continue  # only the store's four models are mapped on its metadata
            if isinstance(instance, Shard):
                _take_the_key_of_its_task(instance)
            row = row_of(instance, new=new)
            row[STAMPED] = now  # as save() and save_shard() stamp a record they write
            for column, value in row.items():
                current = getattr(instance, column)
                if type(current) is not type(value) or current != value:
                    setattr(instance, column, value)
            if isinstance(instance, ArchivedShard):
                self._archived_owners.setdefault(instance.uniqc_task_id, instance)
            elif isinstance(instance, ArchivedTask):
                # New or renamed: the archive takes no id a live task has (as archive_task moves a
                # task, never copies it); a renamed one leaves no shards behind under its old id.
                renamed = () if new else inspect(instance).attrs.task_id.history.deleted or ()
                if new or renamed:
                    self._archived_tasks.setdefault(instance.task_id, instance)
                for old in renamed:
                    self._archived_gone.setdefault(old, instance)
        for instance in session.deleted:
            if isinstance(instance, ArchivedTask):
                self._archived_gone.setdefault(instance.task_id, instance)

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        """The archive's shape, checked on the flush's connection after its statements ran (so
        that one flush may move a task: add the ArchivedTask, delete the Task). Raising here
        rolls the flush back."""
        owners, tasks, gone = self._archived_owners, self._archived_tasks, self._archived_gone
        if not (owners or tasks or gone):
            return
        conn = session.connection()
        for ids in _chunks(list(tasks)):
            live = conn.execute(select(TASKS.c.task_id).where(TASKS.c.task_id.in_(ids))).scalars().first()
            if live is not None:
                raise TaskConflictError(
                    f"{label_of(tasks[live])}: a live task has this id; nothing was written. The archive takes "
                    f"a task when it leaves the live table: delete the Task in the same flush, or use "
                    f"store.archive_task({live!r})"
                )
        owner = ARCHIVED_SHARDS.c.uniqc_task_id
        for ids in _chunks([*owners, *gone]):
            orphaned = (
                conn.execute(
                    select(owner).distinct().where(owner.in_(ids), ~exists().where(ARCHIVED_TASKS.c.task_id == owner))
                )
                .scalars()
                .first()
            )
            if orphaned is not None:
                if orphaned in owners:
                    raise TaskNotFoundError(
                        f"{label_of(owners[orphaned])}: the archive holds no task {orphaned!r}; nothing was "
                        "written. Add its ArchivedTask in the same flush (or archive_task() the live task)"
                    )
                raise TaskConflictError(
                    f"{label_of(gone[orphaned])}: deleting or renaming it would leave the archived shards of "
                    f"task {orphaned!r} behind; nothing was written. Delete them in the same flush, or use "
                    f"store.delete_archived({orphaned!r})"
                )


def _take_the_key_of_its_task(shard: Shard) -> None:
    """A shard appended to ``task.shards`` (or given ``task=``) without a ``uniqc_task_id`` gets it
    from its task during the flush; set it now, so that the shard is checked with it (SQLAlchemy
    sets the same value)."""
    key: str | None = shard.uniqc_task_id  # None until set, whatever the annotation says
    if key is None:
        task = inspect(shard).dict.get("task")  # set by the relationship, so no query
        if task is not None:
            shard.uniqc_task_id = task.task_id


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _read_only_at_the_database(db: database.Database, connection: Connection) -> None:
    """Make the read-only session's transaction on ``connection`` read-only at the database too,
    so that a write that slips past the guards (SQL text inside a query, a function with side
    effects, the DBAPI connection itself) is refused by the database. PostgreSQL: the session's
    engine begins its transactions READ ONLY (see open_session)."""
    raw: Any = connection.connection.dbapi_connection
    if db.is_sqlite:
        raw.execute("PRAGMA query_only = ON")

        def writable_again(conn: Connection) -> None:
            # The connection goes back to the store's pool after this commit or rollback.
            try:
                raw.execute("PRAGMA query_only = OFF")
            except BaseException:
                conn.invalidate()  # never back to the pool read-only
                raise

        event.listen(connection, "commit", writable_again)
        event.listen(connection, "rollback", writable_again)
    elif db.dialect in ("mysql", "mariadb"):
        # Nothing has run on the connection yet: this begins the session's transaction, which the
        # session's commit or rollback ends (a READ ONLY one changes nothing after it).
        with raw.cursor() as cursor:
            cursor.execute("START TRANSACTION READ ONLY")
