"""Create the shards: schema version 4, ``task_shards`` and ``archived_task_shards``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

A shard is one platform-side job of a uniqc task. ``task_shards`` references ``tasks`` with
``ON DELETE CASCADE`` (enforced on every backend: uniqc turns SQLite's foreign keys on for every
connection, as this library does), so deleting a task deletes its shards.
``archived_task_shards`` has the same columns, then ``archived_at``, and no foreign key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from uniqc_store.ddl import KEY, LONG_TEXT, STATUS, TIME, table_options

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _shard_columns() -> list[sa.Column]:
    return [
        sa.Column("uniqc_task_id", KEY, nullable=False),
        sa.Column("shard_index", sa.Integer, nullable=False),
        sa.Column("platform_task_id", KEY, nullable=False),
        sa.Column("backend", KEY, nullable=False),
        sa.Column("circuit_count", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("sub_index_offset", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("result_json", LONG_TEXT, nullable=True),
        sa.Column("error_message", LONG_TEXT, nullable=True),
        sa.Column("submit_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
    ]


def upgrade() -> None:
    options = table_options(op.get_bind())
    op.create_table(
        "task_shards",
        *_shard_columns(),
        sa.PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
        sa.ForeignKeyConstraint(
            ["uniqc_task_id"], ["tasks.task_id"], name="task_shards_uniqc_task_id_fkey", ondelete="CASCADE"
        ),
        **options,
    )
    op.create_index("task_shards_platform_idx", "task_shards", ["platform_task_id"])
    op.create_index("task_shards_status_idx", "task_shards", ["status"])
    op.create_table(
        "archived_task_shards",
        *_shard_columns(),
        sa.Column("archived_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("uniqc_task_id", "shard_index"),
        **options,
    )
    op.create_index("archived_task_shards_platform_idx", "archived_task_shards", ["platform_task_id"])


def downgrade() -> None:
    op.drop_table("archived_task_shards")
    op.drop_table("task_shards")
