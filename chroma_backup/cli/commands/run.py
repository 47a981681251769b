"""``run`` (also no command at all): the daemon."""

from __future__ import annotations

import argparse
import threading

from chroma_backup.app.operations import Operations

NAME = "run"
SUMMARY = "the daemon: scheduled backups, health checks, auto-recovery (the default)"
HELP = (
    "Run the daemon: backup at start and every EXPORT_INTERVAL_MINUTES, health checks every "
    "HEALTH_CHECK_INTERVAL_MINUTES, auto-recovery when AUTO_RESTORE."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, ops: Operations) -> int:
    from chroma_backup.service.daemon import Daemon
    from chroma_backup.service.metrics import Metrics
    from chroma_backup.service.signals import install_signal_handlers

    stop = threading.Event()
    install_signal_handlers(stop)
    return Daemon(ops.backend, Metrics(ops.settings.replica), stop).run()
