"""The whole-server restore's plan and the wiped-server rule, in tables (in-memory stores; the
restores themselves are tests/integration/test_server_restore.py's)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from fakes import T0, FakeChroma, FakeDb, FakeRestores, FakeServer, FakeVerdicts, snapshot

from chroma_backup.core.health import HealthVerdict
from chroma_backup.core.recovery import wiped
from chroma_backup.core.server_restore import ServerRestoreOptions, Source, plan_server_restore

DOCS = snapshot(1, "docs", records=100)
FAQ = snapshot(2, "faq", records=5, database="support")


def plan_of(snapshots, server, sources, options=ServerRestoreOptions(), restores=None, verdicts=None):
    db = FakeDb(snapshots, restores, verdicts)
    items = plan_server_restore(db, server, sources, tenant="default_tenant", options=options)
    return [
        (item.source_label, item.target_label, item.snapshot_id, item.action, item.create_database) for item in items
    ]


def test_an_empty_server_gets_every_collection_under_its_name_and_database_created():
    server = FakeServer({"default_database": FakeChroma()})
    assert plan_of([DOCS, FAQ], server, [Source("default_database", "docs"), Source("support", "faq")]) == [
        ("default_database/docs", "default_database/docs", 1, "restore", False),
        ("support/faq", "support/faq", 2, "restore", True),
    ]


def test_the_newest_ok_snapshot_comes_back_and_a_collection_without_one_its_newest_complete():
    snaps = [DOCS, snapshot(3, "docs", health="corrupt"), snapshot(4, "faq", health="shrunk", database="support")]
    server = FakeServer({"default_database": FakeChroma()})
    db = FakeDb(snaps)
    items = plan_server_restore(
        db, server, [Source("default_database", "docs"), Source("support", "faq")], tenant="default_tenant"
    )
    assert [item.snapshot_id for item in items] == [1, 4]
    assert items[1].detail == "no snapshot taken while ok: the newest complete one (health shrunk)"


def test_at_a_time_each_collection_comes_back_as_it_was_then_and_later_ones_are_left_out():
    snaps = [DOCS, snapshot(5, "docs"), snapshot(6, "late", hours=50)]
    server = FakeServer({"default_database": FakeChroma()})
    at = T0 + timedelta(hours=3)
    options = ServerRestoreOptions(at=at)
    assert plan_of(
        snaps, server, [Source("default_database", "docs"), Source("default_database", "late")], options
    ) == [
        ("default_database/docs", "default_database/docs", 1, "restore", False),
        ("default_database/late", "default_database/late", None, "left_out", False),
    ]


EXISTING = FakeServer({"default_database": FakeChroma({"docs": "live-id"})})


@pytest.mark.parametrize(
    "options,action",
    [
        (ServerRestoreOptions(), "conflict"),
        (ServerRestoreOptions(overwrite=True), "overwrite"),
        (ServerRestoreOptions(skip_existing=True), "skip_existing"),
        (ServerRestoreOptions(name_template="{name}_dr"), "restore"),
    ],
)
def test_an_existing_collection_is_never_touched_unless_asked(options, action):
    assert plan_of([DOCS], EXISTING, [Source("default_database", "docs")], options)[0][3] == action


def test_a_collection_a_verified_restore_already_brought_back_is_skipped():
    made = {
        "docs": {"collection": "docs", "database": "default_database", "snapshot_id": 1, "collection_id": "live-id"}
    }
    assert plan_of([DOCS], EXISTING, [Source("default_database", "docs")], restores=FakeRestores(made))[0][3] == (
        "already_restored"
    )


def test_a_backup_of_the_restored_collection_since_still_counts_as_restored_while_its_content_is_equal():
    made = {
        "docs": {"collection": "docs", "database": "default_database", "snapshot_id": 1, "collection_id": "live-id"}
    }
    same, changed = replace(snapshot(7, "docs"), digest="00"), replace(snapshot(7, "docs"), digest="ff")
    sources = [Source("default_database", "docs")]
    assert plan_of([DOCS, same], EXISTING, sources, restores=FakeRestores(made))[0][3] == "already_restored"
    assert plan_of([DOCS, changed], EXISTING, sources, restores=FakeRestores(made))[0][3] == "conflict"


def test_a_same_named_collection_made_otherwise_is_not_taken_for_the_restored_one():
    made = {"docs": {"collection": "docs", "database": "default_database", "snapshot_id": 1, "collection_id": "old-id"}}
    assert plan_of([DOCS], EXISTING, [Source("default_database", "docs")], restores=FakeRestores(made))[0][3] == (
        "conflict"
    )


def test_the_daemon_replaces_only_an_empty_re_created_collection():
    empty = FakeChroma({"docs": "new-id", "faq": "other-id"})
    empty.counts = {"docs": 0}
    server = FakeServer({"default_database": empty})
    snaps = [DOCS, snapshot(3, "faq")]
    sources = [Source("default_database", "docs"), Source("default_database", "faq")]
    actions = [row[3] for row in plan_of(snaps, server, sources, ServerRestoreOptions(replace_empty=True))]
    assert actions == ["overwrite", "conflict"]


def test_a_collection_deleted_and_recovered_elsewhere_before_the_loss_is_left_out_unless_named():
    verdicts = FakeVerdicts({DOCS.collection_ref: ["ok", "missing", "recovered", "recovered", "missing"]})
    server = FakeServer({"default_database": FakeChroma()})
    assert plan_of([DOCS], server, [Source("default_database", "docs")], verdicts=verdicts)[0][3] == "left_out"
    named = [Source("default_database", "docs", explicit=True)]
    assert plan_of([DOCS], server, named, verdicts=verdicts)[0][3] == "restore"


def test_a_named_collection_without_backups_is_a_problem_of_the_plan():
    server = FakeServer({"default_database": FakeChroma()})
    assert plan_of([], server, [Source("default_database", "nope", explicit=True)])[0][3] == "no_snapshot"


def verdict(status: str, records: int | None = None, snapshot_records: int | None = 10) -> HealthVerdict:
    return HealthVerdict(
        "c", status, "", records, snapshot_records, 1 if snapshot_records else None, "2026-11-01T00:00:00+00:00", 0.0
    )


@pytest.mark.parametrize(
    "verdicts,is_wiped",
    [
        ([verdict("missing"), verdict("missing")], True),
        ([verdict("missing"), verdict("shrunk", records=0)], True),  # re-created empty by the application
        ([verdict("missing"), verdict("ok", records=0)], True),  # (HEALTH_MIN_RECORD_RATIO=0)
        ([verdict("shrunk", records=0), verdict("shrunk", records=0)], False),  # nothing missing
        ([verdict("missing")], False),  # one collection: the per-collection policy
        ([verdict("missing"), verdict("ok", records=10)], False),
        ([verdict("missing"), verdict("missing"), verdict("unreachable")], False),
        ([verdict("missing"), verdict("missing"), verdict("ok", records=3, snapshot_records=None)], True),
        ([verdict("missing"), verdict("missing", snapshot_records=None)], False),  # one with backups
    ],
)
def test_a_server_is_wiped_when_every_collection_with_backups_is_gone_at_once(verdicts, is_wiped):
    assert wiped(verdicts) is is_wiped
