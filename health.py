"""Health of a collection and the recovery policy (DESIGN.md §5).

The ladder, first failure classifying: ``unreachable`` (heartbeat or connection fails: never a
reason to restore), ``missing`` (collection gone), ``corrupt`` (count/get/query raise, or the
self-recall probe gets wrong answers), ``shrunk`` (count below HEALTH_MIN_RECORD_RATIO of the
last healthy snapshot's), ``ok``.  Each step is bounded by the Chroma client's timeout (the
daemon gives its health store HEALTH_TIMEOUT_SECONDS).

Like ``export_import``, these functions take the stores as arguments.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from chroma import ChromaStore
from db import Database
from errors import (BackupError, ChromaFailure, ChromaUnavailable, CollectionBusy, CollectionNotFound, SnapshotNotFound,
                    first_line)
from export_import import (BackupResult, RestoreResult, export_collection_to_postgres, import_postgres_to_chroma,
                           resolve_snapshot, verify_collection)

log = logging.getLogger(__name__)

OK, UNREACHABLE, MISSING, CORRUPT, SHRUNK = "ok", "unreachable", "missing", "corrupt", "shrunk"
STATUSES = (OK, UNREACHABLE, MISSING, CORRUPT, SHRUNK)
RESTORABLE = (MISSING, CORRUPT, SHRUNK)
RECALL_DEPTH = 10  # the probed id must come back among this many nearest neighbours
EXACT_MATCH_DISTANCE = 1e-6


@dataclass
class HealthVerdict:
    collection: str
    status: str
    detail: str
    records: int | None
    snapshot_records: int | None
    snapshot_id: int | None
    checked_at: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == OK

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def check_collection_health(chroma: ChromaStore, db: Database, name: str, *, min_ratio: float,
                            sample_size: int) -> HealthVerdict:
    """Classify one collection; never raises for a Chroma problem (that is the verdict)."""
    started = time.monotonic()
    ref = db.collection_ref(chroma.tenant, chroma.database, name)
    snapshot = db.latest_complete(ref, healthy_only=True) if ref is not None else None
    state: dict[str, Any] = {"records": None}

    def verdict(status: str, detail: str) -> HealthVerdict:
        return HealthVerdict(
            collection=name, status=status, detail=detail, records=state["records"],
            snapshot_records=snapshot.records if snapshot else None,
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=time.monotonic() - started,
        )

    step = "heartbeat"
    try:
        chroma.heartbeat()
        step = "open"
        collection = chroma.open(name)
        step = "count"
        state["records"] = chroma.count(collection)
        if snapshot is not None and snapshot.records:
            floor = min_ratio * snapshot.records
            if state["records"] < floor:
                return verdict(SHRUNK, f"{state['records']} records, below {min_ratio:g} x "
                                       f"{snapshot.records} of snapshot {snapshot.snapshot_id}")
        if state["records"] == 0:
            return verdict(OK, "empty collection")
        step = "sample"
        sample = db.sample_record_ids(ref, sample_size) if snapshot is not None else []
        if not sample:
            sample = chroma.sample_ids(collection, sample_size)
        step = "get"
        batch = chroma.fetch(collection, sample)
        if len(batch) == 0:
            sample = chroma.sample_ids(collection, sample_size)
            batch = chroma.fetch(collection, sample)
        if len(batch) == 0:
            return verdict(CORRUPT, f"count says {state['records']} records but none can be read")
        step = "query"
        depth = min(RECALL_DEPTH, state["records"])
        found, distances = chroma.query(collection, batch.embeddings, depth)
        for record_id, neighbours, dists in zip(batch.ids, found, distances):
            if len(neighbours) < depth:
                return verdict(CORRUPT, f"self-recall query returned {len(neighbours)} of {depth} expected hits")
            # Many identical vectors can fill every hit at distance 0: then any order is right.
            if record_id not in neighbours and not (dists and dists[-1] <= EXACT_MATCH_DISTANCE):
                return verdict(CORRUPT, f"self-recall failed: querying with the stored embedding of "
                                        f"{record_id!r} did not return it")
    except CollectionNotFound:
        return verdict(MISSING, "collection does not exist")
    except ChromaUnavailable as error:
        return verdict(UNREACHABLE, f"{step}: {first_line(error)}")
    except ChromaFailure as error:
        return verdict(CORRUPT, f"{step} failed: {first_line(error)}")
    return verdict(OK, f"{len(batch)} sampled records read and found by self-recall")


@dataclass
class Recovery:
    collection: str
    action: str  # restored | already_restored | blocked | no_snapshot | recovered_itself | failed | disabled
    detail: str
    target: str | None = None
    snapshot_id: int | None = None
    restore: RestoreResult | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["restore"] = self.restore.as_json() if self.restore else None
        return data


def _already_restored(chroma: ChromaStore, db: Database, name: str, target: str, snapshot_id: int) -> bool:
    """True when ``target`` holds ``snapshot_id`` of ``name``: the same collection a verified
    restore created (cheap), or, failing that, a full verify says identical."""
    ref = db.collection_ref(chroma.tenant, chroma.database, name)
    last = db.last_complete_restore(ref, target, chroma.address)
    live = chroma.open(target)
    if last and last["snapshot_id"] == snapshot_id and last["target_collection_id"] == str(live.id) \
            and chroma.count(live) == last["records"]:
        return True
    return verify_collection(chroma, db, name, snapshot_id=snapshot_id, target=target).identical


def recover_collection(chroma: ChromaStore, db: Database, verdict: HealthVerdict, *, target: str,
                       stop: threading.Event | None = None, batch_size: int = 0) -> Recovery:
    """Apply the recovery policy to a confirmed failing collection.

    Restores the newest complete snapshot taken while the collection was healthy into ``target``;
    does nothing when ``target`` already holds it; never overwrites a different existing target.
    """
    name = verdict.collection
    try:
        snapshot = resolve_snapshot(db, chroma.tenant, chroma.database, name, healthy_only=True)
    except SnapshotNotFound as error:
        log.error("recovery collection=%s action=no_snapshot detail=%s", name, error)
        return Recovery(name, "no_snapshot", str(error), target)
    if chroma.exists(target):
        if _already_restored(chroma, db, name, target, snapshot.snapshot_id):
            log.info("recovery collection=%s action=already_restored target=%s snapshot=%d",
                     name, target, snapshot.snapshot_id)
            return Recovery(name, "already_restored", f"{target} already holds snapshot {snapshot.snapshot_id}",
                            target, snapshot.snapshot_id)
        detail = (f"target {target} exists with other content; auto-recovery never overwrites it. Restore by hand: "
                  f"python main.py restore --collection {name} --snapshot {snapshot.snapshot_id} --to OTHER_NAME "
                  f"(or --overwrite to replace {target})")
        log.error("recovery collection=%s action=blocked %s", name, detail)
        return Recovery(name, "blocked", detail, target, snapshot.snapshot_id)
    reason = f"{verdict.status}: {verdict.detail}"
    result = import_postgres_to_chroma(chroma, db, name, target=target, snapshot_id=snapshot.snapshot_id,
                                       trigger="auto", reason=reason, batch_size=batch_size, stop=stop)
    log.info("recovery collection=%s action=restored target=%s snapshot=%d records=%d verified=%s seconds=%.2f",
             name, target, snapshot.snapshot_id, result.records, result.verified, result.seconds)
    return Recovery(name, "restored", f"restored snapshot {snapshot.snapshot_id} into {target}", target,
                    snapshot.snapshot_id, result)


def check_and_recover(chroma: ChromaStore, db: Database, name: str, *, min_ratio: float, sample_size: int,
                      confirm_seconds: float, target: str, restore: bool,
                      stop: threading.Event | None = None, batch_size: int = 0) -> tuple[HealthVerdict, Recovery | None]:
    """One health check; with ``restore``, a restorable failure is re-checked after
    ``confirm_seconds`` and, if it persists, recovered."""
    verdict = check_collection_health(chroma, db, name, min_ratio=min_ratio, sample_size=sample_size)
    if not restore or verdict.status not in RESTORABLE:
        return verdict, None
    log.warning("health collection=%s status=%s detail=%s confirming_in=%.0fs", name, verdict.status,
                verdict.detail, confirm_seconds)
    if stop is not None:
        if stop.wait(confirm_seconds):
            return verdict, None
    else:
        time.sleep(confirm_seconds)
    confirmed = check_collection_health(chroma, db, name, min_ratio=min_ratio, sample_size=sample_size)
    if confirmed.status not in RESTORABLE:
        return confirmed, Recovery(name, "recovered_itself", f"re-check said {confirmed.status}", target)
    try:
        return confirmed, recover_collection(chroma, db, confirmed, target=target, stop=stop, batch_size=batch_size)
    except CollectionBusy as busy:
        return confirmed, Recovery(name, "failed", str(busy), target)
    except BackupError as error:
        log.error("recovery collection=%s action=failed error=%s", name, error)
        return confirmed, Recovery(name, "failed", str(error), target)


def guarded_backup(chroma: ChromaStore, db: Database, name: str, *, force: bool, min_ratio: float,
                   sample_size: int, batch_size: int = 0, progress: Any = None,
                   stop: threading.Event | None = None) -> BackupResult:
    """Back up ``name`` unless it fails its health check: a broken state must never become the
    newest snapshot.  ``force`` skips the check (the snapshot is then marked forced and is never
    chosen by auto-recovery)."""
    if not force:
        verdict = check_collection_health(chroma, db, name, min_ratio=min_ratio, sample_size=sample_size)
        if verdict.status == MISSING:
            raise CollectionNotFound(f"collection {name!r} does not exist")
        if verdict.status == UNREACHABLE:
            raise ChromaUnavailable(f"Chroma unreachable: {verdict.detail}")
        if verdict.status != OK:
            detail = (f"collection is {verdict.status} ({verdict.detail}); not backed up so a broken state "
                      "never becomes the newest snapshot (--force backs it up anyway)")
            return BackupResult(collection=name, status="skipped", error=detail)
    return export_collection_to_postgres(chroma, db, name, force=force, health=None if force else OK,
                                         batch_size=batch_size, progress=progress, stop=stop)
