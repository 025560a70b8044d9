"""Add ``error_message``: schema version 3.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

``ALTER TABLE ... ADD COLUMN error_message TEXT`` on ``tasks`` and ``archived_tasks``, as uniqc
does it, so the column is the last of each (after ``archived_at`` in the archive).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from uniqc_store.ddl import LONG_TEXT

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("tasks", "archived_tasks")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("error_message", LONG_TEXT, nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place; the error messages are lost, as the v2 layout has
    # no place for them.
    for table in TABLES:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("error_message")
