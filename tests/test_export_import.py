"""export_records / import_records and ``uniqc-store export`` / ``import``: JSON Lines both ways,
every line checked as save checks a record, all or nothing; on every backend."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from uniqc_store import BadLinesError, CorruptRecordError, TaskInfo, TaskShard, TaskStore, cli
from uniqc_store.jsonlines import export_records, import_records
from uniqc_store.transfer import BATCH

from test_copy import Interrupted, fill, snapshot


@pytest.fixture
def source(tmp_path: Path) -> Iterator[TaskStore]:
    with TaskStore(url=f"sqlite:///{tmp_path / 'source' / 'tasks.sqlite'}") as store:
        fill(store)
        yield store


def exported(store: TaskStore) -> bytes:
    out = io.BytesIO()
    export_records(store, out)
    return out.getvalue()


def lines_of(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def test_an_export_imported_into_an_empty_store_of_any_backend_gives_back_equal_records(
    source: TaskStore, db_url: str
) -> None:
    data = exported(source)
    with TaskStore(url=db_url) as target:
        imported = import_records(target, lines_of(data))
        assert snapshot(target) == snapshot(source)  # ids, times, ties, NaN, unicode, shards, archive
        assert exported(target) == data
    assert imported.counts == {"task": 10, "shard": 4, "archived_task": 2, "archived_shard": 4}


def test_the_format_is_a_header_then_one_record_per_line_in_insertion_order(source: TaskStore) -> None:
    lines = exported(source).decode("utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "uniqc-store-export" and header["version"] == 1
    records = [json.loads(line) for line in lines[1:-1]]
    assert json.loads(lines[-1]) == {
        "kind": "end", "records": 20, "task": 10, "shard": 4, "archived_task": 2, "archived_shard": 4
    }  # fmt: skip
    kinds = [record["kind"] for record in records]
    assert kinds == ["task"] * 10 + ["shard"] * 4 + ["archived_task"] * 2 + ["archived_shard"] * 4
    assert [r["task_id"] for r in records[:3]] == ["uqt_0001", "uqt_0002", "uqt_0003"]  # insertion order
    assert "archived_at" not in records[0] and records[14]["archived_at"]
    assert records[-1]["archived_at"]  # an archived shard keeps when it was archived
    assert '"nan": NaN' in lines[1 + 4] and '"inf": -Infinity' in lines[1 + 4]  # uqt_0005, as uniqc writes NaN
    assert "量子:后端" in lines[2]  # UTF-8, not \\u escapes


def header() -> bytes:
    return b'{"format": "uniqc-store-export", "version": 1}\n'


def with_end(*lines: bytes) -> list[bytes]:
    """``lines`` (a header first) and the end line an export writes after them."""
    counts = dict.fromkeys(("task", "shard", "archived_task", "archived_shard"), 0)
    for line in lines[1:]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("kind") in counts:
            counts[value["kind"]] += 1
    return [*lines, end_line(**counts)]


def end_line(**counts: int) -> bytes:
    counts = {kind: counts.get(kind, 0) for kind in ("task", "shard", "archived_task", "archived_shard")}
    return (json.dumps({"kind": "end", "records": sum(counts.values()), **counts}) + "\n").encode()


def task_line(task_id: str, **fields: object) -> bytes:
    record = {"kind": "task", **TaskInfo(task_id, "dummy").to_dict(), **fields}
    del record["archived_at"]
    return (json.dumps(record) + "\n").encode()


def test_every_bad_line_is_reported_by_number_and_nothing_is_imported(db_url: str) -> None:
    data = with_end(
        header(),
        task_line("ok-1"),
        b"{not json\n",
        task_line("bad-shots", shots=-1),
        b'{"kind": "spaceship"}\n',
        task_line("ok-2"),
        task_line("bad-key", result={"a": {"b": [1, {"c": None}]}}, metadata=[1]),
        b"\xff\xfe\n",
        task_line("no-times", submit_time=None),
        b'{"kind": "task", "task_id": "x", "backend": "b"}\n',
    )
    with TaskStore(url=db_url) as target:
        target.save(TaskInfo("mine", "dummy"))
        before = snapshot(target)
        with pytest.raises(BadLinesError) as caught:
            import_records(target, data, name="in.jsonl")
        assert snapshot(target) == before
    problems = dict(caught.value.problems)
    assert sorted(problems) == [3, 4, 5, 7, 8, 9, 10]
    assert caught.value.bad_lines == 7
    assert "not a JSON value" in problems[3]
    assert problems[4] == "task 'bad-shots': shots must be between 0 and 9223372036854775807, got -1"
    assert "'kind' must be one of" in problems[5]
    assert problems[7].startswith("task 'bad-key': metadata must be a dict")
    assert "not UTF-8" in problems[8]
    assert "submit_time must be a str" in problems[9]
    assert "missing submit_time, update_time" in problems[10]
    assert str(caught.value).startswith("7 bad lines in in.jsonl (line 3: ") and "nothing was imported" in str(
        caught.value
    )


def test_an_id_the_target_already_holds_is_refused_by_line_and_nothing_is_imported(db_url: str) -> None:
    with TaskStore(url=db_url) as target:
        target.save(TaskInfo("taken", "dummy", status="failed"))
        with pytest.raises(BadLinesError) as caught:
            import_records(target, with_end(header(), task_line("new"), task_line("taken")))
        assert caught.value.problems == [(3, "task 'taken' is already in the target (or on an earlier line)")]
        assert target.get("new") is None and target.get("taken").status == "failed"
        with pytest.raises(BadLinesError, match="line 3: task 'twice' is on an earlier line too"):
            import_records(target, with_end(header(), task_line("twice"), task_line("twice")))


def test_a_shard_whose_task_is_neither_in_the_target_nor_before_it_is_refused(db_url: str) -> None:
    shard = {"kind": "shard", **TaskShard("orphan", 0, "P", "dummy").to_dict()}
    with TaskStore(url=db_url) as target, pytest.raises(BadLinesError, match="line 2: shard 0 of task 'orphan': there"):
        import_records(target, with_end(header(), (json.dumps(shard) + "\n").encode()))


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b'{"kind": "task"}\n', "is not a uniqc-store export"),
        (b'{"format": "uniqc-store-export", "version": 2}\n', "format version 2 is not one"),
    ],
    ids=["no-header", "newer-format"],
)
def test_a_file_that_is_not_an_export_of_this_format_is_refused_at_line_1(
    tmp_path: Path, first: bytes, message: str
) -> None:
    with TaskStore(url=f"sqlite:///{tmp_path / 't.sqlite'}") as target:
        with pytest.raises(BadLinesError, match=f"line 1: .*{message}") as caught:
            import_records(target, [first, task_line("a")])
        assert caught.value.bad_lines == 1
        assert target.count() == 0


def test_an_import_interrupted_midway_imports_nothing(db_url: str) -> None:
    records = with_end(header(), *(task_line(f"t{i}") for i in range(3 * BATCH)))

    def stop(done: int, total: int | None) -> None:
        if done >= 2 * BATCH:
            raise Interrupted

    with TaskStore(url=db_url) as target:
        with pytest.raises(Interrupted):
            import_records(target, records, progress=stop)
        assert target.count() == 0
        assert import_records(target, records).counts["task"] == 3 * BATCH


def uniqc_store(*args: str, stdin: bytes | None = None, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "uniqc_store", *args], input=stdin, capture_output=True, cwd=cwd, timeout=120
    )


def test_the_commands_export_to_a_file_and_import_it(
    source: TaskStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.jsonl"
    assert cli.main(["--url", f"sqlite:///{source.db_path}", "export", str(backup)]) == 0
    out, err = capsys.readouterr()
    assert out == f"exported 10 tasks, 4 shards, 2 archived tasks, 4 archived shards to {backup}\n" and err == ""
    assert backup.read_bytes() == exported(source)
    assert cli.main(["--url", f"sqlite:///{source.db_path}", "export", str(backup)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err
    target = tmp_path / "target.sqlite"
    assert cli.main(["--url", f"sqlite:///{target}", "import", str(backup)]) == 0
    summary = f"imported 10 tasks, 4 shards, 2 archived tasks, 4 archived shards from {backup}\n"
    assert capsys.readouterr().out == summary
    with TaskStore(url=f"sqlite:///{target}") as store:
        assert snapshot(store) == snapshot(source)
    assert list(tmp_path.glob(".uniqc-store-export-*")) == []  # no partial file left


def test_the_commands_pipe_an_export_into_an_import(source: TaskStore, tmp_path: Path) -> None:
    export = uniqc_store("--url", f"sqlite:///{source.db_path}", "export", "-", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert export.stdout == exported(source)
    assert export.stderr.decode().startswith("exported 10 tasks")
    target = tmp_path / "piped.sqlite"
    imported = uniqc_store("--url", f"sqlite:///{target}", "import", "-", stdin=export.stdout, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.decode() == "imported 10 tasks, 4 shards, 2 archived tasks, 4 archived shards from stdin\n"
    again = uniqc_store("--url", f"sqlite:///{target}", "import", "-", stdin=export.stdout, cwd=tmp_path)
    assert again.returncode == 2
    errors = again.stderr.decode().splitlines()
    duplicate = "task 'uqt_0001' is already in the target (or on an earlier line)"
    assert errors[0] == f"uniqc-store: error: stdin line 2: {duplicate}"
    assert errors[-1] == "uniqc-store: error: 10 bad lines in stdin; nothing was imported"


# -- the end line (issue 10) ----------------------------------------------------------------------


def test_a_truncated_export_is_refused_and_nothing_is_imported(source: TaskStore, db_url: str) -> None:
    lines = lines_of(exported(source))
    cut_at_a_line = lines[:-1]
    one_record_lost = lines[:5] + lines[6:]
    with TaskStore(url=db_url) as target:
        with pytest.raises(BadLinesError, match=r"line 22: the file ends before its end line: a truncated export\?"):
            import_records(target, cut_at_a_line)
        with pytest.raises(BadLinesError, match=r"line 21: the end line's counts differ .*: records 20 \(the file has"):
            import_records(target, one_record_lost)
        assert target.count() == 0 and target.count_archived() == 0


def test_an_export_that_fails_half_way_into_a_pipe_imports_nothing(source: TaskStore, tmp_path: Path) -> None:
    raw = sqlite3.connect(str(source.db_path))
    raw.execute("UPDATE tasks SET result_json = '{not json' WHERE task_id = 'uqt_0005'")
    raw.commit()
    raw.close()
    target = tmp_path / "piped.sqlite"
    pipeline = (f"{sys.executable} -m uniqc_store --url sqlite:///{source.db_path} export - | "
                f"{sys.executable} -m uniqc_store --url sqlite:///{target} import -")  # fmt: skip
    done = subprocess.run(pipeline, shell=True, capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "stdin ends before its end line: a truncated export?" in done.stderr.decode()
    with TaskStore(url=f"sqlite:///{target}") as store:
        assert store.count() == 0


def test_a_bom_and_trailing_blank_lines_are_accepted_and_a_blank_line_inside_is_not(tmp_path: Path) -> None:
    lines = with_end(header(), task_line("a"))
    with TaskStore(url=f"sqlite:///{tmp_path / 't.sqlite'}") as target:
        with pytest.raises(BadLinesError, match="line 2: a blank line"):
            import_records(target, [lines[0], b"\n", *lines[1:]])
        imported = import_records(target, [b"\xef\xbb\xbf" + lines[0], *lines[1:], b"\n", b"  \n"])
        assert imported.counts["task"] == 1


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b'{"format": "uniqc-store-export", "version": 1.0}\n', "version must be a whole number from 1 .*got 1.0"),
        (b'{"format": "uniqc-store-export"}\n', "version must be a whole number from 1 .*got no version"),
    ],
)
def test_a_header_version_that_is_not_a_number_says_so(tmp_path: Path, first: bytes, message: str) -> None:
    with TaskStore(url=f"sqlite:///{tmp_path / 't.sqlite'}") as target:
        with pytest.raises(BadLinesError, match=f"line 1: the header's {message}") as caught:
            import_records(target, with_end(first, task_line("a")))
        assert "newer" not in str(caught.value)


# -- records that contradict each other (issue 10) ------------------------------------------------


def archived_task_line(task_id: str, archived_at: str) -> bytes:
    record = {"kind": "archived_task", **TaskInfo(task_id, "dummy").to_dict(), "archived_at": archived_at}
    return (json.dumps(record) + "\n").encode()


def shard_line(task_id: str, kind: str = "shard", **fields: object) -> bytes:
    record = {"kind": kind, **TaskShard(task_id, 0, "P", "dummy").to_dict(), **fields}
    return (json.dumps(record) + "\n").encode()


ARCHIVED = "2026-03-02T00:00:00+00:00"


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([shard_line("gone", "archived_shard", archived_at=ARCHIVED)],
         "line 2: archived shard 0 of task 'gone': there is no archived task 'gone'"),
        ([archived_task_line("a", ARCHIVED), shard_line("a", "archived_shard", archived_at="2026-03-09T00:00Z")],
         "line 3: archived shard 0 of task 'a': archived at '2026-03-09T00:00Z', but its task at"),
        ([task_line("a"), archived_task_line("a", ARCHIVED)],
         "line 3: archived task 'a': the target or an earlier line holds a live task of that id"),
        ([task_line("a"), shard_line("a", archived_at=ARCHIVED)],
         "line 3: shard 0 of task 'a': a live shard has no archived_at"),
        ([b'{"kind": "task", "kind": "archived_task"}\n'], "line 2: the key 'kind' appears twice in one object"),
    ],
    ids=["archived-shard-without-task", "archived-at-differs", "live-and-archived", "live-shard-archived-at",
         "duplicate-key"],
)  # fmt: skip
def test_records_that_contradict_each_other_are_refused_by_line(
    db_url: str, records: list[bytes], message: str
) -> None:
    with TaskStore(url=db_url) as target:
        with pytest.raises(BadLinesError, match=message):
            import_records(target, with_end(header(), *records))
        assert target.count() == 0 and target.count_archived() == 0


def test_a_task_archived_in_the_target_cannot_be_imported_live(tmp_path: Path) -> None:
    with TaskStore(url=f"sqlite:///{tmp_path / 't.sqlite'}") as target:
        target.save(TaskInfo("a", "dummy"))
        assert target.archive_task("a")
        with pytest.raises(BadLinesError, match="line 2: task 'a': the target or an earlier line holds an archived"):
            import_records(target, with_end(header(), task_line("a")))


# -- the write lock is held only while writing (issue 10) ----------------------------------------


def test_an_import_reads_its_whole_input_before_taking_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    lines = with_end(header(), *(task_line(f"t{i}") for i in range(BATCH + 5)))
    locked_while_reading: list[bool] = []

    def slow_producer() -> Iterator[bytes]:
        for number, line in enumerate(lines, 1):
            if number in (2, len(lines)):  # the lock is free while the producer is still writing
                probe = sqlite3.connect(str(path), timeout=0)
                try:
                    probe.execute("BEGIN IMMEDIATE")
                    probe.rollback()
                    locked_while_reading.append(False)
                except sqlite3.OperationalError:
                    locked_while_reading.append(True)
                finally:
                    probe.close()
            yield line

    with TaskStore(url=f"sqlite:///{path}") as target:
        assert import_records(target, slow_producer()).counts["task"] == BATCH + 5
    assert locked_while_reading == [False, False]


def test_an_export_refuses_a_value_it_cannot_write_exactly(source: TaskStore) -> None:
    raw = sqlite3.connect(str(source.db_path))
    raw.execute("INSERT INTO tasks VALUES ('real', 'd', 'success', 1000.5, 'T', 'T', NULL, '{}', NULL)")
    raw.execute("INSERT INTO tasks VALUES ('blob', x'64', 'success', 1, 'T', 'T', x'7B2261223A317D', '{}', NULL)")
    raw.commit()
    raw.close()
    with pytest.raises(CorruptRecordError, match=r"task 'real' holds in shots float 1000\.5"):
        exported(source)
    source.delete("real")
    blob = [json.loads(line) for line in exported(source).splitlines() if b'"blob"' in line]
    assert blob[0]["backend"] == "d" and blob[0]["result"] == {"a": 1}
