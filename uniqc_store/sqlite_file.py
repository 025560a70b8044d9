"""Looking at an SQLite file without the power to change it.

Every check that can refuse a file runs here, before the store opens a read-write connection:
first on the 100 raw bytes of the header (:func:`read_raw_header`), then on a read-only SQLite
connection (:func:`inspect_file`). A read-write connection, even one that only reads, may
checkpoint a WAL into the file and delete its ``-wal``/``-shm`` siblings when it closes, so it
must never be the one that finds out a file is not ours.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from . import versions
from .execution import SQLITE_BUSY_SLICE_S, SQLITE_BUSY_TIMEOUT_S, is_busy

SQLITE_MAGIC = b"SQLite format 3\x00"


class NotSQLiteError(Exception):
    """The file's first bytes are not an SQLite header."""


@dataclass(frozen=True)
class RawHeader:
    """The header fields the store decides on, as stored in the database file itself."""

    application_id: int
    user_version: int


@dataclass(frozen=True)
class IndexShape:
    """What decides how an index serves a query and what it refuses: its key columns, and whether
    it is unique, partial, descending or collated otherwise than binary in any of them."""

    columns: tuple[str, ...]
    unique: bool = False
    partial: bool = False
    descending: bool = False
    collated: bool = False

    def describe(self) -> str:
        kinds = [kind for kind in ("unique", "partial", "descending", "collated") if getattr(self, kind)]
        return " ".join([*kinds, f"({', '.join(self.columns)})"])


@dataclass(frozen=True)
class FileFacts:
    """What a read-only connection sees in a file, all read in one snapshot."""

    application_id: int
    user_version: int
    #: Names of the schema objects (tables, indexes, views, triggers), SQLite's own excluded.
    objects: frozenset[str]
    #: The rows of each table that may hold an Alembic revision, by table name (only tables that
    #: exist and have a ``version_num`` column).
    version_rows: dict[str, list[str]] = field(default_factory=dict)
    #: Column names of each table of interest that exists, in table order.
    columns: dict[str, list[str]] = field(default_factory=dict)
    #: uniqc's tables that exist, as SQLite reports them (see :mod:`uniqc_store.versions`).
    layout: versions.Layout = field(default_factory=dict)
    #: The indexes of ``tasks`` and ``archived_tasks`` by table, then by name.
    index_shapes: dict[str, dict[str, IndexShape]] = field(default_factory=dict)


def read_raw_header(path: Path) -> RawHeader | None:
    """Read the header from the file's raw bytes; None for an empty (brand-new) file.

    Only call this while the process has no SQLite connection to the file: closing another
    descriptor of a database file drops every POSIX lock that the process holds on it.

    Raises:
        NotSQLiteError: the file is not an SQLite database.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        head = file.read(100)
    if not head:
        return None
    # The magic string, and the payload fractions that every valid header has (64, 32, 32).
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC) or head[21:24] != b"\x40\x20\x20":
        raise NotSQLiteError(str(path))
    return RawHeader(int.from_bytes(head[68:72], "big"), int.from_bytes(head[60:64], "big", signed=True))


def readonly_uri(path: Path, *, immutable: bool = False) -> str:
    """A ``file:`` URI opening ``path`` read-only (any byte of the name percent-encoded)."""
    return f"file:{urllib.parse.quote(os.fsencode(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def inspect_file(path: Path, version_tables: tuple[str, ...], tables: tuple[str, ...]) -> FileFacts:
    """Read the header, the schema objects, the revision tables and some tables' columns of
    ``path`` without the power to change it, in one read transaction.

    A read-only connection cannot write the file, so it cannot checkpoint a WAL into it either
    (values still only in the WAL are read all the same). But on a WAL-mode file without a
    ``-wal``, it would create empty ``-wal``/``-shm`` files and leave them behind; there the
    file alone holds everything, and is read as immutable (no locks, no siblings) unless it
    changed during the read, when the read is repeated the ordinary read-only way.

    Raises:
        sqlite3.Error: SQLite could not read the file.
    """
    if any(os.path.exists(f"{path}{suffix}") for suffix in ("-wal", "-journal")):
        return _inspect(readonly_uri(path), version_tables, tables)
    before = _signature(path)
    facts = _inspect(readonly_uri(path, immutable=True), version_tables, tables)
    if _signature(path) == before:
        return facts
    return _inspect(readonly_uri(path), version_tables, tables)  # written meanwhile


def _signature(path: Path) -> tuple[object, ...]:
    st = os.stat(path)
    siblings = tuple(os.path.exists(f"{path}{suffix}") for suffix in ("-wal", "-journal"))
    return (st.st_ino, st.st_size, st.st_mtime_ns, *siblings)


def _inspect(uri: str, version_tables: tuple[str, ...], tables: tuple[str, ...]) -> FileFacts:
    """One consistent read, retried while another connection's lock is in the way (for up to
    :data:`~uniqc_store.execution.SQLITE_BUSY_TIMEOUT_S`, in short slices, so Ctrl-C works)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            return _inspect_once(uri, version_tables, tables)
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise


def _inspect_once(uri: str, version_tables: tuple[str, ...], tables: tuple[str, ...]) -> FileFacts:
    conn = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_SLICE_S, isolation_level=None)
    try:
        conn.execute("BEGIN")
        application_id, user_version = conn.execute(
            "SELECT * FROM pragma_application_id(), pragma_user_version()"
        ).fetchone()
        objects = frozenset(
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        )
        columns = {
            table: [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            for table in (*version_tables, *tables)
            if table in objects
        }
        version_rows = {
            table: [str(row[0]) for row in conn.execute(f'SELECT version_num FROM "{table}"')]
            for table in version_tables
            if "version_num" in columns.get(table, ())
        }
        layout = {table: _table_layout(conn, table) for table in versions.UNIQC_TABLES if table in objects}
        conn.execute("COMMIT")
    finally:
        conn.close()
    shapes = {
        table: {
            index.name: IndexShape(index.columns, index.unique, index.partial, index.descending, index.collated)
            for index in layout[table].indexes
        }
        for table in versions.STORE_INDEXES
        if table in layout
    }
    return FileFacts(application_id & 0xFFFFFFFF, user_version, objects, version_rows, columns, layout, shapes)


def _table_layout(conn: sqlite3.Connection, table: str) -> versions.Table:
    """``table`` as ``PRAGMA table_info``, ``index_list``/``index_info`` and ``foreign_key_list``
    report it."""
    columns = tuple(
        versions.Column(name, type_, bool(notnull), default, pk)
        for _, name, type_, notnull, default, pk in conn.execute(f'PRAGMA table_info("{table}")')
    )
    indexes = frozenset(
        _index(conn, name, bool(unique), origin, bool(partial))
        for _, name, unique, origin, partial in conn.execute(f'PRAGMA index_list("{table}")')
    )
    foreign_keys = tuple(
        versions.ForeignKey(column, parent, to, on_update, on_delete)
        for _, _, parent, column, to, on_update, on_delete, _ in conn.execute(f'PRAGMA foreign_key_list("{table}")')
    )
    clauses: set[str] = set()
    triggers = set()
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ?", (table,)):
        if kind == "trigger":
            triggers.add(name)
        clauses.update(clause for clause in versions.EXTRA_CLAUSES if _mentions(sql or "", clause))
    return versions.Table(columns, indexes, foreign_keys, frozenset(clauses), frozenset(triggers))


def _index(conn: sqlite3.Connection, name: str, unique: bool, origin: str, partial: bool) -> versions.Index:
    # index_xinfo: (seqno, cid, name, desc, collation, key) for each key column, then the rowid.
    keys = [row for row in conn.execute(f'PRAGMA index_xinfo("{name}")') if row[5]]
    return versions.Index(
        name,
        tuple(row[2] for row in keys),
        unique,
        origin,
        partial,
        descending=any(row[3] for row in keys),
        collated=any(str(row[4]).upper() != "BINARY" for row in keys),
    )


def _mentions(sql: str, clause: str) -> bool:
    # Outside quoted names and string literals, as a whole word, in any case.
    bare = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`|\[[^\]]*\]", " ", sql)
    return re.search(r"\b" + r"\s+".join(clause.split()) + r"\b", bare, re.IGNORECASE) is not None
