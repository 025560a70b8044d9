"""Bad input gets a clear error naming the problem, and nothing stored changes."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from uniqc_store import (
    DatabaseError,
    InvalidTaskError,
    InvalidTaskTypeError,
    TaskInfo,
    TaskStore,
    UnsupportedDatabaseError,
)


class Unserialisable:
    pass


BAD_TASKS = [
    ("task_id-empty", {"task_id": ""}, ValueError, "task_id must not be empty"),
    ("task_id-int", {"task_id": 5}, TypeError, "task_id must be a str"),
    ("task_id-none", {"task_id": None}, TypeError, "task_id must be a str"),
    ("task_id-too-long", {"task_id": "x" * 256}, ValueError, "task_id is 256 characters long; the limit is 255"),
    ("backend-empty", {"backend": ""}, ValueError, "backend must not be empty"),
    ("backend-bytes", {"backend": b"sim"}, TypeError, "backend must be a str"),
    ("status-unknown", {"status": "done"}, ValueError, "status 'done' is not a TaskStatus value; allowed: pending"),
    ("status-int", {"status": 1}, TypeError, "status must be a TaskStatus"),
    ("shots-negative", {"shots": -1}, ValueError, "shots must be between 0"),
    ("shots-float", {"shots": 10.0}, TypeError, "shots must be an int"),
    ("shots-bool", {"shots": True}, TypeError, "shots must be an int"),
    ("shots-str", {"shots": "1000"}, TypeError, "shots must be an int"),
    ("shots-overflow", {"shots": 2**63}, ValueError, "shots must be between 0"),
    ("result-tuple", {"result": (1, 2)}, TypeError, "result must be a dict or a list, got tuple; pass a list"),
    ("result-str", {"result": "done"}, TypeError, "result must be a dict or a list, got str"),
    ("result-list-with-a-set", {"result": [{"x": {1}}]}, TypeError, "result[0]['x']: set is not JSON-serialisable"),
    ("metadata-list", {"metadata": [1, 2]}, TypeError, "metadata must be a dict, got list"),
    ("error_message-int", {"error_message": 500}, TypeError, "error_message must be a str, got int"),
    ("error_message-nul", {"error_message": "a\x00b"}, ValueError, "error_message must not contain NUL"),
    ("error_message-surrogate", {"error_message": "\ud800"}, ValueError, "error_message is not valid UTF-8"),
    ("archived_at-int", {"archived_at": 1}, TypeError, "archived_at must be a str"),
    ("archived_at-too-long", {"archived_at": "9" * 65}, ValueError,
     "archived_at is 65 characters long; the limit is 64"),
    ("result-unserialisable", {"result": {"x": Unserialisable()}}, ValueError,
     "result['x']: Unserialisable is not JSON-serialisable"),
    ("metadata-none", {"metadata": None}, TypeError, "metadata must be a dict"),
    ("metadata-set", {"metadata": {"s": {1, 2}}}, ValueError, "metadata['s']: set is not JSON-serialisable"),
    ("submit_time-none", {"submit_time": None}, TypeError, "submit_time must be a str"),
    ("task_id-nul", {"task_id": "a\x00b"}, ValueError, "task_id must not contain NUL"),
    ("backend-nul", {"backend": "sim\x00"}, ValueError, "backend must not contain NUL"),
    ("task_id-surrogate", {"task_id": "a\udcffb"}, ValueError, "task_id is not valid UTF-8"),
    ("metadata-surrogate", {"metadata": {"k": "\ud800"}}, ValueError, "metadata holds text that is not valid UTF-8"),
    ("result-surrogate-key", {"result": {"\udfff": 1}}, ValueError, "result holds text that is not valid UTF-8"),
]


@pytest.mark.parametrize(("changes", "error", "message"), [c[1:] for c in BAD_TASKS], ids=[c[0] for c in BAD_TASKS])
def test_a_bad_task_is_refused_and_the_stored_record_stays(
    store: TaskStore, changes: dict, error: type, message: str
) -> None:
    store.save(TaskInfo("t-1", "sim", shots=3, result={"ok": 1}, metadata={"m": 1}))
    before = store.get("t-1")
    fields = {"task_id": "t-1", "backend": "sim", **changes}
    bad = TaskInfo(**fields)
    stamp = bad.update_time
    with pytest.raises(error, match=re.escape(message)) as caught:
        store.save(bad)
    assert isinstance(caught.value, InvalidTaskError)
    assert bad.update_time == stamp
    assert store.get("t-1") == before
    assert store.count() == 1


def test_save_refuses_what_is_not_a_task_info(store: TaskStore) -> None:
    with pytest.raises(InvalidTaskTypeError, match="expected a TaskInfo, got dict"):
        store.save({"task_id": "x", "backend": "y"})


BAD_QUERIES = [
    ("list-status", lambda s: s.list(status="done"), ValueError, "status 'done' is not a TaskStatus value"),
    ("count-status", lambda s: s.count(status="nope"), ValueError, "status 'nope'"),
    ("list-limit-negative", lambda s: s.list(limit=-1), ValueError, "limit must not be negative"),
    ("list-offset-negative", lambda s: s.list(offset=-5), ValueError, "offset must not be negative"),
    ("list-limit-str", lambda s: s.list(limit="10"), TypeError, "limit must be an int"),
    ("list-limit-huge", lambda s: s.list(limit=2**64), ValueError, "limit must be at most"),
    ("list-offset-huge", lambda s: s.list(offset=2**63), ValueError, "offset must be at most"),
    ("get-surrogate", lambda s: s.get("\udcff"), ValueError, "task_id is not valid UTF-8"),
    ("delete-nul", lambda s: s.delete("a\x00"), ValueError, "task_id must not contain NUL"),
    ("clear-completed-unknown", lambda s: s.clear_completed(("success", "finished")), ValueError, "'finished'"),
    ("clear-completed-str", lambda s: s.clear_completed("success"), TypeError, "tuple or list"),
    ("get-int", lambda s: s.get(3), TypeError, "task_id must be a str"),
    ("delete-empty", lambda s: s.delete(""), ValueError, "task_id must not be empty"),
    ("list-backend-empty", lambda s: s.list(backend=""), ValueError, "backend must not be empty"),
]


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in BAD_QUERIES], ids=[c[0] for c in BAD_QUERIES])
def test_bad_query_arguments_are_refused_and_nothing_changes(
    store: TaskStore, call, error: type, message: str
) -> None:
    store.save(TaskInfo("t-1", "sim", status="success"))
    with pytest.raises(error, match=message):
        call(store)
    assert store.count() == 1


def test_a_cache_dir_that_is_a_file_is_refused_untouched(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_bytes(b"precious")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        TaskStore(target)
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cache_dir": 5}, TypeError, "cache_dir must be a path"),
        ({"url": "oracle://scott@db/x"}, UnsupportedDatabaseError, "supports sqlite, postgresql"),
        ({"url": "postgresql+asyncpg://u@h/d"}, UnsupportedDatabaseError, "'asyncpg' driver is not supported"),
        ({"url": "sqlite://"}, UnsupportedDatabaseError, "needs an SQLite file path"),
        ({"url": "not a url"}, UnsupportedDatabaseError, "not a valid database URL"),
        ({"url": "postgresql+psycopg://al:pw@host:abc/db"}, UnsupportedDatabaseError, "not a valid database URL"),
        ({"url": "sqlite:////tmp/x.sqlite?timeout=1"}, UnsupportedDatabaseError, "take no query parameters"),
    ],
    ids=["cache-dir-int", "oracle", "other-driver", "sqlite-memory", "garbage", "bad-port", "sqlite-query"],
)
def test_unusable_locations_are_refused(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TaskStore(**kwargs)


def test_cache_dir_and_url_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either cache_dir or url"):
        TaskStore(tmp_path, url=f"sqlite:///{tmp_path}/x.sqlite")


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql+psycopg://u@127.0.0.1/d", "postgresql"),
        ("pymysql", "mysql+pymysql://u@127.0.0.1/d", "mysql"),
    ],
    ids=["postgresql", "mysql"],
)
def test_a_missing_driver_names_the_extra_to_install(module: str, url: str, extra: str, tmp_path: Path) -> None:
    # A child interpreter where the driver cannot be imported, as on a machine without the extra.
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from uniqc_store import TaskStore, DriverNotInstalledError\n"
        "try:\n"
        f"    TaskStore(url={url!r})\n"
        "except DriverNotInstalledError as e:\n"
        "    assert isinstance(e, ImportError); print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert f"pip install 'uniqc_store[{extra}]'" in out.stdout


def test_task_info_round_trips_through_a_plain_dict() -> None:
    task = TaskInfo("t", "sim", status="success", result={"a": 1}, shots=5, metadata={"m": [1]})
    data = task.to_dict()
    assert data == {
        "task_id": "t", "backend": "sim", "status": "success", "result": {"a": 1}, "shots": 5,
        "submit_time": task.submit_time, "update_time": task.update_time, "metadata": {"m": [1]},
        "error_message": None, "archived_at": None,
    }
    assert list(data) == [field.name for field in dataclasses.fields(TaskInfo)]  # uniqc's field order
    assert TaskInfo.from_dict(data) == task
    # Records written before error_message and archived_at existed (uniqc < 0.0.11) still load.
    older = {key: value for key, value in data.items() if key not in ("error_message", "archived_at")}
    assert TaskInfo.from_dict(older) == task
    assert type(TaskInfo("t", "b").to_dict()["status"]) is str


def test_task_info_defaults() -> None:
    task = TaskInfo("t", "sim")
    assert (task.status, task.result, task.shots, task.metadata) == ("pending", None, 1000, {})
    assert task.submit_time.endswith("+00:00") and task.update_time.endswith("+00:00")
    assert TaskInfo("u", "sim").metadata is not task.metadata


@pytest.mark.parametrize(
    ("data", "message"),
    [({"backend": "b"}, "missing required keys"), ({"task_id": "t", "backend": "b", "colour": 1}, "unknown keys")],
    ids=["missing", "unknown"],
)
def test_from_dict_names_missing_and_unknown_keys(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskInfo.from_dict(data)


def test_a_cache_dir_that_cannot_be_created_is_a_clear_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatabaseError, match="cannot create the database"):
        TaskStore(blocker / "sub")
    assert blocker.read_text() == "x"
