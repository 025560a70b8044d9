"""Create the archive: schema version 2, uniqc's ``archived_tasks`` table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The v1 task columns, then ``archived_at``; three indexes under uniqc's names. On servers, as
for ``tasks``: indexable types on MySQL and the ``seq`` insertion sequence (tie order).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from uniqc_store.ddl import BIG_INTEGER, KEY, LONG_TEXT, STATUS, TIME, add_insertion_sequence, table_options

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "archived_tasks",
        sa.Column("task_id", KEY, primary_key=True, nullable=True),
        sa.Column("backend", KEY, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("shots", BIG_INTEGER, nullable=False, server_default=sa.text("0")),
        sa.Column("submit_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("result_json", LONG_TEXT, nullable=True),
        sa.Column("metadata_json", LONG_TEXT, nullable=False, server_default="{}"),
        sa.Column("archived_at", TIME, nullable=False),
        **table_options(op.get_bind()),
    )
    add_insertion_sequence(op, "archived_tasks")
    op.create_index("archived_backend_idx", "archived_tasks", ["backend"])
    op.create_index("archived_status_idx", "archived_tasks", ["status"])
    op.create_index("archived_submit_time_idx", "archived_tasks", ["submit_time"])


def downgrade() -> None:
    op.drop_table("archived_tasks")  # its indexes go with it
