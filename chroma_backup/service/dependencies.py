"""Whether PostgreSQL and Chroma answer: a probe of its own, so the daemon says so whatever its
jobs are doing (``/healthz``, ``chroma_backup_dependency_up``)."""

from __future__ import annotations

import logging
import threading
import time

from chroma_backup.app.runtime import Backend
from chroma_backup.chroma import ChromaStore
from chroma_backup.errors import BackupError, first_line
from chroma_backup.postgres import Database
from chroma_backup.service.metrics import Metrics

log = logging.getLogger(__name__)

PROBE_SECONDS = 15.0  # PostgreSQL and Chroma are probed this often at most


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
        self._db: Database | None = None
        self._chroma: ChromaStore | None = None
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
        if self._db is None:
            self._db = Database(self.backend.settings, self.backend.embedded_dsn())
        self._db.ping()

    def _ping_chroma(self) -> None:
        try:
            if self._chroma is None:
                self._chroma = ChromaStore.connect(
                    self.backend.settings, timeout=self.backend.settings.health_timeout_seconds
                )
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
                    log.log(
                        logging.INFO if up else logging.WARNING,
                        "dependency=%s status=%s%s",
                        name,
                        "up" if up else "down",
                        f" detail={detail}" if detail else "",
                    )
            elif not up:
                self.state[name] = (up, before[1], detail)
        self.metrics.dependency_up.labels(name).set(1 if up else 0)

    def down_longer_than(self, seconds: float) -> list[str]:
        """One line for each dependency that has not answered for more than ``seconds``."""
        now = time.time()
        with self._lock:
            return [
                f"{name} unreachable for {now - since:.0f}s: {detail}"
                for name, (up, since, detail) in sorted(self.state.items())
                if not up and now - since > seconds
            ]
