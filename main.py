"""``python main.py COMMAND``: the command line of chroma-backup (also ``chroma-backup`` and
``python -m chroma_backup``).  No command starts the daemon (``run``)."""

import sys

from chroma_backup.cli import main

if __name__ == "__main__":
    sys.exit(main())
