"""One module per command: its ``NAME``, ``SUMMARY`` (the line in ``--help``), ``HELP``,
``add_arguments(parser)`` and ``run(args, ops) -> exit code``."""

from chroma_backup.cli.commands import (
    accept,
    backup,
    demo,
    diff,
    health,
    pin,
    prune,
    repair,
    restore,
    run,
    snapshots,
    unpin,
    verify,
)

COMMANDS = [run, backup, snapshots, restore, verify, diff, health, repair, accept, pin, unpin, prune, demo]
