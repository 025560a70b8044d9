"""Fixtures shared by the test suite.

Every test gets its own HOME (so nothing ever touches the real ~/.uniqc) and no UNIQC_STORE_URL.
``db_url`` runs a test on every supported backend: an SQLite file in a temporary directory
always, and PostgreSQL / MariaDB when UNIQC_STORE_TEST_POSTGRES_URL / UNIQC_STORE_TEST_MYSQL_URL
name a server. Each server test gets a freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_store import TaskStore

# The uniqc_release fixture: released uniqc store modules, loaded from their wheels.
pytest_plugins = ["uniqc_releases"]

SERVER_ENV = {
    "postgresql": "UNIQC_STORE_TEST_POSTGRES_URL",
    "mysql": "UNIQC_STORE_TEST_MYSQL_URL",
}
BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UNIQC_STORE_URL", raising=False)
    return home


def server_admin_url(backend: str) -> str:
    admin = os.environ.get(SERVER_ENV[backend])
    if not admin:
        pytest.skip(f"set {SERVER_ENV[backend]} to run the {backend} tests")
    return admin


def create_server_database(backend: str) -> tuple[str, callable]:
    """Create a fresh, uniquely named database; return its URL and a function that drops it."""
    admin = make_url(server_admin_url(backend))
    name = f"uniqc_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))

    def drop() -> None:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of ``backend`` that only this test uses."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'tasks.sqlite'}"
        return
    url, drop = create_server_database(backend)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def store(db_url: str) -> Iterator[TaskStore]:
    with TaskStore(url=db_url) as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[TaskStore]:
    with TaskStore(tmp_path / "cache") as s:
        yield s
