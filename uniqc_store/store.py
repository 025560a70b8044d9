"""``TaskStore``: the repository of task records, their shards and their archive, on SQLite
(default) or a database server.

Which column holds which field is rows.py's; the statements are statements.py's; sizing MySQL
statements is packets.py's. This module runs them, each call in one transaction.
"""

from __future__ import annotations

import builtins
import itertools
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, overload

from sqlalchemy import exc
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from . import database, packets, schema, sessions, sweep
from .ddl import MYSQL
from .errors import DatabaseError, InvalidTaskTypeError, TaskConflictError, TaskNotFoundError
from .execution import Tx
from .records import (
    TERMINAL_STATUSES,
    TaskInfo,
    TaskShard,
    TaskStatus,
    check_limit,
    check_text,
    status_value,
    status_values,
    utc_now,
)
from .rows import (
    archived_shard_from_row,
    archived_task_from_row,
    shard_from_row,
    shard_row,
    task_from_row,
    task_row,
)
from .statements import NO_LIMIT, TaskQueries, statements

_TERMINAL = frozenset(TERMINAL_STATUSES)

# Integrity violations, by what the drivers report: SQLite's extended result codes, PostgreSQL's
# SQLSTATE, MySQL's error numbers.
_FOREIGN_KEY, _UNIQUE = "foreign key", "unique"
_SQLITE_CODES = {787: _FOREIGN_KEY, 1555: _UNIQUE, 2067: _UNIQUE}
_SQLITE_MESSAGES = {"FOREIGN KEY constraint failed": _FOREIGN_KEY, "UNIQUE constraint failed": _UNIQUE}
_SQLSTATES = {"23503": _FOREIGN_KEY, "23505": _UNIQUE}
_MYSQL_CODES = {1216: _FOREIGN_KEY, 1452: _FOREIGN_KEY, 1062: _UNIQUE}


def _violation(error: BaseException) -> str | None:
    """``"foreign key"`` or ``"unique"`` if the driver error behind ``error`` (a translated
    :class:`DatabaseError`) is that integrity violation, else None."""
    cause = error.__cause__
    if isinstance(cause, exc.DBAPIError):
        cause = cause.orig
    if isinstance(cause, sqlite3.IntegrityError):
        code = getattr(cause, "sqlite_errorcode", None)  # Python >= 3.11
        if code is not None:
            return _SQLITE_CODES.get(code)
        return next((kind for text, kind in _SQLITE_MESSAGES.items() if str(cause).startswith(text)), None)
    sqlstate = getattr(cause, "sqlstate", None)  # psycopg's; PyMySQL's is MySQL's generic "23000"
    if sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    args = getattr(cause, "args", ())
    if args and isinstance(args[0], int):  # PyMySQL: (errno, message)
        return _MYSQL_CODES.get(args[0])
    return None


#: How many tasks ``save_many`` holds in memory at once, whatever the size of its input.
SAVE_MANY_CHUNK = 1000


class TaskStore:
    """Storage for task records, their shards and their archive, on an SQLite file or a
    PostgreSQL / MySQL / MariaDB server.

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
        self._sql = statements(db.dialect)
        self._packet_limited = db.dialect in MYSQL  # see packets.py
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

    def _transaction(self, *, write: bool, single: bool = False) -> AbstractContextManager[Tx]:
        """Run one unit of work: begin, commit, roll back on any error, translate driver errors.

        Every call states its intent: ``write=True`` takes the write lock up front (SQLite's
        ``BEGIN IMMEDIATE``) and commits; a read runs its statements without a write transaction.
        ``single``: a write of one idempotent statement (see :meth:`database.Database.transaction`).
        Held in the database's gate, after the schema check (:meth:`_bring_to_head`).
        """
        return self._usable().unit(write=write, single=single, prepare=self._bring_to_head)

    # -- tasks: writes ---------------------------------------------------------------------------

    def save(self, task_info: TaskInfo) -> None:
        """Insert or update a task record (by ``task_id``).

        Stamps ``task_info.update_time`` with the current time and persists that same value. On
        update every field changes except ``submit_time``, which keeps its first value; the
        task's shards stay (an update is never a delete and an insert). ``archived_at`` is not
        stored: the archive changes only through :meth:`archive_task` and :meth:`restore_task`.

        Raises:
            InvalidTaskTypeError, InvalidTaskError: a field is invalid (the message names it);
                nothing is written. On MySQL/MariaDB also when ``result``, ``metadata`` or
                ``error_message`` is too large for the server's ``max_allowed_packet``.
        """
        now = utc_now()
        row = task_row(task_info, now)
        upsert = self._sql.upsert_task
        # One statement, and idempotent (the same row again changes nothing): on a server it
        # commits on its own, one round trip, and may be sent again on a fresh connection.
        with self._transaction(write=True, single=True) as tx:
            if self._packet_limited:
                packets.batches(self._db, tx, upsert, [row], lambda _: f"task {row['task_id']!r}")
            tx.rowcount(upsert, row)
        task_info.update_time = now

    def save_many(self, tasks: Iterable[TaskInfo]) -> None:
        """Insert or update many task records in one transaction, as :meth:`save` does each.

        ``tasks`` may be any iterable, a generator of millions included: it is consumed in chunks
        of :data:`SAVE_MANY_CHUNK`, so memory stays bounded, while the write lock is held. All or
        nothing: if any task is invalid, nothing is written. A list or tuple of tasks is stamped
        with the new ``update_time`` only once everything is written; tasks drawn from an iterator
        are stamped as they are written (if the call then fails, nothing is stored, but tasks it
        had already drawn keep the new stamp).

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
        stamp_at_the_end = isinstance(tasks, (builtins.list, tuple))
        now = utc_now()
        chunk = builtins.list(itertools.islice(entries, SAVE_MANY_CHUNK))
        if not chunk:
            return
        first = 0  # index of the chunk's first task in ``tasks``
        with self._transaction(write=True) as tx:
            while chunk:
                self._save_chunk(tx, chunk, first, now)
                if not stamp_at_the_end:
                    for task in chunk:
                        task.update_time = now
                first += len(chunk)
                chunk = builtins.list(itertools.islice(entries, SAVE_MANY_CHUNK))
        if stamp_at_the_end:
            for task in tasks:
                task.update_time = now

    def _save_chunk(self, tx: Tx, chunk: builtins.list[TaskInfo], first: int, now: str) -> None:
        rows = []
        for offset, task in enumerate(chunk):
            try:
                rows.append(task_row(task, now))
            except ValueError as error:  # also the TypeError subclass
                raise type(error)(f"tasks[{first + offset}]: {error}") from None
        upsert = self._sql.upsert_task
        if self._packet_limited:
            batches = packets.batches(
                self._db, tx, upsert, rows, lambda i: f"tasks[{first + i}]: task {rows[i]['task_id']!r}"
            )
        else:
            batches = [rows]
        for batch in batches:  # a chunk is sized before its first batch is sent
            tx.many(upsert, batch)

    def delete(self, task_id: str) -> bool:
        """Remove a single task and its shards. Returns True if it existed."""
        task_id = check_text(task_id, "task_id")
        with self._transaction(write=True) as tx:
            return tx.rowcount(self._sql.tasks.delete, {"task_id": task_id}) > 0

    @overload
    def clear_completed(self, terminal_statuses: Iterable[str] = ..., *, older_than: None = None) -> int: ...

    @overload
    def clear_completed(
        self, terminal_statuses: Iterable[str] = ..., *, older_than: timedelta | datetime, batch_size: int = ...
    ) -> sweep.SweepResult: ...

    def clear_completed(
        self,
        terminal_statuses: Iterable[str] = TERMINAL_STATUSES,
        *,
        older_than: timedelta | datetime | None = None,
        batch_size: int = sweep.SWEEP_BATCH,
    ) -> int | sweep.SweepResult:
        """Delete tasks whose status is in ``terminal_statuses``, and their shards; return how
        many tasks were deleted. The archive is left alone.

        With ``older_than`` (a ``timedelta``, or a timezone-aware ``datetime`` cutoff), only the
        tasks whose ``update_time`` is older, in batches of ``batch_size`` tasks, each its own
        transaction, so that writers in other processes wait at most one batch; returns a
        :class:`~uniqc_store.SweepResult` (deleted, and skipped because their time could not be
        read). Interrupted, it has deleted whole batches only.

        Raises:
            InvalidTaskError, InvalidTaskTypeError: a bad status, ``older_than`` or ``batch_size``.
        """
        values = tuple(sorted(set(status_values(terminal_statuses))))
        if older_than is not None:
            return self._sweep(values, older_than, batch_size, archive=False)
        if not values:
            return 0
        with self._transaction(write=True) as tx:
            return tx.rowcount(self._sql.tasks.clear(values))

    def archive_completed(
        self,
        *,
        older_than: timedelta | datetime | None = None,
        terminal_statuses: Iterable[str] = TERMINAL_STATUSES,
        batch_size: int = sweep.SWEEP_BATCH,
    ) -> sweep.SweepResult:
        """Move finished tasks (status in ``terminal_statuses``) with their shards into the archive,
        as :meth:`archive_task` moves each; with ``older_than`` (a ``timedelta``, or a
        timezone-aware ``datetime`` cutoff) only those whose ``update_time`` is older.

        Works in batches of ``batch_size`` tasks (by ``task_id``), each its own transaction whose
        tasks and shards are stamped with one ``archived_at``, so that writers in other processes
        wait at most one batch. A task whose id the archive already holds stays live and is
        reported in ``conflicts``; one whose ``update_time`` cannot be compared is left alone and
        counted in ``skipped`` (see :func:`uniqc_store.sweep.is_older`). Interrupted (Ctrl-C,
        a crash), it has moved whole batches only: every task is live or archived, once, with all
        its shards; run it again to finish.

        Returns:
            A :class:`~uniqc_store.SweepResult`.

        Raises:
            InvalidTaskError, InvalidTaskTypeError: a bad status, ``older_than`` or ``batch_size``.
        """
        values = tuple(sorted(set(status_values(terminal_statuses))))
        return self._sweep(values, older_than, batch_size, archive=True)

    def _sweep(
        self, statuses: tuple[str, ...], older_than: object, batch_size: int, *, archive: bool
    ) -> sweep.SweepResult:
        """Archive (or delete) the finished tasks older than the cutoff, one batch per transaction."""
        cutoff = None if older_than is None else sweep.older_than_cutoff(older_than)
        size = sweep.check_batch_size(batch_size)
        stamp = None if cutoff is None else cutoff.isoformat()
        if not statuses:
            return sweep.SweepResult(cutoff=stamp)
        wanted = frozenset(statuses)
        scan = sweep.SWEEP_SCAN
        sql = self._sql
        done = skipped = without_id = 0
        conflicts: builtins.list[str] = []
        params: dict[str, Any] = {"limit": size}
        while True:
            with self._transaction(write=True) as tx:
                if "after" not in params:  # rows without an id: not in the walk, counted once
                    without_id = sum(
                        status in wanted and (cutoff is None or sweep.is_older(update_time, cutoff) is not False)
                        for status, update_time in tx.rows(scan.without_id)
                    )
                rows = tx.rows(scan.next if "after" in params else scan.first, params)
                chosen: builtins.list[dict[str, Any]] = []
                for task_id, status, update_time, in_archive in rows:
                    if status not in wanted:
                        continue
                    old = True if cutoff is None else sweep.is_older(update_time, cutoff)
                    if old is None:
                        skipped += 1
                    elif old and archive and in_archive:
                        conflicts.append(task_id)
                    elif old:
                        chosen.append({"task_id": task_id})
                if chosen and archive:
                    archived_at = utc_now()
                    stamped = [{**key, "archived_at": archived_at} for key in chosen]
                    # Shards first: deleting the task deletes its shards (ON DELETE CASCADE).
                    tx.many(sql.archive_shards, stamped)
                    tx.many(sql.archive_task, stamped)
                moved = tx.many(sql.tasks.delete, chosen) if chosen else 0
            done += moved  # what the database deleted, counted when its transaction committed
            if len(rows) < size:
                return sweep.SweepResult(done, skipped + without_id, tuple(conflicts), stamp, without_id)
            params["after"] = rows[-1][0]
            time.sleep(sweep.SWEEP_PAUSE_S)  # let writers waiting for the lock take it

    def clear_all(self) -> None:
        """Delete every task, shard and archived record.

        SQLite: deletes the database file and its ``-wal``/``-shm``/``-journal`` siblings, after
        closing every pooled connection to it in this process; the next call (on any store)
        creates a fresh, fully migrated file. Servers: deletes every row of the four tables,
        keeping the schema.

        Raises:
            DatabaseRefusedError: (SQLite) the file now at the path is not ours, or newer than
                this library (another program put it there); it was left untouched.
        """
        db = self._db
        if db.is_sqlite and not self._closed:
            with db.gate.exclusive(), db.schema_mutex:
                db.close_connections()
                schema.check_ours_before_deleting(db)
                db.delete_file()
            return
        with self._transaction(write=True) as tx:
            for stmt in self._sql.delete_everything:
                tx.rowcount(stmt)

    # -- tasks: reads ----------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        """Return a live task by id (``archived_at`` None), or None if missing."""
        task_id = check_text(task_id, "task_id")
        with self._transaction(write=False) as tx:
            rows = tx.rows(self._sql.tasks.get, {"task_id": task_id})
        return task_from_row(rows[0]) if rows else None

    def list(
        self,
        *,
        status: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[TaskInfo]:
        """List live tasks, newest first by ``submit_time``; equal times: most recently inserted first.

        Raises:
            InvalidTaskError: unknown status, or negative ``limit``/``offset``.
        """
        return self._list(self._sql.tasks, task_from_row, status, backend, limit, offset)

    def count(self, *, status: str | None = None, backend: str | None = None) -> int:
        """Count live tasks, optionally only those with ``status`` and/or on ``backend``."""
        return self._count(self._sql.tasks, status, backend)

    def count_by_status(self) -> dict[str, int]:
        """Return ``{status: number of live tasks}`` for the statuses present."""
        with self._transaction(write=False) as tx:
            return dict(tx.rows(self._sql.tasks.count_by_status))

    # -- shards ----------------------------------------------------------------------------------

    def save_shard(self, shard: TaskShard) -> None:
        """Insert or update a shard (by ``uniqc_task_id`` and ``shard_index``) of a live task.

        Stamps ``shard.update_time`` with the current time and persists that same value; on
        update every field changes except ``submit_time``, which keeps its first value.

        Raises:
            InvalidTaskTypeError, InvalidTaskError: a field is invalid (the message names it), or
                on MySQL/MariaDB too large for ``max_allowed_packet``; nothing is written.
            TaskNotFoundError: no live task has the id ``shard.uniqc_task_id``; nothing is written.
        """
        now = utc_now()
        row = shard_row(shard, now)
        task_id, index = row["uniqc_task_id"], row["shard_index"]
        upsert = self._sql.upsert_shard
        try:
            with self._transaction(write=True) as tx:
                if not tx.rows(self._sql.tasks.exists, {"task_id": task_id}):
                    raise _no_task_for_shard(task_id, index)
                if self._packet_limited:
                    packets.batches(self._db, tx, upsert, [row], lambda _: f"shard {index} of task {task_id!r}")
                tx.rowcount(upsert, row)
        except DatabaseError as error:
            # The task was deleted by another connection between the check and the insert.
            if _violation(error) == _FOREIGN_KEY:
                raise _no_task_for_shard(task_id, index) from error
            raise
        shard.update_time = now

    def get_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """Return the shards of the live task ``uniqc_task_id``, by ``shard_index`` (empty if none)."""
        return self._shards(self._sql.shards.of_task, uniqc_task_id, shard_from_row)

    def get_archived_shards(self, uniqc_task_id: str) -> builtins.list[TaskShard]:
        """Return the shards of the archived task ``uniqc_task_id``, by ``shard_index``."""
        return self._shards(self._sql.archived_shards.of_task, uniqc_task_id, archived_shard_from_row)

    def get_shard_by_platform_id(self, platform_task_id: str, *, backend: str | None = None) -> TaskShard | None:
        """Return the live shard whose platform-issued id is ``platform_task_id`` (and whose
        backend is ``backend``, if given), or None.

        Platform ids are unique per platform, not across them: without ``backend``, of several
        shards with the id the first by ``(uniqc_task_id, shard_index)`` is returned.
        """
        params = {"platform_task_id": check_text(platform_task_id, "platform_task_id")}
        stmt = self._sql.shards.by_platform_id
        if backend is not None:
            params["backend"] = check_text(backend, "backend")
            stmt = self._sql.shards.by_platform_id_on_backend
        with self._transaction(write=False) as tx:
            rows = tx.rows(stmt, params)
        return shard_from_row(rows[0]) if rows else None

    def find_uniqc_id_by_platform_id(self, platform_task_id: str, *, backend: str | None = None) -> str | None:
        """Return the ``uniqc_task_id`` of the task whose shard has the platform id
        ``platform_task_id`` (see :meth:`get_shard_by_platform_id`), or None."""
        shard = self.get_shard_by_platform_id(platform_task_id, backend=backend)
        return None if shard is None else shard.uniqc_task_id

    def delete_shards(self, uniqc_task_id: str) -> int:
        """Delete every shard of the live task ``uniqc_task_id`` (the task stays); return how many."""
        task_id = check_text(uniqc_task_id, "uniqc_task_id")
        with self._transaction(write=True) as tx:
            return tx.rowcount(self._sql.shards.delete_of_task, {"task_id": task_id})

    def count_shards(self, *, archived: bool = False) -> int:
        """Count the shards of live tasks (of archived tasks if ``archived``)."""
        queries = self._sql.archived_shards if archived else self._sql.shards
        with self._transaction(write=False) as tx:
            count: int = tx.rows(queries.count)[0][0]
        return count

    @staticmethod
    def aggregate_status(shards: Iterable[TaskShard]) -> str:
        """The status of a task made of ``shards``, as uniqc derives it: no shards, ``pending``;
        any shard not finished, ``running``; all ``success``, ``success``; any ``failed``,
        ``failed``; otherwise (cancelled, or cancelled and succeeded) ``cancelled``."""
        statuses = {
            shard.status.value if isinstance(shard.status, TaskStatus) else str(shard.status) for shard in shards
        }
        if not statuses:
            return TaskStatus.PENDING.value
        if not statuses <= _TERMINAL:
            return TaskStatus.RUNNING.value
        if statuses == {TaskStatus.SUCCESS.value}:
            return TaskStatus.SUCCESS.value
        if TaskStatus.FAILED.value in statuses:
            return TaskStatus.FAILED.value
        return TaskStatus.CANCELLED.value

    # -- the archive -----------------------------------------------------------------------------

    def archive_task(self, task_id: str) -> bool:
        """Move a live task and its shards into the archive, in one transaction, stamping them
        all with the same ``archived_at``. Returns True if the task existed.

        Raises:
            TaskConflictError: the archive already holds a task (or shards) with this id;
                nothing was moved.
        """
        task_id = check_text(task_id, "task_id")
        key = {"task_id": task_id}
        stamped = {"task_id": task_id, "archived_at": utc_now()}
        sql = self._sql
        try:
            with self._transaction(write=True) as tx:
                if not tx.rows(sql.tasks.lock, key):
                    return False
                if tx.rows(sql.archived.exists, key):
                    raise TaskConflictError(
                        f"cannot archive task {task_id!r}: the archive already holds a task with this id; nothing "
                        f"was moved. Delete one of the two first: delete_archived({task_id!r}) the archived one, "
                        f"or delete({task_id!r}) the live one (each with its shards)."
                    )
                # Shards first: deleting the task deletes its shards (ON DELETE CASCADE).
                tx.rowcount(sql.archive_shards, stamped)
                tx.rowcount(sql.archive_task, stamped)
                tx.rowcount(sql.tasks.delete, key)
        except DatabaseError as error:
            if _violation(error) == _UNIQUE:  # archived shards without their task, or a race
                raise TaskConflictError(
                    f"cannot archive task {task_id!r}: the archive already holds records with this id "
                    f"(its shards); nothing was moved. delete_archived({task_id!r}) removes them."
                ) from error
            raise
        return True

    def restore_task(self, task_id: str) -> bool:
        """Move an archived task and its shards back to the live tables, in one transaction.
        Returns True if the archived task existed.

        Raises:
            TaskConflictError: a live task has this id; nothing was moved.
        """
        task_id = check_text(task_id, "task_id")
        key = {"task_id": task_id}
        sql = self._sql
        conflict = TaskConflictError(
            f"cannot restore task {task_id!r}: a live task has this id; nothing was moved. Delete one of the "
            f"two first: delete({task_id!r}) the live one, or delete_archived({task_id!r}) the archived one "
            "(each with its shards)."
        )
        try:
            with self._transaction(write=True) as tx:
                if not tx.rows(sql.archived.lock, key):
                    return False
                if tx.rows(sql.tasks.exists, key):
                    raise conflict
                tx.rowcount(sql.restore_task, key)  # the task first: its shards refer to it
                tx.rowcount(sql.restore_shards, key)
                tx.rowcount(sql.archived_shards.delete_of_task, key)
                tx.rowcount(sql.archived.delete, key)
        except DatabaseError as error:
            if _violation(error) == _UNIQUE:  # a live task saved meanwhile by another connection
                raise conflict from error
            raise
        return True

    def get_archived(self, task_id: str) -> TaskInfo | None:
        """Return an archived task by id (with its ``archived_at``), or None."""
        task_id = check_text(task_id, "task_id")
        with self._transaction(write=False) as tx:
            rows = tx.rows(self._sql.archived.get, {"task_id": task_id})
        return archived_task_from_row(rows[0]) if rows else None

    def list_archived(
        self,
        *,
        status: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> builtins.list[TaskInfo]:
        """List archived tasks as :meth:`list` lists live ones: newest first by ``submit_time``;
        equal times: most recently archived first.

        Raises:
            InvalidTaskError: unknown status, or negative ``limit``/``offset``.
        """
        return self._list(self._sql.archived, archived_task_from_row, status, backend, limit, offset)

    def count_archived(self, *, status: str | None = None, backend: str | None = None) -> int:
        """Count archived tasks, optionally only those with ``status`` and/or on ``backend``."""
        return self._count(self._sql.archived, status, backend)

    def delete_archived(self, task_id: str) -> bool:
        """Delete an archived task and its archived shards for good. Returns True if the task
        existed (archived shards without their task are deleted too)."""
        task_id = check_text(task_id, "task_id")
        key = {"task_id": task_id}
        with self._transaction(write=True) as tx:
            tx.rowcount(self._sql.archived_shards.delete_of_task, key)
            return tx.rowcount(self._sql.archived.delete, key) > 0

    # -- the schema ------------------------------------------------------------------------------

    def session(self, *, write: bool = False, raw_sql: bool = False) -> Session:
        """Return a SQLAlchemy ORM :class:`~sqlalchemy.orm.Session` on this store's database, for
        ad-hoc queries over :class:`Task`, :class:`ArchivedTask`, :class:`Shard` and
        :class:`ArchivedShard` (``Task.shards``, ``ArchivedTask.shards`` are relationships);
        :func:`uniqc_store.record_of` turns an instance into a :class:`TaskInfo`/:class:`TaskShard`,
        :func:`uniqc_store.model_of` a record into an instance.

        The database is checked (and brought to head) first, as every call is. Close the session
        when done (it is a context manager): its connection comes from the store's pool.

        Args:
            write: False (default): the session only reads; flushing new, changed or deleted
                instances, the ``bulk_*`` methods, or executing anything but a SELECT (or a
                SELECT with a write inside) raises :class:`WriteIntentError` and changes
                nothing, and its transactions are read-only at the database too. True: it may
                write, as the store's methods do: every new or changed instance is checked at
                flush as :meth:`save`/:meth:`save_shard` check a record (:class:`InvalidTaskError`
                naming the instance and the field; nothing is written) and stamped with
                ``update_time``, and the archive keeps its shape (:class:`TaskNotFoundError`,
                :class:`TaskConflictError`); each transaction starts with the store's checks, and
                its first write takes the write lock (SQLite: ``BEGIN IMMEDIATE``, interruptible,
                ``user_version`` re-read). SELECT and DELETE statements run; SQL text (anywhere in
                a statement), INSERT/UPDATE statements (a CTE too), DELETEs of archived tasks and
                the ``bulk_*`` methods raise :class:`WriteIntentError`.
            raw_sql: With ``write=True``: also run those, unchecked (still in the write
                transaction, under the lock).

        Raises:
            InvalidTaskError: ``raw_sql`` without ``write`` (InvalidTaskTypeError: not bools).
        """
        db = self._usable()
        with db.gate:
            self._bring_to_head(db)
        return sessions.open_session(db, self._bring_to_head, write=write, raw_sql=raw_sql)

    def schema_info(self) -> dict[str, Any]:
        """Return where the store is and its schema version (revision, and on SQLite the header)."""
        db = self._usable()
        with db.gate:
            self._bring_to_head(db)
            state = schema.current_state(db)
        info: dict[str, Any] = {"url": self.url, "revision": state.revision, "store_revision": state.store_revision}
        if self._db.is_sqlite:
            info.update(
                path=str(self.db_path),
                user_version=state.user_version,
                application_id=f"0x{state.application_id:08X}",
            )
        return info

    # -- helpers ---------------------------------------------------------------------------------

    def _list(
        self,
        queries: TaskQueries,
        decode: Callable[[Any], TaskInfo],
        status: str | None,
        backend: str | None,
        limit: int | None,
        offset: int | None,
    ) -> builtins.list[TaskInfo]:
        params = self._filters(status, backend)
        limit = check_limit(limit, "limit")
        offset = check_limit(offset, "offset") or None
        if offset is not None:
            params["offset"] = offset
            if limit is None:
                limit = NO_LIMIT  # not every backend takes OFFSET without LIMIT
        if limit is not None:
            params["limit"] = limit
        stmt = queries.list("status" in params, "backend" in params, limit is not None, offset is not None)
        with self._transaction(write=False) as tx:
            rows = tx.rows(stmt, params)
        return [decode(row) for row in rows]

    def _count(self, queries: TaskQueries, status: str | None, backend: str | None) -> int:
        params = self._filters(status, backend)
        with self._transaction(write=False) as tx:
            count: int = tx.rows(queries.count("status" in params, "backend" in params), params)[0][0]
        return count

    def _shards(self, stmt: Any, uniqc_task_id: str, decode: Callable[[Any], TaskShard]) -> builtins.list[TaskShard]:
        task_id = check_text(uniqc_task_id, "uniqc_task_id")
        with self._transaction(write=False) as tx:
            rows = tx.rows(stmt, {"task_id": task_id})
        return [decode(row) for row in rows]

    @staticmethod
    def _filters(status: str | None, backend: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if status is not None:
            params["status"] = status_value(status)
        if backend is not None:
            params["backend"] = check_text(backend, "backend")
        return params


def _no_task_for_shard(task_id: str, index: int) -> TaskNotFoundError:
    return TaskNotFoundError(
        f"cannot save shard {index} of task {task_id!r}: there is no live task {task_id!r}; nothing was "
        f"written. Save the task first (or, if it is archived, restore_task({task_id!r})), then its shards."
    )
