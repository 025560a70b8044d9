"""Index archived_tasks on (submit_time, seq) for ``list_archived()`` on servers.

Revision ID: s008
Revises: s007
Create Date: 2026-11-29

Creates ``uniqc_store_archived_tasks_time_seq_idx`` on ``archived_tasks``:
(submit_time), then ``seq`` on servers.
Servers only: SQLite's ``*_submit_time_idx`` of uniqc already ends in the rowid, its tie order,
so on SQLite this revision does nothing.
A missing index comes back the same way it came: when the store opens a database whose version
table records this branch but that lacks one of its indexes, it moves the record back to 0005 and
the branch runs again, creating only what is missing.
"""

from collections.abc import Sequence

from alembic import op

from uniqc_store.ddl import create_list_index, drop_list_index

revision: str = "s008"
down_revision: str | None = "s007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "archived_tasks"
NAME = "uniqc_store_archived_tasks_time_seq_idx"
COLUMNS = ('submit_time',)


def upgrade() -> None:
    create_list_index(op, TABLE, NAME, COLUMNS, servers_only=True)


def downgrade() -> None:
    drop_list_index(op, TABLE, NAME, servers_only=True)
