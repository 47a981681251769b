"""Retention: which snapshots and failed runs go (a pure policy, ``plan``), and pruning them with
every record version no remaining snapshot sees (``prune_snapshots``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from chroma_backup.catalog import SnapshotAge
from chroma_backup.core.ports import DatabasePort
from chroma_backup.errors import CollectionBusy
from chroma_backup.states import COMPLETE, FAILED


@dataclass(frozen=True)
class RetentionPolicy:
    """Which complete snapshots stay; a snapshot any rule keeps stays, the others go:

    - ``pinned`` by an operator (``pin``);
    - the newest ``min_snapshots``, and the newest ``min_snapshots`` taken while ``ok`` (so
      auto-recovery always has its snapshot, however many labelled ones are newer);
    - younger than ``days`` (0: this rule keeps nothing);
    - the newest ``keep_last``;
    - restic's calendar rules: for the newest ``hourly`` / ``daily`` / ``weekly`` / ``monthly`` /
      ``yearly`` periods (UTC; ISO weeks) that have a complete snapshot, the newest snapshot of
      each.

    Failed runs hold no records; they go once they are older than ``days``."""

    days: float
    min_snapshots: int
    keep_last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0


@dataclass(frozen=True)
class Decision:
    snapshot_id: int
    status: str
    keep: bool
    reason: str
    when: datetime | None = None
    pinned: bool = False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["when"] = self.when.isoformat() if self.when else None
        return data


# restic's periods: the key of the period a time falls in.
PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def _calendar(complete: list[SnapshotAge], period: str, count: int) -> set[int]:
    """The newest snapshot of each of the newest ``count`` periods that have one."""
    kept: dict[tuple[int, ...], int] = {}
    for s in complete:  # newest first
        key = PERIODS[period](_when(s).astimezone(timezone.utc))
        if key not in kept:
            if len(kept) == count:
                break
            kept[key] = s.snapshot_id
    return set(kept.values())


def _when(s: SnapshotAge) -> datetime:
    return s.finished_at or s.started_at


def plan(snapshots: list[SnapshotAge], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """What the policy does with each of one collection's snapshots (running ones are never
    touched), newest first, each with every rule that keeps it or why it goes."""
    cutoff = now - timedelta(days=policy.days)
    complete = sorted((s for s in snapshots if s.status == COMPLETE), key=lambda s: s.snapshot_id, reverse=True)
    rules: list[tuple[str, set[int]]] = [
        ("pinned", {s.snapshot_id for s in complete if s.pinned}),
        (f"one of the newest {policy.min_snapshots}", {s.snapshot_id for s in complete[: policy.min_snapshots]}),
        (
            f"one of the newest {policy.min_snapshots} taken while ok",
            {s.snapshot_id for s in [s for s in complete if s.healthy][: policy.min_snapshots]},
        ),
        (f"younger than {policy.days:g} days", {s.snapshot_id for s in complete if policy.days and _when(s) >= cutoff}),
        (f"one of the last {policy.keep_last}", {s.snapshot_id for s in complete[: policy.keep_last]}),
    ]
    for period in PERIODS:
        count = getattr(policy, period)
        if count:
            rules.append((f"{period} ({count})", _calendar(complete, period, count)))
    decisions = []
    for s in sorted(snapshots, key=lambda s: s.snapshot_id, reverse=True):
        when = _when(s)
        if s.status == COMPLETE:
            why = [name for name, kept in rules if s.snapshot_id in kept]
            reason = ", ".join(why) if why else f"older than {policy.days:g} days and kept by no rule"
            decisions.append(Decision(s.snapshot_id, s.status, bool(why), reason, when, s.pinned))
        elif s.status == FAILED:
            # Failed runs hold no record versions; they stay visible (the operator's record of
            # what went wrong) until they are as old as an expired snapshot.
            old = when < cutoff
            decisions.append(
                Decision(
                    s.snapshot_id,
                    s.status,
                    not old,
                    f"failed run {'older' if old else 'younger'} than {policy.days:g} days",
                    when,
                )
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
    decisions: list[Decision] = field(default_factory=list)  # every snapshot: kept (by which rule) or why it goes

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["decisions"] = [d.as_json() for d in self.decisions]
        return data


def prune_snapshots(
    db: DatabasePort,
    *,
    tenant: str,
    database: str,
    policy: RetentionPolicy,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[PruneResult]:
    """Apply the retention policy to every backed-up collection of this tenant and database,
    deleting every record version no kept snapshot sees (and health verdicts as old as the
    expired snapshots).  A dry run does the same work in a transaction it rolls back, so its
    counts are exact."""
    now = now or datetime.now(timezone.utc)
    results = []
    for name in db.catalog.collection_names(tenant, database):
        try:
            with db.locks.collection_lock(tenant, database, name):
                ref = db.catalog.collection_ref(tenant, database, name)
                if ref is None:
                    continue
                decisions = plan(db.retention.snapshot_ages(ref), policy, now)
                going = [d for d in decisions if not d.keep]
                expired = sorted(d.snapshot_id for d in going if d.status == COMPLETE)
                failed = sorted(d.snapshot_id for d in going if d.status == FAILED)
                versions = db.retention.prune(
                    ref, expired + failed, commit=not dry_run, verdicts_older_than_days=policy.days or None
                )
                if versions and not dry_run:
                    db.records.vacuum_records()
        except CollectionBusy as busy:
            results.append(PruneResult(name, [], [], 0, dry_run, skipped=str(busy)))
            continue
        results.append(PruneResult(name, expired, failed, versions, dry_run, decisions=decisions))
    return results
