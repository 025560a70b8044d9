"""uniqc's SQLite file layout at each schema version, as SQLite itself reports it.

Each version ``N`` is the layout uniqc's store leaves at ``PRAGMA user_version = N`` and the one
this library's revision ``000N`` leaves (``migrations/versions/000N_*.py``). It is described
here once, as ``PRAGMA table_info``, ``index_list``/``index_info`` and ``foreign_key_list``
report it (not as DDL text, which SQLite keeps verbatim and which differs between writers), and
used both to decide whether a file with ``user_version`` N and no revision of ours really is
uniqc's (adoption) and by the tests that compare files written here with files uniqc wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every table of uniqc's, in the order the versions added them.
UNIQC_TABLES = ("tasks", "archived_tasks", "task_shards", "archived_task_shards")


@dataclass(frozen=True)
class Column:
    """One row of ``PRAGMA table_info``: name, declared type, NOT NULL, default, primary-key rank."""

    name: str
    type: str
    notnull: bool = False
    default: str | None = None
    pk: int = 0


@dataclass(frozen=True)
class Index:
    """One row of ``PRAGMA index_list`` with the columns ``index_info`` lists for it."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    origin: str = "c"  # 'c': CREATE INDEX, 'pk': the primary key's, 'u': a UNIQUE constraint's
    partial: bool = False  # CREATE INDEX ... WHERE
    descending: bool = False  # a key column DESC
    collated: bool = False  # a key column with a collation other than BINARY


@dataclass(frozen=True)
class ForeignKey:
    """One row of ``PRAGMA foreign_key_list`` (single-column keys only)."""

    column: str
    table: str
    to: str
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    indexes: frozenset[Index] = frozenset()
    foreign_keys: tuple[ForeignKey, ...] = ()
    #: Clauses of the table's or its indexes' SQL that no PRAGMA reports and that change what a
    #: save does (see :data:`EXTRA_CLAUSES`); uniqc's tables have none.
    clauses: frozenset[str] = frozenset()
    #: Triggers on the table; uniqc's tables have none.
    triggers: frozenset[str] = frozenset()


#: Words of a table's SQL that change its behaviour without showing in any PRAGMA: a CHECK that
#: refuses rows, a collation that makes 'a' and 'A' one id, a deferred or generated column ...
EXTRA_CLAUSES = ("CHECK", "COLLATE", "DEFERRABLE", "GENERATED", "STRICT", "WITHOUT ROWID", "AUTOINCREMENT")


Layout = dict[str, Table]


def _text(name: str, *, notnull: bool = True, default: str | None = None, pk: int = 0) -> Column:
    return Column(name, "TEXT", notnull, default, pk)


def _integer(name: str, default: str | None = None, pk: int = 0) -> Column:
    return Column(name, "INTEGER", True, default, pk)


# The v1 task columns, shared by ``tasks`` and ``archived_tasks``. ``task_id TEXT PRIMARY KEY``
# does not make the column NOT NULL in SQLite.
_TASK_COLUMNS = (
    _text("task_id", notnull=False, pk=1),
    _text("backend"),
    _text("status"),
    _integer("shots", "0"),
    _text("submit_time"),
    _text("update_time"),
    _text("result_json", notnull=False),
    _text("metadata_json", default="'{}'"),
)
_ERROR_MESSAGE = _text("error_message", notnull=False)
_ARCHIVED_AT = _text("archived_at")
_SHARD_COLUMNS = (
    _text("uniqc_task_id", pk=1),
    _integer("shard_index", pk=2),
    _text("platform_task_id"),
    _text("backend"),
    _integer("circuit_count", "1"),
    _integer("sub_index_offset", "0"),
    _text("status"),
    _text("result_json", notnull=False),
    _text("error_message", notnull=False),
    _text("submit_time"),
    _text("update_time"),
)


def _indexes(table: str, *named: tuple[str, str]) -> frozenset[Index]:
    return frozenset([Index(f"sqlite_autoindex_{table}_1", pk_columns(table), True, "pk")] + [
        Index(name, (column,)) for name, column in named
    ])


def pk_columns(table: str) -> tuple[str, ...]:
    """The primary-key columns of one of uniqc's tables."""
    return ("uniqc_task_id", "shard_index") if table.endswith("task_shards") else ("task_id",)


_TASKS_INDEXES = _indexes(
    "tasks", ("tasks_backend_idx", "backend"), ("tasks_status_idx", "status"), ("tasks_submit_time_idx", "submit_time")
)
_ARCHIVED_INDEXES = _indexes(
    "archived_tasks",
    ("archived_backend_idx", "backend"),
    ("archived_status_idx", "status"),
    ("archived_submit_time_idx", "submit_time"),
)

_V1: Layout = {"tasks": Table(_TASK_COLUMNS, _TASKS_INDEXES)}
_V2: Layout = {**_V1, "archived_tasks": Table((*_TASK_COLUMNS, _ARCHIVED_AT), _ARCHIVED_INDEXES)}
# v3 adds error_message with ALTER TABLE ... ADD COLUMN: the last column of each table.
_V3: Layout = {
    "tasks": Table((*_TASK_COLUMNS, _ERROR_MESSAGE), _TASKS_INDEXES),
    "archived_tasks": Table((*_TASK_COLUMNS, _ARCHIVED_AT, _ERROR_MESSAGE), _ARCHIVED_INDEXES),
}
_V4: Layout = {
    **_V3,
    "task_shards": Table(
        _SHARD_COLUMNS,
        _indexes("task_shards", ("task_shards_platform_idx", "platform_task_id"), ("task_shards_status_idx", "status")),
        (ForeignKey("uniqc_task_id", "tasks", "task_id", on_delete="CASCADE"),),
    ),
    "archived_task_shards": Table(
        (*_SHARD_COLUMNS, _ARCHIVED_AT),
        _indexes("archived_task_shards", ("archived_task_shards_platform_idx", "platform_task_id")),
    ),
}

#: uniqc's layout at each ``user_version`` (v5 moved data only).
LAYOUTS: dict[int, Layout] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V4}

#: Every index name of this library's own starts so (uniqc's never do, and never will need to).
STORE_INDEX_PREFIX = "uniqc_store_"

#: The indexes this library adds on its own branch of revisions (``migrations/versions/s0*``),
#: as SQLite reports them: what ``list`` and ``list_archived`` need to read a page newest first in
#: O(log n + limit) for any filter. Invisible to uniqc (an index changes no stored value and no
#: query's result) and never counted in ``user_version``. Servers have each with their tie column
#: ``seq`` appended, and one more for the unfiltered order (SQLite's ``*_submit_time_idx`` already
#: ends in the rowid).
STORE_INDEXES: dict[str, frozenset[Index]] = {
    table: frozenset(
        Index(f"{STORE_INDEX_PREFIX}{table}_{name}_idx", columns)
        for name, columns in (
            ("status_time", ("status", "submit_time")),
            ("backend_time", ("backend", "submit_time")),
            ("status_backend_time", ("status", "backend", "submit_time")),
        )
    )
    for table in ("tasks", "archived_tasks")
}


def store_layout(version: int) -> Layout:
    """The layout of a file this library keeps at uniqc's ``version``: uniqc's, with this library's
    own indexes (from version 5, which they follow)."""
    if version < 5:
        return LAYOUTS[version]
    return {
        name: Table(
            table.columns, table.indexes | STORE_INDEXES.get(name, frozenset()), table.foreign_keys,
            table.clauses, table.triggers,
        )
        for name, table in LAYOUTS[version].items()
    }


def differences(found: Layout, version: int) -> list[str]:
    """What in ``found`` (uniqc's tables of a file, as read by
    :func:`uniqc_store.sqlite_file.inspect_file`) differs from uniqc's layout ``version``; empty
    when they are the same."""
    expected = LAYOUTS[version]
    problems = []
    for name in UNIQC_TABLES:
        want, have = expected.get(name), found.get(name)
        if want is None and have is not None:
            problems.append(f"table {name} should not exist yet")
        elif want is not None and have is None:
            problems.append(f"table {name} is missing")
        elif want is not None and have is not None:
            if have.columns != want.columns:
                problems.append(f"table {name} has columns {[c.name for c in have.columns]}, not uniqc's")
            # This library's own indexes may be there or not (exactly as it makes them): they
            # are versioned on its own branch, which :mod:`uniqc_store.schema` checks.
            if have.indexes - STORE_INDEXES.get(name, frozenset()) != want.indexes:
                problems.append(f"table {name} has indexes {sorted(i.name for i in have.indexes)}, not uniqc's")
            if have.foreign_keys != want.foreign_keys:
                problems.append(f"table {name} has different foreign keys")
            if have.clauses != want.clauses:
                problems.append(f"table {name} has {', '.join(sorted(have.clauses))} in its SQL, unlike uniqc's")
            if have.triggers != want.triggers:
                problems.append(f"table {name} has triggers {sorted(have.triggers)}")
    return problems
