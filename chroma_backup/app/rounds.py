"""The scheduled work: backup and health rounds, each collection isolated from the others.

A problem in one collection (an unexpected exception included) gives that collection a
``failed`` result, logged with its traceback at DEBUG, and the round goes on.  Every round
returns result objects that say everything a caller may print, log, export or serve.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

from chroma_backup.app.names import Names, Where
from chroma_backup.app.server_restore import restore_server
from chroma_backup.app.stores import Stores
from chroma_backup.app.workers import run_workers
from chroma_backup.core.backup import BackupResult, SnapshotLabel, export_collection_to_postgres, record_table_upkeep
from chroma_backup.core.confirm import Tally
from chroma_backup.core.health import HealthVerdict, check_collection_health, missing_database_verdict
from chroma_backup.core.reading import Progress, RunOptions
from chroma_backup.core.recovery import (
    Recovery,
    check_and_recover,
    gone,
    recover_collection,
    wait_to_confirm,
    wiped,
)
from chroma_backup.core.selection import health_targets, selected_collections
from chroma_backup.core.server_restore import PlannedRestore, ServerRestoreOptions, Source
from chroma_backup.errors import (
    BackupError,
    ChromaUnavailable,
    CollectionBusy,
    CollectionNotFound,
    DatabaseNotFound,
    Interrupted,
    unexpected,
)
from chroma_backup.states import (
    ALREADY_RESTORED,
    BLOCKED,
    COMPLETE,
    CONFLICT,
    FAILED,
    GONE,
    LEFT_OUT,
    OVERWRITE,
    PRESENT,
    RECOVERED,
    RECOVERY_FAILED,
    RESTORABLE,
    RESTORE,
    RESTORED,
    SKIPPED,
    TRIGGER_AUTO,
    UNREACHABLE,
)

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Any]  # collection label -> progress callable with .close()
T = TypeVar("T")


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
    elif result.status == SKIPPED:
        log.info("backup collection=%s status=skipped reason=%s", result.collection, result.error)
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
    wiped: bool = False  # gone with every other collection with backups: a wiped server

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
            "wiped": self.wiped,
            "recovery": self.recovery.as_json() if self.recovery else None,
        }


class Rounds:
    def __init__(self, stores: Stores, names: Names):
        self.stores = stores
        self.names = names
        self.settings = stores.settings
        self._targets: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # for one backup round

    def run_options(self, progress: Progress | None = None) -> RunOptions:
        s = self.settings
        return RunOptions(
            batch_size=s.batch_size,
            read_workers=s.read_workers,
            progress=progress,
            stop=self.stores.stop,
            read_page=s.read_page_size,
            events=self.stores.events,
            stop_message=self.stores.stop_message,
        )

    def _stopping(self) -> bool:
        return self.stores.stop is not None and self.stores.stop.is_set()

    # -- backup ---------------------------------------------------------------------------------

    def backup_round(
        self,
        requested: list[str] | None = None,
        progress: ProgressFactory | None = None,
        *,
        fresh_seconds: float = 0.0,
        note: str | None = None,
    ) -> list[BackupResult]:
        """Back up every selected collection that can be read, each labelled with its verdict,
        BACKUP_CONCURRENCY at a time.  A collection another process is backing up or restoring
        is skipped (not failed); with ``fresh_seconds`` (the daemon's rounds) so is one whose
        newest snapshot is younger than that (another replica took it this interval)."""
        chosen = self.stores.maybe_retry(
            lambda: self.names.selected(requested, selected_collections), "list collections"
        )
        self._targets.clear()
        results = self.each(
            chosen,
            lambda rounds, where: rounds._isolated_backup(where, progress, fresh_seconds, note),
            self.settings.backup_concurrency,
        )
        # The record table's upkeep once for the whole round, not once per collection (a VACUUM
        # of a table shared by a thousand collections is not cheap).
        done = [Tally(r.added, r.updated, r.deleted) for r in results if r.status == COMPLETE]
        if done:
            record_table_upkeep(self.stores.db, done)
        return results

    def each(self, wheres: list[Where], work: Callable[[Rounds, Where], T], concurrency: int) -> list[T]:
        """``work(rounds, where)`` for every collection, in order of ``wheres``; with
        ``concurrency`` > 1, that many worker threads, each with stores of its own (memory is
        bounded by the batch sizes times the concurrency).  ``work`` isolates its collection's
        failures; an interruption stops every worker at its next batch and is raised."""
        if concurrency <= 1 or len(wheres) <= 1:
            out = []
            for where in wheres:
                if self._stopping():
                    break
                out.append(work(self, where))
            return out
        pending: queue.Queue[tuple[int, Where]] = queue.Queue()
        for index, where in enumerate(wheres):
            pending.put((index, where))
        stop = self.stores.stop or threading.Event()
        done: dict[int, T] = {}
        errors: list[BaseException] = []

        def worker() -> None:
            stores = Stores(
                self.stores.backend,
                stop=stop,
                retry_jobs=self.stores.retry_jobs,
                chroma_timeout=self.stores.chroma_timeout,
                events=self.stores.events,
                stop_message=self.stores.stop_message,
            )
            rounds = Rounds(stores, Names(stores))
            try:
                while not stop.is_set():
                    try:
                        index, where = pending.get_nowait()
                    except queue.Empty:
                        return
                    done[index] = work(rounds, where)
            except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
                stop.set()
                errors.append(error)
            finally:
                stores.close()

        run_workers(worker, concurrency, stop, "round")
        if errors:
            raise errors[0]
        return [done[index] for index in sorted(done)]

    def _isolated_backup(
        self, where: Where, progress: ProgressFactory | None, fresh_seconds: float = 0.0, note: str | None = None
    ) -> BackupResult:
        label = self.names.label(where)
        bar = progress(label) if progress else None
        try:
            result = self.stores.maybe_retry(
                lambda: self.backup_one(where, bar, fresh_seconds, note), f"backup {label}"
            )
        except CollectionBusy as error:  # another process holds it: its work, not a failure
            result = BackupResult(collection=label, status=SKIPPED, error=str(error))
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

    def backup_one(
        self, where: Where, progress: Progress | None = None, fresh_seconds: float = 0.0, note: str | None = None
    ) -> BackupResult:
        """Check a collection and back it up under that verdict (a missing or unreachable
        collection cannot be read: that raises), under its lock; with ``fresh_seconds``, skip it
        when its newest snapshot is younger than that."""
        chroma, db = self.stores.chroma_for(where.database), self.stores.db
        with db.locks.collection_lock(chroma.tenant, where.database, where.name):
            fresh = self._fresh(where, fresh_seconds)
            if fresh is not None:
                return fresh
            return self._backup_locked(where, progress, note)

    def _fresh(self, where: Where, fresh_seconds: float) -> BackupResult | None:
        """A ``skipped`` result when the collection's newest snapshot is younger than
        ``fresh_seconds`` (another replica backed it up this interval)."""
        if fresh_seconds <= 0:
            return None
        db, s = self.stores.db, self.settings
        ref = db.catalog.collection_ref(s.chroma_tenant, where.database, where.name)
        latest = db.catalog.latest_complete(ref) if ref is not None else None
        if latest is None or latest.started_at is None:
            return None
        age = (datetime.now(timezone.utc) - latest.started_at).total_seconds()
        if age >= fresh_seconds:
            return None
        by = f" by {latest.replica}" if latest.replica else ""
        return BackupResult(
            collection=where.name,
            status=SKIPPED,
            snapshot_id=latest.snapshot_id,
            records=latest.records or 0,
            error=f"snapshot {latest.snapshot_id} was taken {age:.0f}s ago{by}",
        )

    def _backup_locked(self, where: Where, progress: Progress | None, note: str | None = None) -> BackupResult:
        chroma, db = self.stores.chroma_for(where.database), self.stores.db
        label = self._recent_label(where)
        if label is None:  # no verdict this health interval: check now
            verdict = self.check(where)
            if verdict.status in GONE:
                raise CollectionNotFound(f"collection {where.name!r} does not exist")
            if verdict.status == UNREACHABLE:
                raise ChromaUnavailable(f"Chroma unreachable: {verdict.detail}")
            label = SnapshotLabel(verdict.status, verdict.detail)
        made = self._recovery_targets(chroma).get(where.name)
        if made is not None and made["collection_id"] == chroma.open(where.name).id:
            label = replace(label, origin=(made["collection"], made["snapshot_id"]))
        if note:
            label = replace(label, note=note)
        return export_collection_to_postgres(
            chroma,
            db,
            where.name,
            label=label,
            run=self.run_options(progress),
            upkeep=False,  # the round's, once
        )

    def _recovery_targets(self, chroma: Any) -> dict[str, dict[str, Any]]:
        """The collections restores created in the store's database, read once per backup round
        (a snapshot's origin is a label: a restore made during the round labels the next one)."""
        key = (chroma.database, chroma.address)
        if key not in self._targets:
            self._targets[key] = self.stores.db.restores.recovery_targets(
                chroma.tenant, chroma.database, chroma.address
            )
        return self._targets[key]

    def _recent_label(self, where: Where) -> SnapshotLabel | None:
        """The label of the collection's verdict when the health job gave one within its
        interval (the health probe is not run again inside every backup), with the shrink
        check the backup's own listing then makes; None when there is no such verdict."""
        s, db = self.settings, self.stores.db
        ref = db.catalog.collection_ref(s.chroma_tenant, where.database, where.name)
        latest = db.verdicts.latest_with_baseline(ref) if ref is not None else None
        if latest is None or latest["status"] not in PRESENT:
            return None
        age = (datetime.now(timezone.utc) - latest["checked_at"]).total_seconds()
        if age > s.health_check_interval_minutes * 60:
            return None
        records = latest["baseline_records"] or 0
        return SnapshotLabel(
            latest["status"],
            latest["detail"],
            min_records=int(s.health_min_record_ratio * records),
            baseline=f"{s.health_min_record_ratio:g} x {records} of snapshot {latest['baseline_id']}"
            if records
            else "",
        )

    # -- health ---------------------------------------------------------------------------------

    def check(self, where: Where, *, min_ratio: float | None = None) -> HealthVerdict:
        """One verdict (kept in the health history)."""
        s, db = self.settings, self.stores.db
        try:
            chroma = self.stores.chroma_for(where.database)
        except DatabaseNotFound as error:
            verdict = missing_database_verdict(db, s.chroma_tenant, where.database, where.name, str(error))
        else:
            verdict = check_collection_health(
                chroma,
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
        with ``*``, also every collection that has backups (a deleted one is ``missing``).  When
        every collection with backups is gone at once, that is one event, a wiped server, and its
        recovery is one whole-server restore (``_server_wiped``)."""
        unreachable: str | None = None
        try:
            chosen = self.names.selected(requested, health_targets, with_backups=True)
        except ChromaUnavailable as error:  # every collection we know of is unreachable
            unreachable = str(error)
            chosen = [self.names.resolve(r) for r in requested] if requested else self.names.catalog_targets()
        if unreachable:
            reports = [HealthReport(_unreachable(where.name, unreachable)) for where in chosen]
        else:  # HEALTH_CONCURRENCY at a time
            reports = self.each(chosen, lambda rounds, where: rounds._checked(where), self.settings.health_concurrency)
        checked = list(zip(chosen, reports, strict=False))
        if wiped([report.verdict for _, report in checked]):
            self._server_wiped(checked, restore)
        elif restore:
            for where, report in checked:
                if not self._stopping() and report.verdict.status in RESTORABLE:
                    self._recovered(where, report)
        for where, report in checked:
            report.since = self._since(where)
            report.verdict.collection = self.names.label(where)
            if report.recovery is not None:
                report.recovery.collection = report.verdict.collection
            log_verdict(report.verdict)
        return [report for _, report in checked]

    def _checked(self, where: Where) -> HealthReport:
        """One collection's verdict; an unexpected error is its verdict, the round goes on."""
        try:
            return HealthReport(self.check(where))
        except Interrupted:
            raise
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("health collection=%s unexpected error", where.name, exc_info=True)
            message = error if isinstance(error, BackupError) else unexpected(error)
            return HealthReport(
                HealthVerdict(where.name, FAILED, f"health check failed: {message}", None, None, None, _now(), 0.0)
            )

    def _recovered(self, where: Where, report: HealthReport) -> None:
        """The recovery policy for one collection whose verdict is restorable (confirmed first)."""
        s = self.settings
        try:
            chroma = self.stores.chroma_for(where.database, create=True)
            report.verdict, report.recovery = check_and_recover(
                lambda: self.check(where),
                lambda v: recover_collection(
                    chroma, self.stores.db, v, target_name=s.target_name, run=self.run_options()
                ),
                confirm_seconds=s.health_confirm_seconds,
                restore=True,
                stop=self.stores.stop,
                first=report.verdict,
            )
        except Interrupted:
            raise
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("recovery collection=%s unexpected error", where.name, exc_info=True)
            message = str(error) if isinstance(error, BackupError) else unexpected(error)
            report.recovery = Recovery(where.name, RECOVERY_FAILED, message)

    def _server_wiped(self, checked: list[tuple[Where, HealthReport]], restore: bool) -> None:
        """Every collection with backups is gone at once: one log line, each verdict says so, and
        with ``restore`` (confirmed after HEALTH_CONFIRM_SECONDS) one whole-server restore under the
        original names and databases (WIPED_SERVER_RECOVERY=original), or each collection's own
        recovery (per_collection)."""
        s = self.settings
        lost = [(where, report) for where, report in checked if report.verdict.snapshot_id is not None]
        databases = sorted({where.database for where, _ in lost})
        log.error(
            "health server=%s status=wiped collections=%d databases=%s detail=every selected collection with "
            "backups is gone at once",
            self.stores.chroma.address,
            len(lost),
            ",".join(databases),
        )
        note = f"; the server lost every selected collection ({len(lost)} with backups, all gone at once)"
        for _, report in lost:
            report.wiped = True
            report.verdict.detail += note
        if not restore:
            return
        if s.wiped_server_recovery == "per_collection":
            for where, report in lost:
                if not self._stopping() and report.verdict.status in RESTORABLE:
                    self._recovered(where, report)
            return
        log.warning("health status=wiped confirming_in=%.0fs", s.health_confirm_seconds)
        if not wait_to_confirm(s.health_confirm_seconds, self.stores.stop):
            return
        again = [(where, self._checked(where)) for where, _ in checked]
        if not wiped([report.verdict for _, report in again]):  # not (or no longer) all gone
            for (where, report), (_, fresh) in zip(checked, again, strict=True):
                report.verdict, report.wiped = fresh.verdict, False
                if report.verdict.status in RESTORABLE and not self._stopping():
                    self._recovered(where, report)
            return
        self._restore_server(lost, note)

    def _restore_server(self, lost: list[tuple[Where, HealthReport]], note: str) -> None:
        s = self.settings
        sources = [Source(where.database, where.name) for where, report in lost if gone(report.verdict)]
        options = ServerRestoreOptions(replace_empty=True, trigger=TRIGGER_AUTO, reason="server wiped" + note)
        try:
            result = restore_server(
                self.stores.backend,
                self.stores,
                sources,
                options=options,
                parallel=s.restore_parallel,
                run=self.run_options(),
            )
        except Interrupted:
            raise
        except BackupError as error:
            log.error("recovery server=%s action=failed error=%s", self.stores.chroma.address, error)
            for where, report in lost:
                report.recovery = Recovery(where.name, RECOVERY_FAILED, f"whole-server restore failed: {error}")
            return
        items = {(item.database, item.collection): item for item in result.plan}
        for where, report in lost:
            item = items.get((where.database, where.name))
            if item is not None:
                report.recovery = _recovery_of(item, result.refused)

    def _since(self, where: Where) -> str | None:
        db = self.stores.db
        try:
            ref = db.catalog.collection_ref(self.settings.chroma_tenant, where.database, where.name)
            current = db.verdicts.status_since(ref) if ref is not None else None
        except BackupError:
            return None
        return current[1].isoformat() if current else None


def _recovery_of(item: PlannedRestore, refused: str | None) -> Recovery | None:
    """What the whole-server restore did for one collection, as its recovery."""
    outcome = item.outcome or item.action
    if refused and outcome in (RESTORE, OVERWRITE):  # the plan could not run: nothing was restored
        return Recovery(item.collection, BLOCKED, refused, item.target, item.snapshot_id, in_place=True)
    if outcome == LEFT_OUT:
        return None
    action = {RESTORED: RESTORED, ALREADY_RESTORED: ALREADY_RESTORED, CONFLICT: BLOCKED}.get(outcome, RECOVERY_FAILED)
    if action == RESTORED:
        detail = f"whole-server restore: snapshot {item.snapshot_id} under its own name"
        if item.differences:
            detail += f" (records identical; configuration differs: {'; '.join(item.differences)})"
    else:
        detail = item.error or item.detail or outcome
    return Recovery(item.collection, action, detail, item.target, item.snapshot_id, item.restore, in_place=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _unreachable(name: str, detail: str | None) -> HealthVerdict:
    return HealthVerdict(name, UNREACHABLE, detail or "", None, None, None, _now(), 0.0)
