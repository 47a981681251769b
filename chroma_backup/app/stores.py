"""Opening the stores from ``Settings``: one PostgreSQL connection and one Chroma store per
database, lazily, with bounded retries for transient errors; all closed together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from chroma_backup.app.retry import call_with_retry
from chroma_backup.app.runtime import Backend
from chroma_backup.chroma import ChromaStore
from chroma_backup.chroma.store import server_address
from chroma_backup.core.reading import EventSink
from chroma_backup.postgres import Database
from chroma_backup.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """A Chroma server to work on; any part left None is the configured server's."""

    host: str | None = None
    port: int | None = None
    ssl: bool | None = None

    def address(self, settings: Settings) -> str:
        return server_address(settings, self.host, self.port, self.ssl)


class Stores:
    """The stores of one thread of work (give each thread its own)."""

    def __init__(
        self,
        backend: Backend,
        *,
        stop: threading.Event | None = None,
        retry_jobs: bool = False,
        chroma_timeout: float | None = None,
        events: EventSink | None = None,
        stop_message: str = "interrupted by shutdown",
    ):
        self.backend = backend
        self.events = events  # the daemon's notifications (runs tell it what they do)
        self.stop_message = stop_message  # what a run stopped by ``stop`` says (a task: "cancelled")
        self.settings = backend.settings
        self.stop = stop
        self.retry_jobs = retry_jobs  # the daemon's rounds retry transient failures; the CLI's fail at once
        self.chroma_timeout = chroma_timeout
        self._db: Database | None = None
        self._chromas: dict[str, ChromaStore] = {}
        self._stack = ExitStack()

    def retry(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retry(
            fn,
            what=what,
            attempts=self.settings.retry_max_attempts,
            max_seconds=self.settings.retry_max_seconds,
            stop=self.stop,
        )

    def maybe_retry(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried as ``retry`` does when this is the daemon's (``retry_jobs``)."""
        return self.retry(fn, what) if self.retry_jobs else fn()

    @property
    def db(self) -> Database:
        if self._db is None:
            database = Database(self.settings, self.backend.embedded_dsn())
            self.retry(database.connect, "postgres connect")
            self._stack.callback(database.close)
            self.backend.ready(database)
            self._db = database
        return self._db

    @property
    def chroma(self) -> ChromaStore:
        """The store of the first configured database."""
        return self.chroma_for(self.settings.chroma_database)

    def chroma_for(self, database: str, *, create: bool = False) -> ChromaStore:
        """The configured server's store for ``database`` (kept until ``close``); ``create``
        creates the database (and the tenant) when the server has none by that name."""
        if database not in self._chromas:
            store = self._connect(None, None, None, database, create)
            self._stack.callback(store.close)
            self._chromas[database] = store
        return self._chromas[database]

    @contextmanager
    def chroma_at(
        self,
        host: str | None = None,
        port: int | None = None,
        ssl: bool | None = None,
        *,
        database: str | None = None,
        create: bool = False,
    ) -> Iterator[ChromaStore]:
        """The store of the server named by host/port/ssl (default: the configured one) for one
        operation: another server's is closed when the operation ends."""
        database = database or self.settings.chroma_database
        if host is None and port is None and ssl is None:
            yield self.chroma_for(database, create=create)
            return
        store = self._connect(host, port, ssl, database, create)
        try:
            yield store
        finally:
            store.close()

    def _connect(
        self, host: str | None, port: int | None, ssl: bool | None, database: str, create: bool = False
    ) -> ChromaStore:
        return self.retry(
            lambda: ChromaStore.connect(
                self.settings,
                host=host,
                port=port,
                ssl=ssl,
                timeout=self.chroma_timeout,
                database=database,
                create=create,
                pacer=self.backend.pacer,
            ),
            "chroma connect",
        )

    def close(self) -> None:
        self._stack.close()
        self._stack = ExitStack()
        self._db = None
        self._chromas.clear()
