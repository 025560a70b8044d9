"""Alembic environment of uniqc_store: all the work is done by uniqc_store.schema.run_env."""

import logging
from logging.config import fileConfig

from alembic import context

from uniqc_store.schema import run_env

# Configure logging from alembic.ini only when run from the command line, and never over a host
# application's own logging.
if context.config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

run_env(context)
