"""The recovery policy, in a table: what a confirmed broken collection is restored from and into,
and when it is left alone (in-memory stores; the restores themselves are the integration tests')."""

from __future__ import annotations

import pytest
from fakes import FakeChroma, FakeDb, FakeMechanics, FakeRestores, snapshot

from chroma_backup.core.health import HealthVerdict
from chroma_backup.core.recovery import check_and_recover, recover_collection
from chroma_backup.errors import ChromaFailure


def verdict(name: str, status: str) -> HealthVerdict:
    return HealthVerdict(name, status, "detail", None, None, None, "2026-11-01T00:00:00+00:00", 0.0)


def target_name(name: str) -> str:
    return f"{name}_restored"


# (case, live collections, snapshots, recovery targets, verify says identical, status) ->
# (action, restored source/target/snapshot/overwrite or None)
CASES = [
    (
        "a deleted collection goes to NEW_COLLECTION_NAME from its newest ok snapshot",
        {},
        [snapshot(1, "docs"), snapshot(2, "docs")],
        {},
        False,
        "missing",
        ("restored", ("docs", "docs_restored", 2, False)),
    ),
    (
        "snapshots taken while unhealthy are never restored from",
        {},
        [snapshot(1, "docs"), snapshot(2, "docs", health="corrupt")],
        {},
        False,
        "missing",
        ("restored", ("docs", "docs_restored", 1, False)),
    ),
    (
        "a corrupt collection keeps its name; the copy goes beside it",
        {"docs": "id-docs"},
        [snapshot(1, "docs")],
        {},
        False,
        "corrupt",
        ("restored", ("docs", "docs_restored", 1, False)),
    ),
    (
        "no ok snapshot: nothing to restore",
        {},
        [snapshot(1, "docs", health="shrunk")],
        {},
        False,
        "missing",
        ("no_snapshot", None),
    ),
    (
        "the target a verified restore of that snapshot made is left alone",
        {"docs_restored": "id-r"},
        [snapshot(3, "docs")],
        {
            "docs_restored": {
                "collection": "docs",
                "snapshot_id": 3,
                "collection_id": "id-r",
                "database": "default_database",
            }
        },
        False,
        "missing",
        ("already_restored", None),
    ),
    (
        "a target that verifies identical is left alone",
        {"docs_restored": "id-r"},
        [snapshot(3, "docs")],
        {},
        True,
        "missing",
        ("already_restored", None),
    ),
    (
        "a target with other content is never overwritten",
        {"docs_restored": "id-r"},
        [snapshot(3, "docs")],
        {},
        False,
        "missing",
        ("blocked", None),
    ),
    (
        "a broken recovery target is restored in place from its own newest ok snapshot, the broken one kept",
        {"docs_restored": "id-r"},
        [snapshot(1, "docs"), snapshot(5, "docs_restored")],
        {
            "docs_restored": {
                "collection": "docs",
                "snapshot_id": 1,
                "collection_id": "id-r",
                "database": "default_database",
            }
        },
        False,
        "corrupt",
        ("restored", ("docs_restored", "docs_restored", 5, True)),
    ),
    (
        "a deleted recovery target without snapshots of its own comes back from the one it was made from",
        {},
        [snapshot(1, "docs")],
        {
            "docs_restored": {
                "collection": "docs",
                "snapshot_id": 1,
                "collection_id": "id-r",
                "database": "default_database",
            }
        },
        False,
        "missing",
        ("restored", ("docs", "docs_restored", 1, False)),
    ),
]


@pytest.mark.parametrize("case,live,snapshots,made,identical,status,expected", CASES, ids=[c[0] for c in CASES])
def test_recovery_policy(case, live, snapshots, made, identical, status, expected):
    mechanics = FakeMechanics(identical=identical)
    broken = "docs_restored" if "recovery target" in case else "docs"
    recovery = recover_collection(
        FakeChroma(live),
        FakeDb(snapshots, FakeRestores(made)),
        verdict(broken, status),
        target_name=target_name,
        mechanics=mechanics,
    )
    action, restored = expected
    assert recovery.action == action, recovery.detail
    if restored is None:
        assert mechanics.requests == []
    else:
        [request] = mechanics.requests
        assert (request.source, request.target, request.snapshot_id, request.overwrite) == restored
        assert request.trigger == "auto" and request.reason == f"{status}: detail"
        assert request.keep_replaced or not request.overwrite  # recovery never deletes a broken collection


def test_a_blocked_recovery_says_which_command_to_run():
    recovery = recover_collection(
        FakeChroma({"docs_restored": "id-r"}),
        FakeDb([snapshot(3, "docs")]),
        verdict("docs", "missing"),
        target_name=target_name,
        mechanics=FakeMechanics(),
    )
    assert recovery.detail == (
        "target docs_restored exists with other content; auto-recovery never overwrites it. Restore by hand: "
        "python main.py restore --collection docs --snapshot 3 --to OTHER_NAME (or --overwrite to replace "
        "docs_restored)"
    )


# (first verdict, verdict on the re-check, restore asked for) -> (recovery action or None, recover called)
CHECKS = [
    ("ok", None, True, (None, False)),
    ("unreachable", None, True, (None, False)),  # a network blip is never a reason to restore
    ("missing", "missing", False, (None, False)),  # without --restore nothing is restored
    ("missing", "ok", True, ("recovered_itself", False)),
    ("corrupt", "corrupt", True, ("restored", True)),
    ("shrunk", "shrunk", True, ("restored", True)),
    ("missing", "recovered", True, ("recovered_itself", False)),  # someone recovered it meanwhile
]


@pytest.mark.parametrize("first,second,restore,expected", CHECKS)
def test_a_failure_is_confirmed_before_it_is_recovered(first, second, restore, expected):
    verdicts = iter([verdict("docs", first), verdict("docs", second or first)])
    called = []

    def recover(v):
        called.append(v.status)
        from chroma_backup.core.recovery import Recovery

        return Recovery("docs", "restored", "restored")

    _, recovery = check_and_recover(lambda: next(verdicts), recover, confirm_seconds=0, restore=restore)
    action, recovered = expected
    assert (recovery.action if recovery else None) == action
    assert bool(called) == recovered


def test_a_recovery_that_fails_is_reported_not_raised():
    def recover(_):
        raise ChromaFailure("Chroma error during adding records: InternalError: disk full")

    _, recovery = check_and_recover(lambda: verdict("docs", "missing"), recover, confirm_seconds=0, restore=True)
    assert recovery.action == "failed" and "disk full" in recovery.detail
