"""The operations layer: the one place that opens the stores from ``Settings`` and runs a round.

The CLI (``main.py``: parse, print), the daemon (``daemon.py``: schedule, signals) and the demo
are thin callers of ``Operations``; none of them opens a store or repeats a round.  Every round
returns result objects that say everything a caller may print, log, export as metrics or serve.

Rounds isolate collections: a problem in one collection (an unexpected exception included) gives
that collection a ``failed`` result, logged with its traceback at DEBUG, and the round goes on.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

from config import Settings, validate_collection_name
from errors import (BackupError, ChromaUnavailable, CollectionBusy, CollectionNotFound, Interrupted, UsageError,
                    VerificationFailed, unexpected)
from states import (COMPLETE, FAILED, GONE, OK, RECOVERED, RECOVERED_INTO, RESTORED, SHRUNK, TRIGGER_CLI,
                    UNREACHABLE)

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Any]  # collection name -> progress callable with .close()


def log_backup(result: Any) -> None:
    """The one log line of a backup run."""
    if result.status == COMPLETE:
        log.info("backup collection=%s snapshot=%d status=complete health=%s records=%d added=%d updated=%d "
                 "deleted=%d seconds=%.2f", result.collection, result.snapshot_id, result.health, result.records,
                 result.added, result.updated, result.deleted, result.seconds)
    else:
        log.error("backup collection=%s status=%s error=%s", result.collection, result.status, result.error)


def log_verdict(verdict: Any) -> None:
    level = logging.INFO if verdict.ok else logging.WARNING
    log.log(level, "health collection=%s status=%s records=%s snapshot_records=%s seconds=%.2f detail=%s",
            verdict.collection, verdict.status, verdict.records, verdict.snapshot_records, verdict.seconds,
            verdict.detail)


@dataclass
class HealthReport:
    """One collection's verdict, what recovery did about it, and since when the status holds."""

    verdict: Any
    recovery: Any = None
    since: str | None = None

    @property
    def collection(self) -> str:
        return self.verdict.collection

    @property
    def recovered(self) -> bool:
        """ok, or broken and a good copy is in place (restored now or already)."""
        return self.verdict.ok or (self.recovery is not None and self.recovery.action in RECOVERED)

    def as_json(self) -> dict[str, Any]:
        return {**self.verdict.as_json(), "since": self.since,
                "recovery": self.recovery.as_json() if self.recovery else None}


@dataclass
class AcceptResult:
    collection: str
    records: int
    snapshot_id: int
    previous_baseline: int | None
    verdict_before: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Backend:
    """What every ``Operations`` of one process shares: the settings, and the embedded PostgreSQL
    (started once, on first use, when no server is configured)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._embedded: Any = None
        self._dsn: str | None = None
        self._migrated = False

    def embedded_dsn(self) -> str | None:
        if not self.settings.embedded_postgres:
            return None
        with self._lock:
            if self._embedded is None:
                from db import EmbeddedPostgres

                embedded = EmbeddedPostgres(self.settings.data_dir)
                self._dsn = embedded.start(self.settings.db_name)
                self._embedded = embedded
        return self._dsn

    def close(self) -> None:
        """Stop the embedded PostgreSQL if this process started it."""
        with self._lock:
            if self._embedded is not None:
                self._embedded.stop()
                self._embedded = None

    def ready(self, db: Any) -> None:
        """Migrate the schema and mark the backups and restores a dead process left ``running``
        as failed (saying why), once per process."""
        with self._lock:
            if not self._migrated:
                db.migrate()
                db.catalog.fail_stale_runs()
                stale = db.restores.fail_stale_restores()
                if stale:
                    log.warning("stale_restores_failed count=%d", stale)
                self._migrated = True


class Where(NamedTuple):
    """A collection in one database of the tenant."""

    database: str
    name: str


class Stores:
    """Opens the stores lazily, with bounded retries, and names collections.  One instance per
    thread: it owns one PostgreSQL connection and one Chroma client per database."""

    def __init__(self, backend: Backend, *, stop: threading.Event | None = None, retry_jobs: bool = False,
                 chroma_timeout: float | None = None):
        self.backend = backend
        self.settings = backend.settings
        self.stop = stop
        self.retry_jobs = retry_jobs
        self.chroma_timeout = chroma_timeout
        self._db: Any = None
        self._chromas: dict[str, Any] = {}
        self._stack = ExitStack()

    # -- stores ---------------------------------------------------------------------------------

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        from retry import call_with_retry

        return call_with_retry(fn, what=what, attempts=self.settings.retry_max_attempts,
                               max_seconds=self.settings.retry_max_seconds, stop=self.stop)

    @property
    def db(self) -> Any:
        if self._db is None:
            from db import Database

            database = Database(self.settings, self.backend.embedded_dsn())
            self._retry(database.connect, "postgres connect")
            self._stack.callback(database.close)
            self.backend.ready(database)
            self._db = database
        return self._db

    @property
    def chroma(self) -> Any:
        """The client of the first configured database."""
        return self.chroma_for(self.settings.chroma_database)

    def chroma_for(self, database: str) -> Any:
        if database not in self._chromas:
            self._chromas[database] = self.chroma_at(database=database)
        return self._chromas[database]

    def chroma_at(self, host: str | None = None, port: int | None = None, ssl: bool | None = None, *,
                  database: str | None = None) -> Any:
        """The configured Chroma server, or the one named by host/port/ssl."""
        from chroma import ChromaStore

        database = database or self.settings.chroma_database
        if host is None and port is None and ssl is None and database in self._chromas:
            return self._chromas[database]
        store = self._retry(lambda: ChromaStore.connect(self.settings, host=host, port=port, ssl=ssl,
                                                        timeout=self.chroma_timeout, database=database),
                            "chroma connect")
        self._stack.callback(store.close)  # its connection pool goes when these stores do
        return store

    def close(self) -> None:
        self._stack.close()
        self._db = None
        self._chromas.clear()

    # -- names ----------------------------------------------------------------------------------

    def databases(self) -> list[str]:
        """CHROMA_DATABASE's databases (``*``: every database of the tenant, as Chroma lists them)."""
        if self.settings.all_databases:
            return self.chroma.list_databases()
        return list(self.settings.chroma_databases)

    def backed_up_databases(self) -> list[str]:
        """The databases to read the catalog for (``*``: every one with backups)."""
        if self.settings.all_databases:
            return self.db.catalog.database_names(self.settings.chroma_tenant)
        return list(self.settings.chroma_databases)

    def label(self, where: Where) -> str:
        """How a collection is named in output, logs and metrics: ``database/collection`` wherever
        two databases could share a collection name."""
        return f"{where.database}/{where.name}" if self.settings.several_databases else where.name

    def resolve(self, requested: str, option: str = "--collection") -> Where:
        """``database/collection``, or a plain name when it is unambiguous."""
        if "/" in requested:
            database, name = requested.split("/", 1)
            validate_collection_name(name, option)
            return Where(database, name)
        validate_collection_name(requested, option)
        if not self.settings.several_databases:
            return Where(self.settings.chroma_database, requested)
        found = [d for d in self.databases() if requested in self._known(d)]
        if len(found) == 1:
            return Where(found[0], requested)
        if not found:
            raise UsageError(f"{option} {requested}: no such collection in database(s) "
                             f"{', '.join(self.databases())}; name it as DATABASE/COLLECTION")
        raise UsageError(f"{option} {requested} is ambiguous: "
                         + ", ".join(f"{d}/{requested}" for d in found) + "; name it as DATABASE/COLLECTION")

    def _remove_leftovers(self, database: str) -> None:
        """The half-built copies of restores that died go before a round lists collections."""
        from export_import import remove_leftovers

        try:
            remove_leftovers(self.chroma_for(database), self.db)
        except BackupError as error:
            log.warning("could not remove the leftovers of dead restores in database=%s: %s", database, error)

    def _known(self, database: str) -> set[str]:
        names = set(self.db.catalog.collection_names(self.settings.chroma_tenant, database))
        try:
            names.update(self.chroma_for(database).list_collection_names())
        except ChromaUnavailable:
            pass
        return names

    def single_collection(self, requested: str | None) -> Where:
        if requested:
            return self.resolve(requested)
        s = self.settings
        if not s.all_collections and len(s.collections) == 1:
            return self.resolve(s.collections[0], "CHROMA_COLLECTION_NAME")
        raise UsageError("--collection NAME is required (CHROMA_COLLECTION_NAME names more than one collection)")

    def _selected(self, requested: list[str] | None, select: Callable[..., Any]) -> list[Where]:
        """The collections a round works on, in every database; the ones left out on purpose are
        logged, one line each."""
        if requested:
            wheres = list(dict.fromkeys(self.resolve(r) for r in requested))
            for database in dict.fromkeys(where.database for where in wheres):
                self._remove_leftovers(database)
            return wheres
        chosen = []
        for database in self.databases():
            self._remove_leftovers(database)
            selection = select(self.settings, self.chroma_for(database), self.db, None)
            for name, why in selection.excluded.items():
                log.info("skipped collection=%s reason=%s", self.label(Where(database, name)), why)
            chosen += [Where(database, name) for name in selection.names]
        return chosen


class Rounds(Stores):
    """The scheduled work: backup and health rounds, each collection isolated from the others."""

    # -- backup ---------------------------------------------------------------------------------

    def backup_round(self, requested: list[str] | None = None,
                     progress: ProgressFactory | None = None) -> list[Any]:
        """Back up every selected collection that can be read, each labelled with its verdict."""
        from targets import selected_collections

        if self.retry_jobs:
            chosen = self._retry(lambda: self._selected(requested, selected_collections), "list collections")
        else:
            chosen = self._selected(requested, selected_collections)
        results = []
        for where in chosen:
            if self.stop is not None and self.stop.is_set():
                break
            results.append(self._isolated_backup(where, progress))
        return results

    def _isolated_backup(self, where: Where, progress: ProgressFactory | None) -> Any:
        from export_import import BackupResult

        label = self.label(where)
        bar = progress(label) if progress else None
        try:
            if self.retry_jobs:
                result = self._retry(lambda: self.backup_one(where, bar), f"backup {label}")
            else:
                result = self.backup_one(where, bar)
        except Interrupted as error:
            log_backup(BackupResult(collection=label, status=FAILED, error=str(error)))
            raise
        except BackupError as error:
            result = BackupResult(collection=label, status=FAILED, error=str(error), transient=error.transient)
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("backup collection=%s unexpected error", label, exc_info=True)
            result = BackupResult(collection=label, status=FAILED,
                                  error=unexpected(error))
        finally:
            if bar is not None:
                bar.close()
        result.collection = label
        log_backup(result)
        return result

    def backup_one(self, where: Where, progress: Any = None) -> Any:
        """Check a collection and back it up under that verdict (a missing or unreachable
        collection cannot be read: that raises)."""
        from export_import import export_collection_to_postgres
        from recovery import origin_of

        chroma, db = self.chroma_for(where.database), self.db
        verdict = self.check(where)
        if verdict.status in GONE:
            raise CollectionNotFound(f"collection {where.name!r} does not exist")
        if verdict.status == UNREACHABLE:
            raise ChromaUnavailable(f"Chroma unreachable: {verdict.detail}")
        made = origin_of(chroma, db, where.name)
        origin = None
        if made is not None and made["collection_id"] == str(chroma.open(where.name).id):
            origin = (made["collection"], made["snapshot_id"])
        return export_collection_to_postgres(
            chroma, db, where.name, health=verdict.status, health_detail=verdict.detail, origin=origin,
            batch_size=self.settings.batch_size, read_workers=self.settings.read_workers, progress=progress,
            stop=self.stop)

    # -- health ---------------------------------------------------------------------------------

    def check(self, where: Where | str, *, min_ratio: float | None = None) -> Any:
        """One verdict (kept in the health history)."""
        from health import check_collection_health

        s = self.settings
        if isinstance(where, str):
            where = self.resolve(where)
        verdict = check_collection_health(self.chroma_for(where.database), self.db, where.name,
                                          min_ratio=s.health_min_record_ratio if min_ratio is None else min_ratio,
                                          sample_size=s.health_sample_size)
        # A collection seen for the first time gets its catalog row now, so its history starts here.
        ref = self.db.catalog.collection_ref(s.chroma_tenant, where.database, where.name,
                                             create=verdict.status not in (*GONE, UNREACHABLE))
        if ref is not None:
            self.db.verdicts.record_verdict(ref, verdict.status, verdict.detail, verdict.records, verdict.snapshot_id)
        return verdict

    def health_round(self, requested: list[str] | None = None, *, restore: bool = False) -> list[HealthReport]:
        """Check every selected collection (and, with ``restore``, recover confirmed failures);
        with ``*``, also every collection that has backups (a deleted one is ``missing``)."""
        from targets import health_targets

        try:
            chosen = self._selected(requested, health_targets)
            unreachable = None
        except ChromaUnavailable as error:  # every collection we know of is unreachable
            unreachable = str(error)
            chosen = [self.resolve(r) for r in requested] if requested else self._catalog_targets()
        reports = []
        for where in chosen:
            if self.stop is not None and self.stop.is_set():
                break
            report = HealthReport(_unreachable(where.name, unreachable)) if unreachable else \
                self._isolated_health(where, restore)
            report.since = self._since(where)
            report.verdict.collection = self.label(where)
            if report.recovery is not None:
                report.recovery.collection = report.verdict.collection
            log_verdict(report.verdict)
            reports.append(report)
        return reports

    def _catalog_targets(self) -> list[Where]:
        s = self.settings
        if not s.all_collections:
            return [Where(d, n) for d in self.backed_up_databases() for n in s.collections]
        return [Where(d, n) for d in self.backed_up_databases()
                for n in self.db.catalog.collection_names(s.chroma_tenant, d)]

    def _isolated_health(self, where: Where, restore: bool) -> HealthReport:
        from health import HealthVerdict
        from recovery import check_and_recover, recover_collection

        s = self.settings
        try:
            self.chroma_for(where.database)
        except ChromaUnavailable as error:
            return HealthReport(_unreachable(where.name, str(error)))
        try:
            verdict, recovery = check_and_recover(
                lambda: self.check(where),
                lambda v: recover_collection(self.chroma_for(where.database), self.db, v, target_name=s.target_name,
                                             stop=self.stop, batch_size=s.batch_size, read_workers=s.read_workers),
                confirm_seconds=s.health_confirm_seconds, restore=restore, stop=self.stop)
        except Interrupted:
            raise
        except Exception as error:  # the collection's boundary: the round goes on
            log.debug("health collection=%s unexpected error", where.name, exc_info=True)
            message = error if isinstance(error, BackupError) else unexpected(error)
            verdict = HealthVerdict(where.name, FAILED, f"health check failed: {message}", None, None, None, _now(), 0.0)
            recovery = None
        return HealthReport(verdict, recovery)

    def _since(self, where: Where) -> str | None:
        try:
            ref = self.db.catalog.collection_ref(self.settings.chroma_tenant, where.database, where.name)
            current = self.db.verdicts.status_since(ref) if ref is not None else None
        except BackupError:
            return None
        return current[1].isoformat() if current else None


class Operations(Rounds):
    """The rounds plus what an operator asks for: accept, restore, verify, snapshots, prune, history.
    The CLI, the daemon and the demo call these; nothing else opens a store."""

    def accept(self, name: str) -> AcceptResult:
        """An operator accepts the collection's current size: a snapshot of it now, labelled ``ok``
        and ``accepted``, becomes the baseline the shrink check compares with.  Refused (exit 1)
        when the collection is anything but ``ok`` or ``shrunk``."""
        from export_import import export_collection_to_postgres

        where = self.resolve(name)
        before = self.check(where)
        if before.status not in (OK, SHRUNK):
            raise VerificationFailed(f"collection {where.name!r} is {before.status} ({before.detail}); accept only "
                                     "accepts a new size of a readable collection")
        result = export_collection_to_postgres(self.chroma_for(where.database), self.db, where.name, health=OK,
                                               accepted=True,
                                               health_detail=f"size accepted by an operator (was {before.status})",
                                               batch_size=self.settings.batch_size,
                                               read_workers=self.settings.read_workers, stop=self.stop)
        log.info("accept collection=%s records=%d snapshot=%d previous_baseline=%s", self.label(where),
                 result.records, result.snapshot_id, before.snapshot_id)
        return AcceptResult(self.label(where), result.records, result.snapshot_id, before.snapshot_id, before.status)

    def health_history(self, name: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Status transitions and restores, newest first."""
        s = self.settings
        wheres = [self.resolve(name)] if name else [Where(d, None) for d in self.backed_up_databases()]
        events = []
        for where in wheres:
            for row in self.db.verdicts.health_history(s.chroma_tenant, where.database, where.name):
                if row["changed"]:
                    events.append({"time": row["checked_at"], "collection": self.label(Where(where.database, row["name"])),
                                   "event": "status", "status": row["status"], "detail": row["detail"]})
            for row in self.db.restores.restore_events(s.chroma_tenant, where.database, where.name):
                events.append({"time": row["finished_at"], "collection": self.label(Where(where.database, row["name"])),
                               "event": "restore", "status": RESTORED,
                               "detail": f"restored snapshot {row['source_snapshot_id']} into {row['target']} "
                                         f"({row['trigger']})"})
        events.sort(key=lambda e: e["time"], reverse=True)
        return events[:limit] if limit else events

    # -- restore, verify, snapshots, prune ------------------------------------------------------

    def restore(self, name: str | None, *, to: str | None = None, snapshot_id: int | None = None,
                at: datetime | None = None, overwrite: bool = False, dry_run: bool = False,
                reason: str | None = None, host: str | None = None, port: int | None = None,
                ssl: bool | None = None, to_database: str | None = None, progress: Any = None) -> Any:
        from export_import import import_postgres_to_chroma

        s = self.settings
        where = self.single_collection(name)
        target = to or s.target_name(where.name)
        validate_collection_name(target, "--to")
        chroma = self.chroma_at(host, port, ssl, database=to_database or where.database)
        result = import_postgres_to_chroma(
            chroma, self.db, where.name, target=target, snapshot_id=snapshot_id, at=at, overwrite=overwrite,
            dry_run=dry_run, trigger=TRIGGER_CLI, reason=reason, tenant=s.chroma_tenant, database=where.database,
            batch_size=s.batch_size, read_workers=s.read_workers, progress=progress, stop=self.stop)
        result.source = self.label(where)
        if not dry_run:
            log.log(logging.INFO if result.exact else logging.WARNING,
                    "restore collection=%s snapshot=%d target=%s records=%d verified=%s exact=%s seconds=%.2f%s",
                    result.source, result.snapshot_id, target, result.records, result.verified, result.exact,
                    result.seconds, f" differences={'; '.join(result.differences)}" if result.differences else "")
        return result

    def verify(self, name: str | None, *, snapshot_id: int | None = None, target: str | None = None,
               host: str | None = None, port: int | None = None, ssl: bool | None = None) -> Any:
        from export_import import verify_collection

        where = self.single_collection(name)
        if target:
            validate_collection_name(target, "--target")
        result = verify_collection(self.chroma_at(host, port, ssl, database=where.database), self.db, where.name,
                                   snapshot_id=snapshot_id, target=target, tenant=self.settings.chroma_tenant,
                                   database=where.database, read_workers=self.settings.read_workers)
        result.collection = self.label(where)
        log.info("verify collection=%s target=%s snapshot=%d identical=%s missing=%d extra=%d changed=%d",
                 result.collection, result.target, result.snapshot_id, result.identical, result.missing, result.extra,
                 result.changed)
        return result

    def snapshots(self, name: str | None = None, limit: int | None = None) -> list[Any]:
        s = self.settings
        wheres = [self.resolve(name)] if name else [Where(d, None) for d in self.backed_up_databases()]
        found = [snap for where in wheres
                 for snap in self.db.catalog.list_snapshots(s.chroma_tenant, where.database, where.name, limit=limit)]
        found.sort(key=lambda snap: snap.snapshot_id, reverse=True)
        return found[:limit] if limit else found

    def prune(self, *, dry_run: bool = False) -> list[Any]:
        from export_import import prune_snapshots

        s = self.settings
        results = []
        for database in self.backed_up_databases():
            for r in prune_snapshots(self.db, tenant=s.chroma_tenant, database=database,
                                     retention_days=s.retention_days, min_snapshots=s.retention_min_snapshots,
                                     dry_run=dry_run):
                r.collection = self.label(Where(database, r.collection))
                if r.snapshots_deleted or r.failed_runs_deleted or r.versions_deleted or dry_run:
                    log.info("prune collection=%s snapshots_deleted=%d failed_deleted=%d versions_deleted=%d "
                             "dry_run=%s", r.collection, len(r.snapshots_deleted), len(r.failed_runs_deleted),
                             r.versions_deleted, r.dry_run)
                results.append(r)
        return results

    def overview(self, schedule: dict[str, str | None]) -> list[dict[str, Any]]:
        """One row per selected collection: current health and since when, the last complete
        snapshot, the last restore, and when the next backup and check are due."""
        from targets import health_targets

        s = self.settings
        try:
            wheres = self._selected(None, health_targets)
        except ChromaUnavailable:
            wheres = self._catalog_targets()
        rows = []
        for where in wheres:
            ref = self.db.catalog.collection_ref(s.chroma_tenant, where.database, where.name)
            latest = self.db.verdicts.latest(ref) if ref is not None else None
            since = self.db.verdicts.status_since(ref) if ref is not None else None
            snap = self.db.catalog.latest_complete(ref) if ref is not None else None
            restores = self.db.restores.list_restores(ref, 1) if ref is not None else []
            rows.append({
                "collection": self.label(where), "database": where.database,
                "status": latest["status"] if latest else None, "detail": latest["detail"] if latest else None,
                "checked_at": latest["checked_at"].isoformat() if latest else None,
                "since": since[1].isoformat() if since else None,
                "records": latest["records"] if latest and latest["records"] is not None else
                (snap.records if snap else None),
                "last_snapshot": {key: value for key, value in snap.as_json().items()
                                  if key in ("snapshot_id", "finished_at", "records", "health", "digest")}
                if snap else None,
                "last_restore": {key: restores[0][key] for key in ("restore_id", "source_snapshot_id", "target",
                                                                   "status", "trigger", "finished_at")}
                if restores else None,
                "next_backup": schedule.get("backup"), "next_check": schedule.get("health"),
            })
        return rows

    def restores(self, limit: int = 50) -> list[dict[str, Any]]:
        """Restores of every backed-up database, newest first."""
        found = []
        for database in self.backed_up_databases():
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
        from export_import import resolve_snapshot

        snap = resolve_snapshot(self.db, self.settings.chroma_tenant, where.database, where.name,
                                snapshot_id=snapshot_id)
        return snap.records or 0

    def last_success(self) -> dict[str, float]:
        """Unix time of each collection's newest complete snapshot (seeds the metrics at start)."""
        newest: dict[str, float] = {}
        handled: set[str] = set()  # gone and recovered into another collection: no longer backed up
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _unreachable(name: str, detail: str) -> Any:
    from health import HealthVerdict

    return HealthVerdict(name, UNREACHABLE, detail, None, None, None, _now(), 0.0)

