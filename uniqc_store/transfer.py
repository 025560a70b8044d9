"""Copying every record of one store's database into another (SQLite, PostgreSQL, MySQL/MariaDB,
in any direction): tasks, their shards, archived tasks and archived shards, row for row.

Rows go as they are — ids, times (``update_time`` included: nothing goes through ``save``, which
stamps it) and the JSON text of results and metadata. Each table is read in batches of
:data:`BATCH` rows, in its own order: tasks (live and archived) in insertion order (SQLite's
``rowid``, a server's ``seq``), so that the target numbers them in the same order and ties of
``submit_time`` list the same; shards by primary key (their order shows nowhere). Every batch is
written in one transaction of the target, so an interruption leaves whole batches, and the next
run starts where the last one stopped (see :func:`copy_store`).

SQLite and MySQL/MariaDB are read by keyset pagination on an indexed column. PostgreSQL's ``seq``
has no index of its own, so a table there is read by one server-side cursor (memory stays bounded
on this side; the server sorts once) instead of a full scan per batch.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Insert, Table, bindparam, func, insert, literal_column, or_, select, text
from sqlalchemy.engine import URL

from . import packets
from .errors import CorruptRecordError, DatabaseError, InvalidTaskError, TaskConflictError
from .execution import AnySelect, ServerTx, Tx, compiled_sql
from .rows import ARCHIVED_SHARDS, ARCHIVED_TASKS, SHARDS, TASKS, column_names
from .statements import key_columns
from .store import TaskStore

#: Rows read, and written in one transaction, at a time.
BATCH = 1000
#: The four tables in the order they are copied: a shard after its task (foreign key).
TABLES: tuple[Table, ...] = (TASKS, SHARDS, ARCHIVED_TASKS, ARCHIVED_SHARDS)
#: What one row of each table is called in messages.
NOUNS = {TASKS.name: "task", SHARDS.name: "shard", ARCHIVED_TASKS.name: "archived task",
         ARCHIVED_SHARDS.name: "archived shard"}  # fmt: skip

Row = dict[str, Any]
#: Called after every batch with the records done so far and the total (None if unknown).
Progress = Callable[[int, "int | None"], None]


# -- reading a table in batches ------------------------------------------------------------------


class TableReads:
    """The statements that read and write one table in one dialect, in its copy order.

    A row read is the table's model columns (:func:`~uniqc_store.rows.column_names`), then the
    row's position: its insertion number for tasks, its primary key for shards.
    """

    def __init__(self, table: Table, dialect: str) -> None:
        self.table = table
        self.dialect = dialect
        self.columns = column_names(table)
        self.width = len(self.columns)
        self.keys = tuple(key_columns(table))
        #: Tasks keep their insertion order; shards are read by primary key.
        self.ordered = "task_id" in table.c
        cols = [table.c[name] for name in self.columns]
        if self.ordered:
            tie: Any = literal_column("rowid" if dialect == "sqlite" else f"{table.name}.seq")
            position: list[Any] = [tie]
            after = tie > bindparam("p0", type_=BigInteger)
        else:
            first, second = (table.c[name] for name in self.keys)
            position = [first, second]
            # "first >= p0" keeps the condition a range on the primary key's leading column.
            after = (first >= bindparam("p0")) & or_(first > bindparam("p0"), second > bindparam("p1"))
        everything = select(*cols, *position).order_by(*position)
        self.stream = everything
        self.stream_after = everything.where(after)
        self.first = everything.limit(BATCH)
        self.after = everything.where(after).limit(BATCH)
        self.count = select(func.count()).select_from(table)
        self.insert: Insert = insert(table)
        owner = table.c[self.keys[0]]
        # A fixed number of parameters, padded with the first key: one statement, built once.
        some = owner.in_([bindparam(f"k{i}") for i in range(BATCH)])
        self.lookup: AnySelect = select(*cols).where(some)
        self.lookup_keys: AnySelect = select(*(table.c[name] for name in self.keys)).where(some)
        #: (position, column, integer?) of every column whose value :meth:`exact` checks.
        self.typed = tuple(
            (index, name, table.c[name].type.python_type is int) for index, name in enumerate(self.columns)
        )

    def exact(self, row: Sequence[Any]) -> Sequence[Any]:
        """``row`` with every value as the target's column holds it, exactly: the UTF-8 text of
        bytes in a text column (SQLite stores whatever it is given, a BLOB too), an integral float
        of an integer column as an int. Anything else that is not of its column's type is refused.

        Raises:
            CorruptRecordError: a value cannot be copied as it is (the message names the row and
                the column).
        """
        fixed: list[Any] | None = None
        for index, name, integer in self.typed:
            value = row[index]
            if value is None or type(value) is (int if integer else str):
                continue
            if integer and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif not integer and isinstance(value, (bytes, bytearray, memoryview)):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError as error:
                    raise self._inexact(row, name, f"bytes that are not UTF-8 text ({error.reason} at byte "
                                                   f"{error.start})") from None  # fmt: skip
            elif integer and isinstance(value, int) and not isinstance(value, bool):
                value = int(value)
            else:
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                wanted = "an integer" if integer else "text"
                raise self._inexact(row, name, f"{type(value).__name__} {shown}, not {wanted}")
            if fixed is None:
                fixed = list(row)
            fixed[index] = value
        return row if fixed is None else fixed

    def _inexact(self, row: Sequence[Any], column: str, what: str) -> CorruptRecordError:
        try:
            named = self.describe(self.record(row))
        except (KeyError, TypeError):
            named = f"a row of {self.table.name}"
        return CorruptRecordError(
            f"the source's {named} holds in {column} {what}: it cannot be stored as it is. Fix or delete it "
            "in the source; nothing of it was written"
        )

    def position(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[self.width :])

    def record(self, row: Sequence[Any]) -> Row:
        """The row's model columns as ``{column: value}``."""
        return dict(zip(self.columns, row[: self.width], strict=True))

    def key(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[name] for name in self.keys)

    def describe(self, row: Row) -> str:
        """``task 'x'`` / ``shard 2 of task 'x'``: a row named for a message."""
        noun = NOUNS[self.table.name]
        if self.ordered:
            return f"{noun} {row['task_id']!r}"
        return f"{noun} {row['shard_index']} of task {row['uniqc_task_id']!r}"


_reads: dict[tuple[str, str], TableReads] = {}


def reads(table: Table, dialect: str) -> TableReads:
    """The :class:`TableReads` of ``table`` in ``dialect``, built once."""
    built = _reads.get((table.name, dialect))
    if built is None:
        built = _reads.setdefault((table.name, dialect), TableReads(table, dialect))
    return built


class Snapshot:
    """One consistent read of a store's database, for a whole copy or export: every statement
    sees the database as it was when the first one ran, whatever other processes write meanwhile,
    so that tasks and their shards agree and the counts are those of the rows read. SQLite: one
    read transaction (in WAL mode other connections keep writing; the file's WAL grows until it
    ends). PostgreSQL: ``REPEATABLE READ``. MySQL/MariaDB: ``WITH CONSISTENT SNAPSHOT`` (InnoDB).
    Made by :func:`snapshot`."""

    def __init__(self, store: TaskStore, tx: Tx) -> None:
        self.store = store
        self.tx = tx
        self.dialect = store._db.dialect
        self._cursors = 0

    def rows(self, stmt: AnySelect, params: dict[str, Any] | None = None) -> Sequence[Any]:
        return self.tx.rows(stmt, params)

    def counts(self) -> dict[str, int]:
        """``{table: number of rows}`` of the four tables."""
        return {table.name: int(self.rows(reads(table, self.dialect).count)[0][0]) for table in TABLES}

    def scan(
        self, table: Table, after: tuple[Any, ...] | None = None
    ) -> Generator[Sequence[Sequence[Any]], None, None]:
        """Yield the rows of ``table`` in batches of at most :data:`BATCH`, in copy order,
        starting after the position ``after`` (from the start if None)."""
        plan = reads(table, self.dialect)
        params = {} if after is None else {f"p{i}": value for i, value in enumerate(after)}
        if self.dialect == "postgresql":
            yield from self._stream(plan.stream if after is None else plan.stream_after, params)
            return
        while True:
            rows = self.rows(plan.first if after is None else plan.after, params)
            if rows:
                yield rows
            if len(rows) < BATCH:
                return
            after = plan.position(rows[-1])
            params = {f"p{i}": value for i, value in enumerate(after)}

    def _stream(self, stmt: AnySelect, params: dict[str, Any]) -> Generator[Sequence[Sequence[Any]], None, None]:
        """PostgreSQL: the rows of ``stmt`` through a server-side cursor of the snapshot's
        transaction, in batches: the server sorts once, and this side holds one batch (keyset
        pagination on ``seq``, which has no index, would scan the whole table for every batch)."""
        assert isinstance(self.tx, ServerTx)
        sql, bound = compiled_sql(stmt, self.tx.dialect)
        self._cursors += 1
        connection: Any = self.tx.connection.dbapi_connection
        cursor = connection.cursor(name=f"uniqc_store_scan_{self._cursors}")
        try:
            cursor.itersize = BATCH
            cursor.execute(sql, {**bound, **params})
            while rows := cursor.fetchmany(BATCH):
                yield rows
        finally:
            cursor.close()


#: The statement that begins a snapshot read, by dialect.
_BEGIN_SNAPSHOT = {
    "sqlite": "BEGIN",
    "postgresql": "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    "mysql": "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    "mariadb": "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
}


@contextmanager
def snapshot(store: TaskStore) -> Iterator[Snapshot]:
    """A :class:`Snapshot` of ``store``'s database, on one connection held until the block ends."""
    with store._transaction(write=False) as tx:
        command: Callable[[str], None] = tx.command  # type: ignore[attr-defined]
        command(_BEGIN_SNAPSHOT[store._db.dialect])
        if store._db.dialect == "sqlite":
            command("SELECT count(*) FROM sqlite_master")  # the first read fixes the snapshot
        yield Snapshot(store, tx)


def scan(
    store: TaskStore, table: Table, after: tuple[Any, ...] | None = None
) -> Generator[Sequence[Sequence[Any]], None, None]:
    """Yield the rows of ``table`` in ``store``'s database in batches of at most :data:`BATCH`,
    in copy order, starting after the position ``after`` (from the start if None), all read in
    one :class:`Snapshot`."""
    with snapshot(store) as view:
        yield from view.scan(table, after)


def counts(store: TaskStore) -> dict[str, int]:
    """``{table: number of rows}`` of the four tables, read in one snapshot."""
    with snapshot(store) as view:
        return view.counts()


def present(tx: Tx, plan: TableReads, rows: Sequence[Row]) -> dict[tuple[Any, ...], Row]:
    """The rows of ``plan``'s table, in the database of ``tx``, that have the key of one of
    ``rows`` (at most :data:`BATCH`), by key."""
    wanted = {plan.key(row) for row in rows}
    found = (plan.record(row) for row in tx.rows(plan.lookup, _owners(plan, rows)))
    return {key: row for row in found if (key := plan.key(row)) in wanted}


def present_keys(tx: Tx, plan: TableReads, rows: Sequence[Row]) -> set[tuple[Any, ...]]:
    """The keys of ``rows`` (at most :data:`BATCH`) that ``plan``'s table holds in the database of
    ``tx``."""
    wanted = {plan.key(row) for row in rows}
    return {key for row in tx.rows(plan.lookup_keys, _owners(plan, rows)) if (key := tuple(row)) in wanted}


def _owners(plan: TableReads, rows: Sequence[Row]) -> dict[str, Any]:
    """The lookup's parameters: the task ids of ``rows``, padded with the first."""
    owners = list(dict.fromkeys(row[plan.keys[0]] for row in rows))
    return {f"k{i}": owners[i] if i < len(owners) else owners[0] for i in range(BATCH)}


def insert_rows(store: TaskStore, tx: Tx, plan: TableReads, rows: builtins.list[Row]) -> None:
    """Insert ``rows`` as they are (on MySQL/MariaDB in statements the server accepts)."""
    if not rows:
        return
    if store._packet_limited:
        batches = packets.batches(store._db, tx, plan.insert, rows, lambda i: plan.describe(rows[i]))
    else:
        batches = [rows]
    for batch in batches:
        tx.many(plan.insert, batch)


# -- copying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableCopy:
    """What :func:`copy_store` did to one table.

    Attributes:
        table: The table's name (``tasks``, ``task_shards``, ``archived_tasks``,
            ``archived_task_shards``).
        source: Its rows in the source as of the start of the copy (the snapshot it copied).
        before: Its rows in the target before the copy.
        copied: Rows this copy wrote.
        skipped: Rows of the source not written: an earlier run's copies, or with ``merge`` the
            tasks whose id the target already holds (live or archived) and their shards.
        target: Its rows in the target, counted at the end.
        reasons: Why rows were skipped: ``(reason, rows)`` pairs adding up to ``skipped``.
    """

    table: str
    source: int
    before: int
    copied: int
    skipped: int
    target: int
    reasons: tuple[tuple[str, int], ...] = ()

    @property
    def complete(self) -> bool:
        """Every row of the source is in the target, and the target gained only those written."""
        return self.source == self.copied + self.skipped and self.target == self.before + self.copied


@dataclass(frozen=True)
class CopyReport:
    """What :func:`copy_store` did: one :class:`TableCopy` per table, in copy order; ``source``
    and ``target`` are SQLite paths or URLs with the password hidden."""

    source: str
    target: str
    merge: bool
    tables: tuple[TableCopy, ...]

    @property
    def complete(self) -> bool:
        """The counts of every table add up (see :attr:`TableCopy.complete`)."""
        return all(table.complete for table in self.tables)


def copy_store(
    source: TaskStore, target: TaskStore, *, merge: bool = False, progress: Progress | None = None
) -> CopyReport:
    """Copy every task, shard, archived task and archived shard of ``source``'s database into
    ``target``'s, as they are (ids, times, results), in batches of :data:`BATCH` rows, each
    written in one transaction. Open the target with ``TaskStore(url=...)``: that creates and
    migrates it as any store does.

    The source is read in one consistent snapshot (see :class:`Snapshot`): what is copied is the
    source as of the start of the copy, tasks and shards in agreement, whatever is written to it
    meanwhile; the report's source counts are the snapshot's.

    The target must be empty, or hold an earlier run of this copy that was interrupted: then
    this run checks that what is there equals the source's records (for tasks: its first ones in
    insertion order) and copies the rest, so running the copy again after an interruption
    finishes it and duplicates nothing; records added to the source since are copied too. A
    source whose copied records were changed, deleted or archived since no longer matches: that
    run is refused (copy into an empty database instead). Anything else is refused before a row
    is written, unless ``merge``: then a source task (live or archived) whose id the target
    holds in neither table is added after the target's own, with its shards; a task whose id the
    target already holds, live or archived, is skipped with all its shards, and the target's
    record stays as it is (``TableCopy.reasons`` counts why).

    Args:
        progress: Called after every batch with the records done so far and the total.

    Returns:
        A :class:`CopyReport` of the counts per table; ``report.complete`` says whether they add up.

    Raises:
        InvalidTaskError: ``source`` and ``target`` are the same database.
        TaskConflictError: the target holds records that are not an earlier copy of the source's
            (without ``merge``); nothing was written.
        CorruptRecordError: a value of the source cannot be stored as it is (bytes that are not
            UTF-8 in a text column, a non-integral number in an integer column, ...; see
            :meth:`TableReads.exact`); the batches before its own were copied.
        InvalidTaskError: (MySQL/MariaDB target) a record is too large for the server's
            ``max_allowed_packet``; the batches before it were copied.
        DatabaseError: either database failed; the batches before were copied, the next run
            continues after them.
    """
    if same_database(source, target):
        raise InvalidTaskError(
            f"the source and the target are the same database ({_shown(source)}); nothing was copied"
        )
    before = counts(target)
    with snapshot(source) as view:
        total = view.counts()
        starts: dict[str, tuple[Any, ...] | None] = {}
        prefix: dict[str, int] = {}
        if not merge and any(before.values()):
            for table in TABLES:
                if before[table.name]:
                    starts[table.name], prefix[table.name] = _check_earlier_copy(view, target, table, before)
        done = sum(prefix.values())
        copied: dict[str, int] = {}
        reasons: dict[str, dict[str, int]] = {table.name: {} for table in TABLES}
        for name, count in prefix.items():
            if count:
                reasons[name]["copied by an earlier run"] = count
        # merge: the ids of the source's tasks skipped (and so their shards), by task table
        dropped: dict[str, set[Any]] = {TASKS.name: set(), ARCHIVED_TASKS.name: set()}
        held = before[TASKS.name] or before[ARCHIVED_TASKS.name]
        for table in TABLES:
            plan = reads(table, target._db.dialect)
            source_plan = reads(table, source._db.dialect)
            why = reasons[table.name]
            copied[table.name] = 0
            for batch in view.scan(table, starts.get(table.name)):
                rows = [source_plan.record(source_plan.exact(row)) for row in batch]
                with target._transaction(write=True) as tx:
                    if merge:
                        fresh = _merged(tx, table, plan, rows, why, dropped, bool(held), bool(before[table.name]))
                    elif before[table.name] and not plan.ordered:  # shards an earlier run copied
                        there = present_keys(tx, plan, rows)
                        fresh = [row for row in rows if plan.key(row) not in there]
                        if len(fresh) < len(rows):
                            earlier = "copied by an earlier run"
                            why[earlier] = why.get(earlier, 0) + len(rows) - len(fresh)
                    else:
                        fresh = rows
                    insert_rows(target, tx, plan, fresh)
                copied[table.name] += len(fresh)
                done += len(rows)
                if progress is not None:
                    progress(done, max(sum(total.values()), done))
    end = counts(target)
    tables = tuple(
        TableCopy(table.name, total[table.name], before[table.name], copied[table.name],
                  sum(reasons[table.name].values()), end[table.name], tuple(reasons[table.name].items()))
        for table in TABLES
    )  # fmt: skip
    return CopyReport(_shown(source), _shown(target), merge, tables)


def _merged(
    tx: Tx,
    table: Table,
    plan: TableReads,
    rows: builtins.list[Row],
    why: dict[str, int],
    dropped: dict[str, set[Any]],
    held: bool,
    look_up: bool,
) -> builtins.list[Row]:
    """The rows of a merge's batch to write: a task whose id the target holds live or archived is
    skipped, and so are the shards of a skipped task (its id added to ``dropped``); ``why``
    counts the reasons."""
    fresh: builtins.list[Row] = []
    if plan.ordered:
        if not held:
            return rows
        live = present_keys(tx, reads(TASKS, plan.dialect), rows)
        archived = present_keys(tx, reads(ARCHIVED_TASKS, plan.dialect), rows)
        for row in rows:
            key = (row["task_id"],)
            reason = ("the target holds a live task of that id" if key in live
                      else "the target holds an archived task of that id" if key in archived else None)  # fmt: skip
            if reason is None:
                fresh.append(row)
            else:
                why[reason] = why.get(reason, 0) + 1
                dropped[table.name].add(row["task_id"])
        return fresh
    owners = dropped[TASKS.name if table is SHARDS else ARCHIVED_TASKS.name]
    there = present_keys(tx, plan, rows) if look_up else set()
    for row in rows:
        if row["uniqc_task_id"] in owners:
            reason = "its task was skipped"
        elif plan.key(row) in there:
            reason = "the target holds a shard of that key"
        else:
            fresh.append(row)
            continue
        why[reason] = why.get(reason, 0) + 1
    return fresh


def _shown(store: TaskStore) -> str:
    """The SQLite file's path, or the server's URL with its password hidden."""
    return str(store.db_path) if store.db_path is not None else store.url


def _check_earlier_copy(
    view: Snapshot, target: TaskStore, table: Table, before: dict[str, int]
) -> tuple[tuple[Any, ...] | None, int]:
    """Check that the target's rows of ``table`` are an earlier copy's: for tasks, the first rows
    in insertion order of the source's snapshot ``view``; for shards, rows the source holds.
    Return where the copy continues in the source (None: from the start) and how many rows are
    already there."""
    source = view.store
    source_plan, target_plan = reads(table, view.dialect), reads(table, target._db.dialect)
    if source_plan.ordered:
        source_rows = _rows(view.scan(table))
        position: tuple[Any, ...] | None = None
        number = 0
        try:
            for number, raw in enumerate(_rows(scan(target, table)), 1):
                row = target_plan.record(raw)
                theirs = next(source_rows, None)
                if theirs is None:
                    raise _not_an_earlier_copy(
                        source, target, before,
                        f"its {target_plan.describe(row)} (number {number:,} in insertion order) is not in the "
                        f"source, which has only {number - 1:,} {table.name}",
                    )  # fmt: skip
                mine = source_plan.record(source_plan.exact(theirs))
                if row != mine:
                    raise _not_an_earlier_copy(
                        source, target, before,
                        f"its {target_plan.describe(row)} (number {number:,} in insertion order) is not the "
                        f"source's {source_plan.describe(mine)}{_difference(row, mine)}",
                    )  # fmt: skip
                position = source_plan.position(theirs)
        finally:
            source_rows.close()
        return position, number
    for batch in scan(target, table):
        rows = [target_plan.record(raw) for raw in batch]
        found = (source_plan.record(source_plan.exact(raw)) for raw in view.rows(source_plan.lookup,
                                                                                  _owners(source_plan, rows)))
        wanted = {target_plan.key(row) for row in rows}
        held = {key: row for row in found if (key := source_plan.key(row)) in wanted}
        for row in rows:
            same = held.get(target_plan.key(row))
            if same != row:
                what = "is not in the source" if same is None else f"differs from the source's{_difference(row, same)}"
                raise _not_an_earlier_copy(source, target, before, f"its {target_plan.describe(row)} {what}")
    return None, 0


def _rows(batches: Generator[Sequence[Sequence[Any]], None, None]) -> Generator[Sequence[Any], None, None]:
    try:
        for batch in batches:
            yield from batch
    finally:
        batches.close()  # ends the scan's read transaction now, not at garbage collection


def _difference(row: Row, other: Row) -> str:
    fields = [name for name in row if row[name] != other.get(name)]
    return f" (they differ in {', '.join(fields)})" if fields else ""


def _not_an_earlier_copy(source: TaskStore, target: TaskStore, before: dict[str, int], what: str) -> TaskConflictError:
    holds = ", ".join(f"{count:,} {NOUNS[table]}{'' if count == 1 else 's'}" for table, count in before.items())
    return TaskConflictError(
        f"the target {_shown(target)} already holds records ({holds}) that are not an earlier copy of "
        f"{_shown(source)}: {what}. Nothing was copied. Copy into an empty database, or merge (uniqc-store "
        "copy --merge; copy_store(..., merge=True)) to add the source's records whose ids the target lacks "
        "and keep the target's own"
    )


_LOCAL_HOSTS = frozenset({None, "", "localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
#: Who a server says it is: the same answer from two stores means one database.
_IDENTITY = {
    "postgresql": "SELECT current_database(), inet_server_port(), pg_postmaster_start_time()",
    "mysql": "SELECT DATABASE(), @@hostname, @@port, @@datadir",
}


def same_database(one: TaskStore, other: TaskStore) -> bool:
    """Whether two stores name the same database: the same SQLite file; on servers the same URL
    once spelt alike (local names of this machine taken as one, the default port filled in,
    ``mariadb`` and ``mysql`` as one), or else the same answer of both servers to who they are
    (PostgreSQL: database, port and start time; MySQL/MariaDB: database, host name, port, data
    directory), which sees through any other spelling."""
    a, b = one._db, other._db
    if a is b:
        return True
    if a.path is not None and b.path is not None:
        try:
            return a.path.samefile(b.path)
        except OSError:
            return a.path == b.path
    if a.path is not None or b.path is not None or _family(a.url) != _family(b.url):
        return False
    if _server_key(a.url) == _server_key(b.url):
        return True
    return _identity(one) == _identity(other) is not None


def _family(url: URL) -> str:
    name = url.get_backend_name()
    return "mysql" if name in ("mysql", "mariadb") else name


def _server_key(url: URL) -> tuple[Any, ...]:
    host = "localhost" if url.host in _LOCAL_HOSTS else url.host
    family = _family(url)
    return (family, host, url.port or _DEFAULT_PORTS.get(family), url.database)


def _identity(store: TaskStore) -> tuple[Any, ...] | None:
    """The server's own answer to who it is (see :data:`_IDENTITY`); None if it will not say."""
    sql = _IDENTITY.get(_family(store._db.url))
    if sql is None:
        return None
    try:
        with store._transaction(write=False) as tx:
            return tuple(tx.rows(text(sql))[0])
    except DatabaseError:
        return None


__all__ = ["BATCH", "TABLES", "CopyReport", "TableCopy", "copy_store", "counts", "same_database", "scan"]
