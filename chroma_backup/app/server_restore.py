"""``restore --all``: a whole server brought back from the catalog in one run.

The plan (``core.server_restore``) is made on the caller's stores; databases the target server
lacks are created first, one by one; then ``parallel`` workers, each with its own stores (a
PostgreSQL connection and the target server's stores), restore the planned collections, largest
first, each verified as a single restore is.  A shutdown (or Ctrl-C) stops every worker at its
next batch: a collection interrupted midway leaves no half-built copy, and a re-run does what is
left.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chroma_backup.app.runtime import Backend
from chroma_backup.app.stores import Server, Stores
from chroma_backup.app.workers import run_workers
from chroma_backup.chroma import ChromaStore
from chroma_backup.core.ports import ChromaPort
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.server_restore import (
    TO_RESTORE,
    PlannedRestore,
    ServerRestoreOptions,
    Source,
    plan_server_restore,
    restore_planned,
)
from chroma_backup.core.swap import remove_leftovers
from chroma_backup.errors import BackupError, Interrupted
from chroma_backup.states import ALREADY_RESTORED, CONFLICT, FAILED, NO_SNAPSHOT, RESTORED, TRIGGER_AUTO

log = logging.getLogger(__name__)


@dataclass
class ServerRestoreResult:
    server: str
    at: datetime | None
    parallel: int
    dry_run: bool
    plan: list[PlannedRestore]
    seconds: float = 0.0
    refused: str | None = None  # why nothing was restored (the plan cannot run as asked)

    def count(self, *states: str) -> int:
        return sum(1 for item in self.plan if (item.outcome or item.action) in states)

    @property
    def records(self) -> int:
        return sum(item.records for item in self.plan if item.outcome == RESTORED)

    @property
    def ok(self) -> bool:
        """Every planned collection restored and verified exactly (or already there, or left
        alone as asked); for a dry run, a plan that would do so."""
        if self.refused:
            return False
        return self.dry_run or all(item.fine for item in self.plan)

    def summary(self) -> dict[str, int]:
        return {
            "collections": len(self.plan),
            "planned": sum(1 for item in self.plan if item.action in TO_RESTORE),
            "restored": self.count(RESTORED),
            "already_restored": self.count(ALREADY_RESTORED),
            "failed": self.count(FAILED),
            "records": self.records,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "at": self.at.isoformat() if self.at else None,
            "parallel": self.parallel,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            "summary": self.summary(),
            "collections": [item.as_json() for item in self.plan],
        }


class _PlanningView:
    """The target server as the planner reads it, through the caller's stores."""

    def __init__(self, stores: Stores, target: Server, stack: ExitStack):
        self.stores, self.target, self.stack = stores, target, stack
        self.address = target.address(stores.settings)
        self._stores: dict[str, ChromaPort] = {}
        self._databases: set[str] | None = None

    def databases(self) -> set[str]:
        if self._databases is None:
            t = self.target
            self._databases = self.stores.retry(
                lambda: ChromaStore.tenant_databases(self.stores.settings, host=t.host, port=t.port, ssl=t.ssl),
                "chroma list databases",
            )
        return self._databases

    def store(self, database: str) -> ChromaPort | None:
        if database not in self.databases():
            return None
        if database not in self._stores:
            t = self.target
            self._stores[database] = self.stack.enter_context(
                self.stores.chroma_at(t.host, t.port, t.ssl, database=database)
            )
        return self._stores[database]


def restore_server(
    backend: Backend,
    stores: Stores,
    sources: list[Source],
    *,
    options: ServerRestoreOptions,
    target: Server = Server(),
    parallel: int = 1,
    dry_run: bool = False,
    run: RunOptions = RunOptions(),
    on_plan: Callable[[ServerRestoreResult], None] | None = None,
    on_done: Callable[[PlannedRestore], None] | None = None,
) -> ServerRestoreResult:
    """Plan, then (unless ``dry_run``) restore every planned collection; ``on_plan`` sees the plan
    before any work, ``on_done`` each collection as it ends (from a worker thread)."""
    started = time.monotonic()
    tenant = stores.settings.chroma_tenant
    with ExitStack() as stack:
        view = _PlanningView(stores, target, stack)
        plan = plan_server_restore(stores.db, view, sources, tenant=tenant, options=options)
    result = ServerRestoreResult(view.address, options.at, parallel, dry_run, plan)
    if on_plan is not None:
        on_plan(result)
    result.refused = _refusal(plan)
    if dry_run or result.refused:
        result.seconds = time.monotonic() - started
        if result.refused and not dry_run:
            log.error("restore_all server=%s refused: %s", result.server, result.refused)
        return result
    work = sorted((item for item in plan if item.action in TO_RESTORE), key=lambda item: -item.records)
    _remove_leftovers(stores, target, work)
    _create_databases(stores, target, work)
    _run_workers(backend, stores, work, target, parallel, run, options, on_done)
    for item in plan:
        if item.outcome is None:
            item.outcome = item.action
    result.seconds = time.monotonic() - started
    summary = result.summary()
    log.log(
        logging.INFO if result.ok else logging.ERROR,
        "%s server=%s restored=%d already_restored=%d failed=%d collections=%d planned=%d records=%d parallel=%d "
        "seconds=%.2f",
        "recovery action=whole_server_restore" if options.trigger == TRIGGER_AUTO else "restore_all",
        result.server,
        summary["restored"],
        summary["already_restored"],
        summary["failed"],
        summary["collections"],
        summary["planned"],
        summary["records"],
        parallel,
        result.seconds,
    )
    return result


def _refusal(plan: list[PlannedRestore]) -> str | None:
    """Why the plan cannot run as asked (nothing is restored then), or None."""
    conflicts = [item.target_label for item in plan if item.action == CONFLICT]
    if conflicts:
        return (
            f"{len(conflicts)} target collection(s) already exist: {', '.join(conflicts)}; pass "
            "--skip-existing to leave them, --overwrite to replace them (each verified first), or "
            "--name-template to restore beside them"
        )
    missing = [f"{item.source_label} ({item.detail})" for item in plan if item.action == NO_SNAPSHOT]
    if missing:
        return f"no snapshot to restore for {', '.join(missing)}"
    return None


def _remove_leftovers(stores: Stores, target: Server, work: list[PlannedRestore]) -> None:
    """Remove the half-built copies that restores which did not finish (a killed run) left in
    the databases this run writes to, each recognised by the id its restore recorded."""
    for database in dict.fromkeys(item.target_database for item in work if not item.create_database):
        try:
            with stores.chroma_at(target.host, target.port, target.ssl, database=database) as chroma:
                remove_leftovers(chroma, stores.db)
        except BackupError as error:
            log.warning("could not remove the leftovers of dead restores in database=%s: %s", database, error)


def _create_databases(stores: Stores, target: Server, work: list[PlannedRestore]) -> None:
    """Create the databases the target server lacks, one at a time (before the workers race to)."""
    for database in dict.fromkeys(item.target_database for item in work if item.create_database):
        try:
            with stores.chroma_at(target.host, target.port, target.ssl, database=database, create=True):
                pass
        except BackupError as error:
            for item in work:
                if item.target_database == database:
                    item.outcome, item.error = FAILED, f"could not create database {database!r}: {error}"


def _run_workers(
    backend: Backend,
    stores: Stores,
    work: list[PlannedRestore],
    target: Server,
    parallel: int,
    run: RunOptions,
    options: ServerRestoreOptions,
    on_done: Callable[[PlannedRestore], None] | None,
) -> None:
    pending: queue.Queue[PlannedRestore] = queue.Queue()
    for item in work:
        if item.outcome is None:
            pending.put(item)
    stop = run.stop or threading.Event()
    progress_lock = threading.Lock()

    def advance(records: int) -> None:
        with progress_lock:
            run.advance(records)

    worker_run = RunOptions(
        batch_size=run.batch_size,
        read_workers=run.read_workers,
        progress=advance,
        stop=stop,
        read_page=run.read_page,
        events=run.events,
        stop_message=run.stop_message,
    )
    errors: list[BaseException] = []

    def worker() -> None:
        own = Stores(backend, stop=stop, chroma_timeout=stores.chroma_timeout)
        try:
            with ExitStack() as stack:
                opened: dict[str, ChromaPort] = {}

                def chroma(database: str) -> ChromaPort:
                    if database not in opened:
                        opened[database] = stack.enter_context(
                            own.chroma_at(target.host, target.port, target.ssl, database=database)
                        )
                    return opened[database]

                for item in _drain(pending, stop):
                    log.info(
                        "restore_all collection=%s target=%s snapshot=%s records=%d started",
                        item.source_label,
                        item.target_label,
                        item.snapshot_id,
                        item.records,
                    )
                    restore_planned(
                        chroma, own.db, item, tenant=own.settings.chroma_tenant, options=options, run=worker_run
                    )
                    _log_item(item)
                    if on_done is not None:
                        on_done(item)
        except Interrupted as error:
            errors.append(error)
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            stop.set()
            errors.append(error)
        finally:
            own.close()

    run_workers(worker, max(1, min(parallel, pending.qsize())), stop, "restore-all")
    if errors:
        raise errors[0]


def _drain(pending: queue.Queue[PlannedRestore], stop: threading.Event) -> Iterator[PlannedRestore]:
    while not stop.is_set():
        try:
            yield pending.get_nowait()
        except queue.Empty:
            return


def _log_item(item: PlannedRestore) -> None:
    if item.outcome == RESTORED and item.restore is not None:
        r = item.restore
        log.log(
            logging.INFO if r.exact else logging.WARNING,
            "restore collection=%s snapshot=%d target=%s records=%d verified=%s exact=%s seconds=%.2f%s",
            item.source_label,
            r.snapshot_id,
            item.target_label,
            r.records,
            r.verified,
            r.exact,
            r.seconds,
            f" differences={'; '.join(r.differences)}" if r.differences else "",
        )
    else:
        log.error(
            "restore collection=%s target=%s status=failed error=%s", item.source_label, item.target_label, item.error
        )
