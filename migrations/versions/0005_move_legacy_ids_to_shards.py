"""Give every task a uniqc id: schema version 5 (data only; the layout is v4's).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

Before v4, ``tasks.task_id`` held the id the cloud platform issued. Every row of ``tasks`` whose
id does not start with ``uqt_`` is replaced by a parent with a new id, ``uqt_`` and 32 lowercase
hex digits of a random UUID4, with the same other fields; its metadata gains
``legacy_platform_id`` (the old id), metadata that is not a JSON object is kept as
``{"legacy_metadata_raw": <it>}``, unreadable metadata becomes ``{}`` first. The old id becomes
the parent's only shard (index 0, one circuit, offset 0, the row's backend, status, result, error
message and times). The same for ``archived_tasks`` into ``archived_task_shards``, with
``archived_at``. This is what uniqc's own v5 step does, so both give the same records.

Rows go in batches of ``BATCH_SIZE`` in rowid (``seq`` on servers) order, so memory stays bounded
whatever the file's size and the replacements keep their relative order; measured on a shared 2-core VM,
a million legacy rows take about 35 s and 61 MB of peak RSS growth (uniqc 0.1.1's own step: 41 s,
719 MB; benchmarks/bench_upgrade.py). The revision is one transaction (no DDL, so on MySQL and
MariaDB too): interrupted, it rolls back whole and the next open runs it again from the start.

Downgrade: v4 and v5 have the same layout, so going back to 0004 changes no data (the new ids and
their shards stay, which a v4 reader handles); it only moves the version back.
"""

import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = 5000
PREFIX = "uqt_"

# Frozen copies of the tables as revision 0004 left them.
_TASK_COLUMNS = (
    "task_id", "backend", "status", "shots", "submit_time", "update_time", "result_json", "metadata_json",
    "error_message",
)
_SHARD_COLUMNS = (
    "uniqc_task_id", "shard_index", "platform_task_id", "backend", "circuit_count", "sub_index_offset", "status",
    "result_json", "error_message", "submit_time", "update_time",
)


def _table(name: str, columns: Sequence[str]) -> sa.TableClause:
    return sa.table(name, *(sa.column(column) for column in columns))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # A larger page cache for this connection (NullPool: it closes after the migration) keeps
        # the four indexes the batches touch in memory; 32 MiB, within the memory budget.
        bind.exec_driver_sql("PRAGMA cache_size = -32768")
    _replace_legacy_rows(bind, "tasks", "task_shards", archived=False)
    _replace_legacy_rows(bind, "archived_tasks", "archived_task_shards", archived=True)


def downgrade() -> None:
    # Deliberately no data change: see the module docstring. The header hook moves the version.
    pass


def _replace_legacy_rows(bind: Any, table_name: str, shard_table_name: str, *, archived: bool) -> None:
    extra = ("archived_at",) if archived else ()
    task_columns = (*_TASK_COLUMNS, *extra)
    shard_columns = (*_SHARD_COLUMNS, *extra)
    tasks = _table(table_name, task_columns)
    position = sa.literal_column("rowid" if bind.dialect.name == "sqlite" else f"{table_name}.seq")
    legacy = sa.func.substr(tasks.c.task_id, 1, len(PREFIX)) != PREFIX  # NULL ids stay as they are
    batch = (
        sa.select(position.label("position"), *tasks.c)
        .where(legacy, position > sa.bindparam("after"))
        .order_by(position)
        .limit(BATCH_SIZE)
    )
    drop_batch = sa.delete(tasks).where(legacy, position > sa.bindparam("after"), position <= sa.bindparam("last"))
    # Plain executemany with positional rows: SQLAlchemy's per-row parameter processing would
    # cost more than the database's own work here.
    insert_parent = _insert_sql(bind, table_name, task_columns)
    insert_shard = _insert_sql(bind, shard_table_name, shard_columns)
    after = -(2**63)
    while True:
        rows = bind.execute(batch, {"after": after}).mappings().all()
        if not rows:
            return
        parents, children = [], []
        for row in rows:
            new_id = f"{PREFIX}{uuid.uuid4().hex}"
            metadata_json = _metadata_with_legacy_id(row["metadata_json"], row["task_id"])
            parents.append(tuple(
                new_id if column == "task_id" else metadata_json if column == "metadata_json" else row[column]
                for column in task_columns
            ))
            shard = {**row, "uniqc_task_id": new_id, "shard_index": 0, "platform_task_id": row["task_id"],
                     "circuit_count": 1, "sub_index_offset": 0}
            children.append(tuple(shard[column] for column in shard_columns))
        bind.exec_driver_sql(insert_parent, parents)
        bind.exec_driver_sql(insert_shard, children)
        last = rows[-1]["position"]
        bind.execute(drop_batch, {"after": after, "last": last})
        after = last


def _insert_sql(bind: Any, table: str, columns: Sequence[str]) -> str:
    placeholder = "?" if bind.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(placeholder for _ in columns)})"


_encode = json.JSONEncoder(ensure_ascii=False).encode  # as json.dumps(..., ensure_ascii=False)


def _metadata_with_legacy_id(text: str | None, old_id: str) -> str:
    try:
        metadata = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {"legacy_metadata_raw": metadata}
    metadata["legacy_platform_id"] = old_id
    return _encode(metadata)
