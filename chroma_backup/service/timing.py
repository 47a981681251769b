"""When the daemon's jobs run: every so many seconds from the daemon's start, or at the times a
cron expression names (UTC); each run up to ``jitter`` seconds late, at random (several daemons
on one catalog then do not all start at the same second)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from chroma_backup.cron import Cron


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Timer:
    def __init__(
        self,
        *,
        every_seconds: float | None = None,
        cron: str | None = None,
        jitter: float = 0.0,
        clock: Callable[[], datetime] = _now,
        rand: Callable[[float, float], float] = random.uniform,
    ):
        if (every_seconds is None) == (cron is None):
            raise ValueError("a timer runs every so many seconds or on a cron schedule")
        self.every = timedelta(seconds=every_seconds) if every_seconds is not None else None
        self.cron = Cron.parse(cron) if cron else None
        self.jitter = jitter
        self._clock = clock
        self._rand = rand
        self._schedule(clock())

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron.expression!r} (UTC)"
        assert self.every is not None
        return f"every {self.every.total_seconds() / 60:g}min"

    def period_seconds(self) -> float:
        """Seconds between two runs (for a cron schedule: between the next run and the one after)."""
        if self.every is not None:
            return self.every.total_seconds()
        assert self.cron is not None
        return (self.cron.next_after(self.scheduled) - self.scheduled).total_seconds()

    def _schedule(self, after: datetime) -> None:
        """The next run after ``after``: on time (``scheduled``), and with its jitter (``next_run``)."""
        self.scheduled = self.cron.next_after(after) if self.cron is not None else after + (self.every or timedelta())
        self.next_run = self.scheduled + timedelta(seconds=self._rand(0.0, self.jitter) if self.jitter else 0.0)

    def due(self) -> bool:
        """True once the next run's time has come; the timer then moves on to the one after
        (an interval keeps its beat from the start unless a run came a whole interval late)."""
        now = self._clock()
        if now < self.next_run:
            return False
        on_beat = self.every is not None and now - self.scheduled < self.every
        self._schedule(self.scheduled if on_beat else now)
        return True
