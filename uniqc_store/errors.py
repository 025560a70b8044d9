"""The exceptions raised by uniqc_store.

Every exception derives from :class:`StoreError`, and also from the standard
base that callers already catch for that kind of failure (``ValueError`` and
``TypeError`` for bad arguments, ``RuntimeError`` for a database we refuse or
cannot use, ``ImportError`` for a missing driver).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by uniqc_store."""


class InvalidTaskError(StoreError, ValueError):
    """An argument or a task field has an acceptable type but a bad value."""


class InvalidTaskTypeError(InvalidTaskError, TypeError):
    """An argument or a task field has the wrong type."""


class DatabaseError(StoreError, RuntimeError):
    """The database failed or could not be reached; the operation did not happen."""


class DatabaseRefusedError(DatabaseError):
    """The store refused to open a database; the file or server was left untouched."""


class NotADatabaseError(DatabaseRefusedError):
    """The file exists but is not an SQLite database."""


class ForeignDatabaseError(DatabaseRefusedError):
    """The SQLite file belongs to another application (its ``application_id`` is not "UNIC")."""


class SchemaTooNewError(DatabaseRefusedError):
    """The database was written by a newer uniqc_store or uniqc than this one."""


class MigrationError(DatabaseError):
    """A schema migration failed. On SQLite and PostgreSQL the failing revision was rolled back
    completely; on MySQL/MariaDB, which commit DDL implicitly, the message says what may remain."""


class DriverNotInstalledError(StoreError, ImportError):
    """The database URL names a driver that is not installed."""


class UnsupportedDatabaseError(StoreError, ValueError):
    """The database URL names a kind of database uniqc_store does not support."""


class CorruptRecordError(DatabaseError):
    """A stored row cannot be read back: its JSON text is invalid, or nests too deep to decode.

    The message names the task and the field; the row is left as it is. Other rows stay
    readable with ``get()``, and the bad one can be removed with ``delete()``.
    """


class TaskConflictError(StoreError, ValueError):
    """Moving a task between the live tables and the archive would overwrite a record already
    there: archiving an id the archive holds, or restoring an id that is live. Nothing was moved;
    the message says which record to delete first."""


class TaskNotFoundError(StoreError, LookupError):
    """A record refers to a task that does not exist: saving a shard whose ``uniqc_task_id`` is no
    live task. Nothing was written; save the task first (or restore it from the archive)."""


class WriteIntentError(StoreError, RuntimeError):
    """A statement that changes data was run where only reads are allowed: through a store's
    read-only ORM session, or (a bug) in a unit of work opened to read. Nothing was run."""


class BadLinesError(InvalidTaskError):
    """Lines of a file given to :func:`uniqc_store.import_records` are not valid records, or
    conflict with the target's (an id it already holds). Nothing was imported.

    Attributes:
        problems: ``(line number, what is wrong)`` of the first bad lines, in file order.
        bad_lines: How many bad lines were found in all.
    """

    def __init__(self, message: str, problems: list[tuple[int, str]], bad_lines: int) -> None:
        super().__init__(message)
        self.problems = problems
        self.bad_lines = bad_lines
