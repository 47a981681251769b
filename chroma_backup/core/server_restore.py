"""Restoring a whole server (``restore --all``): a plan first, then the work.

The plan says, for each selected collection with backups, which snapshot comes back (its newest
taken while ``ok``, else its newest complete one, said so; with ``at``, its newest complete one
finished at or before that time: one point in time for the whole server), where it goes (its own
database and name, or a name template), and what is there now:

- nothing: ``restore`` (the database is created when the server has none by that name);
- the collection a verified restore of the same content already made: ``already_restored``, so a
  re-run after a crash, a kill or a failed collection does only what is left;
- another collection: ``conflict``, unless ``overwrite`` (the verified swap) or ``skip_existing``.

Collections the catalog knows but that are not part of the server any more are ``left_out`` with
the reason (deleted and recovered into another collection; no complete snapshot at ``at``).

The work is ``restore_planned`` per collection: ``restore_snapshot`` as for one collection (built
aside, verified as it lands, then named); a collection's failure is its own outcome and never
stops the others.  Running several at once is the operations layer's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from chroma_backup.catalog import Snapshot
from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.restore import RestoreRequest, RestoreResult, restore_snapshot
from chroma_backup.core.snapshots import snapshot_info
from chroma_backup.errors import BackupError, CollectionBusy, Interrupted, unexpected
from chroma_backup.states import (
    ALREADY_RESTORED,
    CONFLICT,
    ELSEWHERE,
    FAILED,
    LEFT_OUT,
    MISSING,
    NO_SNAPSHOT,
    OVERWRITE,
    RECOVERED_INTO,
    RESTORE,
    RESTORED,
    SKIP_EXISTING,
    TRIGGER_CLI,
)

log = logging.getLogger(__name__)

TO_RESTORE = (RESTORE, OVERWRITE)  # actions that write
FINE = (RESTORED, ALREADY_RESTORED, SKIP_EXISTING, LEFT_OUT, ELSEWHERE)  # outcomes that leave nothing to do


class TargetServer(Protocol):
    """The server a whole-server restore writes to, as the planner looks at it."""

    address: str

    def databases(self) -> set[str]: ...
    def store(self, database: str) -> ChromaPort | None:
        """The store of an existing database (None when the server has no database by that name)."""
        ...


@dataclass(frozen=True)
class Source:
    """A collection of the catalog to bring back; ``explicit`` when the operator named it."""

    database: str
    collection: str
    explicit: bool = False


@dataclass(frozen=True)
class ServerRestoreOptions:
    at: datetime | None = None
    name_template: str = "{name}"
    overwrite: bool = False
    skip_existing: bool = False
    # An existing target with no records (an application that re-created its collections on an
    # empty server) is replaced, and kept aside: the daemon's whole-server recovery.
    replace_empty: bool = False
    trigger: str = TRIGGER_CLI
    reason: str | None = None


@dataclass
class PlannedRestore:
    """One collection of the plan, and after the run what became of it."""

    database: str
    collection: str
    target_database: str
    target: str
    action: str
    detail: str = ""
    snapshot_id: int | None = None
    snapshot_finished_at: datetime | None = None
    snapshot_health: str | None = None
    records: int = 0
    space: str | None = None
    create_database: bool = False
    outcome: str | None = None  # restored | failed | the action of a collection nothing was done for
    error: str | None = None
    seconds: float = 0.0
    restore: RestoreResult | None = field(default=None, repr=False)

    @property
    def source_label(self) -> str:
        return f"{self.database}/{self.collection}"

    @property
    def target_label(self) -> str:
        return f"{self.target_database}/{self.target}"

    @property
    def differences(self) -> list[str]:
        return self.restore.differences if self.restore else []

    @property
    def fine(self) -> bool:
        """Nothing left to do for it: restored exactly, already there, or left alone as asked."""
        return (self.outcome or self.action) in FINE and not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "collection": self.collection,
            "target_database": self.target_database,
            "target": self.target,
            "action": self.action,
            "detail": self.detail,
            "snapshot_id": self.snapshot_id,
            "snapshot_finished_at": self.snapshot_finished_at.isoformat() if self.snapshot_finished_at else None,
            "snapshot_health": self.snapshot_health,
            "records": self.records,
            "space": self.space,
            "create_database": self.create_database,
            "outcome": self.outcome,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "restore_id": self.restore.restore_id if self.restore else None,
            "exact": self.restore.exact if self.restore else None,
            "differences": self.differences,
        }


def expand_name(template: str, name: str) -> str:
    return template.replace("{name}", name)


def _snapshot_for(db: DatabasePort, ref: int, at: datetime | None) -> tuple[Snapshot | None, str]:
    """The snapshot a whole-server restore brings back, and what to say about the choice."""
    if at is not None:
        snap = db.catalog.latest_complete(ref, at=at)
        return snap, "" if snap else f"no complete snapshot finished at or before {at.isoformat()}"
    snap = db.catalog.latest_complete(ref, healthy_only=True)
    if snap is not None:
        return snap, ""
    snap = db.catalog.latest_complete(ref)
    if snap is None:
        return None, "no complete snapshot"
    return snap, f"no snapshot taken while ok: the newest complete one (health {snap.health})"


def _made_by_restore_of(
    db: DatabasePort, made: dict[str, Any] | None, source: Source, snapshot: Snapshot, live_id: str
) -> int | None:
    """The snapshot a verified restore brought into the live target, when that restore was of this
    source and brought the same content as ``snapshot`` (the same snapshot, or one whose content
    digest is equal: a backup taken of the restored collection since), else None."""
    if made is None or made["collection"] != source.collection or made["database"] != source.database:
        return None
    if made["collection_id"] != live_id:
        return None
    if made["snapshot_id"] == snapshot.snapshot_id:
        return int(made["snapshot_id"])
    restored = db.catalog.get_snapshot(int(made["snapshot_id"]))
    if restored is not None and restored.digest and restored.digest == snapshot.digest:
        return int(made["snapshot_id"])
    return None


class _TargetView:
    """What the planner reads of the target server, once per database."""

    def __init__(self, server: TargetServer, db: DatabasePort, tenant: str):
        self.server, self.db, self.tenant = server, db, tenant
        self.existing = server.databases()
        self._names: dict[str, set[str]] = {}
        self._made: dict[str, dict[str, dict[str, Any]]] = {}

    def names(self, database: str) -> set[str]:
        if database not in self._names:
            store = self.server.store(database) if database in self.existing else None
            self._names[database] = set(store.list_collection_names()) if store else set()
        return self._names[database]

    def made(self, database: str, name: str) -> dict[str, Any] | None:
        if database not in self._made:
            self._made[database] = self.db.restores.recovery_targets(self.tenant, database, self.server.address)
        return self._made[database].get(name)

    def live_id(self, database: str, name: str) -> str:
        return str(self._store(database).open(name).id)

    def empty(self, database: str, name: str) -> bool:
        store = self._store(database)
        return store.count(store.open(name)) == 0

    def _store(self, database: str) -> ChromaPort:
        store = self.server.store(database)
        assert store is not None, database
        return store


def plan_server_restore(
    db: DatabasePort,
    server: TargetServer,
    sources: list[Source],
    *,
    tenant: str,
    options: ServerRestoreOptions = ServerRestoreOptions(),
) -> list[PlannedRestore]:
    """The plan (module docstring), in the order of ``sources``."""
    view = _TargetView(server, db, tenant)
    plan = []
    for source in sources:
        target = expand_name(options.name_template, source.collection)
        item = PlannedRestore(source.database, source.collection, source.database, target, LEFT_OUT)
        plan.append(item)
        ref = db.catalog.collection_ref(tenant, source.database, source.collection)
        if ref is None:
            item.action, item.detail = NO_SNAPSHOT, "no backups of this collection"
            continue
        if not source.explicit and options.at is None:
            # Gone before the server was lost: recovered into another collection, and missing since.
            before = db.verdicts.latest(ref, besides=(MISSING,))
            if before is not None and before["status"] == RECOVERED_INTO:
                item.detail = f"deleted earlier and {before['detail'].removeprefix('collection does not exist; ')}"
                continue
        snapshot, why = _snapshot_for(db, ref, options.at)
        if snapshot is None:
            item.action, item.detail = (NO_SNAPSHOT if source.explicit else LEFT_OUT), why
            continue
        item.snapshot_id, item.snapshot_finished_at = snapshot.snapshot_id, snapshot.finished_at
        item.snapshot_health, item.records = snapshot.health, snapshot.records or 0
        item.space, item.detail = snapshot_info(snapshot).space, why
        item.create_database = item.target_database not in view.existing
        if item.create_database or target not in view.names(item.target_database):
            item.action = RESTORE
            continue
        restored_from = _made_by_restore_of(
            db, view.made(item.target_database, target), source, snapshot, view.live_id(item.target_database, target)
        )
        if restored_from is not None:
            item.action = ALREADY_RESTORED
            item.detail = f"{item.target_label} is the verified restore of snapshot {restored_from}"
        elif options.overwrite:
            item.action, item.detail = OVERWRITE, f"replaces the existing {item.target_label} once verified"
        elif options.replace_empty and view.empty(item.target_database, target):
            item.action = OVERWRITE
            item.detail = f"replaces the empty {item.target_label} once verified (kept aside)"
        elif options.skip_existing:
            item.action, item.detail = SKIP_EXISTING, f"{item.target_label} exists and is left alone"
        else:
            item.action, item.detail = CONFLICT, f"{item.target_label} exists"
    return plan


def restore_planned(
    chroma: Callable[[str], ChromaPort],
    db: DatabasePort,
    item: PlannedRestore,
    *,
    tenant: str,
    options: ServerRestoreOptions,
    run: RunOptions = RunOptions(),
) -> PlannedRestore:
    """Do one collection of the plan (``chroma(database)`` gives the target server's store of a
    database, creating it when needed); its failure is its outcome, an interruption goes up."""
    if item.action not in TO_RESTORE:
        item.outcome = item.action
        return item
    assert item.snapshot_id is not None
    started = time.monotonic()
    request = RestoreRequest(
        source=item.collection,
        target=item.target,
        snapshot_id=item.snapshot_id,
        overwrite=item.action == OVERWRITE,
        keep_replaced=options.replace_empty,
        trigger=options.trigger,
        reason=options.reason,
        tenant=tenant,
        database=item.database,
    )
    try:
        item.restore = restore_snapshot(chroma(item.target_database), db, request, run)
        item.outcome, item.records = RESTORED, item.restore.records
    except Interrupted:
        item.outcome, item.error = FAILED, "interrupted"
        raise
    except CollectionBusy as error:  # another process (a replica's recovery) is restoring it
        item.outcome, item.error = ELSEWHERE, str(error)
    except BackupError as error:
        item.outcome, item.error = FAILED, str(error)
    except Exception as error:  # the collection's boundary: the other collections go on
        log.debug("restore --all collection=%s unexpected error", item.source_label, exc_info=True)
        item.outcome, item.error = FAILED, unexpected(error)
    finally:
        item.seconds = time.monotonic() - started
    return item
