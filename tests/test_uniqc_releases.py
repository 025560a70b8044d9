"""The uniqc_release fixture and its writers: released uniqc store modules, and files made with them."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import uniqc_releases
from uniqc_releases import (
    APPLICATION_ID,
    DB_FILENAME,
    RELEASES,
    WheelUnavailableError,
    canonical,
    ensure_wheel,
    imports_outside_stdlib,
    read_release_file,
    unavailable,
    write_release_file,
)

VERSIONS = list(RELEASES)
Loader = Callable[[str], ModuleType]


def tables(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: [col[1] for col in conn.execute(f"PRAGMA table_info({name})")] for name in names}
    finally:
        conn.close()


def query(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_each_releases_store_loads_from_its_wheel_without_the_uniqc_package(
    uniqc_release: Loader, version: str
) -> None:
    module = uniqc_release(version)
    assert module.__name__ == f"uniqc_release_{version.replace('.', '_')}_store"
    assert module is uniqc_release(version)
    assert "uniqc" not in sys.modules and uniqc_releases.UNIQC_STORE_MODULE not in sys.modules
    assert module.APPLICATION_ID == APPLICATION_ID
    # The schema version a release writes is its last migration (0.0.11's CURRENT_SCHEMA_VERSION
    # constant says 2, yet it applies v3).
    assert max(target for target, _ in module.MIGRATIONS) == RELEASES[version].user_version
    assert hasattr(module, "TaskShard") == RELEASES[version].shards


@pytest.mark.parametrize("version", VERSIONS)
def test_a_releases_default_cache_dir_is_disabled(uniqc_release: Loader, version: str, isolated_home: Path) -> None:
    module = uniqc_release(version)
    # It was computed from the real HOME at import; now it cannot be created at all.
    with pytest.raises(NotADirectoryError):
        module.TaskStore()
    assert not (isolated_home / ".uniqc").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_file_written_by_each_release_has_its_user_version_and_application_id(
    uniqc_release: Loader, version: str, tmp_path: Path, isolated_home: Path
) -> None:
    written = write_release_file(uniqc_release(version), tmp_path / "cache", version)
    release = RELEASES[version]
    assert written["path"] == tmp_path / "cache" / DB_FILENAME
    assert query(written["path"], "PRAGMA user_version") == [(release.user_version,)]
    assert query(written["path"], "PRAGMA application_id") == [(APPLICATION_ID,)]
    layout = tables(written["path"])
    assert ("archived_tasks" in layout) == (release.archive_path is not None)
    assert ("error_message" in layout["tasks"]) == release.error_message
    assert ("task_shards" in layout and "archived_task_shards" in layout) == release.shards
    assert not (isolated_home / ".uniqc").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_each_release_reads_back_every_record_it_wrote(uniqc_release: Loader, version: str, tmp_path: Path) -> None:
    module = uniqc_release(version)
    written = write_release_file(module, tmp_path, version)
    read = read_release_file(module, tmp_path)
    assert canonical(read) == canonical(written["records"])
    assert len(read["tasks"]) >= 5
    statuses = {record["status"] for record in read["tasks"].values()}
    assert {"pending", "running", "success", "failed"} <= statuses
    assert any(isinstance(record["result"], list) for record in read["tasks"].values())
    assert bool(read["archived_tasks"]) == (RELEASES[version].archive_path is not None)


def test_the_0_1_1_file_has_legacy_and_uqt_tasks_shards_and_archived_rows(
    uniqc_release: Loader, tmp_path: Path
) -> None:
    module = uniqc_release("0.1.1")
    written = write_release_file(module, tmp_path, "0.1.1")
    path, records = written["path"], written["records"]

    task_ids = [row[0] for row in query(path, "SELECT task_id FROM tasks")]
    assert any(task_id.startswith("uqt_") for task_id in task_ids)
    assert any(not task_id.startswith("uqt_") for task_id in task_ids)
    shard_counts = dict(query(path, "SELECT uniqc_task_id, COUNT(*) FROM task_shards GROUP BY uniqc_task_id"))
    assert shard_counts == {parent: len(shards) for parent, shards in records["shards"].items()}
    assert max(shard_counts.values()) >= 2 and min(shard_counts.values()) == 1
    assert query(path, "SELECT COUNT(*) FROM task_shards WHERE status = 'failed' AND error_message IS NOT NULL")[0][0]
    assert query(path, "SELECT COUNT(*) FROM task_shards WHERE circuit_count > 1 AND result_json LIKE '[%'")[0][0]

    archived = dict(query(path, "SELECT task_id, archived_at FROM archived_tasks"))
    assert archived.keys() == records["archived_tasks"].keys()
    assert any(task_id.startswith("uqt_") for task_id in archived)
    archived_shards = query(path, "SELECT uniqc_task_id, archived_at FROM archived_task_shards")
    assert len(archived_shards) == 2
    assert all(archived_at == archived[parent] for parent, archived_at in archived_shards)
    assert not set(archived) & set(task_ids)

    # As uniqc writes them: NaN as json.dumps spells it, metadata with raw non-ASCII text.
    assert query(path, "SELECT COUNT(*) FROM tasks WHERE result_json LIKE '%NaN%'")[0][0]
    assert query(path, "SELECT COUNT(*) FROM task_shards WHERE result_json LIKE '%NaN%'")[0][0]
    assert query(path, "SELECT COUNT(*) FROM tasks WHERE metadata_json LIKE '%贝尔态%'")[0][0]
    failed = query(path, "SELECT error_message, metadata_json FROM tasks WHERE status = 'failed'")
    assert all(message for message, _ in failed)
    legacy_failures = [(m, json.loads(meta)) for m, meta in failed if not m.startswith("shard ")]
    assert legacy_failures and all(meta["failure_error"] == m for m, meta in legacy_failures)


def test_the_0_1_1_api_reads_back_the_0_1_1_file(uniqc_release: Loader, tmp_path: Path) -> None:
    module = uniqc_release("0.1.1")
    written = write_release_file(module, tmp_path, "0.1.1")["records"]
    read = read_release_file(module, tmp_path)
    assert canonical(read) == canonical(written)
    assert read["archived_shards"] and all(
        shard["archived_at"] == read["archived_tasks"][parent]["archived_at"]
        for parent, shards in read["archived_shards"].items()
        for shard in shards
    )
    store = module.TaskStore(cache_dir=tmp_path)
    for parent, shards in read["shards"].items():
        for shard in shards:
            assert store.find_uniqc_id_by_platform_id(shard["platform_task_id"]) == parent


def test_imports_outside_the_standard_library_are_found_even_inside_functions() -> None:
    source = b"import json, numpy.linalg\nfrom __future__ import annotations\ndef f():\n    from uniqc.x import y\n"
    assert imports_outside_stdlib(source, "m.py") == {"numpy.linalg", "uniqc.x"}
    assert imports_outside_stdlib(b"from . import sibling\n", "m.py") == {"."}


def test_a_missing_wheel_skips_or_fails_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(uniqc_releases.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no wheel here"):
        unavailable("no wheel here")
    monkeypatch.setenv(uniqc_releases.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no wheel here"):
        unavailable("no wheel here")


def test_a_wheel_that_cannot_be_downloaded_raises_and_leaves_no_partial_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pip with no index and an empty find-links directory: fails at once, without the network.
    monkeypatch.setenv(uniqc_releases.CACHE_ENV, str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(WheelUnavailableError, match=r"unified-quantum==0\.0\.7"):
        ensure_wheel("0.0.7")
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == [".download.lock"]


def test_a_cached_wheel_is_used_without_downloading(
    uniqc_release: Loader, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    uniqc_release("0.1.1")  # the wheel is in the real cache (or this test was skipped)
    wheel = ensure_wheel("0.1.1")
    assert not wheel.is_relative_to(Path.home())  # the cache is not under the test's HOME
    (tmp_path / wheel.name).symlink_to(wheel)
    monkeypatch.setenv(uniqc_releases.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a download would fail
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    assert ensure_wheel("0.1.1") == tmp_path / wheel.name
