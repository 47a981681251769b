"""The daemon behind ``python main.py run``.

One ``schedule.Scheduler`` in the main thread only triggers jobs; each kind of job (backup,
health) runs in a worker thread of its own with its own PostgreSQL connection and Chroma client,
so a long backup never stalls health checks, and a turn that comes while the previous one of the
same kind still runs is skipped.  A job that raises is logged with its traceback and counted; the
loop goes on.  Stores are opened lazily inside jobs, so the daemon starts and keeps running while
Chroma or PostgreSQL is down and resumes by itself when they return.

After every backup round the retention policy runs (as ``prune`` would).  The rounds are the
operations layer's (``jobs.Operations``), the same the CLI runs.

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

from datetime import timezone

import schedule

from errors import BackupError, Interrupted, first_line
from jobs import Backend, Operations
from metrics import Metrics
from states import COMPLETE, FAILED, RECOVERED_INTO, RESTORED

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0
LOOP_TICK_SECONDS = 0.5
PROBE_SECONDS = 15.0  # PostgreSQL and Chroma are probed this often at most (``Dependencies``)
RETRY_FIRST_SECONDS = 15.0  # a failed backup turn is tried again after 15 s, 30 s, 60 s ...
RETRY = object()  # what a job returns when its turn failed for a reason that may pass


class Worker:
    """Runs one kind of job in its own thread; skips a turn while the previous one still runs.

    A turn that fails as a whole (the job raises, or says ``RETRY``: e.g. the start-up backup
    while PostgreSQL is still coming up) is tried again soon, with capped exponential backoff
    (RETRY_FIRST_SECONDS, doubling, at most ``retry_cap`` seconds), instead of at the next
    scheduled turn; a turn that succeeds resets it."""

    def __init__(self, name: str, job: Callable[[], Any], metrics: Metrics, retry_cap: float = 0.0):
        self.name = name
        self.job = job
        self.metrics = metrics
        self.thread: threading.Thread | None = None
        self.retry_cap = retry_cap
        self.retry_at: float | None = None
        self._delay = RETRY_FIRST_SECONDS

    def trigger(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            log.info("job=%s still running; skipping this turn", self.name)
            return
        self.retry_at = None
        self.thread = threading.Thread(target=self._run, name=f"job-{self.name}", daemon=True)
        self.thread.start()

    def retry_due(self) -> bool:
        return self.retry_at is not None and time.monotonic() >= self.retry_at

    def _run(self) -> None:
        try:
            outcome = self.job()
        except Interrupted:
            log.info("job=%s interrupted by shutdown", self.name)
            return
        except Exception:  # the job boundary: log, count, and let the loop go on
            log.exception("job=%s failed", self.name)
            self.metrics.failure("*", self.name)
            outcome = RETRY
        if outcome is RETRY and self.retry_cap > 0:
            delay = min(self._delay, self.retry_cap)
            self.retry_at = time.monotonic() + delay
            self._delay = min(self._delay * 2, self.retry_cap)
            log.warning("job=%s failed; next try in %.0fs", self.name, delay)
        else:
            self._delay = RETRY_FIRST_SECONDS

    def join(self, timeout: float) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True


class Dependencies:
    """Whether PostgreSQL and Chroma answer, probed every PROBE_SECONDS by a thread of its own
    (independent of the jobs, so a daemon started while one is down says so at once)."""

    NAMES = ("postgres", "chroma")

    def __init__(self, backend: Backend, metrics: Metrics, stop: threading.Event):
        self.backend = backend
        self.metrics = metrics
        self.stop = stop
        self.state: dict[str, tuple[bool, float, str]] = {}  # name -> (up, since (unix time), detail)
        self._lock = threading.Lock()
        self._db: Any = None
        self._chroma: Any = None
        self.thread = threading.Thread(target=self._loop, name="dependency-probe", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        every = min(PROBE_SECONDS, self.backend.settings.unreachable_seconds / 4)
        while True:
            self.probe()
            if self.stop.wait(every):
                break
        for store in (self._db, self._chroma):
            if store is not None:
                store.close()

    def probe(self) -> None:
        for name, check in (("postgres", self._ping_postgres), ("chroma", self._ping_chroma)):
            try:
                check()
                self._set(name, True, "")
            except BackupError as error:
                self._set(name, False, first_line(error))

    def _ping_postgres(self) -> None:
        from db import Database

        if self._db is None:
            self._db = Database(self.backend.settings, self.backend.embedded_dsn())
        self._db.ping()

    def _ping_chroma(self) -> None:
        from chroma import ChromaStore

        try:
            if self._chroma is None:
                self._chroma = ChromaStore.connect(self.backend.settings,
                                                   timeout=self.backend.settings.health_timeout_seconds)
            self._chroma.heartbeat()
        except BackupError:
            if self._chroma is not None:
                self._chroma.close()
                self._chroma = None
            raise

    def _set(self, name: str, up: bool, detail: str) -> None:
        with self._lock:
            before = self.state.get(name)
            if before is None or before[0] != up:
                self.state[name] = (up, time.time(), detail)
                if before is not None or not up:
                    log.log(logging.INFO if up else logging.WARNING, "dependency=%s status=%s%s", name,
                            "up" if up else "down", f" detail={detail}" if detail else "")
            elif not up:
                self.state[name] = (up, before[1], detail)
        self.metrics.dependency_up.labels(name).set(1 if up else 0)

    def down_longer_than(self, seconds: float) -> list[str]:
        """One line for each dependency that has not answered for more than ``seconds``."""
        now = time.time()
        with self._lock:
            return [f"{name} unreachable for {now - since:.0f}s: {detail}"
                    for name, (up, since, detail) in sorted(self.state.items())
                    if not up and now - since > seconds]


class Daemon:
    """Scheduling and signals; the rounds themselves are ``jobs.Operations``' (one per job kind,
    each with its own connections)."""

    def __init__(self, backend: Backend, metrics: Metrics, stop: threading.Event):
        self.settings = backend.settings
        self.metrics = metrics
        self.stop = stop
        self.backup_ops = Operations(backend, stop=stop, retry_jobs=True)
        self.health_ops = Operations(backend, stop=stop, retry_jobs=True,
                                     chroma_timeout=self.settings.health_timeout_seconds)
        self.backup_worker = Worker("backup", self.backup_job, metrics,
                                    retry_cap=min(self.settings.export_interval_minutes * 60, 900.0))
        self.health_worker = Worker("health", self.health_job, metrics)
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
        results = ops.backup_round()
        for result in results:
            if result.status == FAILED:
                self.metrics.failure(result.collection, "backup")
                transient = transient or result.transient
            elif result.status == COMPLETE:
                self.metrics.backup_ok(result.collection, seconds=result.seconds, records=result.records,
                                       added=result.added, updated=result.updated, deleted=result.deleted)
        if not self.stop.is_set():
            ops.prune()
        failed = sum(1 for r in results if r.status == FAILED)
        log.info("job=backup done collections=%d failed=%d seconds=%.1f", len(results), failed,
                 time.monotonic() - started)
        return RETRY if transient else None

    def health_job(self) -> None:
        for report in self.health_ops.health_round(restore=self.settings.auto_restore):
            self.metrics.health_status(report.collection, report.verdict.status)
            if report.verdict.status == RECOVERED_INTO:
                self.metrics.forget_backups(report.collection)
            recovery = report.recovery
            if recovery is not None and recovery.action in (RESTORED, FAILED):
                self.metrics.restore(report.collection, "ok" if recovery.action == RESTORED else "failed")

    # -- loop -----------------------------------------------------------------------------------

    def schedule_info(self) -> dict[str, str | None]:
        """When the next backup and health check are due (UTC, ISO 8601)."""
        def due(job: Any) -> str | None:
            if job is None or job.next_run is None:
                return None
            return job.next_run.astimezone().astimezone(timezone.utc).isoformat(timespec="seconds")
        return {kind: due(job) for kind, job in self._jobs.items()}

    def _http(self) -> Any:
        """The HTTP server (status page, API, /metrics, /healthz), or None when HTTP_PORT is 0."""
        s = self.settings
        if not s.http_port:
            return None
        from api import HttpServer, create_app
        from tasks import TaskRunner

        reader = Operations(self.backend, stop=self.stop)
        tasks = TaskRunner(self.backend, self.stop)
        server = HttpServer(create_app(s, reader, tasks, self.metrics, self.schedule_info,
                                       self.dependencies.down_longer_than), s.http_host, s.http_port)
        server.start()
        return server

    def run(self) -> int:
        s = self.settings
        self.dependencies.start()
        http = self._http()
        scheduler = self.scheduler
        self._jobs["backup"] = scheduler.every(s.export_interval_minutes * 60).seconds.do(self.backup_worker.trigger)
        self._jobs["health"] = scheduler.every(s.health_check_interval_minutes * 60).seconds.do(
            self.health_worker.trigger)
        log.info("daemon started collections=%s databases=%s export_every=%gmin health_every=%gmin auto_restore=%s "
                 "http=%s", ",".join(s.collections), ",".join(s.chroma_databases), s.export_interval_minutes,
                 s.health_check_interval_minutes, s.auto_restore,
                 f"{s.http_host}:{s.http_port}" if http else "off")
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
        finished = all(w.join(max(0.0, deadline - time.monotonic())) for w in (self.backup_worker, self.health_worker))
        if http is not None:
            http.stop()
        if finished:
            self.backup_ops.close()
            self.health_ops.close()
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
