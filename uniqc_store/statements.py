"""The store's statements for the four tables, built once per dialect from the models.

Building each statement once matters: SQLAlchemy's compiled cache (servers) and the SQLite SQL
cache (execution.py, keyed by the statement's identity) then always hit, and nothing is rebuilt
per call. The variants of ``list``, ``count`` and ``clear`` are built on first use and kept;
``setdefault`` keeps the first one built, so racing threads all get the same statement object.

Writes follow uniqc's file format: upserts are ``INSERT ... ON CONFLICT DO UPDATE`` (``ON
DUPLICATE KEY UPDATE`` on MySQL/MariaDB), never delete-and-insert, which would delete the task's
shards through the foreign key's ``ON DELETE CASCADE``; and they keep the first ``submit_time``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnClause,
    ColumnElement,
    Delete,
    Insert,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from .ddl import MYSQL
from .execution import AnySelect
from .rows import ARCHIVED_SHARDS, ARCHIVED_TASKS, SHARDS, TASKS, record_columns

#: The column an update leaves alone: a record keeps its first submission time.
KEEPS_FIRST_VALUE = "submit_time"
#: LIMIT that stands for none: not every backend takes OFFSET without LIMIT.
NO_LIMIT = 2**63 - 1


def key_columns(table: Table) -> list[str]:
    """The primary-key columns of ``table``."""
    return [column.name for column in table.primary_key.columns]


def upsert(dialect: str, table: Table) -> Insert:
    """``table``'s insert-or-update by primary key in ``dialect``'s native form, keeping the first
    :data:`KEEPS_FIRST_VALUE`."""
    keys = key_columns(table)
    updated = [column.name for column in table.columns if column.name not in keys and column.name != KEEPS_FIRST_VALUE]
    if dialect in MYSQL:
        on_duplicate = mysql.insert(table)
        return on_duplicate.on_duplicate_key_update({name: on_duplicate.inserted[name] for name in updated})
    on_conflict = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    return on_conflict.on_conflict_do_update(
        index_elements=keys, set_={name: on_conflict.excluded[name] for name in updated}
    )


def _read(table: Table) -> list[ColumnElement[Any]]:
    """The columns a read of ``table`` selects, as rows.py's decoders expect them."""
    return [table.c[name] for name in record_columns(table)]


def _owner(table: Table) -> ColumnElement[Any]:
    """The column that names the task a row belongs to: ``task_id``, or a shard's ``uniqc_task_id``."""
    return table.c.task_id if "task_id" in table.c else table.c.uniqc_task_id


def move(source: Table, target: Table) -> Insert:
    """``INSERT INTO target SELECT ... FROM source`` of one task's rows (parameter ``task_id``).

    The columns both tables have are copied; each column only ``target`` has (``archived_at``)
    takes the parameter of its name.
    """
    names = [column.name for column in target.columns]
    values = [
        source.c[name] if name in source.c else bindparam(name, type_=target.c[name].type) for name in names
    ]
    return insert(target).from_select(names, select(*values).where(_owner(source) == bindparam("task_id")))


class TaskQueries:
    """Reads and deletes of ``tasks`` or ``archived_tasks``; ``tie`` orders equal submit times."""

    def __init__(self, table: Table, tie: ColumnClause[Any]) -> None:
        self.table = table
        self._tie = tie
        key = table.c.task_id == bindparam("task_id")
        self.get = select(*_read(table)).where(key)
        self.exists = select(table.c.task_id).where(key)
        #: The row's key, locked until the transaction ends on servers (SQLite's write
        #: transaction holds the whole file already): what archive and restore move.
        self.lock = select(table.c.task_id).where(key).with_for_update()
        self.delete = delete(table).where(key)
        self.delete_all = delete(table)
        self.count_by_status = select(table.c.status, func.count()).group_by(table.c.status).order_by(table.c.status)
        self._lists: dict[tuple[bool, bool, bool, bool], AnySelect] = {}
        self._counts: dict[tuple[bool, bool], AnySelect] = {}
        self._clears: dict[tuple[str, ...], Delete] = {}

    def list(self, status: bool, backend: bool, limit: bool, offset: bool) -> AnySelect:
        """Newest first by ``submit_time``; equal times: the most recently inserted first."""
        key = (status, backend, limit, offset)
        stmt = self._lists.get(key)
        if stmt is None:
            stmt = self._where(select(*_read(self.table)), status, backend)
            stmt = stmt.order_by(self.table.c.submit_time.desc(), self._tie.desc())
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
            stmt = self._where(select(func.count()).select_from(self.table), status, backend)
            stmt = self._counts.setdefault(key, stmt)
        return stmt

    def clear(self, statuses: tuple[str, ...]) -> Delete:
        """Delete the rows in ``statuses`` (a sorted tuple of plain values)."""
        stmt = self._clears.get(statuses)
        if stmt is None:
            stmt = self._clears.setdefault(statuses, delete(self.table).where(self.table.c.status.in_(statuses)))
        return stmt

    def _where(self, stmt: AnySelect, status: bool, backend: bool) -> AnySelect:
        if status:
            stmt = stmt.where(self.table.c.status == bindparam("status"))
        if backend:
            stmt = stmt.where(self.table.c.backend == bindparam("backend"))
        return stmt


class ShardQueries:
    """Reads and deletes of ``task_shards`` or ``archived_task_shards``."""

    def __init__(self, table: Table) -> None:
        self.table = table
        of_task = table.c.uniqc_task_id == bindparam("task_id")
        self.of_task = select(*_read(table)).where(of_task).order_by(table.c.shard_index)
        platform = select(*_read(table)).where(table.c.platform_task_id == bindparam("platform_task_id"))
        # Several tasks may hold a platform id (on different backends): the first by primary key.
        order = [table.c[name] for name in key_columns(table)]
        self.by_platform_id = platform.order_by(*order).limit(1)
        self.by_platform_id_on_backend = (
            platform.where(table.c.backend == bindparam("backend")).order_by(*order).limit(1)
        )
        self.delete_of_task = delete(table).where(of_task)
        self.delete_all = delete(table)
        self.count = select(func.count()).select_from(table)


class Statements:
    """Every statement of one dialect."""

    def __init__(self, dialect: str) -> None:
        def tie(table: Table) -> ColumnClause[Any]:
            # SQLite's rowid, the servers' database-numbered seq column (see ddl.add_insertion_sequence).
            return literal_column("rowid" if dialect == "sqlite" else f"{table.name}.seq")

        self.tasks = TaskQueries(TASKS, tie(TASKS))
        self.archived = TaskQueries(ARCHIVED_TASKS, tie(ARCHIVED_TASKS))
        self.shards = ShardQueries(SHARDS)
        self.archived_shards = ShardQueries(ARCHIVED_SHARDS)
        self.upsert_task = upsert(dialect, TASKS)
        self.upsert_shard = upsert(dialect, SHARDS)
        # Shards move first: deleting the task would otherwise delete them by the cascade.
        self.archive_shards = move(SHARDS, ARCHIVED_SHARDS)
        self.archive_task = move(TASKS, ARCHIVED_TASKS)
        self.restore_task = move(ARCHIVED_TASKS, TASKS)
        self.restore_shards = move(ARCHIVED_SHARDS, SHARDS)
        #: Every row of every table, children before parents.
        self.delete_everything = (
            self.shards.delete_all,
            self.tasks.delete_all,
            self.archived_shards.delete_all,
            self.archived.delete_all,
        )


_by_dialect: dict[str, Statements] = {}


def statements(dialect: str) -> Statements:
    """The statements of ``dialect`` (``"sqlite"``, ``"postgresql"``, ``"mysql"``, ``"mariadb"``)."""
    built = _by_dialect.get(dialect)
    if built is None:
        built = _by_dialect.setdefault(dialect, Statements(dialect))
    return built
