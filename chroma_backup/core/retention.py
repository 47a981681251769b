"""Retention: which snapshots and failed runs go (a pure policy, ``plan``), and pruning them with
every record version no remaining snapshot sees (``prune_snapshots``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from chroma_backup.catalog import SnapshotAge
from chroma_backup.core.ports import DatabasePort
from chroma_backup.errors import CollectionBusy
from chroma_backup.states import COMPLETE, FAILED


@dataclass(frozen=True)
class RetentionPolicy:
    """Complete snapshots and failed runs older than ``days`` go; the newest ``min_snapshots``
    complete snapshots, and the newest ``min_snapshots`` taken while ``ok``, always stay (so
    auto-recovery always has its snapshot, however many labelled ones are newer)."""

    days: float
    min_snapshots: int


@dataclass(frozen=True)
class Decision:
    snapshot_id: int
    status: str
    keep: bool
    reason: str


def plan(snapshots: list[SnapshotAge], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """What the policy does with each of one collection's snapshots (running ones are never
    touched), newest first."""
    cutoff = now - timedelta(days=policy.days)
    complete = sorted((s for s in snapshots if s.status == COMPLETE), key=lambda s: s.snapshot_id, reverse=True)
    newest = {s.snapshot_id for s in complete[: policy.min_snapshots]}
    newest_ok = {s.snapshot_id for s in [s for s in complete if s.healthy][: policy.min_snapshots]}
    decisions = []
    for s in sorted(snapshots, key=lambda s: s.snapshot_id, reverse=True):
        when = s.finished_at or s.started_at
        if s.status == COMPLETE:
            if s.snapshot_id in newest:
                decisions.append(Decision(s.snapshot_id, s.status, True, f"one of the newest {policy.min_snapshots}"))
            elif s.snapshot_id in newest_ok:
                decisions.append(
                    Decision(s.snapshot_id, s.status, True, f"one of the newest {policy.min_snapshots} taken while ok")
                )
            elif when >= cutoff:
                decisions.append(Decision(s.snapshot_id, s.status, True, f"younger than {policy.days:g} days"))
            else:
                decisions.append(Decision(s.snapshot_id, s.status, False, f"older than {policy.days:g} days"))
        elif s.status == FAILED:
            # Failed runs hold no record versions; they stay visible (the operator's record of
            # what went wrong) until they are as old as an expired snapshot.
            old = when < cutoff
            decisions.append(
                Decision(s.snapshot_id, s.status, not old, f"{'older' if old else 'younger'} than {policy.days:g} days")
            )
    return decisions


@dataclass
class PruneResult:
    collection: str
    snapshots_deleted: list[int]
    failed_runs_deleted: list[int]
    versions_deleted: int
    dry_run: bool
    skipped: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def prune_snapshots(
    db: DatabasePort,
    *,
    tenant: str,
    database: str,
    retention_days: float,
    min_snapshots: int,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[PruneResult]:
    """Apply the retention policy to every backed-up collection of this tenant and database,
    deleting every record version no kept snapshot sees (and health verdicts as old as the
    expired snapshots).  A dry run does the same work in a transaction it rolls back, so its
    counts are exact."""
    policy = RetentionPolicy(retention_days, min_snapshots)
    now = now or datetime.now(timezone.utc)
    results = []
    for name in db.catalog.collection_names(tenant, database):
        try:
            with db.locks.collection_lock(tenant, database, name):
                ref = db.catalog.collection_ref(tenant, database, name)
                if ref is None:
                    continue
                going = [d for d in plan(db.retention.snapshot_ages(ref), policy, now) if not d.keep]
                expired = sorted(d.snapshot_id for d in going if d.status == COMPLETE)
                failed = sorted(d.snapshot_id for d in going if d.status == FAILED)
                versions = db.retention.prune(
                    ref, expired + failed, commit=not dry_run, verdicts_older_than_days=retention_days
                )
                if versions and not dry_run:
                    db.records.vacuum_records()
        except CollectionBusy as busy:
            results.append(PruneResult(name, [], [], 0, dry_run, skipped=str(busy)))
            continue
        results.append(PruneResult(name, expired, failed, versions, dry_run))
    return results
