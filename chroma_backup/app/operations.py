"""The operations layer: the one place that opens the stores from ``Settings`` and runs a round.

The CLI, the daemon, the HTTP API's tasks and the demo are thin callers of ``Operations``; none
of them opens a store or repeats a round.  ``Operations`` composes the stores (``stores``), the
naming of collections (``names``) and the rounds (``rounds``), and adds what an operator asks
for: accept, restore, verify, snapshots, prune, the health history.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chroma_backup.app.names import Names, Where
from chroma_backup.app.rounds import HealthReport, ProgressFactory, Rounds
from chroma_backup.app.runtime import Backend
from chroma_backup.app.server_restore import ServerRestoreResult, restore_server
from chroma_backup.app.stores import Server, Stores
from chroma_backup.app.surgery import DeepReport, Surgery
from chroma_backup.catalog import Snapshot
from chroma_backup.chroma import ChromaStore
from chroma_backup.core.backup import BackupResult, SnapshotLabel, export_collection_to_postgres
from chroma_backup.core.diff import LIVE, DiffResult, OnChange
from chroma_backup.core.health import HealthVerdict
from chroma_backup.core.reading import EventSink, Progress
from chroma_backup.core.records_restore import RecordSelection, RecordsRestoreResult
from chroma_backup.core.repair import RepairResult
from chroma_backup.core.restore import RestoreRequest, RestoreResult, restore_snapshot
from chroma_backup.core.retention import PruneResult, RetentionPolicy, prune_snapshots
from chroma_backup.core.server_restore import PlannedRestore, ServerRestoreOptions, expand_name
from chroma_backup.core.snapshots import resolve_snapshot
from chroma_backup.core.verify import VerifyResult, verify_collection
from chroma_backup.errors import CollectionBusy, SnapshotNotFound, UsageError, VerificationFailed
from chroma_backup.postgres import Database
from chroma_backup.settings import validate_collection_name
from chroma_backup.states import COMPLETE, OK, RECOVERED_INTO, RESTORED, SHRUNK, TRIGGER_CLI

log = logging.getLogger(__name__)


@dataclass
class AcceptResult:
    collection: str
    records: int
    snapshot_id: int
    previous_baseline: int | None
    verdict_before: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Operations:
    """One thread's stores and everything that runs on them."""

    def __init__(
        self,
        backend: Backend,
        *,
        stop: threading.Event | None = None,
        retry_jobs: bool = False,
        chroma_timeout: float | None = None,
        events: EventSink | None = None,
        stop_message: str = "interrupted by shutdown",
    ):
        self.backend = backend
        self.settings = backend.settings
        self.stop = stop
        self.stores = Stores(
            backend,
            stop=stop,
            retry_jobs=retry_jobs,
            chroma_timeout=chroma_timeout,
            events=events,
            stop_message=stop_message,
        )
        self.names = Names(self.stores)
        self.rounds = Rounds(self.stores, self.names)
        self.surgery = Surgery(self.stores, self.names, self.rounds)

    @property
    def db(self) -> Database:
        return self.stores.db

    @property
    def chroma(self) -> ChromaStore:
        return self.stores.chroma

    def close(self) -> None:
        self.stores.close()

    def resolve(self, requested: str, option: str = "--collection") -> Where:
        return self.names.resolve(requested, option)

    def label(self, where: Where) -> str:
        return self.names.label(where)

    # -- rounds ---------------------------------------------------------------------------------

    def backup_round(
        self,
        requested: list[str] | None = None,
        progress: ProgressFactory | None = None,
        *,
        fresh_seconds: float = 0.0,
        note: str | None = None,
    ) -> list[BackupResult]:
        return self.rounds.backup_round(requested, progress, fresh_seconds=fresh_seconds, note=note)

    def pin(self, name: str | None, snapshot_id: int, *, pinned: bool = True, note: str | None = None) -> Snapshot:
        """Pin (or unpin) a complete snapshot of the collection, optionally with a note."""
        where = self.names.single_collection(name)
        snapshot = resolve_snapshot(
            self.db, self.settings.chroma_tenant, where.database, where.name, snapshot_id=snapshot_id
        )
        self.db.catalog.pin(snapshot.snapshot_id, pinned, note)
        updated = self.db.catalog.get_snapshot(snapshot.snapshot_id)
        assert updated is not None
        log.info(
            "%s collection=%s snapshot=%d note=%s",
            "pin" if pinned else "unpin",
            self.label(where),
            snapshot.snapshot_id,
            updated.note,
        )
        return updated

    def health_round(self, requested: list[str] | None = None, *, restore: bool = False) -> list[HealthReport]:
        return self.rounds.health_round(requested, restore=restore)

    def deep_round(self, requested: list[str] | None = None, *, repair: bool = False) -> list[DeepReport]:
        return self.surgery.deep_round(requested, repair=repair)

    def repair(
        self,
        name: str | None,
        *,
        snapshot_id: int | None = None,
        at: datetime | None = None,
        dry_run: bool = False,
        reindex: bool = False,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> RepairResult:
        """Put back what a collection lost, in place (``core.repair``)."""
        return self.surgery.repair(
            self.names.single_collection(name),
            snapshot_id=snapshot_id,
            at=at,
            dry_run=dry_run,
            reindex=reindex,
            reason=reason,
            progress=progress,
        )

    def restore_records(
        self,
        name: str | None,
        selection: RecordSelection,
        *,
        snapshot_id: int | None = None,
        at: datetime | None = None,
        mode: str = "merge",
        dry_run: bool = False,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> RecordsRestoreResult:
        """Write chosen records of a snapshot back into the live collection (``core.records_restore``)."""
        return self.surgery.restore_records(
            self.names.single_collection(name),
            selection,
            snapshot_id=snapshot_id,
            at=at,
            mode=mode,
            dry_run=dry_run,
            reason=reason,
            progress=progress,
        )

    def diff(
        self,
        name: str | None,
        *,
        from_snapshot: int | None = None,
        at: datetime | None = None,
        to: str = LIVE,
        on_change: OnChange | None = None,
    ) -> DiffResult:
        """What changed between a snapshot and another one or the live collection (``core.diff``)."""
        return self.surgery.diff(
            self.names.single_collection(name), from_snapshot=from_snapshot, at=at, to=to, on_change=on_change
        )

    def check(self, name: str) -> HealthVerdict:
        return self.rounds.check(self.resolve(name))

    # -- what an operator asks for --------------------------------------------------------------

    def accept(self, name: str) -> AcceptResult:
        """An operator accepts the collection's current size: a snapshot of it now, labelled ``ok``
        and ``accepted``, becomes the baseline the shrink check compares with.  Refused (exit 1)
        when the collection is anything but ``ok`` or ``shrunk``."""
        where = self.resolve(name)
        before = self.rounds.check(where)
        if before.status not in (OK, SHRUNK):
            raise VerificationFailed(
                f"collection {where.name!r} is {before.status} ({before.detail}); accept only "
                "accepts a new size of a readable collection"
            )
        label = SnapshotLabel(OK, f"size accepted by an operator (was {before.status})", accepted=True)
        result = export_collection_to_postgres(
            self.stores.chroma_for(where.database), self.db, where.name, label=label, run=self.rounds.run_options()
        )
        assert result.snapshot_id is not None
        log.info(
            "accept collection=%s records=%d snapshot=%d previous_baseline=%s",
            self.label(where),
            result.records,
            result.snapshot_id,
            before.snapshot_id,
        )
        return AcceptResult(self.label(where), result.records, result.snapshot_id, before.snapshot_id, before.status)

    def restore(
        self,
        name: str | None,
        *,
        to: str | None = None,
        snapshot_id: int | None = None,
        at: datetime | None = None,
        overwrite: bool = False,
        dry_run: bool = False,
        reason: str | None = None,
        server: Server = Server(),
        to_database: str | None = None,
        progress: Progress | None = None,
    ) -> RestoreResult:
        s = self.settings
        where = self.names.single_collection(name)
        target = to or s.target_name(where.name)
        validate_collection_name(target, "--to")
        request = RestoreRequest(
            source=where.name,
            target=target,
            snapshot_id=snapshot_id,
            at=at,
            overwrite=overwrite,
            dry_run=dry_run,
            trigger=TRIGGER_CLI,
            reason=reason,
            tenant=s.chroma_tenant,
            database=where.database,
        )
        with self.stores.chroma_at(
            server.host, server.port, server.ssl, database=to_database or where.database
        ) as chroma:
            result = restore_snapshot(chroma, self.db, request, self.rounds.run_options(progress))
        result.source = self.label(where)
        if not dry_run:
            log.log(
                logging.INFO if result.exact else logging.WARNING,
                "restore collection=%s snapshot=%d target=%s records=%d verified=%s exact=%s seconds=%.2f%s",
                result.source,
                result.snapshot_id,
                target,
                result.records,
                result.verified,
                result.exact,
                result.seconds,
                f" differences={'; '.join(result.differences)}" if result.differences else "",
            )
        return result

    def restore_all(
        self,
        requested: list[str] | None = None,
        *,
        at: datetime | None = None,
        name_template: str = "{name}",
        overwrite: bool = False,
        skip_existing: bool = False,
        dry_run: bool = False,
        reason: str | None = None,
        server: Server = Server(),
        parallel: int | None = None,
        progress: Progress | None = None,
        on_plan: Callable[[ServerRestoreResult], None] | None = None,
        on_done: Callable[[PlannedRestore], None] | None = None,
        trigger: str = TRIGGER_CLI,
    ) -> ServerRestoreResult:
        """Restore every selected collection the catalog has backups of (``app.server_restore``)."""
        if overwrite and skip_existing:
            raise UsageError("--overwrite and --skip-existing exclude each other")
        rest = name_template.replace("{name}", "")
        if "{name}" not in name_template or "{" in rest or "}" in rest:
            raise UsageError(f"--name-template: expected a collection name containing {{name}}, got {name_template!r}")
        validate_collection_name(expand_name(name_template, "abc"), "--name-template")
        sources = self.names.backed_up(requested)
        if not sources:
            raise SnapshotNotFound(
                "nothing to restore: the catalog has no backups in database(s) "
                + (", ".join(self.names.backed_up_databases()) or "-")
            )
        return restore_server(
            self.backend,
            self.stores,
            sources,
            options=ServerRestoreOptions(
                at=at,
                name_template=name_template,
                overwrite=overwrite,
                skip_existing=skip_existing,
                trigger=trigger,
                reason=reason,
            ),
            target=server,
            parallel=parallel or self.settings.restore_parallel,
            dry_run=dry_run,
            run=self.rounds.run_options(progress),
            on_plan=on_plan,
            on_done=on_done,
        )

    def verify(
        self, name: str | None, *, snapshot_id: int | None = None, target: str | None = None, server: Server = Server()
    ) -> VerifyResult:
        where = self.names.single_collection(name)
        if target:
            validate_collection_name(target, "--target")
        with self.stores.chroma_at(server.host, server.port, server.ssl, database=where.database) as chroma:
            result = verify_collection(
                chroma,
                self.db,
                where.name,
                snapshot_id=snapshot_id,
                target=target,
                tenant=self.settings.chroma_tenant,
                database=where.database,
                run=self.rounds.run_options(),
            )
        result.collection = self.label(where)
        log.info(
            "verify collection=%s target=%s snapshot=%d identical=%s missing=%d extra=%d changed=%d",
            result.collection,
            result.target,
            result.snapshot_id,
            result.identical,
            result.missing,
            result.extra,
            result.changed,
        )
        return result

    def snapshots(self, name: str | None = None, limit: int | None = None) -> list[Snapshot]:
        s = self.settings
        scopes = (
            [(w.database, w.name) for w in [self.resolve(name)]]
            if name
            else [(database, None) for database in self.names.backed_up_databases()]
        )
        found = [
            snap
            for database, collection in scopes
            for snap in self.db.catalog.list_snapshots(s.chroma_tenant, database, collection, limit=limit)
        ]
        found.sort(key=lambda snap: snap.snapshot_id, reverse=True)
        return found[:limit] if limit else found

    def prune(self, *, dry_run: bool = False) -> list[PruneResult]:
        s = self.settings
        results = []
        for database in self.names.backed_up_databases():
            for r in prune_snapshots(
                self.db, tenant=s.chroma_tenant, database=database, policy=self.retention_policy(), dry_run=dry_run
            ):
                r.collection = self.label(Where(database, r.collection))
                if r.snapshots_deleted or r.failed_runs_deleted or r.versions_deleted or dry_run:
                    log.info(
                        "prune collection=%s snapshots_deleted=%d failed_deleted=%d versions_deleted=%d dry_run=%s",
                        r.collection,
                        len(r.snapshots_deleted),
                        len(r.failed_runs_deleted),
                        r.versions_deleted,
                        r.dry_run,
                    )
                results.append(r)
        return results

    def retention_policy(self) -> RetentionPolicy:
        s = self.settings
        return RetentionPolicy(
            days=s.retention_days,
            min_snapshots=s.retention_min_snapshots,
            keep_last=s.retention_keep_last,
            hourly=s.retention_keep_hourly,
            daily=s.retention_keep_daily,
            weekly=s.retention_keep_weekly,
            monthly=s.retention_keep_monthly,
            yearly=s.retention_keep_yearly,
        )

    def health_history(self, name: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Status transitions and restores, newest first."""
        s = self.settings
        scopes = (
            [(w.database, w.name) for w in [self.resolve(name)]]
            if name
            else [(database, None) for database in self.names.backed_up_databases()]
        )
        events = []
        for database, collection in scopes:
            for row in self.db.verdicts.health_history(s.chroma_tenant, database, collection):
                if row["changed"]:
                    events.append(
                        {
                            "time": row["checked_at"],
                            "collection": self.label(Where(database, row["name"])),
                            "event": "status",
                            "status": row["status"],
                            "detail": row["detail"],
                        }
                    )
            for row in self.db.restores.restore_events(s.chroma_tenant, database, collection):
                events.append(
                    {
                        "time": row["finished_at"],
                        "collection": self.label(Where(database, row["name"])),
                        "event": "restore" if row["kind"] == "restore" else row["kind"],
                        "status": RESTORED,
                        "detail": _restore_event(row),
                    }
                )
        events.sort(key=lambda e: e["time"], reverse=True)
        return events[:limit] if limit else events

    def restores(self, limit: int = 50) -> list[dict[str, Any]]:
        """Restores of every backed-up database, newest first."""
        found = []
        for database in self.names.backed_up_databases():
            for row in self.db.restores.recent(self.settings.chroma_tenant, database, limit):
                row["collection"] = self.label(Where(database, row["collection"]))
                found.append(row)
        found.sort(key=lambda row: row["restore_id"], reverse=True)
        return found[:limit]

    def check_not_busy(self, where: Where, target: str) -> None:
        """Raise ``CollectionBusy`` when a backup or restore holds the collection or the target."""
        for name in (where.name, target):
            if self.db.locks.is_busy(self.settings.chroma_tenant, where.database, name):
                raise CollectionBusy(f"collection {name!r} is busy: another backup or restore of it is running")

    def snapshot_records(self, where: Where, snapshot_id: int | None) -> int:
        """Records of the snapshot a restore would use (raises ``SnapshotNotFound``)."""
        snap = resolve_snapshot(
            self.db, self.settings.chroma_tenant, where.database, where.name, snapshot_id=snapshot_id
        )
        return snap.records or 0

    def last_success(self) -> dict[str, float]:
        """Unix time of each collection's newest complete snapshot (seeds the metrics at start),
        leaving out collections gone and recovered into another one (no longer backed up)."""
        newest: dict[str, float] = {}
        handled: set[str] = set()
        for snap in self.snapshots():
            label = self.label(Where(snap.database, snap.collection))
            if label in newest or label in handled or snap.status != COMPLETE or not snap.finished_at:
                continue
            latest = self.db.verdicts.latest(snap.collection_ref)
            if latest is not None and latest["status"] == RECOVERED_INTO:
                handled.add(label)
            else:
                newest[label] = snap.finished_at.timestamp()
        return newest

    def overview(self, schedule: dict[str, str | None]) -> list[dict[str, Any]]:
        """The status page's rows (``overview``)."""
        from chroma_backup.app.overview import overview

        return overview(self, schedule)


def _restore_event(row: dict[str, Any]) -> str:
    """One line of the health history for a restore, a repair or a record-level restore."""
    snapshot, trigger = row["source_snapshot_id"], row["trigger"]
    if row["kind"] == "repair":
        return f"repaired in place from snapshot {snapshot}: {row['records'] or 0} records rewritten ({trigger})"
    if row["kind"] == "records":
        return f"{row['records'] or 0} records of snapshot {snapshot} written back into {row['target']} ({trigger})"
    return f"restored snapshot {snapshot} into {row['target']} ({trigger})"
