"""Restore (import): a snapshot re-created as a collection, filled, verified as it lands, and only
then given its name (``swap`` when it replaces one)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.chroma import CollectionInfo
from chroma_backup.core.compare import Comparison, StoredLoader, _compare_batch, copy_differences
from chroma_backup.core.ports import ChromaPort, Chunk, Collection, DatabasePort
from chroma_backup.core.reading import RunOptions, _chunks, prefetch, read_batches
from chroma_backup.core.snapshots import _stored_loader, resolve_snapshot, snapshot_info
from chroma_backup.core.swap import _drop_quietly, _forget_working_copy, _rename_checked, _swap_into_place
from chroma_backup.errors import BackupError, ChromaFailure, CollectionExists, VerificationFailed, first_line
from chroma_backup.records import ContentDigest, RecordBatch
from chroma_backup.states import COMPLETE, FAILED, TRIGGER_CLI

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    snapshot_id: int
    source: str
    target: str
    records: int
    verified: bool
    seconds: float
    dry_run: bool = False
    replaced: bool = False
    target_exists: bool = False
    space: str = "l2"
    server: str = ""
    restore_id: int | None = None
    rounded: int = 0  # cosine space: records whose vectors Chroma re-rounded (see COSINE_ULP_TOLERANCE)
    replaced_kept: str | None = None  # the replaced target's name when it was kept (or not deletable)
    # Records identical is what ``verified`` says; ``exact`` adds the configuration and schema
    # equal key by key, and ``differences`` names every key that is not (the copy is kept).
    exact: bool = False
    differences: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def create_exact(chroma: ChromaPort, name: str, info: CollectionInfo) -> Collection:
    """Create ``name`` as a copy of the collection ``info`` describes, trying the server's
    creation plans in order (``ChromaPort.creation_plans`` says why that order) and keeping the
    first whose configuration and schema read back equal to the saved ones, as far as they can be
    before any record is in.  When none does, the plan with the fewest differences is used: the
    records are what make a restore usable, and the differences are reported once they are in."""
    tried: list[tuple[int, int, str]] = []
    refused: BackupError | None = None
    for order, plan in enumerate(chroma.creation_plans(info)):
        try:
            collection = chroma.create(name, info, plan)
        except ChromaFailure as error:  # this server does not take the saved form: the next plan
            log.debug("restore create=%s plan=%s refused: %s", name, plan, first_line(error))
            refused = error
            continue
        differences = copy_differences(info, chroma.describe(collection), before_records=True)
        if not differences:
            return collection
        log.debug("restore create=%s plan=%s differs: %s", name, plan, "; ".join(differences))
        tried.append((len(differences), order, plan))
        chroma.delete(name)
    if not tried:
        assert refused is not None
        raise refused
    return chroma.create(name, info, min(tried)[2])


def temporary_name(target: str, snapshot_id: int) -> str:
    """Where a restore is built before it takes the target's name (valid Chroma name)."""
    suffix = f"-restoring-{snapshot_id}"
    return target[: 512 - len(suffix)] + suffix


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore where: a snapshot of ``source`` (by id, the newest at or before ``at``, or
    the newest) into ``target`` on the store's server and database; ``overwrite`` replaces an
    existing target (the verified swap), keeping the old one aside when ``keep_replaced``;
    ``trigger`` and ``reason`` are recorded with the restore."""

    source: str
    target: str
    snapshot_id: int | None = None
    at: datetime | None = None
    overwrite: bool = False
    dry_run: bool = False
    keep_replaced: bool = False
    trigger: str = TRIGGER_CLI
    reason: str | None = None
    tenant: str | None = None  # of the source (default: the store's)
    database: str | None = None  # of the source (default: the store's)


def import_postgres_to_chroma(
    chroma: ChromaPort, db: DatabasePort, name: str, *, target: str, run: RunOptions = RunOptions(), **request: Any
) -> RestoreResult:
    """Restore a snapshot of collection ``name`` into ``target``, verified (``restore_snapshot``
    with the ``RestoreRequest`` fields as keywords)."""
    return restore_snapshot(chroma, db, RestoreRequest(source=name, target=target, **request), run)


def restore_snapshot(
    chroma: ChromaPort, db: DatabasePort, request: RestoreRequest, run: RunOptions = RunOptions()
) -> RestoreResult:
    """Restore ``request``'s snapshot, verified.

    The collection is re-created with the saved configuration/schema and metadata, filled in a
    temporary collection, verified record by record as it is written, its configuration and
    schema compared key by key once the records are in, and only then given the target's name.
    An existing target (``overwrite``) is renamed aside first, the verified copy takes its name,
    and only then is the old one deleted (kept, under the aside name, when ``keep_replaced``):
    a failure at any step leaves the old or the new collection under the target's name, and the
    error says which (``swap``).
    """
    started = time.monotonic()
    name, target = request.source, request.target
    tenant, database = request.tenant or chroma.tenant, request.database or chroma.database
    snapshot = resolve_snapshot(db, tenant, database, name, snapshot_id=request.snapshot_id, at=request.at)
    info = snapshot_info(snapshot)
    exists = chroma.exists(target)
    result = RestoreResult(
        snapshot_id=snapshot.snapshot_id,
        source=name,
        target=target,
        records=snapshot.records or 0,
        verified=False,
        seconds=0.0,
        dry_run=request.dry_run,
        target_exists=exists,
        space=info.space,
        server=chroma.address,
    )
    if exists and not request.overwrite:
        raise CollectionExists(
            f"target collection {target!r} already exists; pass --overwrite to replace it "
            "(the restore is built and verified first) or --to another name"
        )
    if request.dry_run:
        result.seconds = time.monotonic() - started
        return result

    with db.locks.collection_lock(tenant, database, name), db.locks.collection_lock(tenant, database, target):
        db.restores.fail_stale_restores()  # a dead process's restore of these is not running any more
        building = temporary_name(target, snapshot.snapshot_id)
        restore_id = db.restores.begin_restore(
            snapshot,
            target,
            chroma.address,
            request.trigger,
            request.reason,
            temporary_name=building,
            target_database=chroma.database,
        )
        result.restore_id = restore_id
        run.event(
            "restore_started",
            name,
            f"restoring snapshot {snapshot.snapshot_id} into {target} ({request.trigger})",
            snapshot_id=snapshot.snapshot_id,
            target=target,
            restore_id=restore_id,
            trigger=request.trigger,
        )
        created = False
        try:
            if chroma.exists(building):  # left behind by a killed restore: ours by its name
                chroma.delete(building)
            collection = create_exact(chroma, building, info)
            created = True
            db.restores.set_temporary_id(restore_id, collection.id)
            comparison, written = _fill_and_verify(chroma, db, snapshot, info, collection, run)
            # Judged once the records are in: the schema's per-key entries grow as they arrive.
            differences = copy_differences(info, chroma.describe(chroma.open(building)))
            if differences:
                log.warning(
                    "restore collection=%s snapshot=%d target=%s records=identical configuration=differs "
                    "differences=%s",
                    name,
                    snapshot.snapshot_id,
                    target,
                    "; ".join(differences),
                )
            if exists:
                created = False  # from here on the verified copy is never deleted
                result.replaced_kept = _swap_into_place(
                    chroma, db, restore_id, collection, target, request.keep_replaced
                )
                result.replaced = True
            else:
                _rename_checked(chroma, collection, target)
                created = False
        except BaseException as error:
            if created and _drop_quietly(chroma, building):
                _forget_working_copy(db, restore_id)
            try:
                db.restores.finish_restore(
                    restore_id,
                    status=FAILED,
                    records=None,
                    verified=False,
                    error=f"{type(error).__name__}: {first_line(error)}",
                )
            except BackupError as second:
                log.error("restore %d could not be recorded as failed: %s", restore_id, second)
            run.event(
                "restore_failed",
                name,
                f"restore of snapshot {snapshot.snapshot_id} into {target} failed: {first_line(error)}",
                snapshot_id=snapshot.snapshot_id,
                target=target,
                restore_id=restore_id,
            )
            raise
        db.restores.finish_restore(
            restore_id,
            status=COMPLETE,
            records=written,
            verified=True,
            target_collection_id=collection.id,
            differences=differences,
        )
        _forget_working_copy(db, restore_id)
        run.event(
            "restore_verified",
            name,
            f"restored snapshot {snapshot.snapshot_id} into {target}: {written} records, verified"
            + (f"; configuration differs: {'; '.join(differences)}" if differences else ""),
            snapshot_id=snapshot.snapshot_id,
            target=target,
            restore_id=restore_id,
            records=written,
            exact=not differences,
        )
    result.differences = differences
    result.exact = not differences
    result.rounded = comparison.rounded
    result.records = written
    result.verified = True
    result.seconds = time.monotonic() - started
    return result


def _fill_and_verify(
    chroma: ChromaPort,
    db: DatabasePort,
    snapshot: Snapshot,
    info: CollectionInfo,
    collection: Collection,
    run: RunOptions,
) -> tuple[Comparison, int]:
    """Write the snapshot's records into ``collection`` and verify them as they land."""
    size = chroma.batch_size(run.batch_size)
    written = 0
    # The verifier looks up stored records (cosine space) on a connection of its own: this one is
    # busy streaming the snapshot.
    lookup_db = db.sibling() if info.space == "cosine" else None
    verifier = _ReadBackVerifier(
        chroma.unpaced(),
        collection,
        _stored_loader(lookup_db, snapshot) if lookup_db else None,
        run.read_workers,
        snapshot.dimension,
    )
    try:
        for batch in prefetch(db.records.iter_snapshot_records(snapshot.collection_ref, snapshot.snapshot_id, size)):
            run.check_stop("restore")
            chroma.add(collection, batch)
            verifier.submit(batch)
            written += len(batch)
            run.advance(len(batch))
        comparison = verifier.finish()
    finally:
        verifier.close()
        if lookup_db is not None:
            lookup_db.close()
    exact = comparison.rounded == 0
    if not comparison.identical or (exact and comparison.content_digest != snapshot.digest):
        raise VerificationFailed(
            f"restored collection does not match snapshot {snapshot.snapshot_id}: "
            f"missing={comparison.missing} extra={comparison.extra} changed={comparison.changed}"
        )
    return comparison, written


class _ReadBackVerifier:
    """Verifies a restore while it is written: each added batch is read back and compared with the
    digests stored for it, in a thread of its own while the next batch is being added; ``finish``
    then counts the collection to catch records nobody wrote.  Holds no per-record state.

    A written batch is read back in one request when it fits (``readback_size``): what a read-back
    costs Chroma, whose ``add`` keeps the cores busy, is mostly per request (docs/performance.md)."""

    def __init__(
        self,
        chroma: ChromaPort,
        collection: Collection,
        load_stored: StoredLoader | None,
        read_workers: int = 1,
        dimension: int | None = None,
    ):
        self.chroma = chroma
        self.dimension = dimension
        self.read_workers = read_workers
        self.collection = collection
        self.load_stored = load_stored
        self.result = Comparison()
        self.content = ContentDigest()
        self.pending: queue.Queue[Chunk | None] = queue.Queue(maxsize=2)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="restore-verify", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        size = self.chroma.readback_size(self.dimension)  # a written batch in one request, if it fits
        while True:
            chunk = self.pending.get()
            if chunk is None:
                return
            if self.failure is not None:
                continue  # keep draining so submit() never blocks
            try:
                for part, batch in read_batches(self.chroma, self.collection, _chunks(chunk, size), self.read_workers):
                    self.result.note(
                        "missing", _compare_batch(part, batch, self.result, self.content, self.load_stored)
                    )
            except BaseException as error:  # noqa: BLE001 - handed to finish(), raised there
                self.failure = error

    def submit(self, batch: RecordBatch) -> None:
        """Read back ``batch`` (as read from PostgreSQL, with its stored digests)."""
        self.result.expected += len(batch)
        self.pending.put(
            [(record_id, digest) for record_id, digest in zip(batch.ids, batch.digests or [], strict=True)]
        )

    def close(self) -> None:
        if self.thread.is_alive():
            self.pending.put(None)
            self.thread.join()

    def finish(self) -> Comparison:
        self.close()
        if self.failure is not None:
            raise self.failure
        result = self.result
        result.live = self.chroma.count(self.collection)
        result.extra = max(0, result.live - (result.expected - result.missing))
        result.content_digest = self.content.hexdigest()
        return result
