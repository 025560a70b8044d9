"""Task records as callers see them: :class:`TaskStatus`, :class:`TaskInfo`, and their validation.

The conversion between a :class:`TaskInfo` and a row of the v1 ``tasks`` table lives here too,
so that every backend stores exactly the same text.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from .errors import CorruptRecordError, InvalidTaskError, InvalidTaskTypeError

TERMINAL_STATUSES: tuple[str, ...] = ("success", "failed", "cancelled")

#: Longest ``task_id`` and ``backend`` accepted, on every backend. MySQL cannot index ``TEXT``, so
#: these columns are ``VARCHAR(255)`` there; the same limit everywhere keeps the semantics equal.
MAX_KEY_LENGTH = 255
#: Longest ``submit_time``/``update_time`` string accepted (``VARCHAR(64)`` on MySQL).
MAX_TIME_LENGTH = 64
#: Largest ``shots`` value: a signed 64-bit integer, what every backend's column holds.
MAX_SHOTS = 2**63 - 1
#: Deepest nesting of dicts and lists accepted in ``result`` and ``metadata`` (``{}`` is 1 deep,
#: ``{"a": [1]}`` 2). Python's json (its C encoder and decoder, and the indenting encoder that
#: ``uniqc-store show`` uses) takes one unit of the recursion limit (1000 by default) per level, on
#: top of the caller's own frames: 100 leaves any caller up to 900 frames deep, and deeper ones are
#: served on a fresh thread (dump_json, load_json). MySQL limits its JSON documents to 100 levels
#: too; real payloads (counts, probabilities, SDK responses) nest fewer than 10.
MAX_JSON_DEPTH = 100


class TaskStatus(str, Enum):
    """Enumeration of task statuses; members compare equal to their plain string values."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


# One encoder and one decoder for every call: json.dumps() with options builds a new one each
# time. NaN and Infinity are allowed, as uniqc's plain json.dumps() allows them: Python's json reads
# them back exactly.
_encode = json.JSONEncoder(ensure_ascii=False).encode
_decode = json.JSONDecoder().decode
_STATUS_VALUES = frozenset(s.value for s in TaskStatus)
_ALLOWED_STATUSES = ", ".join(s.value for s in TaskStatus)


def utc_now() -> str:
    """Return the current time as an ISO 8601 string in UTC with an explicit offset."""
    return datetime.now(timezone.utc).isoformat()


@dataclass
class TaskInfo:
    """Information about a submitted task.

    Attributes:
        task_id: Unique identifier for the task.
        backend: The backend where the task was submitted.
        status: Current status of the task (a :class:`TaskStatus` value).
        result: Task result (if completed): a JSON-serialisable dict, or None.
        shots: Number of shots requested.
        submit_time: ISO format timestamp of submission.
        update_time: ISO format timestamp of the last status update.
        metadata: Additional metadata about the task: a JSON-serialisable dict.
    """

    task_id: str
    backend: str
    status: str = TaskStatus.PENDING
    result: dict[str, Any] | None = None
    shots: int = 1000
    submit_time: str = field(default_factory=utc_now)
    update_time: str = field(default_factory=utc_now)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, JSON-serialisable dict of the fields (status as its plain value)."""
        status = self.status.value if isinstance(self.status, TaskStatus) else self.status
        return {
            "task_id": self.task_id,
            "backend": self.backend,
            "status": status,
            "result": self.result,
            "shots": self.shots,
            "submit_time": self.submit_time,
            "update_time": self.update_time,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskInfo:
        """Create a :class:`TaskInfo` from a dict such as :meth:`to_dict` returns.

        Raises:
            InvalidTaskTypeError: ``data`` is not a dict.
            InvalidTaskError: a required key is missing or an unknown key is present.
        """
        if not isinstance(data, dict):
            raise InvalidTaskTypeError(f"TaskInfo.from_dict expects a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            raise InvalidTaskError(f"TaskInfo.from_dict: unknown keys {unknown}; known keys: {sorted(_FIELD_NAMES)}")
        missing = [key for key in ("task_id", "backend") if key not in data]
        if missing:
            raise InvalidTaskError(f"TaskInfo.from_dict: missing required keys {missing}")
        return cls(**data)


_FIELD_NAMES = frozenset(TaskInfo.__dataclass_fields__)


def status_value(status: object, *, argument: str = "status") -> str:
    """Return the plain value of a status given as a :class:`TaskStatus` member or its string value.

    Raises:
        InvalidTaskTypeError: ``status`` is not a string.
        InvalidTaskError: ``status`` is not one of the :class:`TaskStatus` values.
    """
    if isinstance(status, TaskStatus):
        return status.value
    if not isinstance(status, str):
        raise InvalidTaskTypeError(
            f"{argument} must be a TaskStatus or one of {_ALLOWED_STATUSES}; got {type(status).__name__} {status!r}"
        )
    if status not in _STATUS_VALUES:
        raise InvalidTaskError(f"{argument} {status!r} is not a TaskStatus value; allowed: {_ALLOWED_STATUSES}")
    return status


def status_values(statuses: Iterable[object], *, argument: str = "terminal_statuses") -> list[str]:
    """Validate a collection of statuses (see :func:`status_value`); a lone string is refused."""
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise InvalidTaskTypeError(f"{argument} must be a tuple or list of statuses, got {statuses!r}")
    return [status_value(s, argument=f"{argument} entry") for s in statuses]


def check_limit(value: object, argument: str) -> int | None:
    """Validate ``limit``/``offset``: None or a non-negative int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTaskTypeError(f"{argument} must be an int or None, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidTaskError(f"{argument} must not be negative, got {value}")
    if value > MAX_SHOTS:
        raise InvalidTaskError(f"{argument} must be at most {MAX_SHOTS}, got {value}")
    return value


def check_text(value: object, name: str, max_length: int | None = None) -> str:
    """Validate a required, non-empty string (of at most ``max_length`` characters, if given)."""
    if not isinstance(value, str):
        raise InvalidTaskTypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise InvalidTaskError(f"{name} must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidTaskError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    if "\x00" in value:
        raise InvalidTaskError(f"{name} must not contain NUL characters")  # PostgreSQL cannot store them
    _check_utf8(value, f"{name} is not valid UTF-8 text (it has a lone surrogate)")
    return value


def dump_json(value: object, name: str) -> str:
    """Encode a dict field as JSON text that decodes to an equal value.

    Raises:
        InvalidTaskTypeError: ``value`` is not a dict, or holds something JSON would change or
            cannot encode (a key that is not a str, a tuple, a set ...); the message names the
            field and the key path, e.g. ``result['a'][0]: dict key 0 is int; ...``.
        InvalidTaskError: ``value`` nests deeper than :data:`MAX_JSON_DEPTH`, contains itself,
            or holds text that is not valid UTF-8.
    """
    if not isinstance(value, dict):
        raise InvalidTaskTypeError(f"{name} must be a dict, got {type(value).__name__}")
    _check_json_value(value, name)
    try:
        try:
            text = _encode(value)
        except RecursionError:
            # The value is at most MAX_JSON_DEPTH deep (checked above): the caller's stack is what
            # is deep, and json's C encoder counts its levels against it.
            text = _in_fresh_thread(_encode, value)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of more than 4300 digits
        raise InvalidTaskError(f"{name} is not JSON-serialisable: {exc}") from exc
    _check_utf8(text, f"{name} holds text that is not valid UTF-8 (a lone surrogate)")
    return text


_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))
_STR_TYPE = frozenset((str,))


def _check_json_value(value: dict[str, Any], name: str) -> None:
    """Refuse anything in ``value`` that JSON would lose, change or fail on.

    One iterative pass over the containers (no recursion, so any caller depth is fine) that also
    bounds the depth. A container of plain str keys and scalar values costs two C-level scans.
    Subclasses of str, int, float, dict and list pass: JSON gives back equal values.
    """
    todo: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while todo:
        node, depth, path = todo.pop()
        if isinstance(node, dict):
            if not _STR_TYPE.issuperset(map(type, node)):
                _check_keys(node, name, path)
            if _SCALAR_TYPES.issuperset(map(type, node.values())):
                continue
            items: Iterable[tuple[Any, Any]] = node.items()
        else:
            if _SCALAR_TYPES.issuperset(map(type, node)):
                continue
            items = enumerate(node)
        for key, item in items:
            kind = type(item)
            if kind in _SCALAR_TYPES:
                continue
            if kind is dict or kind is list or isinstance(item, (dict, list)):
                if depth >= MAX_JSON_DEPTH:
                    _refuse_depth(value, name, (*path, key))
                todo.append((item, depth + 1, (*path, key)))
            elif not isinstance(item, (str, int, float)):
                _refuse_type(item, name, (*path, key))


def _where(name: str, path: tuple[Any, ...]) -> str:
    """``result['a'][0]``; long paths keep their first and last steps."""
    steps = [f"[{key!r}]" for key in path]
    if len(steps) > 8:
        steps[4:-3] = ["..."]
    return name + "".join(steps)


def _check_keys(node: dict[Any, Any], name: str, path: tuple[Any, ...]) -> None:
    # JSON object keys are strings: json.dumps would write 0 and '0' alike (and True, None as
    # 'true', 'null'), so such a key comes back changed, or overwrites another.
    for key in node:
        if not isinstance(key, str):
            raise InvalidTaskTypeError(
                f"{_where(name, path)}: dict key {key!r} is {type(key).__name__}; JSON object keys must be str"
            )


def _refuse_type(item: object, name: str, path: tuple[Any, ...]) -> None:
    kind = type(item).__name__
    if isinstance(item, tuple):
        raise InvalidTaskTypeError(
            f"{_where(name, path)}: {kind} would come back from JSON as a list; pass a list instead"
        )
    raise InvalidTaskTypeError(
        f"{_where(name, path)}: {kind} is not JSON-serialisable; "
        "use dict (with str keys), list, str, int, float, bool or None"
    )


def _refuse_depth(value: dict[str, Any], name: str, path: tuple[Any, ...]) -> None:
    # A container that contains itself is endlessly deep: say so (only on this error path).
    seen = {id(value)}
    node: Any = value
    for step, key in enumerate(path):
        node = node[key]
        if id(node) in seen:
            raise InvalidTaskError(f"{_where(name, path[: step + 1])}: circular reference (the value contains itself)")
        seen.add(id(node))
    raise InvalidTaskError(
        f"{_where(name, path)}: nested {len(path) + 1} levels deep; the limit is MAX_JSON_DEPTH = {MAX_JSON_DEPTH}"
    )


def _in_fresh_thread(function: Callable[[Any], Any], argument: Any) -> Any:
    """Return ``function(argument)`` run on a new thread, whose stack is empty; re-raise its error."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, function(argument)))
        except BaseException as exc:  # noqa: BLE001 - handed over to the calling thread, which re-raises it
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="uniqc_store-json", daemon=True)
    worker.start()
    worker.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def load_json(text: Any, task_id: str, name: str) -> Any:
    """Decode the stored JSON text of field ``name`` of task ``task_id``, from any caller depth.

    Raises:
        CorruptRecordError: the text is not JSON, or nests deeper than Python's json can decode
            even on an empty stack.
    """
    try:
        try:
            return json.loads(text)
        except RecursionError:
            # Rows written by uniqc or older versions may nest deeper than MAX_JSON_DEPTH, and
            # json's C decoder counts its levels against the caller's stack: retry on an empty one.
            return _in_fresh_thread(json.loads, text)
    except RecursionError:
        reason = f"it nests deeper than Python's json can decode (recursion limit {sys.getrecursionlimit()})"
        error: BaseException | None = None
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        reason, error = f"{type(exc).__name__}: {exc}", exc
    raise CorruptRecordError(
        f"task {task_id!r}: its {name} (column {name}_json) cannot be decoded: {reason}. The row is left as "
        f"it is; the other tasks can still be read with get(), and this one removed with delete({task_id!r})"
    ) from error


def _check_utf8(text: str, message: str) -> None:
    # Python strings may hold lone surrogates, which no database driver can encode.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTaskError(message) from None


def task_row(task: TaskInfo, update_time: str) -> dict[str, Any]:
    """Validate ``task`` and return the column values of its v1 row, stamped with ``update_time``.

    Raises:
        InvalidTaskTypeError, InvalidTaskError: a field is invalid; the message names it.
    """
    if not isinstance(task, TaskInfo):
        raise InvalidTaskTypeError(f"expected a TaskInfo, got {type(task).__name__}")
    shots = task.shots
    if isinstance(shots, bool) or not isinstance(shots, int):
        raise InvalidTaskTypeError(f"shots must be an int, got {type(shots).__name__} {shots!r}")
    if not 0 <= shots <= MAX_SHOTS:
        raise InvalidTaskError(f"shots must be between 0 and {MAX_SHOTS}, got {shots}")
    result = task.result
    return {
        "task_id": check_text(task.task_id, "task_id", MAX_KEY_LENGTH),
        "backend": check_text(task.backend, "backend", MAX_KEY_LENGTH),
        "status": status_value(task.status),
        "shots": shots,
        "submit_time": check_text(task.submit_time, "submit_time", MAX_TIME_LENGTH),
        "update_time": update_time,
        "result_json": None if result is None else dump_json(result, "result"),
        "metadata_json": dump_json(task.metadata, "metadata"),
    }


def task_from_row(row: Any) -> TaskInfo:
    """Build a :class:`TaskInfo` from a row of the v1 columns, in table order.

    Raises:
        CorruptRecordError: ``result_json`` or ``metadata_json`` cannot be decoded.
    """
    task_id, backend, status, shots, submit_time, update_time, result_json, metadata_json = row
    try:
        result = None if result_json is None else _decode(result_json)
        metadata = _decode(metadata_json) if metadata_json else {}
    except (RecursionError, ValueError, TypeError):
        # Rare: a row too deep for this caller's stack, or not JSON text; load_json sorts it out.
        result = None if result_json is None else load_json(result_json, task_id, "result")
        metadata = load_json(metadata_json, task_id, "metadata") if metadata_json else {}
    return TaskInfo(
        task_id=task_id,
        backend=backend,
        status=status,
        result=result,
        shots=shots,
        submit_time=submit_time,
        update_time=update_time,
        metadata=metadata,
    )


__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_SHOTS",
    "MAX_TIME_LENGTH",
    "TERMINAL_STATUSES",
    "TaskInfo",
    "TaskStatus",
    "utc_now",
]
