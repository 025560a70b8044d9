"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Revision ids are zero-padded integers: the SQLite header's user_version becomes int(revision).
Set HEAD_REVISION in uniqc_store/schema.py to the new head (a test checks it), and write a real
downgrade(): one that silently does nothing is a bug. Data migrations declare frozen copies of the
tables they touch instead of importing the live model, and work in batches.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
