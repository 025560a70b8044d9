#!/usr/bin/env python
"""Benchmark how long a writer in another process waits while ``archive_completed`` /
``clear_completed(older_than=...)`` sweep a large store, per batch size.

Usage::

    python benchmarks/bench_lean.py                      # 200,000 finished tasks, batch sizes 100 ... 100,000
    python benchmarks/bench_lean.py --tasks 50000 --batches 500
    python benchmarks/bench_lean.py --json out.json

One SQLite store is built with ``--tasks`` finished tasks (a quarter with one shard, a result on
each) whose ``update_time`` is 60 days ago, plus 1,000 running ones; every run sweeps its own copy
of that file. For each batch size, a writer process saves new tasks in a loop (``TaskStore.save``,
one transaction each, as a web gateway does) while this process runs
``archive_completed(older_than=30 days, batch_size=N)``; the writer times every save. Reported per
run: the sweep's wall time, and the writer's median, p99 and longest save during the sweep (and
alone, before it, for reference). ``clear_completed(older_than=...)`` is run once, at the default
batch size. Every save is durable (WAL, ``synchronous=FULL``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uniqc_store import TaskInfo, TaskShard, TaskStore  # noqa: E402
from uniqc_store.sweep import SWEEP_BATCH  # noqa: E402

# The writer: saves until its stdin closes, printing "start" first, then one JSON list of
# (start time, seconds) pairs, monotonic clock.
WRITER = """
import json, sys, threading, time
sys.path.insert(0, sys.argv[2])
from uniqc_store import TaskInfo, TaskStore
store = TaskStore(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
samples = []
i = 0
print("start", flush=True)
while not stop.is_set():
    began = time.monotonic()
    store.save(TaskInfo(f"writer-{i:07d}", "dummy", status="running"))
    samples.append((began, time.monotonic() - began))
    i += 1
    time.sleep(0.002)
print(json.dumps(samples), flush=True)
"""


def build(directory: Path, tasks: int) -> None:
    old = (datetime.now(timezone.utc) - timedelta(days=60)).isoformat()
    statuses = ("success", "failed", "cancelled")
    with TaskStore(directory) as store:
        store.save_many(
            TaskInfo(f"uqt_{i:032x}", "originq:wuyuan", status=statuses[i % 3], result={"00": i, "11": 7})
            for i in range(tasks)
        )
        store.save_many(TaskInfo(f"run-{i:05d}", "dummy", status="running") for i in range(1000))
    conn = sqlite3.connect(directory / "tasks.sqlite", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE tasks SET update_time = ? WHERE status != 'running'", (old,))
        conn.execute("COMMIT")
    finally:
        conn.close()
    with TaskStore(directory) as store:
        for i in range(0, tasks, 4):
            store.save_shard(TaskShard(f"uqt_{i:032x}", 0, f"job-{i}", "originq:wuyuan", status="success"))
    conn = sqlite3.connect(directory / "tasks.sqlite", isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(template: Path, work: Path, batch: int | None, operation: str) -> dict[str, object]:
    """Sweep a copy of ``template`` with a writer running beside it."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(mode=0o700)
    shutil.copy(template / "tasks.sqlite", work / "tasks.sqlite")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(work), str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "start\n"
    time.sleep(1.0)  # the writer alone, for reference
    with TaskStore(work) as store:
        began = time.monotonic()
        kwargs = {} if batch is None else {"batch_size": batch}
        if operation == "archive":
            result = store.archive_completed(older_than=timedelta(days=30), **kwargs)
        else:
            result = store.clear_completed(older_than=timedelta(days=30), **kwargs)
        ended = time.monotonic()
    time.sleep(0.3)
    out, _ = writer.communicate("", timeout=120)
    samples = json.loads(out.splitlines()[-1])
    alone = [seconds for start, seconds in samples if start + seconds < began]
    during = [seconds for start, seconds in samples if start < ended and start + seconds > began]
    return {
        "operation": operation,
        "batch_size": batch or SWEEP_BATCH,
        "tasks": result.tasks,
        "sweep_s": round(ended - began, 3),
        "saves_during": len(during),
        "alone_p99_ms": round(percentile(alone, 0.99) * 1000, 1),
        "alone_max_ms": round(max(alone) * 1000, 1),
        "median_ms": round(statistics.median(during) * 1000, 1),
        "p99_ms": round(percentile(during, 0.99) * 1000, 1),
        "max_ms": round(max(during) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--batches", default="100,500,2000,10000,100000", help="comma-separated batch sizes")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args()
    sizes = [int(size) for size in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        began = time.monotonic()
        build(template, args.tasks)
        print(f"built {args.tasks:,} finished tasks in {time.monotonic() - began:.1f} s", flush=True)
        rows = [run(template, Path(tmp) / "work", size, "archive") for size in sizes]
        rows.append(run(template, Path(tmp) / "work", None, "clear"))
    header = (
        f"{'operation':<10}{'batch':>8}{'tasks':>9}{'sweep s':>9}{'saves':>7}"
        f"{'alone p99':>11}{'median':>9}{'p99':>9}{'max':>9}   (writer's save, ms)"
    )
    print(header)
    for row in rows:
        print(
            f"{row['operation']:<10}{row['batch_size']:>8,}{row['tasks']:>9,}{row['sweep_s']:>9}{row['saves_during']:>7}"
            f"{row['alone_p99_ms']:>11}{row['median_ms']:>9}{row['p99_ms']:>9}{row['max_ms']:>9}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
