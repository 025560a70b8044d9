"""Files as uniqc's own store writes them, built with plain sqlite3 (no uniqc_store code)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

APPLICATION_ID = 0x554E4943

V1_DDL = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    status TEXT NOT NULL,
    shots INTEGER NOT NULL DEFAULT 0,
    submit_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    result_json TEXT,
    metadata_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tasks_backend_idx ON tasks(backend);
CREATE INDEX IF NOT EXISTS tasks_status_idx ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_submit_time_idx ON tasks(submit_time);
"""


def write_uniqc_v1_file(path: Path, rows: int = 3, *, wal: bool = True) -> list[tuple]:
    """Write a tasks.sqlite the way uniqc 1.x does; return the rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_DDL)
    data = [
        (
            f"uniqc-{i}",
            "originq:wuyuan",
            ["success", "running", "failed"][i % 3],
            1024 + i,
            f"2025-01-0{1 + i % 9}T10:00:00+00:00",
            f"2025-01-0{1 + i % 9}T11:00:00+00:00",
            json.dumps({"00": i, "11": 7}) if i % 2 == 0 else None,
            json.dumps({"circuit": "bell", "n": i, "label": "ñ"}, ensure_ascii=False),
        )
        for i in range(rows)
    ]
    conn.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", data)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    return data


def rows_of(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM tasks ORDER BY task_id").fetchall()
    finally:
        conn.close()


def header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) read with plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA application_id").fetchone()[0], conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def snapshot(directory: Path) -> dict[str, str]:
    """Names and SHA-256 of every file in ``directory``: equal snapshots mean nothing was touched."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def write_foreign_file(path: Path, application_id: int) -> None:
    """An SQLite file of another program: its own application_id, a table, a row."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {application_id}")
    conn.execute("CREATE TABLE notes(body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('not yours')")
    conn.commit()
    conn.close()


def wal_file_with_a_hot_wal(
    path: Path,
    *,
    application_id: int,
    user_version: int,
    header_in_wal: bool,
    ddl: str = "CREATE TABLE notes(body TEXT)",
) -> None:
    """A WAL-mode file whose writer died (os._exit) with its last transaction only in the -wal,
    so the next connection to close would checkpoint it; with ``header_in_wal`` the refusing
    values themselves are in that transaction."""
    header = (
        f"conn.execute('PRAGMA application_id = {application_id}'); "
        f"conn.execute('PRAGMA user_version = {user_version}')"
    )
    code = "\n".join([
        "import os, sqlite3",
        f"conn = sqlite3.connect({str(path)!r}, isolation_level=None)",
        "conn.execute('PRAGMA journal_mode=WAL')",
        f"conn.execute({ddl!r})",
        "" if header_in_wal else header,
        "conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')",
        "conn.execute('PRAGMA wal_autocheckpoint = 0')",
        "conn.execute('BEGIN')",
        "conn.execute('CREATE TABLE wal_only(body TEXT)')",
        header if header_in_wal else "",
        "conn.execute('COMMIT')",
        "os._exit(0)",
    ])
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def assert_file_and_wal_unchanged(directory: Path, before: dict[str, str]) -> None:
    # The database and its WAL keep every byte. The -shm is SQLite's shared-memory index, which
    # any reader of a WAL database (even a read-only one) rebuilds; it holds no data.
    after = snapshot(directory)
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if not k.endswith("-shm")} == {
        k: v for k, v in before.items() if not k.endswith("-shm")
    }
