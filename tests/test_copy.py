"""copy_store / ``uniqc-store copy``: every record into another database, as it is, restartable,
never silently merged; on every backend."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from uniqc_store import TaskConflictError, TaskInfo, TaskShard, TaskStore, cli
from uniqc_store.errors import CorruptRecordError, DatabaseError, InvalidTaskError
from uniqc_store.transfer import BATCH, copy_store

from conftest import create_server_database

TIME = "2026-03-01T12:00:00+00:00"


def fill(store: TaskStore, tasks: int = 12) -> None:
    """Tasks with equal submit times (tie order), NaN, unicode, shards, archived tasks and shards."""
    store.save_many(
        TaskInfo(
            f"uqt_{i:04d}",
            "originq:wuyuan" if i % 2 else "量子:后端",
            status="success" if i % 3 == 0 else "running",
            submit_time=TIME if i % 4 else f"2026-03-0{1 + i % 5}T00:00:00+00:00",
            result={"00": i, "nan": float("nan"), "inf": float("-inf")} if i % 5 == 0 else None,
            metadata={"circuit": "bell", "名前": "テスト"},
            error_message="timeout ✗" if i % 7 == 0 else None,
        )
        for i in range(tasks)
    )
    for i in range(0, tasks, 3):
        for index in range(2):
            store.save_shard(TaskShard(f"uqt_{i:04d}", index, f"P{i}-{index}", "originq:wuyuan",
                                       result=[{"0": 1}, {"1": float("nan")}]))  # fmt: skip
    for i in range(0, tasks, 6):
        assert store.archive_task(f"uqt_{i:04d}")


def snapshot(store: TaskStore) -> str:
    """Everything a caller can read, in the store's own order (ties included), as JSON text (NaN
    compares equal as text)."""
    live = store.list()
    archived = store.list_archived()
    everything = {
        "live": [t.to_dict() for t in live],
        "archived": [t.to_dict() for t in archived],
        "shards": [s.to_dict() for t in live for s in store.get_shards(t.task_id)],
        "archived_shards": [s.to_dict() for t in archived for s in store.get_archived_shards(t.task_id)],
    }
    return json.dumps(everything, ensure_ascii=False)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[TaskStore]:
    with TaskStore(url=f"sqlite:///{tmp_path / 'source' / 'tasks.sqlite'}") as store:
        fill(store)
        yield store


@pytest.fixture
def server_urls() -> Iterator[dict[str, str]]:
    postgres, drop_postgres = create_server_database("postgresql")
    try:
        mysql, drop_mysql = create_server_database("mysql")
        try:
            yield {"postgresql": postgres, "mysql": mysql}
        finally:
            drop_mysql()
    finally:
        drop_postgres()


def test_a_round_trip_sqlite_postgresql_mariadb_sqlite_gives_back_every_record_as_it_was(
    source: TaskStore, server_urls: dict[str, str], tmp_path: Path
) -> None:
    before = snapshot(source)
    stores = [source]
    for url in (server_urls["postgresql"], server_urls["mysql"], f"sqlite:///{tmp_path / 'back' / 'tasks.sqlite'}"):
        target = TaskStore(url=url)
        report = copy_store(stores[-1], target)
        assert report.complete, report
        assert snapshot(target) == before
        stores.append(target)
    for store in stores[1:]:
        store.close()
    assert '"nan": NaN' in before and "量子:后端" in before and "uqt_0000" in before  # the data exercised all that


def test_copy_into_every_backend_keeps_ids_times_and_tie_order(source: TaskStore, db_url: str) -> None:
    with TaskStore(url=db_url) as target:
        report = copy_store(source, target)
        assert snapshot(target) == snapshot(source)
        assert target.get("uqt_0001") == source.get("uqt_0001")  # update_time as it was, not stamped
    counts = {t.table: (t.source, t.target, t.copied) for t in report.tables}
    assert counts == {
        "tasks": (10, 10, 10), "task_shards": (4, 4, 4), "archived_tasks": (2, 2, 2), "archived_task_shards": (4, 4, 4)
    }  # fmt: skip


def test_copy_from_every_backend(source: TaskStore, db_url: str, tmp_path: Path) -> None:
    with TaskStore(url=db_url) as middle, TaskStore(url=f"sqlite:///{tmp_path / 'out.sqlite'}") as target:
        copy_store(source, middle)
        assert copy_store(middle, target).complete
        assert snapshot(target) == snapshot(source)


def test_running_the_copy_again_copies_nothing_and_duplicates_nothing(source: TaskStore, db_url: str) -> None:
    with TaskStore(url=db_url) as target:
        copy_store(source, target)
        again = copy_store(source, target)
        assert again.complete
        assert [(t.copied, t.skipped) for t in again.tables] == [(0, 10), (0, 4), (0, 2), (0, 4)]
        assert snapshot(target) == snapshot(source)


def test_new_records_of_the_source_are_copied_by_the_next_run(source: TaskStore, db_url: str) -> None:
    with TaskStore(url=db_url) as target:
        copy_store(source, target)
        source.save(TaskInfo("uqt_new", "dummy", submit_time=TIME))
        source.save_shard(TaskShard("uqt_new", 0, "P-new", "dummy"))
        report = copy_store(source, target)
        assert [t.copied for t in report.tables] == [1, 1, 0, 0]
        assert snapshot(target) == snapshot(source)


@pytest.fixture
def big_source(tmp_path: Path) -> Iterator[TaskStore]:
    """More than two batches of tasks, many with one submit time."""
    with TaskStore(url=f"sqlite:///{tmp_path / 'big' / 'tasks.sqlite'}") as store:
        store.save_many(
            TaskInfo(f"t{i:05d}", "dummy", submit_time=TIME if i % 2 else f"2026-01-01T00:00:{i % 60:02d}+00:00")
            for i in range(2 * BATCH + 500)
        )
        for i in range(0, 2 * BATCH + 500, 2):
            store.save_shard(TaskShard(f"t{i:05d}", 0, f"P{i}", "dummy"))
        store.archive_task("t00007")
        yield store


class Interrupted(BaseException):
    """Stands for Ctrl-C (a BaseException, as KeyboardInterrupt is)."""


def test_an_interruption_between_batches_leaves_whole_batches_and_the_next_run_finishes(
    big_source: TaskStore, db_url: str
) -> None:
    def stop_after_the_first_batch(done: int, total: int | None) -> None:
        raise Interrupted

    with TaskStore(url=db_url) as target:
        with pytest.raises(Interrupted):
            copy_store(big_source, target, progress=stop_after_the_first_batch)
        assert target.count() == BATCH
        report = copy_store(big_source, target)
        assert report.complete
        assert report.tables[0].skipped == BATCH and report.tables[0].copied == BATCH + 499
        assert snapshot(target) == snapshot(big_source)


def test_interruptions_at_any_point_leave_whole_batches_and_a_rerun_finishes_exactly(
    big_source: TaskStore, db_url: str
) -> None:
    """A timer raises at arbitrary moments: inside a batch's transaction, while reading, between
    batches. Each run continues where the last stopped."""

    fired = 0

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal fired
        fired += 1
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    interruptions = 0
    try:
        with TaskStore(url=db_url) as target:
            for delay in (0.05, 0.13, 0.21, 0.34, 0.55, 0.89):
                signal.setitimer(signal.ITIMER_REAL, delay)
                try:
                    copy_store(big_source, target)
                except Interrupted:
                    interruptions += 1
                except DatabaseError as error:
                    # psycopg interrupted inside executemany's pipeline raises its own error while
                    # leaving the pipeline, with the interrupt as its context.
                    assert caused_by_an_interrupt(error), error
                    interruptions += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                live = target.count()
                assert live % BATCH == 0 or live == big_source.count()  # whole batches only
            report = copy_store(big_source, target)
            assert report.complete
            assert snapshot(target) == snapshot(big_source)
    finally:
        signal.signal(signal.SIGALRM, previous)
    # The timer went off during a copy. (Where it lands inside a weakref callback or a __del__,
    # Python reports the exception as unraisable and the copy goes on: then a run may finish
    # whole, and the later runs, with nothing left to copy, end before their timers.)
    assert fired
    assert interruptions <= fired


def caused_by_an_interrupt(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, Interrupted):
            return True
        error = error.__cause__ or error.__context__
    return False


def test_a_target_with_other_records_is_refused_untouched_and_merge_adds_the_missing_ones(
    source: TaskStore, db_url: str
) -> None:
    with TaskStore(url=db_url) as target:
        target.save(TaskInfo("theirs", "dummy", submit_time=TIME))
        target.save(TaskInfo("uqt_0001", "dummy", status="failed"))  # an id the source has too
        before = snapshot(target)
        with pytest.raises(TaskConflictError, match=r"already holds records \(2 tasks.*'theirs'.*--merge"):
            copy_store(source, target)
        assert snapshot(target) == before
        report = copy_store(source, target, merge=True)
        assert report.complete
        tasks = report.tables[0]
        assert (tasks.before, tasks.copied, tasks.skipped, tasks.target) == (2, 9, 1, 11)
        assert target.get("uqt_0001").status == "failed"  # the target's own record stays
        assert target.get("theirs") is not None
        assert target.get("uqt_0002") == source.get("uqt_0002")
        assert copy_store(source, target, merge=True).tables[0].copied == 0


def test_a_target_whose_earlier_copy_was_changed_since_is_refused(source: TaskStore, tmp_path: Path) -> None:
    with TaskStore(url=f"sqlite:///{tmp_path / 'copy.sqlite'}") as target:
        copy_store(source, target)
        target.save(TaskInfo("uqt_0003", "dummy"))
        with pytest.raises(TaskConflictError, match=r"uqt_0003.*differ in backend"):
            copy_store(source, target)


def test_copying_a_database_onto_itself_is_refused(source: TaskStore) -> None:
    with TaskStore(url=f"sqlite:///{source.db_path}") as same, pytest.raises(InvalidTaskError, match="same database"):
        copy_store(source, same)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_the_command_prints_the_counts_per_table_and_no_progress_bar_when_piped(
    source: TaskStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["--url", f"sqlite:///{source.db_path}", "copy", "--to", db_url], capsys)
    assert status == 0, err
    assert err == ""  # stderr is not a terminal: no bar
    lines = out.splitlines()
    assert lines[0].startswith(f"copy of {source.db_path} to ")
    assert lines[1].split() == ["table", "source", "target", "copied", "already", "there"]
    assert lines[2].split() == ["tasks", "10", "10", "10", "0"]
    assert lines[-1] == "counts match: every record of the source is in the target"


def test_the_command_refuses_a_target_with_other_records_in_one_line_exit_2(
    source: TaskStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    with TaskStore(url=other) as target:
        target.save(TaskInfo("theirs", "dummy"))
    status, out, err = run(["--url", f"sqlite:///{source.db_path}", "copy", "--to", other], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "Nothing was copied" in err and "--merge" in err
    status, out, err = run(["--url", f"sqlite:///{source.db_path}", "copy", "--merge", "--to", other], capsys)
    assert status == 0, err
    assert out.splitlines()[0].endswith("(merge):")


def test_the_command_never_prints_the_targets_password(
    source: TaskStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        ["--url", f"sqlite:///{source.db_path}", "copy", "--to", "postgresql+psycopg://lab:s3cret-pw@127.0.0.1:1/x"],
        capsys,
    )
    assert status == 2
    assert "s3cret-pw" not in out + err


def progress_calls() -> tuple[list[tuple[int, int | None]], Callable[[int, int | None], None]]:
    calls: list[tuple[int, int | None]] = []
    return calls, lambda done, total: calls.append((done, total))


def test_progress_is_reported_per_batch_up_to_the_total(big_source: TaskStore, tmp_path: Path) -> None:
    calls, progress = progress_calls()
    with TaskStore(url=f"sqlite:///{tmp_path / 'p.sqlite'}") as target:
        copy_store(big_source, target, progress=progress)
    total = 2 * BATCH + 500 + (BATCH + 250)  # tasks and shards
    assert calls[0] == (BATCH, total) and calls[-1] == (total, total)


# -- values SQLite holds that a server column cannot (issue 10) -----------------------------------


def raw_sqlite(store: TaskStore, sql: str) -> None:
    """Write a row behind the store's back, as another program (or an old uniqc) may have."""
    with sqlite3.connect(str(store.db_path)) as conn:
        conn.execute(sql)
    conn.close()


def test_bytes_in_text_columns_reach_every_target_as_their_text(source: TaskStore, db_url: str) -> None:
    raw_sqlite(source, "INSERT INTO tasks VALUES ('blob', x'64756d6d79', 'success', 1000, '2025-01-01T00:00:00+00:00', "
                       "'2025-01-01T00:00:00+00:00', x'7B2261223A317D', '{}', x'e29c97')")  # fmt: skip
    assert source.get("blob").result == {"a": 1}  # the store reads it fine
    with TaskStore(url=db_url) as target:
        report = copy_store(source, target)
        assert report.complete
        copied = target.get("blob")
        assert copied is not None and copied.result == {"a": 1}
        assert (copied.backend, copied.error_message) == ("dummy", "✗")
        assert copy_store(source, target).tables[0].copied == 0  # a rerun sees an earlier copy


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("'real', 'd', 'success', 1000.5, 'T', 'T', NULL, '{}', NULL", r"task 'real' holds in shots float 1000.5, not"),
        ("'bad', 'd', 'success', 1, 'T', 'T', x'ff7b7d', '{}', NULL", r"task 'bad' holds in result_json bytes that"),
        ("'word', 'd', 'success', 'many', 'T', 'T', NULL, '{}', NULL", r"task 'word' holds in shots str 'many', not"),
    ],
    ids=["fraction", "not-utf8", "text-in-integer"],
)
def test_a_value_no_target_can_hold_as_it_is_is_refused_naming_row_and_column(
    source: TaskStore, db_url: str, values: str, message: str
) -> None:
    raw_sqlite(source, f"INSERT INTO tasks VALUES ({values})")
    with TaskStore(url=db_url) as target:
        with pytest.raises(CorruptRecordError, match=message):
            copy_store(source, target)
        assert target.count() == 0  # the refused row's batch was not written
        with pytest.raises(CorruptRecordError, match=message):
            copy_store(source, target)  # a rerun refuses the same way, rather than "not an earlier copy"


# -- one snapshot of the source (issue 10) --------------------------------------------------------


def test_the_source_is_read_in_one_snapshot_while_it_is_written_to(big_source: TaskStore, tmp_path: Path) -> None:
    """Every batch written, the source changes: new tasks with shards, a task archived, a shard
    added to a copied task. The copy is the source as of its start; a rerun adds the new ones."""
    writes = iter(range(1000))
    before = snapshot(big_source)

    def write_to_the_source(done: int, total: int | None) -> None:
        i = next(writes)
        big_source.save(TaskInfo(f"new{i:03d}", "dummy"))
        big_source.save_shard(TaskShard(f"new{i:03d}", 0, f"N{i}", "dummy"))
        big_source.save_shard(TaskShard("t00002", 5 + i, f"M{i}", "dummy"))
        if i == 0:
            assert big_source.archive_task("t00004")

    with TaskStore(url=f"sqlite:///{tmp_path / 'copy.sqlite'}") as target:
        report = copy_store(big_source, target, progress=write_to_the_source)
        assert report.complete, report
        assert snapshot(target) == before  # as of the start: no new task, t00004 still live
        assert [t.source for t in report.tables] == [2 * BATCH + 499, BATCH + 250, 1, 0]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_a_server_source_is_read_in_one_snapshot_too(db_url: str, tmp_path: Path) -> None:
    with TaskStore(url=db_url) as source:
        source.save_many(TaskInfo(f"t{i:05d}", "dummy") for i in range(2 * BATCH + 10))
        before = snapshot(source)

        def write_to_the_source(done: int, total: int | None) -> None:
            source.save(TaskInfo(f"new{done}", "dummy"))
            source.save_shard(TaskShard(f"new{done}", 0, "N", "dummy"))
            source.delete("t00000") if done == BATCH else None

        with TaskStore(url=f"sqlite:///{tmp_path / 'copy.sqlite'}") as target:
            report = copy_store(source, target, progress=write_to_the_source)
            assert report.complete, report
            assert snapshot(target) == before


# -- merge keeps a task and its shards together (issue 10) ----------------------------------------


def test_merge_skips_a_task_whose_id_the_target_holds_live_or_archived_with_all_its_shards(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with TaskStore(url=f"sqlite:///{tmp_path / 'src.sqlite'}") as source, TaskStore(url=db_url) as target:
        source.save(TaskInfo("X", "src", metadata={"who": "source"}))
        source.save_shard(TaskShard("X", 0, "SRC-JOB-0", "src"))
        source.save(TaskInfo("Y", "src"))
        source.save_shard(TaskShard("Y", 0, "SRC-Y", "src"))
        assert source.archive_task("Y")
        source.save(TaskInfo("Z", "src"))
        source.save_shard(TaskShard("Z", 0, "SRC-Z", "src"))
        target.save(TaskInfo("X", "ibm:other", metadata={"who": "target"}))  # unrelated, same id
        target.save(TaskInfo("Y", "ibm:other"))  # live here, archived in the source
        report = copy_store(source, target, merge=True)
        assert report.complete
        by_table = {t.table: t for t in report.tables}
        assert by_table["tasks"].reasons == (("the target holds a live task of that id", 1),)
        assert by_table["task_shards"].reasons == (("its task was skipped", 1),)
        assert by_table["archived_tasks"].reasons == (("the target holds a live task of that id", 1),)
        assert by_table["archived_task_shards"].reasons == (("its task was skipped", 1),)
        assert target.get_shards("X") == [] and target.get("X").metadata == {"who": "target"}
        assert target.find_uniqc_id_by_platform_id("SRC-JOB-0") is None
        assert target.get("Y") is not None and target.get_archived("Y") is None
        assert target.get_shards("Z")[0].platform_task_id == "SRC-Z"
    status = cli.main(["--url", f"sqlite:///{tmp_path / 'src.sqlite'}", "copy", "--merge", "--to", db_url])
    out = capsys.readouterr().out
    assert status == 0
    assert "skipped 1 of archived_tasks: the target holds a live task of that id" in out
    assert out.splitlines()[-1] == "counts match: every record of the source is in the target or skipped"


# -- self-copy under another spelling (issue 10) --------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_a_server_database_copied_onto_itself_under_another_spelling_is_refused(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url(db_url)
    default = 5432 if url.get_backend_name() == "postgresql" else 3306
    assert url.port in (None, default)
    spellings = [url.set(port=None), url.set(port=default), url.set(host="localhost")]
    if url.get_backend_name() == "mysql":
        spellings.append(url.set(drivername="mariadb+pymysql"))
    with TaskStore(url=db_url) as source:
        source.save(TaskInfo("x", "dummy"))
        for spelling in spellings:
            text = spelling.render_as_string(hide_password=False)
            with TaskStore(url=text) as same, pytest.raises(InvalidTaskError, match="same database"):
                copy_store(source, same)
            status = cli.main(["--url", db_url, "copy", "--to", text])
            err = capsys.readouterr().err
            assert status == 2 and "same database (" in err
            assert "(***)" not in err and url.database in err  # the masked URL, not *** for all of it


def test_copy_to_a_url_that_does_not_parse_names_the_option(
    source: TaskStore, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["--url", f"sqlite:///{source.db_path}", "copy", "--to", "garbage"])
    assert status == 2
    assert capsys.readouterr().err.startswith("uniqc-store: error: --to is not a valid database URL")
