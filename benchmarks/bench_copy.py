#!/usr/bin/env python
"""Benchmark ``copy_store`` (and export/import) on a large store: SQLite → PostgreSQL → MariaDB →
SQLite, then export → import back into SQLite.

Usage::

    python benchmarks/bench_copy.py                    # 100,000 tasks
    python benchmarks/bench_copy.py --tasks 1000000    # the memory bound at 1M tasks

The servers come from ``UNIQC_STORE_TEST_POSTGRES_URL`` and ``UNIQC_STORE_TEST_MYSQL_URL`` (as the
tests use them); the script creates a database of its own on each and drops it at the end. The
SQLite files go in a temporary directory, deleted at the end; HOME points there too.

The store: ``--tasks`` tasks, a quarter of them sharing one ``submit_time`` (tie order), small
results (one in 50 with ``NaN``), unicode metadata; one task in 5 has 2 shards; one in 20 is
archived with its shards. It is built by ``import_records`` (one transaction).

Each leg runs in a fresh process: its time is wall time of the call, its memory the growth of
peak RSS (``ru_maxrss``) over the RSS just before the call, with both stores open. At the end the
last SQLite file is compared with the first, record by record in insertion order (an export of
each, hashed): records, times and tie order must be identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO, "uniqc_store")) and _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # benchmark this checkout, installed or not

SERVERS = {"postgresql": "UNIQC_STORE_TEST_POSTGRES_URL", "mysql": "UNIQC_STORE_TEST_MYSQL_URL"}
TIME = "2026-03-01T12:00:00+00:00"


def rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def records(tasks: int) -> Iterator[bytes]:
    """The lines of an export of the benchmark's store."""
    yield b'{"format": "uniqc-store-export", "version": 1}\n'
    archived = set(range(0, tasks, 20))

    def task(i: int) -> dict[str, Any]:
        return {
            "task_id": f"uqt_{i:032x}",
            "backend": "originq:wuyuan" if i % 3 else "dummy",
            "status": "success" if i % 2 else "running",
            "result": {"00": i % 1000, "11": 1000 - i % 1000, **({"p": float("nan")} if i % 50 == 0 else {})},
            "shots": 1000,
            "submit_time": TIME if i % 4 == 0 else f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00+00:00",
            "update_time": f"2026-02-01T00:00:{i % 60:02d}+00:00",
            "metadata": {"circuit": "bell", "名前": f"実験 {i}"},
            "error_message": None,
        }

    def shard(i: int, index: int) -> dict[str, Any]:
        return {
            "uniqc_task_id": f"uqt_{i:032x}", "shard_index": index, "platform_task_id": f"P{i}-{index}",
            "backend": "originq:wuyuan", "circuit_count": 1, "sub_index_offset": index, "status": "success",
            "result": [{"0": 1}], "error_message": None, "submit_time": TIME, "update_time": TIME,
        }  # fmt: skip

    counts = dict.fromkeys(("task", "shard", "archived_task", "archived_shard"), 0)

    def line(kind: str, fields: dict[str, Any]) -> bytes:
        counts[kind] += 1
        return (json.dumps({"kind": kind, **fields}, ensure_ascii=False) + "\n").encode()

    for i in range(tasks):
        if i not in archived:
            yield line("task", task(i))
    for i in range(0, tasks, 5):
        if i not in archived:
            for index in range(2):
                yield line("shard", shard(i, index))
    for i in sorted(archived):
        yield line("archived_task", {**task(i), "archived_at": "2026-02-02T00:00:00+00:00"})
    for i in sorted(archived):
        if i % 5 == 0:
            for index in range(2):
                yield line("archived_shard", {**shard(i, index), "archived_at": "2026-02-02T00:00:00+00:00"})
    yield (json.dumps({"kind": "end", "records": sum(counts.values()), **counts}) + "\n").encode()


class _Hash:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def _leg(kind: str, source: str, target: str, queue: Any) -> None:
    """One leg, in a fresh process: copy (or export to a file / import it)."""
    from uniqc_store import TaskStore, copy_store, export_records, import_records

    with TaskStore(url=source) as store_from, TaskStore(url=target) as store_to:
        base = rss_now()
        start = time.perf_counter()
        if kind == "copy":
            report = copy_store(store_from, store_to)
            assert report.complete, report
            moved = sum(table.copied for table in report.tables)
        else:  # export the source to a file, import the file into the target
            path = os.path.join(os.path.dirname(target.removeprefix("sqlite:///")), "export.jsonl")
            with open(path, "wb") as out:
                moved = export_records(store_from, out).total
            writing: list[float] = []  # progress is called only by the pass that holds the write lock

            def progress(done: int, total: int | None) -> None:
                writing.append(time.perf_counter())

            with open(path, "rb") as lines:
                assert import_records(store_to, lines, progress=progress).total == moved
            # from the first batch written (1,000 lines in) to the commit: the write lock's hold
            print(f"  import: write lock held ~{writing[-1] - writing[0]:.1f} s of the import's "
                  f"{writing[-1] - start:.1f} s (export included)", flush=True)
        seconds = time.perf_counter() - start
        queue.put((seconds, max(0, peak_rss() - base), moved))


def run_leg(kind: str, source: str, target: str) -> tuple[float, int, int]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_leg, args=(kind, source, target, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"the {kind} leg failed (exit {process.exitcode})")
    seconds, growth, moved = result
    return seconds, growth, moved


def fingerprint(url: str) -> tuple[str, int]:
    from uniqc_store import TaskStore, export_records

    sink = _Hash()
    with TaskStore(url=url) as store:
        export_records(store, sink)  # type: ignore[arg-type] - a sink with write() is all it needs
    return sink.digest.hexdigest(), sink.size


def server_database(backend: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get(SERVERS[backend])
    if not admin_url:
        raise SystemExit(f"set {SERVERS[backend]} (as for the tests) to run this benchmark")
    admin = make_url(admin_url)
    name = f"uniqc_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}" + (" CHARACTER SET utf8mb4" if backend == "mysql" else "")))

    def drop() -> None:
        with engine.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the store (default 100,000)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="uniqc-bench-copy-")
    os.environ["HOME"] = home
    os.environ.pop("UNIQC_STORE_URL", None)
    drops = []
    try:
        postgres, drop = server_database("postgresql")
        drops.append(drop)
        mysql, drop = server_database("mysql")
        drops.append(drop)
        first = f"sqlite:///{home}/first/tasks.sqlite"
        last = f"sqlite:///{home}/last/tasks.sqlite"
        imported = f"sqlite:///{home}/imported/tasks.sqlite"

        from uniqc_store import TaskStore, import_records

        start = time.perf_counter()
        with TaskStore(url=first) as store:
            built = import_records(store, records(args.tasks))
        print(f"built {built} on SQLite in {time.perf_counter() - start:.1f} s", flush=True)
        print(f"{'leg':<34} {'records':>10} {'time':>9} {'records/s':>10} {'peak RSS growth':>16}")
        legs = [
            ("copy", "SQLite -> PostgreSQL", first, postgres),
            ("copy", "PostgreSQL -> MariaDB", postgres, mysql),
            ("copy", "MariaDB -> SQLite", mysql, last),
            ("export", "SQLite -> export file -> SQLite", last, imported),
        ]
        for kind, name, source, target in legs:
            seconds, growth, moved = run_leg(kind, source, target)
            print(f"{name:<34} {moved:>10,} {seconds:>7.1f} s {moved / seconds:>10,.0f} {growth / 2**20:>13.1f} MB",
                  flush=True)  # fmt: skip
        original, size = fingerprint(first)
        for name, url in (("the copy", last), ("the import", imported)):
            same = fingerprint(url) == (original, size)
            print(f"{name} {'equals' if same else 'DIFFERS FROM'} the first file (records, times and tie order; "
                  f"{size:,} bytes of export compared)")  # fmt: skip
            if not same:
                raise SystemExit(1)
    finally:
        for drop in drops:
            drop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
