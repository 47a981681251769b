"""Pacing reads so that a backup does not crowd out the application's queries on the same server.

One ``ReadPacer`` per process paces every reader of it together (all the threads of all the
collections a round works on):

- ``limit`` (READ_RATE_LIMIT, records/s, 0 = none): a token bucket; a reader asks for its page's
  records before it sends the request and waits for them.
- ``adaptive`` (READ_RATE_ADAPTIVE): an AIMD controller on the server's answer time.  The time per
  record of the fastest recent answers of about the same size (a request's fixed cost weighs more
  on a small one) is the server's usual; while answers take more than
  ``SLOW`` times that, the rate drops by ``DECREASE`` (at most once per ``COOLDOWN``); while they
  are back to usual it climbs by ``INCREASE`` of the rate it dropped from per second; an answer
  of 429 or 503 halves it at once.  The rate never drops below ``FLOOR`` records/s, and never
  rises above ``limit`` when one is set (without one, the pacer stops pacing once the rate has
  climbed back to where it started).

Pure (time is passed in for the tests); thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

SLOW = 2.5  # answers this many times slower than usual mean the server is busy
DECREASE = 0.8
INCREASE = 0.1  # of the rate before the first decrease, per second
COOLDOWN = 1.0  # seconds between two decreases (a burst of slow answers is one signal)
FLOOR = 50.0  # records/s: a backup always makes progress
WINDOW = 64  # recent answers the usual time is taken from
BURST_SECONDS = 1.0


class ReadPacer:
    def __init__(self, limit: float = 0.0, adaptive: bool = False, clock: Callable[[], float] = time.monotonic):
        self.limit = float(limit)
        self.adaptive = adaptive
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = self.limit or 0.0  # 0: not pacing
        self._ceiling = self.limit or 0.0  # where additive increase stops
        self._tokens = self._rate * BURST_SECONDS
        self._stamp = clock()
        # by kind of request and size class (the bit length of the record count): a read by ids
        # and a read of a collection's first records cost the server differently per record
        self._recent: dict[tuple[str, int], deque[float]] = {}
        self._last_decrease = -COOLDOWN
        self._last_increase = clock()

    @property
    def active(self) -> bool:
        return self.limit > 0 or self.adaptive

    @property
    def rate(self) -> float:
        """Records/s allowed now (0: not pacing)."""
        return self._rate

    def wait_for(self, records: int, sleep: Callable[[float], None] = time.sleep) -> float:
        """Take ``records`` from the bucket, waiting for them as long as needed; returns the wait."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if self._rate <= 0:
                    return waited
                self._tokens = min(
                    self._rate * BURST_SECONDS + records, self._tokens + (now - self._stamp) * self._rate
                )
                self._stamp = now
                if self._tokens >= records - 1e-6:
                    self._tokens -= records
                    return waited
                delay = max(0.001, (records - self._tokens) / self._rate)
            sleep(delay)
            waited += delay

    def observe(self, seconds: float, records: int, kind: str = "ids") -> None:
        """An answer of ``records`` records took ``seconds``: adapt the rate to it (``kind``: what
        was asked, compared only with answers to the same kind of request)."""
        if not self.adaptive or records <= 0:
            return
        per_record = seconds / records
        with self._lock:
            now = self._clock()
            recent = self._recent.setdefault((kind, records.bit_length()), deque(maxlen=WINDOW))
            usual = min(recent) if recent else per_record
            recent.append(per_record)
            if per_record > SLOW * usual:
                self._decrease(now, current=records / max(seconds, 1e-6))
            elif self._rate > 0:
                self._increase(now)

    def refused(self) -> None:
        """The server answered 429 or 503: halve the rate at once."""
        if not self.adaptive:
            return
        with self._lock:
            now = self._clock()
            base = self._rate or self._ceiling or FLOOR * 20
            self._set(max(FLOOR, base * 0.5), now)
            self._last_decrease = now

    def _decrease(self, now: float, current: float) -> None:
        if now - self._last_decrease < COOLDOWN:
            return
        if self._rate <= 0:  # not pacing yet: start from what the server gives now
            self._ceiling = self._ceiling or current * 2
            base = current
        else:
            base = self._rate
        self._set(max(FLOOR, base * DECREASE), now)
        self._last_decrease = now

    def _increase(self, now: float) -> None:
        step = INCREASE * (self._ceiling or self._rate) * (now - self._last_increase)
        self._last_increase = now
        rate = self._rate + step
        if self.limit > 0:
            self._set(min(self.limit, rate), now)
        elif rate >= self._ceiling:
            self._rate, self._tokens = 0.0, 0.0  # back where it started: stop pacing
        else:
            self._set(rate, now)

    def _set(self, rate: float, now: float) -> None:
        if self._rate <= 0:
            self._tokens = rate * BURST_SECONDS
        self._rate = rate
        self._stamp = now
        self._last_increase = now
