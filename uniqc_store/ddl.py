"""Building blocks of the revision scripts, frozen: a revision must create tomorrow exactly what
it created when it was written, so nothing here may change once a revision uses it (add a new
name instead). The live model (``models.py``) declares the same types for comparison.

SQLite keeps uniqc's exact types. MySQL/MariaDB cannot index ``TEXT``, so keys and times are
``VARCHAR`` there, and JSON payloads and error texts ``LONGTEXT`` (``TEXT`` stops at 64 KiB);
64-bit integers where SQLite's ``INTEGER`` is 64-bit.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

KEY = sa.Text().with_variant(sa.String(255), "mysql", "mariadb")
STATUS = sa.Text().with_variant(sa.String(32), "mysql", "mariadb")
TIME = sa.Text().with_variant(sa.String(64), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BIG_INTEGER = sa.Integer().with_variant(sa.BigInteger(), "postgresql", "mysql", "mariadb")

MYSQL = ("mysql", "mariadb")


def table_options(bind: Any) -> dict[str, str]:
    """Table options per dialect: on MySQL/MariaDB utf8mb4 with a binary, no-pad collation, so
    that keys compare exactly as on SQLite ('a' != 'A', 'a' != 'a ')."""
    if bind.dialect.name not in MYSQL:
        return {}
    collation = "utf8mb4_nopad_bin" if bind.dialect.is_mariadb else "utf8mb4_0900_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def add_insertion_sequence(op: Any, table: str) -> None:
    """Give a server table the ``seq`` column the database numbers on insert: it breaks ties of
    ``submit_time`` in insertion order, as SQLite's ``rowid`` does. Not part of the model."""
    name = op.get_bind().dialect.name
    if name == "postgresql":
        op.add_column(table, sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False))
    elif name in MYSQL:
        # AUTO_INCREMENT must be a key; SQLAlchemy renders it only for primary keys.
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN seq BIGINT NOT NULL AUTO_INCREMENT, ADD UNIQUE KEY {table}_seq_key (seq)"
        )


def create_list_index(op: Any, table: str, name: str, columns: tuple[str, ...], *, servers_only: bool = False) -> None:
    """Create one of the library's own list indexes on ``table``: ``columns``, then on servers the
    tie column ``seq``. Nothing is done when an index of that name is there already (a revision
    run again to bring back a missing index creates only the missing ones; SQLite and MySQL
    compare index names without case), nor on SQLite for a ``servers_only`` index."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and servers_only:
        return
    present = {index["name"].lower() for index in sa.inspect(bind).get_indexes(table) if index["name"]}
    if name.lower() in present:
        return
    op.create_index(name, table, [*columns, "seq"] if bind.dialect.name != "sqlite" else list(columns))


def drop_list_index(op: Any, table: str, name: str, *, servers_only: bool = False) -> None:
    """Drop one of the library's own list indexes, if it is there."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and servers_only:
        return
    if name in {index["name"] for index in sa.inspect(bind).get_indexes(table)}:
        op.drop_index(name, table_name=table)
