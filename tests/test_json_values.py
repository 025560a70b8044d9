"""``result`` and ``metadata`` come back exactly as saved, or are refused with the key path named;
stored JSON is read back from any caller depth, and a row that cannot be read is a clear error."""

from __future__ import annotations

import enum
import json
import math
import sqlite3
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uniqc_store import (
    CorruptRecordError,
    DatabaseError,
    InvalidTaskError,
    InvalidTaskTypeError,
    StoreError,
    TaskInfo,
    TaskStore,
)
from uniqc_store.records import MAX_JSON_DEPTH

from dbutil import raw_rows


def nested(levels: int, kind: str = "dict") -> Any:
    """A value ``levels`` containers deep: {"x": {"x": ... {}}} or [[...[]]]."""
    value: Any = {} if kind == "dict" else []
    for _ in range(levels - 1):
        value = {"x": value} if kind == "dict" else [value]
    return value


def nested_text(levels: int) -> str:
    return "[" * levels + "]" * levels


def lists_nested(value: Any) -> int:
    """How deep ``value`` is, if it is [[...[]]] (counted without recursion; else -1)."""
    levels = 0
    while isinstance(value, list) and len(value) <= 1:
        levels += 1
        if not value:
            return levels
        value = value[0]
    return -1


def call_near_the_recursion_limit(function: Callable[[], Any], headroom: int = 50) -> Any:
    """Call ``function`` from a stack ``headroom`` frames short of the recursion limit."""
    target = sys.getrecursionlimit() - headroom

    def depth() -> int:
        frame, frames = sys._getframe(), 0
        while frame is not None:
            frames, frame = frames + 1, frame.f_back
        return frames

    def descend() -> Any:
        return function() if depth() >= target else descend()

    return descend()


def self_containing() -> dict:
    loop: dict = {"a": 1}
    loop["self"] = loop
    return loop


def list_containing_itself() -> list:
    loop: list = []
    loop.append(loop)
    return loop


# (id, field, value, error, message): each value would come back changed from JSON, or not at all.
REFUSED = [
    ("int-keys", "result", {0: 512, 1: 488}, InvalidTaskTypeError,
     "result: dict key 0 is int; JSON object keys must be str"),
    ("int-key-deep-inside", "result", {"a": [{0: 1}]}, InvalidTaskTypeError,
     "result['a'][0]: dict key 0 is int; JSON object keys must be str"),
    ("keys-that-would-collide", "metadata", {1: "t", "1": "str-key", None: "n"}, InvalidTaskTypeError,
     "metadata: dict key 1 is int; JSON object keys must be str"),
    ("none-key", "metadata", {"ok": 1, None: "n"}, InvalidTaskTypeError,
     "metadata: dict key None is NoneType; JSON object keys must be str"),
    ("bool-key", "result", {"m": {True: 1}}, InvalidTaskTypeError,
     "result['m']: dict key True is bool; JSON object keys must be str"),
    ("float-key", "result", {0.5: 1}, InvalidTaskTypeError,
     "result: dict key 0.5 is float; JSON object keys must be str"),
    ("tuple", "metadata", {"qubits": (0, 1)}, InvalidTaskTypeError,
     "metadata['qubits']: tuple would come back from JSON as a list; pass a list instead"),
    ("tuple-deep-inside", "result", {"a": {"b": [1, {"c": (1,)}]}}, InvalidTaskTypeError,
     "result['a']['b'][1]['c']: tuple would come back from JSON as a list"),
    ("set", "metadata", {"s": {1, 2}}, InvalidTaskTypeError,
     "metadata['s']: set is not JSON-serialisable; use dict (with str keys), list, str, int, float, bool or None"),
    ("bytes-in-a-list", "result", {"raw": [b"\x00"]}, InvalidTaskTypeError,
     "result['raw'][0]: bytes is not JSON-serialisable"),
    ("object", "result", {"x": object()}, InvalidTaskTypeError, "result['x']: object is not JSON-serialisable"),
    ("one-level-too-deep", "result", {"x": nested(MAX_JSON_DEPTH)}, InvalidTaskError,
     f"result['x']['x']['x']['x']...['x']['x']['x']: nested 101 levels deep; "
     f"the limit is MAX_JSON_DEPTH = {MAX_JSON_DEPTH}"),
    ("far-too-deep-lists", "metadata", {"l": nested(5000, "list")}, InvalidTaskError,
     "metadata['l'][0][0][0]...[0][0][0]: nested 101 levels deep"),
    ("dict-containing-itself", "metadata", {"loop": self_containing()}, InvalidTaskError,
     "metadata['loop']['self']: circular reference (the value contains itself)"),
    ("list-containing-itself", "result", {"l": list_containing_itself()}, InvalidTaskError,
     "result['l'][0]: circular reference (the value contains itself)"),
]


@pytest.mark.parametrize(
    ("field", "value", "error", "message"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_a_value_json_would_change_is_refused_naming_the_field_and_key_path(
    sqlite_store: TaskStore, field: str, value: dict, error: type, message: str
) -> None:
    sqlite_store.save(TaskInfo("t-1", "sim", result={"kept": 1}, metadata={"kept": 2}))
    before = sqlite_store.get("t-1")
    with pytest.raises(error) as caught:
        sqlite_store.save(TaskInfo("t-1", "sim", **{field: value}))
    assert str(caught.value).startswith(message)
    assert sqlite_store.get("t-1") == before


def test_save_many_puts_the_task_index_before_the_key_path(sqlite_store: TaskStore) -> None:
    tasks = [TaskInfo("t-0", "sim"), TaskInfo("t-1", "sim", result={"counts": {0: 1}})]
    with pytest.raises(InvalidTaskTypeError, match=r"^tasks\[1\]: result\['counts'\]: dict key 0 is int"):
        sqlite_store.save_many(tasks)
    assert sqlite_store.count() == 0


class Label(str, enum.Enum):
    BELL = "bell"


class Level(enum.IntEnum):
    HIGH = 3


class Probability(float):
    pass


# Values whose JSON text decodes to an equal value: kept, with the same text uniqc's json.dumps writes.
KEPT = {
    "uniqc-counts-and-metadata": {"counts": {"00": 512, "11": 488}, "circuit_ir": "QINIT 2", "warnings": []},
    "big-and-negative-numbers": {"big": 2**100, "neg": -(2**70), "zero": -0.0, "tiny": 5e-324},
    "subclasses-of-json-types": {
        "ordered": OrderedDict(a=1), "counter": Counter(a=2), "label": Label.BELL, "level": Level.HIGH,
        "p": Probability(0.25), Label.BELL: "str-enum key",
    },
    "exactly-max-depth": nested(MAX_JSON_DEPTH),
    "max-depth-of-lists": {"l": nested(MAX_JSON_DEPTH - 1, "list")},
    "shared-but-not-circular": (lambda shared: {"a": shared, "b": [shared, shared]})({"s": [1]}),
}


@pytest.mark.parametrize("value", list(KEPT.values()), ids=list(KEPT))
def test_a_json_value_is_kept_exactly_in_uniqcs_text(store: TaskStore, db_url: str, value: dict) -> None:
    store.save(TaskInfo("t-1", "sim", result=value, metadata=value))
    got = store.get("t-1")
    assert got.result == value and got.metadata == value
    text = json.dumps(value, ensure_ascii=False)
    assert raw_rows(db_url, "SELECT result_json, metadata_json FROM tasks") == [(text, text)]


def test_nan_and_infinities_are_kept_as_uniqc_writes_them(store: TaskStore, db_url: str) -> None:
    value = {"nan": float("nan"), "inf": float("inf"), "ninf": [float("-inf")]}
    store.save(TaskInfo("t-1", "sim", result=value, metadata={"fidelity": float("nan")}))
    got = store.get("t-1")
    assert math.isnan(got.result["nan"]) and got.result["inf"] == math.inf and got.result["ninf"] == [-math.inf]
    assert math.isnan(got.metadata["fidelity"])
    assert raw_rows(db_url, "SELECT result_json, metadata_json FROM tasks") == [
        ('{"nan": NaN, "inf": Infinity, "ninf": [-Infinity]}', '{"fidelity": NaN}')
    ]


def test_a_value_at_the_depth_limit_saves_and_reads_back_from_a_deep_call_stack(store: TaskStore) -> None:
    deepest = {"r": nested(MAX_JSON_DEPTH - 1, "list")}
    call_near_the_recursion_limit(lambda: store.save(TaskInfo("deep", "sim", result=deepest, metadata=deepest)))
    call_near_the_recursion_limit(lambda: store.save_many([TaskInfo("deep-2", "sim", result=deepest)]))
    listed = call_near_the_recursion_limit(store.list)
    assert [(t.result, t.metadata) for t in listed] == [(deepest, {}), (deepest, deepest)]
    assert call_near_the_recursion_limit(lambda: store.get("deep")).metadata == deepest


def write_raw_rows(path: Path, rows: list[tuple[str, Any, Any]]) -> None:
    """Insert (task_id, result_json, metadata_json) rows with plain sqlite3, as uniqc would."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO tasks (task_id, backend, status, shots, submit_time, update_time, result_json, "
            "metadata_json) VALUES (?, 'sim', 'success', 10, ?, '2026-01-01T00:00:00+00:00', ?, ?)",
            [(task_id, f"2026-01-01T00:00:0{i}+00:00", result, metadata)
             for i, (task_id, result, metadata) in enumerate(rows)],
        )
    conn.close()


def test_a_row_nested_990_deep_by_another_writer_lists_from_a_deep_call_stack(sqlite_store: TaskStore) -> None:
    write_raw_rows(sqlite_store.db_path, [("deep", nested_text(990), nested_text(990)), ("flat", '{"00": 5}', "{}")])
    listed = call_near_the_recursion_limit(sqlite_store.list)
    assert [t.task_id for t in listed] == ["flat", "deep"]
    assert lists_nested(listed[1].result) == lists_nested(listed[1].metadata) == 990
    assert lists_nested(call_near_the_recursion_limit(lambda: sqlite_store.get("deep")).result) == 990


# (id, result_json, metadata_json, field named in the error, reason in the error)
UNREADABLE = [
    ("truncated-result", '{"00": ', "{}", "result", "JSONDecodeError: Expecting value"),
    ("metadata-not-json", '{"00": 1}', "{'python': 'repr'}", "metadata", "JSONDecodeError: Expecting property name"),
    ("deeper-than-any-stack", nested_text(5000), "{}", "result", "nests deeper than Python's json can decode"),
    ("result-a-blob-not-utf8", b'{"a": "\xff"}', "{}", "result", "UnicodeDecodeError"),
]


@pytest.mark.parametrize(
    ("result_json", "metadata_json", "field", "reason"),
    [case[1:] for case in UNREADABLE], ids=[case[0] for case in UNREADABLE],
)
def test_a_row_that_cannot_be_decoded_is_a_corrupt_record_error_naming_task_and_field(
    sqlite_store: TaskStore, result_json: Any, metadata_json: Any, field: str, reason: str
) -> None:
    sqlite_store.save(TaskInfo("good", "sim", submit_time="2025-01-01T00:00:00+00:00", result={"00": 1}))
    write_raw_rows(sqlite_store.db_path, [("bad", result_json, metadata_json)])
    for read in (sqlite_store.list, lambda: sqlite_store.get("bad"),
                 lambda: call_near_the_recursion_limit(sqlite_store.list)):
        with pytest.raises(CorruptRecordError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"task 'bad': its {field} (column {field}_json) cannot be decoded: ")
        assert reason in message and "delete('bad')" in message
        assert isinstance(caught.value, DatabaseError) and isinstance(caught.value, StoreError)
    assert sqlite_store.get("good").result == {"00": 1}
    assert sqlite_store.delete("bad")
    assert [t.task_id for t in sqlite_store.list()] == ["good"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (None, "tasks must be an iterable of TaskInfo, got NoneType"),
        (5, "tasks must be an iterable of TaskInfo, got int"),
        (TaskInfo("t-1", "sim"), "tasks must be an iterable of TaskInfo, got TaskInfo; use save() for a single task"),
    ],
    ids=["none", "int", "a-lone-task"],
)
def test_save_many_of_something_not_iterable_names_the_tasks_argument(
    sqlite_store: TaskStore, tasks: Any, message: str
) -> None:
    with pytest.raises(InvalidTaskTypeError) as caught:
        sqlite_store.save_many(tasks)
    assert str(caught.value) == message
    assert isinstance(caught.value, TypeError)
    assert sqlite_store.count() == 0
