"""Bounded retries for transient errors: capped exponential backoff with jitter."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from chroma_backup.errors import BackupError, Interrupted

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delays(base: float = 0.5, cap: float = 30.0) -> Iterator[float]:
    """0.5, 1, 2, 4 ... seconds (capped), each with +-25% jitter."""
    delay = base
    while True:
        yield delay * random.uniform(0.75, 1.25)
        delay = min(cap, delay * 2)


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int,
    max_seconds: float,
    stop: threading.Event | None = None,
    base: float = 0.5,
    cap: float = 30.0,
) -> T:
    """``fn()``, retried while it raises a transient ``BackupError``.

    Gives up after ``attempts`` calls or once ``max_seconds`` have passed, re-raising the last
    error; any other error is raised at once.  A set ``stop`` event ends the waiting early.
    """
    deadline = time.monotonic() + max_seconds
    delays = backoff_delays(base, cap)
    attempt = 1
    while True:
        try:
            return fn()
        except BackupError as error:
            if not error.transient or attempt >= attempts:
                raise
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise
            log.warning("retry what=%s attempt=%d/%d wait=%.1fs error=%s", what, attempt, attempts, delay, error)
            if stop is not None:
                if stop.wait(delay):
                    raise Interrupted(f"{what} interrupted by shutdown") from error
            else:
                time.sleep(delay)
            attempt += 1
