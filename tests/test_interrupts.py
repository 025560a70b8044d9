"""Interrupts: a KeyboardInterrupt (Ctrl-C, Jupyter's "interrupt kernel") or a signal handler's
exception may arrive anywhere in a call. Whatever it interrupts, no connection may go back to
the pool inside a transaction (it would keep the file locked for every process), the stored
data is either the old record or the new one, and the next call works."""

from __future__ import annotations

import linecache
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import uniqc_store
from uniqc_store import DB_FILENAME, TaskInfo, TaskStore

PACKAGE_DIR = str(Path(uniqc_store.__file__).resolve().parent)


class Injected(BaseException):
    """The exception a fault injector raises (a BaseException, like KeyboardInterrupt)."""


def _outsider_can_write_at_once(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # 'database is locked' if a lock was left behind
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _no_pooled_connection_in_a_transaction(store: TaskStore) -> None:
    pool: Any = store._db.engine.pool
    raws = [store._db.engine.raw_connection() for _ in range(pool.checkedin())]
    try:
        assert not any(raw.dbapi_connection.in_transaction for raw in raws)
    finally:
        for raw in raws:
            raw.close()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[float], subprocess.Popen]]:
    """Start another process that holds the file's write lock for ``seconds``."""
    started: list[subprocess.Popen] = []

    def hold(seconds: float) -> subprocess.Popen:
        code = (
            "import sqlite3, sys, time\n"
            f"conn = sqlite3.connect({str(tmp_path / DB_FILENAME)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({seconds})\n"
            "conn.execute('ROLLBACK')\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait(timeout=30)


def _raise_after(seconds: float, exception: type[BaseException]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise exception()

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


@pytest.fixture
def alarm() -> Iterator[Callable[[float, type[BaseException]], None]]:
    previous = signal.getsignal(signal.SIGALRM)
    yield _raise_after
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("exception", [KeyboardInterrupt, TimeoutError], ids=["ctrl-c", "sigalrm-timeout"])
def test_an_interrupt_while_waiting_for_the_write_lock_leaves_no_lock_and_takes_effect_promptly(
    tmp_path: Path, holder, alarm, exception: type[BaseException]
) -> None:
    store = TaskStore(tmp_path)
    store.save(TaskInfo("before", "sim"))
    locker = holder(2.0)
    alarm(0.3, exception)
    started = time.monotonic()
    with pytest.raises(exception):
        store.save(TaskInfo("interrupted", "sim"))
    assert time.monotonic() - started < 1.0  # not after the 60 s busy timeout, nor the holder's 2 s
    locker.wait(timeout=30)
    _outsider_can_write_at_once(tmp_path / DB_FILENAME)
    _no_pooled_connection_in_a_transaction(store)
    store.save(TaskInfo("after", "sim"))
    assert [t.task_id for t in store.list()] == ["after", "before"]


def test_a_save_that_waits_for_a_lock_still_succeeds_when_nothing_interrupts_it(tmp_path: Path, holder) -> None:
    store = TaskStore(tmp_path)
    locker = holder(1.0)
    started = time.monotonic()
    store.save(TaskInfo("patient", "sim"))
    assert time.monotonic() - started >= 0.5
    locker.wait(timeout=30)
    assert store.get("patient") is not None


class _InjectAt:
    """A tracer that raises :class:`Injected` at the ``n``-th line the store's code runs.

    Lines that hold a ``with`` statement are passed over: the tracer also reports them when the
    block ends, just before ``__exit__`` is called, a point where CPython itself does not check
    for signals (an exception injected there would skip ``__exit__``, which no signal can do).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        if not frame.f_code.co_filename.startswith(PACKAGE_DIR):
            return None
        if event == "line" and not self.fired and not _is_with_line(frame):
            self.seen += 1
            if self.seen == self.n:
                self.fired = True
                raise Injected()
        return self


def _is_with_line(frame: FrameType) -> bool:
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return line.startswith(("with ", "async with "))


def _run_injected(n: int, call: Callable[[], object]) -> bool:
    """Run ``call`` with an exception injected at its ``n``-th line; True if it was injected."""
    injector = _InjectAt(n)
    sys.settrace(injector)
    try:
        call()
    except Injected:
        pass
    finally:
        sys.settrace(None)
    return injector.fired


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.save(TaskInfo("t", "sim", status="success")),
        lambda s: s.save_many([TaskInfo("t", "sim", status="failed"), TaskInfo("u", "sim")]),
        lambda s: s.delete("t"),
        lambda s: s.clear_completed(),
        lambda s: s.list(status="pending"),
        lambda s: s.get("t"),
    ],
    ids=["save", "save_many", "delete", "clear_completed", "list", "get"],
)
def test_an_exception_at_any_line_of_a_call_leaves_no_transaction_open(tmp_path: Path, operation) -> None:
    store = TaskStore(tmp_path)
    path = tmp_path / DB_FILENAME
    lines = 0
    while True:
        store.save(TaskInfo("t", "sim"))  # the starting state of each round
        lines += 1
        if not _run_injected(lines, lambda: operation(store)):
            break  # the call ran to its end before reaching line ``lines``: every line was hit
        _outsider_can_write_at_once(path)
        _no_pooled_connection_in_a_transaction(store)
        stored = store.get("t")
        assert stored is None or stored.status in ("pending", "success", "failed")
    assert lines > 10


def test_ctrl_c_while_clear_all_waits_for_other_operations_leaves_the_store_usable(
    tmp_path: Path, holder, alarm
) -> None:
    import threading

    store = TaskStore(tmp_path)
    locker = holder(1.5)
    waiting = threading.Thread(target=store.save, args=(TaskInfo("queued", "sim"),))
    waiting.start()  # holds the gate while it waits for the other process's lock
    time.sleep(0.2)
    alarm(0.2, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        store.clear_all()
    waiting.join(timeout=30)
    locker.wait(timeout=30)
    assert store.get("queued") is not None  # neither hangs nor lost: clear_all never ran
    with TaskStore(tmp_path) as again:
        assert again.count() == 1


def test_ctrl_c_while_opening_a_file_another_process_holds_takes_effect_promptly(
    tmp_path: Path, holder, alarm
) -> None:
    from uniqc_files import write_uniqc_v1_file

    write_uniqc_v1_file(tmp_path / DB_FILENAME)  # opening it migrates: it needs the write lock
    locker = holder(3.0)
    alarm(0.3, KeyboardInterrupt)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        TaskStore(tmp_path)
    assert time.monotonic() - started < 1.5
    locker.wait(timeout=30)
    with TaskStore(tmp_path) as store:
        assert store.count() == 3
