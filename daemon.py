"""The daemon behind ``python main.py run``.

One ``schedule.Scheduler`` in the main thread only triggers jobs; each kind of job (backup,
health) runs in a worker thread of its own with its own PostgreSQL connection and Chroma client,
so a long backup never stalls health checks, and a turn that comes while the previous one of the
same kind still runs is skipped.  A job that raises is logged with its traceback and counted; the
loop goes on.  Stores are opened lazily inside jobs, so the daemon starts and keeps running while
Chroma or PostgreSQL is down and resumes by itself when they return.

After every backup round the retention policy runs (as ``prune`` would).

Signals: the first SIGTERM/SIGINT stops scheduling; running jobs stop after their current batch
(an interrupted backup is marked failed, an interrupted restore removes its temporary
collection) and the process exits 0; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import schedule

from config import Settings
from errors import BackupError, ChromaUnavailable, Interrupted
from export_import import BackupResult, prune_snapshots
from health import HealthVerdict, check_and_recover, guarded_backup
from metrics import Metrics
from retry import call_with_retry
from targets import health_targets, selected_collections

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0
LOOP_TICK_SECONDS = 0.5


def log_backup(result: BackupResult) -> None:
    """The one log line of a backup run."""
    if result.status == "complete":
        log.info("backup collection=%s snapshot=%d status=complete records=%d added=%d updated=%d deleted=%d "
                 "seconds=%.2f", result.collection, result.snapshot_id, result.records, result.added,
                 result.updated, result.deleted, result.seconds)
    else:
        log.log(logging.ERROR if result.status == "failed" else logging.WARNING,
                "backup collection=%s status=%s error=%s", result.collection, result.status, result.error)


def log_verdict(verdict: HealthVerdict) -> None:
    level = logging.INFO if verdict.ok else logging.WARNING
    log.log(level, "health collection=%s status=%s records=%s snapshot_records=%s seconds=%.2f detail=%s",
            verdict.collection, verdict.status, verdict.records, verdict.snapshot_records, verdict.seconds,
            verdict.detail)


class Worker:
    """Runs one kind of job in its own thread; skips a turn while the previous one still runs."""

    def __init__(self, name: str, job: Callable[[], None], metrics: Metrics):
        self.name = name
        self.job = job
        self.metrics = metrics
        self.thread: threading.Thread | None = None

    def trigger(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            log.warning("job=%s still running; skipping this turn", self.name)
            return
        self.thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.job()
        except Interrupted:
            log.info("job=%s interrupted by shutdown", self.name)
        except Exception:  # the job boundary: log, count, and let the loop go on
            log.exception("job=%s failed", self.name)
            self.metrics.failure("*", self.name)

    def join(self, timeout: float) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True


class Daemon:
    def __init__(self, settings: Settings, stores: Any, metrics: Metrics, stop: threading.Event):
        self.settings = settings
        self.stores = stores
        self.metrics = metrics
        self.stop = stop
        self._dbs: dict[str, Any] = {}
        self._chromas: dict[str, Any] = {}
        self._ready = False
        self._ready_lock = threading.Lock()
        self.backup_worker = Worker("backup", self.backup_job, metrics)
        self.health_worker = Worker("health", self.health_job, metrics)

    # -- stores, per job kind -------------------------------------------------------------------

    def _db(self, kind: str) -> Any:
        from db import Database

        if kind not in self._dbs:
            self._dbs[kind] = Database(self.settings, self.stores.embedded_dsn())
        database = self._dbs[kind]
        with self._ready_lock:
            if not self._ready:
                database.migrate()
                database.fail_stale_runs()
                self._ready = True
        return database

    def _chroma(self, kind: str, timeout: float | None = None) -> Any:
        from chroma import ChromaStore

        if kind not in self._chromas:
            self._chromas[kind] = ChromaStore.connect(self.settings, timeout=timeout)
        return self._chromas[kind]

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retry(fn, what=what, attempts=self.settings.retry_max_attempts,
                               max_seconds=self.settings.retry_max_seconds, stop=self.stop)

    # -- jobs -----------------------------------------------------------------------------------

    def backup_job(self) -> None:
        s = self.settings
        db = self._retry(lambda: self._db("backup"), "postgres")
        chroma = self._retry(lambda: self._chroma("backup"), "chroma connect")
        names = self._retry(lambda: selected_collections(s, chroma, None), "list collections")
        for name in names:
            if self.stop.is_set():
                return
            try:
                result = self._retry(
                    lambda: guarded_backup(chroma, db, name, force=False, min_ratio=s.health_min_record_ratio,
                                           sample_size=s.health_sample_size, batch_size=s.batch_size, stop=self.stop),
                    f"backup {name}")
            except Interrupted as error:
                log_backup(BackupResult(collection=name, status="failed", error=str(error)))
                raise
            except BackupError as error:
                result = BackupResult(collection=name, status="failed", error=str(error))
            log_backup(result)
            if result.status == "failed":
                self.metrics.failure(name, "backup")
            elif result.status == "complete":
                self.metrics.backup_ok(name, seconds=result.seconds, records=result.records, added=result.added,
                                       updated=result.updated, deleted=result.deleted)
        self.prune(db)

    def prune(self, db: Any) -> None:
        """The retention policy after every backup round (RETENTION_DAYS, RETENTION_MIN_SNAPSHOTS)."""
        s = self.settings
        for result in prune_snapshots(db, tenant=s.chroma_tenant, database=s.chroma_database,
                                      retention_days=s.retention_days, min_snapshots=s.retention_min_snapshots):
            if result.snapshots_deleted or result.failed_runs_deleted or result.versions_deleted:
                log.info("prune collection=%s snapshots_deleted=%d failed_deleted=%d versions_deleted=%d",
                         result.collection, len(result.snapshots_deleted), len(result.failed_runs_deleted),
                         result.versions_deleted)

    def health_job(self) -> None:
        s = self.settings
        db = self._retry(lambda: self._db("health"), "postgres")
        try:
            chroma = self._chroma("health", timeout=s.health_timeout_seconds)
        except ChromaUnavailable as error:
            chroma = None
            unreachable = str(error)
        names = health_targets(s, chroma, db, None)
        for name in names:
            if self.stop.is_set():
                return
            if chroma is None:
                log.warning("health collection=%s status=unreachable detail=%s", name, unreachable)
                self.metrics.health_status(name, "unreachable")
                continue
            verdict, recovery = check_and_recover(
                chroma, db, name, min_ratio=s.health_min_record_ratio, sample_size=s.health_sample_size,
                confirm_seconds=s.health_confirm_seconds, target=s.target_name(name), restore=s.auto_restore,
                stop=self.stop, batch_size=s.batch_size)
            log_verdict(verdict)
            self.metrics.health_status(name, verdict.status)
            if recovery is not None and recovery.action in ("restored", "failed"):
                self.metrics.restore(name, "ok" if recovery.action == "restored" else "failed")

    # -- loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        s = self.settings
        if s.metrics_port:
            self.metrics.serve(s.metrics_port)
        scheduler = schedule.Scheduler()
        scheduler.every(s.export_interval_minutes * 60).seconds.do(self.backup_worker.trigger)
        scheduler.every(s.health_check_interval_minutes * 60).seconds.do(self.health_worker.trigger)
        log.info("daemon started collections=%s export_every=%gmin health_every=%gmin auto_restore=%s metrics_port=%s",
                 ",".join(s.collections), s.export_interval_minutes, s.health_check_interval_minutes,
                 s.auto_restore, s.metrics_port or "off")
        self.backup_worker.trigger()
        self.health_worker.trigger()
        heartbeat = s.heartbeat_path
        os.makedirs(os.path.dirname(os.path.abspath(heartbeat)), exist_ok=True)
        while not self.stop.is_set():
            scheduler.run_pending()
            self.metrics.tick()
            with open(heartbeat, "w") as handle:
                handle.write(f"{time.time():.0f}\n")
            self.stop.wait(LOOP_TICK_SECONDS)
        log.info("daemon stopping: waiting up to %.0fs for running jobs", SHUTDOWN_GRACE_SECONDS)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        finished = all(w.join(max(0.0, deadline - time.monotonic())) for w in (self.backup_worker, self.health_worker))
        for database in self._dbs.values():
            if finished:
                database.close()
        log.info("daemon stopped clean=%s", finished)
        return 0


def install_signal_handlers(stop: threading.Event) -> None:
    received = []

    def handle(signum: int, _frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.warning("signal=%s shutdown requested: finishing the current batch (send again to exit now)", name)
            stop.set()
        else:
            log.error("signal=%s again: exiting now", name)
            os._exit(1)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
