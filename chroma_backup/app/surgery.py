"""Surgical recovery on the operations layer: the deep check round, repair, record-level restore
and diff, each on the stores of the caller's thread (``Stores``), for the CLI, the daemon and the
HTTP API alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chroma_backup.app.names import Names, Where
from chroma_backup.app.rounds import Rounds, log_verdict
from chroma_backup.app.stores import Stores
from chroma_backup.core.deep import DeepFindings, deep_scan
from chroma_backup.core.diff import LIVE, DiffResult, OnChange, diff_collection
from chroma_backup.core.health import HealthVerdict
from chroma_backup.core.reading import Progress
from chroma_backup.core.records_restore import RecordSelection, RecordsRestoreResult, restore_records
from chroma_backup.core.repair import RepairResult, repair_collection
from chroma_backup.core.selection import health_targets
from chroma_backup.core.snapshots import resolve_snapshot
from chroma_backup.errors import BackupError, Interrupted, SnapshotNotFound, unexpected
from chroma_backup.states import CORRUPT, FAILED, OK, SHRUNK, TRIGGER_AUTO, TRIGGER_CLI

log = logging.getLogger(__name__)


@dataclass
class DeepReport:
    """One collection's deep check: its verdict, what the scan found, what a repair did."""

    verdict: HealthVerdict
    findings: DeepFindings | None = None
    repair: RepairResult | None = None
    since: str | None = None

    @property
    def collection(self) -> str:
        return self.verdict.collection

    def as_json(self) -> dict[str, Any]:
        return {
            **self.verdict.as_json(),
            "since": self.since,
            "deep": self.findings.as_json() if self.findings else None,
            "repair": self.repair.as_json() if self.repair else None,
        }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Surgery:
    def __init__(self, stores: Stores, names: Names, rounds: Rounds):
        self.stores, self.names, self.rounds = stores, names, rounds
        self.settings = stores.settings

    # -- the deep check -------------------------------------------------------------------------

    def deep_round(self, requested: list[str] | None = None, *, repair: bool = False) -> list[DeepReport]:
        """A deep check of every selected collection (and, with ``repair``, a repair of each one
        found damaged); one collection's failure is its own verdict."""
        reports = []
        for where in self.names.selected(requested, health_targets, with_backups=True):
            if self.stores.stop is not None and self.stores.stop.is_set():
                break
            try:
                report = self.deep_check(where, repair=repair)
            except Interrupted:
                raise
            except Exception as error:  # the collection's boundary: the round goes on
                log.debug("deep collection=%s unexpected error", where.name, exc_info=True)
                message = error if isinstance(error, BackupError) else unexpected(error)
                verdict = HealthVerdict(
                    where.name, FAILED, f"deep check failed: {message}", None, None, None, _now(), 0
                )
                report = DeepReport(verdict)
            report.verdict.collection = self.names.label(where)
            report.since = self.rounds._since(where)
            log_verdict(report.verdict)
            reports.append(report)
        return reports

    def deep_check(self, where: Where, *, repair: bool = False) -> DeepReport:
        """The ladder first (a missing or unreachable collection is that, and no deep check); then
        the whole collection against its newest complete snapshot.  The verdict, kept with its
        counts, is ``corrupt`` when records are unreadable or the index misses too many, else the
        ladder's (``shrunk`` stays; a sampled ``corrupt`` the whole collection does not bear out
        is ``ok``: the deep check read every record)."""
        s, db = self.settings, self.stores.db
        verdict = self.rounds.check(where)
        if verdict.status not in (OK, CORRUPT, SHRUNK):
            verdict.detail = f"{verdict.detail} (deep check skipped)"
            return DeepReport(verdict)
        chroma = self.stores.chroma_for(where.database)
        try:
            snapshot = resolve_snapshot(db, s.chroma_tenant, where.database, where.name)
        except SnapshotNotFound:
            verdict.detail = f"{verdict.detail} (deep check skipped: no snapshot to compare with)"
            return DeepReport(verdict)
        findings = deep_scan(
            chroma,
            db,
            chroma.open(where.name),
            snapshot,
            max_seconds=s.deep_check_max_seconds,
            run=self.rounds.run_options(),
        )
        deep = HealthVerdict(
            where.name,
            CORRUPT if findings.damaged else SHRUNK if verdict.status == SHRUNK else OK,
            findings.detail() + (f"; {verdict.detail}" if verdict.status == SHRUNK else ""),
            findings.records,
            snapshot.records,
            snapshot.snapshot_id,
            _now(),
            findings.seconds,
        )
        ref = db.catalog.collection_ref(s.chroma_tenant, where.database, where.name, create=True)
        assert ref is not None
        db.verdicts.record_verdict(ref, deep.status, deep.detail, deep.records, deep.snapshot_id, findings.counts())
        log.log(
            logging.WARNING if findings.damaged else logging.INFO,
            "deep collection=%s status=%s records=%d checked=%d unreadable=%d unindexed=%d gone=%d complete=%s "
            "seconds=%.1f",
            self.names.label(where),
            deep.status,
            findings.records,
            findings.checked,
            findings.unreadable,
            findings.unindexed,
            findings.gone,
            findings.complete,
            findings.seconds,
        )
        report = DeepReport(deep, findings)
        if repair and findings.damaged:
            try:
                report.repair = self.repair(where, trigger=TRIGGER_AUTO, reason=f"deep check: {findings.detail()}")
            except BackupError as error:
                log.error("repair collection=%s action=failed error=%s", self.names.label(where), error)
        return report

    # -- repair, record-level restore, diff -----------------------------------------------------

    def repair(
        self,
        where: Where,
        *,
        snapshot_id: int | None = None,
        at: datetime | None = None,
        dry_run: bool = False,
        reindex: bool = False,
        trigger: str = TRIGGER_CLI,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> RepairResult:
        s = self.settings
        result = repair_collection(
            self.stores.chroma_for(where.database),
            self.stores.db,
            where.name,
            snapshot_id=snapshot_id,
            at=at,
            dry_run=dry_run,
            reindex=reindex,
            trigger=trigger,
            reason=reason,
            max_seconds=s.deep_check_max_seconds,
            tenant=s.chroma_tenant,
            database=where.database,
            run=self.rounds.run_options(progress),
        )
        result.collection = self.names.label(where)
        found = result.findings
        log.info(
            "repair collection=%s snapshot=%d dry_run=%s unreadable=%d unindexed=%d gone=%d rewritten=%d "
            "unrepairable=%d reindexed=%s seconds=%.1f",
            result.collection,
            result.snapshot_id,
            dry_run,
            found.unreadable,
            found.unindexed,
            found.gone,
            result.rewritten,
            result.unrepairable,
            result.reindexed,
            result.seconds,
        )
        return result

    def restore_records(
        self,
        where: Where,
        selection: RecordSelection,
        *,
        snapshot_id: int | None = None,
        at: datetime | None = None,
        mode: str = "merge",
        dry_run: bool = False,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> RecordsRestoreResult:
        s = self.settings
        result = restore_records(
            self.stores.chroma_for(where.database),
            self.stores.db,
            where.name,
            selection,
            snapshot_id=snapshot_id,
            at=at,
            mode=mode,
            dry_run=dry_run,
            reason=reason,
            tenant=s.chroma_tenant,
            database=where.database,
            run=self.rounds.run_options(progress),
        )
        result.collection = self.names.label(where)
        log.info(
            "restore_records collection=%s snapshot=%d mode=%s dry_run=%s selected=%d written=%d unchanged=%d "
            "seconds=%.2f",
            result.collection,
            result.snapshot_id,
            mode,
            dry_run,
            result.selected,
            result.written,
            result.unchanged,
            result.seconds,
        )
        return result

    def diff(
        self,
        where: Where,
        *,
        from_snapshot: int | None = None,
        at: datetime | None = None,
        to: str = LIVE,
        on_change: OnChange | None = None,
    ) -> DiffResult:
        s = self.settings
        result = diff_collection(
            self.stores.chroma_for(where.database),
            self.stores.db,
            where.name,
            from_snapshot=from_snapshot,
            at=at,
            to=to,
            tenant=s.chroma_tenant,
            database=where.database,
            run=self.rounds.run_options(),
            **({"on_change": on_change} if on_change else {}),
        )
        result.collection = self.names.label(where)
        return result
