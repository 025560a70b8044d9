"""Index tasks on (status, submit_time) for ``list(status=...)``.

Revision ID: s001
Revises: 0005
Create Date: 2026-11-29

This is the first revision of uniqc_store's own branch, ``uniqc_store``, which forks from 0005. Its
revisions hold what this library adds that uniqc never sees, and never move ``PRAGMA user_version``
(uniqc's schema version, which is what the SQLite header hook writes): uniqc keeps opening, reading
and writing the file as its own, and a later uniqc step N+1 finds exactly its layout N plus indexes
it does not know, which SQLite maintains for it.

uniqc indexes ``status``, ``backend`` and ``submit_time`` one column each, so a page of a filtered
list read every row of the filter and sorted them. Each revision of the branch adds one index that
ends in the sort key (and on servers in the tie column ``seq``), so that the page is read in order
in O(log n + limit). One index per revision, so that each is one transaction of its own and no
writer waits longer than one index takes to build (on a file of a million tasks, about a second;
uniqc's own connections give up after 5 s).

Creates ``uniqc_store_tasks_status_time_idx`` on ``tasks``:
(status, submit_time), then ``seq`` on servers.
A missing index comes back the same way it came: when the store opens a database whose version
table records this branch but that lacks one of its indexes, it moves the record back to 0005 and
the branch runs again, creating only what is missing.
"""

from collections.abc import Sequence

from alembic import op

from uniqc_store.ddl import create_list_index, drop_list_index

revision: str = "s001"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = ("uniqc_store",)
depends_on: str | Sequence[str] | None = None

TABLE = "tasks"
NAME = "uniqc_store_tasks_status_time_idx"
COLUMNS = ('status', 'submit_time')


def upgrade() -> None:
    create_list_index(op, TABLE, NAME, COLUMNS)


def downgrade() -> None:
    drop_list_index(op, TABLE, NAME)
