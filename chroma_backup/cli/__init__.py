"""The command line: ``python main.py COMMAND`` (also ``chroma-backup`` and ``python -m
chroma_backup``); no command means ``run``.  One module per command in ``commands``; the parser
in ``parser``; what commands print in ``output``; logging in ``logs``.

``main()`` alone turns errors into exit codes: 0 ok, 1 failure / unhealthy / mismatch, 2 usage or
configuration error (one line naming the option or variable, never a traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.cli.commands import COMMANDS
from chroma_backup.cli.logs import setup_logging
from chroma_backup.cli.parser import build_parser
from chroma_backup.errors import BackupError
from chroma_backup.settings import Settings, load_settings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (containers): not ours to show.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        parser = build_parser(COMMANDS, _prog())
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["run", *argv])
        if not getattr(args, "needs_stores", True):
            setup_logging(Settings(log_level="ERROR"))
            return int(args.func(args))
        settings = load_settings()
        setup_logging(settings)
        backend = Backend(settings)
        ops = Operations(backend)
        try:
            return int(args.func(args, ops))
        finally:
            ops.close()
            backend.close()
    except BackupError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except Exception as error:  # the last boundary: one line, no traceback unless DEBUG
        log.debug("unexpected error", exc_info=True)
        print(
            f"error: unexpected {type(error).__name__}: {error} (LOG_LEVEL=DEBUG shows the traceback)", file=sys.stderr
        )
        return 1


def _prog() -> str:
    """How the program was started, as usage lines and errors name it: ``main.py``,
    ``chroma-backup`` or ``python -m chroma_backup``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "main.py"
    return "python -m chroma_backup" if name == "__main__.py" else name


__all__ = ["main"]
