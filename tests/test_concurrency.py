"""Concurrency: threads sharing a store, processes racing the first open and the writes, a writer
killed mid-stream, and clear_all under load. Real databases only (see conftest.py).

Child processes use the ``spawn`` start method and run the top-level functions of
``concurrency_workers.py``. The process races share one pool of pre-imported workers (importing
SQLAlchemy and Alembic costs about a second of CPU per process): each race sends a job to every
worker, and all of them are released together by a barrier the test process takes part in.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from uniqc_store import APPLICATION_ID, CURRENT_SCHEMA_VERSION, HEAD_REVISION, TaskInfo, TaskStore
from uniqc_store.schema import STORE_HEAD, STORE_REVISIONS

import concurrency_workers as workers
from uniqc_files import header, rows_of, v1_rows_through_legacy_ids, write_uniqc_v1_file

pytestmark = pytest.mark.slow

SPAWN = multiprocessing.get_context("spawn")
PROCESSES = 8
#: Longest a whole process race may take before the test fails instead of hanging.
RACE_TIMEOUT_S = 120.0
#: Longest a thread of an in-process test may take.
THREAD_TIMEOUT_S = 120.0
STATUSES = ["pending", "running", "success", "failed", "cancelled"]


# -- helpers ------------------------------------------------------------------------------------


class WorkerPool:
    """``PROCESSES`` warm spawn workers (see ``concurrency_workers.serve``) and their barrier."""

    def __init__(self, home: Path) -> None:
        self.barrier = SPAWN.Barrier(PROCESSES + 1)  # the workers and the test process
        self.processes: list[Any] = []
        self.conns: list[Any] = []
        self.broken: str | None = None
        for n in range(PROCESSES):
            ours, theirs = SPAWN.Pipe()
            process = SPAWN.Process(
                target=workers.serve,
                args=(str(home), theirs, self.barrier),
                name=f"uniqc-store-worker-{n}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)

    def race(self, job: str, args_of: Callable[[int], tuple], timeout: float = RACE_TIMEOUT_S) -> list[Any]:
        """Run ``job`` in every worker (worker ``n`` gets ``args_of(n)``), all released at once.

        Returns the workers' results in worker order; fails the test on any worker error, and
        on a timeout (after which the pool is discarded).
        """
        assert self.broken is None, self.broken
        for n, conn in enumerate(self.conns):
            conn.send((job, args_of(n)))
        deadline = time.monotonic() + timeout
        try:
            self.barrier.wait(workers.BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            self.broken = f"{job}: the workers did not all reach the starting barrier"
        replies = []
        for n, conn in enumerate(self.conns):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.broken = f"{job}: worker {n} gave no answer within {timeout} s"
                pytest.fail(self.broken)
            try:
                replies.append(conn.recv())
            except EOFError:
                self.broken = f"{job}: worker {n} died (exit code {self.processes[n].exitcode})"
                pytest.fail(self.broken)
        errors = [value for status, value in replies if status != "ok"]
        assert not errors, "\n".join(errors)
        assert self.broken is None, self.broken
        return [value for _, value in replies]

    def close(self) -> None:
        """Stop the workers: politely if they are idle, at once if a race left them stuck."""
        if self.broken is None:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.send(None)
            deadline = time.monotonic() + 20
            for process in self.processes:
                process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(10)
        for conn in self.conns:
            conn.close()


class PoolHolder:
    """Hands out the module's worker pool, replacing one that a failed race left unusable."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.pool: WorkerPool | None = None

    def get(self) -> WorkerPool:
        if self.pool is not None and self.pool.broken is not None:
            self.pool.close()
            self.pool = None
        if self.pool is None:
            self.pool = WorkerPool(self.home)
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


@pytest.fixture(scope="module")
def pool_holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolHolder]:
    holder = PoolHolder(tmp_path_factory.mktemp("worker-home"))
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def pool(pool_holder: PoolHolder) -> WorkerPool:
    return pool_holder.get()


def sql_rows(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` read over a plain SQLAlchemy connection (no uniqc_store code)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path:
    assert url.startswith("sqlite:///"), url
    return Path(url[len("sqlite:///"):])


def integrity_check(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def sqlite_task_ids(path: Path) -> set[str]:
    """The task ids in the file now at ``path``, read with plain sqlite3 (a fresh connection)."""
    conn = sqlite3.connect(path, timeout=60)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchall():
            return set()  # a file with no tasks table holds no task
        return {task_id for (task_id,) in conn.execute("SELECT task_id FROM tasks")}
    finally:
        conn.close()


def run_threads(targets: list[Callable[[], None]], timeout: float = THREAD_TIMEOUT_S) -> list[str]:
    """Run each target in a thread; return the tracebacks of those that raised. Fails on a hang."""
    errors: list[str] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException:  # noqa: BLE001 - collected and asserted on by the test's thread
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {timeout} s: {hung}; errors so far: {errors}"
    return errors


def total_seen(replies: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for reply in replies:
        total.update(reply["seen"])
    keys = ("create_version_table", "insert_version", "create_tasks_table", "running_upgrade")
    return {key: total[key] for key in keys}


# -- 1. threads sharing one store ------------------------------------------------------------------

THREADS = 8
OPS_PER_THREAD = 200
IDS_PER_THREAD = 25


def test_threads_sharing_one_store_lose_no_save_and_always_read_their_own_last_write(db_url: str) -> None:
    expected: dict[int, dict[str, TaskInfo]] = {n: {} for n in range(THREADS)}
    start = threading.Barrier(THREADS)

    with TaskStore(url=db_url) as store:

        def work(n: int) -> None:
            backend = f"thread-{n}"
            mine = expected[n]  # only this thread writes rows on `backend`
            saves = 0
            last: TaskInfo | None = None
            start.wait(30)
            for i in range(OPS_PER_THREAD):
                kind = i % 4
                if kind in (0, 1) or last is None:
                    task_id = f"t{n}-{saves % IDS_PER_THREAD}"
                    previous = mine.get(task_id)
                    last = TaskInfo(
                        task_id=task_id,
                        backend=backend,
                        status=STATUSES[i % len(STATUSES)],
                        shots=i,
                        result={"op": i} if i % 3 else None,
                        metadata={"thread": n, "op": i},
                    )
                    if previous is not None:  # submit_time keeps its first value on update
                        last.submit_time = previous.submit_time
                    store.save(last)
                    mine[task_id] = last
                    saves += 1
                elif kind == 2:
                    assert store.get(last.task_id) == last
                else:
                    assert {t.task_id: t for t in store.list(backend=backend)} == mine
                    store.list(limit=10)
                    store.count()

        errors = run_threads([lambda n=n: work(n) for n in range(THREADS)])
        assert not errors, "\n".join(errors)

        everything = {task_id: task for mine in expected.values() for task_id, task in mine.items()}
        assert len(everything) == THREADS * IDS_PER_THREAD
        assert store.count() == len(everything)
        for task_id, task in everything.items():
            assert store.get(task_id) == task
    with TaskStore(url=db_url) as fresh:
        assert {t.task_id: t for t in fresh.list()} == everything


# -- 2. processes racing the first open ------------------------------------------------------------

SAVES_PER_RACER = 5
#: The issue's load: 8 processes x 300 saves, racing the first migration of a new database.
SAVES_RACING_FIRST_MIGRATION = 300


def check_race_saves(url: str, replies: list[dict[str, Any]], saves: int = SAVES_PER_RACER) -> set[str]:
    """Every racer reached head, and every one of its ``saves`` acknowledged saves is stored."""
    assert [reply["revision"] for reply in replies] == [HEAD_REVISION] * PROCESSES
    saved = {task_id for reply in replies for task_id in reply["saved"]}
    assert len(saved) == PROCESSES * saves
    with TaskStore(url=url) as store:
        assert store.schema_info()["revision"] == HEAD_REVISION
        for worker in range(PROCESSES):
            for i in range(saves):
                task = store.get(f"race-{worker}-{i}")
                assert task is not None and (task.backend, task.shots) == (f"worker-{worker}", i)
    return saved


def test_processes_racing_the_first_open_of_a_new_database_migrate_it_exactly_once(
    db_url: str, pool: WorkerPool
) -> None:
    replies = pool.race("first_open", lambda n: (db_url, n, SAVES_RACING_FIRST_MIGRATION))

    # Each migrating process runs these statements and logs "Running upgrade" once per revision:
    # two would double them.
    assert total_seen(replies) == {
        "create_version_table": 1,
        "insert_version": 1,
        "create_tasks_table": 1,
        "running_upgrade": CURRENT_SCHEMA_VERSION + len(STORE_REVISIONS),  # with the library's own
    }
    assert sql_rows(db_url, "SELECT version_num FROM uniqc_store_version") == [(STORE_HEAD,)]
    saved = check_race_saves(db_url, replies, SAVES_RACING_FIRST_MIGRATION)
    assert {task_id for (task_id,) in sql_rows(db_url, "SELECT task_id FROM tasks")} == saved
    if db_url.startswith("sqlite"):
        path = sqlite_path(db_url)
        assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
        assert sql_rows(db_url, "PRAGMA journal_mode") == [("wal",)]
        assert integrity_check(path) == [("ok",)]


def test_processes_racing_the_first_open_of_a_uniqc_v1_file_adopt_it_exactly_once(
    tmp_path: Path, pool: WorkerPool
) -> None:
    path = tmp_path / "cache" / "tasks.sqlite"
    original = write_uniqc_v1_file(path, rows=6)
    url = f"sqlite:///{path}"

    replies = pool.race("first_open", lambda n: (url, n, SAVES_PER_RACER))

    # Adopting stamps the file at its own version: the version table is made and filled once,
    # revision 0001 does not run (the tasks table is uniqc's, kept as it is), and every later
    # revision runs once.
    assert total_seen(replies) == {
        "create_version_table": 1,
        "insert_version": 1,
        "create_tasks_table": 0,
        "running_upgrade": CURRENT_SCHEMA_VERSION - 1 + len(STORE_REVISIONS),
    }
    assert sql_rows(url, "SELECT version_num FROM uniqc_store_version") == [(STORE_HEAD,)]
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    saved = check_race_saves(url, replies)
    # uniqc's tasks, once each, under uqt_ ids (schema v5), beside every save of the racers.
    assert v1_rows_through_legacy_ids(path) == sorted(original)
    ids = [row[0] for row in rows_of(path)]
    assert len(ids) == len(original) + len(saved)
    assert {task_id for task_id in ids if not task_id.startswith("uqt_")} == saved
    assert integrity_check(path) == [("ok",)]


# -- 3. processes writing at once --------------------------------------------------------------------

SAVES_PER_WRITER = 300


def test_processes_saving_at_once_lose_no_acknowledged_save(db_url: str, pool: WorkerPool) -> None:
    with TaskStore(url=db_url):  # created and migrated first: this race is about the writes
        pass

    replies = pool.race("save_burst", lambda n: (db_url, n, SAVES_PER_WRITER))

    acknowledged = [task_id for reply in replies for task_id in reply]
    assert len(acknowledged) == len(set(acknowledged)) == PROCESSES * SAVES_PER_WRITER
    with TaskStore(url=db_url) as store:
        assert store.count() == PROCESSES * SAVES_PER_WRITER
        listed = {task.task_id: task for task in store.list()}
        assert set(listed) == set(acknowledged)
        for worker in range(PROCESSES):
            for i in range(SAVES_PER_WRITER):
                task = store.get(f"burst-{worker}-{i}")
                assert task is not None, f"burst-{worker}-{i} was acknowledged but is missing"
                assert task == listed[task.task_id]
                assert (task.backend, task.shots, task.metadata["n"]) == (f"worker-{worker}", i, i)
    if db_url.startswith("sqlite"):
        assert integrity_check(sqlite_path(db_url)) == [("ok",)]


# -- 4. SQLite: a writer killed mid-stream ----------------------------------------------------------

KILL_AFTER = 150


def test_sqlite_writer_killed_mid_stream_loses_no_acknowledged_save(tmp_path: Path) -> None:
    path = tmp_path / "db" / "tasks.sqlite"
    url = f"sqlite:///{path}"
    home = tmp_path / "child-home"
    home.mkdir()
    acks, writer_end = SPAWN.Pipe(duplex=False)
    writer = SPAWN.Process(
        target=workers.write_until_killed, args=(str(home), url, writer_end, 1_000_000), daemon=True
    )
    writer.start()
    writer_end.close()
    acknowledged: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while len(acknowledged) < KILL_AFTER:
            assert acks.poll(max(0.0, deadline - time.monotonic())), "the writer stopped acknowledging saves"
            try:
                kind, task_id = acks.recv()
            except EOFError:
                writer.join(10)
                pytest.fail(f"the writer died on its own (exit code {writer.exitcode}) after {len(acknowledged)} saves")
            assert kind != "done", "the writer finished before it could be killed"
            if kind == "saved":
                acknowledged.append(task_id)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(30)
        assert writer.exitcode == -signal.SIGKILL
        # Acknowledgements already in the pipe when it died count too.
        while acks.poll(10):
            try:
                kind, task_id = acks.recv()
            except EOFError:
                break
            if kind == "saved":
                acknowledged.append(task_id)
    finally:
        if writer.is_alive():
            writer.kill()
            writer.join(10)
        acks.close()

    assert len(acknowledged) >= KILL_AFTER
    # It died with its connection open: the WAL was never checkpointed away by a clean close.
    assert path.with_name(path.name + "-wal").exists()

    with TaskStore(url=url) as store:
        assert store.schema_info()["revision"] == HEAD_REVISION
        for i, task_id in enumerate(acknowledged):
            task = store.get(task_id)
            assert task is not None, f"{task_id} was acknowledged before the kill but is missing"
            assert task.shots == i
        # Saves are sequential: at most the one in flight was committed without being acknowledged.
        stored = {task.task_id for task in store.list()}
        assert set(acknowledged) <= stored <= set(acknowledged) | {f"kill-{len(acknowledged)}"}
        after = TaskInfo(task_id="after-the-crash", backend="b")
        store.save(after)
        assert store.get("after-the-crash") == after
    assert integrity_check(path) == [("ok",)]


# -- 5. SQLite: clear_all while other stores save ---------------------------------------------------

CLEARS = 5
SAVERS = 4
SAVES_BETWEEN_CLEARS = 12


def test_sqlite_clear_all_while_other_stores_save_leaves_no_save_in_a_deleted_file(tmp_path: Path) -> None:
    """What is certain, whatever the interleaving, for each ``clear_all`` number k:

    * a save that started after clear k returned is in the file at the path until clear k+1;
    * a save that returned before clear k was called is gone after it.

    Saves overlapping a clear_all may land on either side, so they are only required not to fail.
    """
    path = tmp_path / "db" / "tasks.sqlite"
    url = f"sqlite:///{path}"
    # Counters read by the savers; plain ints, written only by the clearing thread.
    progress = {"started": 0, "returned": 0}
    # (task_id, clears returned before the save was called, clears started once it had returned)
    acks: list[tuple[str, int, int]] = []
    stop = threading.Event()
    reads = Counter()

    def save_loop(n: int, store_per_save: bool) -> None:
        store = None if store_per_save else TaskStore(url=url)
        try:
            i = 0
            while not stop.is_set():
                task = TaskInfo(task_id=f"s{n}-{i}", backend=f"saver-{n}", shots=i)
                before = progress["returned"]
                if store is None:  # a new store per call, as a web gateway does per request
                    with TaskStore(url=url) as own:
                        own.save(task)
                else:
                    store.save(task)
                acks.append((task.task_id, before, progress["started"]))
                i += 1
        finally:
            if store is not None:
                store.close()

    def read_loop() -> None:
        with TaskStore(url=url) as store:
            while not stop.is_set():
                store.list(limit=5)
                store.get("s0-0")
                store.count()
                reads["done"] += 1

    def saved_since(generation: int) -> list[str]:
        return [task_id for task_id, before, _ in list(acks) if before == generation]

    def wait_for_saves(generation: int) -> None:
        deadline = time.monotonic() + 60
        while len(saved_since(generation)) < SAVES_BETWEEN_CLEARS:
            assert not stop.is_set(), "another thread failed (see its error)"
            assert time.monotonic() < deadline, f"no saves went through after clear_all #{generation}"
            time.sleep(0.005)

    def clear_loop() -> None:
        with TaskStore(url=url) as clearer:
            for k in range(1, CLEARS + 1):
                wait_for_saves(k - 1)
                # Every save begun after the previous clear returned and already acknowledged is
                # in the file now at the path (a fresh connection opens it by name).
                settled = set(saved_since(k - 1))
                missing = settled - sqlite_task_ids(path)
                assert not missing, f"saves acknowledged after clear_all #{k - 1} went elsewhere: {sorted(missing)[:5]}"
                progress["started"] = k
                clearer.clear_all()
                progress["returned"] = k
            wait_for_saves(CLEARS)
        stop.set()

    def stopping(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            finally:
                stop.set()  # one failure ends the test instead of leaving the others running

        return run

    targets = [stopping(lambda n=n: save_loop(n, store_per_save=n == 0)) for n in range(SAVERS)]
    targets += [stopping(read_loop), stopping(clear_loop)]
    errors = run_threads(targets)
    assert not errors, "\n".join(errors)
    assert reads["done"] > 0

    final = sqlite_task_ids(path)
    after_last = {task_id for task_id, before, _ in acks if before == CLEARS}
    assert len(after_last) >= SAVES_BETWEEN_CLEARS
    assert after_last <= final, f"saves made after the last clear_all are missing: {sorted(after_last - final)[:5]}"
    before_last = {task_id for task_id, _, started in acks if started < CLEARS}
    assert not (before_last & final), (
        f"saves finished before the last clear_all survived it: {sorted(before_last & final)[:5]}"
    )

    # The store still works, on a fully migrated file.
    with TaskStore(url=url) as store:
        assert store.schema_info()["revision"] == HEAD_REVISION
        assert store.count() == len(final)
        store.save(TaskInfo(task_id="after", backend="b"))
        assert store.get("after") is not None
    assert header(path) == (APPLICATION_ID, CURRENT_SCHEMA_VERSION)
    assert integrity_check(path) == [("ok",)]
