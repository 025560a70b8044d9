"""SQLite paths given as ``cache_dir`` or in an ``sqlite:///`` URL: every bad one is refused with
the library's own error naming the argument, before any file is created, and the command line
reports it on one line with status 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uniqc_store import DB_FILENAME, DatabaseError, InvalidTaskError, TaskStore
from uniqc_store.cli import main

ERROR_PREFIX = "uniqc-store: error: "
NAME_MAX = 255  # bytes in one file name on ext4, xfs, btrfs, tmpfs ...


def tree(root: Path) -> list[str]:
    """Every path under ``root``, symlinks not followed."""
    found = []
    for directory, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, name), root) for name in dirs + files]
    return sorted(found)


def dangling_symlink(tmp: Path) -> Path:
    (tmp / "link").symlink_to(tmp / "gone" / "cache")
    return tmp / "link"


def symlink_loop(tmp: Path) -> Path:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return tmp / "a"


def under_a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_bytes(b"")
    return tmp / "a-file" / "cache"


def holding_a_directory_named_tasks_sqlite(tmp: Path) -> Path:
    (tmp / "cache" / DB_FILENAME).mkdir(parents=True)
    return tmp / "cache"


# (id, makes the cache_dir text from tmp_path, error, fragment of the message)
BAD_CACHE_DIRS: list[tuple[str, Callable[[Path], str], type[Exception], str]] = [
    ("nul-character", lambda tmp: f"{tmp}/a\x00b", InvalidTaskError, "NUL character"),
    ("not-utf-8", lambda tmp: os.fsdecode(os.fsencode(tmp) + b"/caf\xe9"), InvalidTaskError, "not valid UTF-8"),
    ("unknown-user", lambda tmp: "~uniqc_no_such_user/cache", InvalidTaskError, "no such user"),
    ("name-too-long", lambda tmp: str(tmp / ("x" * (NAME_MAX + 1))), DatabaseError, "File name too long"),
    (
        "name-too-long-under-a-missing-directory",
        lambda tmp: str(tmp / "new" / ("x" * (NAME_MAX + 1)) / "cache"),
        DatabaseError,
        "File name too long",
    ),
    ("dangling-symlink", lambda tmp: str(dangling_symlink(tmp)), InvalidTaskError, "does not exist"),
    ("symlink-loop", lambda tmp: str(symlink_loop(tmp)), InvalidTaskError, "loops"),
    ("under-a-file", lambda tmp: str(under_a_file(tmp)), DatabaseError, "is a file, not a directory"),
    (
        "holding-a-directory-named-tasks-sqlite",
        lambda tmp: str(holding_a_directory_named_tasks_sqlite(tmp)),
        InvalidTaskError,
        "not an SQLite file",
    ),
]
CACHE_DIR_CASES = [pytest.param(make, error, fragment, id=id_) for id_, make, error, fragment in BAD_CACHE_DIRS]
# The same paths as the SQLite file of a URL (the directory case: the URL names a directory).
URL_CASES = [
    pytest.param(lambda tmp, make=make: f"sqlite:///{make(tmp)}/{DB_FILENAME}", error, fragment, id=id_)
    for id_, make, error, fragment in BAD_CACHE_DIRS
    if id_ != "holding-a-directory-named-tasks-sqlite"
] + [pytest.param(lambda tmp: f"sqlite:///{tmp}", InvalidTaskError, "is a directory", id="a-directory")]


@pytest.mark.parametrize(("make", "error", "fragment"), CACHE_DIR_CASES)
def test_a_bad_cache_dir_raises_the_documented_error_naming_it_and_creates_nothing(
    tmp_path: Path, make: Callable[[Path], str], error: type[Exception], fragment: str
) -> None:
    cache_dir = make(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(error, match=fragment) as caught:
        TaskStore(cache_dir)
    assert str(caught.value).startswith("cache_dir ")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("make", "error", "fragment"), URL_CASES)
def test_a_bad_sqlite_url_path_raises_the_documented_error_naming_it_and_creates_nothing(
    tmp_path: Path, make: Callable[[Path], str], error: type[Exception], fragment: str
) -> None:
    url = make(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(error, match=fragment) as caught:
        TaskStore(url=url)
    assert str(caught.value).startswith("url path ")
    assert tree(tmp_path) == before


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR_PREFIX), err
    assert "unexpected" not in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.mark.parametrize(("make", "error", "fragment"), CACHE_DIR_CASES)
def test_the_command_line_reports_a_bad_cache_dir_on_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: Callable[[Path], str], error: type, fragment: str
) -> None:
    code = main(["--cache-dir", make(tmp_path), "info"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert_one_error_line(captured.err, "cache_dir ", fragment)


@pytest.mark.parametrize(("make", "error", "fragment"), URL_CASES)
def test_the_command_line_reports_a_bad_sqlite_url_path_on_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: Callable[[Path], str], error: type, fragment: str
) -> None:
    code = main(["--url", make(tmp_path), "upgrade"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert_one_error_line(captured.err, "url path ", fragment)


def test_a_real_process_given_a_cache_dir_that_is_not_utf_8_fails_with_one_line(tmp_path: Path) -> None:
    # argv bytes that are not UTF-8 reach Python as surrogate escapes, and must still print.
    cache_dir = os.fsencode(tmp_path) + b"/caf\xe9"
    done = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"uniqc_store", b"--cache-dir", cache_dir, b"info"],
        capture_output=True, timeout=120, check=False,
    )
    assert (done.returncode, done.stdout) == (2, b"")
    assert_one_error_line(done.stderr.decode("utf-8", "backslashreplace"), "cache_dir ", "not valid UTF-8")
    assert tree(tmp_path) == []


@pytest.mark.parametrize(
    "argv", [pytest.param(["--cache-dir", ""], id="cli"), pytest.param(None, id="library")]
)
def test_an_empty_cache_dir_is_refused_rather_than_meaning_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str] | None
) -> None:
    monkeypatch.chdir(tmp_path)
    if argv is None:
        with pytest.raises(InvalidTaskError, match="cache_dir is empty"):
            TaskStore(cache_dir="")
    else:
        assert main([*argv, "upgrade"]) == 2
        assert_one_error_line(capsys.readouterr().err, "cache_dir is empty")
    assert tree(tmp_path) == []


def test_a_cache_dir_reached_through_a_symlink_to_a_directory_still_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with TaskStore(tmp_path / "link" / "cache") as store:
        assert store.db_path == tmp_path / "real" / "cache" / DB_FILENAME
    assert (tmp_path / "real" / "cache" / DB_FILENAME).is_file()


# -- as a user without the permissions --------------------------------------------------------


UNPRIVILEGED_UID = 65534  # nobody


@pytest.fixture
def unprivileged() -> list[str]:
    """A command prefix that runs a process as an ordinary user (root ignores permissions)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("running as root without setpriv or runuser: cannot test permissions as another user")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A root-owned directory in /tmp (the test's tmp_path is private to root): readable by
    anyone, writable by its owner only."""
    path = Path(tempfile.mkdtemp(prefix="uniqc-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


SCRIPT = """
import sys
from uniqc_store import TaskStore
from uniqc_store.cli import main
kind, value = sys.argv[1:]
try:
    TaskStore(**{kind: value}).close()
    print("opened")
except Exception as error:
    print(type(error).__name__, error, sep=": ")
sys.exit(main(["--" + kind.replace("_", "-"), value, "info"]))
"""


def run_as(prefix: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", SCRIPT, *args],
        capture_output=True, text=True, timeout=120, cwd="/", env=env, check=False,
    )


@pytest.mark.parametrize(
    ("kind", "where", "fragment"),
    [
        pytest.param("cache_dir", "{shared}/cache", "cannot create", id="cache-dir-in-a-read-only-directory"),
        pytest.param("cache_dir", "{shared}", "cannot create", id="cache-dir-that-is-read-only"),
        pytest.param("cache_dir", "{private}/cache", "cannot look up", id="cache-dir-under-a-private-directory"),
        pytest.param("url", "sqlite:///{shared}/new.sqlite", "cannot create", id="url-in-a-read-only-directory"),
        pytest.param("url", "sqlite:///{private}/x.sqlite", "cannot look up", id="url-under-a-private-directory"),
    ],
)
def test_a_path_the_user_may_not_create_is_a_database_error_naming_the_argument(
    unprivileged: list[str], shared_tmp: Path, kind: str, where: str, fragment: str
) -> None:
    private = shared_tmp / "private"
    private.mkdir(mode=0o700)
    value = where.format(shared=shared_tmp, private=private)
    before = tree(shared_tmp)
    done = run_as(unprivileged, kind, value, env={**os.environ, "HOME": str(shared_tmp)})
    argument = "cache_dir " if kind == "cache_dir" else "url path "
    assert done.stdout.startswith(f"DatabaseError: {argument}"), done.stdout + done.stderr
    assert "Permission denied" in done.stdout and fragment in done.stdout
    assert done.returncode == 2
    assert_one_error_line(done.stderr, argument, "Permission denied")
    assert tree(shared_tmp) == before


def test_without_a_home_directory_the_default_store_asks_for_home_or_a_location(
    unprivileged: list[str], shared_tmp: Path
) -> None:
    if not unprivileged:
        pytest.skip("needs root to run as a user id without a passwd entry")
    # A user id with no passwd entry and no $HOME: there is no ~ at all.
    prefix = [part.replace(f"={UNPRIVILEGED_UID}", "=54321") for part in unprivileged]
    if prefix == unprivileged:
        pytest.skip("runuser cannot run as a user id without a passwd entry")
    env = {key: value for key, value in os.environ.items() if key not in ("HOME", "UNIQC_STORE_URL")}
    script = (
        "import sys; from uniqc_store import TaskStore; from uniqc_store.cli import main\n"
        "try:\n    TaskStore()\nexcept Exception as error:\n    print(type(error).__name__, error, sep=': ')\n"
        "sys.exit(main(['info']))\n"
    )
    done = subprocess.run(
        [*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/", env=env,
        check=False,
    )
    assert done.stdout.startswith("DatabaseError: cannot find the home directory"), done.stdout + done.stderr
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "set HOME")
