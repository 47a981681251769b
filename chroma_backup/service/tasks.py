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
from chroma_backup.errors import BackupError, unexpected
from chroma_backup.states import COMPLETE, FAILED, RUNNING

log = logging.getLogger(__name__)

QUEUED = "queued"
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

    def __call__(self, n: int) -> None:
        """Progress: ``n`` more records done (a task is the progress callback of its round)."""
        self.records_done += n

    def close(self) -> None:  # progress objects are closed by the rounds
        pass

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()}


class TaskRunner:
    """A queue and ``workers`` threads; each thread owns one ``Operations``."""

    def __init__(self, backend: Backend, stop: threading.Event, workers: int = 1):
        self.backend = backend
        self.stop = stop
        self._queue: queue.Queue[tuple[Task, Callable[[Operations, Task], Any]]] = queue.Queue()
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._threads = [
            threading.Thread(target=self._work, name=f"task-worker-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, collections: list[str], run: Callable[[Operations, Task], Any]) -> Task:
        with self._lock:
            task = Task(task_id=f"{int(time.time())}-{next(self._ids)}", kind=kind, collections=collections)
            self._tasks[task.task_id] = task
            finished = [t for t in self._tasks.values() if t.state in (COMPLETE, FAILED)]
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
        ops = Operations(self.backend, stop=self.stop)
        try:
            while not self.stop.is_set():
                try:
                    task, run = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._run(ops, task, run)
        finally:
            ops.close()

    def _run(self, ops: Operations, task: Task, run: Callable[[Operations, Task], Any]) -> None:
        task.state, task.started_at = RUNNING, _now()
        try:
            task.result = run(ops, task)  # JSON-ready; a partly failed round sets task.error itself
            task.state = FAILED if task.error else COMPLETE
        except BackupError as error:
            task.state, task.error = FAILED, str(error)
        except Exception as error:  # the task's boundary: the worker goes on
            log.debug("task id=%s unexpected error", task.task_id, exc_info=True)
            task.state, task.error = FAILED, unexpected(error)
        task.finished_at = _now()
        log.info("task id=%s kind=%s state=%s error=%s", task.task_id, task.kind, task.state, task.error)
