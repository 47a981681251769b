"""Backup (export): one collection as a new snapshot, only changed records written.

Invariants: the catalog row is written first (``running``) and always finalised; the record
changes and the flip to ``complete`` commit together, so a crash leaves nothing visible; ids are
listed first and read by id, so a record that exists for the whole run is in the snapshot; no
per-record state is held in memory (the listing lives in PostgreSQL); embeddings are stored as
the exact float32 bytes Chroma returns; every version written is confirmed by a second read
(``confirm``).  In cosine space Chroma re-rounds every vector it stores (``COSINE_ULP_TOLERANCE``):
a record whose only difference from its stored version is such rounding is unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from chroma_backup.chroma import CollectionInfo, records_within
from chroma_backup.core.compare import COSINE_ULP_TOLERANCE, _rounded_only
from chroma_backup.core.confirm import Tally, confirm_changes
from chroma_backup.core.ports import ChromaPort, Chunk, Collection, DatabasePort, Row, SnapshotWriterPort
from chroma_backup.core.reading import RunOptions, read_batches
from chroma_backup.errors import BackupError, ChromaFailure, ChromaUnavailable, first_line
from chroma_backup.records import ContentDigest, RecordBatch, batch_rows, encode_metadata
from chroma_backup.states import COMPLETE, SHRUNK

log = logging.getLogger(__name__)

# Up to this many records, and this many bytes of answer (an application's query waits behind a
# large one), a collection is read whole in one request: its ids and content together.
SMALL_COLLECTION = 1000
SMALL_ANSWER_BYTES = 2 << 20


@dataclass(frozen=True)
class SnapshotLabel:
    """What a snapshot says about itself: the health verdict it was taken under (and its detail),
    whether an operator accepted the collection's size, and, for a collection a restore created,
    which collection and snapshot it was restored from."""

    health: str | None = None
    detail: str | None = None
    accepted: bool = False
    origin: tuple[str, int] | None = None
    # A label taken from a recent verdict rather than a check now: should the collection hold
    # fewer than ``min_records`` when it is listed, the snapshot is labelled ``shrunk`` instead
    # (``baseline`` says against what), so a large deletion never becomes an ``ok`` baseline.
    min_records: int = 0
    baseline: str = ""
    note: str | None = None  # an operator's label (backup --note)


@dataclass
class BackupResult:
    collection: str
    status: str  # complete | failed | skipped
    snapshot_id: int | None = None
    records: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    dimension: int | None = None
    digest: str | None = None
    bytes_written: int = 0
    seconds: float = 0.0
    error: str | None = None
    health: str | None = None  # the verdict the snapshot was taken under
    transient: bool = False  # failed for a reason that may pass (a server unreachable): worth a retry soon

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass
class _Copy:
    """What one run has copied so far."""

    content: ContentDigest = field(default_factory=ContentDigest)
    tally: Tally = field(default_factory=Tally)
    dimension: int | None = None
    relabel: str | None = None  # the snapshot is ``shrunk`` after all: why (``SnapshotLabel.min_records``)


def export_collection_to_postgres(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    *,
    label: SnapshotLabel = SnapshotLabel(),
    run: RunOptions = RunOptions(),
    upkeep: bool = True,
) -> BackupResult:
    """Back up one collection as a new snapshot labelled ``label``; with ``upkeep`` the record
    table is vacuumed or analyzed after it as its changes need (a round does that once, after
    all its collections: ``record_table_upkeep``).

    Raises ``CollectionNotFound`` (no snapshot row is made), ``CollectionBusy``, ``Interrupted`` or
    a store error; any failure after the snapshot row exists marks that row ``failed`` and leaves
    no record change behind.
    """
    started = time.monotonic()
    with db.locks.collection_lock(chroma.tenant, chroma.database, name):
        collection = chroma.open(name)
        info = chroma.describe(collection)
        ref = db.catalog.collection_ref(chroma.tenant, chroma.database, name, create=True)
        assert ref is not None
        db.catalog.fail_stale_runs(ref)
        snapshot_id = db.catalog.begin_snapshot(
            ref,
            health=label.health,
            health_detail=label.detail,
            accepted=label.accepted,
            origin=label.origin,
            note=label.note,
        )
        copy = _Copy()
        step = "listing ids"
        # Stored versions are looked up on a connection of their own: this one holds the
        # snapshot's transaction (and sees the previous snapshot as it was).
        lookup_db = db.sibling() if info.space == "cosine" else None
        try:
            size = chroma.read_batch_size(run.read_size, info.dimension)
            with db.records.snapshot_writer(ref, snapshot_id) as writer:
                # The per-record bookkeeping (which ids were listed, their stored digests, what
                # was deleted) stays in PostgreSQL: memory does not grow with the collection.
                whole = _read_whole_if_small(chroma, collection, info.dimension)
                if whole is not None:  # one request gave the ids and the content together
                    size = max(size, len(whole))  # and fits one request: so does its confirmation
                    listed = writer.listing.load([whole.ids])
                    pages = _from_memory(whole, writer.listing.chunks(size))
                else:
                    listed = writer.listing.load(chroma.iter_ids(collection))
                    pages = read_batches(chroma, collection, writer.listing.chunks(size), run.read_workers)
                if listed < label.min_records:
                    copy.relabel = f"{listed} records, below {label.min_records} ({label.baseline})"
                step = "copying records"
                for chunk, batch in pages:
                    run.check_stop("backup")
                    _copy_batch(chunk, batch, writer, copy, lookup_db, ref)
                    run.advance(len(batch))
                # Whatever the previous snapshot had and the listing no longer returns is deleted.
                copy.tally.deleted = writer.listing.close_unlisted(snapshot_id, ref)
                step = "confirming changed records"
                confirm_changes(chroma, collection, writer, size, run, copy.content, copy.tally)
                step = "committing"
                _complete(writer, copy, info)
        except BaseException as error:
            if step == "committing" and _committed(db, snapshot_id):
                log.warning(
                    "backup collection=%s snapshot=%d: the commit answered %s, but the snapshot is complete",
                    name,
                    snapshot_id,
                    first_line(error),
                )
            else:
                _fail(db, name, snapshot_id, f"{step}: {type(error).__name__}: {first_line(error)}")
                raise
        finally:
            if lookup_db is not None:
                lookup_db.close()
        if upkeep:
            record_table_upkeep(db, [copy.tally])
    tally = copy.tally
    return BackupResult(
        collection=name,
        status=COMPLETE,
        snapshot_id=snapshot_id,
        records=copy.content.count,
        added=tally.added,
        updated=tally.updated,
        deleted=tally.deleted,
        dimension=copy.dimension or info.dimension,
        digest=copy.content.hexdigest(),
        bytes_written=writer.bytes_written,
        seconds=time.monotonic() - started,
        health=SHRUNK if copy.relabel else label.health,
    )


def _read_whole_if_small(chroma: ChromaPort, collection: Collection, dimension: int | None) -> RecordBatch | None:
    """The whole collection from one request when it has at most SMALL_COLLECTION records within
    SMALL_ANSWER_BYTES of answer: a small collection costs one request instead of a listing and a
    page per READ_PAGE_SIZE records.  None for a larger one (it is listed first and read by id, as
    always)."""
    limit = min(SMALL_COLLECTION, records_within(SMALL_ANSWER_BYTES, dimension), chroma.batch_size())
    try:
        batch = chroma.fetch_first(collection, limit + 1)
    except ChromaUnavailable:
        raise
    except ChromaFailure:  # e.g. Error finding id for a record deleted meanwhile: the tolerant path
        return None
    return batch if len(batch) <= limit else None


def _from_memory(whole: RecordBatch, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, RecordBatch]]:
    """``read_batches`` over a collection already read whole: each chunk with its records."""
    index = {record_id: i for i, record_id in enumerate(whole.ids)}
    for chunk in chunks:
        yield chunk, whole.take([index[record_id] for record_id, _ in chunk if record_id in index])


def _copy_batch(
    chunk: Chunk, batch: RecordBatch, writer: SnapshotWriterPort, copy: _Copy, lookup_db: DatabasePort | None, ref: int
) -> None:
    """Write the records of one page that are new or changed since the current versions."""
    if len(batch) and copy.dimension is None:
        copy.dimension = int(batch.embeddings.shape[1])
    stored = dict(chunk)
    new_rows: list[Row] = []
    changed: dict[str, tuple[Row, bytes]] = {}
    for row in batch_rows(batch):
        record_id, digest = row[0], row[5]
        before = stored.pop(record_id, None)
        if before is None:
            copy.tally.added += 1
            new_rows.append(row)
            copy.content.add(digest)
        elif before != digest:
            changed[record_id] = (row, before)
        else:
            copy.content.add(digest)
    writer.listing.forget(list(stored))  # listed, but deleted before they were read
    rounded: set[str] = set()
    if changed and lookup_db is not None:
        previous = lookup_db.records.iter_snapshot_records(ref, None, len(changed), list(changed))
        rounded = _rounded_only({rid: row for rid, (row, _) in changed.items()}, previous, COSINE_ULP_TOLERANCE)
    for record_id, (row, before) in changed.items():
        if record_id in rounded:
            copy.content.add(before)  # the stored version stays current
        else:
            copy.tally.updated += 1
            copy.content.add(row[5])
            new_rows.append(row)
    writer.close_versions(rid for rid in changed if rid not in rounded)
    writer.insert_versions(new_rows)


def _complete(writer: SnapshotWriterPort, copy: _Copy, info: CollectionInfo) -> None:
    tally = copy.tally
    writer.complete(
        records=copy.content.count,
        added=tally.added,
        updated=tally.updated,
        deleted=tally.deleted,
        dimension=copy.dimension or info.dimension,
        content_digest=copy.content.digest(),
        chroma_collection_id=info.id,
        collection_metadata_json=encode_metadata(info.metadata),
        configuration_json=info.configuration_json,
        schema_json=info.schema_json,
        server_version=info.server_version,
        health=SHRUNK if copy.relabel else None,
        health_detail=copy.relabel,
    )


def _fail(db: DatabasePort, name: str, snapshot_id: int, message: str) -> None:
    try:
        db.catalog.fail_snapshot(snapshot_id, message)
    except BackupError as second:
        log.error(
            "backup collection=%s snapshot=%d could not be marked failed: %s (the next run will)",
            name,
            snapshot_id,
            second,
        )


def _committed(db: DatabasePort, snapshot_id: int) -> bool:
    """Whether a snapshot whose commit answered an error is complete after all (the answer, not
    the commit, was lost); False when that cannot be told."""
    try:
        snapshot = db.catalog.get_snapshot(snapshot_id)
    except BackupError:
        return False
    return snapshot is not None and snapshot.status == COMPLETE


def record_table_upkeep(db: DatabasePort, tallies: list[Tally]) -> None:
    """The record table's upkeep after backups committed (a failure here undoes nothing):
    VACUUM (ANALYZE) once when any of them closed versions (updates, deletes), else ANALYZE when
    what they added is worth it."""
    try:
        if any(tally.updated or tally.deleted for tally in tallies):
            db.records.vacuum_records()
        else:
            added = sum(tally.added for tally in tallies)
            if added:
                db.records.analyze_records(added)
    except BackupError as error:
        log.warning("backup: the record table's upkeep after the commit failed: %s", error)
