"""``python -m uniqc_store``: the ``uniqc-store`` command line (see :mod:`uniqc_store.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
