"""A kind of job (backup, health) run in a thread of its own, one turn at a time, with a retry
soon after a turn that failed as a whole."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from chroma_backup.errors import Interrupted
from chroma_backup.service.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 15.0  # a failed turn is tried again after 15 s, 30 s, 60 s ...
RETRY = object()  # what a job returns when its turn failed for a reason that may pass


class Worker:
    """Runs one kind of job in its own thread; skips a turn while the previous one still runs.

    A turn that fails as a whole (the job raises, or says ``RETRY``: e.g. the start-up backup
    while PostgreSQL is still coming up) is tried again soon, with capped exponential backoff
    (RETRY_FIRST_SECONDS, doubling, at most ``retry_cap`` seconds), instead of at the next
    scheduled turn; a turn that succeeds resets it."""

    def __init__(self, name: str, job: Callable[[], Any], metrics: Metrics, retry_cap: float = 0.0):
        self.name = name
        self.job = job
        self.metrics = metrics
        self.thread: threading.Thread | None = None
        self.retry_cap = retry_cap
        self.retry_at: float | None = None
        self._delay = RETRY_FIRST_SECONDS

    def trigger(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            log.info("job=%s still running; skipping this turn", self.name)
            return
        self.retry_at = None
        self.thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self.thread.start()

    def retry_due(self) -> bool:
        return self.retry_at is not None and time.monotonic() >= self.retry_at

    def _run(self) -> None:
        try:
            outcome = self.job()
        except Interrupted:
            log.info("job=%s interrupted by shutdown", self.name)
            return
        except Exception:  # the job boundary: log, count, and let the loop go on
            log.exception("job=%s failed", self.name)
            self.metrics.failure("*", self.name)
            outcome = RETRY
        if outcome is RETRY and self.retry_cap > 0:
            delay = min(self._delay, self.retry_cap)
            self.retry_at = time.monotonic() + delay
            self._delay = min(self._delay * 2, self.retry_cap)
            log.warning("job=%s failed; next try in %.0fs", self.name, delay)
        else:
            self._delay = RETRY_FIRST_SECONDS

    def join(self, timeout: float) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True
