"""Create the tasks table: schema version 1, uniqc's v1 file layout.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

On SQLite this is byte-for-byte the layout uniqc itself writes at user_version 1. On servers the
same columns get indexable types (VARCHAR keys on MySQL), and one extra column, ``seq``, that the
database numbers on insert: it breaks ties of ``submit_time`` in insertion order, as SQLite's
``rowid`` does. ``seq`` is not part of the ``Task`` model; autogenerate is told to ignore it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the v1 types (revisions never import the live model).
KEY = sa.Text().with_variant(sa.String(255), "mysql", "mariadb")
STATUS = sa.Text().with_variant(sa.String(32), "mysql", "mariadb")
TIME = sa.Text().with_variant(sa.String(64), "mysql", "mariadb")
JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
SHOTS = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")


def _mysql_options(bind: sa.engine.Connection) -> dict[str, str]:
    # Binary, no-pad collation: task ids compare exactly as on SQLite ('a' != 'A', 'a' != 'a ').
    collation = "utf8mb4_nopad_bin" if bind.dialect.is_mariadb else "utf8mb4_0900_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    bind = op.get_bind()
    name = bind.dialect.name
    columns = [
        sa.Column("task_id", KEY, primary_key=True, nullable=True),
        sa.Column("backend", KEY, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("shots", SHOTS, nullable=False, server_default=sa.text("0")),
        sa.Column("submit_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("result_json", JSON_TEXT, nullable=True),
        sa.Column("metadata_json", JSON_TEXT, nullable=False, server_default="{}"),
    ]
    options = _mysql_options(bind) if name in ("mysql", "mariadb") else {}
    if name == "postgresql":
        columns.append(sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False))
    op.create_table("tasks", *columns, **options)
    if name in ("mysql", "mariadb"):
        # AUTO_INCREMENT must be a key; SQLAlchemy renders it only for primary keys.
        op.execute(
            "ALTER TABLE tasks ADD COLUMN seq BIGINT NOT NULL AUTO_INCREMENT, ADD UNIQUE KEY tasks_seq_key (seq)"
        )
    op.create_index("tasks_backend_idx", "tasks", ["backend"])
    op.create_index("tasks_status_idx", "tasks", ["status"])
    op.create_index("tasks_submit_time_idx", "tasks", ["submit_time"])


def downgrade() -> None:
    op.drop_index("tasks_submit_time_idx", table_name="tasks")
    op.drop_index("tasks_status_idx", table_name="tasks")
    op.drop_index("tasks_backend_idx", table_name="tasks")
    op.drop_table("tasks")
