"""Export and import: every record of a store as JSON Lines, one record per line.

The format (version :data:`FORMAT_VERSION`): a first line, the header ``{"format":
"uniqc-store-export", "version": 1, "uniqc_store": "<library version>", "schema_revision":
"<revision>"}``; then one JSON object per record, its ``"kind"`` first — ``"task"``,
``"shard"``, ``"archived_task"``, ``"archived_shard"`` — followed by the fields of its
``to_dict()`` (a live task without ``archived_at``; an archived shard with its ``archived_at``).
Records come table by table (tasks, shards, archived tasks, archived shards), tasks in insertion
order, so an import lists equal ``submit_time`` in the same order. UTF-8, ``\\n`` after each line.
``NaN``, ``Infinity`` and ``-Infinity`` in results are written as such, as uniqc's own
``json.dumps`` writes them: Python's ``json`` reads them back; strict JSON parsers do not.

Both directions stream: memory holds one batch of records, whatever the file's size.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, cast

from sqlalchemy import Table

from .errors import BadLinesError, DatabaseError, InvalidTaskError
from .records import MAX_TIME_LENGTH, TaskInfo, TaskShard, check_text
from .rows import (
    ARCHIVED_SHARDS,
    ARCHIVED_TASKS,
    SHARDS,
    TASKS,
    record_columns,
    shard_decoder,
    shard_row,
    task_decoder,
    task_row,
)
from .store import TaskStore
from .transfer import BATCH, TABLES, Progress, TableReads, insert_rows, present, present_keys, reads, snapshot

FORMAT = "uniqc-store-export"
FORMAT_VERSION = 1
#: The kind of the file's last line, which holds its counts.
END = "end"
#: Each table's records are of this kind in a file.
KINDS = {TASKS.name: "task", SHARDS.name: "shard", ARCHIVED_TASKS.name: "archived_task",
         ARCHIVED_SHARDS.name: "archived_shard"}  # fmt: skip
_TABLE_OF = {KINDS[table.name]: table for table in TABLES}
#: How many bad lines an import describes (it counts them all).
MAX_PROBLEMS = 20

_encode = json.JSONEncoder(ensure_ascii=False).encode  # NaN allowed, as uniqc writes it


@dataclass
class TransferCounts:
    """How many records of each kind an export wrote or an import stored."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS.values(), 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        names = {"task": "task", "shard": "shard", "archived_task": "archived task", "archived_shard": "archived shard"}
        return ", ".join(f"{n:,} {names[kind]}{'' if n == 1 else 's'}" for kind, n in self.counts.items())


# -- export --------------------------------------------------------------------------------------


def export_records(store: TaskStore, out: IO[bytes], *, progress: Progress | None = None) -> TransferCounts:
    """Write every record of ``store`` to ``out`` (a binary stream) as JSON Lines (see the
    module's description of the format), in batches: memory stays bounded. The records are read
    in one consistent snapshot (:class:`~uniqc_store.transfer.Snapshot`): the file holds the
    store as of the start of the export, whatever is written to it meanwhile.

    Returns:
        How many records of each kind were written.

    Raises:
        CorruptRecordError: a stored row's JSON cannot be decoded, or one of its values is not of
            its column's type (the message names it).
        DatabaseError: the database failed; ``out`` holds the lines written before, and no end
            line: an import refuses it.
    """
    from . import __version__
    from .schema import HEAD_REVISION

    header = {"format": FORMAT, "version": FORMAT_VERSION, "uniqc_store": __version__, "schema_revision": HEAD_REVISION}
    written = TransferCounts()
    with snapshot(store) as view:
        total = sum(view.counts().values())
        out.write(_line(header))
        done = 0
        for table in TABLES:
            kind = KINDS[table.name]
            plan = reads(table, store._db.dialect)
            to_dict = _exporter(table, plan)
            for batch in view.scan(table):
                out.write(b"".join(_line({"kind": kind, **to_dict(plan.exact(row))}) for row in batch))
                written.counts[kind] += len(batch)
                done += len(batch)
                if progress is not None:
                    progress(done, max(total, done))
    out.write(_line({"kind": END, "records": written.total, **written.counts}))
    return written


def _line(value: dict[str, Any]) -> bytes:
    return (_encode(value) + "\n").encode("utf-8")


def _exporter(table: Table, plan: TableReads) -> Callable[[Any], dict[str, Any]]:
    """Turns a row read by ``plan`` into the fields of its line (after ``kind``)."""
    columns = record_columns(table)
    picks = [plan.columns.index(name) for name in columns]
    archived = table in (ARCHIVED_TASKS, ARCHIVED_SHARDS)
    if "shard_index" in table.c:
        decode_shard = shard_decoder(columns, archived=archived)
        stamp = plan.columns.index("archived_at") if archived else None

        def shard(row: Any) -> dict[str, Any]:
            fields = decode_shard([row[i] for i in picks]).to_dict()
            if stamp is not None:
                fields["archived_at"] = row[stamp]
            return fields

        return shard
    decode_task = task_decoder(columns, archived=archived)

    def task(row: Any) -> dict[str, Any]:
        fields = decode_task([row[i] for i in picks]).to_dict()
        if not archived:
            del fields["archived_at"]
        return fields

    return task


# -- import --------------------------------------------------------------------------------------


def import_records(
    store: TaskStore, lines: Iterable[bytes], *, name: str = "the file", progress: Progress | None = None
) -> TransferCounts:
    """Import the records of an export (``lines``: the file's lines as bytes, e.g. a file opened
    ``"rb"`` or ``sys.stdin.buffer``) into ``store``, all in one transaction: either every record
    is imported or none is.

    Two passes. The first reads every line and checks it as :meth:`TaskStore.save` checks a
    record (the fields of ``TaskInfo.from_dict``/``TaskShard.from_dict``, the times too, which
    are stored as they are) and checks the file as a whole: its header, its end line and the
    counts there (a truncated export is refused). Input that is not a seekable file (a pipe,
    stdin) is copied meanwhile to a temporary file (``tempfile``'s directory, ``$TMPDIR``; memory
    stays bounded). Only then does the second pass take the write lock, read the lines again and
    check them against the database — a record whose id ``store`` (or an earlier line) already
    holds is refused, as is a shard whose task is neither in the store nor on an earlier line, an
    archived shard whose archived task is missing or was archived at another time, a task whose
    id is both live and archived — and write them. Reading goes on after a bad line, so that every
    bad line of the first pass is found (the first :data:`MAX_PROBLEMS` are described); the
    database checks stop at the first bad line. Memory holds one batch.

    Args:
        name: What to call the input in messages.
        progress: Called after every batch written with the lines done so far and the total.

    Returns:
        How many records of each kind were imported.

    Raises:
        BadLinesError: some lines are bad; nothing was imported. ``problems`` lists ``(line
            number, message)``, ``bad_lines`` counts them.
        DatabaseError: the database failed; nothing was imported.
    """
    with contextlib.ExitStack() as stack:
        seek = getattr(lines, "seek", None)
        seekable = getattr(lines, "seekable", None)
        spool: IO[bytes] | None = None
        start = 0
        if callable(seek) and callable(seekable) and seekable():
            start = cast(IO[bytes], lines).tell()
        else:
            spool = stack.enter_context(tempfile.TemporaryFile(prefix="uniqc-store-import-"))
        checker = _Importer(store, name, None)
        number = _read(checker, lines, spool)
        checker.finish(number)
        if spool is not None:
            spool.seek(0)
            lines = spool
        else:
            cast(IO[bytes], lines).seek(start)
        importer = _Importer(store, name, None)
        try:
            with store._transaction(write=True) as tx:
                importer.tx = tx
                for count, raw in enumerate(lines, 1):
                    importer.line(count, raw)
                    if progress is not None and count % BATCH == 0:
                        progress(count, number)
                importer.finish(number)
        except DatabaseError as error:
            raise type(error)(f"{error}; nothing was imported") from error
        if progress is not None:
            progress(number, number)
        return importer.imported


def _read(checker: _Importer, lines: Iterable[bytes], spool: IO[bytes] | None) -> int:
    """The first pass: check every line (copying it to ``spool`` if given); the number of lines."""
    number = 0
    for number, raw in enumerate(lines, 1):
        if spool is not None:
            spool.write(raw)
        checker.line(number, raw)
        if number == 1 and not checker.version_seen:
            break  # not an export: its other lines are not worth describing
    return number


class _DuplicateKeyError(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key twice is refused (``json`` would keep the last value silently)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _DuplicateKeyError(f"the key {twice!r} appears twice in one object")
    return value


_decode = json.JSONDecoder(object_pairs_hook=_object).decode
_BOM = b"\xef\xbb\xbf"


class _Importer:
    """The state of one pass of an import: the batch being built, what was imported, the bad
    lines, the end line. Without a transaction (``tx`` None) it only checks the lines."""

    def __init__(self, store: TaskStore, name: str, tx: Any) -> None:
        self.store = store
        self.name = name
        self.tx: Any = tx
        self.imported = TransferCounts()
        self.problems: list[tuple[int, str]] = []
        self.bad = 0
        self.version_seen = False
        self.table: Table | None = None
        self.batch: list[tuple[int, dict[str, Any]]] = []
        self.keys: set[tuple[Any, ...]] = set()
        #: Record lines of each kind read, bad ones too: the end line's counts are checked against them.
        self.seen = TransferCounts()
        self.end_line = 0  # the end line's number, once read
        self.blank = 0  # the first blank line not yet known to be trailing

    def problem(self, number: int, message: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((number, message))
        self.batch.clear()
        self.keys.clear()

    def line(self, number: int, raw: bytes) -> None:
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]  # a byte order mark some editors write: not part of the header
        if not raw.strip():
            if not self.blank:
                self.blank = number  # fine if only blank lines follow the end line
            return None
        if self.blank:
            blank, self.blank = self.blank, 0
            self.problem(blank, "a blank line (only the end of the file may have blank lines)")
        if self.end_line:
            return self.problem(number, f"a line after the end line (line {self.end_line})")
        try:
            value = _decode(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            return self.problem(number, f"not UTF-8 text ({error.reason} at byte {error.start})")
        except _DuplicateKeyError as error:
            return self.problem(number, str(error))
        except (ValueError, RecursionError) as error:
            return self.problem(number, f"not a JSON value ({error})")
        if number == 1:
            return self.header(value)
        if not isinstance(value, dict):
            return self.problem(number, f"expected a JSON object, got {type(value).__name__}")
        kind = value.pop("kind", None)
        if kind == END:
            return self.end(number, value)
        table = _TABLE_OF.get(kind) if isinstance(kind, str) else None
        if table is None:
            return self.problem(number, f"'kind' must be one of {', '.join(KINDS.values())} or {END}, got {kind!r}")
        self.seen.counts[kind] += 1
        try:
            row = _row_of(table, value)
        except InvalidTaskError as error:  # also the TypeError subclass
            return self.problem(number, f"{_label(table, value)}: {error}")
        if self.bad:
            return None  # checking only: nothing more is written
        if table is not self.table or len(self.batch) >= BATCH:
            self.flush()
            self.table = table
        plan = reads(table, self.store._db.dialect)
        key = plan.key(row)
        if key in self.keys:
            return self.problem(number, f"{plan.describe(row)} is on an earlier line too")
        self.keys.add(key)
        self.batch.append((number, row))
        return None

    def header(self, value: Any) -> None:
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            return self.problem(1, f"{self.name} is not a uniqc-store export (its first line must be its header, "
                                   f'{{"format": "{FORMAT}", "version": {FORMAT_VERSION}, ...}})')  # fmt: skip
        version = value.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            got = repr(version) if "version" in value else "no version"
            return self.problem(1, f"the header's version must be a whole number from 1 (this uniqc_store "
                                   f"reads 1 to {FORMAT_VERSION}), got {got}")  # fmt: skip
        if version > FORMAT_VERSION:
            return self.problem(1, f"export format version {version} is not one this uniqc_store reads (1 to "
                                   f"{FORMAT_VERSION}); a newer uniqc_store wrote it: upgrade (pip install -U "
                                   "uniqc_store)")  # fmt: skip
        self.version_seen = True
        return None

    def end(self, number: int, value: dict[str, Any]) -> None:
        """The end line: its counts must be those of the record lines read."""
        self.end_line = number
        expected = {"records": self.seen.total, **self.seen.counts}
        stated = {key: value.get(key) for key in expected}
        if set(value) != set(expected) or any(type(n) is not int for n in stated.values()):
            fields = ", ".join(f'"{kind}": N' for kind in KINDS.values())
            return self.problem(number, f'the end line must be {{"kind": "{END}", "records": N, {fields}}}')
        if stated != expected:
            wrong = ", ".join(f"{key} {stated[key]:,} (the file has {expected[key]:,})"
                              for key in expected if stated[key] != expected[key])  # fmt: skip
            return self.problem(number, f"the end line's counts differ from the lines before it: {wrong}; "
                                        "lines were lost or added since the export")  # fmt: skip
        return None

    def flush(self) -> None:
        """Check the batch against the database and insert it (nothing on the checking pass)."""
        if not self.batch or self.table is None:
            return
        if self.tx is None:
            self.batch.clear()
            self.keys.clear()
            return
        dialect = self.store._db.dialect
        plan = reads(self.table, dialect)
        rows = [row for _, row in self.batch]
        there = present_keys(self.tx, plan, rows)
        batch, self.batch = self.batch, []
        self.keys.clear()
        for number, row in batch:
            if plan.key(row) in there:
                self.problem(number, f"{plan.describe(row)} is already in the target (or on an earlier line)")
        if not self.bad:
            self._consistent(plan, batch)
        if self.bad:
            return
        insert_rows(self.store, self.tx, plan, rows)
        self.imported.counts[KINDS[self.table.name]] += len(rows)

    def _consistent(self, plan: TableReads, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """The checks of a batch against the other tables: a task is live or archived, not both;
        a shard's task is there, live for a live shard, archived at the same time for an archived
        one."""
        dialect = self.store._db.dialect
        rows = [row for _, row in batch]
        if plan.ordered:
            other = ARCHIVED_TASKS if self.table is TASKS else TASKS
            both = present_keys(self.tx, reads(other, dialect), rows)
            state = "an archived" if other is ARCHIVED_TASKS else "a live"
            for number, row in batch:
                if (row["task_id"],) in both:
                    self.problem(number, f"{plan.describe(row)}: the target or an earlier line holds {state} task "
                                         "of that id; a task is live or archived, not both")  # fmt: skip
            return
        archived = self.table is ARCHIVED_SHARDS
        tasks = reads(ARCHIVED_TASKS if archived else TASKS, dialect)
        owners = [{"task_id": row["uniqc_task_id"]} for row in rows]
        found = present(self.tx, tasks, owners)
        kind = "archived task" if archived else "live task"
        for number, row in batch:
            task = found.get((row["uniqc_task_id"],))
            if task is None:
                self.problem(number, f"{plan.describe(row)}: there is no {kind} {row['uniqc_task_id']!r} in the target "
                                     f"or on an earlier line (a task's line must come before its shards')")  # fmt: skip
            elif archived and task["archived_at"] != row["archived_at"]:
                when = f"archived at {row['archived_at']!r}, but its task at {task['archived_at']!r}"
                self.problem(number, f"{plan.describe(row)}: {when} (a task and its shards are archived together)")

    def finish(self, lines: int) -> None:
        if lines == 0:
            self.problem(1, f"{self.name} is empty: not a uniqc-store export")
        elif self.version_seen and not self.end_line:
            self.problem(lines + 1, f"{self.name} ends before its end line: a truncated export? (an export's last "
                                    f'line is {{"kind": "{END}", "records": N, ...}})')  # fmt: skip
        if not self.bad:
            self.flush()
        if self.bad:
            first = "; ".join(f"line {number}: {message}" for number, message in self.problems[:1])
            raise BadLinesError(
                f"{self.bad:,} bad line{'' if self.bad == 1 else 's'} in {self.name} ({first}); nothing was imported",
                list(self.problems),
                self.bad,
            )


def _label(table: Table, value: dict[str, Any]) -> str:
    noun = KINDS[table.name].replace("_", " ")
    if "shard_index" in table.c:
        return f"{noun} {value.get('shard_index')!r} of task {value.get('uniqc_task_id')!r}"
    return f"{noun} {value.get('task_id')!r}"


def _row_of(table: Table, value: dict[str, Any]) -> dict[str, Any]:
    """The row of ``table`` that a line's fields (``kind`` removed) stand for, checked as save
    checks a record; its times are kept as they are.

    Raises:
        InvalidTaskError, InvalidTaskTypeError: a field is missing or invalid.
    """
    archived = table in (ARCHIVED_TASKS, ARCHIVED_SHARDS)
    missing = [key for key in ("submit_time", "update_time") if key not in value]
    if archived and "archived_at" not in value:
        missing.append("archived_at")
    if missing:
        raise InvalidTaskError(f"missing {', '.join(missing)} (an import keeps the times it is given)")
    update_time = check_text(value["update_time"], "update_time", MAX_TIME_LENGTH)
    archived_at = check_text(value["archived_at"], "archived_at", MAX_TIME_LENGTH) if archived else None
    if "shard_index" in table.c:
        fields = dict(value)
        if not archived and fields.get("archived_at") is not None:
            raise InvalidTaskError("a live shard has no archived_at (an archived shard's kind is archived_shard)")
        fields.pop("archived_at", None)
        row = shard_row(TaskShard.from_dict(fields), update_time)
    else:
        if not archived and value.get("archived_at") is not None:
            raise InvalidTaskError("a live task has no archived_at (an archived task's kind is archived_task)")
        row = task_row(TaskInfo.from_dict(value), update_time)
    if archived:
        row["archived_at"] = archived_at
    return row


__all__ = ["FORMAT", "FORMAT_VERSION", "KINDS", "TransferCounts", "export_records", "import_records"]
