#!/usr/bin/env python
"""Benchmark the upgrade of a large uniqc v1 file to schema v5: uniqc_store against uniqc itself.

Usage::

    python benchmarks/bench_upgrade.py                 # 200,000 and 1,000,000 legacy tasks
    python benchmarks/bench_upgrade.py --rows 200000   # one size only
    python benchmarks/bench_upgrade.py --json out.json

One v1 file is written per size with plain ``sqlite3`` (uniqc's v1 layout, ``user_version`` 1,
every task under a legacy platform id, a quarter of them with a result). Each contender upgrades
its own byte-identical copy in a child process of its own, which reports wall time and peak RSS
growth (``ru_maxrss`` at the end minus the RSS after imports, before the upgrade):

* ``project``: ``uniqc_store.TaskStore(cache_dir)``: adoption at v1, then revisions 0002-0005
  (0005 moves every legacy row to a ``uqt_`` parent and a shard, in batches).
* ``uniqc``: ``TaskStore(cache_dir)`` of the released unified-quantum 0.1.1 store module, loaded
  from its wheel by path (``tests/uniqc_releases.py``; the wheel is downloaded into that module's
  cache if missing). It runs uniqc's own steps v2-v5.

Targets (the issue's): the project takes no longer than uniqc, and its peak RSS growth stays
within 100 MB whatever the size. Exits 1 when a target is missed. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMORY_TARGET_MB = 100.0

V1_DDL = (
    "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, backend TEXT NOT NULL, status TEXT NOT NULL, "
    "shots INTEGER NOT NULL DEFAULT 0, submit_time TEXT NOT NULL, update_time TEXT NOT NULL, "
    "result_json TEXT, metadata_json TEXT NOT NULL DEFAULT '{}')",
    "CREATE INDEX tasks_backend_idx ON tasks(backend)",
    "CREATE INDEX tasks_status_idx ON tasks(status)",
    "CREATE INDEX tasks_submit_time_idx ON tasks(submit_time)",
)
STATUSES = ("pending", "running", "success", "failed", "cancelled")


def write_v1_file(path: Path, rows: int) -> None:
    """A v1 file as uniqc 0.0.7 leaves it, with ``rows`` legacy tasks."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for ddl in V1_DDL:
        conn.execute(ddl)
    batch = 10_000
    for start in range(0, rows, batch):
        conn.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    f"{n:032x}",
                    f"originq:backend-{n % 7}",
                    STATUSES[n % 5],
                    1000 + n % 1000,
                    f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:00:00+00:00",
                    f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:30:00+00:00",
                    json.dumps({"00": n % 500, "11": 500 - n % 500}) if n % 4 == 0 else None,
                    json.dumps({"circuit": "bell", "n": n, "label": "ñ"}, ensure_ascii=False),
                )
                for n in range(start, min(rows, start + batch))
            ),
        )
    conn.execute("PRAGMA application_id = 1431193923")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


# The child: imports, notes its RSS, upgrades, reports.
CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

contender, directory, root = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if contender == "project":
    from uniqc_store import TaskStore
    open_store = lambda: TaskStore(directory).close()
else:
    sys.path.insert(0, os.path.join(root, "tests"))
    from uniqc_releases import load_release
    module = load_release("0.1.1")
    open_store = lambda: module.TaskStore(cache_dir=directory)
before = rss_mb()
started = time.perf_counter()
open_store()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rss_growth_mb": peak - before}))
"""


def run_contender(contender: str, directory: Path, home: Path) -> dict[str, float]:
    env = {**os.environ, "HOME": str(home)}
    env.pop("UNIQC_STORE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, contender, str(directory), str(ROOT)],
        capture_output=True, text=True, env=env, timeout=3600, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_upgraded(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tasks = conn.execute("SELECT count(*) FROM tasks WHERE task_id LIKE 'uqt%'").fetchone()[0]
        shards = conn.execute("SELECT count(*) FROM task_shards").fetchone()[0]
    finally:
        conn.close()
    if (version, tasks, shards) != (5, rows, rows):
        raise SystemExit(
            f"{path}: user_version {version}, {tasks} uqt tasks, {shards} shards; expected 5, {rows}, {rows}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="legacy tasks (repeatable; default 200000 and 1000000)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--dir", metavar="DIR", help="create the files in a new directory inside DIR")
    args = parser.parse_args()
    sizes = args.rows or [200_000, 1_000_000]
    work = Path(tempfile.mkdtemp(prefix="uniqc-upgrade-bench-", dir=args.dir))
    figures = []
    ok = True
    try:
        home = work / "home"
        home.mkdir()
        print(f"{'rows':>10}  {'contender':<8}  {'seconds':>8}  {'peak RSS growth':>16}")
        for rows in sizes:
            source = work / f"v1-{rows}.sqlite"
            started = time.perf_counter()
            write_v1_file(source, rows)
            print(f"(wrote {rows:,} legacy tasks in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
            results = {}
            for contender in ("project", "uniqc"):
                directory = work / f"{contender}-{rows}"
                directory.mkdir()
                shutil.copyfile(source, directory / "tasks.sqlite")
                results[contender] = run_contender(contender, directory, home)
                check_upgraded(directory / "tasks.sqlite", rows)
                shutil.rmtree(directory)
                r = results[contender]
                print(f"{rows:>10,}  {contender:<8}  {r['seconds']:>8.2f}  {r['rss_growth_mb']:>13.1f} MB")
            ratio = results["project"]["seconds"] / results["uniqc"]["seconds"]
            memory = results["project"]["rss_growth_mb"]
            time_ok, memory_ok = ratio <= 1.0, memory <= MEMORY_TARGET_MB
            ok = ok and time_ok and memory_ok
            print(
                f"{rows:>10,}  project/uniqc time {ratio:.2f}x (target <= 1.00x: {'met' if time_ok else 'MISSED'}); "
                f"project peak RSS growth {memory:.1f} MB (target <= {MEMORY_TARGET_MB:.0f} MB: "
                f"{'met' if memory_ok else 'MISSED'})"
            )
            figures.append({"rows": rows, **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()}})
            source.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": figures, "ru_maxrss_unit": "KiB"}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
