"""Shutdown by signal: the first SIGTERM/SIGINT asks every job to stop after its current batch;
a second one exits at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def install_signal_handlers(stop: threading.Event) -> None:
    received = []

    def handle(signum: int, _frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.warning("signal=%s shutdown requested: finishing the current batch (send again to exit now)", name)
            stop.set()
        else:
            log.error("signal=%s again: exiting now", name)
            os._exit(1)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
