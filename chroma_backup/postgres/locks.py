"""Advisory locks: one backup or restore of a collection at a time, across processes and hosts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chroma_backup.errors import BackupError, CollectionBusy
from chroma_backup.postgres.session import Part, _lock_key


class Locks(Part):
    """Session-level advisory locks, re-entrant within one session."""

    @contextmanager
    def collection_lock(self, tenant: str, database: str, name: str) -> Iterator[None]:
        """Session-level advisory lock for one collection, across processes and hosts.

        Raises ``CollectionBusy`` at once when another session holds it.  Re-entrant within this
        instance (a restore over its own source takes it once).
        """
        key = (tenant, database, name)
        if key in self.session.held_locks:
            yield
            return
        args = (_lock_key(self.tables.prefix, tenant, database, name),)
        with self.transaction("taking the collection lock") as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", args)
            acquired = cur.fetchone()[0]
        if not acquired:
            raise CollectionBusy(f"collection {name!r} is busy: another backup or restore of it is running")
        self.session.held_locks.add(key)
        try:
            yield
        finally:
            self.session.held_locks.discard(key)
            if self.session.is_open:
                try:
                    with self.transaction("releasing the collection lock") as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", args)
                except BackupError:
                    pass  # the connection is gone, and the lock with it

    def is_busy(self, tenant: str, database: str, name: str) -> bool:
        """True when another session holds the collection's lock (this one does not keep it)."""
        if (tenant, database, name) in self.session.held_locks:
            return False
        args = (_lock_key(self.tables.prefix, tenant, database, name),)
        with self.transaction("probing the collection lock") as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", args)
            if not cur.fetchone()[0]:
                return True
            cur.execute("SELECT pg_advisory_unlock(%s)", args)
        return False
