"""``compact_store``: SQLite's ``VACUUM``, refused while any other connection writes or holds a
transaction open."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from . import database, schema
from .errors import DatabaseError, UnsupportedDatabaseError
from .execution import is_busy

#: How long :func:`compact_store` waits for other connections to finish what they are doing
#: before it refuses (a save takes milliseconds; a program holding a transaction open, longer).
COMPACT_WAIT_S = 2.0
_COMPACT_POLL_S = 0.05


@dataclass(frozen=True)
class CompactReport:
    """What :func:`compact_store` did.

    Attributes:
        path: The SQLite file.
        size_before: Bytes of the file and its ``-wal`` before.
        size_after: Bytes of the file and its ``-wal`` after.
    """

    path: str
    size_before: int
    size_after: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size_before": self.size_before, "size_after": self.size_after}


def compact_store(cache_dir: Path | str | None = None, *, url: str | URL | None = None) -> CompactReport:
    """Compact an SQLite store: move its WAL into the file (``PRAGMA wal_checkpoint(TRUNCATE)``)
    and rebuild the file without its free pages (``VACUUM``), then truncate the WAL again.

    Refused, with nothing changed, while another connection (of any process, this one included)
    holds the write lock or has a transaction open, for longer than :data:`COMPACT_WAIT_S`: a
    ``VACUUM`` beside an open read transaction would leave the whole rebuilt file in the WAL,
    which that reader keeps from being moved into the file. (To find out a reader whose snapshot
    was taken when the WAL was empty, which reads the file alone and which a checkpoint does not
    wait for, one page is committed to the WAL first: ``user_version`` set to its own value.
    Refused, that page stays in the WAL until the next checkpoint; no record changes.)
    ``VACUUM`` is one transaction under the write lock: every save committed before or after it
    is kept, and an interruption (Ctrl-C, a crash) leaves the file as it was. The file keeps its
    inode, its mode (0600), its ``application_id`` and ``user_version``.

    Raises:
        UnsupportedDatabaseError: the URL names a server (they reclaim space themselves).
        DatabaseRefusedError: the file is not ours, not SQLite, or newer than this library.
        DatabaseError: the file is missing, or other connections kept using it (nothing changed).
    """
    resolved = database.resolve_url(cache_dir, url)
    backend = resolved.get_backend_name()
    if backend != "sqlite":
        server, itself = _SERVERS_RECLAIM.get(backend, (backend, "by itself"))
        raise UnsupportedDatabaseError(
            f"compact works on SQLite files only; this database is on a {server} server, which reclaims "
            f"free space {itself}; nothing was done"
        )
    with database.opened(resolved) as db:
        schema.peek_state(db)  # a file that is not ours is refused before any connection writes it
        assert db.path is not None
        path = db.path
        before = _size(path)
        try:
            conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            try:
                _wait_until_quiet(conn, path)
                _retry_busy(conn, "VACUUM", path)
                # Move the rebuilt pages from the WAL into the file, which shrinks it. A reader
                # that began in the instant between may hold them in the WAL until it ends: wait
                # for it as long as for the others, then leave them to the next checkpoint (the
                # store makes one when a WAL grows, SQLite when the last connection closes).
                _wait_for_checkpoint(conn, path)
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise db.translate(error) from error
        return CompactReport(str(path), before, _size(path))


_SERVERS_RECLAIM = {
    "postgresql": ("PostgreSQL", "by itself (autovacuum; VACUUM FULL is its administrator's tool)"),
    "mysql": ("MySQL", "by itself (InnoDB's purge; OPTIMIZE TABLE is its administrator's tool)"),
    "mariadb": ("MariaDB", "by itself (InnoDB's purge; OPTIMIZE TABLE is its administrator's tool)"),
}


def _size(path: Path) -> int:
    return _file_size(str(path)) + _file_size(f"{path}-wal")


def _file_size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except FileNotFoundError:
        return 0


def _busy_refusal(path: Path) -> DatabaseError:
    return DatabaseError(
        f"cannot compact {path}: another connection holds its write lock or has a transaction open "
        f"(a save under way, or a program that keeps a transaction open), still after {COMPACT_WAIT_S:.0f} s; "
        "nothing was changed. Try again when the programs using it are idle."
    )


def _checkpoint(conn: sqlite3.Connection, path: Path) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)``; True if the whole WAL went into the file and the WAL
    was reset: not busy, as many pages checkpointed as the log held, and the ``-wal`` empty (a
    file not in WAL mode reports ``(0, -1, -1)`` and has no ``-wal``)."""
    busy, log, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy and log == checkpointed and _file_size(f"{path}-wal") == 0


def _wait_until_quiet(conn: sqlite3.Connection, path: Path) -> None:
    """Wait, interruptibly, until no other connection holds the write lock (``BEGIN IMMEDIATE``
    gets it) nor a read transaction (a truncating checkpoint completes, also after a page is
    committed to the WAL); refuse after :data:`COMPACT_WAIT_S`."""
    wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def quiet() -> bool:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        # A reader whose snapshot was taken when the WAL held nothing new reads the file
        # alone, and a truncating checkpoint completes beside it. With one page committed
        # to the WAL, the checkpoint cannot complete while such a reader exists: it must not
        # overwrite a page of the file that reader still reads. (Not in WAL mode, a reader
        # holds a lock that VACUUM itself waits for.)
        if not _checkpoint(conn, path):
            return False
        if not wal:
            return True
        _commit_one_page(conn)
        return _checkpoint(conn, path)

    _retrying(quiet, path, refuse=True)


def _commit_one_page(conn: sqlite3.Connection) -> None:
    """Commit the file's first page to the WAL, unchanged but for SQLite's change counter:
    ``user_version`` set to its own value, under the write lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _wait_for_checkpoint(conn: sqlite3.Connection, path: Path) -> None:
    """Checkpoint the WAL into the file, retrying for up to :data:`COMPACT_WAIT_S` while a
    reader holds it; then leave it to the next checkpoint."""
    _retrying(lambda: _checkpoint(conn, path), path, refuse=False)


def _retry_busy(conn: sqlite3.Connection, sql: str, path: Path) -> None:
    """Run ``sql`` (outside any transaction, so SQLite allows retrying it), retrying while another
    connection's lock is in the way, for up to :data:`COMPACT_WAIT_S`."""

    def run() -> bool:
        conn.execute(sql)
        return True

    _retrying(run, path, refuse=True)


def _retrying(attempt: Callable[[], bool], path: Path, *, refuse: bool) -> None:
    """Call ``attempt`` until it returns True, again whenever another connection's lock is in the
    way (SQLITE_BUSY), in slices of :data:`_COMPACT_POLL_S` (so Ctrl-C works) for up to
    :data:`COMPACT_WAIT_S`; then refuse (``refuse``) or give up quietly."""
    deadline = time.monotonic() + COMPACT_WAIT_S
    while True:
        try:
            if attempt():
                return
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        if time.monotonic() >= deadline:
            if refuse:
                raise _busy_refusal(path)
            return
        time.sleep(_COMPACT_POLL_S)


__all__ = ["COMPACT_WAIT_S", "CompactReport", "compact_store"]
