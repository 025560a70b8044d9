"""Records as callers see them: :class:`TaskStatus`, :class:`TaskInfo`, :class:`TaskShard`, uniqc's
task ids, and the checks of every field and argument.

The JSON text of ``result`` and ``metadata`` is made and read here (:func:`dump_json`,
:func:`load_json`), so that every backend stores exactly the same text; which column holds which
field is ``rows.py``'s business.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
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
#: Largest ``shard_index``, ``circuit_count`` and ``sub_index_offset``: a signed 32-bit integer,
#: what every backend's ``INTEGER`` column holds (SQLite's holds more; PostgreSQL's and MySQL's not).
MAX_SHARD_NUMBER = 2**31 - 1
#: How uniqc's own task ids begin: ``uqt_`` and 32 lowercase hex digits (a random UUID4).
UNIQC_TASK_ID_PREFIX = "uqt_"
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
#: Decodes stored JSON text on the hot path (rows.py); what it cannot decode goes to load_json.
decode_json = json.JSONDecoder().decode
_STATUS_VALUES = frozenset(s.value for s in TaskStatus)
_ALLOWED_STATUSES = ", ".join(s.value for s in TaskStatus)


def utc_now() -> str:
    """Return the current time as an ISO 8601 string in UTC with an explicit offset."""
    return datetime.now(timezone.utc).isoformat()


def generate_uniqc_task_id() -> str:
    """Return a new uniqc task id: :data:`UNIQC_TASK_ID_PREFIX` and the 32 hex digits of a UUID4."""
    return UNIQC_TASK_ID_PREFIX + uuid.uuid4().hex


def is_uniqc_task_id(task_id: object) -> bool:
    """True if ``task_id`` is a str that starts with :data:`UNIQC_TASK_ID_PREFIX` (uniqc's own test,
    which its v5 upgrade also uses to leave such rows alone)."""
    return isinstance(task_id, str) and task_id.startswith(UNIQC_TASK_ID_PREFIX)


@dataclass
class TaskInfo:
    """Information about a submitted task.

    Attributes:
        task_id: Unique identifier for the task.
        backend: The backend where the task was submitted.
        status: Current status of the task (a :class:`TaskStatus` value).
        result: Task result (if completed): a JSON-serialisable dict, a list (uniqc stores one
            per circuit for a batch), or None.
        shots: Number of shots requested.
        submit_time: ISO format timestamp of submission.
        update_time: ISO format timestamp of the last status update.
        metadata: Additional metadata about the task: a JSON-serialisable dict.
        error_message: Why a task failed or was cancelled, as the platform or adapter said; None
            while it runs or when it succeeded.
        archived_at: When the task was archived (:meth:`TaskStore.archive_task`); None for a
            live task. Set by the store on records it reads from the archive; ``save`` ignores it.
    """

    task_id: str
    backend: str
    status: str = TaskStatus.PENDING
    result: dict[str, Any] | list[Any] | None = None
    shots: int = 1000
    submit_time: str = field(default_factory=utc_now)
    update_time: str = field(default_factory=utc_now)
    metadata: dict[str, Any] = field(default_factory=dict)
    error_message: str | None = None
    archived_at: str | None = None

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
            "error_message": self.error_message,
            "archived_at": self.archived_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskInfo:
        """Create a :class:`TaskInfo` from a dict such as :meth:`to_dict` returns. Keys with
        defaults may be missing (dicts made before ``error_message`` and ``archived_at`` existed).

        Raises:
            InvalidTaskTypeError: ``data`` is not a dict.
            InvalidTaskError: a required key is missing or an unknown key is present.
        """
        return cls(**_from_dict(cls, data, ("task_id", "backend")))


@dataclass
class TaskShard:
    """One platform-side job of a uniqc task: a task has one shard per job it was split into.

    Attributes:
        uniqc_task_id: The ``task_id`` of the task it belongs to (``uqt_...``).
        shard_index: Its place among the task's shards, from 0.
        platform_task_id: The id the cloud platform gave the job.
        backend: The backend it was submitted to.
        circuit_count: How many of the task's circuits the job runs.
        sub_index_offset: Index of its first circuit in the task's list of circuits.
        status: Its own status (a :class:`TaskStatus` value); see :meth:`TaskStore.aggregate_status`.
        result: Its result: a JSON-serialisable dict (one circuit), a list (a batch), or None.
        error_message: Why it failed, if it did.
        submit_time: ISO format timestamp of its submission.
        update_time: ISO format timestamp of its last status update.
    """

    uniqc_task_id: str
    shard_index: int
    platform_task_id: str
    backend: str
    circuit_count: int = 1
    sub_index_offset: int = 0
    status: str = TaskStatus.PENDING
    result: dict[str, Any] | list[Any] | None = None
    error_message: str | None = None
    submit_time: str = field(default_factory=utc_now)
    update_time: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, JSON-serialisable dict of the fields (status as its plain value)."""
        status = self.status.value if isinstance(self.status, TaskStatus) else self.status
        return {
            "uniqc_task_id": self.uniqc_task_id,
            "shard_index": self.shard_index,
            "platform_task_id": self.platform_task_id,
            "backend": self.backend,
            "circuit_count": self.circuit_count,
            "sub_index_offset": self.sub_index_offset,
            "status": status,
            "result": self.result,
            "error_message": self.error_message,
            "submit_time": self.submit_time,
            "update_time": self.update_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskShard:
        """Create a :class:`TaskShard` from a dict such as :meth:`to_dict` returns.

        Raises:
            InvalidTaskTypeError: ``data`` is not a dict.
            InvalidTaskError: a required key is missing or an unknown key is present.
        """
        return cls(**_from_dict(cls, data, ("uniqc_task_id", "shard_index", "platform_task_id", "backend")))


def _from_dict(cls: type[Any], data: object, required: tuple[str, ...]) -> dict[str, Any]:
    where = f"{cls.__name__}.from_dict"
    if not isinstance(data, dict):
        raise InvalidTaskTypeError(f"{where} expects a dict, got {type(data).__name__}")
    known = cls.__dataclass_fields__
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        raise InvalidTaskError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
    missing = [key for key in required if key not in data]
    if missing:
        raise InvalidTaskError(f"{where}: missing required keys {missing}")
    return data


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


def check_int(value: object, name: str, maximum: int) -> int:
    """Validate an int (not a bool) between 0 and ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTaskTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= maximum:
        raise InvalidTaskError(f"{name} must be between 0 and {maximum}, got {value}")
    return int(value)  # an int subclass (IntEnum, numpy's are not) binds as the plain value


def check_optional_text(value: object, name: str, max_length: int | None = None) -> str | None:
    """Validate None or a string, which may be empty (``error_message``, ``archived_at``)."""
    return None if value is None else check_text(value, name, max_length, empty=True)


def check_text(value: object, name: str, max_length: int | None = None, *, empty: bool = False) -> str:
    """Validate a string (non-empty unless ``empty``, of at most ``max_length`` characters if given)."""
    if not isinstance(value, str):
        raise InvalidTaskTypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value and not empty:
        raise InvalidTaskError(f"{name} must not be empty")
    if max_length is not None and len(value) > max_length:
        raise InvalidTaskError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    if "\x00" in value:
        raise InvalidTaskError(f"{name} must not contain NUL characters")  # PostgreSQL cannot store them
    _check_utf8(value, f"{name} is not valid UTF-8 text (it has a lone surrogate)")
    return value


def dump_json(value: object, name: str, *, lists: bool = False) -> str:
    """Encode a dict field (a dict or a list, if ``lists``) as JSON text that decodes to an equal value.

    Raises:
        InvalidTaskTypeError: ``value`` is not a dict (or list), or holds something JSON would
            change or cannot encode (a key that is not a str, a tuple, a set ...); the message
            names the field and the key path, e.g. ``result['a'][0]: dict key 0 is int; ...``.
        InvalidTaskError: ``value`` nests deeper than :data:`MAX_JSON_DEPTH`, contains itself,
            or holds text that is not valid UTF-8.
    """
    if not isinstance(value, dict) and not (lists and isinstance(value, list)):
        kinds = "a dict or a list" if lists else "a dict"
        hint = "; pass a list instead (JSON would give a list back)" if lists and isinstance(value, tuple) else ""
        raise InvalidTaskTypeError(f"{name} must be {kinds}, got {type(value).__name__}{hint}")
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


def _check_json_value(value: dict[str, Any] | list[Any], name: str) -> None:
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


def _refuse_depth(value: dict[str, Any] | list[Any], name: str, path: tuple[Any, ...]) -> None:
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


def load_json(text: Any, record: str, name: str, remedy: str) -> Any:
    """Decode the stored JSON text of field ``name`` of ``record`` (``"task 'x'"``), from any
    caller depth; ``remedy`` is the call that removes the record (``"delete('x')"``).

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
        f"{record}: its {name} (column {name}_json) cannot be decoded: {reason}. The row is left as "
        f"it is; the other tasks can still be read with get(), and this one removed with {remedy}"
    ) from error


def _check_utf8(text: str, message: str) -> None:
    # Python strings may hold lone surrogates, which no database driver can encode.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTaskError(message) from None



# -- what each field must be, and the value it is stored as ------------------------------------------
# By field name; rows.py finds each field's column in the models. update_time is not here: the
# store stamps it. A field without a column (archived_at of a live task) is checked, not stored.

FieldCheck = Callable[[Any], Any]


def _key(name: str) -> FieldCheck:
    return lambda value: check_text(value, name, MAX_KEY_LENGTH)


def _time(name: str) -> FieldCheck:
    return lambda value: check_text(value, name, MAX_TIME_LENGTH)


def _number(name: str) -> FieldCheck:
    return lambda value: check_int(value, name, MAX_SHARD_NUMBER)


def _result(value: object) -> str | None:
    return None if value is None else dump_json(value, "result", lists=True)


def _error_message(value: object) -> str | None:
    return check_optional_text(value, "error_message")


TASK_FIELD_CHECKS: dict[str, FieldCheck] = {
    "task_id": _key("task_id"),
    "backend": _key("backend"),
    "status": status_value,
    "shots": lambda value: check_int(value, "shots", MAX_SHOTS),
    "submit_time": _time("submit_time"),
    "result": _result,
    "metadata": lambda value: dump_json(value, "metadata"),
    "error_message": _error_message,
    "archived_at": lambda value: check_optional_text(value, "archived_at", MAX_TIME_LENGTH),
}

SHARD_FIELD_CHECKS: dict[str, FieldCheck] = {
    "uniqc_task_id": _key("uniqc_task_id"),
    "shard_index": _number("shard_index"),
    "platform_task_id": _key("platform_task_id"),
    "backend": _key("backend"),
    "circuit_count": _number("circuit_count"),
    "sub_index_offset": _number("sub_index_offset"),
    "status": status_value,
    "result": _result,
    "error_message": _error_message,
    "submit_time": _time("submit_time"),
}


__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_SHARD_NUMBER",
    "MAX_SHOTS",
    "MAX_TIME_LENGTH",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "TaskInfo",
    "TaskShard",
    "TaskStatus",
    "generate_uniqc_task_id",
    "is_uniqc_task_id",
    "utc_now",
]
