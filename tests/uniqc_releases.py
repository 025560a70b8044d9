"""The real store modules of released uniqc versions, and files written with them.

``uniqc_release("0.1.1")`` (a session fixture, registered in conftest.py) is the ``store.py`` of
that release, loaded by path from its wheel: nothing is installed and nothing else of the
``uniqc`` package is imported (each release's store uses only the standard library, which
``load_release`` checks). ``write_release_file`` makes a ``tasks.sqlite`` through the release's
own API, the way that release's task manager and web gateway do; ``read_release_file`` reads
every record of a file back through that API, so a test can compare what uniqc reads with what
uniqc_store reads.

Wheels are cached outside the repository, in ``$UNIQC_STORE_WHEEL_CACHE`` or else
``~/.cache/uniqc_store/wheels`` (the home of the user running pytest, taken when this module is
imported, before any test moves HOME). A missing wheel is fetched with
``pip download --no-deps --only-binary=:all: unified-quantum==VERSION`` under a file lock; a wheel
that cannot be had skips the test, or fails it when ``UNIQC_STORE_REQUIRE_WHEELS=1`` (as in CI).
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import dataclasses
import importlib.util
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: downloads still land atomically, just unlocked
    fcntl = None  # type: ignore[assignment]

PYPI_NAME = "unified-quantum"
DOWNLOAD_TIMEOUT = 300  # seconds for one `pip download`
REQUIRE_ENV = "UNIQC_STORE_REQUIRE_WHEELS"
CACHE_ENV = "UNIQC_STORE_WHEEL_CACHE"

# Taken at import, i.e. when conftest.py loads this plugin, before the autouse fixture gives each
# test a temporary HOME: the cache must outlive the test, and pip must see the user's own config.
REAL_HOME = os.path.expanduser("~")
DEFAULT_WHEEL_CACHE = Path(REAL_HOME) / ".cache" / "uniqc_store" / "wheels"

# The name a release's gateway imports its store by (``from uniqc.backend_adapter.task.store
# import TaskStore``); see ``_standing_in_as_uniqcs_store``.
UNIQC_STORE_MODULE = "uniqc.backend_adapter.task.store"


@dataclasses.dataclass(frozen=True)
class Release:
    """What one uniqc release ships and writes."""

    version: str
    store_path: str  # the store module inside the wheel
    user_version: int  # the PRAGMA user_version its TaskStore leaves in a file
    archive_path: str | None  # the gateway's ArchiveStore (archived_tasks), if the release has one
    error_message: bool  # TaskInfo.error_message and the error_message columns (schema v3)
    shards: bool  # TaskShard, save_shard and the task_shards tables (schema v4/v5)


RELEASES: dict[str, Release] = {
    "0.0.7": Release("0.0.7", "uniqc/task/store.py", 1, None, error_message=False, shards=False),
    "0.0.10": Release(
        "0.0.10", "uniqc/backend_adapter/task/store.py", 2, "uniqc/gateway/db/archive_store.py",
        error_message=False, shards=False,
    ),
    # 0.0.11's CURRENT_SCHEMA_VERSION still says 2, but its MIGRATIONS list applies v3.
    "0.0.11": Release(
        "0.0.11", "uniqc/backend_adapter/task/store.py", 3, "uniqc/gateway/db/archive_store.py",
        error_message=True, shards=False,
    ),
    "0.1.1": Release(
        "0.1.1", "uniqc/backend_adapter/task/store.py", 5, "uniqc/gateway/db/archive_store.py",
        error_message=True, shards=True,
    ),
}

APPLICATION_ID = 0x554E4943  # "UNIC", every release stamps it
DB_FILENAME = "tasks.sqlite"
RECORD_KINDS = ("tasks", "archived_tasks", "shards", "archived_shards")


class WheelUnavailableError(RuntimeError):
    """A release's wheel is not in the cache and could not be downloaded."""


# --- wheels ---------------------------------------------------------------------------------


def wheel_cache_dir() -> Path:
    """Where wheels are kept: ``$UNIQC_STORE_WHEEL_CACHE``, else ``~/.cache/uniqc_store/wheels``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else DEFAULT_WHEEL_CACHE


def _cached_wheel(cache: Path, version: str) -> Path | None:
    # The store modules are pure Python, so any platform's or interpreter's wheel will do.
    found = sorted(cache.glob(f"unified_quantum-{version}-*.whl"))
    return found[0] if found else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (pytest-xdist workers, parallel runs)."""
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_wheel(version: str) -> Path:
    """The path of the cached wheel of ``unified-quantum==version``, downloading it if missing.

    Raises ``WheelUnavailableError`` (with pip's message) when it is not cached and cannot be
    downloaded.
    """
    release = RELEASES[version]
    cache = wheel_cache_dir()
    wheel = _cached_wheel(cache, version)
    if wheel is None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with _locked(cache / ".download.lock"):
                # Another process may have fetched it while this one waited for the lock.
                wheel = _cached_wheel(cache, version) or _download(cache, version)
        except OSError as error:
            raise WheelUnavailableError(f"cannot use the wheel cache {cache}: {error}") from error
    with zipfile.ZipFile(wheel) as archive:
        missing = {release.store_path, release.archive_path} - {None, *archive.namelist()}
    if missing:
        raise RuntimeError(f"{wheel} has no {', '.join(sorted(missing))}: RELEASES[{version!r}] is wrong")
    return wheel


def _download(cache: Path, version: str) -> Path:
    # Into a private directory first, so the cache never holds a partial wheel under its final name.
    staging = Path(tempfile.mkdtemp(prefix=f".download-{version}-", dir=cache))
    try:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
            f"{PYPI_NAME}=={version}", "-d", str(staging),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False,
                env={**os.environ, "HOME": REAL_HOME},  # the user's pip config, not a test's HOME
            )
        except subprocess.TimeoutExpired as error:
            raise WheelUnavailableError(f"`{' '.join(command)}` took over {DOWNLOAD_TIMEOUT} s") from error
        wheels = sorted(staging.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise WheelUnavailableError(
                f"cannot download {PYPI_NAME}=={version} into {cache} "
                f"(pip exit {done.returncode}): {' / '.join(detail) or 'no wheel'}"
            )
        target = cache / wheels[0].name
        os.replace(wheels[0], target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unavailable(reason: str) -> NoReturn:
    """Skip the test for a wheel that cannot be had, or fail it when UNIQC_STORE_REQUIRE_WHEELS=1."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(f"{reason}; put the wheel in {wheel_cache_dir()} or set {CACHE_ENV}")


# --- loading a release's modules by path ----------------------------------------------------

_loaded: dict[str, ModuleType | WheelUnavailableError] = {}
_archive_modules: dict[str, ModuleType] = {}  # store module name -> that release's archive module
_extract_dir: Path | None = None


def module_name(version: str, part: str = "store") -> str:
    return f"uniqc_release_{version.replace('.', '_')}_{part}"


def _extraction_dir() -> Path:
    global _extract_dir
    if _extract_dir is None:
        _extract_dir = Path(tempfile.mkdtemp(prefix="uniqc_releases_"))
        atexit.register(shutil.rmtree, _extract_dir, True)
    return _extract_dir


def imports_outside_stdlib(source: bytes, filename: str) -> set[str]:
    """Every module ``source`` imports, at its top or inside a function, that is not standard library."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return {name for name in names if name.split(".")[0] not in sys.stdlib_module_names}


@contextlib.contextmanager
def _standing_in_as_uniqcs_store(store: ModuleType) -> Iterator[None]:
    """Let ``from uniqc.backend_adapter.task.store import ...`` find ``store`` for a moment.

    A release's gateway imports its store by that name, at import and inside some methods. Only
    that one key is set (the ``uniqc`` package itself is never imported) and whatever was there
    before is put back.
    """
    before = sys.modules.get(UNIQC_STORE_MODULE)
    sys.modules[UNIQC_STORE_MODULE] = store
    try:
        yield
    finally:
        if before is None:
            del sys.modules[UNIQC_STORE_MODULE]
        else:
            sys.modules[UNIQC_STORE_MODULE] = before


def _exec_from_wheel(wheel: Path, member: str, name: str, allowed_imports: set[str]) -> ModuleType:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(member)
    foreign = imports_outside_stdlib(source, member) - allowed_imports
    if foreign:
        raise RuntimeError(f"{member} of {wheel.name} imports {sorted(foreign)}: it cannot be loaded on its own")
    path = _extraction_dir() / f"{name}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _disarm_default_cache_dir(module: ModuleType) -> None:
    # Each release computes DEFAULT_CACHE_DIR = Path.home()/".uniqc"/"cache" at import, and this
    # module is loaded before tests move HOME. Point it below a regular file, so a TaskStore()
    # without cache_dir fails (NotADirectoryError) instead of writing to the real ~/.uniqc.
    blocker = _extraction_dir() / f"{module.__name__}.no-default-cache"
    blocker.write_text("uniqc_releases: pass cache_dir to the release's TaskStore\n")
    module.DEFAULT_CACHE_DIR = blocker / "cache"


def load_release(version: str) -> ModuleType:
    """The store module of uniqc ``version`` (one module object per process).

    Raises ``WheelUnavailableError`` when the wheel cannot be had (and again, at once, on later
    calls in the same process).
    """
    if version not in RELEASES:
        raise KeyError(f"unknown uniqc release {version!r}; known: {', '.join(RELEASES)}")
    loaded = _loaded.get(version)
    if isinstance(loaded, WheelUnavailableError):
        raise loaded
    if loaded is not None:
        return loaded
    release = RELEASES[version]
    try:
        wheel = ensure_wheel(version)
    except WheelUnavailableError as error:
        _loaded[version] = error
        raise
    store = _exec_from_wheel(wheel, release.store_path, module_name(version), set())
    _disarm_default_cache_dir(store)
    if release.archive_path is not None:
        with _standing_in_as_uniqcs_store(store):
            _archive_modules[store.__name__] = _exec_from_wheel(
                wheel, release.archive_path, module_name(version, "archive_store"), {UNIQC_STORE_MODULE}
            )
    _loaded[version] = store
    return store


@pytest.fixture(scope="session")
def uniqc_release() -> Callable[[str], ModuleType]:
    """Factory: ``uniqc_release("0.1.1")`` is that release's store module.

    Skips the test when the wheel cannot be had, or fails it when UNIQC_STORE_REQUIRE_WHEELS=1.
    Always pass ``cache_dir`` to the module's ``TaskStore``: its default is disabled.
    """

    def get(version: str) -> ModuleType:
        try:
            return load_release(version)
        except WheelUnavailableError as error:
            unavailable(str(error))

    return get


def release_of(module: ModuleType) -> Release:
    for version, release in RELEASES.items():
        if _loaded.get(version) is module:
            return release
    raise ValueError(f"{module.__name__} was not loaded by load_release / the uniqc_release fixture")


def _archive(module: ModuleType, store: Any) -> Any:
    """The release's gateway ArchiveStore, working on ``store`` instead of the default ~/.uniqc file."""
    archive_class = _archive_modules[module.__name__].ArchiveStore
    archive = archive_class.__new__(archive_class)  # its __init__ would open TaskStore() at the default
    archive._store = store
    return archive


# --- reading a file with a release's API ----------------------------------------------------


def _task_record(info: Any) -> dict[str, Any]:
    record: dict[str, Any] = info.to_dict()
    record["status"] = str(getattr(record["status"], "value", record["status"]))
    return record


def read_release_file(module: ModuleType, directory: Path) -> dict[str, dict[str, Any]]:
    """Every record of ``directory/tasks.sqlite``, read through release ``module``'s own API.

    Returns ``{"tasks": {task_id: record}, "archived_tasks": {task_id: record},
    "shards": {uniqc_task_id: [record by shard_index]}, "archived_shards": {...}}``. Records are
    the release's ``TaskInfo.to_dict()`` / ``TaskShard.to_dict()`` (so their keys are that
    release's fields; archived shards also get ``archived_at``). A kind the release has no API
    for is ``{}``. Note that opening the file with the release's TaskStore migrates it to that
    release's schema first, as uniqc does.
    """
    release = release_of(module)
    store = module.TaskStore(cache_dir=directory)
    records: dict[str, dict[str, Any]] = {kind: {} for kind in RECORD_KINDS}
    records["tasks"] = {info.task_id: _task_record(info) for info in store.list()}
    if release.archive_path is not None:
        with _standing_in_as_uniqcs_store(module):  # list_archived imports _row_to_info by that name
            archived = _archive(module, store).list_archived()
        records["archived_tasks"] = {info.task_id: _task_record(info) for info in archived}
    if release.shards:
        with store._tx() as conn:
            parents = [row[0] for row in conn.execute("SELECT DISTINCT uniqc_task_id FROM task_shards")]
        records["shards"] = {parent: [s.to_dict() for s in store.get_shards(parent)] for parent in parents}
        # No release has an API that reads archived shards (only the gateway's restore_task moves
        # them back), so read the rows over the store's own transaction with its own decoder.
        with store._tx() as conn:
            rows = conn.execute("SELECT * FROM archived_task_shards ORDER BY uniqc_task_id, shard_index").fetchall()
        for row in rows:
            shard = {**store._row_to_shard(row).to_dict(), "archived_at": row["archived_at"]}
            records["archived_shards"].setdefault(row["uniqc_task_id"], []).append(shard)
    return records


class _NaN:
    """Equal to every other NaN, so records holding NaN can be compared with ``==``."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NaN)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "NaN"


def canonical(value: Any) -> Any:
    """``value`` with every float NaN replaced by a marker that equals other NaNs (types kept)."""
    if isinstance(value, float) and math.isnan(value):
        return _NaN()
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


# --- writing a file the way a release does --------------------------------------------------


@dataclasses.dataclass
class _Legacy:
    """A task under its platform-issued id, as releases before 0.1.1 saved every task (0.1.1 still can)."""

    task_id: str
    backend: str
    status: str
    shots: int
    result: Any
    metadata: dict[str, Any]
    error: str | None = None  # failure text: error_message (v3+) and metadata (every release)
    archive: bool = False


# Ids in each platform's own format: OriginQ MD5 hex, dummy uuid, IBM job id, Quark.
_LEGACY_TASKS = [
    _Legacy("5F0C9A7E2B8D4C1F9E3A6B2D7C4F8E1A", "originq:WK_C180", "success", 1000,
            {"00": 498, "11": 502}, {"circuit": "bell", "note": "贝尔态 — ñ"}),
    _Legacy("3b9e8c62-4a1d-4e57-9f0b-2c7d5a8e1f36", "dummy", "success", 1024,
            [{"0": 512, "1": 512}, {"0": 260, "1": 764}], {"batch_size": 2, "labels": ["α", "β"]}),
    _Legacy("d1kq7m2p9x3s000g8h4g", "ibm:ibm_brisbane", "success", 4000,
            {"counts": {"0": 1987, "1": 2013}, "expectation": math.nan, "unit": "µs"},
            {"qubits": [0, 1], "observable": "Z⊗Z", "calibrated": True, "depth": None}),
    _Legacy("QK-20260502-000117", "quark:Baihua", "running", 2000, None, {"circuit_language": "OriginIR"}),
    _Legacy("8E41D0B7C3A2954F6D1E0C9B8A7F6E5D", "originq:WK_C180", "pending", 500, None, {"priority": 1}),
    _Legacy("C07B2E19F4D8A3561B0E9D7C2A4F8E36", "originq:WK_C180", "failed", 1000, None,
            {"circuit": "ghz", "阶段": "提交"}, error="submission failed: 芯片维护中 (chip under maintenance)"),
    _Legacy("d1kq8a0c4m5s000h2j9g", "ibm:ibm_kyiv", "cancelled", 100, None, {}),
    _Legacy("A8F3C6D1E9B2074F5A3C8E1D6B9F2A47", "originq:WK_C180", "success", 1000,
            {"000": 480, "111": 520}, {"circuit": "ghz", "experiment": "实验 7"}, archive=True),
    _Legacy("b2d17e4a-9c3f-4b08-a6e5-1f2d3c4b5a69", "dummy", "failed", 100, None, {"shots_requested": 100},
            error="simulation failed: RuntimeError('qubit 7 out of range')", archive=True),
]


def _timestamp(release: Release, minute: int) -> str:
    # Times as each release stamps them: 0.0.7 local and naive, later releases UTC with an offset.
    stamp = f"2026-05-02T08:{minute:02d}:00.{minute * 1111:06d}"
    return stamp if release.version == "0.0.7" else stamp + "+00:00"


def _fail(info: Any, release: Release, error: str) -> None:
    # As the releases' task managers record a failure: in metadata always, in error_message from v3.
    info.metadata = {**info.metadata, "failure_error": error}
    if release.error_message:
        info.error_message = error


def _expected_archived(store_records: dict[str, Any], archived_at: dict[str, str], ids: list[str]) -> dict[str, Any]:
    return {task_id: {**store_records.pop(task_id), "archived_at": archived_at[task_id]} for task_id in ids}


def write_release_file(module: ModuleType, directory: Path, version: str) -> dict[str, Any]:
    """Write ``directory/tasks.sqlite`` with release ``module``'s own API, as that release would.

    Every release: tasks under legacy platform ids in every status, with dict, list and NaN
    results, non-ASCII metadata, error_message (0.0.11+) and two archived tasks (0.0.10+, moved by
    the release's own gateway ``ArchiveStore.archive_task``). 0.1.1 also: ``uqt_`` tasks with one
    shard; with a native-batch shard (list result) and a single one; with a failed shard; still
    running; and one archived with its two shards (archived_task_shards).

    Returns ``{"version", "user_version", "path", "records"}``; ``records`` has the shape
    ``read_release_file`` returns (update_time as the store stamped it; archived_at as the
    archive wrote it), so ``canonical(read_release_file(...)) == canonical(records)``.
    """
    release = RELEASES[version]
    if release_of(module) is not release:
        raise ValueError(f"{module.__name__} is not the store module of uniqc {version}")
    store = module.TaskStore(cache_dir=directory)
    records: dict[str, dict[str, Any]] = {kind: {} for kind in RECORD_KINDS}
    to_archive: list[str] = []

    for minute, legacy in enumerate(_LEGACY_TASKS):
        info = module.TaskInfo(
            task_id=legacy.task_id, backend=legacy.backend, status="pending", shots=legacy.shots,
            submit_time=_timestamp(release, minute), metadata=legacy.metadata,
        )
        store.save(info)  # submitted ...
        if legacy.status != "pending":
            info.status, info.result = legacy.status, legacy.result
            if legacy.error is not None:
                _fail(info, release, legacy.error)
            store.save(info)  # ... then polled: an update, which keeps submit_time
        records["tasks"][info.task_id] = _task_record(info)
        if legacy.archive and release.archive_path is not None:
            to_archive.append(info.task_id)

    if release.shards:
        _write_sharded_tasks(module, release, store, records, to_archive)

    if to_archive:
        archive = _archive(module, store)
        for task_id in to_archive:
            if not archive.archive_task(task_id):
                raise RuntimeError(f"uniqc {version}'s archive_task({task_id!r}) found no task")
        archived_at = dict(_rows(directory, "SELECT task_id, archived_at FROM archived_tasks"))
        records["archived_tasks"] = _expected_archived(records["tasks"], archived_at, to_archive)
        for parent in [p for p in to_archive if p in records["shards"]]:
            records["archived_shards"][parent] = [
                {**shard, "archived_at": archived_at[parent]} for shard in records["shards"].pop(parent)
            ]

    return {"version": version, "user_version": release.user_version, "path": directory / DB_FILENAME,
            "records": records}


def _write_sharded_tasks(
    module: ModuleType, release: Release, store: Any, records: dict[str, dict[str, Any]], to_archive: list[str]
) -> None:
    """0.1.1's own flow: parent saved pending, shards saved running, then results and the aggregate."""

    def uqt(n: int) -> str:
        task_id = f"uqt_{n:032x}"
        assert module.is_uniqc_task_id(task_id)
        return task_id

    # (task id, backend, shots, metadata, shards as (platform id, circuits, final status, result, error))
    tasks = [
        (uqt(0xA1), "originq:WK_C180", 1000, {"circuit": "bell", "标签": "单分片"}, [
            ("6D2E9F0A1B3C4D5E6F708192A3B4C5D6", 1, "success", {"00": 505, "11": 495}, None),
        ]),
        (uqt(0xB2), "quark:Baihua", 2000, {"batch_size": 3, "circuit_language": "OriginIR"}, [
            ("QK-20260502-000201", 2, "success", [{"00": 1001, "11": 999}, {"01": 990, "10": 1010}], None),
            ("QK-20260502-000202", 1, "success", {"0": 1000, "1": 1000, "fidelity": math.nan}, None),
        ]),
        (uqt(0xE5), "quark:Baihua", 1000, {"batch_size": 2}, [
            ("QK-20260502-000203", 1, "success", {"0": 498, "1": 502}, None),
            ("QK-20260502-000204", 1, "failed", None, "超时: platform timed out after 3600 s"),
        ]),
        (uqt(0xC3), "dummy", 100, {"batch_size": 2}, [
            ("0f6c1d2e-3a4b-4c5d-8e9f-a0b1c2d3e4f5", 1, "running", None, None),
            ("1a7d2e3f-4b5c-4d6e-9f0a-b1c2d3e4f5a6", 1, "running", None, None),
        ]),
        (uqt(0xD4), "originq:WK_C180", 1000, {"batch_size": 2, "experiment": "实验 8"}, [
            ("7E3FA01B2C4D5E6F8091A2B3C4D5E6F7", 1, "success", {"0": 700, "1": 300}, None),
            ("8F40B12C3D5E6F7091A2B3C4D5E6F708", 1, "success", {"0": 310, "1": 690}, None),
        ]),
    ]
    for minute, (task_id, backend, shots, metadata, shard_specs) in enumerate(tasks, start=30):
        info = module.TaskInfo(task_id=task_id, backend=backend, status="pending", shots=shots,
                               submit_time=_timestamp(release, minute), metadata=metadata)
        store.save(info)
        shards = []
        offset = 0
        for index, (platform_id, circuits, _, _, _) in enumerate(shard_specs):
            shard = module.TaskShard(uniqc_task_id=task_id, shard_index=index, platform_task_id=platform_id,
                                     backend=backend, circuit_count=circuits, sub_index_offset=offset,
                                     status="running", submit_time=_timestamp(release, minute))
            store.save_shard(shard)
            shards.append(shard)
            offset += circuits
        info.status = "running"
        store.save(info)
        for shard, (_, _, status, result, error) in zip(shards, shard_specs, strict=True):
            if status != "running":
                shard.status, shard.result, shard.error_message = status, result, error
                store.save_shard(shard)
        info.status = module.TaskStore.aggregate_status(shards)
        if info.status == "success":
            # One result per circuit, in submission order; a lone single-circuit shard's is the result.
            per_circuit: list[Any] = []
            for shard in shards:
                per_circuit.extend(shard.result if shard.circuit_count > 1 else [shard.result])
            info.result = per_circuit[0] if len(per_circuit) == 1 else per_circuit
        elif info.status == "failed":
            info.error_message = "; ".join(
                f"shard {shard.shard_index}: {shard.error_message}" for shard in shards if shard.status == "failed"
            )
        store.save(info)
        records["tasks"][task_id] = _task_record(info)
        records["shards"][task_id] = [shard.to_dict() for shard in shards]
    to_archive.append(uqt(0xD4))


def _rows(directory: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(directory / DB_FILENAME)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
