"""The daemon behind ``python main.py run``.

The main thread's loop only triggers jobs when their ``Timer`` says (an interval, or a cron
expression); each kind of job (backup, health, deep check) runs in a worker thread of its own
with its own PostgreSQL connection and Chroma client, so a long backup never stalls health
checks, and a turn that comes while the previous one of the same kind still runs is skipped.  A
job that raises is logged with its traceback and counted; the loop goes on.  Stores are opened
lazily inside jobs, so the daemon starts and keeps running while Chroma or PostgreSQL is down and
resumes by itself when they return.

After every backup round the retention policy runs (as ``prune`` would).  The rounds are the
operations layer's (``app.Operations``), the same the CLI runs.

Signals: the first SIGTERM/SIGINT stops scheduling; running jobs stop after their current batch
(an interrupted backup is marked failed, an interrupted restore removes its temporary
collection) and the process exits 0; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.service.dependencies import Dependencies
from chroma_backup.service.metrics import Metrics
from chroma_backup.service.notify import Event, Notifier, Tracker
from chroma_backup.service.timing import Timer
from chroma_backup.service.worker import RETRY, Worker
from chroma_backup.states import COMPLETE, FAILED, RECOVERED_INTO, RESTORED, SKIPPED, UNREACHABLE

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0
LOOP_TICK_SECONDS = 0.5


class Daemon:
    """Scheduling and signals; the rounds themselves are ``app.Operations``' (one per job kind,
    each with its own connections)."""

    def __init__(self, backend: Backend, metrics: Metrics, stop: threading.Event):
        s = self.settings = backend.settings
        self.metrics = metrics
        self.stop = stop
        self.notifier = Notifier(
            list(s.notify_urls),
            s.notify_secret,
            s.on_event_command,
            s.on_event_timeout_seconds,
            s.replica,
            on_failure=lambda target: metrics.notify_failures.labels(target).inc(),
        )
        self.tracker = Tracker()
        self._tracker_lock = threading.Lock()
        self._last_success: dict[str, float] = {}
        self._stale_checked = 0.0
        self.backup_ops = Operations(backend, stop=stop, retry_jobs=True, events=self._event)
        self.health_ops = Operations(
            backend, stop=stop, retry_jobs=True, chroma_timeout=s.health_timeout_seconds, events=self._event
        )
        self.backup_worker = Worker(
            "backup", self.backup_job, metrics, retry_cap=min(self.settings.export_interval_minutes * 60, 900.0)
        )
        self.health_worker = Worker("health", self.health_job, metrics)
        self.deep_ops = Operations(backend, stop=stop, retry_jobs=True, events=self._event)
        self.deep_worker = Worker("deep", self.deep_job, metrics)
        self._seeded = False
        self.backend = backend
        self._jobs: dict[str, tuple[Timer, Worker]] = {}
        self.dependencies = Dependencies(backend, metrics, stop)

    # -- notifications --------------------------------------------------------------------------

    def _event(self, kind: str, collection: str | None, detail: str, data: dict[str, Any]) -> None:
        """What a run tells (a restore started, verified, failed): notified as it is."""
        self.notifier.publish(Event(kind, detail, collection, data=data))

    def _track(self, kind: str, *observation: Any) -> None:
        """An observation (``Tracker.backup``, ``.stale``, ``.health``) turned into an event only
        when a state changes."""
        with self._tracker_lock:
            event = getattr(self.tracker, kind)(*observation)
        self.notifier.publish(event)

    def _check_stale(self) -> None:
        """``backup_stale`` once a collection has had no complete snapshot for two intervals."""
        now = time.time()
        if now - self._stale_checked < 30:
            return
        self._stale_checked = now
        limit = 2 * self._backup_period()
        for name, when in list(self._last_success.items()):
            if now - when > limit:
                age = f"no complete snapshot for {(now - when) / 60:.0f} minutes (two intervals: {limit / 60:g})"
                self._track("stale", name, age)

    # -- jobs -----------------------------------------------------------------------------------

    def backup_job(self) -> Any:
        ops = self.backup_ops
        if not self._seeded:
            ops.db.catalog.fail_stale_runs()  # runs a killed process left 'running'
            for name, when in ops.last_success().items():  # the stopped-backup alarm holds across restarts
                self.metrics.last_success.labels(name).set(when)
                self._last_success[name] = when
            self._seeded = True
        transient = False
        started = time.monotonic()
        # Several daemons on one catalog back each collection up once per interval between them: a
        # collection another replica backed up within most of an interval is skipped.
        results = ops.backup_round(fresh_seconds=0.9 * self._backup_period())
        for result in results:
            if result.status in (FAILED, COMPLETE):
                ok, detail = result.status == COMPLETE, result.error or f"snapshot {result.snapshot_id} complete"
                self._track("backup", result.collection, ok, detail)
            if result.status == FAILED:
                self.metrics.failure(result.collection, "backup")
                transient = transient or result.transient
            elif result.status == COMPLETE:
                self._last_success[result.collection] = time.time()
                self.metrics.backup_ok(
                    result.collection,
                    seconds=result.seconds,
                    records=result.records,
                    added=result.added,
                    updated=result.updated,
                    deleted=result.deleted,
                )
        if not self.stop.is_set():
            for pruned in ops.prune():
                if pruned.snapshots_deleted:
                    self.notifier.publish(
                        Event(
                            "retention_deleted",
                            f"{len(pruned.snapshots_deleted)} snapshots and {pruned.versions_deleted} record versions",
                            pruned.collection,
                            data={"snapshots": pruned.snapshots_deleted},
                        )
                    )
        failed = sum(1 for r in results if r.status == FAILED)
        skipped = sum(1 for r in results if r.status == SKIPPED)
        log.info(
            "job=backup done collections=%d failed=%d skipped=%d seconds=%.1f",
            len(results),
            failed,
            skipped,
            time.monotonic() - started,
        )
        return RETRY if transient else None

    def health_job(self) -> None:
        reports = self.health_ops.health_round(restore=self.settings.auto_restore)
        self.metrics.server_wiped.set(1 if any(report.wiped for report in reports) else 0)
        for report in reports:
            self.metrics.health_status(report.collection, report.verdict.status)
            if report.verdict.status not in (UNREACHABLE, FAILED):  # a blip is not the collection's state
                detail = f"{report.verdict.status}: {report.verdict.detail}"
                self._track("health", report.collection, report.verdict.ok, report.recovery is not None, detail)
            if report.verdict.status == RECOVERED_INTO:
                self.metrics.forget_backups(report.collection)
            recovery = report.recovery
            if recovery is not None and recovery.action in (RESTORED, FAILED):
                self.metrics.restore(report.collection, "ok" if recovery.action == RESTORED else "failed")

    def _backup_period(self) -> float:
        """Seconds between two scheduled backups (what "once per interval" means for a fleet)."""
        job = self._jobs.get("backup")
        return job[0].period_seconds() if job else self.settings.export_interval_minutes * 60

    def deep_job(self) -> None:
        """The deep check of every selected collection (and with AUTO_REPAIR, a repair of each
        one found damaged)."""
        for report in self.deep_ops.deep_round(repair=self.settings.auto_repair):
            self.metrics.health_status(report.collection, report.verdict.status)
            if report.findings is not None:
                self.metrics.deep_check(report.collection, report.findings.counts())
            if report.repair is not None:
                self.metrics.restore(report.collection, "ok" if report.repair.verified else "failed")

    # -- loop -----------------------------------------------------------------------------------

    def schedule_info(self) -> dict[str, str | None]:
        """When the next backup and health check are due (UTC, ISO 8601)."""

        return {kind: timer.next_run.isoformat(timespec="seconds") for kind, (timer, _) in self._jobs.items()}

    def _http(self) -> Any:
        """The HTTP server (status page, API, /metrics, /healthz), or None when HTTP_PORT is 0."""
        s = self.settings
        if not s.http_port:
            return None
        from chroma_backup.service.api import HttpServer, create_app  # FastAPI only when serving
        from chroma_backup.service.tasks import TaskRunner

        reader = Operations(self.backend, stop=self.stop)
        tasks = TaskRunner(self.backend, self.stop, events=self._event)
        server = HttpServer(
            create_app(s, reader, tasks, self.metrics, self.schedule_info, self.dependencies.down_longer_than),
            s.http_host,
            s.http_port,
        )
        server.start()
        return server

    def run(self) -> int:
        s = self.settings
        self.dependencies.start()
        self.notifier.start()
        http = self._http()
        jitter = s.schedule_jitter_seconds
        self._jobs["backup"] = (
            Timer(
                every_seconds=None if s.export_schedule else s.export_interval_minutes * 60,
                cron=s.export_schedule,
                jitter=jitter,
            ),
            self.backup_worker,
        )
        self._jobs["health"] = (
            Timer(
                every_seconds=None if s.health_schedule else s.health_check_interval_minutes * 60,
                cron=s.health_schedule,
                jitter=jitter,
            ),
            self.health_worker,
        )
        if s.deep_check_schedule or s.deep_check_interval_hours > 0:  # the first one later, not at start
            self._jobs["deep"] = (
                Timer(
                    every_seconds=None if s.deep_check_schedule else s.deep_check_interval_hours * 3600,
                    cron=s.deep_check_schedule,
                    jitter=jitter,
                ),
                self.deep_worker,
            )
        log.info(
            "daemon started replica=%s collections=%s databases=%s backup=%s health=%s deep=%s auto_restore=%s "
            "auto_repair=%s http=%s",
            s.replica,
            ",".join(s.collections),
            ",".join(s.chroma_databases),
            *(self._jobs[kind][0].describe() if kind in self._jobs else "off" for kind in ("backup", "health", "deep")),
            s.auto_restore,
            s.auto_repair,
            f"{s.http_host}:{s.http_port}" if http else "off",
        )
        self.backup_worker.trigger()
        self.health_worker.trigger()
        heartbeat = s.heartbeat_path
        os.makedirs(os.path.dirname(os.path.abspath(heartbeat)), exist_ok=True)
        while not self.stop.is_set():
            for timer, worker in self._jobs.values():
                if timer.due():
                    worker.trigger()
            self._check_stale()
            if self.backup_worker.retry_due():
                self.backup_worker.trigger()
            self.metrics.tick()
            with open(heartbeat, "w") as handle:
                handle.write(f"{time.time():.0f}\n")
            self.stop.wait(LOOP_TICK_SECONDS)
        log.info("daemon stopping: waiting up to %.0fs for running jobs", SHUTDOWN_GRACE_SECONDS)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        workers = (self.backup_worker, self.health_worker, self.deep_worker)
        finished = all(w.join(max(0.0, deadline - time.monotonic())) for w in workers)
        if http is not None:
            http.stop()
        if finished:
            self.backup_ops.close()
            self.health_ops.close()
            self.deep_ops.close()
        self.notifier.close()
        log.info("daemon stopped clean=%s", finished)
        return 0
