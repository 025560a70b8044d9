"""The declarative ``Task`` model: the v1 ``tasks`` table, exactly as uniqc lays it out in SQLite."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, MetaData, String, Text, text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .records import MAX_KEY_LENGTH, MAX_TIME_LENGTH

# Index names follow uniqc's v1 file format ("tasks_backend_idx"); the other conventions give
# every later constraint a stable name that revisions can refer to.
NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_name)s_idx",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
}

# SQLite keeps the exact v1 types. MySQL/MariaDB cannot index TEXT, so keys and times become
# VARCHAR there, and JSON payloads LONGTEXT (TEXT stops at 64 KiB). Shots are 64-bit on servers,
# as SQLite's INTEGER already is.
KEY = Text().with_variant(String(MAX_KEY_LENGTH), "mysql", "mariadb")
STATUS = Text().with_variant(String(32), "mysql", "mariadb")
TIME = Text().with_variant(String(MAX_TIME_LENGTH), "mysql", "mariadb")
JSON_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
SHOTS = Integer().with_variant(BigInteger(), "postgresql", "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base of uniqc_store's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Task(Base):
    """One task record: the ``tasks`` table of schema version 1.

    ``task_id`` is nullable at the SQL level only because uniqc's v1 layout declares it as
    ``task_id TEXT PRIMARY KEY``; the store never writes an empty id.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index(None, "backend"),
        Index(None, "status"),
        Index(None, "submit_time"),
    )

    task_id: Mapped[str] = mapped_column(KEY, primary_key=True, nullable=True)
    backend: Mapped[str] = mapped_column(KEY)
    status: Mapped[str] = mapped_column(STATUS)
    shots: Mapped[int] = mapped_column(SHOTS, server_default=text("0"))
    submit_time: Mapped[str] = mapped_column(TIME)
    update_time: Mapped[str] = mapped_column(TIME)
    result_json: Mapped[str | None] = mapped_column(JSON_TEXT)
    metadata_json: Mapped[str] = mapped_column(JSON_TEXT, server_default="{}")

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, backend={self.backend!r}, status={self.status!r})"
