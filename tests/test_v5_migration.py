"""Revision 0005, the v5 data migration, on every backend: rows seeded at revision 0004 come out
exactly as uniqc's own v5 step leaves them (pytest-alembic's per-revision data seeding), in
batches, and a 0005 that fails leaves the database exactly as it was.

Every legacy task (``task_id`` not starting with ``uqt_``) becomes a parent with a new id,
``uqt_`` and 32 lowercase hex digits of a UUID4, whose metadata gains ``legacy_platform_id``, plus
one shard (index 0) under the old id; archived tasks likewise into ``archived_task_shards``.
(test_uniqc_interop.py checks the same against uniqc 0.1.1's own upgrade of the same file.)
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from uniqc_store import HEAD_REVISION, MigrationError, TaskStore, schema

from dbutil import raw_rows

BEFORE = "0004"
UQT = re.compile(r"^uqt_[0-9a-f]{32}$")
TASK_COLUMNS = (
    "task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json, error_message"
)
SHARD_COLUMNS = (
    "uniqc_task_id, shard_index, platform_task_id, backend, circuit_count, sub_index_offset, status, "
    "result_json, error_message, submit_time, update_time"
)
DEEP = "[" * 20_000 + "]" * 20_000  # valid JSON, but too deep for Python's json: unreadable, as uniqc sees it

# Already migrated (uniqc 0.1.1 wrote it at v4): left alone, with its own shards.
NATIVE = "uqt_" + "0" * 31 + "1"
NATIVE_ARCHIVED = "uqt_" + "0" * 31 + "2"


def _task(task_id: str, metadata_json: str, *, minute: int, status: str = "success", result: str | None = None,
          error: str | None = None, shots: int = 1000, backend: str = "originq:WK_C180") -> dict[str, Any]:
    stamp = f"2026-05-02T08:{minute:02d}:00+00:00"
    return {
        "task_id": task_id, "backend": backend, "status": status, "shots": shots, "submit_time": stamp,
        "update_time": stamp.replace("08:", "09:"), "result_json": result, "metadata_json": metadata_json,
        "error_message": error,
    }


# (the row as seeded at 0004, the metadata_json 0005 must leave), in insertion order.
LEGACY_TASKS: list[tuple[dict[str, Any], str]] = [
    (_task("5F0C9A7E2B8D4C1F9E3A6B2D7C4F8E1A", '{"circuit": "bell", "标签": "é"}', minute=1, result='{"00": 1}'),
     '{"circuit": "bell", "标签": "é", "legacy_platform_id": "5F0C9A7E2B8D4C1F9E3A6B2D7C4F8E1A"}'),
    (_task("unparseable", "{not json", minute=2, status="failed", error="超时: timed out"),
     '{"legacy_platform_id": "unparseable"}'),
    (_task("a-list", '[1, 2, "x"]', minute=3),
     '{"legacy_metadata_raw": [1, 2, "x"], "legacy_platform_id": "a-list"}'),
    (_task("a-null", "null", minute=4), '{"legacy_metadata_raw": null, "legacy_platform_id": "a-null"}'),
    (_task("a-string", '"just text"', minute=5),
     '{"legacy_metadata_raw": "just text", "legacy_platform_id": "a-string"}'),
    (_task("a-number", "42", minute=6), '{"legacy_metadata_raw": 42, "legacy_platform_id": "a-number"}'),
    (_task("empty-text", "", minute=7), '{"legacy_platform_id": "empty-text"}'),
    (_task("too-deep", DEEP, minute=8), '{"legacy_platform_id": "too-deep"}'),
    (_task("with-nan", '{"fidelity": NaN}', minute=9, result='{"e": Infinity}'),
     '{"fidelity": NaN, "legacy_platform_id": "with-nan"}'),
    (_task("stale-key", '{"legacy_platform_id": "older", "n": 1}', minute=10),
     '{"legacy_platform_id": "stale-key", "n": 1}'),
    (_task("UQT_upper-case-is-legacy", "{}", minute=11, status="running"),
     '{"legacy_platform_id": "UQT_upper-case-is-legacy"}'),
    (_task("uqt-no-underscore", "{}", minute=12, status="pending", shots=2**40),
     '{"legacy_platform_id": "uqt-no-underscore"}'),
    (_task("任务-😀", '{"说明": "中文"}', minute=13, status="cancelled", backend="quark:Baihua"),
     '{"说明": "中文", "legacy_platform_id": "任务-😀"}'),
    # Two at the same submit_time: their replacements keep their relative (insertion) order.
    (_task("tie-first", "{}", minute=14), '{"legacy_platform_id": "tie-first"}'),
    (_task("tie-second", "{}", minute=14), '{"legacy_platform_id": "tie-second"}'),
]
LEGACY_ARCHIVED: list[tuple[dict[str, Any], str]] = [
    ({**_task("A8F3C6D1E9B2074F5A3C8E1D6B9F2A47", '{"experiment": "实验 7"}', minute=20, result='{"000": 480}'),
      "archived_at": "2026-05-03T10:00:00+00:00"},
     '{"experiment": "实验 7", "legacy_platform_id": "A8F3C6D1E9B2074F5A3C8E1D6B9F2A47"}'),
    ({**_task("archived-unparseable", "{{{", minute=21, status="failed", error="simulation failed"),
      "archived_at": "2026-05-03T10:01:00+00:00"},
     '{"legacy_platform_id": "archived-unparseable"}'),
]
NATIVE_TASK = _task(NATIVE, '{"batch_size": 2}', minute=30, result='[{"0": 1}, {"1": 1}]')
NATIVE_SHARDS = [
    {"uniqc_task_id": NATIVE, "shard_index": i, "platform_task_id": f"QK-{i}", "backend": "originq:WK_C180",
     "circuit_count": 1, "sub_index_offset": i, "status": "success", "result_json": f'{{"{i}": 1}}',
     "error_message": None, "submit_time": "t0", "update_time": "t1"}
    for i in range(2)
]
NATIVE_ARCHIVED_TASK = {**_task(NATIVE_ARCHIVED, "{}", minute=31), "archived_at": "2026-05-03T11:00:00+00:00"}
NATIVE_ARCHIVED_SHARD = {
    **NATIVE_SHARDS[0], "uniqc_task_id": NATIVE_ARCHIVED, "archived_at": "2026-05-03T11:00:00+00:00"
}


def _execute(url: str, sql: str, rows: list[dict[str, Any]]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), rows)
    finally:
        engine.dispose()


def _insert(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        values = ", ".join(f":{column}" for column in columns)
        _execute(url, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", rows)


def _seed(url: str) -> None:
    """Rows as a v4 file holds them: legacy ids in both tables, beside already-migrated tasks."""
    _insert(url, "tasks", [row for row, _ in LEGACY_TASKS[:7]])
    _insert(url, "tasks", [NATIVE_TASK])  # in the middle: rows are not assumed to be in any order
    _insert(url, "tasks", [row for row, _ in LEGACY_TASKS[7:]])
    _insert(url, "task_shards", NATIVE_SHARDS)
    _insert(url, "archived_tasks", [row for row, _ in LEGACY_ARCHIVED] + [NATIVE_ARCHIVED_TASK])
    _insert(url, "archived_task_shards", [NATIVE_ARCHIVED_SHARD])


def _dump(url: str) -> dict[str, list[tuple]]:
    """Every row of uniqc's four tables (and the server-only columns), in key order."""
    return {
        "tasks": raw_rows(url, "SELECT * FROM tasks ORDER BY task_id"),
        "archived_tasks": raw_rows(url, "SELECT * FROM archived_tasks ORDER BY task_id"),
        "task_shards": raw_rows(url, "SELECT * FROM task_shards ORDER BY uniqc_task_id, shard_index"),
        "archived_task_shards": raw_rows(
            url, "SELECT * FROM archived_task_shards ORDER BY uniqc_task_id, shard_index"
        ),
    }


def _version(url: str) -> tuple[str, int | None]:
    (revision,) = raw_rows(url, f"SELECT version_num FROM {schema.VERSION_TABLE}")[0]
    user_version = raw_rows(url, "PRAGMA user_version")[0][0] if url.startswith("sqlite") else None
    return revision, user_version


def _expected_version(url: str, revision: str) -> tuple[str, int | None]:
    """What the version table and user_version say at ``revision``: at head, the library's own
    branch's head (which stands for uniqc's head too), and uniqc's schema version."""
    recorded = schema.STORE_HEAD if revision == HEAD_REVISION else revision
    return recorded, (int(revision) if url.startswith("sqlite") else None)


def _check_replacements(
    url: str, table: str, shard_table: str, seeded: list[tuple[dict[str, Any], str]], extra: tuple[str, ...] = ()
) -> list[str]:
    """Each seeded legacy row became exactly the parent and the one shard v5 makes; returns the
    new ids in the order of the seeded rows."""
    columns = TASK_COLUMNS + "".join(f", {c}" for c in extra)
    parents = {row[0]: row for row in raw_rows(url, f"SELECT {columns} FROM {table}")}
    shards: dict[str, list[tuple]] = {}
    for row in raw_rows(url, f"SELECT {SHARD_COLUMNS}{''.join(f', {c}' for c in extra)} FROM {shard_table}"):
        shards.setdefault(row[0], []).append(row)
    by_legacy_id = {}
    for task_id, row in parents.items():
        if UQT.match(task_id) and row[7] and row[7].startswith("{") and '"legacy_platform_id"' in row[7]:
            by_legacy_id[json.loads(row[7])["legacy_platform_id"]] = task_id
    new_ids = []
    for old, metadata_json in seeded:
        new_id = by_legacy_id.get(old["task_id"])
        assert new_id is not None, f"{old['task_id']} was not replaced"
        assert uuid.UUID(new_id[4:]).version == 4
        assert parents[new_id] == (
            new_id, old["backend"], old["status"], old["shots"], old["submit_time"], old["update_time"],
            old["result_json"], metadata_json, old["error_message"], *(old[c] for c in extra),
        )
        assert shards[new_id] == [(
            new_id, 0, old["task_id"], old["backend"], 1, 0, old["status"], old["result_json"],
            old["error_message"], old["submit_time"], old["update_time"], *(old[c] for c in extra),
        )]
        new_ids.append(new_id)
    assert len(set(new_ids)) == len(new_ids)
    return new_ids


def test_0005_gives_every_legacy_task_a_uniqc_id_and_one_shard_exactly_as_uniqc_does(db_url: str) -> None:
    schema.upgrade(BEFORE, url=db_url)
    _seed(db_url)
    schema.upgrade(url=db_url)
    assert _version(db_url) == _expected_version(db_url, HEAD_REVISION)

    live = _check_replacements(db_url, "tasks", "task_shards", LEGACY_TASKS)
    archived = _check_replacements(
        db_url, "archived_tasks", "archived_task_shards", LEGACY_ARCHIVED, extra=("archived_at",)
    )
    # Nothing else: no legacy row left behind, the native tasks and their shards as they were.
    assert {task_id for (task_id,) in raw_rows(db_url, "SELECT task_id FROM tasks")} == {*live, NATIVE}
    assert raw_rows(db_url, f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = '{NATIVE}'") == [
        tuple(NATIVE_TASK.values())
    ]
    assert raw_rows(
        db_url, f"SELECT {SHARD_COLUMNS} FROM task_shards WHERE uniqc_task_id = '{NATIVE}' ORDER BY shard_index"
    ) == [tuple(shard.values()) for shard in NATIVE_SHARDS]
    assert raw_rows(db_url, "SELECT COUNT(*) FROM tasks")[0][0] == len(LEGACY_TASKS) + 1
    assert raw_rows(db_url, "SELECT COUNT(*) FROM task_shards")[0][0] == len(LEGACY_TASKS) + len(NATIVE_SHARDS)
    assert sorted(raw_rows(db_url, "SELECT task_id FROM archived_tasks")) == sorted(
        [(task_id,) for task_id in archived] + [(NATIVE_ARCHIVED,)]
    )
    native_archived_shards = raw_rows(
        db_url, f"SELECT {SHARD_COLUMNS}, archived_at FROM archived_task_shards WHERE uniqc_task_id = :parent",
        parent=NATIVE_ARCHIVED,
    )
    assert native_archived_shards == [tuple(NATIVE_ARCHIVED_SHARD.values())]
    assert raw_rows(db_url, "SELECT COUNT(*) FROM archived_task_shards")[0][0] == len(LEGACY_ARCHIVED) + 1

    # Read through the store: same values, ties in their old relative order.
    with TaskStore(url=db_url) as store:
        first = store.get(live[0])
        assert first is not None and first.metadata == {
            "circuit": "bell", "标签": "é", "legacy_platform_id": "5F0C9A7E2B8D4C1F9E3A6B2D7C4F8E1A"
        }
        assert first.result == {"00": 1}
        assert store.get(LEGACY_TASKS[1][0]["task_id"]) is None
        failed = store.get(live[1])
        assert failed is not None and failed.error_message == "超时: timed out"
        tie_first, tie_second = live[-2], live[-1]
        listed = [task.task_id for task in store.list()]
        assert listed.index(tie_second) < listed.index(tie_first)  # newest first; ties: last inserted first


def test_0005_runs_in_batches_and_keeps_the_order_of_the_rows(db_url: str) -> None:
    batch = ScriptDirectory.from_config(schema.alembic_config()).get_revision("0005").module.BATCH_SIZE
    count = 2 * batch + 3
    schema.upgrade(BEFORE, url=db_url)
    rows = [_task(f"bulk-{i:06d}", f'{{"n": {i}}}', minute=0, shots=i) for i in range(count)]
    rows.reverse()  # inserted in descending id order: the order of insertion is not the order of ids
    _insert(db_url, "tasks", rows)
    schema.upgrade(url=db_url)

    assert raw_rows(db_url, "SELECT COUNT(*) FROM tasks WHERE substr(task_id, 1, 4) <> 'uqt_'") == [(0,)]
    shards = raw_rows(db_url, "SELECT uniqc_task_id, platform_task_id FROM task_shards")
    assert sorted(platform for _, platform in shards) == sorted(row["task_id"] for row in rows)
    parents = dict(raw_rows(db_url, "SELECT task_id, shots FROM tasks"))
    assert len(parents) == count and all(UQT.match(task_id) for task_id in parents)
    assert all(parents[parent] == int(platform[5:]) for parent, platform in shards)
    with TaskStore(url=db_url) as store:
        listed = store.list()  # all at one submit_time: newest first means last inserted first
    assert [task.metadata["legacy_platform_id"] for task in listed] == [row["task_id"] for row in reversed(rows)]


FAIL_AFTER_0005 = '''

# Added by tests/test_v5_migration.py: the real migration runs to its end, then the revision fails.
_real_upgrade = upgrade


def upgrade() -> None:
    _real_upgrade()
    raise RuntimeError("0005 failed after moving every row")
'''


def test_a_failing_0005_leaves_every_row_and_the_version_as_they_were(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    # 0005 holds no DDL, so MySQL/MariaDB roll it back whole too (their message still warns about DDL).
    scripts = tmp_path / "scripts"
    shutil.copytree(schema.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (v5,) = (scripts / "versions").glob("0005_*.py")
    v5.write_text(v5.read_text() + FAIL_AFTER_0005)
    batch = ScriptDirectory.from_config(schema.alembic_config()).get_revision("0005").module.BATCH_SIZE

    schema.upgrade(BEFORE, url=db_url)
    _seed(db_url)
    _insert(db_url, "tasks", [_task(f"bulk-{i:06d}", "{}", minute=40) for i in range(batch + 1)])
    before = _dump(db_url)

    with pytest.raises(MigrationError, match="0005 failed after moving every row") as raised:
        schema.upgrade(url=db_url, script_dir=scripts)
    if backend != "mysql":
        assert "rolled back completely" in str(raised.value)
    assert _dump(db_url) == before
    assert _version(db_url) == _expected_version(db_url, BEFORE)

    # The real revision then runs from the start, as after an interrupted upgrade.
    schema.upgrade(url=db_url)
    assert _version(db_url) == _expected_version(db_url, HEAD_REVISION)
    _check_replacements(db_url, "tasks", "task_shards", LEGACY_TASKS)
    assert raw_rows(db_url, "SELECT COUNT(*) FROM tasks")[0][0] == len(LEGACY_TASKS) + 1 + batch + 1


def test_downgrading_0005_keeps_the_data_and_upgrading_again_changes_nothing(db_url: str) -> None:
    schema.upgrade(BEFORE, url=db_url)
    _seed(db_url)
    schema.upgrade(url=db_url)
    migrated = _dump(db_url)
    schema.downgrade(BEFORE, url=db_url)
    assert _version(db_url) == _expected_version(db_url, BEFORE)
    assert _dump(db_url) == migrated
    schema.upgrade(url=db_url)  # every row is uqt_ now: 0005 finds nothing to move
    assert _dump(db_url) == migrated
    assert _version(db_url) == _expected_version(db_url, HEAD_REVISION)
