"""The read pacer: a limit holds its rate, the adaptive controller slows down while the server
answers slower than usual, backs off at once on 429/503, and climbs back (a clock of our own)."""

from __future__ import annotations

import threading

import pytest

from chroma_backup.chroma.pacing import DECREASE, FLOOR, ReadPacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_limit_holds_its_rate_over_many_pages():
    clock = Clock()
    pacer = ReadPacer(limit=1000, clock=clock)
    for _ in range(200):  # 200 pages of 250 records: 50,000 records at 1,000/s
        pacer.wait_for(250, sleep=clock.sleep)
    elapsed = clock.now - 1000.0
    assert 49.0 <= elapsed <= 50.0  # one second of burst at the start


def test_without_a_limit_or_adaptation_nothing_waits():
    clock = Clock()
    pacer = ReadPacer(clock=clock)
    assert not pacer.active
    assert pacer.wait_for(10_000, sleep=clock.sleep) == 0.0


def test_slow_answers_slow_the_reads_down_and_usual_ones_let_them_climb_back():
    clock = Clock()
    pacer = ReadPacer(adaptive=True, clock=clock)
    for _ in range(10):
        pacer.observe(0.025, 250)  # 10k records/s: the server's usual
        clock.now += 0.1
    assert pacer.rate == 0  # nothing to protect yet: not pacing
    pacer.observe(0.25, 250)  # ten times slower: the server is busy
    first = pacer.rate
    assert first == pytest.approx(1000 * DECREASE)  # started from what the server gave, reduced
    clock.now += 0.5
    pacer.observe(0.25, 250)  # still slow, but within the cooldown: one signal
    assert pacer.rate == first
    clock.now += 1.5
    pacer.observe(0.25, 250)
    assert pacer.rate == pytest.approx(first * DECREASE)
    for _ in range(400):  # usual answers again: the rate climbs, then pacing stops
        clock.now += 0.5
        pacer.observe(0.025, 250)
    assert pacer.rate == 0


def test_answers_are_compared_only_with_answers_to_the_same_kind_of_request():
    clock = Clock()
    pacer = ReadPacer(adaptive=True, clock=clock)
    for _ in range(50):  # a collection's first 1,000 records (a scan), then the same ids read back
        clock.now += 0.5
        pacer.observe(0.02, 1000, kind="first")
        pacer.observe(0.06, 1000)  # by ids: three times the scan's time per record, every time
    assert pacer.rate == 0  # usual for a read by ids: not a busy server
    pacer.observe(0.6, 1000)  # ten times a read by ids' usual
    assert pacer.rate > 0


def test_a_429_or_503_halves_the_rate_at_once_and_never_below_the_floor():
    clock = Clock()
    pacer = ReadPacer(limit=4000, adaptive=True, clock=clock)
    pacer.refused()
    assert pacer.rate == 2000
    for _ in range(20):
        pacer.refused()
    assert pacer.rate == FLOOR


def test_with_a_limit_the_adaptive_rate_never_exceeds_it():
    clock = Clock()
    pacer = ReadPacer(limit=500, adaptive=True, clock=clock)
    for _ in range(100):
        clock.now += 1
        pacer.observe(0.01, 250)
    assert pacer.rate == 500


def test_threads_share_one_budget():
    clock_lock = threading.Lock()
    clock = Clock()

    def sleep(seconds: float) -> None:
        with clock_lock:
            clock.now += seconds

    pacer = ReadPacer(limit=2000, clock=clock)
    threads = [threading.Thread(target=lambda: [pacer.wait_for(100, sleep=sleep) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now - 1000.0 >= (4 * 50 * 100 - 2000) / 2000  # 20,000 records at 2,000/s, less the burst
