"""``python -m chroma_backup COMMAND``."""

import sys

from chroma_backup.cli import main

sys.exit(main())
