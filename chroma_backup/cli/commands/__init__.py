"""One module per command: its ``NAME``, ``SUMMARY`` (the line in ``--help``), ``HELP``,
``add_arguments(parser)`` and ``run(args, ops) -> exit code``."""

from chroma_backup.cli.commands import accept, backup, demo, health, prune, restore, run, snapshots, verify

COMMANDS = [run, backup, snapshots, restore, verify, health, accept, prune, demo]
