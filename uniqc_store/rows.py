"""Records and rows, converted by column name.

Which column holds which field is read off the models' tables, never written out: a column holds
the record field of the same name, or, when it is called ``<field>_json``, that field as JSON text
(``result_json``, ``metadata_json``). An encoder checks and converts a record into ``{column:
value}`` for its table; a decoder turns a row of any list of columns back into a record, with the
position of each column resolved once, when the decoder is built (the SQLite hot path decodes a
plain tuple).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Table

from .ddl import LONG_TEXT
from .errors import InvalidTaskError, InvalidTaskTypeError
from .models import ArchivedShard, ArchivedTask, Shard, Task
from .records import (
    MAX_TIME_LENGTH,
    SHARD_FIELD_CHECKS,
    TASK_FIELD_CHECKS,
    FieldCheck,
    TaskInfo,
    TaskShard,
    check_text,
    decode_json,
    load_json,
)

# Typed as FromClause by SQLAlchemy: each model, declared by __tablename__, maps a Table.
TASKS = cast(Table, Task.__table__)
ARCHIVED_TASKS = cast(Table, ArchivedTask.__table__)
SHARDS = cast(Table, Shard.__table__)
ARCHIVED_SHARDS = cast(Table, ArchivedShard.__table__)

#: The column every record of the table is stamped with when it is saved.
STAMPED = "update_time"
_JSON_SUFFIX = "_json"

Record = TypeVar("Record", TaskInfo, TaskShard)
Row = Sequence[Any]


def column_names(table: Table) -> tuple[str, ...]:
    """The model's columns of ``table``, in table order (server-only columns such as ``seq`` are
    not in the model)."""
    return tuple(column.name for column in table.columns)


def field_of(column: str) -> str:
    """The record field a column holds: ``result_json`` holds ``result``, ``backend`` ``backend``."""
    return column[: -len(_JSON_SUFFIX)] if column.endswith(_JSON_SUFFIX) else column


def record_type(table: Table) -> type[TaskInfo] | type[TaskShard]:
    """The record a row of ``table`` is read as."""
    return TaskShard if "shard_index" in table.c else TaskInfo


def record_columns(table: Table) -> tuple[str, ...]:
    """The columns of ``table`` that hold a field of its record, in table order: what is read.
    (``archived_task_shards.archived_at`` is not read: a :class:`TaskShard` has no such field, as
    in uniqc; its task's ``archived_at`` is the same.)"""
    fields = {field.name for field in dataclasses.fields(record_type(table))}
    return tuple(name for name in column_names(table) if field_of(name) in fields)


# -- record -> row ------------------------------------------------------------------------------


class Encoder(Generic[Record]):
    """Checks a record and returns ``{column: value}`` for every column of its table.

    Built once per table: each column is paired with its field's check (records.py) here, so a
    column without a check fails at import, not at the first save.
    """

    def __init__(self, kind: type[Record], table: Table, checks: dict[str, FieldCheck]) -> None:
        self.kind: type[Record] = kind
        self.table = table
        columns = [column for column in column_names(table) if column != STAMPED]
        self._plan = [(column, field_of(column), checks[field_of(column)]) for column in columns]
        # Fields the table has no column for are checked all the same (TaskInfo.archived_at).
        stored = {field for _, field, _ in self._plan}
        self._unstored = [(field, check) for field, check in checks.items() if field not in stored]

    def __call__(self, record: Record, update_time: str) -> dict[str, Any]:
        """Return the row of ``record``, its ``update_time`` column set to ``update_time``.

        Raises:
            InvalidTaskTypeError, InvalidTaskError: ``record`` is not of the table's record type,
                or a field is invalid; the message names the field.
        """
        if not isinstance(record, self.kind):
            raise InvalidTaskTypeError(f"expected a {self.kind.__name__}, got {type(record).__name__}")
        # A plain loop: measured faster than comprehensions or attrgetter here (save's hot path).
        row: dict[str, Any] = {}
        for column, field, check in self._plan:
            row[column] = check(getattr(record, field))
        for field, check in self._unstored:
            check(getattr(record, field))
        row[STAMPED] = update_time
        return row


task_row = Encoder(TaskInfo, TASKS, TASK_FIELD_CHECKS)
shard_row = Encoder(TaskShard, SHARDS, SHARD_FIELD_CHECKS)


# -- row -> record ------------------------------------------------------------------------------

# What a JSON column's NULL (or empty text, as uniqc reads it) stands for, by field.
_EMPTY_JSON: dict[str, Callable[[], Any]] = {"result": lambda: None, "metadata": dict}


class _Decoder(Generic[Record]):
    """Builds records of type ``kind`` from rows of ``columns``.

    ``label(row)`` names the record and ``remedy(row)`` the call that removes it, in the
    :class:`~uniqc_store.CorruptRecordError` of a row whose JSON cannot be decoded.
    """

    def __init__(
        self,
        kind: type[Record],
        columns: Sequence[str],
        label: Callable[[Row], str],
        remedy: Callable[[Row], str],
    ) -> None:
        fields = [field.name for field in dataclasses.fields(kind)]
        position = {column: index for index, column in enumerate(columns)}
        picks: list[int] = []
        present: list[str] = []
        # (place among the picked values, position in the row, field, what an empty column means)
        self._json: list[tuple[int, int, str, Callable[[], Any]]] = []
        for field in fields:
            if field in position:
                picks.append(position[field])
            elif field + _JSON_SUFFIX in position:
                self._json.append((len(picks), position[field + _JSON_SUFFIX], field, _EMPTY_JSON[field]))
                picks.append(position[field + _JSON_SUFFIX])
            else:
                continue  # a field the table has no column for keeps its default
            present.append(field)
        strays = sorted(set(columns) - {columns[index] for index in picks})
        if strays:
            raise ValueError(f"columns {strays} hold no field of {kind.__name__}")
        self._kind: type[Record] = kind
        self._pick: Callable[[Row], Sequence[Any]] = (
            itemgetter(*picks) if len(picks) > 1 else lambda row: (row[picks[0]],)
        )
        # Positional construction is the fast one; it needs the fields present to come first
        # (tasks lack only archived_at, the last field). Otherwise: by keyword.
        self._keywords = tuple(present) if present != fields[: len(present)] else None
        self._label = label
        self._remedy = remedy

    def __call__(self, row: Row) -> Record:
        values = list(self._pick(row))
        try:
            for slot, _, _, empty in self._json:
                text = values[slot]
                values[slot] = decode_json(text) if text else empty()
        except (RecursionError, ValueError, TypeError):
            # Rare: a row too deep for this caller's stack, or not JSON text; load_json sorts it out.
            for slot, column, field, empty in self._json:
                text = row[column]
                values[slot] = load_json(text, self._label(row), field, self._remedy(row)) if text else empty()
        if self._keywords is None:
            return self._kind(*values)
        return self._kind(**dict(zip(self._keywords, values, strict=True)))


def task_decoder(columns: Sequence[str], *, archived: bool = False) -> Callable[[Row], TaskInfo]:
    """A decoder of rows of ``columns`` (of ``tasks``, or of ``archived_tasks`` if ``archived``)
    into :class:`TaskInfo`; columns the row lacks leave their field's default."""
    task_id = itemgetter(columns.index("task_id"))
    kind = "archived task" if archived else "task"
    remedy = "delete_archived" if archived else "delete"
    return _Decoder(
        TaskInfo, columns, lambda row: f"{kind} {task_id(row)!r}", lambda row: f"{remedy}({task_id(row)!r})"
    )


def shard_decoder(columns: Sequence[str], *, archived: bool = False) -> Callable[[Row], TaskShard]:
    """A decoder of rows of ``columns`` (of ``task_shards``, or ``archived_task_shards`` if
    ``archived``) into :class:`TaskShard`."""
    task_id = itemgetter(columns.index("uniqc_task_id"))
    index = itemgetter(columns.index("shard_index"))
    kind = "archived shard" if archived else "shard"
    remedy = "delete_archived" if archived else "delete_shards"
    return _Decoder(
        TaskShard,
        columns,
        lambda row: f"{kind} {index(row)} of task {task_id(row)!r}",
        lambda row: f"{remedy}({task_id(row)!r})",
    )


#: Decoders of the rows statements.py selects from each table: its :func:`record_columns`.
task_from_row = task_decoder(record_columns(TASKS))
archived_task_from_row = task_decoder(record_columns(ARCHIVED_TASKS), archived=True)
shard_from_row = shard_decoder(record_columns(SHARDS))
archived_shard_from_row = shard_decoder(record_columns(ARCHIVED_SHARDS), archived=True)

#: Columns whose values have no length limit (JSON payloads, error texts: ``LONGTEXT`` on MySQL),
#: by table, with the field each holds: what packets.py names when a statement is too large.
PAYLOAD_FIELDS: dict[str, dict[str, str]] = {
    table.name: {column.name: field_of(column.name) for column in table.columns if column.type is LONG_TEXT}
    for table in (TASKS, ARCHIVED_TASKS, SHARDS, ARCHIVED_SHARDS)
}


#: For each model: the decoder of its rows and the columns it reads, to convert a model instance.
_BY_MODEL: dict[type[Any], tuple[Callable[[Row], Any], tuple[str, ...]]] = {
    Task: (task_from_row, record_columns(TASKS)),
    ArchivedTask: (archived_task_from_row, record_columns(ARCHIVED_TASKS)),
    Shard: (shard_from_row, record_columns(SHARDS)),
    ArchivedShard: (archived_shard_from_row, record_columns(ARCHIVED_SHARDS)),
}


def record_of(instance: Task | ArchivedTask | Shard | ArchivedShard) -> TaskInfo | TaskShard:
    """The :class:`TaskInfo` (tasks, archived tasks) or :class:`TaskShard` (shards) that a model
    instance of an ORM query holds, decoded exactly as the store's own reads decode rows.

    Raises:
        InvalidTaskTypeError: ``instance`` is not one of the four models.
        CorruptRecordError: its JSON cannot be decoded.
    """
    try:
        decode, columns = _BY_MODEL[type(instance)]
    except KeyError:
        raise InvalidTaskTypeError(
            f"expected a Task, ArchivedTask, Shard or ArchivedShard, got {type(instance).__name__}"
        ) from None
    result: TaskInfo | TaskShard = decode(tuple(getattr(instance, column) for column in columns))
    return result


# -- model instance <-> record, for ORM sessions ---------------------------------------------------

Model = Task | ArchivedTask | Shard | ArchivedShard


def _archived_at(value: object) -> str:
    return check_text(value, "archived_at", MAX_TIME_LENGTH)


def _update_time(value: object) -> str:
    return check_text(value, STAMPED, MAX_TIME_LENGTH)


#: For each model: its table, and the check of each column's field (``archived_at`` is required
#: in the archive tables; ``update_time`` is stamped by whoever writes, so not checked here).
_CHECKS: dict[type[Any], tuple[Table, dict[str, FieldCheck]]] = {
    Task: (TASKS, TASK_FIELD_CHECKS),
    ArchivedTask: (ARCHIVED_TASKS, {**TASK_FIELD_CHECKS, "archived_at": _archived_at}),
    Shard: (SHARDS, SHARD_FIELD_CHECKS),
    ArchivedShard: (ARCHIVED_SHARDS, {**SHARD_FIELD_CHECKS, "archived_at": _archived_at}),
}


def _same(value: Any) -> Any:
    return value


def _field_defaults(kind: type[TaskInfo] | type[TaskShard]) -> dict[str, Callable[[], Any]]:
    defaults: dict[str, Callable[[], Any]] = {}
    for field in dataclasses.fields(kind):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = functools.partial(_same, field.default)
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory
    return defaults


#: What a new instance's unset (None) columns stand for: the record's defaults, by field.
_DEFAULTS = {kind: _field_defaults(kind) for kind in (TaskInfo, TaskShard)}


def label_of(instance: Model) -> str:
    """``Task 'job-1'``, ``Shard 0 of task 'uqt_…'``: how errors name a model instance."""
    kind = type(instance).__name__
    if isinstance(instance, (Shard, ArchivedShard)):
        return f"{kind} {instance.shard_index!r} of task {instance.uniqc_task_id!r}"
    return f"{kind} {instance.task_id!r}"


def row_of(instance: Model, *, new: bool = False) -> dict[str, Any]:
    """Check a model instance as the store checks a record it saves, and return the row the store
    would write for it: ``{column: value}`` for every column but ``update_time``, the JSON columns
    as the store's own text of the value they decode to (``'{"a":1}'`` becomes ``'{"a": 1}'``;
    NULL or empty ``metadata_json`` becomes ``'{}'``). If ``new``, columns left None take the
    defaults of the record's fields (``status`` pending, ``shots`` 1000, ``submit_time`` now ...),
    as :func:`model_of` of a record built with only its required fields would hold.

    Raises:
        InvalidTaskTypeError, InvalidTaskError: a column holds what the store would refuse (JSON
            columns: text that is not JSON, or decodes to a value the store refuses); the message
            names the instance and the field, e.g. ``Task 'x': status 'done' is not a TaskStatus ...``.
    """
    try:
        table, checks = _CHECKS[type(instance)]
    except KeyError:
        raise InvalidTaskTypeError(
            f"expected a Task, ArchivedTask, Shard or ArchivedShard, got {type(instance).__name__}"
        ) from None
    label = label_of(instance)
    defaults = _DEFAULTS[record_type(table)] if new else {}
    row: dict[str, Any] = {}
    for column in column_names(table):
        if column == STAMPED:
            continue
        field = field_of(column)
        value = getattr(instance, column)
        try:
            if value is None and field in defaults:
                value = defaults[field]()
            elif column != field:  # JSON text: what it decodes to must be what the store accepts
                value = _decoded(value, column, field)
            row[column] = checks[field](value)
        except InvalidTaskError as error:  # also the TypeError subclass
            raise type(error)(f"{label}: {error}") from None
    return row


def _decoded(text: object, column: str, field: str) -> Any:
    if text is None or text == "":
        return _EMPTY_JSON[field]()  # what a read makes of it
    if not isinstance(text, str):
        raise InvalidTaskTypeError(
            f"{column} must be JSON text or None, got {type(text).__name__}; model_of() converts a record"
        )
    try:
        return decode_json(text)
    except (ValueError, RecursionError) as error:
        raise InvalidTaskError(f"{column} is not JSON text: {error}") from None


def model_of(record: TaskInfo | TaskShard, *, archived_at: str | None = None) -> Model:
    """The model instance that holds ``record``, checked as the store checks a record it saves:
    the inverse of :func:`record_of`. A :class:`TaskInfo` gives a :class:`Task`, or an
    :class:`ArchivedTask` when it has an ``archived_at`` (or one is given); a :class:`TaskShard`
    gives a :class:`Shard`, or an :class:`ArchivedShard` when ``archived_at`` is given.

    The instance is new (transient): ``session.add()`` inserts it, ``session.merge()`` inserts or
    replaces the row with its primary key (every column, ``submit_time`` included).

    Raises:
        InvalidTaskTypeError, InvalidTaskError: ``record`` is not a record, or a field is invalid;
            the message names the field.
    """
    if not isinstance(record, (TaskInfo, TaskShard)):
        raise InvalidTaskTypeError(f"expected a TaskInfo or TaskShard, got {type(record).__name__}")
    update_time = _update_time(record.update_time)
    if isinstance(record, TaskInfo):
        row = task_row(record, update_time)
        archived_at = record.archived_at if archived_at is None else archived_at
        if archived_at is None:
            return Task(**row)
        return ArchivedTask(**row, archived_at=_archived_at(archived_at))
    shard = shard_row(record, update_time)
    if archived_at is None:
        return Shard(**shard)
    return ArchivedShard(**shard, archived_at=_archived_at(archived_at))
