"""Reading a database behind the store's back, to check what it really holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, inspect, text


def raw_rows(url: str, sql: str, **params: Any) -> list[tuple]:
    """Run ``sql`` on ``url`` with a throwaway engine of its own and return the rows."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def raw_execute(url: str, *statements: str, **params: Any) -> None:
    """Run ``statements`` on ``url`` in one committed transaction of a throwaway engine."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql), params)
    finally:
        engine.dispose()


def tables_at(url: str) -> set[str]:
    """The tables of the database at ``url``, reflected by a throwaway engine."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
