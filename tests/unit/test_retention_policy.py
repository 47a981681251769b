"""The retention policy, in a table: which snapshots and failed runs go and why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import T0

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
        (4, "one of the newest 1"),
        (3, "one of the newest 1 taken while ok"),
        (2, "older than 30 days"),
        (1, "older than 30 days"),
    ]
