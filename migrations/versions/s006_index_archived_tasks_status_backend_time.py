"""Index archived_tasks on (status, backend, submit_time) for ``list_archived(status=..., backend=...)``.

Revision ID: s006
Revises: s005
Create Date: 2026-11-29

Creates ``uniqc_store_archived_tasks_status_backend_time_idx`` on ``archived_tasks``:
(status, backend, submit_time), then ``seq`` on servers.
A missing index comes back the same way it came: when the store opens a database whose version
table records this branch but that lacks one of its indexes, it moves the record back to 0005 and
the branch runs again, creating only what is missing.
"""

from collections.abc import Sequence

from alembic import op

from uniqc_store.ddl import create_list_index, drop_list_index

revision: str = "s006"
down_revision: str | None = "s005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "archived_tasks"
NAME = "uniqc_store_archived_tasks_status_backend_time_idx"
COLUMNS = ('status', 'backend', 'submit_time')


def upgrade() -> None:
    create_list_index(op, TABLE, NAME, COLUMNS)


def downgrade() -> None:
    drop_list_index(op, TABLE, NAME)
