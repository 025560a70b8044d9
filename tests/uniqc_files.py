"""Files as uniqc's own store writes them, built with plain sqlite3 (no uniqc_store code), and
what such a file holds, read back with plain sqlite3: its rows, its header, and its layout as
SQLite reports it (in the terms of :mod:`uniqc_store.versions`, so tests compare it with
``versions.LAYOUTS[N]``)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from uniqc_store.versions import UNIQC_TABLES, Column, ForeignKey, Index, Layout, Table

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


def v1_rows_through_legacy_ids(path: Path) -> list[tuple]:
    """The rows of a v1 file (as :func:`write_uniqc_v1_file` returns them) rebuilt from the same
    file after schema version 5 gave each legacy task a ``uqt_`` id: the old id from
    ``metadata.legacy_platform_id``, the metadata without it. Also checks that each such task has
    exactly the one shard v5 makes (index 0, the old id, the row's backend/status/result/times).
    Tasks without ``legacy_platform_id`` are left out."""
    conn = sqlite3.connect(path)
    try:
        tasks = conn.execute(
            "SELECT task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json FROM tasks"
        ).fetchall()
        shards = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT uniqc_task_id, shard_index, platform_task_id, backend, circuit_count, sub_index_offset, "
                "status, result_json, error_message, submit_time, update_time FROM task_shards"
            )
        }
        shard_counts = dict(conn.execute("SELECT uniqc_task_id, COUNT(*) FROM task_shards GROUP BY uniqc_task_id"))
    finally:
        conn.close()
    rebuilt = []
    for task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json in tasks:
        metadata = json.loads(metadata_json)
        if "legacy_platform_id" not in metadata:
            continue
        legacy_id = metadata.pop("legacy_platform_id")
        assert task_id.startswith("uqt_") and len(task_id) == 36, task_id
        assert shard_counts.get(task_id) == 1, f"{task_id} ({legacy_id}) has {shard_counts.get(task_id)} shards"
        assert shards[task_id] == (
            0, legacy_id, backend, 1, 0, status, result_json, None, submit_time, update_time
        ), f"the shard of {task_id} ({legacy_id})"
        rebuilt.append((
            legacy_id, backend, status, shots, submit_time, update_time, result_json,
            json.dumps(metadata, ensure_ascii=False),
        ))
    return sorted(rebuilt)


def sqlite_layout(path: Path) -> Layout:
    """Every uniqc table of the file at ``path`` as SQLite reports it (``PRAGMA table_info``,
    ``index_list`` with ``index_info``, ``foreign_key_list``), read with plain sqlite3."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        layout = {}
        for table in (name for name in UNIQC_TABLES if name in names):
            columns = tuple(
                Column(name, type_, bool(notnull), default, pk)
                for _, name, type_, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
            )
            indexes = frozenset(
                Index(
                    name,
                    tuple(info[2] for info in conn.execute(f"PRAGMA index_info({name})")),
                    bool(unique),
                    origin,
                    bool(partial),
                )
                for _, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})")
            )
            foreign_keys = tuple(
                ForeignKey(column, parent, to, on_update, on_delete)
                for _, _, parent, column, to, on_update, on_delete, _ in conn.execute(
                    f"PRAGMA foreign_key_list({table})"
                )
            )
            layout[table] = Table(columns, indexes, foreign_keys)
        return layout
    finally:
        conn.close()


def table_names(path: Path) -> set[str]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
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


def open_with_the_store(directory: Path) -> None:
    """Open the store in ``directory`` (the path of every refusal test's TaskStore case)."""
    from uniqc_store import TaskStore

    TaskStore(directory)


def upgrade_with_the_library(directory: Path) -> None:
    """``schema.upgrade`` on ``directory``, the library's explicit migration path."""
    from uniqc_store import schema

    schema.upgrade(cache_dir=directory)
