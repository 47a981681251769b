"""The scheduled work: backup and health rounds, each collection isolated from the others.

A problem in one collection (an unexpected exception included) gives that collection a
``failed`` result, logged with its traceback at DEBUG, and the round goes on.  Every round
returns result objects that say everything a caller may print, log, export or serve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chroma_backup.app.names import Names, Where
from chroma_backup.app.stores import Stores
from chroma_backup.core.backup import BackupResult, SnapshotLabel, export_collection_to_postgres
from chroma_backup.core.health import HealthVerdict, check_collection_health
from chroma_backup.core.reading import Progress, RunOptions
from chroma_backup.core.recovery import Recovery, check_and_recover, origin_of, recover_collection
from chroma_backup.core.selection import health_targets, selected_collections
from chroma_backup.errors import BackupError, ChromaUnavailable, CollectionNotFound, Interrupted, unexpected
from chroma_backup.states import COMPLETE, FAILED, GONE, RECOVERED, UNREACHABLE

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Any]  # collection label -> progress callable with .close()


def log_backup(result: BackupResult) -> None:
    """The one log line of a backup run."""
    if result.status == COMPLETE:
        log.info(
            "backup collection=%s snapshot=%d status=complete health=%s records=%d added=%d updated=%d "
            "deleted=%d seconds=%.2f",
            result.collection,
            result.snapshot_id,
            result.health,
            result.records,
            result.added,
            result.updated,
            result.deleted,
            result.seconds,
        )
    else:
        log.error("backup collection=%s status=%s error=%s", result.collection, result.status, result.error)


def log_verdict(verdict: HealthVerdict) -> None:
    level = logging.INFO if verdict.ok else logging.WARNING
    log.log(
        level,
        "health collection=%s status=%s records=%s snapshot_records=%s seconds=%.2f detail=%s",
        verdict.collection,
        verdict.status,
        verdict.records,
        verdict.snapshot_records,
        verdict.seconds,
        verdict.detail,
    )


@dataclass
class HealthReport:
    """One collection's verdict, what recovery did about it, and since when the status holds."""

    verdict: HealthVerdict
    recovery: Recovery | None = None
    since: str | None = None

    @property
    def collection(self) -> str:
        return self.verdict.collection

    @property
    def recovered(self) -> bool:
        """ok, or broken and a good copy is in place (restored now or already)."""
        return self.verdict.ok or (self.recovery is not None and self.recovery.action in RECOVERED)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.verdict.as_json(),
            "since": self.since,
            "recovery": self.recovery.as_json() if self.recovery else None,
        }


class Rounds:
    def __init__(self, stores: Stores, names: Names):
        self.stores = stores
        self.names = names
        self.settings = stores.settings

    def run_options(self, progress: Progress | None = None) -> RunOptions:
        s = self.settings
        return RunOptions(
            batch_size=s.batch_size, read_workers=s.read_workers, progress=progress, stop=self.stores.stop
        )

    def _stopping(self) -> bool:
        return self.stores.stop is not None and self.stores.stop.is_set()

    # -- backup ---------------------------------------------------------------------------------

    def backup_round(
        self, requested: list[str] | None = None, progress: ProgressFactory | None = None
    ) -> list[BackupResult]:
        """Back up every selected collection that can be read, each labelled with its verdict."""
        chosen = self.stores.maybe_retry(
            lambda: self.names.selected(requested, selected_collections), "list collections"
        )
        results = []
        for where in chosen:
            if self._stopping():
                break
            results.append(self._isolated_backup(where, progress))
        return results

    def _isolated_backup(self, where: Where, progress: ProgressFactory | None) -> BackupResult:
        label = self.names.label(where)
        bar = progress(label) if progress else None
        try:
            result = self.stores.maybe_retry(lambda: self.backup_one(where, bar), f"backup {label}")
        except Interrupted as error:
            log_backup(BackupResult(collection=label, status=FAILED, error=str(error)))
            raise
        except BackupError as error:
            result = BackupResult(collection=label, status=FAILED, error=str(error), transient=error.transient)
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("backup collection=%s unexpected error", label, exc_info=True)
            result = BackupResult(collection=label, status=FAILED, error=unexpected(error))
        finally:
            if bar is not None:
                bar.close()
        result.collection = label
        log_backup(result)
        return result

    def backup_one(self, where: Where, progress: Progress | None = None) -> BackupResult:
        """Check a collection and back it up under that verdict (a missing or unreachable
        collection cannot be read: that raises)."""
        chroma, db = self.stores.chroma_for(where.database), self.stores.db
        verdict = self.check(where)
        if verdict.status in GONE:
            raise CollectionNotFound(f"collection {where.name!r} does not exist")
        if verdict.status == UNREACHABLE:
            raise ChromaUnavailable(f"Chroma unreachable: {verdict.detail}")
        made = origin_of(chroma, db, where.name)
        origin = None
        if made is not None and made["collection_id"] == chroma.open(where.name).id:
            origin = (made["collection"], made["snapshot_id"])
        return export_collection_to_postgres(
            chroma,
            db,
            where.name,
            label=SnapshotLabel(verdict.status, verdict.detail, origin=origin),
            run=self.run_options(progress),
        )

    # -- health ---------------------------------------------------------------------------------

    def check(self, where: Where, *, min_ratio: float | None = None) -> HealthVerdict:
        """One verdict (kept in the health history)."""
        s, db = self.settings, self.stores.db
        verdict = check_collection_health(
            self.stores.chroma_for(where.database),
            db,
            where.name,
            min_ratio=s.health_min_record_ratio if min_ratio is None else min_ratio,
            sample_size=s.health_sample_size,
        )
        # A collection seen for the first time gets its catalog row now, so its history starts here.
        ref = db.catalog.collection_ref(
            s.chroma_tenant, where.database, where.name, create=verdict.status not in (*GONE, UNREACHABLE)
        )
        if ref is not None:
            db.verdicts.record_verdict(ref, verdict.status, verdict.detail, verdict.records, verdict.snapshot_id)
        return verdict

    def health_round(self, requested: list[str] | None = None, *, restore: bool = False) -> list[HealthReport]:
        """Check every selected collection (and, with ``restore``, recover confirmed failures);
        with ``*``, also every collection that has backups (a deleted one is ``missing``)."""
        unreachable: str | None = None
        try:
            chosen = self.names.selected(requested, health_targets)
        except ChromaUnavailable as error:  # every collection we know of is unreachable
            unreachable = str(error)
            chosen = [self.names.resolve(r) for r in requested] if requested else self.names.catalog_targets()
        reports = []
        for where in chosen:
            if self._stopping():
                break
            report = (
                HealthReport(_unreachable(where.name, unreachable))
                if unreachable
                else self._isolated_health(where, restore)
            )
            report.since = self._since(where)
            report.verdict.collection = self.names.label(where)
            if report.recovery is not None:
                report.recovery.collection = report.verdict.collection
            log_verdict(report.verdict)
            reports.append(report)
        return reports

    def _isolated_health(self, where: Where, restore: bool) -> HealthReport:
        s = self.settings
        try:
            chroma = self.stores.chroma_for(where.database)
        except ChromaUnavailable as error:
            return HealthReport(_unreachable(where.name, str(error)))
        recovery: Recovery | None
        try:
            verdict, recovery = check_and_recover(
                lambda: self.check(where),
                lambda v: recover_collection(
                    chroma, self.stores.db, v, target_name=s.target_name, run=self.run_options()
                ),
                confirm_seconds=s.health_confirm_seconds,
                restore=restore,
                stop=self.stores.stop,
            )
        except Interrupted:
            raise
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("health collection=%s unexpected error", where.name, exc_info=True)
            message = error if isinstance(error, BackupError) else unexpected(error)
            verdict = HealthVerdict(
                where.name, FAILED, f"health check failed: {message}", None, None, None, _now(), 0.0
            )
            recovery = None
        return HealthReport(verdict, recovery)

    def _since(self, where: Where) -> str | None:
        db = self.stores.db
        try:
            ref = db.catalog.collection_ref(self.settings.chroma_tenant, where.database, where.name)
            current = db.verdicts.status_since(ref) if ref is not None else None
        except BackupError:
            return None
        return current[1].isoformat() if current else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _unreachable(name: str, detail: str | None) -> HealthVerdict:
    return HealthVerdict(name, UNREACHABLE, detail or "", None, None, None, _now(), 0.0)
