"""The daemon's timers (intervals and cron, with jitter) and the event tracker (one notification
per change of state, never one per check), with a clock of our own."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from chroma_backup.errors import ConfigError
from chroma_backup.service.notify import Event, Tracker, signature
from chroma_backup.service.timing import Timer
from chroma_backup.settings import load_settings

START = datetime(2026, 12, 5, 17, 4, 30, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def test_an_interval_keeps_its_beat_from_the_start():
    clock = Clock()
    timer = Timer(every_seconds=600, clock=clock)
    assert timer.next_run == START + timedelta(minutes=10)
    clock.now = START + timedelta(minutes=10, seconds=2)  # the loop turned a little late
    assert timer.due() and not timer.due()
    assert timer.next_run == START + timedelta(minutes=20)  # not 20 min 2 s
    clock.now = START + timedelta(minutes=55)  # the process was suspended: no burst of catch-up runs
    assert timer.due() and not timer.due()
    assert timer.next_run == START + timedelta(minutes=65)


def test_a_cron_timer_runs_on_the_clock():
    clock = Clock()
    timer = Timer(cron="*/20 * * * *", clock=clock)
    assert timer.next_run == datetime(2026, 12, 5, 17, 20, tzinfo=timezone.utc)
    assert timer.period_seconds() == 1200
    clock.now = timer.next_run
    assert timer.due()
    assert timer.next_run == datetime(2026, 12, 5, 17, 40, tzinfo=timezone.utc)


def test_jitter_delays_each_run_by_at_most_its_bound_without_drifting_the_schedule():
    clock = Clock()
    timer = Timer(cron="0 * * * *", jitter=30, clock=clock, rand=lambda low, high: high)
    assert timer.next_run == datetime(2026, 12, 5, 18, 0, 30, tzinfo=timezone.utc)
    clock.now = timer.next_run
    assert timer.due()
    assert timer.next_run == datetime(2026, 12, 5, 19, 0, 30, tzinfo=timezone.utc)


def test_a_bad_cron_setting_is_a_one_line_configuration_error_naming_the_variable():
    with pytest.raises(ConfigError) as error:
        load_settings({"EXPORT_SCHEDULE": "5 * * *"}, env_file=None)
    assert str(error.value) == (
        "EXPORT_SCHEDULE: expected a cron expression (minute hour day month weekday), got '5 * * *': "
        "expected 5 fields (minute hour day-of-month month day-of-week), got 4"
    )


def test_a_notify_url_that_is_not_a_url_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as error:
        load_settings({"NOTIFY_URLS": "https://hooks.example/ok, ftp://token-abc@x/y"}, env_file=None)
    assert "token-abc" not in str(error.value)
    assert str(error.value).startswith("NOTIFY_URLS: entry 2 is not an http(s):// or slack+https:// URL")


def test_a_failing_backup_is_one_event_until_it_succeeds_again():
    tracker = Tracker()
    kinds = [
        tracker.backup("docs", True, "ok"),
        tracker.backup("docs", False, "boom"),
        tracker.backup("docs", False, "boom again"),
        tracker.stale("docs", "two intervals"),
        tracker.stale("docs", "still"),
        tracker.backup("docs", True, "snapshot 9 complete"),
        tracker.backup("docs", True, "snapshot 10 complete"),
    ]
    assert [e.kind if e else None for e in kinds] == [
        None,
        "backup_failed",
        None,
        "backup_stale",
        None,
        "backup_ok",
        None,
    ]


def test_an_unhealthy_collection_is_announced_once_confirmed_and_its_return_once():
    tracker = Tracker()
    seen = [
        tracker.health("docs", False, False, "missing"),  # one check: not confirmed yet
        tracker.health("docs", False, False, "missing"),  # seen again: confirmed
        tracker.health("docs", False, True, "missing"),
        tracker.health("docs", True, False, "ok"),
        tracker.health("docs", True, False, "ok"),
        tracker.health("faq", False, True, "corrupt"),  # confirmed by the round itself (recovery ran)
        tracker.health("faq", True, False, "ok"),
    ]
    assert [e.kind if e else None for e in seen] == [None, "unhealthy", None, "healthy", None, "unhealthy", "healthy"]


def test_a_blip_is_not_an_alarm():
    tracker = Tracker()
    assert tracker.health("docs", False, False, "shrunk") is None
    assert tracker.health("docs", True, False, "ok") is None


def test_an_event_carries_no_setting_and_signs_as_hmac_sha256():
    event = Event("backup_failed", "boom", "docs", replica="a")
    assert set(event.as_json()) == {"event", "detail", "collection", "replica", "time", "data"}
    assert signature("s3cret", b"{}") == "sha256=" + hmac.new(b"s3cret", b"{}", hashlib.sha256).hexdigest()
