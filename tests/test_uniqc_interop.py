"""uniqc_store and uniqc's released code on the same SQLite file, both ways (issue 7, section 5).

Every release's file opens here and upgrades to head with the records uniqc 0.1.1's own upgrade
of a copy gives; a file made here is uniqc 0.1.1's without migrating, and what uniqc then writes
reads back here; the layouts are uniqc's as SQLite reports them; files uniqc upgraded behind this
library's back open; files that claim a version whose layout they do not have are refused
untouched; shards follow their task (cascade, upsert, archive) as uniqc expects.

The release modules are the real ones, loaded from their wheels by the ``uniqc_release`` fixture
(tests/uniqc_releases.py); nothing of theirs is copied here.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from uniqc_releases import (
    APPLICATION_ID,
    _archive,
    canonical,
    read_release_file,
    write_release_file,
)
from uniqc_store import (
    CURRENT_SCHEMA_VERSION,
    DB_FILENAME,
    HEAD_REVISION,
    ForeignDatabaseError,
    TaskInfo,
    TaskShard,
    TaskStore,
    schema,
)
from uniqc_store.schema import STORE_HEAD
from uniqc_store.versions import LAYOUTS, UNIQC_TABLES, differences, store_layout

from uniqc_files import (
    header,
    open_with_the_store,
    snapshot,
    sqlite_layout,
    table_names,
    upgrade_with_the_library,
)

Loader = Callable[[str], ModuleType]
CURRENT = "0.1.1"  # the uniqc release whose schema version is ours
#: The uniqc release that writes each schema version N (v4: see :func:`v4_file`).
WRITER = {1: "0.0.7", 2: "0.0.10", 3: "0.0.11", 5: CURRENT}


# --- files and what they hold ---------------------------------------------------------------------


def upgrade_with_release(module: ModuleType, path: Path, target: int) -> None:
    """Run release ``module``'s own migrations on ``path`` up to ``target`` only, each step in a
    transaction of its own, as its ``TaskStore._init_schema`` does for all of them."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    try:
        current = module._get_user_version(conn)
        for version, migrate in module.MIGRATIONS:
            if current < version <= target:
                with conn:
                    migrate(conn)
                    module._set_user_version(conn, version)
                current = version
    finally:
        conn.close()
    assert header(path) == (APPLICATION_ID, target)


# Legacy rows only a v4 file in the wild can hold: written before v4 by code other than the
# releases' own TaskStore (a plain sqlite3 script, a gateway import), with metadata v5 must repair.
ODD_LEGACY_ROWS = [
    ("odd-unparseable", "{not json"),
    ("odd-list", '[1, 2, "三"]'),
    ("odd-null", "null"),
    ("odd-empty", ""),
    ("odd-too-deep", "[" * 20_000 + "]" * 20_000),
    ("odd-stale-key", '{"legacy_platform_id": "older", "n": 1}'),
]


def v4_file(loader: Loader, directory: Path) -> dict[str, Any]:
    """A v4 file as uniqc leaves it when its v5 step fails: 0.0.11's file (v3) taken to v4 by
    uniqc 0.1.1's own migrations, plus legacy rows with odd metadata."""
    written = write_release_file(loader("0.0.11"), directory, "0.0.11")
    upgrade_with_release(loader(CURRENT), written["path"], 4)
    conn = sqlite3.connect(written["path"])
    with conn:
        conn.executemany(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, metadata_json) "
            "VALUES (?, 'dummy', 'success', 10, '2026-05-02T07:00:00+00:00', '2026-05-02T07:00:01+00:00', ?)",
            ODD_LEGACY_ROWS,
        )
        conn.execute(
            "INSERT INTO archived_tasks (task_id, backend, status, shots, submit_time, update_time, metadata_json, "
            "archived_at) VALUES ('odd-archived', 'dummy', 'cancelled', 1, 't0', 't1', '\"text\"', 't2')"
        )
    conn.close()
    return {**written, "user_version": 4}


def release_file(loader: Loader, source: str, directory: Path) -> dict[str, Any]:
    """The file of ``source``: a release version, or ``"v4"``."""
    if source == "v4":
        return v4_file(loader, directory)
    return write_release_file(loader(source), directory, source)


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def our_archived_shards(store: TaskStore) -> dict[str, list[dict[str, Any]]]:
    """Every archived shard, by parent, as :func:`uniqc_releases.read_release_file` gives them."""
    shards: dict[str, list[dict[str, Any]]] = {}
    for task in store.list_archived():
        found = [
            {**shard.to_dict(), "archived_at": task.archived_at} for shard in store.get_archived_shards(task.task_id)
        ]
        if found:
            shards[task.task_id] = found
    return shards


def read_ours(directory: Path) -> dict[str, dict[str, Any]]:
    """Every record of ``directory/tasks.sqlite`` through uniqc_store's API, in the shape
    ``read_release_file`` returns."""
    with TaskStore(directory) as store:
        tasks = {task.task_id: task.to_dict() for task in store.list()}
        shards = {task_id: [s.to_dict() for s in store.get_shards(task_id)] for task_id in tasks}
        return {
            "tasks": tasks,
            "archived_tasks": {task.task_id: task.to_dict() for task in store.list_archived()},
            "shards": {task_id: found for task_id, found in shards.items() if found},
            "archived_shards": our_archived_shards(store),
        }


def by_legacy_id(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``records`` with every id that schema v5 made (a task whose metadata has
    ``legacy_platform_id``) replaced by ``<legacy:old id>``: two upgrades of one file draw
    different random ids, and are equal once each id is named by what it replaced."""
    renamed: dict[str, str] = {}
    for kind in ("tasks", "archived_tasks"):
        for task_id, task in records[kind].items():
            legacy = task["metadata"].get("legacy_platform_id") if isinstance(task["metadata"], dict) else None
            if legacy is not None:
                assert task_id.startswith("uqt_") and len(task_id) == 36, task_id
                renamed[task_id] = f"<legacy:{legacy}>"

    def name(task_id: str) -> str:
        return renamed.get(task_id, task_id)

    result: dict[str, dict[str, Any]] = {}
    for kind in ("tasks", "archived_tasks"):
        result[kind] = {name(i): {**task, "task_id": name(i)} for i, task in records[kind].items()}
    for kind in ("shards", "archived_shards"):
        result[kind] = {
            name(i): [{**shard, "uniqc_task_id": name(shard["uniqc_task_id"])} for shard in shards]
            for i, shards in records[kind].items()
        }
    return result


def rows_of_every_table(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table (uniqc's and the version table), in rowid order."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: conn.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall() for name in names}
    finally:
        conn.close()


def version_rows(path: Path) -> list[tuple]:
    return rows_of_every_table(path).get(schema.VERSION_TABLE, [])


# --- 1. every release's file opens here and upgrades as uniqc upgrades it -------------------------

SOURCES = ["0.0.7", "0.0.10", "0.0.11", "v4", CURRENT]


@pytest.mark.parametrize("source", SOURCES)
def test_each_releases_file_upgrades_here_to_the_records_uniqc_0_1_1_reads_after_its_own_upgrade(
    uniqc_release: Loader, tmp_path: Path, source: str
) -> None:
    written = release_file(uniqc_release, source, tmp_path / "ours")
    copy_store(tmp_path / "ours", tmp_path / "uniqcs")

    ours = read_ours(tmp_path / "ours")
    theirs = read_release_file(uniqc_release(CURRENT), tmp_path / "uniqcs")

    assert header(tmp_path / "ours" / DB_FILENAME) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert version_rows(tmp_path / "ours" / DB_FILENAME) == [(STORE_HEAD,)]
    assert header(tmp_path / "uniqcs" / DB_FILENAME) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert canonical(by_legacy_id(ours)) == canonical(by_legacy_id(theirs))
    if source != "0.0.7":
        assert ours["archived_tasks"] and ours["archived_shards"]
    if source != "0.0.7" and source != "0.0.10":
        assert any(task["error_message"] for task in ours["tasks"].values())

    if source == CURRENT:
        # Already v5 (adopted, nothing moved): the very records uniqc wrote, ids and all.
        assert canonical(ours) == canonical(theirs) == canonical(written["records"])
        assert any(not task_id.startswith("uqt_") for task_id in ours["tasks"])  # 0.1.1 still saves legacy ids
        return

    # Not vacuous: every task got a uqt_ id, and the ids v5 drew here differ from uniqc's.
    legacy = {task["metadata"]["legacy_platform_id"]: task_id
              for kind in ("tasks", "archived_tasks") for task_id, task in ours[kind].items()}
    assert all(task_id.startswith("uqt_") for kind in ("tasks", "archived_tasks") for task_id in ours[kind])
    assert not set(legacy.values()) & (set(theirs["tasks"]) | set(theirs["archived_tasks"]))
    # What the release wrote is all there: each legacy task under its new id, with its one shard.
    expected = {old_id for kind in ("tasks", "archived_tasks") for old_id in written["records"][kind]}
    if source == "v4":
        expected |= {old_id for old_id, _ in ODD_LEGACY_ROWS} | {"odd-archived"}
    assert set(legacy) == expected and len(expected) >= 9
    for kind in ("tasks", "archived_tasks"):
        for old_id, record in written["records"][kind].items():
            mine = ours[kind][legacy[old_id]]
            assert canonical({**mine, "task_id": old_id, "metadata": record["metadata"]}) == canonical(
                {"error_message": None, "archived_at": None, **record}
            )
            assert mine["metadata"] == {**record["metadata"], "legacy_platform_id": old_id}
            shards = ours["shards" if kind == "tasks" else "archived_shards"][legacy[old_id]]
            assert [
                (s["shard_index"], s["platform_task_id"], s["circuit_count"], s["sub_index_offset"], s["status"])
                for s in shards
            ] == [(0, old_id, 1, 0, record["status"])]
            assert canonical(shards[0]["result"]) == canonical(record["result"])
    if source == "v4":
        odd = {old_id: ours["tasks"][legacy[old_id]]["metadata"] for old_id, _ in ODD_LEGACY_ROWS}
        assert odd == {
            "odd-unparseable": {"legacy_platform_id": "odd-unparseable"},
            "odd-list": {"legacy_metadata_raw": [1, 2, "三"], "legacy_platform_id": "odd-list"},
            "odd-null": {"legacy_metadata_raw": None, "legacy_platform_id": "odd-null"},
            "odd-empty": {"legacy_platform_id": "odd-empty"},
            "odd-too-deep": {"legacy_platform_id": "odd-too-deep"},
            "odd-stale-key": {"legacy_platform_id": "odd-stale-key", "n": 1},
        }
        archived = ours["archived_tasks"][legacy["odd-archived"]]
        assert archived["metadata"] == {"legacy_metadata_raw": "text", "legacy_platform_id": "odd-archived"}


def without_update_times(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def blank(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "update_time": None}

    return {
        kind: {key: [blank(r) for r in val] if isinstance(val, list) else blank(val) for key, val in by_id.items()}
        for kind, by_id in records.items()
    }


@pytest.mark.parametrize("source", SOURCES)
def test_every_record_read_from_a_releases_file_saves_back_unchanged(
    uniqc_release: Loader, tmp_path: Path, source: str
) -> None:
    # uniqc writes NaN into JSON, list results and non-ASCII text: what we read, we can write.
    release_file(uniqc_release, source, tmp_path)
    before = read_ours(tmp_path)
    with TaskStore(tmp_path) as store:
        tasks = store.list()
        for task in tasks:
            store.save(task)
            for shard in store.get_shards(task.task_id):
                store.save_shard(shard)
        store.save_many(tasks)
    after = read_release_file(uniqc_release(CURRENT), tmp_path)
    # Only update_time moves (save stamps it, as uniqc's does).
    assert canonical(without_update_times(after)) == canonical(without_update_times(before))
    assert canonical(without_update_times(read_ours(tmp_path))) == canonical(without_update_times(before))
    assert any(isinstance(task["result"], list) for task in before["tasks"].values())


# --- 2. a file made here is uniqc 0.1.1's without migrating, and back -----------------------------


def nan_result() -> dict[str, Any]:
    return {"counts": {"0": 1987, "1": 2013}, "expectation": math.nan}


def fill_with_our_api(directory: Path) -> None:
    """Tasks in every status, legacy and uqt_ ids, shards, archived tasks with shards, through
    uniqc_store's API."""
    with TaskStore(directory) as store:
        store.save(TaskInfo("5F0C9A7E2B8D4C1F9E3A6B2D7C4F8E1A", "originq:WK_C180", status="success",
                            result={"00": 498, "11": 502}, metadata={"note": "贝尔态 — ñ"}))
        store.save(TaskInfo("d1kq7m2p9x3s000g8h4g", "ibm:ibm_brisbane", status="success", result=nan_result()))
        store.save(TaskInfo("C07B2E19F4D8A3561B0E9D7C2A4F8E36", "originq:WK_C180", status="failed",
                            error_message="submission failed: 芯片维护中", metadata={"failure_error": "x"}))
        # parent: (status, its shards as (status, result, error_message, circuit_count))
        parents = {
            "uqt_" + "a" * 32: (
                "success", [("success", [{"0": 1}, {"1": 1}], None, 2), ("success", {"0": 2}, None, 1)]
            ),
            "uqt_" + "b" * 32: ("failed", [("success", {"0": 3}, None, 1), ("failed", None, "超时", 1)]),
            "uqt_" + "c" * 32: ("running", [("running", None, None, 1)]),
            "uqt_" + "d" * 32: ("success", [("success", {"0": 4, "f": math.nan}, None, 1)]),
        }
        for n, (parent, (status, specs)) in enumerate(parents.items()):
            error = "shard 1: 超时" if status == "failed" else None
            store.save(TaskInfo(parent, "quark:Baihua", status=status, shots=100 + n,
                                metadata={"batch_size": len(specs)}, error_message=error))
            offset = 0
            for index, (shard_status, result, error, circuits) in enumerate(specs):
                store.save_shard(TaskShard(parent, index, f"QK-{n}-{index}", "quark:Baihua", circuit_count=circuits,
                                           sub_index_offset=offset, status=shard_status, result=result,
                                           error_message=error))
                offset += circuits
        assert store.archive_task("uqt_" + "d" * 32)
        assert store.archive_task("C07B2E19F4D8A3561B0E9D7C2A4F8E36")


def test_a_file_made_here_is_read_by_uniqc_0_1_1_without_migrating_and_what_uniqc_writes_reads_back_here(
    uniqc_release: Loader, tmp_path: Path
) -> None:
    uniqc = uniqc_release(CURRENT)
    fill_with_our_api(tmp_path)
    path = tmp_path / DB_FILENAME
    ours = read_ours(tmp_path)
    assert ours["shards"] and ours["archived_shards"] and ours["archived_tasks"]
    rows_before = rows_of_every_table(path)

    theirs = read_release_file(uniqc, tmp_path)
    assert canonical(theirs) == canonical(ours)
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)  # no migration ran
    assert rows_of_every_table(path) == rows_before  # nothing changed, our version table included

    # Now uniqc writes: a task with shards, an update, an archive, a restore, a delete.
    store = uniqc.TaskStore(cache_dir=tmp_path)
    parent = uniqc.generate_uniqc_task_id()
    store.save(uniqc.TaskInfo(task_id=parent, backend="dummy", status="running", metadata={"by": "uniqc 0.1.1"}))
    for index in range(2):
        store.save_shard(uniqc.TaskShard(uniqc_task_id=parent, shard_index=index, platform_task_id=f"dummy-{index}",
                                         backend="dummy", sub_index_offset=index, status="success",
                                         result={"0": index, "nan": math.nan}))
    updated = store.get("uqt_" + "c" * 32)
    updated.status, updated.result = "success", {"0": 100}
    store.save(updated)
    archive = _archive(uniqc, store)
    assert archive.archive_task("uqt_" + "a" * 32)
    assert archive.restore_task("uqt_" + "d" * 32)
    assert store.delete("uqt_" + "b" * 32)  # its shards go with it (the foreign key we created)

    after = read_release_file(uniqc, tmp_path)
    assert canonical(read_ours(tmp_path)) == canonical(after)
    assert parent in after["tasks"] and len(after["shards"][parent]) == 2
    assert "uqt_" + "a" * 32 in after["archived_shards"] and "uqt_" + "d" * 32 in after["shards"]
    assert "uqt_" + "b" * 32 not in after["tasks"] and "uqt_" + "b" * 32 not in after["shards"]
    with TaskStore(tmp_path) as mine:
        assert mine.get("uqt_" + "c" * 32).result == {"0": 100}
        assert mine.find_uniqc_id_by_platform_id("dummy-1") == parent
        assert mine.get_shards("uqt_" + "b" * 32) == []
        assert mine.schema_info()["revision"] == HEAD_REVISION
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)


# --- 3. the layout, as SQLite reports it ----------------------------------------------------------


def assert_layout(path: Path, version: int, *, ours: bool = False) -> None:
    """uniqc's layout at ``version``; for a file this library brought to head, with its own indexes."""
    assert header(path) == (APPLICATION_ID, version)
    assert sqlite_layout(path) == (store_layout(version) if ours else LAYOUTS[version])


def test_files_made_here_by_uniqc_0_1_1_and_upgraded_by_it_from_v1_have_one_layout(
    uniqc_release: Loader, tmp_path: Path
) -> None:
    uniqc = uniqc_release(CURRENT)
    TaskStore(tmp_path / "here").close()
    uniqc.TaskStore(cache_dir=tmp_path / "uniqc")
    write_release_file(uniqc_release("0.0.7"), tmp_path / "from-v1", "0.0.7")
    uniqc.TaskStore(cache_dir=tmp_path / "from-v1")
    write_release_file(uniqc_release("0.0.7"), tmp_path / "from-v1-here", "0.0.7")
    TaskStore(tmp_path / "from-v1-here").close()

    names = ("here", "uniqc", "from-v1", "from-v1-here")
    layouts = {name: sqlite_layout(tmp_path / name / DB_FILENAME) for name in names}
    headers = {name: header(tmp_path / name / DB_FILENAME) for name in layouts}
    assert headers == dict.fromkeys(layouts, (APPLICATION_ID, CURRENT_SCHEMA_VERSION))
    # uniqc's files have uniqc's layout; ours the same plus this library's own indexes, which
    # uniqc does not look at (and the adoption check tells apart from anything else).
    assert {name: layouts[name] for name in ("uniqc", "from-v1")} == dict.fromkeys(
        ("uniqc", "from-v1"), LAYOUTS[CURRENT_SCHEMA_VERSION]
    )
    assert {name: layouts[name] for name in ("here", "from-v1-here")} == dict.fromkeys(
        ("here", "from-v1-here"), store_layout(CURRENT_SCHEMA_VERSION)
    )
    assert all(differences(layout, CURRENT_SCHEMA_VERSION) == [] for layout in layouts.values())
    assert set(LAYOUTS[CURRENT_SCHEMA_VERSION]) == set(UNIQC_TABLES)
    assert table_names(tmp_path / "uniqc" / DB_FILENAME) == set(UNIQC_TABLES)


@pytest.mark.parametrize("version", [1, 2, 3, 4], ids=lambda v: f"v{v}")
def test_each_revision_lays_out_what_uniqc_writes_at_its_version(
    uniqc_release: Loader, tmp_path: Path, version: int
) -> None:
    if version == 4:
        uniqc_release("0.0.11").TaskStore(cache_dir=tmp_path / "uniqc")
        upgrade_with_release(uniqc_release(CURRENT), tmp_path / "uniqc" / DB_FILENAME, 4)
    else:
        uniqc_release(WRITER[version]).TaskStore(cache_dir=tmp_path / "uniqc")
    schema.upgrade(f"{version:04d}", cache_dir=tmp_path / "here")
    assert_layout(tmp_path / "uniqc" / DB_FILENAME, version)
    assert_layout(tmp_path / "here" / DB_FILENAME, version)


# --- 4. a file of ours that uniqc upgraded behind our back ----------------------------------------


@pytest.mark.parametrize(
    ("revision", "writer"),
    [("0001", "0.0.7"), ("0002", "0.0.10"), ("0003", "0.0.11"), ("0004", "0.0.11")],
    ids=["at-0001", "at-0002", "at-0003", "at-0004"],
)
def test_a_file_of_ours_that_uniqc_0_1_1_upgraded_is_restamped_with_nothing_lost(
    uniqc_release: Loader, tmp_path: Path, revision: str, writer: str
) -> None:
    path = tmp_path / DB_FILENAME
    schema.upgrade(revision, cache_dir=tmp_path)
    # An older uniqc writes into it (the file is its version or newer), then 0.1.1 opens it.
    write_release_file(uniqc_release(writer), tmp_path, writer)
    assert header(path) == (APPLICATION_ID, int(revision))
    theirs = read_release_file(uniqc_release(CURRENT), tmp_path)
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert version_rows(path) == [(revision,)]  # uniqc never looks at our table
    rows_before = {name: rows for name, rows in rows_of_every_table(path).items() if name != schema.VERSION_TABLE}

    with TaskStore(tmp_path) as store:
        assert store.schema_info()["revision"] == HEAD_REVISION
    assert version_rows(path) == [(schema.STORE_HEAD,)]  # re-stamped at 0005, then its indexes
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    # Re-stamped, not migrated again: same rows, same ids.
    after = rows_of_every_table(path)
    assert {name: rows for name, rows in after.items() if name != schema.VERSION_TABLE} == rows_before
    assert canonical(read_ours(tmp_path)) == canonical(theirs)
    assert len(theirs["tasks"]) + len(theirs["archived_tasks"]) >= 9
    assert_layout(path, CURRENT_SCHEMA_VERSION, ours=True)


# --- 5. a file whose user_version its layout does not match is refused untouched ------------------


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _rebuild(path: Path, table: str, old: str, new: str) -> None:
    """Recreate ``table`` from uniqc's own DDL text with ``old`` replaced by ``new``: rows and
    indexes kept."""
    conn = sqlite3.connect(path)
    try:
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        indexes = [row[0] for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        )]
        assert old in ddl, ddl
        conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
        conn.execute(ddl.replace(old, new))
        conn.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
        conn.execute(f"DROP TABLE old_{table}")  # and the indexes, which went with the rename
        for index in indexes:
            conn.execute(index)
        conn.commit()
    finally:
        conn.close()


_FOREIGN_KEY = ",\n    FOREIGN KEY (uniqc_task_id) REFERENCES tasks(task_id)"


def _made_by(version: str) -> Callable[[Loader, Path], None]:
    def make(loader: Loader, directory: Path) -> None:
        write_release_file(loader(version), directory, version)

    return make


def _v4(loader: Loader, directory: Path) -> None:
    v4_file(loader, directory)


def _ours_at(revision: str) -> Callable[[Loader, Path], None]:
    def make(loader: Loader, directory: Path) -> None:
        schema.upgrade(revision, cache_dir=directory)

    return make


# (how the file is made, how it is then spoiled)
MISMATCHES = {
    "v1-without-an-index": (_made_by("0.0.7"), lambda p: _sql(p, "DROP INDEX tasks_status_idx")),
    "v2-without-an-archive-index": (_made_by("0.0.10"), lambda p: _sql(p, "DROP INDEX archived_status_idx")),
    "v2-claimed-by-a-v3-layout": (_made_by("0.0.11"), lambda p: _sql(p, "PRAGMA user_version = 2")),
    "v3-error-message-only-on-tasks": (_made_by("0.0.10"), lambda p: _sql(
        p, "ALTER TABLE tasks ADD COLUMN error_message TEXT", "PRAGMA user_version = 3"
    )),
    "v4-claimed-by-a-v3-layout": (_made_by("0.0.11"), lambda p: _sql(p, "PRAGMA user_version = 4")),
    "v4-without-the-foreign-key": (_v4, lambda p: _rebuild(p, "task_shards", _FOREIGN_KEY + " ON DELETE CASCADE", "")),
    "v4-foreign-key-without-cascade": (_v4, lambda p: _rebuild(
        p, "task_shards", _FOREIGN_KEY + " ON DELETE CASCADE", _FOREIGN_KEY
    )),
    "v5-without-archived-shards": (_made_by(CURRENT), lambda p: _sql(p, "DROP TABLE archived_task_shards")),
    "v5-with-an-extra-column": (_made_by(CURRENT), lambda p: _sql(p, "ALTER TABLE tasks ADD COLUMN note TEXT")),
    "v5-archived-shard-column-without-its-default": (_made_by(CURRENT), lambda p: _rebuild(
        p, "archived_task_shards", "circuit_count    INTEGER NOT NULL DEFAULT 1", "circuit_count    INTEGER NOT NULL"
    )),
    # Files of ours at an older revision whose user_version something moved on, wrongly.
    "ours-at-0001-claiming-v5": (_ours_at("0001"), lambda p: _sql(p, "PRAGMA user_version = 5")),
    "ours-at-0003-claiming-v4-without-the-foreign-key": (_ours_at("0003"), lambda p: _sql(
        p,
        "CREATE TABLE task_shards (uniqc_task_id TEXT NOT NULL, shard_index INTEGER NOT NULL, "
        "platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, circuit_count INTEGER NOT NULL DEFAULT 1, "
        "sub_index_offset INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, result_json TEXT, error_message TEXT, "
        "submit_time TEXT NOT NULL, update_time TEXT NOT NULL, PRIMARY KEY (uniqc_task_id, shard_index))",
        "CREATE INDEX task_shards_platform_idx ON task_shards(platform_task_id)",
        "CREATE INDEX task_shards_status_idx ON task_shards(status)",
        "CREATE TABLE archived_task_shards (uniqc_task_id TEXT NOT NULL, shard_index INTEGER NOT NULL, "
        "platform_task_id TEXT NOT NULL, backend TEXT NOT NULL, circuit_count INTEGER NOT NULL DEFAULT 1, "
        "sub_index_offset INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, result_json TEXT, error_message TEXT, "
        "submit_time TEXT NOT NULL, update_time TEXT NOT NULL, archived_at TEXT NOT NULL, "
        "PRIMARY KEY (uniqc_task_id, shard_index))",
        "CREATE INDEX archived_task_shards_platform_idx ON archived_task_shards(platform_task_id)",
        "PRAGMA user_version = 4",
    )),
}




@pytest.mark.parametrize(
    "opener", [open_with_the_store, upgrade_with_the_library], ids=["TaskStore", "schema.upgrade"]
)
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_file_whose_layout_is_not_uniqcs_for_its_user_version_is_refused_untouched(
    uniqc_release: Loader, tmp_path: Path, case: str, opener: Callable[[Path], None]
) -> None:
    make, spoil = MISMATCHES[case]
    make(uniqc_release, tmp_path)
    spoil(tmp_path / DB_FILENAME)
    user_version = header(tmp_path / DB_FILENAME)[1]
    before = snapshot(tmp_path)
    assert list(before) == [DB_FILENAME]
    with pytest.raises(ForeignDatabaseError, match=rf"user_version {user_version} but not uniqc's layout for it"):
        opener(tmp_path)
    assert snapshot(tmp_path) == before


# --- 6. shards follow their task, as uniqc expects ------------------------------------------------

PARENT = "uqt_" + "e" * 32


def _task_with_shards(store: TaskStore, count: int = 2) -> list[TaskShard]:
    store.save(TaskInfo(PARENT, "quark:Baihua", status="running", metadata={"batch_size": count}))
    shards = [
        TaskShard(PARENT, index, f"QK-{index}", "quark:Baihua", sub_index_offset=index, status="running")
        for index in range(count)
    ]
    for shard in shards:
        store.save_shard(shard)
    return shards


def _uniqc_shards(uniqc: ModuleType, directory: Path) -> list[dict[str, Any]]:
    return [shard.to_dict() for shard in uniqc.TaskStore(cache_dir=directory).get_shards(PARENT)]


def test_deleting_a_task_here_deletes_its_shards_and_uniqc_sees_none(uniqc_release: Loader, tmp_path: Path) -> None:
    uniqc = uniqc_release(CURRENT)
    with TaskStore(tmp_path) as store:
        _task_with_shards(store)
        assert len(_uniqc_shards(uniqc, tmp_path)) == 2
        assert store.delete(PARENT)
        assert store.get_shards(PARENT) == []
    assert _uniqc_shards(uniqc, tmp_path) == []
    assert uniqc.TaskStore(cache_dir=tmp_path).find_uniqc_id_by_platform_id("QK-0") is None


def test_deleting_a_task_in_uniqc_deletes_its_shards_here(uniqc_release: Loader, tmp_path: Path) -> None:
    uniqc = uniqc_release(CURRENT)
    with TaskStore(tmp_path) as store:
        _task_with_shards(store)
        assert uniqc.TaskStore(cache_dir=tmp_path).delete(PARENT)
        assert store.get_shards(PARENT) == []
        assert store.get_shard_by_platform_id("QK-1") is None


def test_saving_a_task_again_here_keeps_its_shards_for_uniqc(uniqc_release: Loader, tmp_path: Path) -> None:
    uniqc = uniqc_release(CURRENT)
    with TaskStore(tmp_path) as store:
        shards = _task_with_shards(store)
        task = store.get(PARENT)
        task.status, task.result = "success", [{"0": 1}, {"1": 1}]
        store.save(task)  # an upsert, never delete-and-insert (which would cascade)
        store.save_many([task])
        assert [shard.to_dict() for shard in store.get_shards(PARENT)] == [shard.to_dict() for shard in shards]
    assert _uniqc_shards(uniqc, tmp_path) == [shard.to_dict() for shard in shards]
    assert uniqc.TaskStore(cache_dir=tmp_path).get(PARENT).status == "success"


def test_archiving_here_moves_the_shards_where_uniqc_restores_them_from(uniqc_release: Loader, tmp_path: Path) -> None:
    uniqc = uniqc_release(CURRENT)
    with TaskStore(tmp_path) as store:
        shards = [shard.to_dict() for shard in _task_with_shards(store)]
        assert store.archive_task(PARENT)
        archived = store.get_archived(PARENT)
        assert archived is not None and archived.archived_at
        assert store.get_shards(PARENT) == []
    theirs = read_release_file(uniqc, tmp_path)
    assert PARENT not in theirs["tasks"] and PARENT not in theirs["shards"]
    assert theirs["archived_tasks"][PARENT]["archived_at"] == archived.archived_at
    assert theirs["archived_shards"][PARENT] == [{**shard, "archived_at": archived.archived_at} for shard in shards]

    assert _archive(uniqc, uniqc.TaskStore(cache_dir=tmp_path)).restore_task(PARENT)
    with TaskStore(tmp_path) as store:
        assert [shard.to_dict() for shard in store.get_shards(PARENT)] == shards
        assert store.get_archived(PARENT) is None and store.get(PARENT) is not None


def test_what_uniqc_archives_restores_here_with_its_shards(uniqc_release: Loader, tmp_path: Path) -> None:
    uniqc = uniqc_release(CURRENT)
    with TaskStore(tmp_path) as store:
        shards = [shard.to_dict() for shard in _task_with_shards(store)]
    assert _archive(uniqc, uniqc.TaskStore(cache_dir=tmp_path)).archive_task(PARENT)
    with TaskStore(tmp_path) as store:
        assert store.get(PARENT) is None and store.get_archived(PARENT) is not None
        assert store.restore_task(PARENT)
        assert [shard.to_dict() for shard in store.get_shards(PARENT)] == shards
        assert store.get(PARENT).archived_at is None
    assert _uniqc_shards(uniqc, tmp_path) == shards
    assert read_release_file(uniqc, tmp_path)["archived_shards"] == {}
