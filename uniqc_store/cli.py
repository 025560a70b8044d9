"""The ``uniqc-store`` command line: inspect, upgrade and tidy a task-record store.

Usage::

    uniqc-store [--cache-dir DIR | --url URL] COMMAND [options]

Commands: ``upgrade``, ``info``, ``list [--archived]``, ``show TASK_ID``, ``delete [--archived]
TASK_ID``, ``archive TASK_ID``, ``restore TASK_ID``, ``clear-completed [--older-than AGE]``,
``archive-completed [--older-than AGE]``, ``check [--full]``, ``compact``, ``copy --to URL
[--merge]``, ``export FILE`` and ``import FILE``. Without
``--cache-dir`` or ``--url`` the store's default applies: ``$UNIQC_STORE_URL`` if set, else
``~/.uniqc/cache/tasks.sqlite``.

Results go to stdout; errors are one line on stderr, ``uniqc-store: error: ...``. Exit status:
0 on success, 1 when the task named is not found (``show``, ``delete``, ``archive``, ``restore``),
2 for bad usage, bad input, a conflict between a live and an archived task, or a database that
was refused or could not be used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Literal, NoReturn

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import url as sa_url
from tqdm import tqdm

from . import __version__, check, compact, database, jsonlines, schema, sweep, transfer
from .errors import BadLinesError, StoreError
from .records import TERMINAL_STATUSES, TaskInfo, TaskShard, TaskStatus
from .schema import HEAD_REVISION, STORE_HEAD, SchemaState
from .store import TaskStore

PROG = "uniqc-store"
EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it

LIST_COLUMNS = ("task_id", "status", "backend", "shots", "submit_time")
ARCHIVED_LIST_COLUMNS = (*LIST_COLUMNS, "archived_at")
_STATUS_CHOICES = ", ".join(status.value for status in TaskStatus)

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """The command line itself is wrong (raised instead of argparse's print-usage-and-exit)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so that :func:`main` reports them on one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- the command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``uniqc-store`` command line."""
    location = _location_options()
    parser = _Parser(
        prog=PROG,
        parents=[location],
        description="Inspect, upgrade and tidy a uniqc task-record store.",
        epilog="Exit status: 0 success, 1 task not found, 2 bad usage or input, "
        "or a database that was refused or could not be used.",
    )
    version = f"{PROG} {__version__} (schema revision {HEAD_REVISION} + {STORE_HEAD})"
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[location], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    add("upgrade", cmd_upgrade, "bring the database to the newest schema revision")
    info = add("info", cmd_info, "show where the store is, its schema version and its task counts")
    _add_json_flag(info)
    listing = add("list", cmd_list, "list tasks, newest first")
    listing.add_argument("--status", help=f"only tasks with this status ({_STATUS_CHOICES})")
    listing.add_argument("--backend", help="only tasks on this backend")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N tasks")
    listing.add_argument("--archived", action="store_true", help="list archived tasks instead of live ones")
    _add_json_flag(listing)
    showing = add("show", cmd_show, "print one task, live or archived, with its shards as JSON")
    showing.add_argument("task_id", metavar="TASK_ID")
    # show prints JSON either way; the flag is accepted so that every listing command takes it.
    showing.add_argument("--json", action="store_true", help="print JSON (what show always prints)")
    deleting = add("delete", cmd_delete, "delete one task and its shards")
    deleting.add_argument("task_id", metavar="TASK_ID")
    deleting.add_argument("--archived", action="store_true", help="delete the archived task of this id")
    add("archive", cmd_archive, "move one task and its shards into the archive").add_argument(
        "task_id", metavar="TASK_ID"
    )
    add("restore", cmd_restore, "move one archived task and its shards back").add_argument(
        "task_id", metavar="TASK_ID"
    )
    terminal = ", ".join(TERMINAL_STATUSES)
    clearing = add("clear-completed", cmd_clear_completed, f"delete the tasks whose status is {terminal}")
    _add_older_than(clearing, "delete")
    archiving = add(
        "archive-completed", cmd_archive_completed, f"move the tasks whose status is {terminal} into the archive"
    )
    _add_older_than(archiving, "archive")
    checking = add("check", cmd_check, "check the database without changing it; exit 1 if anything is wrong")
    checking.add_argument("--full", action="store_true", help="also decode the JSON of every stored row")
    _add_json_flag(checking)
    add("compact", cmd_compact, "SQLite: checkpoint the WAL and VACUUM the file (refused while others write)")
    copying = add("copy", cmd_copy, "copy every task, shard and archived record into another database")
    copying.add_argument("--to", required=True, metavar="URL", help="the target database's URL (created if missing)")
    copying.add_argument(
        "--merge", action="store_true", help="add only the records whose ids the target lacks, keeping its own"
    )
    add("export", cmd_export, "write every record to FILE as JSON Lines ('-': stdout)").add_argument(
        "file", metavar="FILE"
    )
    add("import", cmd_import, "add the records of an export FILE ('-': stdin), all or none").add_argument(
        "file", metavar="FILE"
    )
    return parser


def _add_older_than(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--older-than",
        metavar="AGE",
        type=_age,
        help=f"only {verb} those whose update_time is older than AGE: a number and s, m, h, d or w (30d)",
    )


def _joined_negative_ages(argv: Sequence[str]) -> list[str]:
    """``--older-than -1d`` as ``--older-than=-1d``: argparse takes a value that starts with a dash
    for an option and fails with "expected one argument"; joined, the age is refused by name."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--older-than" and arg[:1] == "-" and arg[1:2].isdigit():
            joined[-1] = f"--older-than={arg}"
        else:
            joined.append(arg)
    return joined


def _age(text: str) -> timedelta:
    try:
        return sweep.parse_age(text)
    except StoreError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _location_options() -> _Parser:
    """The options that choose the database, accepted before or after the command.

    Their default is SUPPRESS so that a command's parser never overwrites a value given before it.
    """
    options = _Parser(add_help=False)
    group = options.add_mutually_exclusive_group()
    group.add_argument(
        "--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help="directory holding tasks.sqlite"
    )
    group.add_argument(
        "--url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="database URL: sqlite:////path/tasks.sqlite, postgresql+psycopg://..., mysql+pymysql://...",
    )
    return options


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(_joined_negative_ages(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        return _fail(f"{error} (see '{PROG} --help')", EXIT_ERROR)
    except SystemExit as stop:  # --help and --version
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        handler: Handler = args.handler
        return handler(args)
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except (StoreError, sa_exc.SQLAlchemyError, OSError) as error:
        return _fail(_describe(error, args), EXIT_ERROR)
    except RecursionError:
        return _fail("a stored value is nested too deeply to print here; read it with the Python API", EXIT_ERROR)
    except UnicodeEncodeError as error:
        return _fail(
            f"the output cannot be written in the terminal's encoding {error.encoding!r}; "
            "set PYTHONIOENCODING=utf-8",
            EXIT_ERROR,
        )
    except Exception as error:  # noqa: BLE001 - a bug of ours: still one line, and a status scripts can test
        return _fail(database.scrub(f"unexpected {type(error).__name__}: {error}", _hidden(args)), EXIT_ERROR)


# -- the commands ------------------------------------------------------------------------------


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Bring the database to the head revision and say what was done."""
    before = _state_before_upgrade(args)
    with _open_store(args) as store:
        info = store.schema_info()
    after = _revision_text(info["revision"], info["store_revision"])
    where = _location(info)
    if before == "new":
        print(f"{where}: created at {after}")
    elif before is None:
        print(f"{where}: at {after}")
    elif before.at_head:
        print(f"{where}: already at {after}; nothing to do")
    else:
        print(f"{where}: upgraded from {_state_text(before)} to {after}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Print the store's location, schema version, task counts, and shard and archive counts."""
    with _open_store(args) as store:
        info = store.schema_info()
        counts = _all_counts(store.count_by_status())
        report = {"location": _location(info), **info, "counts": counts, "total": sum(counts.values())}
        report.update(
            shards=store.count_shards(),
            archived=store.count_archived(),
            archived_shards=store.count_shards(archived=True),
        )
    if args.json:
        _print_json(report)
    else:
        _print_info(report)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """Print tasks (archived ones with ``--archived``), newest first, as a table or a JSON array."""
    with _open_store(args) as store:
        listing = store.list_archived if args.archived else store.list
        tasks = listing(status=args.status, backend=args.backend, limit=args.limit)
    if args.json:
        _print_json([task.to_dict() for task in tasks])
    else:
        columns = ARCHIVED_LIST_COLUMNS if args.archived else LIST_COLUMNS
        rows = [[_cell(getattr(task, column)) for column in columns] for task in tasks]
        for line in format_table(columns, rows, right=("shots",)):
            print(line)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print one task with its shards as JSON; an archived one if no live task has the id (and
    say so on stderr); fail with status 1 when neither exists."""
    with _open_store(args) as store:
        task = store.get(args.task_id)
        if task is not None:
            shards = store.get_shards(args.task_id)
        else:
            task = store.get_archived(args.task_id)
            shards = [] if task is None else store.get_archived_shards(args.task_id)
    if task is None:
        return _not_found(args.task_id)
    _print_json(_with_shards(task, shards))
    if task.archived_at is not None:
        print(
            f"{PROG}: note: task {_cell(args.task_id)} is archived (since {task.archived_at}); "
            f"'{PROG} restore' moves it back",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete one task (an archived one with ``--archived``) and its shards, or fail with status
    1 when it does not exist."""
    with _open_store(args) as store:
        deleted = store.delete_archived(args.task_id) if args.archived else store.delete(args.task_id)
    if not deleted:
        return _not_found(args.task_id, archived=args.archived)
    print(f"deleted {'archived ' if args.archived else ''}task {_cell(args.task_id)}")
    return EXIT_OK


def cmd_archive(args: argparse.Namespace) -> int:
    """Move one task and its shards into the archive; status 1 when no live task has the id,
    2 when the archive already holds one."""
    with _open_store(args) as store:
        if not store.archive_task(args.task_id):
            already = store.get_archived(args.task_id) is not None
            return _not_found(args.task_id, hint="it is already archived" if already else "")
        shards = len(store.get_archived_shards(args.task_id))
    print(f"archived task {_cell(args.task_id)} ({_shards_text(shards)})")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    """Move one archived task and its shards back; status 1 when the archive has no task of
    the id, 2 when a live task has it."""
    with _open_store(args) as store:
        if not store.restore_task(args.task_id):
            live = store.get(args.task_id) is not None
            return _not_found(args.task_id, archived=True, hint="it is a live task" if live else "")
        shards = len(store.get_shards(args.task_id))
    print(f"restored task {_cell(args.task_id)} ({_shards_text(shards)})")
    return EXIT_OK


def cmd_clear_completed(args: argparse.Namespace) -> int:
    """Delete the tasks in a terminal status (older than ``--older-than``) and print how many."""
    with _open_store(args) as store:
        if args.older_than is None:
            count = store.clear_completed()
            print(f"deleted {_tasks_text(count, 'completed task')}")
            return EXIT_OK
        result = store.clear_completed(older_than=args.older_than)
    _print_sweep("deleted", result, args.older_than)
    return EXIT_OK


def cmd_archive_completed(args: argparse.Namespace) -> int:
    """Move the tasks in a terminal status (older than ``--older-than``) into the archive, in
    batches, and say how many moved, were skipped, or conflict with an archived id."""
    with _open_store(args) as store:
        result = store.archive_completed(older_than=args.older_than)
    _print_sweep("archived", result, args.older_than)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Check the database read-only; print ``ok`` or one line per problem (exit status 1)."""
    report = check.check_store(getattr(args, "cache_dir", None), url=getattr(args, "url", None), full=args.full)
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        revision = _revision_label(report.revision, report.store_revision)
        print(f"{report.location}: ok (revision {revision}{'; every row decoded' if report.full else ''})")
    else:
        print(f"{report.location}: {_tasks_text(len(report.problems), 'problem')}")
        for problem in report.problems:
            print(f"- {_cell(problem)}")
    return EXIT_OK if report.ok else EXIT_NOT_FOUND


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact an SQLite file and print its size (with its WAL) before and after."""
    report = compact.compact_store(getattr(args, "cache_dir", None), url=getattr(args, "url", None))
    print(f"compacted {report.path}: {report.size_before:,} -> {report.size_after:,} bytes (file and WAL)")
    return EXIT_OK


def _print_sweep(verb: str, result: sweep.SweepResult, older_than: timedelta | None) -> None:
    age = "" if older_than is None else f" not updated since {result.cutoff}"
    print(f"{verb} {_tasks_text(result.tasks, 'completed task')}{age}")
    untimed = result.skipped - result.without_id
    if untimed:
        print(
            f"skipped {_tasks_text(untimed, 'completed task')} whose update_time cannot be compared with "
            "the cutoff (not a time, or a time without an offset within a day of it)"
        )
    if result.without_id:
        print(
            f"skipped {_tasks_text(result.without_id, 'completed task')} with no task_id (NULL), which no "
            "command can move or delete ('check' reports them, with the SQL that removes them)"
        )
    if result.conflicts:
        shown = ", ".join(_cell(repr(task_id)) for task_id in result.conflicts[:5])
        more = f" and {len(result.conflicts) - 5} more" if len(result.conflicts) > 5 else ""
        print(
            f"left {_tasks_text(len(result.conflicts), 'completed task')} live whose id the archive already "
            f"holds: {shown}{more} ('delete --archived ID' or 'delete ID' clears the way)"
        )


def _tasks_text(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy every record into the database ``--to``, print the counts per table, and fail with
    status 2 when they do not add up."""
    try:
        sa_url.make_url(args.to)
    except (sa_exc.ArgumentError, ValueError):  # never echo it: it may hold a password
        return _fail("--to is not a valid database URL (e.g. postgresql+psycopg://user@host/db, "
                     "mysql+pymysql://user@host/db, sqlite:////path/tasks.sqlite)", EXIT_ERROR)  # fmt: skip
    with _open_store(args) as source, TaskStore(url=args.to) as target, _progress_bar("record") as progress:
        report = transfer.copy_store(source, target, merge=args.merge, progress=progress)
    print(f"copy of {report.source} to {report.target}{' (merge)' if report.merge else ''}:")
    headers = ("table", "source", "target", "copied", "already there")
    rows = [
        [t.table, f"{t.source:,}", f"{t.target:,}", f"{t.copied:,}", f"{t.skipped:,}"] for t in report.tables
    ]
    for line in format_table(headers, rows, right=headers[1:]):
        print(line)
    for t in report.tables:
        for reason, count in t.reasons:
            if reason != "copied by an earlier run":
                print(f"skipped {count:,} of {t.table}: {reason}")
    if not report.complete:
        tables = ", ".join(t.table for t in report.tables if not t.complete)
        return _fail(
            f"the counts of {tables} do not add up: records were added or deleted in the source or the "
            "target during the copy; compare the two, or run the copy again",
            EXIT_ERROR,
        )
    merged_away = any(reason != "copied by an earlier run" for t in report.tables for reason, _ in t.reasons)
    print(f"counts match: every record of the source is in the target{' or skipped' if merged_away else ''}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Write every record to FILE (a new file, written whole or not at all) or stdout."""
    if args.file != "-" and os.path.lexists(args.file):
        return _fail(f"{args.file} already exists; export writes a new file: delete it or choose another", EXIT_ERROR)
    with _open_store(args) as store, _progress_bar("record") as progress:
        if args.file == "-":
            written = jsonlines.export_records(store, sys.stdout.buffer, progress=progress)
            sys.stdout.buffer.flush()
        else:
            written = _export_to_file(store, args.file, progress)
    where = "stdout" if args.file == "-" else args.file
    print(f"exported {written} to {where}", file=sys.stderr if args.file == "-" else sys.stdout)
    return EXIT_OK


def _export_to_file(store: TaskStore, path: str, progress: Any) -> jsonlines.TransferCounts:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, partial = tempfile.mkstemp(prefix=".uniqc-store-export-", dir=directory)
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            written = jsonlines.export_records(store, out, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        os.link(partial, path)  # fails, rather than replace, if the name was taken meanwhile
    finally:
        os.unlink(partial)
    return written


def cmd_import(args: argparse.Namespace) -> int:
    """Import an export's records, all or none; each bad line is reported on a line of its own."""
    name = "stdin" if args.file == "-" else args.file
    with contextlib.ExitStack() as stack:
        lines = sys.stdin.buffer if args.file == "-" else stack.enter_context(open(args.file, "rb"))
        store = stack.enter_context(_open_store(args))
        progress = stack.enter_context(_progress_bar("line"))
        try:
            imported = jsonlines.import_records(store, lines, name=name, progress=progress)
        except BadLinesError as error:
            for number, message in error.problems:
                print(f"{PROG}: error: {name} line {number}: {_cell(message)}", file=sys.stderr)
            shown = f" (the first {len(error.problems)} shown)" if len(error.problems) < error.bad_lines else ""
            bad = f"{error.bad_lines:,} bad line{'' if error.bad_lines == 1 else 's'}"
            return _fail(f"{bad} in {name}{shown}; nothing was imported", EXIT_ERROR)
    print(f"imported {imported} from {name}")
    return EXIT_OK


@contextlib.contextmanager
def _progress_bar(unit: str) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on stderr, shown only when stderr is a terminal (tqdm's ``disable=None``);
    yields the callback the transfer functions take."""
    with tqdm(file=sys.stderr, unit=unit, unit_scale=True, disable=None, leave=False) as bar:

        def update(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        yield update


# -- helpers -------------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> TaskStore:
    return TaskStore(getattr(args, "cache_dir", None), url=getattr(args, "url", None))


def _state_before_upgrade(args: argparse.Namespace) -> SchemaState | Literal["new"] | None:
    """Read the schema state without changing anything, if that is possible.

    Returns ``"new"`` when the SQLite file does not exist yet, and None when the state could not
    be read: opening the store, next, then reports why (with the library's own message).
    """
    try:
        url = database.resolve_url(getattr(args, "cache_dir", None), getattr(args, "url", None))
        with database.opened(url) as db:
            if db.path is not None and not db.path.exists():
                return "new"  # connecting would create the file; the store creates it properly
            return schema.peek_state(db)
    except StoreError:
        return None


def _state_text(state: SchemaState) -> str:
    if state.revision is not None:
        return f"revision {_revisions(state.revision, state.store_revision)}" + (
            f" (missing {', '.join(state.missing_indexes)})" if state.missing_indexes else ""
        )
    if state.user_version:
        return f"user_version {state.user_version} (written by uniqc, no revision recorded)"
    return "base (no revision)"


def _revision_text(revision: str | None, store_revision: str | None) -> str:
    if revision is None:
        return "base (no revision)"
    return f"revision {_revision_label(revision, store_revision)}"


def _revision_label(revision: str | None, store_revision: str | None) -> str:
    """uniqc's schema revision, then the revision of this library's own indexes ('0005 + s008')."""
    if revision is None:
        return "none"
    at_head = revision == HEAD_REVISION and store_revision == STORE_HEAD
    return _revisions(revision, store_revision) + (" (head)" if at_head else "")


def _revisions(revision: str, store_revision: str | None) -> str:
    return revision + (f" + {store_revision}" if store_revision else "")


def _location(info: dict[str, Any]) -> str:
    """The SQLite file's path, or the server's URL with its password hidden."""
    location: str = info.get("path") or info["url"]
    return location


def _all_counts(present: dict[str, int]) -> dict[str, int]:
    """Counts of every status in TaskStatus order, zeros included, then any unknown ones."""
    counts = {status.value: present.get(status.value, 0) for status in TaskStatus}
    counts.update(sorted((status, n) for status, n in present.items() if status not in counts))
    return counts


def _print_info(report: dict[str, Any]) -> None:
    revision = _revision_label(report["revision"], report["store_revision"])
    fields = [("location", report["location"]), ("revision", revision)]
    fields += [(key, report[key]) for key in ("user_version", "application_id") if key in report]
    fields += list(report["counts"].items())
    fields += [(key, report[key]) for key in ("total", "shards", "archived", "archived_shards")]
    width = max(len(key) for key, _ in fields) + 1
    for key, value in fields:
        print(f"{key + ':':<{width}} {value}")


def _with_shards(task: TaskInfo, shards: list[TaskShard]) -> dict[str, Any]:
    return {**task.to_dict(), "shards": [shard.to_dict() for shard in shards]}


def _shards_text(count: int) -> str:
    return f"{count} shard{'' if count == 1 else 's'}"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()
) -> list[str]:
    """Lay out ``rows`` under ``headers`` in columns two spaces apart, without trailing blanks.

    Columns named in ``right`` are right-aligned; widths count East Asian wide characters twice.
    """
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(_width(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = []
        for header, text, width in zip(headers, row, widths, strict=False):  # cells past the headers: not shown
            pad = " " * (width - _width(text))
            cells.append(pad + text if header in right else text + pad)
        lines.append("  ".join(cells).rstrip())
    return lines


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(value: object) -> str:
    """``value`` as text on one line: control and other unprintable characters escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _not_found(task_id: str, *, archived: bool = False, hint: str = "") -> int:
    where = " in the archive" if archived else ""
    return _fail(f"task {task_id!r} not found{where}{f'; {hint}' if hint else ''}", EXIT_NOT_FOUND)


def _describe(error: BaseException, args: argparse.Namespace) -> str:
    """The message of a library, driver or OS error, naming the database when the driver does not,
    with the URL's credentials scrubbed out (a driver error that escaped translation may quote
    them)."""
    if isinstance(error, sa_exc.DBAPIError):
        message = f"{_target(args)}: {error.orig}"
    elif isinstance(error, sa_exc.SQLAlchemyError):
        message = f"{_target(args)}: {error.args[0] if error.args else type(error).__name__}"
    else:
        message = str(error) or type(error).__name__
    return database.scrub(message, _hidden(args))


def _hidden(args: argparse.Namespace) -> tuple[str, ...]:
    """The credentials of the URL the command line names (``--url`` or ``$UNIQC_STORE_URL``)."""
    url = getattr(args, "url", None)
    if url is None and getattr(args, "cache_dir", None) is None:
        url = os.environ.get(database.ENV_URL)
    target = getattr(args, "to", None)  # copy --to: its password and secret options (messages name it)
    # Their secrets only: a URL that parses is shown masked (database.mask), not as *** whole.
    return (_target_secrets(url) if url else ()) + (_target_secrets(target) if target else ())


def _target_secrets(url: str) -> tuple[str, ...]:
    try:
        return database.secrets(sa_url.make_url(url))
    except (sa_exc.ArgumentError, ValueError):
        return database.secrets(url)  # not a URL: hide all of it


def _target(args: argparse.Namespace) -> str:
    """The database the command line names, as a path or a password-masked URL."""
    try:
        url = database.resolve_url(getattr(args, "cache_dir", None), getattr(args, "url", None))
    except StoreError:
        return "the database"
    if url.get_backend_name() == "sqlite" and url.database is not None:  # resolve_url() sets it
        return url.database
    return database.mask(url)


def _fail(message: str, status: int) -> int:
    """Print ``message`` as one ``uniqc-store: error:`` line on stderr; return ``status``."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return status


def _stdout_closed() -> int:
    """The reader of stdout went away (``uniqc-store list | head``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
