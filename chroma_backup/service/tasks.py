"""Work asked for over HTTP: backups and restores run as tasks on the daemon's own worker threads,
each with its own stores (``app.Operations``), under the same per-collection locks as everything
else.  A task is queued, runs, and ends ``complete`` or ``failed`` with the result object the
CLI's ``--json`` prints."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.core.reading import EventSink
from chroma_backup.errors import BackupError, Interrupted, unexpected
from chroma_backup.states import COMPLETE, FAILED, RUNNING

log = logging.getLogger(__name__)

QUEUED = "queued"
CANCELLED = "cancelled"
KEEP_FINISHED = 200  # finished tasks remembered for GET /api/v1/tasks/{id}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Task:
    task_id: str
    kind: str  # backup | restore | server_restore
    collections: list[str]
    state: str = QUEUED
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    records_done: int = 0
    records_total: int | None = None
    result: Any = None
    error: str | None = None
    # Set to stop the task at its next batch: cancelled over the API, or the daemon stopping.
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __call__(self, n: int) -> None:
        """Progress: ``n`` more records done (a task is the progress callback of its round)."""
        self.records_done += n

    def close(self) -> None:  # progress objects are closed by the rounds
        pass

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "stop"}


class TaskRunner:
    """A queue and ``workers`` threads; each thread owns one ``Operations``."""

    def __init__(self, backend: Backend, stop: threading.Event, workers: int = 1, events: EventSink | None = None):
        self.backend = backend
        self.stop = stop
        self.events = events
        self._queue: queue.Queue[tuple[Task, Callable[[Operations, Task], Any]]] = queue.Queue()
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._threads = [
            threading.Thread(target=self._work, name=f"task-worker-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        threading.Thread(target=self._stop_all_on_shutdown, name="task-shutdown", daemon=True).start()

    def _stop_all_on_shutdown(self) -> None:
        self.stop.wait()
        with self._lock:
            for task in self._tasks.values():
                task.stop.set()

    def cancel(self, task_id: str) -> Task | None:
        """Cancel a task: a queued one never runs, a running one stops at its next batch (a backup
        leaves no snapshot, a restore no half-built collection).  None when there is no such task;
        a finished task is returned as it is."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.state in (COMPLETE, FAILED, CANCELLED):
                return task
            task.stop.set()
            if task.state == QUEUED:
                task.state, task.finished_at, task.error = CANCELLED, _now(), "cancelled before it ran"
        log.info("task id=%s kind=%s cancel requested state=%s", task.task_id, task.kind, task.state)
        return task

    def submit(self, kind: str, collections: list[str], run: Callable[[Operations, Task], Any]) -> Task:
        with self._lock:
            task = Task(task_id=f"{int(time.time())}-{next(self._ids)}", kind=kind, collections=collections)
            self._tasks[task.task_id] = task
            finished = [t for t in self._tasks.values() if t.state in (COMPLETE, FAILED, CANCELLED)]
            for old in finished[:-KEEP_FINISHED]:
                del self._tasks[old.task_id]
        self._queue.put((task, run))
        log.info("task id=%s kind=%s collections=%s state=queued", task.task_id, kind, ",".join(collections) or "*")
        return task

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def active(self, collection: str) -> bool:
        """A queued or running task names this collection."""
        with self._lock:
            return any(collection in t.collections and t.state in (QUEUED, RUNNING) for t in self._tasks.values())

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                task, run = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                if task.state != QUEUED:  # cancelled while it waited
                    continue
                task.state, task.started_at = RUNNING, _now()
            # Each task has stores of its own, stopped by its own event (cancel, or shutdown).
            ops = Operations(self.backend, stop=task.stop, events=self.events, stop_message="cancelled")
            try:
                self._run(ops, task, run)
            finally:
                ops.close()

    def _run(self, ops: Operations, task: Task, run: Callable[[Operations, Task], Any]) -> None:
        try:
            task.result = run(ops, task)  # JSON-ready; a partly failed round sets task.error itself
            task.state = FAILED if task.error else COMPLETE
        except Interrupted as error:
            task.state, task.error = (CANCELLED if not self.stop.is_set() else FAILED), str(error)
        except BackupError as error:
            task.state, task.error = FAILED, str(error)
        except Exception as error:  # the task's boundary: the worker goes on
            log.debug("task id=%s unexpected error", task.task_id, exc_info=True)
            task.state, task.error = FAILED, unexpected(error)
        task.finished_at = _now()
        log.info("task id=%s kind=%s state=%s error=%s", task.task_id, task.kind, task.state, task.error)
