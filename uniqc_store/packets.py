"""MySQL/MariaDB: every statement within the server's ``max_allowed_packet``.

PyMySQL sends a statement as text, its values quoted and escaped in it, and the server drops the
connection ("MySQL server has gone away") when the statement is not smaller than
``max_allowed_packet``. So the store sizes the rows of every save before anything is sent
(:func:`batches`), and refuses a row that alone makes a statement too large, naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Insert

from . import database
from .errors import InvalidTaskError
from .execution import ServerTx, Tx, compiled_sql
from .rows import PAYLOAD_FIELDS

_LIMIT_INFO = "uniqc_store.max_allowed_packet"  # per DBAPI connection: the session's limit
_MAX_PACKET_CEILING = 1 << 30  # the largest max_allowed_packet MySQL and MariaDB accept

Row = dict[str, Any]


def batches(
    db: database.Database, tx: Tx, stmt: Insert, rows: list[Row], label: Callable[[int], str]
) -> list[list[Row]]:
    """Split ``rows`` into batches whose ``executemany`` of ``stmt`` sends no statement the server
    would refuse.

    ``label(i)`` names row ``i`` in an error. The session's ``max_allowed_packet`` is read once per
    connection (a ``SET GLOBAL`` reaches only new connections).

    Raises:
        InvalidTaskError: a row alone makes a statement too large; nothing has been sent.
    """
    assert isinstance(tx, ServerTx)  # only MySQL/MariaDB come here
    limit, sql = _packet_limit(tx, stmt)
    # What the server accepts: the statement's bytes plus the protocol's command byte must stay
    # below max_allowed_packet (measured on MariaDB 10.11: a 16777214-byte query passes at 16 MiB,
    # one byte more is refused).
    largest = limit - 2
    cut: list[list[Row]] = []
    batch: list[Row] = []
    total = 0
    for index, row in enumerate(rows):
        size = len(sql) + _size_bound(row)
        if size > largest:  # near the limit: measure exactly what PyMySQL would send
            size = _sent_size(tx, sql, row)
            if size > largest:
                raise _too_large(db, tx, stmt, row, label(index), size, limit)
        # PyMySQL turns executemany into multi-row INSERTs of consecutive rows, each no longer
        # than the single-row statements of its rows added up; batches are cut on that sum.
        if batch and total + size > largest:
            cut.append(batch)
            batch, total = [], 0
        batch.append(row)
        total += size
    cut.append(batch)
    return cut


def _packet_limit(tx: ServerTx, stmt: Insert) -> tuple[int, str]:
    info = tx.connection.info  # kept with the DBAPI connection, for as long as it lives
    limit = info.get(_LIMIT_INFO)
    if limit is None:
        limit = info[_LIMIT_INFO] = int(tx.scalar("SELECT @@session.max_allowed_packet"))
    return limit, compiled_sql(stmt, tx.dialect)[0]


def _size_bound(row: Row) -> int:
    # utf-8 takes at most 4 bytes a character, and escaping at most doubles an ASCII character;
    # numbers and NULL take fewer than 24. (The statement text's placeholders, counted in full
    # by the caller, are longer than nothing.)
    return sum(4 * len(value) + 2 if isinstance(value, str) else 24 for value in row.values())


def _sent_size(tx: ServerTx, sql: str, params: Any) -> int:
    """Bytes of the statement PyMySQL sends for ``sql`` with ``params``, exactly as it builds it
    (its escaping follows the connection's charset and sql_mode)."""
    raw: Any = tx.connection.dbapi_connection
    cursor = raw.cursor()
    try:
        return len(cursor.mogrify(sql, params).encode(raw.encoding, "surrogateescape"))
    finally:
        cursor.close()


def _too_large(
    db: database.Database, tx: ServerTx, stmt: Insert, row: Row, label: str, size: int, limit: int
) -> InvalidTaskError:
    # The fields without a length limit (JSON payloads, error texts) are what can make a row this
    # large: name the largest.
    fields = {
        field: 0 if row[column] is None else _sent_size(tx, "%s", (row[column],))
        for column, field in PAYLOAD_FIELDS[stmt.table.name].items()
    }
    field = max(fields, key=fields.__getitem__)
    needed = size + 2
    if needed > _MAX_PACKET_CEILING:
        remedy = (
            f"No server takes a statement this large (max_allowed_packet is at most {_MAX_PACKET_CEILING:,}): "
            f"make the {field} smaller."
        )
    else:
        suggested = -(-needed // (1 << 20)) << 20  # whole MiB
        remedy = (
            f"To store it, raise the limit as the server's administrator, e.g. SET GLOBAL "
            f"max_allowed_packet={suggested}; (new connections get it: restart this program; set "
            f"max_allowed_packet in the server's configuration to keep it), or make the {field} smaller."
        )
    sizes = ", ".join(f"{name} {n:,} bytes" for name, n in fields.items())
    return InvalidTaskError(
        f"{label}: {field} is too large for {db.display_url}: saving it takes a statement of {size:,} bytes "
        f"({sizes} as sent: utf-8, quoted and escaped), and the server's max_allowed_packet of {limit:,} "
        f"bytes allows statements of at most {limit - 2:,} bytes. Nothing was written. {remedy}"
    )
