"""Which database a store opens, and how it is shown: resolving URLs and SQLite paths, hiding
credentials.

Passwords reach the drivers in more ways than the URL's ``user:password@`` part: PyMySQL takes
``?password=``, ``?passwd=`` and ``?ssl_key_password=``, libpq ``?password=`` and
``?sslpassword=``, and SQLAlchemy's psycopg and pymysql dialects hand every query parameter to the
driver as a keyword argument (``_psycopg_common.create_connect_args`` and
``mysqldb.create_connect_args``: ``opts.update(url.query)``). So the rule is an allowlist: a
URL is shown with its password and every query value hidden except those of
:data:`HARMLESS_OPTIONS`, and the same values are scrubbed out of driver messages
(:func:`scrub`), whatever an option a driver adds tomorrow is called.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy import exc
from sqlalchemy.engine import URL, make_url

from .errors import (
    DatabaseError,
    InvalidTaskError,
    InvalidTaskTypeError,
    UnsupportedDatabaseError,
)

ENV_URL = "UNIQC_STORE_URL"
DB_FILENAME = "tasks.sqlite"
HIDDEN = "***"


def default_cache_dir() -> Path:
    """Return ``~/.uniqc/cache`` for the current ``HOME`` (looked up at call time).

    Raises:
        DatabaseError: there is no ``HOME`` and the user has no home directory either.
    """
    try:
        return Path.home() / ".uniqc" / "cache"
    except (RuntimeError, KeyError):  # no $HOME, and no passwd entry for this uid
        raise DatabaseError(
            "cannot find the home directory for the default store ~/.uniqc/cache: set HOME, "
            f"or give cache_dir, url or ${ENV_URL}"
        ) from None


try:
    DEFAULT_CACHE_DIR = default_cache_dir()
except DatabaseError:  # importing must not fail for want of a home directory
    DEFAULT_CACHE_DIR = Path("~/.uniqc/cache")

# dialect name -> (the one driver uniqc_store supports, the extra that installs it)
SUPPORTED = {
    "sqlite": ("pysqlite", None),
    "postgresql": ("psycopg", "postgresql"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
}

_MYSQL_HARMLESS = frozenset({
    # PyMySQL's connect() arguments that never carry a secret (SQLAlchemy's mysqldb dialect
    # folds the ssl_* ones into ssl={...}).
    "host", "port", "user", "database", "db", "unix_socket", "charset", "collation", "sql_mode",
    "use_unicode", "client_flag", "connect_timeout", "read_timeout", "write_timeout",
    "local_infile", "max_allowed_packet", "bind_address", "binary_prefix", "program_name",
    "read_default_file", "read_default_group", "server_public_key", "ssl_ca", "ssl_cert",
    "ssl_key", "ssl_capath", "ssl_cipher", "ssl_check_hostname", "ssl_disabled",
    "ssl_verify_cert", "ssl_verify_identity",
})
#: Query options shown as given, per dialect. Any other option's value (a password under any
#: name, PyMySQL's ``init_command`` and libpq's ``options``, which may carry anything, options
#: unknown to us) is shown as ``***`` and scrubbed out of driver messages.
HARMLESS_OPTIONS: dict[str, frozenset[str]] = {
    "postgresql": frozenset({
        # libpq connection keywords that name a place, a file or a policy, never a secret
        # (passfile is the path of a password file, not a password).
        "host", "hostaddr", "port", "dbname", "user", "passfile", "service", "application_name",
        "fallback_application_name", "client_encoding", "connect_timeout", "keepalives",
        "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "target_session_attrs", "load_balance_hosts", "channel_binding", "require_auth",
        "sslmode", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslcertmode",
        "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "ssl_min_protocol_version",
        "ssl_max_protocol_version", "requirepeer", "gssencmode", "krbsrvname", "gsslib",
        "gssdelegation",
    }),
    "mysql": _MYSQL_HARMLESS,
    "mariadb": _MYSQL_HARMLESS,
}
#: Options refused outright, per dialect: a whole connection string inside the URL
#: (psycopg's ``conninfo`` argument) may hold a password in a form that cannot be picked out to
#: hide, and libpq quotes pieces of it in its parse errors.
REFUSED_OPTIONS: dict[str, frozenset[str]] = {"postgresql": frozenset({"conninfo"})}

_URL_EXAMPLES = "e.g. sqlite:////path/tasks.sqlite or postgresql+psycopg://user@host/db"


def resolve_url(cache_dir: Path | str | None = None, url: str | URL | None = None) -> URL:
    """Return the database URL a store opens: ``url``, else ``cache_dir``, else ``$UNIQC_STORE_URL``,
    else the default SQLite file.

    An SQLite path is checked before any file is touched: it must be valid UTF-8 text without NUL
    characters, its ``~user`` must exist, its directory (or the nearest existing parent) must be a
    directory the process may create files in, and no name in it may be longer than the file
    system allows.

    Raises:
        InvalidTaskTypeError: an argument has the wrong type.
        InvalidTaskError: both arguments are given; or a path is empty, not UTF-8, holds a NUL
            character, names an unknown ``~user`` or a dangling symlink; or ``cache_dir`` is a
            file (an SQLite path a directory).
        DatabaseError: the file system refuses the path: a name too long, no permission, a file
            where a parent directory must be; or there is no home directory for the default.
        UnsupportedDatabaseError: the URL is malformed or names an unsupported database or
            driver, or carries a connection string.
    """
    if cache_dir is not None and url is not None:
        raise InvalidTaskError("give either cache_dir or url, not both")
    if url is None and cache_dir is None:
        from_env = os.environ.get(ENV_URL)
        if from_env:
            return _normalise_url(from_env, f"${ENV_URL}")
        database = _sqlite_path(str(default_cache_dir()), "the default cache directory", directory=True)
        return URL.create("sqlite", database=database)
    if url is not None:
        return _normalise_url(url)
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidTaskTypeError(f"cache_dir must be a path or a str, got {type(cache_dir).__name__}")
    text = os.fsdecode(cache_dir)  # os.fspath(), then decoded if a PathLike returned bytes
    return URL.create("sqlite", database=_sqlite_path(text, "cache_dir", directory=True))


def _normalise_url(url: str | URL, argument: str = "url") -> URL:
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (exc.ArgumentError, ValueError):
            # Never echo the text: a mistyped URL may still hold a password.
            raise UnsupportedDatabaseError(
                f"{argument} is not a valid database URL ({_URL_EXAMPLES}; percent-encode any "
                "'@', ':', '/', '?' or '#' in the user name or password)"
            ) from None
    elif isinstance(url, URL):
        parsed = url
    else:
        raise InvalidTaskTypeError(f"{argument} must be a str or sqlalchemy URL, got {type(url).__name__}")
    # An unescaped '@' anywhere after the credentials ('lab:p@ss/x@host', a host that holds
    # '@') means the URL was split in the wrong place: part of the password would be shown as
    # the host or the database and sent to the resolver.
    # (An '@' in a query value must be percent-encoded too: with one, the URL cannot be split
    # safely. SQLite paths may hold '@'.)
    several = isinstance(url, str) and not url.startswith("sqlite") and url.count("@") > 1
    if (parsed.host and "@" in parsed.host) or several:
        # 'lab:p@ss@host' splits at the first '@': the rest of the password would be shown as
        # the host and sent to the resolver, so nothing of this URL is echoed.
        raise UnsupportedDatabaseError(
            f"{argument} has an '@' after its credentials: a password (or user name) with '@' in it must "
            "be percent-encoded as %40 (postgresql+psycopg://lab:p%40ss@host/db); the URL is not "
            "shown, since it may hold the password"
        )
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: uniqc_store supports sqlite, postgresql+psycopg and mysql+pymysql "
            f"(or mariadb+pymysql), not {backend!r}"
        )
    driver = SUPPORTED[backend][0]
    if parsed.drivername != backend and parsed.get_driver_name() != driver:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: the {parsed.get_driver_name()!r} driver is not supported; use {backend}+{driver}://"
        )
    refused = sorted(REFUSED_OPTIONS.get(backend, frozenset()).intersection(parsed.query))
    if refused:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: uniqc_store does not take a {refused[0]} query parameter (a "
            "connection string inside the URL may hold a password that cannot be hidden); give "
            "each option as a query parameter of its own (?sslmode=require) and the password in "
            "the URL (postgresql+psycopg://user:password@host/db) or in ~/.pgpass"
        )
    if backend != "sqlite":  # SQLAlchemy's default drivers for servers are not ours
        return parsed.set(drivername=f"{backend}+{driver}")
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: uniqc_store needs an SQLite file path, e.g. sqlite:////path/to/tasks.sqlite"
        )
    if parsed.query:
        raise UnsupportedDatabaseError(
            f"{mask(parsed)}: SQLite URLs take no query parameters; the store sets its own connection options"
        )
    # One spelling per file (plain "sqlite", symlinks resolved): every store on a file must share
    # one Database, or clear_all() could not close their connections.
    return URL.create("sqlite", database=_sqlite_path(parsed.database, f"{argument} path", directory=False))


def _sqlite_path(text: str, argument: str, *, directory: bool) -> str:
    """The real path of the SQLite file that ``text`` names (``directory``: the directory that
    holds :data:`DB_FILENAME`), after checking it as :func:`resolve_url` describes."""
    # repr: a control character or a stray surrogate stays visible; a very long path is cut.
    shown = f"{argument} {text if len(text) <= 160 else text[:100] + '...' + text[-40:]!r}"
    if not text:
        raise InvalidTaskError(
            f"{argument} is empty: give the directory that holds {DB_FILENAME} ('.' for the current one)"
        )
    if "\x00" in text:
        raise InvalidTaskError(f"{shown} contains a NUL character, which no file name may hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A name decoded from bytes that are not UTF-8 (os.fsdecode): SQLite takes file names as
        # UTF-8, and uniqc could not open the file either.
        raise InvalidTaskError(
            f"{shown} is not valid UTF-8 (it came from bytes that are not UTF-8): SQLite file names "
            "must be UTF-8; rename the directory or choose another"
        ) from None
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # Path.expanduser: no such user, or no home directory
        user = text.split(os.sep, 1)[0]
        raise InvalidTaskError(f"{shown}: cannot expand {user!r}: no such user or no home directory") from None
    file = path / DB_FILENAME if directory else path
    _refuse_dangling_symlinks(path, shown)
    # Symlinks resolved: two spellings of one file must share one Database (and its clear_all).
    real = Path(os.path.realpath(file))
    _check_on_disk(real, path if directory else None, shown)
    return str(real)


def _refuse_dangling_symlinks(path: Path, shown: str) -> None:
    # Creating the missing target of a link (~/.uniqc/cache -> /mnt/data/cache, with /mnt/data
    # not mounted) would put the store where nobody looks for it; mkdir -p refuses too.
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):
            return
        if os.path.islink(candidate):
            try:
                target = repr(os.readlink(candidate))
            except OSError:  # removed meanwhile
                target = "a path"
            raise InvalidTaskError(
                f"{shown}: {str(candidate)!r} is a symlink to {target}, which does not exist (or "
                "loops): create its target or fix the link"
            )


def _check_on_disk(file: Path, directory: Path | None, shown: str) -> None:
    """Check the deepest existing part of ``file`` (``directory`` is the cache_dir given, for its
    own message): a directory the process may create the rest in, and names that fit."""
    missing: list[str] = []
    probe = file
    while True:
        try:
            st = os.stat(probe)
            break
        except (FileNotFoundError, NotADirectoryError):  # missing, or under a file: look higher
            missing.append(probe.name)
            probe = probe.parent
        except OSError as error:  # a name too long, no search permission, a symlink loop
            raise DatabaseError(f"{shown}: cannot look up {str(probe)!r}: {error.strerror}") from None
    if not missing:
        if stat.S_ISDIR(st.st_mode):
            what = f"{shown} holds a directory named {DB_FILENAME}" if directory else f"{shown} is a directory"
            raise InvalidTaskError(f"{what}, not an SQLite file")
        return
    if not stat.S_ISDIR(st.st_mode):
        if directory is not None and probe == Path(os.path.realpath(directory)):
            raise InvalidTaskError(f"{shown} is a file, not a directory")
        # Not a bad value as such: the file system holds a file where the path needs a directory.
        raise DatabaseError(
            f"{shown}: cannot create the database {str(file)!r}: {str(probe)!r} is a file, not a directory"
        )
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for name in missing:
        size = len(os.fsencode(name))
        if size > name_max:
            raise DatabaseError(
                f"{shown}: a name in it is {size} bytes long, longer than the {name_max} bytes the "
                f"file system allows (File name too long): {name[:40]!r}..."
            )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"{shown}: cannot create the database {str(file)!r}: Permission denied (no write "
            f"permission in {str(probe)!r})"
        )


def mask(url: URL) -> str:
    """Render ``url`` for display: the password hidden, and every query value too except those
    of :data:`HARMLESS_OPTIONS` for its dialect."""
    harmless = HARMLESS_OPTIONS.get(url.get_backend_name(), frozenset())
    shown = url.set(query={}).render_as_string(hide_password=True)
    if not url.query:
        return shown
    # As URL.render_as_string() writes the query (sorted, repeated keys repeated), but with
    # *** itself rather than its percent-encoding.
    return shown + "?" + "&".join(
        f"{quote_plus(key)}={quote_plus(element) if key in harmless else HIDDEN}"
        for key in sorted(url.query)
        for element in _elements(url.query[key])
    )


def _elements(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """The values of one query key (SQLAlchemy keeps a repeated key's values as a tuple)."""
    return (value,) if isinstance(value, str) else tuple(value)


def secrets(url: URL | str) -> tuple[str, ...]:
    """The texts :func:`scrub` removes from messages about ``url``: its password and every query
    value :func:`mask` hides, each also as URLs, conninfo strings and ``repr`` spell it;
    longest first. A URL given as text is itself one of them, even when it does not parse."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (exc.ArgumentError, ValueError):
            return (url,) if url else ()
        return tuple(sorted({url, *secrets(parsed)}, key=len, reverse=True))
    harmless = HARMLESS_OPTIONS.get(url.get_backend_name(), frozenset())
    values = [url.password] if url.password else []
    for key, value in url.query.items():
        if key not in harmless:
            values.extend(_elements(value))
    forms: set[str] = set()
    for value in map(str, values):
        if value:
            conninfo = value.replace("\\", "\\\\").replace("'", "\\'")
            forms.update((value, quote(value, safe=""), quote(value, safe=" +"), quote_plus(value),
                          repr(value)[1:-1], conninfo))
    forms.discard("")
    return tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str, hidden: Iterable[str]) -> str:
    """``text`` with each of ``hidden`` (see :func:`secrets`) replaced by ``***``."""
    for secret in hidden:
        text = text.replace(secret, HIDDEN)
    return text


def scrub_exception(error: BaseException, hidden: tuple[str, ...]) -> None:
    """Scrub ``hidden`` out of the text arguments of ``error`` and of every exception chained to
    it (a driver error, SQLAlchemy's wrapper, their causes), so that no traceback shows them."""
    if not hidden:
        return
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if any(isinstance(arg, str) for arg in current.args):
            current.args = tuple(scrub(arg, hidden) if isinstance(arg, str) else arg for arg in current.args)
        orig = getattr(current, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__]
