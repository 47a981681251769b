"""PostgreSQL: the only package that imports psycopg2.

Driver errors are translated here, by class and SQLSTATE, into ``PostgresUnavailable`` (transient:
the server or the connection is gone) or ``BackupError``.  Identifiers go through
``psycopg2.sql.Identifier``; values are always parameters.  Bulk record I/O uses COPY both ways.

``Database`` is one connection (``Session``) and the parts that work through it, each with one
job; callers name the part they use:

- ``catalog``: collections and snapshots (``catalog.py``)
- ``records``: record versions, digests, COPY (``records.py``), and the id listings that backup,
  verify, diff and the deep check compare with them (``listing.py``)
- ``changes``: what changed between two snapshots (``changes.py``)
- ``restores``: the restore log and which collections restores created (``restores.py``)
- ``verdicts``: the health history (``verdicts.py``)
- ``retention``: prune plans and prunes (``retention.py``)
- ``locks``: per-collection advisory locks (``locks.py``)
- ``schema``: migrations (``schema.py``)
"""

from __future__ import annotations

from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.postgres.catalog import Catalog
from chroma_backup.postgres.changes import Changes
from chroma_backup.postgres.listing import Chunk, IdListing
from chroma_backup.postgres.locks import Locks
from chroma_backup.postgres.records import RecordStore, SnapshotWriter
from chroma_backup.postgres.restores import RestoreLog
from chroma_backup.postgres.retention import Retention
from chroma_backup.postgres.schema import Schema
from chroma_backup.postgres.session import EmbeddedPostgres, Session, Tables, connection_kwargs, translate_error
from chroma_backup.postgres.verdicts import HealthLog
from chroma_backup.settings import Settings

__all__ = [
    "Chunk",
    "Database",
    "EmbeddedPostgres",
    "IdListing",
    "Snapshot",
    "SnapshotWriter",
    "Tables",
    "connection_kwargs",
    "translate_error",
]


class Database:
    """The backup catalog and record store in one PostgreSQL database: one connection, shared by
    its parts.  One instance per thread."""

    def __init__(self, settings: Settings, embedded_dsn: str | None = None):
        self.session = Session(settings, embedded_dsn)
        self.catalog = Catalog(self.session)
        self.records = RecordStore(self.session)
        self.changes = Changes(self.session)
        self.restores = RestoreLog(self.session)
        self.verdicts = HealthLog(self.session)
        self.retention = Retention(self.session)
        self.locks = Locks(self.session)
        self.schema = Schema(self.session)

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def tables(self) -> Tables:
        return self.session.tables

    def connect(self) -> Database:
        self.session.connect()
        return self

    def sibling(self) -> Database:
        """Another instance on the same database (its own connection, for another thread)."""
        return Database(self.settings, self.session._embedded_dsn)

    def close(self) -> None:
        self.session.close()

    def ping(self) -> None:
        """One round trip (raises ``PostgresUnavailable`` when the server cannot be reached)."""
        with self.transaction("ping") as cur:
            cur.execute("SELECT 1")

    def migrate(self) -> int:
        return self.schema.migrate()

    def transaction(self, what: str, *, commit: bool = True) -> Any:
        return self.session.transaction(what, commit=commit)
