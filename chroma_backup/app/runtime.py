"""What every ``Operations`` of one process shares: the settings, and the embedded PostgreSQL
(started once, on first use, when no server is configured)."""

from __future__ import annotations

import logging
import threading

from chroma_backup.chroma.pacing import ReadPacer
from chroma_backup.postgres import Database, EmbeddedPostgres
from chroma_backup.settings import Settings

log = logging.getLogger(__name__)


class Backend:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._embedded: EmbeddedPostgres | None = None
        self._dsn: str | None = None
        self._migrated = False
        # Every reader of this process is paced together (READ_RATE_LIMIT, READ_RATE_ADAPTIVE).
        self.pacer = ReadPacer(settings.read_rate_limit, settings.read_rate_adaptive)

    def embedded_dsn(self) -> str | None:
        if not self.settings.embedded_postgres:
            return None
        with self._lock:
            if self._embedded is None:
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

    def ready(self, db: Database) -> None:
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
