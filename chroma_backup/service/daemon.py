"""The daemon behind ``python main.py run``.

One ``schedule.Scheduler`` in the main thread only triggers jobs; each kind of job (backup,
health, deep check) runs in a worker thread of its own with its own PostgreSQL connection and Chroma client,
so a long backup never stalls health checks, and a turn that comes while the previous one of the
same kind still runs is skipped.  A job that raises is logged with its traceback and counted; the
loop goes on.  Stores are opened lazily inside jobs, so the daemon starts and keeps running while
Chroma or PostgreSQL is down and resumes by itself when they return.

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
from datetime import timezone
from typing import Any, cast

import schedule

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.service.dependencies import Dependencies
from chroma_backup.service.metrics import Metrics
from chroma_backup.service.worker import RETRY, Worker
from chroma_backup.states import COMPLETE, FAILED, RECOVERED_INTO, RESTORED, SKIPPED

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0
LOOP_TICK_SECONDS = 0.5


def _seconds(minutes: float) -> int:
    """An interval for ``schedule``: typed as int, it takes fractions of a second as they are."""
    return cast(int, minutes * 60)


class Daemon:
    """Scheduling and signals; the rounds themselves are ``app.Operations``' (one per job kind,
    each with its own connections)."""

    def __init__(self, backend: Backend, metrics: Metrics, stop: threading.Event):
        self.settings = backend.settings
        self.metrics = metrics
        self.stop = stop
        self.backup_ops = Operations(backend, stop=stop, retry_jobs=True)
        self.health_ops = Operations(
            backend, stop=stop, retry_jobs=True, chroma_timeout=self.settings.health_timeout_seconds
        )
        self.backup_worker = Worker(
            "backup", self.backup_job, metrics, retry_cap=min(self.settings.export_interval_minutes * 60, 900.0)
        )
        self.health_worker = Worker("health", self.health_job, metrics)
        self.deep_ops = Operations(backend, stop=stop, retry_jobs=True)
        self.deep_worker = Worker("deep", self.deep_job, metrics)
        self._seeded = False
        self.backend = backend
        self.scheduler = schedule.Scheduler()
        self._jobs: dict[str, Any] = {}
        self.dependencies = Dependencies(backend, metrics, stop)

    # -- jobs -----------------------------------------------------------------------------------

    def backup_job(self) -> Any:
        ops = self.backup_ops
        if not self._seeded:
            ops.db.catalog.fail_stale_runs()  # runs a killed process left 'running'
            for name, when in ops.last_success().items():  # the stopped-backup alarm holds across restarts
                self.metrics.last_success.labels(name).set(when)
            self._seeded = True
        transient = False
        started = time.monotonic()
        # Several daemons on one catalog back each collection up once per interval between them: a
        # collection another replica backed up within most of an interval is skipped.
        results = ops.backup_round(fresh_seconds=0.9 * self.settings.export_interval_minutes * 60)
        for result in results:
            if result.status == FAILED:
                self.metrics.failure(result.collection, "backup")
                transient = transient or result.transient
            elif result.status == COMPLETE:
                self.metrics.backup_ok(
                    result.collection,
                    seconds=result.seconds,
                    records=result.records,
                    added=result.added,
                    updated=result.updated,
                    deleted=result.deleted,
                )
        if not self.stop.is_set():
            ops.prune()
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
            if report.verdict.status == RECOVERED_INTO:
                self.metrics.forget_backups(report.collection)
            recovery = report.recovery
            if recovery is not None and recovery.action in (RESTORED, FAILED):
                self.metrics.restore(report.collection, "ok" if recovery.action == RESTORED else "failed")

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

        def due(job: Any) -> str | None:
            if job is None or job.next_run is None:
                return None
            return str(job.next_run.astimezone().astimezone(timezone.utc).isoformat(timespec="seconds"))

        return {kind: due(job) for kind, job in self._jobs.items()}

    def _http(self) -> Any:
        """The HTTP server (status page, API, /metrics, /healthz), or None when HTTP_PORT is 0."""
        s = self.settings
        if not s.http_port:
            return None
        from chroma_backup.service.api import HttpServer, create_app  # FastAPI only when serving
        from chroma_backup.service.tasks import TaskRunner

        reader = Operations(self.backend, stop=self.stop)
        tasks = TaskRunner(self.backend, self.stop)
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
        http = self._http()
        scheduler = self.scheduler
        self._jobs["backup"] = scheduler.every(_seconds(s.export_interval_minutes)).seconds.do(
            self.backup_worker.trigger
        )
        self._jobs["health"] = scheduler.every(_seconds(s.health_check_interval_minutes)).seconds.do(
            self.health_worker.trigger
        )
        if s.deep_check_interval_hours > 0:  # the first one an interval after start, not at start
            self._jobs["deep"] = scheduler.every(_seconds(s.deep_check_interval_hours * 60)).seconds.do(
                self.deep_worker.trigger
            )
        log.info(
            "daemon started replica=%s collections=%s databases=%s export_every=%gmin health_every=%gmin "
            "deep_every=%s auto_restore=%s auto_repair=%s http=%s",
            s.replica,
            ",".join(s.collections),
            ",".join(s.chroma_databases),
            s.export_interval_minutes,
            s.health_check_interval_minutes,
            f"{s.deep_check_interval_hours:g}h" if s.deep_check_interval_hours > 0 else "off",
            s.auto_restore,
            s.auto_repair,
            f"{s.http_host}:{s.http_port}" if http else "off",
        )
        self.backup_worker.trigger()
        self.health_worker.trigger()
        heartbeat = s.heartbeat_path
        os.makedirs(os.path.dirname(os.path.abspath(heartbeat)), exist_ok=True)
        while not self.stop.is_set():
            scheduler.run_pending()
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
        log.info("daemon stopped clean=%s", finished)
        return 0
