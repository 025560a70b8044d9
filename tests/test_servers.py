"""What only servers need: hidden passwords, reconnects, key limits and exact key matching."""

from __future__ import annotations

import logging
import threading
import traceback

import pytest
from sqlalchemy import create_engine, literal_column, select, text
from sqlalchemy.engine import make_url

from uniqc_store import DatabaseError, InvalidTaskError, TaskInfo, TaskStore

from conftest import create_server_database, server_admin_url

PASSWORD = "S3cret-Pa55word"


@pytest.mark.parametrize(
    "url",
    [f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/tasks", f"mysql+pymysql://alice:{PASSWORD}@127.0.0.1:1/tasks"],
    ids=["postgresql", "mysql"],
)
def test_an_unreachable_server_is_reported_without_the_password(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseError) as caught:
        TaskStore(url=url)
    message = str(caught.value)
    assert "127.0.0.1" in message and "***" in message
    everything = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert PASSWORD not in everything


def test_a_store_never_shows_its_password(isolated_home) -> None:
    url, drop = create_server_database("postgresql")
    try:
        # Trust authentication accepts any password, so this one is real yet harmless.
        with_password = make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
        with TaskStore(url=with_password) as store:
            store.save(TaskInfo("t", "sim"))
            for shown in (repr(store), str(store), store.url, str(store.schema_info())):
                assert PASSWORD not in shown and "***" in shown
    finally:
        drop()


def _kill_other_sessions(backend: str, database: str) -> int:
    engine = create_engine(server_admin_url(backend), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                return len(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).all())
            ids = [r[0] for r in conn.execute(text(
                "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"),
                {"db": database})]
            for session in ids:
                conn.execute(text(f"KILL {int(session)}"))
            return len(ids)
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_a_dropped_connection_costs_a_reconnect_not_an_error(server: str) -> None:
    url, drop = create_server_database(server)
    try:
        with TaskStore(url=url) as store:
            store.save(TaskInfo("before", "sim"))
            assert _kill_other_sessions(server, make_url(url).database) >= 1
            store.save(TaskInfo("after", "sim"))
            assert sorted(t.task_id for t in store.list()) == ["after", "before"]
    finally:
        drop()


@pytest.mark.parametrize("text_", ["x" * 255, "量" * 255, "🧪" * 255], ids=["ascii", "cjk", "emoji"])
def test_ids_and_backends_of_255_characters_are_stored(store: TaskStore, text_: str) -> None:
    store.save(TaskInfo(text_, text_))
    got = store.get(text_)
    assert (got.task_id, got.backend) == (text_, text_)
    assert [t.task_id for t in store.list(backend=text_)] == [text_]


def test_longer_ids_are_refused_before_reaching_the_database(store: TaskStore) -> None:
    with pytest.raises(InvalidTaskError, match="limit is 255"):
        store.save(TaskInfo("量" * 256, "sim"))
    assert store.count() == 0


def test_task_ids_match_exactly_on_every_backend(store: TaskStore) -> None:
    for task_id in ["a", "A", "a ", "ä", "a\u0308"]:
        store.save(TaskInfo(task_id, "sim", metadata={"id": task_id}))
    assert store.count() == 5
    for task_id in ["a", "A", "a ", "ä", "a\u0308"]:
        assert store.get(task_id).metadata == {"id": task_id}
    assert store.get("a  ") is None


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_every_kind_of_call_after_the_server_dropped_every_connection_reconnects(server: str) -> None:
    # Without a pre-ping round trip: reads, single-statement writes and BEGIN ... COMMIT writes
    # each find their pooled connection dead, and cost a reconnect, never an error.
    url, drop = create_server_database(server)
    try:
        with TaskStore(url=url) as store:
            store.save_many([TaskInfo(f"t{i}", "sim") for i in range(3)])
            calls = [
                lambda: store.get("t0").task_id,
                lambda: [t.task_id for t in store.list(limit=2)],
                lambda: store.count(),
                lambda: store.save(TaskInfo("t0", "sim", status="running")),
                lambda: store.archive_task("t1"),
                lambda: store.delete("t2"),
                lambda: store.count_by_status(),
            ]
            results = []
            for call in calls:
                assert _kill_other_sessions(server, make_url(url).database) >= 1
                results.append(call())
            assert results[:3] == ["t0", ["t2", "t1"], 3]
            assert results[4:] == [True, True, {"running": 1}]
            assert store.count_archived() == 1
    finally:
        drop()


@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_when_every_kept_connection_dies_at_once_calls_reconnect_not_fail(server: str) -> None:
    """A restart kills every idle connection together, some not visibly yet (PostgreSQL's
    pg_terminate_backend returns before its backends exit): the retry of a call's first
    statement must go to a new connection, not to the next dying one."""
    url, drop = create_server_database(server)
    database = make_url(url).database
    admin = create_engine(server_admin_url(server), isolation_level="AUTOCOMMIT")
    try:
        with TaskStore(url=url) as store, admin.connect() as conn:
            store.save(TaskInfo("t", "sim"))
            for round_ in range(40):
                # Several connections in use at once, so that several are kept idle afterwards.
                barrier = threading.Barrier(6)

                def read(barrier: threading.Barrier = barrier) -> None:
                    barrier.wait()
                    for _ in range(20):
                        store.get("t")

                threads = [threading.Thread(target=read) for _ in range(6)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                # Kill every session of the store's, and call at once (a persistent admin
                # connection: the kill returns in a moment, before the sessions have all gone).
                if server == "postgresql":
                    conn.execute(
                        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db "
                             "AND pid <> pg_backend_pid()"), {"db": database},
                    )
                else:
                    ids = conn.execute(text(
                        "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
                    ), {"db": database}).scalars().all()
                    for session in ids:
                        conn.execute(text(f"KILL {int(session)}"))
                if round_ % 2:
                    assert store.get("t").task_id == "t"
                else:
                    store.save(TaskInfo("t", "sim"))
    finally:
        admin.dispose()
        drop()


def _open_transactions(server: str, database: str) -> int:
    engine = create_engine(server_admin_url(server), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if server == "postgresql":
                query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                         "AND state LIKE 'idle in transaction%'")
            else:
                query = ("SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                         "ON p.id = t.trx_mysql_thread_id WHERE p.db = :db")
            return int(conn.execute(text(query), {"db": database}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.save(TaskInfo("t", "sim", status="success")),
        lambda s: s.save_many([TaskInfo("t", "sim", status="failed"), TaskInfo("u", "sim")]),
        lambda s: s.delete("t"),
        lambda s: s.list(status="pending"),
        lambda s: s.get("t"),
    ],
    ids=["save", "save_many", "delete", "list", "get"],
)
@pytest.mark.parametrize("server", ["postgresql", "mysql"])
def test_an_exception_at_any_line_of_a_server_call_leaves_no_transaction_open(server: str, operation) -> None:
    # Servers' connections run in autocommit mode and the store sends BEGIN/COMMIT itself: an
    # interrupt anywhere must still leave no transaction open and the store usable.
    from test_interrupts import _run_injected

    url, drop = create_server_database(server)
    try:
        with TaskStore(url=url) as store:
            name = make_url(url).database
            lines = 0
            while True:
                store.save(TaskInfo("t", "sim"))  # the starting state of each round
                lines += 1
                if not _run_injected(lines, lambda: operation(store)):
                    break  # the call ran to its end before reaching line ``lines``
                assert _open_transactions(server, name) == 0
                stored = store.get("t")
                assert stored is None or stored.status in ("pending", "success", "failed")
            assert lines > 10
    finally:
        drop()


def test_the_stores_mariadb_sessions_do_not_intersect_single_column_indexes() -> None:
    """For status and backend together MariaDB would intersect uniqc's single-column indexes and
    sort every match (75 ms a page at 200k tasks) instead of walking the list index: the store's
    own connections switch that plan off."""
    url, drop = create_server_database("mysql")
    try:
        with TaskStore(url=url) as store:
            store.save(TaskInfo("t", "sim"))
            with store.session() as session:
                switches = session.execute(select(literal_column("@@SESSION.optimizer_switch"))).scalar_one()
        assert "index_merge_intersection=off" in switches.split(",")
    finally:
        drop()
