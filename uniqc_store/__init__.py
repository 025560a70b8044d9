"""uniqc_store: UnifiedQuantum's task-record store as an SQLAlchemy ORM library.

Reads and writes the same ``~/.uniqc/cache/tasks.sqlite`` files as uniqc's own store, and runs
unchanged on PostgreSQL and MySQL/MariaDB chosen by URL.
"""

from .check import CheckReport, check_store
from .compact import CompactReport, compact_store
from .database import DB_FILENAME, DEFAULT_CACHE_DIR
from .errors import (
    BadLinesError,
    CorruptRecordError,
    DatabaseError,
    DatabaseRefusedError,
    DriverNotInstalledError,
    ForeignDatabaseError,
    InvalidTaskError,
    InvalidTaskTypeError,
    MigrationError,
    NotADatabaseError,
    SchemaTooNewError,
    StoreError,
    TaskConflictError,
    TaskNotFoundError,
    UnsupportedDatabaseError,
    WriteIntentError,
)
from .jsonlines import TransferCounts, export_records, import_records
from .models import ArchivedShard, ArchivedTask, Shard, Task
from .records import (
    TERMINAL_STATUSES,
    UNIQC_TASK_ID_PREFIX,
    TaskInfo,
    TaskShard,
    TaskStatus,
    generate_uniqc_task_id,
    is_uniqc_task_id,
)
from .rows import model_of, record_of
from .schema import APPLICATION_ID, CURRENT_SCHEMA_VERSION, HEAD_REVISION
from .store import TaskStore
from .sweep import SweepResult
from .transfer import CopyReport, TableCopy, copy_store

__version__ = "0.1.0"

__all__ = [
    "APPLICATION_ID",
    "CURRENT_SCHEMA_VERSION",
    "DB_FILENAME",
    "DEFAULT_CACHE_DIR",
    "HEAD_REVISION",
    "TERMINAL_STATUSES",
    "UNIQC_TASK_ID_PREFIX",
    "ArchivedShard",
    "ArchivedTask",
    "BadLinesError",
    "CheckReport",
    "CompactReport",
    "CopyReport",
    "CorruptRecordError",
    "DatabaseError",
    "DatabaseRefusedError",
    "DriverNotInstalledError",
    "ForeignDatabaseError",
    "InvalidTaskError",
    "InvalidTaskTypeError",
    "MigrationError",
    "NotADatabaseError",
    "SchemaTooNewError",
    "Shard",
    "StoreError",
    "SweepResult",
    "TableCopy",
    "Task",
    "TaskConflictError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskShard",
    "TaskStatus",
    "TaskStore",
    "TransferCounts",
    "UnsupportedDatabaseError",
    "WriteIntentError",
    "check_store",
    "compact_store",
    "copy_store",
    "export_records",
    "generate_uniqc_task_id",
    "import_records",
    "is_uniqc_task_id",
    "model_of",
    "record_of",
]
