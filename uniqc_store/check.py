"""``check_store``: what is wrong with a store's database, found without changing it.

The refusals run first, as when a store opens the database (:func:`schema.peek_state`); on
SQLite every read then goes through a read-only connection (``mode=ro``; a file without a
``-wal`` is read as immutable, as :mod:`sqlite_file` does, so no sibling file is left behind;
with a ``-wal``, SQLite keeps its shared-memory index ``-shm`` beside it up to date, as any
reader does). A file SQLite finds malformed while checking is a problem reported like any
other, not an error.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, create_engine, exists, func, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from . import database, schema, sqlite_file, versions
from .errors import CorruptRecordError
from .execution import SQLITE_BUSY_TIMEOUT_S, is_busy
from .rows import (
    ARCHIVED_SHARDS,
    ARCHIVED_TASKS,
    SHARDS,
    TASKS,
    archived_shard_from_row,
    archived_task_from_row,
    record_columns,
    shard_from_row,
    task_from_row,
)

if TYPE_CHECKING:
    from .database import Database

#: At most this many ids (or rows) are named per problem; the rest are counted.
NAMED_PER_PROBLEM = 5
#: At most this many undecodable rows are reported by a full check; the rest are counted.
CORRUPT_ROWS_REPORTED = 20
#: Rows a full check decodes per fetch (bounded memory on any table size).
_FULL_CHECK_FETCH = 1000


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_store` found.

    Attributes:
        location: The SQLite file, or the server URL with its password hidden.
        revision: uniqc's schema revision recorded (None if none).
        store_revision: The revision of this library's own indexes recorded (None if none).
        full: Whether every stored JSON value was decoded too.
        problems: One human-readable line per problem; empty when the database is healthy.
    """

    location: str
    revision: str | None
    store_revision: str | None
    full: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable values (``ok`` included)."""
        return {
            "location": self.location,
            "revision": self.revision,
            "store_revision": self.store_revision,
            "full": self.full,
            "ok": self.ok,
            "problems": list(self.problems),
        }


def check_store(
    cache_dir: Path | str | None = None, *, url: str | URL | None = None, full: bool = False
) -> CheckReport:
    """Check a store's database without changing it.

    The database is chosen as :class:`~uniqc_store.TaskStore` chooses it, and refused as opening a
    store would refuse it (left untouched). Then, on every backend: the schema revisions recorded
    are the head's; the layout of uniqc's four tables equals the model's, compared as ``alembic
    check`` compares them (tables, columns, types, nullability, indexes, foreign keys); no task
    has a NULL ``task_id`` (uniqc's layout allows it; no call can then read or delete the row);
    no archived shard lacks its archived task. On SQLite also: the header (``application_id``
    "UNIC", ``user_version`` the schema version), ``PRAGMA integrity_check``, ``PRAGMA
    foreign_key_check``, and what uniqc's format fixes that the comparison with the model cannot
    see (column order, defaults, primary-key order, ``ON DELETE`` actions, and no CHECK, COLLATE
    ... clauses or triggers on uniqc's tables). A database not at head is compared with the
    layout of the version it is at instead.

    Args:
        full: Also decode the JSON of every row of the four tables (a full scan), reporting each
            row that would raise :class:`~uniqc_store.CorruptRecordError`.

    Returns:
        A :class:`CheckReport`; ``report.ok`` when nothing is wrong.

    Raises:
        DatabaseRefusedError: the database is not ours, not SQLite, or newer than this library.
        DatabaseError: there is no SQLite file at the path, or the database cannot be read.
    """
    resolved = database.resolve_url(cache_dir, url)
    with database.opened(resolved) as db:
        state = schema.peek_state(db)  # the refusals, before any connection that reads rows
        problems = _version_problems(db, state)
        if db.is_sqlite:
            problems += _sqlite_problems(db, state, full)
        else:
            problems += _server_problems(db, state, full)
        location = str(db.path) if db.path is not None else db.display_url
    return CheckReport(location, state.revision, state.store_revision, full, tuple(problems))


def _version_problems(db: Database, state: schema.SchemaState) -> list[str]:
    upgrade = "`uniqc-store upgrade` (or opening a TaskStore) brings it to head"
    if state.revision is None and not state.user_version:
        return ["it holds no uniqc_store schema yet (no revision recorded); `uniqc-store upgrade` creates it"]
    problems = []
    if state.revision is None:
        problems.append(f"it is at uniqc's schema version {state.user_version}, with no revision recorded; {upgrade}")
    elif state.revision != schema.HEAD_REVISION:
        problems.append(f"it is at revision {state.revision}, not {schema.HEAD_REVISION} (head); {upgrade}")
    elif state.version_table != schema.VERSION_TABLE:
        problems.append(f"its revision is recorded in {state.version_table} (uniqc_store 0.1.0's table); {upgrade}")
    elif db.is_sqlite and state.user_version != schema.CURRENT_SCHEMA_VERSION:
        problems.append(
            f"user_version is {state.user_version}, not {schema.CURRENT_SCHEMA_VERSION} as its revision "
            f"{state.revision} says; {upgrade}"
        )
    if state.revision == schema.HEAD_REVISION and state.store_revision != schema.STORE_HEAD:
        problems.append(f"this library's own indexes (revision {schema.STORE_HEAD}) are not recorded; {upgrade}")
    if state.missing_indexes:
        problems.append(f"indexes {', '.join(state.missing_indexes)} are missing; {upgrade} (it recreates them)")
    if db.is_sqlite and state.application_id != schema.APPLICATION_ID:
        problems.append(
            f"application_id is 0x{state.application_id or 0:08X}, not 0x{schema.APPLICATION_ID:08X} ('UNIC'); "
            f"uniqc does not recognise the file as its own"
        )
    return problems


def _server_problems(db: Database, state: schema.SchemaState, full: bool) -> list[str]:
    # In a transaction, rolled back: the store's own connections run in autocommit mode, and
    # PostgreSQL streams the rows of a full check only inside one.
    try:
        with db.orm_engine.connect() as conn, conn.begin() as transaction:
            try:
                return _common_problems(conn, db.dialect, state, full)
            finally:
                transaction.rollback()
    except database.TRANSLATED as error:
        raise db.translate(error) from error


# -- SQLite ----------------------------------------------------------------------------------------


def _sqlite_problems(db: Database, state: schema.SchemaState, full: bool) -> list[str]:
    """Everything checked on an SQLite file, in one read-only snapshot (see :mod:`sqlite_file`:
    a file without ``-wal`` is read as immutable, and read again the ordinary read-only way if it
    changed meanwhile, since an immutable read of a changing file may see a torn page)."""
    assert db.path is not None
    path = db.path
    try:
        layout = sqlite_file.inspect_file(path, schema.VERSION_TABLES, ("tasks",)).layout
        if any(os.path.exists(f"{path}{suffix}") for suffix in ("-wal", "-journal")):
            return _sqlite_snapshot(db, sqlite_file.readonly_uri(path), state, layout, full)
        before = sqlite_file._signature(path)
        problems = _sqlite_snapshot(db, sqlite_file.readonly_uri(path, immutable=True), state, layout, full)
        if sqlite_file._signature(path) == before:
            return problems
        return _sqlite_snapshot(db, sqlite_file.readonly_uri(path), state, layout, full)
    except sqlite3.Error as error:
        raise db.translate(error) from error


def _sqlite_snapshot(
    db: Database, uri: str, state: schema.SchemaState, layout: versions.Layout, full: bool
) -> list[str]:
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:  # retried while another connection's lock is in the way, in short slices (Ctrl-C)
        try:
            with _readonly_connection(uri) as conn:
                problems = _integrity_problems(conn)
                problems += _sqlite_layout_problems(layout, state)
                try:
                    problems += _common_problems(conn, "sqlite", state, full)
                except sa_exc.DBAPIError as error:
                    if not _malformed(error):
                        raise
                    problems.append(
                        f"the check stopped reading the tables: {error.orig} (the damage integrity_check "
                        "reports is in the way; restore the file from a backup)"
                    )
                return problems
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise


@contextmanager
def _readonly_connection(uri: str) -> Iterator[Connection]:
    """A SQLAlchemy connection on ``uri`` (a read-only ``file:`` URI), inside one read
    transaction, for SQLAlchemy's reflection and the PRAGMAs; driver errors pass through raw."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=0.1, isolation_level=None, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")
    except Exception as error:
        orig = getattr(error, "orig", None)
        if isinstance(orig, sqlite3.Error):
            raise orig from None  # the caller retries on busy and translates the rest
        raise
    finally:
        engine.dispose()


#: SQLite's primary result code for "database disk image is malformed".
_SQLITE_CORRUPT = 11


def _malformed(error: sa_exc.DBAPIError) -> bool:
    code = getattr(error.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_CORRUPT


def _pragma_lines(conn: Connection, pragma: str) -> list[str]:
    """The findings of ``PRAGMA integrity_check`` or ``quick_check``, one per line (SQLite may
    join several in one row, under a "*** in database main ***" heading); none when "ok"."""
    messages = (line for (text,) in conn.exec_driver_sql(f"PRAGMA {pragma}").all() for line in str(text).splitlines())
    return [f"{pragma}: {line}" for line in messages if line not in ("ok", "*** in database main ***")]


def _integrity_problems(conn: Connection) -> list[str]:
    """``integrity_check`` and ``foreign_key_check``. Damage that stops SQLite's integrity check
    itself ("database disk image is malformed", e.g. an interior page of an index) is a problem
    like the others, followed by what ``quick_check`` (which does not read the indexes' content)
    still finds."""
    try:
        problems = _pragma_lines(conn, "integrity_check")
    except sa_exc.DBAPIError as error:
        if not _malformed(error):
            raise
        problems = [f"integrity_check: {error.orig} (it stopped SQLite's check; what quick_check finds follows)"]
        try:
            problems += _pragma_lines(conn, "quick_check")
        except sa_exc.DBAPIError as again:
            if not _malformed(again):
                raise
    broken: dict[tuple[str, str], list[int]] = {}
    try:
        found = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    except sa_exc.DBAPIError as error:
        if not _malformed(error):
            raise
        return [*problems, f"foreign_key_check: {error.orig}"]
    for table, rowid, parent, _ in found:
        broken.setdefault((table, parent), []).append(rowid)
    for (table, parent), rowids in sorted(broken.items()):
        named = ""
        if table == SHARDS.name:
            shown = rowids[:NAMED_PER_PROBLEM]
            marks = ", ".join("?" * len(shown))
            ids = conn.exec_driver_sql(
                f"SELECT DISTINCT uniqc_task_id FROM task_shards WHERE rowid IN ({marks}) ORDER BY 1", tuple(shown)
            ).all()
            named = f" (task ids {_listed([row[0] for row in ids], len(ids))}; delete_shards(id) removes them)"
        problems.append(
            f"foreign_key_check: {_rows(len(rowids))} of {table} {_verb(len(rowids), 'refers', 'refer')} to no "
            f"row of {parent}{named}"
        )
    return problems


def _sqlite_layout_problems(found: versions.Layout, state: schema.SchemaState) -> list[str]:
    """What uniqc's file format fixes and the model comparison cannot see; at a version before
    head (nothing to compare with the model yet), the whole layout of that version."""
    version = state.user_version or 0
    if version not in versions.LAYOUTS:
        return []
    if not state.at_head:
        return [f"layout: {problem}" for problem in versions.differences(found, version)]
    problems = []
    expected = versions.store_layout(version)
    for name in versions.UNIQC_TABLES:
        want, have = expected.get(name), found.get(name)
        if want is None or have is None:
            continue  # a missing table is the model comparison's to report
        want_columns = {column.name: column for column in want.columns}
        have_names = [column.name for column in have.columns]
        if sorted(have_names) == sorted(want_columns) and have_names != list(want_columns):
            problems.append(f"table {name} has its columns in the order {have_names}, not uniqc's {list(want_columns)}")
        for column in have.columns:
            wanted = want_columns.get(column.name)
            if wanted is None:
                continue
            if column.default != wanted.default:
                problems.append(
                    f"column {name}.{column.name} has the default {column.default}, not uniqc's {wanted.default}"
                )
            if column.pk != wanted.pk:
                problems.append(f"column {name}.{column.name} is in the primary key at {column.pk}, not {wanted.pk}")
        wanted_keys = {(key.column, key.table, key.to): key for key in want.foreign_keys}
        for key in have.foreign_keys:
            other = wanted_keys.get((key.column, key.table, key.to))
            if other is not None and key != other:
                problems.append(
                    f"the foreign key {name}.{key.column} -> {key.table}.{key.to} is ON UPDATE {key.on_update} "
                    f"ON DELETE {key.on_delete}, not ON UPDATE {other.on_update} ON DELETE {other.on_delete}"
                )
        if have.clauses != want.clauses:
            problems.append(
                f"table {name} has {', '.join(sorted(have.clauses - want.clauses))} in its SQL, unlike uniqc's "
                f"(it changes what a save does)"
            )
        for trigger in sorted(have.triggers - want.triggers):
            problems.append(f"table {name} has a trigger {trigger}, unlike uniqc's (it may change or delete records)")
    return problems


# -- every backend ---------------------------------------------------------------------------------


def _common_problems(conn: Connection, dialect: str, state: schema.SchemaState, full: bool) -> list[str]:
    problems = model_differences(conn, dialect) if state.at_head else []
    present = set(inspect(conn).get_table_names())
    for table in (TASKS, ARCHIVED_TASKS):
        if table.name in present:
            nulls = conn.execute(select(func.count()).select_from(table).where(table.c.task_id.is_(None))).scalar()
            if nulls:
                problems.append(
                    f"{_rows(nulls)} of {table.name} {_verb(nulls, 'has', 'have')} no task_id (NULL): no call can "
                    f"read, change or delete {_verb(nulls, 'it', 'them')}; remove with SQL: DELETE FROM {table.name} "
                    "WHERE task_id IS NULL"
                )
    if {ARCHIVED_TASKS.name, ARCHIVED_SHARDS.name} <= present:
        owner = ARCHIVED_SHARDS.c.uniqc_task_id
        orphans = (
            select(owner)
            .where(~exists().where(ARCHIVED_TASKS.c.task_id == owner))
            .distinct()
            .order_by(owner)
        )
        count = conn.execute(select(func.count()).select_from(orphans.subquery())).scalar() or 0
        if count:
            ids = [row[0] for row in conn.execute(orphans.limit(NAMED_PER_PROBLEM))]
            problems.append(
                f"archived_task_shards holds shards of {count} task{'' if count == 1 else 's'} the archive does not "
                f"hold ({_listed(ids, count)}); delete_archived(id) removes them"
            )
    if full:
        problems += _corrupt_records(conn, present)
    return problems


def model_differences(conn: Connection, dialect: str) -> list[str]:
    """The differences between the live layout of uniqc's tables on ``conn`` and the model at
    head, as ``alembic check`` finds them (other tables in the database are not compared), one
    line each."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and reflected and compare_to is None:
            return False  # another application's table (servers), or anything not uniqc's
        return schema.include_object(obj, name, type_, reflected, compare_to)

    context = MigrationContext.configure(
        conn,
        opts={"include_object": include, "compare_type": True, "version_table": schema.VERSION_TABLE},
    )
    target = schema.target_metadata(dialect)
    diffs = compare_metadata(context, target)
    # An index of the model's name on other columns: one problem, not a missing and an extra index.
    added = {diff[1].name: diff[1] for diff in diffs if isinstance(diff, tuple) and diff[0] == "add_index"}
    lines = []
    for diff in diffs:
        if isinstance(diff, tuple) and diff[0] == "remove_index" and diff[1].name in added:
            wanted = added.pop(diff[1].name)
            lines.append(
                f"index {wanted.name} is on {wanted.table.name}({_columns(diff[1])}), not ({_columns(wanted)}) "
                "as the model says"
            )
    for diff in diffs:
        if isinstance(diff, tuple) and diff[0] in ("add_index", "remove_index") and diff[1].name not in added:
            continue  # reported above
        lines += _describe_diff(diff)
    return lines


def _columns(index: Any) -> str:
    return ", ".join(str(getattr(column, "name", column)) for column in index.expressions)


def _describe_diff(diff: Any) -> list[str]:
    """One line per difference Alembic reports (a tuple, or a list of column modifications)."""
    if isinstance(diff, list):
        return [line for item in diff for line in _describe_diff(item)]
    kind = diff[0]
    if kind == "add_table":
        return [f"table {diff[1].name} is missing"]
    if kind == "add_column":
        return [f"table {diff[2]} has no column {diff[3].name}"]
    if kind == "remove_column":
        return [f"table {diff[2]} has a column {diff[3].name} that the model does not have"]
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = _columns(index)
        if kind == "add_index":
            return [f"index {index.name} on {index.table.name}({columns}) is missing"]
        return [f"table {index.table.name} has an index {index.name} ({columns}) that the model does not have"]
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        columns = ", ".join(column.name for column in constraint.columns)
        what = "foreign key" if kind.endswith("fk") else type(constraint).__name__
        where = f"{what} {constraint.name or ''} on {constraint.table.name}({columns})".replace("  ", " ")
        if kind.startswith("add"):
            return [f"{where} is missing"]
        return [f"{where} is not part of the model"]
    if kind == "modify_type":
        _, _, table, column, _, found, wanted = diff
        return [f"column {table}.{column} is {found}, not {wanted} as the model says"]
    if kind == "modify_nullable":
        _, _, table, column, _, found, wanted = diff
        state = {True: "NULL", False: "NOT NULL"}
        return [f"column {table}.{column} is {state[found]}, not {state[wanted]} as the model says"]
    if kind == "modify_default":
        _, _, table, column, _, found, wanted = diff
        return [f"column {table}.{column} has the default {found}, not {wanted} as the model says"]
    return [f"differs from the model: {diff!r}"]


def _corrupt_records(conn: Connection, present: set[str]) -> list[str]:
    """Every row of the four tables whose JSON the store cannot decode, as its reads would fail."""
    decoders: Sequence[tuple[Table, Callable[[Any], Any]]] = (
        (TASKS, task_from_row),
        (SHARDS, shard_from_row),
        (ARCHIVED_TASKS, archived_task_from_row),
        (ARCHIVED_SHARDS, archived_shard_from_row),
    )
    problems: list[str] = []
    found = 0
    for table, decode in decoders:
        if table.name not in present:
            continue
        stmt = select(*(table.c[name] for name in record_columns(table)))
        result = conn.execution_options(stream_results=True, yield_per=_FULL_CHECK_FETCH).execute(stmt)
        for row in result:
            try:
                decode(tuple(row))
            except CorruptRecordError as error:
                found += 1
                if found <= CORRUPT_ROWS_REPORTED:
                    problems.append(str(error))
    if found > CORRUPT_ROWS_REPORTED:
        problems.append(f"... and {found - CORRUPT_ROWS_REPORTED} more rows whose JSON cannot be decoded")
    return problems


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _listed(ids: Sequence[object], count: int) -> str:
    shown = ", ".join(repr(task_id) for task_id in ids[:NAMED_PER_PROBLEM])
    return shown + (f" and {count - NAMED_PER_PROBLEM} more" if count > NAMED_PER_PROBLEM else "")


__all__ = ["CORRUPT_ROWS_REPORTED", "NAMED_PER_PROBLEM", "CheckReport", "check_store", "model_differences"]
