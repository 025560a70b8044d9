"""get, list, count, delete, clear_completed and clear_all, on every backend."""

from __future__ import annotations

import pytest

from uniqc_store import TERMINAL_STATUSES, TaskInfo, TaskStatus, TaskStore
from uniqc_store.schema import STORE_HEAD

from dbutil import raw_rows


def _task(task_id: str, submit_time: str, status: str = "pending", backend: str = "sim") -> TaskInfo:
    return TaskInfo(task_id, backend, status=status, submit_time=submit_time)


@pytest.fixture
def populated(store: TaskStore) -> TaskStore:
    store.save(_task("a", "2026-01-01T00:00:00+00:00", "success", "sim"))
    store.save(_task("b", "2026-01-03T00:00:00+00:00", "running", "real"))
    store.save(_task("c", "2026-01-02T00:00:00+00:00", "failed", "sim"))
    store.save(_task("d", "2026-01-04T00:00:00+00:00", "cancelled", "real"))
    store.save(_task("e", "2026-01-05T00:00:00+00:00", "pending", "sim"))
    return store


def ids(tasks: list[TaskInfo]) -> list[str]:
    return [t.task_id for t in tasks]


def test_get_of_a_missing_task_is_none(store: TaskStore) -> None:
    assert store.get("nope") is None


def test_list_is_newest_first_by_submit_time(populated: TaskStore) -> None:
    assert ids(populated.list()) == ["e", "d", "b", "c", "a"]


def test_equal_submit_times_list_the_most_recently_inserted_first(store: TaskStore) -> None:
    for name in ["m", "z", "a", "k"]:
        store.save(_task(name, "2026-06-01T00:00:00+00:00"))
    store.save(_task("z", "2026-06-01T00:00:00+00:00", "running"))  # an update keeps its place
    assert ids(store.list()) == ["k", "a", "z", "m"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"status": "success"}, ["a"]),
        ({"status": TaskStatus.RUNNING}, ["b"]),
        ({"backend": "sim"}, ["e", "c", "a"]),
        ({"backend": "sim", "status": "failed"}, ["c"]),
        ({"backend": "nowhere"}, []),
        ({"limit": 2}, ["e", "d"]),
        ({"limit": 0}, []),
        ({"limit": 2, "offset": 1}, ["d", "b"]),
        ({"offset": 3}, ["c", "a"]),
        ({"offset": 10}, []),
        ({"backend": "real", "limit": 1, "offset": 1}, ["b"]),
    ],
    ids=["status", "status-enum", "backend", "both", "no-match", "limit", "limit-0", "limit-offset",
         "offset-only", "offset-past-end", "filter-limit-offset"],
)
def test_list_filters_and_pages(populated: TaskStore, kwargs: dict, expected: list[str]) -> None:
    assert ids(populated.list(**kwargs)) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 5), ({"status": "success"}, 1), ({"backend": "real"}, 2), ({"status": "pending", "backend": "real"}, 0)],
    ids=["all", "status", "backend", "both"],
)
def test_count_filters(populated: TaskStore, kwargs: dict, expected: int) -> None:
    assert populated.count(**kwargs) == expected


def test_count_by_status_counts_each_status(populated: TaskStore) -> None:
    assert populated.count_by_status() == {"cancelled": 1, "failed": 1, "pending": 1, "running": 1, "success": 1}


def test_delete_says_whether_the_task_existed(populated: TaskStore) -> None:
    assert populated.delete("a") is True
    assert populated.delete("a") is False
    assert populated.get("a") is None and populated.count() == 4


def test_clear_completed_deletes_terminal_tasks_only(populated: TaskStore) -> None:
    assert populated.clear_completed() == len(TERMINAL_STATUSES)
    assert ids(populated.list()) == ["e", "b"]


def test_clear_completed_takes_custom_statuses(populated: TaskStore) -> None:
    assert populated.clear_completed((TaskStatus.PENDING, "running")) == 2
    assert populated.clear_completed(()) == 0
    assert sorted(ids(populated.list())) == ["a", "c", "d"]


def test_clear_all_empties_the_store_and_it_keeps_working(populated: TaskStore, db_url: str) -> None:
    populated.clear_all()
    assert populated.count() == 0
    populated.save(_task("new", "2026-01-01"))
    assert ids(populated.list()) == ["new"]
    assert raw_rows(db_url, "SELECT version_num FROM uniqc_store_version") == [(STORE_HEAD,)]
    with TaskStore(url=db_url) as other:
        assert ids(other.list()) == ["new"]


def test_a_closed_store_refuses_calls(store: TaskStore) -> None:
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("x")


def test_stores_are_context_managers(db_url: str) -> None:
    with TaskStore(url=db_url) as s:
        s.save(TaskInfo("t", "sim"))
    with pytest.raises(RuntimeError):
        s.count()
    with TaskStore(url=db_url) as again:
        assert again.count() == 1
