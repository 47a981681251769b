"""The retention policy, in a table: which snapshots and failed runs go and why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import T0
from hypothesis import given, settings
from hypothesis import strategies as st

from chroma_backup.catalog import SnapshotAge
from chroma_backup.core.retention import RetentionPolicy, plan

NOW = T0 + timedelta(days=100)


def age(snapshot_id: int, days_old: float, *, status: str = "complete", healthy: bool = True) -> SnapshotAge:
    when = NOW - timedelta(days=days_old)
    return SnapshotAge(snapshot_id, status, when, when, healthy)


CASES = [
    (
        "old snapshots go, the newest N always stay",
        [age(1, 90), age(2, 80), age(3, 70), age(4, 60)],
        RetentionPolicy(30, 2),
        {1: False, 2: False, 3: True, 4: True},
    ),
    (
        "young snapshots stay whatever their number",
        [age(1, 3), age(2, 2), age(3, 1)],
        RetentionPolicy(30, 1),
        {1: True, 2: True, 3: True},
    ),
    (
        "the newest N taken while ok stay however many labelled ones are newer",
        [age(1, 90), age(2, 80), age(3, 70, healthy=False), age(4, 60, healthy=False)],
        RetentionPolicy(30, 2),
        {1: True, 2: True, 3: True, 4: True},
    ),
    (
        "beyond those, an old ok snapshot goes",
        [age(1, 95), age(2, 90), age(3, 80), age(4, 70, healthy=False), age(5, 60, healthy=False)],
        RetentionPolicy(30, 2),
        {1: False, 2: True, 3: True, 4: True, 5: True},
    ),
    (
        "failed runs go once they are as old as an expired snapshot",
        [age(1, 90, status="failed"), age(2, 5, status="failed"), age(3, 1)],
        RetentionPolicy(30, 1),
        {1: False, 2: True, 3: True},
    ),
    ("running snapshots are never touched", [SnapshotAge(9, "running", NOW, None, True)], RetentionPolicy(0, 1), {}),
]


@pytest.mark.parametrize("case,snapshots,policy,kept", CASES, ids=[c[0] for c in CASES])
def test_retention_policy(case, snapshots, policy, kept):
    decisions = plan(snapshots, policy, NOW)
    assert {d.snapshot_id: d.keep for d in decisions} == kept
    assert [d.snapshot_id for d in decisions] == sorted(kept, reverse=True)  # newest first


def test_every_decision_says_why():
    decisions = plan([age(1, 90), age(2, 80), age(3, 10), age(4, 1, healthy=False)], RetentionPolicy(30, 1), NOW)
    assert [(d.snapshot_id, d.reason) for d in decisions] == [
        (4, "one of the newest 1, younger than 30 days"),
        (3, "one of the newest 1 taken while ok, younger than 30 days"),
        (2, "older than 30 days and kept by no rule"),
        (1, "older than 30 days and kept by no rule"),
    ]


def hourly_history(hours: int) -> list[SnapshotAge]:
    """A snapshot every hour for ``hours`` hours, the newest ``NOW``."""
    return [
        SnapshotAge(i + 1, "complete", NOW - timedelta(hours=hours - 1 - i), NOW - timedelta(hours=hours - 1 - i), True)
        for i in range(hours)
    ]


def test_hourly_for_two_days_daily_for_a_month_monthly_for_a_year():
    history = hourly_history(24 * 400)
    policy = RetentionPolicy(days=0, min_snapshots=1, hourly=48, daily=30, monthly=12)
    kept = [d for d in plan(history, policy, NOW) if d.keep]
    times = sorted(d.when for d in kept)
    assert len([t for t in times if t > NOW - timedelta(hours=48)]) == 48  # every hour of two days
    days = {t.date() for t in times if t > NOW - timedelta(days=30)}
    assert len(days) == 30  # one per day for a month (the hourly ones share the newest two)
    newest_months = sorted({(s.finished_at.year, s.finished_at.month) for s in history}, reverse=True)[:12]
    assert {(t.year, t.month) for t in times} == set(newest_months)  # and one in each of the newest 12 months
    assert len(kept) < 48 + 30 + 12  # the rules overlap on the newest periods
    newest_of_day = {}
    for d in sorted((d for d in plan(history, policy, NOW)), key=lambda d: d.when):
        newest_of_day[d.when.date()] = d
    assert all(d.keep for day, d in newest_of_day.items() if day > (NOW - timedelta(days=30)).date())


def test_keep_last_and_a_pin_keep_what_no_other_rule_would():
    history = [age(1, 900), age(2, 800), age(3, 700), age(4, 600)]
    history[0] = SnapshotAge(1, "complete", history[0].started_at, history[0].finished_at, True, pinned=True)
    decisions = {d.snapshot_id: d for d in plan(history, RetentionPolicy(30, 1, keep_last=2), NOW)}
    assert (decisions[1].keep, decisions[1].reason) == (True, "pinned")
    assert (decisions[2].keep, decisions[3].keep, decisions[4].keep) == (False, True, True)
    assert decisions[3].reason == "one of the last 2"


SNAPSHOTS = st.lists(
    st.tuples(st.integers(0, 24 * 800), st.booleans(), st.booleans(), st.sampled_from(["complete", "failed"])),
    min_size=1,
    max_size=60,
)
POLICIES = st.builds(
    RetentionPolicy,
    days=st.sampled_from([0, 1, 30]),
    min_snapshots=st.integers(1, 5),
    keep_last=st.integers(0, 5),
    hourly=st.integers(0, 10),
    daily=st.integers(0, 10),
    weekly=st.integers(0, 5),
    monthly=st.integers(0, 5),
    yearly=st.integers(0, 3),
)


@settings(max_examples=300, deadline=None)
@given(raw=SNAPSHOTS, policy=POLICIES)
def test_no_rule_ever_deletes_a_pinned_protected_or_newest_snapshot(raw, policy):
    history = [
        SnapshotAge(i + 1, status, NOW - timedelta(hours=hours), NOW - timedelta(hours=hours), healthy, pinned=pinned)
        for i, (hours, healthy, pinned, status) in enumerate(sorted(raw, key=lambda r: -r[0]))
    ]
    decisions = {d.snapshot_id: d for d in plan(history, policy, NOW)}
    complete = [s for s in history if s.status == "complete"]
    for s in complete:
        if s.pinned:
            assert decisions[s.snapshot_id].keep
    newest = sorted(complete, key=lambda s: -s.snapshot_id)
    for s in newest[: policy.min_snapshots]:
        assert decisions[s.snapshot_id].keep
    for s in [s for s in newest if s.healthy][: policy.min_snapshots]:
        assert decisions[s.snapshot_id].keep  # auto-recovery always has its snapshot
    if complete:
        assert decisions[newest[0].snapshot_id].keep
    assert all(d.reason for d in decisions.values())
