"""Database URLs: every credential a driver accepts stays hidden, in the store, its errors and the
command line; URLs whose credentials could not be hidden are refused without being echoed."""

from __future__ import annotations

import logging
import re
import shlex
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from uniqc_store import DatabaseError, TaskInfo, TaskStore, UnsupportedDatabaseError
from uniqc_store.cli import main
from uniqc_store.database import mask, resolve_url

from conftest import create_server_database, server_admin_url

# Characters that URLs, conninfo strings and repr() all spell differently.
SECRET = "S3cr3t-p@ss/w:rd+x y"
ENCODED = quote(SECRET, safe="")
# Servers quote an option they cannot run whole only when it is one word.
WORD_SECRET = "S3cretWordOnly"
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: the driver fails to connect


def spellings(secret: str) -> set[str]:
    """``secret`` as text and as URLs percent-encode it."""
    return {secret, quote(secret, safe=""), quote(secret, safe=" +"), quote_plus(secret)}


def assert_hidden(*texts: str, secrets: tuple[str, ...] = (SECRET, WORD_SECRET)) -> None:
    for shown in texts:
        for secret in secrets:
            for spelling in spellings(secret):
                assert spelling not in shown


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- how a URL is shown ----------------------------------------------------------------------


CREDENTIAL_URLS = [
    pytest.param(f"postgresql+psycopg://lab:{ENCODED}@db.example/tasks", id="postgresql-userinfo"),
    pytest.param(f"postgresql+psycopg://lab@db.example/tasks?password={ENCODED}", id="postgresql-password"),
    pytest.param(f"postgresql+psycopg://lab@db.example/tasks?sslpassword={ENCODED}", id="postgresql-sslpassword"),
    pytest.param(f"postgresql+psycopg://lab@db.example/tasks?options={ENCODED}", id="postgresql-options"),
    pytest.param(f"mysql+pymysql://lab:{ENCODED}@db.example/tasks", id="mysql-userinfo"),
    pytest.param(f"mysql+pymysql://lab@db.example/tasks?passwd={ENCODED}", id="mysql-passwd"),
    pytest.param(f"mysql+pymysql://lab@db.example/tasks?password={ENCODED}", id="mysql-password"),
    pytest.param(f"mariadb+pymysql://lab@db.example/tasks?ssl_key_password={ENCODED}", id="mariadb-ssl-key-password"),
    pytest.param(f"mysql+pymysql://lab@db.example/tasks?init_command={ENCODED}", id="mysql-init-command"),
    pytest.param(f"mysql+pymysql://lab@db.example/tasks?a_future_option={ENCODED}", id="unknown-option"),
    pytest.param(f"mysql+pymysql://lab@db.example/tasks?passwd=x&passwd={ENCODED}", id="repeated-option"),
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_a_url_is_shown_with_every_credential_hidden(url: str) -> None:
    shown = mask(resolve_url(url=url))
    assert_hidden(shown)
    assert "***" in shown and "db.example/tasks" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "postgresql+psycopg://lab@db.example/tasks?sslmode=require&application_name=lab&password=x",
            "postgresql+psycopg://lab@db.example/tasks?application_name=lab&password=***&sslmode=require",
            id="postgresql",
        ),
        pytest.param(
            "mysql+pymysql://lab@db.example/tasks?charset=utf8mb4&ssl_ca=/etc/ca.pem&passwd=x",
            "mysql+pymysql://lab@db.example/tasks?charset=utf8mb4&passwd=***&ssl_ca=%2Fetc%2Fca.pem",
            id="mysql",
        ),
    ],
)
def test_harmless_options_are_shown_as_given_and_the_others_as_stars(url: str, shown: str) -> None:
    assert mask(resolve_url(url=url)) == shown


# -- URLs refused before any driver sees them ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql+psycopg://lab:p@ssw0rd@{UNREACHABLE}/tasks", id="postgresql"),
        pytest.param(f"mysql+pymysql://lab:p@ssw0rd@{UNREACHABLE}/tasks", id="mysql"),
        pytest.param("mysql+pymysql://lab:p@ss@w0rd@db.example/tasks", id="two-at-signs"),
    ],
)
def test_an_unescaped_at_sign_in_a_password_is_refused_with_how_to_fix_it(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    with pytest.raises(UnsupportedDatabaseError, match="%40") as caught:
        TaskStore(url=url)
    code, out, err = cli(capsys, "--url", url, "info")
    assert (code, out) == (2, "")
    assert "%40" in err and len(err.splitlines()) == 1
    for shown in ("".join(traceback.format_exception(caught.value)), err):
        assert "ssw0rd" not in shown and "w0rd" not in shown


def test_a_conninfo_query_parameter_is_refused_without_being_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://lab@{UNREACHABLE}/tasks?conninfo=password%3D{ENCODED}"
    with pytest.raises(UnsupportedDatabaseError, match="query parameter of its own") as caught:
        TaskStore(url=url)
    code, out, err = cli(capsys, "--url", url, "info")
    assert (code, out) == (2, "")
    assert_hidden("".join(traceback.format_exception(caught.value)), err)


# -- driver errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql+psycopg://alice:{ENCODED}@{UNREACHABLE}/tasks", id="postgresql-userinfo"),
        pytest.param(f"postgresql+psycopg://alice@{UNREACHABLE}/tasks?password={ENCODED}", id="postgresql-password"),
        pytest.param(
            f"postgresql+psycopg://alice@{UNREACHABLE}/tasks?sslpassword={ENCODED}", id="postgresql-sslpassword"
        ),
        pytest.param(f"mysql+pymysql://alice:{ENCODED}@{UNREACHABLE}/tasks", id="mysql-userinfo"),
        pytest.param(f"mysql+pymysql://alice@{UNREACHABLE}/tasks?passwd={ENCODED}", id="mysql-passwd"),
        pytest.param(f"mysql+pymysql://alice@{UNREACHABLE}/tasks?password={ENCODED}", id="mysql-password"),
        pytest.param(
            f"mysql+pymysql://alice@{UNREACHABLE}/tasks?ssl_key_password={ENCODED}", id="mysql-ssl-key-password"
        ),
    ],
)
def test_an_unreachable_server_is_reported_without_any_credential(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseError) as caught:
        TaskStore(url=url)
    assert "127.0.0.1" in str(caught.value) and "***" in str(caught.value)
    code, out, err = cli(capsys, "--url", url, "info")
    assert (code, out) == (2, "")
    assert "127.0.0.1" in err
    assert_hidden("".join(traceback.format_exception(caught.value)), caplog.text, err)


@pytest.mark.parametrize(
    ("server", "option"),
    [
        # PostgreSQL: "invalid command-line argument for server process: <options>"
        pytest.param("postgresql", "options", id="postgresql-options"),
        # MariaDB/MySQL: "... right syntax to use near '<init_command>' at line 1"
        pytest.param("mysql", "init_command", id="mysql-init-command"),
    ],
)
def test_a_server_message_quoting_a_hidden_option_is_scrubbed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, server: str, option: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = make_url(server_admin_url(server)).update_query_dict({option: WORD_SECRET})
    url_text = url.render_as_string(hide_password=False)
    with pytest.raises(DatabaseError) as caught:
        TaskStore(url=url_text)
    assert f"{option}=***" in str(caught.value)
    assert "***" in str(caught.value).split(f"{option}=***", 1)[1]  # the server's quote, scrubbed
    code, out, err = cli(capsys, "--url", url_text, "info")
    assert (code, out) == (2, "")
    assert_hidden(str(caught.value), "".join(traceback.format_exception(caught.value)), caplog.text, err)


# -- stores that logged in with a password given as a query parameter ------------------------


@pytest.fixture
def postgresql_url_with_query_password() -> Iterator[str]:
    """A fresh PostgreSQL database; trust authentication lets any password in, so this one is
    real yet harmless."""
    url, drop = create_server_database("postgresql")
    try:
        yield make_url(url).update_query_dict({"password": SECRET}).render_as_string(hide_password=False)
    finally:
        drop()


@pytest.fixture
def mysql_url_with_passwd() -> Iterator[str]:
    """A fresh MariaDB/MySQL database and a user who can log in to it only with SECRET, given
    as PyMySQL's ``passwd`` query parameter."""
    url, drop = create_server_database("mysql")
    user = f"uniqc_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_admin_url("mysql"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :password"), {"password": SECRET})
            conn.execute(text(f"GRANT ALL ON `{make_url(url).database}`.* TO '{user}'@'%'"))
        login = make_url(url).set(username=user, password=None).update_query_dict({"passwd": SECRET})
        yield login.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()
        drop()


@pytest.mark.parametrize("fixture", ["postgresql_url_with_query_password", "mysql_url_with_passwd"])
def test_a_store_logged_in_with_a_query_password_never_shows_it(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], fixture: str
) -> None:
    url = request.getfixturevalue(fixture)
    with TaskStore(url=url) as store:
        store.save(TaskInfo("t", "sim"))
        shown = [repr(store), str(store), store.url, str(store.schema_info())]
    assert all("***" in text_ for text_ in shown)
    code, out, err = cli(capsys, "--url", url, "info")
    assert (code, err) == (0, "")
    assert "total:" in out and "***" in out
    assert_hidden(*shown, out)


def test_a_wrong_query_password_is_reported_without_it(
    mysql_url_with_passwd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = make_url(mysql_url_with_passwd).update_query_dict({"passwd": SECRET[::-1]}).render_as_string(
        hide_password=False
    )
    with pytest.raises(DatabaseError, match="Access denied") as caught:
        TaskStore(url=wrong)
    code, out, err = cli(capsys, "--url", wrong, "info")
    assert (code, out) == (2, "")
    assert_hidden("".join(traceback.format_exception(caught.value)), err, secrets=(SECRET[::-1],))


def test_the_readme_example_of_a_hidden_password_prints_what_the_readme_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```console\n(.*?)```", readme, re.S) if "passwd=S3cret" in b)
    command, shown = block.strip().splitlines()
    argv = shlex.split(command.removeprefix("$ "))
    assert argv[0] == "uniqc-store"
    code, out, err = cli(capsys, *argv[1:])
    assert (code, out, err) == (2, "", shown + "\n")
    assert "S3cret" not in err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://lab:Tr0ub@dor/3x@127.0.0.1:1/tasks",
        "mysql+pymysql://lab:Tr0ub@dor/3x@127.0.0.1:1/tasks",
        "mysql+pymysql://lab@127.0.0.1:1/tasks?init_command=SET%20@x%3D1",
    ],
    ids=["postgresql-slash-in-password", "mysql-slash-in-password", "at-sign-in-a-query-value"],
)
def test_an_unescaped_at_sign_anywhere_after_the_credentials_is_refused_without_echo(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseError, match="percent-encoded as %40") as raised:
        TaskStore(url=url)
    assert "dor" not in str(raised.value) and "3x" not in str(raised.value)
