"""The declarative models: uniqc's four tables at schema version 5, exactly as uniqc lays them out
in SQLite (``versions.py`` says how SQLite reports that layout).

Each column is named here once; statements, row conversion and the migration check derive from
these tables. Servers have one more column on ``tasks`` and ``archived_tasks``, ``seq`` (see
``ddl.add_insertion_sequence``), which is not part of the model.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .ddl import BIG_INTEGER, KEY, LONG_TEXT, STATUS, TIME
from .versions import STORE_INDEXES

# Index names follow uniqc's file format ("tasks_backend_idx"); the other conventions give
# every later constraint a stable name that revisions can refer to.
NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_name)s_idx",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
}


#: ``sort_order`` of the columns that follow a mixin's (declared ones come first otherwise).
_LAST = 10


class Base(DeclarativeBase):
    """Declarative base of uniqc_store's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _list_indexes(table: str) -> list[Index]:
    """This library's own indexes on ``table`` (not uniqc's: see ``versions.STORE_INDEXES``, and
    the revisions of its own branch, ``migrations/versions/s0*``). Servers append their tie
    column ``seq`` to each (``schema.server_metadata``)."""
    return [Index(index.name, *index.columns) for index in sorted(STORE_INDEXES[table], key=lambda index: index.name)]


class _TaskColumns:
    """The columns ``tasks`` and ``archived_tasks`` share, in uniqc's order.

    ``task_id`` is nullable at the SQL level only because uniqc's layout declares it as
    ``task_id TEXT PRIMARY KEY``; the store never writes an empty id.
    """

    task_id: Mapped[str] = mapped_column(KEY, primary_key=True, nullable=True)
    backend: Mapped[str] = mapped_column(KEY)
    status: Mapped[str] = mapped_column(STATUS)
    shots: Mapped[int] = mapped_column(BIG_INTEGER, server_default=text("0"))
    submit_time: Mapped[str] = mapped_column(TIME)
    update_time: Mapped[str] = mapped_column(TIME)
    result_json: Mapped[str | None] = mapped_column(LONG_TEXT)
    metadata_json: Mapped[str] = mapped_column(LONG_TEXT, server_default="{}")


class Task(_TaskColumns, Base):
    """One task record: the ``tasks`` table."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("tasks_backend_idx", "backend"),
        Index("tasks_status_idx", "status"),
        Index("tasks_submit_time_idx", "submit_time"),
        *_list_indexes("tasks"),
    )

    # Added by v3 with ALTER TABLE: the last column (sort_order puts it after the mixin's).
    error_message: Mapped[str | None] = mapped_column(LONG_TEXT, sort_order=_LAST)

    shards: Mapped[list[Shard]] = relationship(
        back_populates="task", order_by="Shard.shard_index", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, backend={self.backend!r}, status={self.status!r})"


class ArchivedTask(_TaskColumns, Base):
    """An archived task: the ``archived_tasks`` table (the task columns, then ``archived_at``)."""

    __tablename__ = "archived_tasks"
    __table_args__ = (
        Index("archived_backend_idx", "backend"),
        Index("archived_status_idx", "status"),
        Index("archived_submit_time_idx", "submit_time"),
        *_list_indexes("archived_tasks"),
    )

    archived_at: Mapped[str] = mapped_column(TIME, sort_order=_LAST - 1)
    error_message: Mapped[str | None] = mapped_column(LONG_TEXT, sort_order=_LAST)

    shards: Mapped[list[ArchivedShard]] = relationship(
        primaryjoin="ArchivedTask.task_id == foreign(ArchivedShard.uniqc_task_id)",
        order_by="ArchivedShard.shard_index",
        viewonly=True,
    )

    def __repr__(self) -> str:
        return f"ArchivedTask(task_id={self.task_id!r}, backend={self.backend!r}, status={self.status!r})"


class _ShardColumns:
    """The columns ``task_shards`` and ``archived_task_shards`` share, in uniqc's order."""

    shard_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform_task_id: Mapped[str] = mapped_column(KEY)
    backend: Mapped[str] = mapped_column(KEY)
    circuit_count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    sub_index_offset: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    status: Mapped[str] = mapped_column(STATUS)
    result_json: Mapped[str | None] = mapped_column(LONG_TEXT)
    error_message: Mapped[str | None] = mapped_column(LONG_TEXT)
    submit_time: Mapped[str] = mapped_column(TIME)
    update_time: Mapped[str] = mapped_column(TIME)


class Shard(_ShardColumns, Base):
    """One platform-side job of a task: the ``task_shards`` table. Deleting the task deletes it."""

    __tablename__ = "task_shards"
    __table_args__ = (
        Index("task_shards_platform_idx", "platform_task_id"),
        Index("task_shards_status_idx", "status"),
    )

    # Declared first so that it is the first column, as in uniqc's layout.
    uniqc_task_id: Mapped[str] = mapped_column(
        KEY, ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True, sort_order=-1
    )

    task: Mapped[Task] = relationship(back_populates="shards")

    def __repr__(self) -> str:
        return f"Shard(uniqc_task_id={self.uniqc_task_id!r}, shard_index={self.shard_index!r})"


class ArchivedShard(_ShardColumns, Base):
    """A shard of an archived task: ``archived_task_shards`` (no foreign key, as in uniqc)."""

    __tablename__ = "archived_task_shards"
    __table_args__ = (Index("archived_task_shards_platform_idx", "platform_task_id"),)

    uniqc_task_id: Mapped[str] = mapped_column(KEY, primary_key=True, sort_order=-1)
    archived_at: Mapped[str] = mapped_column(TIME, sort_order=_LAST)

    def __repr__(self) -> str:
        return f"ArchivedShard(uniqc_task_id={self.uniqc_task_id!r}, shard_index={self.shard_index!r})"
