"""The command line's machine-readable side: ``--json`` on every listing command prints one JSON
document on stdout equal to what the library returns, errors stay one line on stderr with nothing
on stdout, ``--version`` names the package and the schema, and nothing is coloured."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import uniqc_store
from uniqc_store import HEAD_REVISION, TaskInfo, TaskShard, TaskStore
from uniqc_store.cli import main


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    code = main(list(argv))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


@pytest.fixture
def filled(db_url: str) -> str:
    """A database on every backend with live, archived and sharded tasks."""
    with TaskStore(url=db_url) as store:
        store.save(TaskInfo("live", "originq:wuyuan", status="running", shots=3000, metadata={"量子": [1, 2.5]}))
        store.save(TaskInfo("done", "dummy", status="success", result=[{"00": 1}, {"11": 2}], error_message=""))
        store.save_shard(TaskShard("live", 0, "8F3A21C0", "originq:wuyuan", circuit_count=2))
        store.save(TaskInfo("old", "dummy", status="failed", error_message="timeout"))
        store.save_shard(TaskShard("old", 0, "P-1", "dummy", status="failed"))
        store.archive_task("old")
    return db_url


def test_list_json_is_the_array_of_what_the_library_lists(capsys: pytest.CaptureFixture[str], filled: str) -> None:
    live = run(capsys, "--url", filled, "list", "--json")
    archived = run(capsys, "list", "--archived", "--json", "--url", filled)
    filtered = run(capsys, "--url", filled, "list", "--status", "success", "--json")
    with TaskStore(url=filled) as store:
        assert json.loads(live.out) == [task.to_dict() for task in store.list()]
        assert json.loads(archived.out) == [task.to_dict() for task in store.list_archived()]
        assert json.loads(filtered.out) == [task.to_dict() for task in store.list(status="success")]
    assert [task["task_id"] for task in json.loads(archived.out)] == ["old"]
    assert json.loads(archived.out)[0]["archived_at"] is not None


def test_show_json_is_the_task_object_with_its_shards(capsys: pytest.CaptureFixture[str], filled: str) -> None:
    plain = run(capsys, "--url", filled, "show", "live")
    flagged = run(capsys, "--url", filled, "show", "live", "--json")
    archived = run(capsys, "--url", filled, "show", "--json", "old")
    assert plain.out == flagged.out  # show prints JSON either way
    with TaskStore(url=filled) as store:
        expected = {**store.get("live").to_dict(), "shards": [s.to_dict() for s in store.get_shards("live")]}
        old = store.get_archived("old")
        expected_old = {**old.to_dict(), "shards": [s.to_dict() for s in store.get_archived_shards("old")]}
    assert json.loads(flagged.out) == expected and json.loads(archived.out) == expected_old
    assert archived.code == 0 and "is archived" in archived.err  # the note goes to stderr, not into the JSON


def test_info_json_is_an_object_of_the_librarys_counts(capsys: pytest.CaptureFixture[str], filled: str) -> None:
    info = json.loads(run(capsys, "--url", filled, "info", "--json").out)
    with TaskStore(url=filled) as store:
        schema = store.schema_info()
        assert {key: info[key] for key in schema} == schema
        assert info["counts"] == {"pending": 0, "running": 1, "success": 1, "failed": 0, "cancelled": 0}
        assert info["total"] == store.count() == 2
        assert (info["shards"], info["archived"], info["archived_shards"]) == (
            store.count_shards(),
            store.count_archived(),
            store.count_shards(archived=True),
        )


@pytest.mark.parametrize(
    "argv",
    [["list", "--json"], ["list", "--archived", "--json"], ["info", "--json"], ["show", "live", "--json"]],
    ids=["list", "list-archived", "info", "show"],
)
def test_json_output_is_one_indented_document_ending_in_a_newline(
    capsys: pytest.CaptureFixture[str], filled: str, argv: list[str]
) -> None:
    result = run(capsys, "--url", filled, *argv)
    assert result.code == 0
    assert result.out == json.dumps(json.loads(result.out), indent=2, ensure_ascii=False) + "\n"
    assert "量子" in run(capsys, "--url", filled, "show", "live").out  # UTF-8, not \\u escapes


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["show", "nope", "--json"], 1),
        (["list", "--status", "done", "--json"], 2),
        (["list", "--limit", "x", "--json"], 2),
    ],
    ids=["not-found", "bad-status", "bad-usage"],
)
def test_a_json_command_that_fails_prints_nothing_on_stdout_and_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], code: int
) -> None:
    result = run(capsys, "--cache-dir", str(tmp_path), *argv)
    assert (result.code, result.out) == (code, "")
    assert result.err.startswith("uniqc-store: error: ") and result.err.count("\n") == 1


def test_version_names_the_package_and_the_schema_revision(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "--version")
    assert result.code == 0
    assert result.out.startswith(f"uniqc-store {uniqc_store.__version__} ")
    assert HEAD_REVISION in result.out


def test_nothing_is_coloured_even_on_a_terminal(tmp_path: Path) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("t", "dummy", status="failed"))
    leader, follower = pty.openpty()
    env = {**os.environ, "HOME": str(tmp_path), "FORCE_COLOR": "1", "CLICOLOR_FORCE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "uniqc_store", "--cache-dir", str(tmp_path), "list"],
        stdout=follower, stderr=follower, env=env, timeout=60,
    )
    os.close(follower)
    output = b""
    try:
        while chunk := os.read(leader, 4096):
            output += chunk
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        pass
    os.close(leader)
    assert done.returncode == 0 and b"failed" in output
    assert b"\x1b" not in output


def test_a_stored_nan_is_printed_as_nan_which_python_reads_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with TaskStore(tmp_path) as store:
        store.save(TaskInfo("t", "dummy", result={"p": float("nan"), "q": float("inf")}))
    result = run(capsys, "--cache-dir", str(tmp_path), "list", "--json")
    assert '"p": NaN' in result.out and '"q": Infinity' in result.out
    [task] = json.loads(result.out)
    assert task["result"]["p"] != task["result"]["p"] and task["result"]["q"] == float("inf")
