"""What ``archive_completed`` / ``clear_completed(older_than=...)`` sweep with: the age rule, the
cutoff, the batch size and the scan of the live tasks a batch at a time, and their result.

Which finished task is "older than" a cutoff is decided on ``update_time`` (when it last changed:
for a finished task, when it finished), parsed in Python, never compared as text: uniqc writes
UTC with an offset, but uniqc 0.0.7 wrote local times without one, and a row may hold anything.
The moves and deletes themselves are the store's (``TaskStore._sweep``), one batch per transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, bindparam, exists, or_, select

from .errors import InvalidTaskError, InvalidTaskTypeError
from .execution import AnySelect
from .rows import ARCHIVED_SHARDS, ARCHIVED_TASKS, TASKS

#: Tasks each transaction of ``archive_completed``/``clear_completed(older_than=...)`` looks at
#: (with their shards): what bounds how long a writer in another process waits for the write lock
#: (see benchmarks/bench_lean.py and the README).
SWEEP_BATCH = 500
#: How long ``archive_completed``/``clear_completed(older_than=...)`` pause between batches, so that
#: a writer waiting for the lock gets it: SQLite grants no lock in turn, and a waiting connection
#: polls every 25 ms at most (the store's, whose waits are 0.1 s slices of SQLite's busy handler)
#: — without the pause, the next batch would take the lock again first (benchmarks/bench_lean.py).
SWEEP_PAUSE_S = 0.03
#: Largest ``batch_size`` accepted.
MAX_SWEEP_BATCH = 100_000

#: A time written without an offset may be in any zone from UTC-12:00 to UTC+14:00.
_EARLIEST_OFFSET = timedelta(hours=12)
_LATEST_OFFSET = timedelta(hours=14)
_AGE = re.compile(r"(-?)([0-9]{1,12})([smhdw])")  # ASCII digits only: int() would take any script's
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class SweepResult:
    """What ``archive_completed`` or ``clear_completed(older_than=...)`` did.

    Attributes:
        tasks: Tasks archived (or deleted), with their shards: the rows the statements really
            moved or deleted, as the database counted them.
        skipped: Finished tasks left alone: those whose ``update_time`` could not be compared
            with the cutoff (not a time, or a time without an offset too close to the cutoff to
            tell in which zone it was written; see :func:`is_older`), and the ``without_id``.
        conflicts: Ids of finished tasks left live because the archive already holds records with
            the id (archive only; ``delete_archived(id)`` or ``delete(id)`` clears the way).
        cutoff: The cutoff, ISO 8601 in UTC (None when every finished task was meant).
        without_id: Of ``skipped``, the finished tasks (older than the cutoff, or that cannot be
            told) whose ``task_id`` is NULL: uniqc's layout allows it on SQLite, but no statement
            by id reaches such a row (``uniqc-store check`` reports them, with the SQL that
            removes them).
    """

    tasks: int = 0
    skipped: int = 0
    conflicts: tuple[str, ...] = ()
    cutoff: str | None = None
    without_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "skipped": self.skipped,
            "conflicts": list(self.conflicts),
            "cutoff": self.cutoff,
            "without_id": self.without_id,
        }


def parse_age(text: str) -> timedelta:
    """``"30d"`` → ``timedelta(days=30)``: a whole number and one unit, ``s``, ``m``, ``h``, ``d``
    or ``w`` (seconds, minutes, hours, days, weeks).

    Raises:
        InvalidTaskError: not of that form (digits other than ASCII 0-9 included), negative, or
            so large that now minus it is before the year 1.
    """
    match = _AGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        digits = "" if not isinstance(text, str) else "".join(c for c in text if c.isdigit() and not c.isascii())
        raise InvalidTaskError(
            f"older-than {text!r}: expected a whole number and a unit, s, m, h, d or w "
            "(seconds, minutes, hours, days, weeks), e.g. 30d"
            + (f"; write the number with the ASCII digits 0-9, not {digits!r}" if digits else "")
        )
    sign, number, unit = match.groups()
    if sign:
        raise InvalidTaskError(
            f"older-than {text!r}: an age cannot be negative; e.g. 30d, or 0s for every finished task"
        )
    try:
        age = timedelta(**{_UNITS[unit]: int(number)})
        datetime.now(timezone.utc) - age
    except OverflowError:
        raise InvalidTaskError(f"older-than {text!r} is too large: now minus it is before the year 1") from None
    return age


def older_than_cutoff(older_than: object, now: datetime | None = None) -> datetime:
    """The aware UTC instant before which a finished task counts as old: ``now - older_than`` for
    a ``timedelta`` (≥ 0), or ``older_than`` itself for a timezone-aware ``datetime``.

    Raises:
        InvalidTaskTypeError: neither a ``timedelta`` nor a ``datetime``.
        InvalidTaskError: a negative ``timedelta``, one so large that the cutoff would be before
            the year 1, a naive ``datetime``, or one before the year 1 in UTC.
    """
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise InvalidTaskError(f"older_than must not be negative, got {older_than!r}")
        now = now or datetime.now(timezone.utc)
        try:
            return now - older_than
        except OverflowError:
            raise InvalidTaskError(
                f"older_than {older_than!r} is too large: now minus it is before the year 1"
            ) from None
    if isinstance(older_than, datetime):
        if older_than.utcoffset() is None:
            raise InvalidTaskError(
                "older_than: a datetime must be timezone-aware (say datetime.now(timezone.utc) - "
                "timedelta(days=30)); a naive one could mean any time zone"
            )
        try:
            return older_than.astimezone(timezone.utc)
        except OverflowError:
            raise InvalidTaskError(f"older_than {older_than.isoformat()} is before the year 1 in UTC") from None
    raise InvalidTaskTypeError(
        f"older_than must be a datetime.timedelta or a timezone-aware datetime, got {type(older_than).__name__}"
    )


def is_older(stored: object, cutoff: datetime) -> bool | None:
    """Whether a stored ``update_time`` is before ``cutoff``: True, False, or None when it cannot
    be told.

    A time with an offset (what uniqc and this library write) is compared as the instant it is.
    A time without one (uniqc 0.0.7 wrote local times) may be in any zone from UTC-12:00 to
    UTC+14:00: it counts as older only if it is older in every one of them, and as newer only if
    newer in every one; in between (within about a day of the cutoff) it cannot be told. So can't
    anything that is not an ISO 8601 time.
    """
    if not isinstance(stored, str):
        return None
    text = stored.strip()
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not take the Z suffix
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.utcoffset() is not None:
        return moment < cutoff
    # Written at UTC-12:00 it is the latest instant it can be; at UTC+14:00 the earliest. Past
    # the calendar's end (year 9999) or start (year 1) it is neither older nor newer everywhere.
    naive_cutoff = cutoff.replace(tzinfo=None)
    latest, earliest = _shifted(moment, _EARLIEST_OFFSET), _shifted(moment, -_LATEST_OFFSET)
    if latest is not None and latest < naive_cutoff:
        return True
    if earliest is not None and earliest >= naive_cutoff:
        return False
    return None


def _shifted(moment: datetime, offset: timedelta) -> datetime | None:
    try:
        return moment + offset
    except OverflowError:
        return None


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is an int from 1 to :data:`MAX_SWEEP_BATCH`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidTaskTypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= MAX_SWEEP_BATCH:
        raise InvalidTaskError(f"batch_size must be 1 … {MAX_SWEEP_BATCH}, got {batch_size}")
    return batch_size


@dataclass(frozen=True)
class SweepScan:
    """The statements that walk the live tasks by ``task_id``, a batch at a time: ``first``
    (parameter ``limit``), then ``next`` (also ``after``, the last id seen). Each row is
    ``(task_id, status, update_time, in_archive)``, ``in_archive`` true when the archive already
    holds a task or shards with the id. On servers the rows are locked until the transaction ends.

    Rows whose ``task_id`` is NULL (SQLite lets uniqc's ``TEXT PRIMARY KEY`` be NULL) are not in
    the walk: no statement by id can move or delete them, and a page ending on one would make the
    next page ``task_id > NULL``, which matches nothing. ``without_id`` reads their
    ``(status, update_time)`` instead, so that they are counted as skipped.

    The status is filtered by the caller, not in SQL: with ``status IN (...)`` SQLite reads the
    status index and sorts every finished task by id for each batch (quadratic in all); by the
    primary key alone, each batch reads its rows and no more.
    """

    first: AnySelect
    next: AnySelect
    without_id: AnySelect


def _sweep_scan() -> SweepScan:
    task_id = TASKS.c.task_id
    in_archive = or_(
        exists().where(ARCHIVED_TASKS.c.task_id == task_id),
        exists().where(ARCHIVED_SHARDS.c.uniqc_task_id == task_id),
    )
    base = select(task_id, TASKS.c.status, TASKS.c.update_time, in_archive)
    limit = bindparam("limit", type_=BigInteger)
    after = bindparam("after", type_=task_id.type)
    # FOR UPDATE (servers; SQLite's write transaction holds the whole file already): a save in
    # another transaction cannot change a row between this read and the move or delete.
    first = base.where(task_id.is_not(None)).order_by(task_id).limit(limit).with_for_update()
    following = base.where(task_id > after).order_by(task_id).limit(limit).with_for_update()
    without_id = select(TASKS.c.status, TASKS.c.update_time).where(task_id.is_(None))
    return SweepScan(first, following, without_id)


SWEEP_SCAN = _sweep_scan()


__all__ = [
    "MAX_SWEEP_BATCH",
    "SWEEP_BATCH",
    "SWEEP_PAUSE_S",
    "SWEEP_SCAN",
    "SweepResult",
    "SweepScan",
    "check_batch_size",
    "is_older",
    "older_than_cutoff",
    "parse_age",
]
