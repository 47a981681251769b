"""The domain: backup (export), restore (import), verify and prune.

Every function takes the stores as arguments (a ``chroma.ChromaStore`` and a ``db.Database``), so
the same code serves the CLI, the daemon, the demo and the tests.  Invariants (DESIGN.md §3-§4):
commit-last snapshots, ids-first enumeration, bounded memory, exact float32, incremental record
versions, restore into a temporary collection that is verified before it takes the target's name.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from chroma import ChromaStore, CollectionInfo, index_params
from db import Chunk, Database, IdListing, Snapshot
from errors import (BackupError, ChromaFailure, ChromaUnavailable, CollectionBusy, CollectionNotFound, CollectionExists, Interrupted,
                    SnapshotNotFound, SwapFailed, VerificationFailed, first_line)
from states import COMPLETE, FAILED, TRIGGER_CLI
from records import ContentDigest, RecordBatch, batch_rows, concat_batches, decode_metadata, encode_metadata

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int], None]
EXAMPLES = 5  # example ids reported per kind of difference


def _no_progress(_: int) -> None:
    pass


def _check_stop(stop: threading.Event | None, what: str) -> None:
    if stop is not None and stop.is_set():
        raise Interrupted(f"{what} interrupted by shutdown")


# -- read-ahead ---------------------------------------------------------------------------------

class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Lets one store be read while the other is written.  An error in the producer is re-raised in
    the consumer; a consumer that stops early cancels the producer (and closes ``items``).
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    cancel = threading.Event()

    def put(item: Any) -> bool:
        while not cancel.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed over to the consumer
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        cancel.set()
        thread.join()


def _chunks(pairs: list[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, Any]]]:
    for start in range(0, len(pairs), size):
        yield pairs[start:start + size]


def read_batches(chroma: ChromaStore, collection: Any, chunks: Iterable[Chunk],
                 workers: int = 1) -> Iterator[tuple[Chunk, RecordBatch]]:
    """Each chunk of (id, expected digest) with its records as read from Chroma (ids gone
    meanwhile are absent from the batch), in order, read ahead by ``workers`` concurrent
    requests (the store's connection pool serves every thread).  The chunks are drawn in the
    caller's thread (they may come from the caller's database cursor); at most ``workers`` + 1
    batches are in memory."""

    def fetch(chunk: Chunk) -> RecordBatch:
        return read_tolerantly(chroma, collection, [record_id for record_id, _ in chunk])

    pending: deque = deque()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chroma-read") as pool:
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(fetch, chunk)))
                if len(pending) > max(1, workers):
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:  # the consumer stopped early: drop what is not running yet
                future.cancel()


def read_tolerantly(chroma: ChromaStore, collection: Any, ids: list[str]) -> RecordBatch:
    """The records of ``ids`` that exist.  While another client deletes records, a ``get`` of a
    page fails now and then for an id deleted meanwhile (``Error finding id``, measured: ~0.5%
    of pages under churn): a page that fails is read again in halves, down to single ids, and an
    id that fails alone is looked up; one that no longer exists is left out (the caller records
    it as deleted), one that still exists is damage and its error is raised.  Transient errors
    (the server gone) are never retried here."""
    try:
        return chroma.fetch(collection, ids)
    except ChromaUnavailable:
        raise
    except ChromaFailure:
        if len(ids) > 1:
            half = len(ids) // 2
            return concat_batches([read_tolerantly(chroma, collection, ids[:half]),
                                   read_tolerantly(chroma, collection, ids[half:])])
        if chroma.existing_ids(collection, ids):
            raise
        return concat_batches([])


# -- backup -------------------------------------------------------------------------------------

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


def export_collection_to_postgres(chroma: ChromaStore, db: Database, name: str, *,
                                  health: str | None = None, health_detail: str | None = None,
                                  accepted: bool = False, origin: tuple[str, int] | None = None,
                                  batch_size: int = 0, read_workers: int = 1, progress: Progress | None = None,
                                  stop: threading.Event | None = None) -> BackupResult:
    """Back up one collection as a new snapshot labelled with the ``health`` verdict it was taken
    under; only changed records are written.  ``read_workers`` clients read Chroma concurrently.

    Raises ``CollectionNotFound`` (no snapshot row is made), ``CollectionBusy``, ``Interrupted`` or
    a store error; any failure after the snapshot row exists marks that row ``failed`` and leaves
    no record change behind (the changes and the flip to ``complete`` commit together).

    In cosine space Chroma re-rounds every vector it stores (see ``COSINE_ULP_TOLERANCE``): a record
    whose only difference from its stored version is such rounding is unchanged, not updated.
    """
    progress = progress or _no_progress
    started = time.monotonic()
    with db.locks.collection_lock(chroma.tenant, chroma.database, name):
        collection = chroma.open(name)
        info = chroma.describe(collection)
        ref = db.catalog.collection_ref(chroma.tenant, chroma.database, name, create=True)
        db.catalog.fail_stale_runs(ref)
        snapshot_id = db.catalog.begin_snapshot(ref, health=health, health_detail=health_detail, accepted=accepted,
                                        origin=origin)
        step = "listing ids"
        # The stored versions are looked up on a connection of their own: this one holds the
        # snapshot's transaction (and sees the previous snapshot as it was).
        lookup_db = db.sibling() if info.space == "cosine" else None
        try:
            size = chroma.read_batch_size(batch_size, info.dimension)
            content = ContentDigest()
            added = updated = 0
            dimension: int | None = None
            with db.records.snapshot_writer(ref, snapshot_id) as writer:
                # The per-record bookkeeping (which ids were listed, their stored digests, what
                # was deleted) stays in PostgreSQL: memory does not grow with the collection.
                listing = writer.listing
                listing.load(chroma.iter_ids(collection))
                step = "copying records"
                for chunk, batch in read_batches(chroma, collection, listing.chunks(size), read_workers):
                    _check_stop(stop, "backup")
                    if len(batch) and dimension is None:
                        dimension = int(batch.embeddings.shape[1])
                    stored = dict(chunk)
                    new_rows, changed = [], {}
                    for row in batch_rows(batch):
                        record_id, digest = row[0], row[5]
                        before = stored.pop(record_id, None)
                        if before is None:
                            added += 1
                            new_rows.append(row)
                            content.add(digest)
                        elif before != digest:
                            changed[record_id] = (row, before)
                        else:
                            content.add(digest)
                    listing.forget(list(stored))  # listed, but deleted before they were read
                    rounded = set()
                    if changed and lookup_db is not None:
                        previous = lookup_db.records.iter_snapshot_records(ref, None, len(changed), list(changed))
                        rounded = _rounded_only({rid: row for rid, (row, _) in changed.items()}, previous,
                                                COSINE_ULP_TOLERANCE)
                    for record_id, (row, before) in changed.items():
                        if record_id in rounded:
                            content.add(before)  # the stored version stays current
                        else:
                            updated += 1
                            content.add(row[5])
                            new_rows.append(row)
                    writer.close_versions(rid for rid in changed if rid not in rounded)
                    writer.insert_versions(new_rows)
                    progress(len(batch))
                # Whatever the previous snapshot had and the listing no longer returns is deleted.
                deleted = listing.close_unlisted(snapshot_id, ref)
                step = "confirming changed records"
                tally = _Tally(added, updated, deleted)
                _confirm_changes(chroma, collection, writer, size, read_workers, content, tally, stop)
                added, updated, deleted = tally.added, tally.updated, tally.deleted
                step = "committing"
                writer.complete(
                    records=content.count, added=added, updated=updated, deleted=deleted,
                    dimension=dimension or info.dimension, content_digest=content.digest(),
                    chroma_collection_id=info.id, collection_metadata_json=encode_metadata(info.metadata),
                    configuration_json=info.configuration_json, schema_json=info.schema_json,
                    server_version=info.server_version,
                )
        except BaseException as error:
            if step == "committing" and _committed(db, snapshot_id):
                log.warning("backup collection=%s snapshot=%d: the commit answered %s, but the snapshot is complete",
                            name, snapshot_id, first_line(error))
            else:
                message = f"{step}: {type(error).__name__}: {first_line(error)}"
                try:
                    db.catalog.fail_snapshot(snapshot_id, message)
                except BackupError as second:
                    log.error("backup collection=%s snapshot=%d could not be marked failed: %s "
                              "(the next run will)", name, snapshot_id, second)
                raise
        finally:
            if lookup_db is not None:
                lookup_db.close()
        try:  # upkeep after the commit: a failure here does not undo a complete snapshot
            if updated or deleted:
                db.records.vacuum_records()
            elif added:
                db.records.analyze_records(added)
        except BackupError as error:
            log.warning("backup collection=%s snapshot=%d complete; the record table's upkeep failed: %s",
                        name, snapshot_id, error)
    return BackupResult(
        collection=name, status="complete", snapshot_id=snapshot_id, records=content.count, added=added,
        updated=updated, deleted=deleted, dimension=dimension or info.dimension, digest=content.hexdigest(),
        bytes_written=writer.bytes_written, seconds=time.monotonic() - started, health=health,
    )


def _committed(db: Database, snapshot_id: int) -> bool:
    """Whether a snapshot whose commit answered an error is complete after all (the answer, not
    the commit, was lost); False when that cannot be told."""
    try:
        snapshot = db.catalog.get_snapshot(snapshot_id)
    except BackupError:
        return False
    return snapshot is not None and snapshot.status == COMPLETE


# Chroma's get is not atomic against an upsert: a page read while a record is upserted can pair
# the new embedding with the old document and metadata (measured: 28 record versions in 12 of 185
# snapshots under churn).  Every version a backup writes is therefore read a second time and kept
# only when both reads agree; one that changed between them is read again, up to CONFIRM_ROUNDS
# times.
CONFIRM_ROUNDS = 3


@dataclass
class _Tally:
    added: int
    updated: int
    deleted: int


def _confirm_changes(chroma: ChromaStore, collection: Any, writer: Any, size: int, read_workers: int,
                     content: ContentDigest, tally: _Tally, stop: threading.Event | None) -> None:
    """Read every version this snapshot wrote again and keep it only when both reads agree.

    A record whose second read differs gets the second read, which is confirmed in turn (a
    record that keeps changing is taken in the newest state two reads agree on).  One that has
    not settled after CONFIRM_ROUNDS keeps its previous version (or, new in this run, waits for
    the next run); one deleted since its first read is deleted as of this snapshot.  ``content``
    and ``tally`` are corrected to match, so every record is counted once."""
    pending: list[str] | None = None  # None: every version written (streamed from PostgreSQL)
    for round_ in range(1, CONFIRM_ROUNDS + 1):
        moved: list[tuple] = []  # (later read's row, digest of the version written)
        gone: dict[str, bytes] = {}
        for chunk, batch in read_batches(chroma, collection, writer.written(size, pending), read_workers):
            _check_stop(stop, "backup")
            written = dict(chunk)
            for row in batch_rows(batch):
                digest = written.pop(row[0])
                if row[5] != digest:
                    moved.append((row, digest))
            gone.update(written)  # listed and read once, deleted before the second read
        for record_id, closed in writer.discard_versions(list(gone), reopen=False).items():
            content.remove(gone[record_id])
            if closed is None:
                tally.added -= 1
            else:
                tally.updated -= 1
                tally.deleted += 1
        if not moved:
            return
        if round_ == CONFIRM_ROUNDS:  # still changing: the newest confirmed state is the stored one
            _keep_previous(writer, moved, content, tally)
            return
        writer.replace_versions([row for row, _ in moved])
        for row, digest in moved:
            content.remove(digest)
            content.add(row[5])
        pending = [row[0] for row, _ in moved]


def _keep_previous(writer: Any, moved: list[tuple], content: ContentDigest, tally: _Tally) -> None:
    written = {row[0]: digest for row, digest in moved}
    for record_id, previous in writer.discard_versions(list(written), reopen=True).items():
        content.remove(written[record_id])
        if previous is None:
            tally.added -= 1
        else:
            tally.updated -= 1
            content.add(previous)
    log.info("backup records_unsettled=%d (changed on every read; kept as before, or left to the next run)",
             len(written))


# -- verify -------------------------------------------------------------------------------------

def _no_examples() -> dict[str, list[str]]:
    return {"missing": [], "extra": [], "changed": []}


@dataclass
class Comparison:
    """Counts of what differs, with the first ``EXAMPLES`` ids of each kind (never every id)."""

    expected: int = 0
    live: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    rounded: int = 0  # cosine space: embeddings within COSINE_ULP_TOLERANCE, all else identical
    examples: dict[str, list[str]] = field(default_factory=_no_examples)
    content_digest: str = ""

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def note(self, kind: str, record_ids: list[str], count: int | None = None) -> None:
        """Count ``count`` (default: as many as ``record_ids``) differences of ``kind``, keeping
        the first examples."""
        setattr(self, kind, getattr(self, kind) + (len(record_ids) if count is None else count))
        room = EXAMPLES - len(self.examples[kind])
        if room > 0:
            self.examples[kind].extend(record_ids[:room])


# Chroma 1.5.9 rewrites every vector it stores in a cosine collection (measured here: up to 1 unit
# in the last place per component on each write, also when the same bits are written back), so
# no client can restore a cosine collection bit for bit.  Verify allows that much there, and
# nowhere else.
COSINE_ULP_TOLERANCE = 2
StoredLoader = Callable[[list[str]], Iterable[RecordBatch]]


def _within_ulps(a: bytes, b: bytes, ulps: int) -> bool:
    x = np.frombuffer(a, dtype="<i4").astype(np.int64)
    y = np.frombuffer(b, dtype="<i4").astype(np.int64)
    return x.shape == y.shape and bool(np.all(np.abs(x - y) <= ulps))


def _rounded_only(live_rows: dict[str, tuple], stored: Iterable[RecordBatch], ulps: int) -> set[str]:
    """Ids whose live record equals the stored one except for embeddings within ``ulps``."""
    rounded = set()
    for batch in stored:
        for row in batch_rows(batch):
            live = live_rows.get(row[0])
            if live is not None and live[2:5] == row[2:5] and _within_ulps(live[1], row[1], ulps):
                rounded.add(row[0])
    return rounded


def _compare_batch(chunk: Chunk, batch: RecordBatch, result: Comparison, content: ContentDigest,
                   load_stored: StoredLoader | None) -> list[str]:
    """Check one batch of live records against the digests expected for its chunk; with
    ``load_stored`` (cosine space), digest mismatches that are only re-rounded vectors count as
    ``rounded``.  Returns the chunk's ids that the batch lacks (gone when read)."""
    expected = dict(chunk)
    suspects: dict[str, tuple] = {}
    for row in batch_rows(batch):
        record_id, digest = row[0], row[5]
        content.add(digest)
        if expected.pop(record_id, None) != digest:
            suspects[record_id] = row
    if suspects and load_stored is not None:
        rounded = _rounded_only(suspects, load_stored(list(suspects)), COSINE_ULP_TOLERANCE)
        result.rounded += len(rounded)
        result.note("changed", [rid for rid in suspects if rid not in rounded])
    else:
        result.note("changed", list(suspects))
    return list(expected)


def _known(chunks: Iterable[Chunk], result: Comparison) -> Iterator[Chunk]:
    """The listed ids that the snapshot has (the others are counted as extra, never read)."""
    for chunk in chunks:
        result.note("extra", [rid for rid, digest in chunk if digest is None])
        known = [(rid, digest) for rid, digest in chunk if digest is not None]
        if known:
            yield known


def compare_collection(chroma: ChromaStore, collection: Any, listing: IdListing, *,
                       space: str = "l2", load_stored: StoredLoader | None = None, batch_size: int = 0,
                       read_workers: int = 1, dimension: int | None = None, progress: Progress | None = None,
                       stop: threading.Event | None = None) -> Comparison:
    """Record-by-record comparison of a live collection with the stored versions ``listing``
    stands for.  The ids are listed into PostgreSQL and read back joined with their stored
    digests, so memory stays flat whatever the collection's size.

    In a cosine collection, records whose digest differs are looked up with ``load_stored`` and
    count as ``rounded`` (not ``changed``) when only their embeddings differ, by at most
    ``COSINE_ULP_TOLERANCE`` units in the last place.
    """
    progress = progress or _no_progress
    result = Comparison(live=listing.load(chroma.iter_ids(collection)), expected=listing.stored_count())
    content = ContentDigest()
    size = chroma.read_batch_size(batch_size, dimension)
    loader = load_stored if space == "cosine" else None
    for chunk, batch in read_batches(chroma, collection, _known(listing.chunks(size), result), read_workers):
        _check_stop(stop, "verify")
        listing.forget(_compare_batch(chunk, batch, result, content, loader))
        progress(len(batch))
    missing, examples = listing.unlisted(EXAMPLES)
    result.note("missing", examples, missing)
    result.content_digest = content.hexdigest()
    return result


# The restore reads back each written batch in one request (pages as large as the writes).
# Chroma's add keeps both cores of the measuring machine busy (187-193% CPU), and what a read-back
# costs it is mostly per request, not per record: at 100k, next to a raw_add of 148.7 s, restores
# took 169.9 s reading back in pages of 1,000 (3 readers), 170.1 s in pages of 2,731 and 144.9 s
# in pages of 5,461 (one per written batch); a second pair measured 169.1 s against a raw_add of
# 176.8 s.  The price is peak RSS: ~650 MB against ~420-490 MB (bounded, not growing with N).


class _ReadBackVerifier:
    """Verifies a restore while it is written: each added batch is read back and compared with the
    digests stored for it, in a thread of its own while the next batch is being added; ``finish``
    then counts the collection to catch records nobody wrote.  Holds no per-record state."""

    def __init__(self, chroma: ChromaStore, collection: Any, load_stored: StoredLoader | None,
                 read_workers: int = 1, dimension: int | None = None):
        self.chroma = chroma
        self.dimension = dimension
        self.read_workers = read_workers
        self.collection = collection
        self.load_stored = load_stored
        self.result = Comparison()
        self.content = ContentDigest()
        self.pending: queue.Queue = queue.Queue(maxsize=2)
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
                    self.result.note("missing", _compare_batch(part, batch, self.result, self.content,
                                                               self.load_stored))
            except BaseException as error:  # handed to finish()
                self.failure = error

    def submit(self, batch: RecordBatch) -> None:
        """Read back ``batch`` (as read from PostgreSQL, with its stored digests)."""
        self.result.expected += len(batch)
        self.pending.put(list(zip(batch.ids, batch.digests or [])))

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


def _index_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [f"{key}: expected {expected.get(key)!r}, got {actual.get(key)!r}"
            for key in sorted(set(expected) | set(actual)) if expected.get(key) != actual.get(key)]


def json_differences(expected: Any, actual: Any, path: str) -> list[str]:
    """Every key path where two JSON documents differ, as ``path.key: expected X, got Y``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual), key=str):
            out += json_differences(expected.get(key, _ABSENT), actual.get(key, _ABSENT), f"{path}.{key}")
        return out
    if expected == actual and type(expected) is type(actual) or (
            isinstance(expected, (int, float)) and isinstance(actual, (int, float))
            and not isinstance(expected, bool) and not isinstance(actual, bool) and expected == actual):
        return []
    return [f"{path}: expected {expected!r}, got {actual!r}"]


_ABSENT = "<absent>"


def collection_differences(expected: CollectionInfo, actual: CollectionInfo) -> list[str]:
    """What differs between a saved and a live collection: index parameters and (typed)
    collection metadata always; between two 1.x servers also every key of ``configuration_json``
    (the embedding-function entry included) and of the schema.  Legacy index keys, which only say
    where a 0.6 server keeps its index parameters, are compared as parameters."""
    differences = _index_differences(expected.index_params, actual.index_params)
    if encode_metadata(expected.user_metadata) != encode_metadata(actual.user_metadata):
        differences.append(f"collection metadata: expected {expected.user_metadata!r}, got {actual.user_metadata!r}")
    if not expected.legacy and not actual.legacy:
        if expected.configuration_json is not None:
            differences += json_differences(expected.configuration_json, actual.configuration_json or {},
                                            "configuration")
        if expected.schema_json is not None:
            differences += json_differences(expected.schema_json, actual.schema_json or {}, "schema")
    return differences


@dataclass
class VerifyResult:
    collection: str
    target: str
    snapshot_id: int
    identical: bool
    expected_records: int
    live_records: int
    missing: int
    extra: int
    changed: int
    rounded: int
    examples: dict[str, list[str]]
    space: str
    index_differences: list[str]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def snapshot_info(snapshot: Snapshot) -> CollectionInfo:
    """What a snapshot saved of its collection, in the form ``chroma.py`` re-creates from."""
    return CollectionInfo(
        id=snapshot.chroma_collection_id or "",
        name=snapshot.collection,
        metadata=decode_metadata(snapshot.collection_metadata_json),
        configuration_json=snapshot.configuration_json,
        schema_json=snapshot.schema_json,
        dimension=snapshot.dimension,
        server_version=snapshot.server_version or "",
    )


def resolve_snapshot(db: Database, tenant: str, database: str, name: str, *, snapshot_id: int | None = None,
                     at: datetime | None = None, healthy_only: bool = False) -> Snapshot:
    """The snapshot a restore or verify means: by id, newest at or before ``at``, or newest."""
    ref = db.catalog.collection_ref(tenant, database, name)
    if ref is None:
        raise SnapshotNotFound(f"no backups of collection {name!r} (tenant {tenant}, database {database})")
    if snapshot_id is not None:
        snapshot = db.catalog.get_snapshot(snapshot_id)
        if snapshot is None or snapshot.collection_ref != ref:
            raise SnapshotNotFound(f"snapshot {snapshot_id} is not a snapshot of collection {name!r}")
        if snapshot.status != "complete":
            raise SnapshotNotFound(f"snapshot {snapshot_id} is {snapshot.status}, not complete")
        return snapshot
    snapshot = db.catalog.latest_complete(ref, at=at, healthy_only=healthy_only)
    if snapshot is None:
        when = f" at or before {at.isoformat()}" if at else ""
        raise SnapshotNotFound(f"no complete snapshot of collection {name!r}{when}")
    return snapshot


def _stored_loader(db: Database, snapshot: Snapshot) -> StoredLoader:
    def load(record_ids: list[str]) -> Iterable[RecordBatch]:
        return db.records.iter_snapshot_records(snapshot.collection_ref, snapshot.snapshot_id, len(record_ids) or 1,
                                        record_ids=record_ids)
    return load


def verify_collection(chroma: ChromaStore, db: Database, name: str, *, snapshot_id: int | None = None,
                      target: str | None = None, tenant: str | None = None, database: str | None = None,
                      read_workers: int = 1, progress: Progress | None = None) -> VerifyResult:
    """Compare the live collection ``target`` (default ``name``) with a snapshot of ``name``."""
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    snapshot = resolve_snapshot(db, tenant, database, name, snapshot_id=snapshot_id)
    target = target or name
    collection = chroma.open(target)
    info = snapshot_info(snapshot)
    # Cosine lookups go through a connection of their own: this one holds the listing.
    lookup_db = db.sibling() if info.space == "cosine" else None
    try:
        with db.records.listing(snapshot.collection_ref, snapshot.snapshot_id) as listing:
            comparison = compare_collection(chroma, collection, listing, space=info.space,
                                            load_stored=_stored_loader(lookup_db, snapshot) if lookup_db else None,
                                            read_workers=read_workers, dimension=info.dimension,
                                            progress=progress)
    finally:
        if lookup_db is not None:
            lookup_db.close()
    differences = collection_differences(info, chroma.describe(collection))
    return VerifyResult(
        collection=name, target=target, snapshot_id=snapshot.snapshot_id,
        identical=comparison.identical and not differences,
        expected_records=comparison.expected, live_records=comparison.live,
        missing=comparison.missing, extra=comparison.extra, changed=comparison.changed,
        rounded=comparison.rounded, examples=comparison.examples,
        space=info.space, index_differences=differences, seconds=time.monotonic() - started,
    )


# -- restore ------------------------------------------------------------------------------------

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


def create_exact(chroma: ChromaStore, name: str, info: CollectionInfo) -> Any:
    """Create ``name`` as a copy of the collection ``info`` describes, trying the server's
    creation plans in order (``ChromaStore.creation_plans`` says why that order) and keeping the
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


def copy_differences(expected: CollectionInfo, copy: CollectionInfo, *, before_records: bool = False) -> list[str]:
    """What differs between a saved collection and a copy a restore made of it: everything
    ``collection_differences`` compares, and the index parameters the copy's server reports in
    force (a 1.x configuration; legacy ``hnsw:*`` metadata must not hide a wrong space).

    ``before_records``: the copy was just created, so a per-key schema entry it lacks is not a
    difference when it is the one a record with that metadata key creates (the defaults for its
    value types): it arrives with the records."""
    schema = expected.schema_json
    if before_records and schema and copy.schema_json is not None:
        keys = dict(schema.get("keys") or {})
        defaults = schema.get("defaults") or {}
        for key, types in list(keys.items()):
            if key not in (copy.schema_json.get("keys") or {}) and isinstance(types, dict) \
                    and all(defaults.get(kind) == entry for kind, entry in types.items()):
                del keys[key]
        expected = replace(expected, schema_json={**schema, "keys": keys})
    differences = collection_differences(expected, copy)
    if not copy.legacy:
        in_force = index_params(None, copy.configuration_json)
        differences += [d for d in _index_differences(expected.index_params, in_force) if d not in differences]
    return differences


def temporary_name(target: str, snapshot_id: int) -> str:
    """Where a restore is built before it takes the target's name (valid Chroma name)."""
    suffix = f"-restoring-{snapshot_id}"
    return target[:512 - len(suffix)] + suffix


def import_postgres_to_chroma(chroma: ChromaStore, db: Database, name: str, *, target: str,
                              snapshot_id: int | None = None, at: datetime | None = None,
                              overwrite: bool = False, dry_run: bool = False, trigger: str = TRIGGER_CLI,
                              reason: str | None = None, tenant: str | None = None,
                              database: str | None = None, batch_size: int = 0, read_workers: int = 1,
                              keep_replaced: bool = False, progress: Progress | None = None,
                              stop: threading.Event | None = None) -> RestoreResult:
    """Restore a snapshot of collection ``name`` into ``target`` on ``chroma``, verified.

    The collection is re-created with the saved configuration/schema and metadata, filled in a
    temporary collection, verified record by record (and its whole configuration and schema read
    back), and only then given the target's name.  An existing target (``overwrite``) is renamed
    aside first, the verified copy takes its name, and only then is the old one deleted (kept,
    under the aside name, when ``keep_replaced``): a failure at any step leaves the old or the new
    collection under the target's name, and the error says which.
    """
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    snapshot = resolve_snapshot(db, tenant, database, name, snapshot_id=snapshot_id, at=at)
    info = snapshot_info(snapshot)
    exists = chroma.exists(target)
    result = RestoreResult(snapshot_id=snapshot.snapshot_id, source=name, target=target,
                           records=snapshot.records or 0, verified=False, seconds=0.0, dry_run=dry_run,
                           target_exists=exists, space=info.space, server=chroma.address)
    if exists and not overwrite:
        raise CollectionExists(
            f"target collection {target!r} already exists; pass --overwrite to replace it "
            "(the restore is built and verified first) or --to another name"
        )
    if dry_run:
        result.seconds = time.monotonic() - started
        return result

    with db.locks.collection_lock(tenant, database, name), db.locks.collection_lock(tenant, database, target):
        db.restores.fail_stale_restores()  # a dead process's restore of these is not running any more
        building = temporary_name(target, snapshot.snapshot_id)
        restore_id = db.restores.begin_restore(snapshot, target, chroma.address, trigger, reason,
                                               temporary_name=building, target_database=chroma.database)
        result.restore_id = restore_id
        created = False
        try:
            if chroma.exists(building):  # left behind by a killed restore: ours by its name
                chroma.delete(building)
            collection = create_exact(chroma, building, info)
            created = True
            db.restores.set_temporary_id(restore_id, collection.id)
            comparison, written = _fill_and_verify(chroma, db, snapshot, info, collection, batch_size, read_workers,
                                                   progress, stop)
            # Judged once the records are in: the schema's per-key entries grow as they arrive.
            differences = copy_differences(info, chroma.describe(chroma.open(building)))
            if differences:
                log.warning("restore collection=%s snapshot=%d target=%s records=identical configuration=differs "
                            "differences=%s", name, snapshot.snapshot_id, target, "; ".join(differences))
            if exists:
                created = False  # from here on the verified copy is never deleted
                result.replaced_kept = _swap_into_place(chroma, db, restore_id, collection, target, keep_replaced)
                result.replaced = True
            else:
                _rename_checked(chroma, collection, target)
                created = False
            target_id = str(collection.id)
        except BaseException as error:
            if created and _drop_quietly(chroma, building):
                _forget_working_copy(db, restore_id)
            try:
                db.restores.finish_restore(restore_id, status=FAILED, records=None, verified=False,
                                  error=f"{type(error).__name__}: {first_line(error)}")
            except BackupError as second:
                log.error("restore %d could not be recorded as failed: %s", restore_id, second)
            raise
        db.restores.finish_restore(restore_id, status=COMPLETE, records=written, verified=True,
                                   target_collection_id=target_id, differences=differences)
        _forget_working_copy(db, restore_id)
    result.differences = differences
    result.exact = not differences
    result.rounded = comparison.rounded
    result.records = written
    result.verified = True
    result.seconds = time.monotonic() - started
    return result


def _fill_and_verify(chroma: ChromaStore, db: Database, snapshot: Snapshot, info: CollectionInfo, collection: Any,
                     batch_size: int, read_workers: int, progress: Progress | None,
                     stop: threading.Event | None) -> tuple[Comparison, int]:
    """Write the snapshot's records into ``collection`` and verify them as they land."""
    size = chroma.batch_size(batch_size)
    written = 0
    # The verifier looks up stored records (cosine space) on a connection of its own: this one is
    # busy streaming the snapshot.
    lookup_db = db.sibling() if info.space == "cosine" else None
    verifier = _ReadBackVerifier(chroma, collection, _stored_loader(lookup_db, snapshot) if lookup_db else None,
                                 read_workers, snapshot.dimension)
    try:
        for batch in prefetch(db.records.iter_snapshot_records(snapshot.collection_ref, snapshot.snapshot_id, size)):
            _check_stop(stop, "restore")
            chroma.add(collection, batch)
            verifier.submit(batch)
            written += len(batch)
            (progress or _no_progress)(len(batch))
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


def _drop_quietly(chroma: ChromaStore, name: str) -> bool:
    """Delete a restore's working collection; False (logged) when that fails."""
    try:
        chroma.delete(name)
        return True
    except CollectionNotFound:
        return True
    except BackupError as error:
        log.error("restore could not delete temporary collection %s: %s (removed by a later run)", name,
                  first_line(error))
        return False


def _forget_working_copy(db: Database, restore_id: int) -> None:
    """The working copy is gone or in place: nothing of this restore is left to clean up."""
    try:
        db.restores.set_temporary_id(restore_id, None)
    except BackupError as error:
        log.warning("restore %d: could not record that its working collection is gone: %s", restore_id, error)


def remove_leftovers(chroma: ChromaStore, db: Database) -> list[str]:
    """Remove the half-built working collections of restores that did not finish (a crash of
    Chroma or of the restoring process), each recognised by the collection id its restore
    recorded, never by its name alone; returns their names (each logged)."""
    removed = []
    for row in db.restores.leftovers(chroma.tenant, chroma.database, chroma.address):
        name = row["temporary_name"]
        try:
            live = chroma.open(name)
        except CollectionNotFound:
            live = None
        if live is not None and live.id == row["temporary_collection_id"]:
            chroma.delete(name)
            removed.append(name)
            log.warning("removed collection=%s: the half-built copy of restore %d, which did not finish", name,
                        row["restore_id"])
        db.restores.set_temporary_id(row["restore_id"], None)
    return removed


def _names_now(chroma: ChromaStore, names: list[str]) -> dict[str, str | None]:
    """Which collection id each name holds right now (None: no collection)."""
    now: dict[str, str | None] = {}
    for name in names:
        try:
            now[name] = chroma.open(name).id
        except CollectionNotFound:
            now[name] = None
    return now


def _rename_checked(chroma: ChromaStore, collection: Any, new_name: str) -> None:
    """Rename, and when the answer is an error, look before believing it: a rename the server
    did but whose answer was lost counts as done."""
    try:
        chroma.rename(collection, new_name)
    except BackupError as error:
        try:
            done = _names_now(chroma, [new_name])[new_name] == collection.id
        except BackupError:
            raise error from None
        if not done:
            raise
        log.warning("rename of %s to %s answered %s, but it was done", collection.name, new_name, first_line(error))


def replaced_name(target: str, restore_id: int) -> str:
    """Where an overwrite keeps the old target while the verified copy takes its name."""
    suffix = f"-replaced-{restore_id}"
    return target[:512 - len(suffix)] + suffix


def _swap_into_place(chroma: ChromaStore, db: Database, restore_id: int, copy: Any, target: str,
                     keep_replaced: bool) -> str | None:
    """Old target aside, verified copy into its name, old one deleted (or kept when
    ``keep_replaced``).  Returns the name the old collection is kept under (None once deleted).

    After any failed step the server's state is read (which of the three names holds which
    collection) before anything is decided or said: a rename whose answer was lost counts as
    done, and the error always says where the old collection and the verified copy are."""
    aside = replaced_name(target, restore_id)
    old = chroma.open(target)
    db.restores.set_restore_aside(restore_id, aside)
    try:
        chroma.rename(old, aside)
        chroma.rename(copy, target)
    except BackupError as error:
        _recover_swap(chroma, db, restore_id, old, copy, target, aside, error)
    if keep_replaced:
        log.info("restore target=%s replaced; the old collection is kept as %s", target, aside)
        return aside
    try:
        chroma.delete(aside)
    except CollectionNotFound:
        pass
    except BackupError as error:
        log.warning("restore target=%s replaced by the verified copy; the old collection could not be deleted "
                    "and remains as %s: %s", target, aside, first_line(error))
        return aside
    db.restores.set_restore_aside(restore_id, None)
    return None


def _recover_swap(chroma: ChromaStore, db: Database, restore_id: int, old: Any, copy: Any, target: str, aside: str,
                  error: BackupError) -> None:
    """Finish or undo a swap that failed at some step, from the server's state as it is now
    (read again after every step, since any answer may be lost).  Returns when the verified copy
    is in place; raises ``SwapFailed`` saying where both collections are."""
    why, tried_into, moved_back = first_line(error), False, False
    for _ in range(4):
        try:
            now = _names_now(chroma, [target, aside, copy.name])
        except BackupError as unknown:
            db.restores.set_temporary_id(restore_id, None)  # the copy may be in place: never remove it
            raise SwapFailed(
                f"the swap into {target!r} failed ({why}) and Chroma cannot say where things are now "
                f"({first_line(unknown)}): the old collection is {target!r} or {aside!r}, the verified copy "
                f"{copy.name!r} or {target!r}; check them before running the restore again") from error
        if now[target] == copy.id:
            log.warning("restore target=%s: the swap answered %s, but the verified copy is in place", target, why)
            return
        if now[target] == old.id:  # nothing moved, or the old one is back
            db.restores.set_restore_aside(restore_id, None)
            if now[copy.name] == copy.id and _drop_quietly(chroma, copy.name):
                db.restores.set_temporary_id(restore_id, None)
            if moved_back:
                raise SwapFailed(f"could not rename the verified copy to {target!r} ({why}); {target!r} is the "
                                 "old collection again") from error
            raise SwapFailed(f"could not move the existing {target!r} aside ({why}); {target!r} is unchanged "
                             "(the old collection)") from error
        if now[target] is not None or now[aside] != old.id or now[copy.name] != copy.id or moved_back:
            break
        try:  # the old one is aside and the name free: finish the swap, else move the old one back
            if not tried_into:
                tried_into = True
                chroma.rename(copy, target)
            else:
                moved_back = True
                chroma.rename(old, target)
        except BackupError as step_error:
            if not moved_back:
                why = first_line(step_error)
    db.restores.set_temporary_id(restore_id, None)  # whatever holds the copy now, it is the operator's
    if now[target] is None and now[aside] == old.id and now[copy.name] == copy.id:
        raise SwapFailed(
            f"could not rename the verified copy to {target!r} ({why}) nor move the old collection back: the old "
            f"collection is {aside!r}, the verified copy {copy.name!r}; rename one of them to {target!r}") from error
    what_is = {old.id: "the old collection", copy.id: "the verified copy", None: "nothing"}
    held = ", ".join(f"{name!r}: {what_is.get(cid, 'another collection')}" for name, cid in now.items())
    raise SwapFailed(f"the swap into {target!r} failed ({why}) and left: {held}") from error


# -- prune --------------------------------------------------------------------------------------

@dataclass
class PruneResult:
    collection: str
    snapshots_deleted: list[int]
    failed_runs_deleted: list[int]
    versions_deleted: int
    dry_run: bool
    skipped: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def prune_snapshots(db: Database, *, tenant: str, database: str, retention_days: float,
                    min_snapshots: int, dry_run: bool = False) -> list[PruneResult]:
    """Apply the retention policy to every backed-up collection of this tenant and database.

    Complete snapshots older than ``retention_days`` go, but the newest ``min_snapshots`` of each
    collection always stay; failed runs older than ``retention_days`` go too; so does every record
    version no kept snapshot sees.
    A dry run does the same work in a transaction it rolls back, so its counts are exact.
    """
    results = []
    for name in db.catalog.collection_names(tenant, database):
        try:
            with db.locks.collection_lock(tenant, database, name):
                ref = db.catalog.collection_ref(tenant, database, name)
                expired, failed = db.retention.prune_plan(ref, retention_days, min_snapshots)
                versions = db.retention.prune(ref, expired + failed, commit=not dry_run, verdicts_older_than_days=retention_days)
                if versions and not dry_run:
                    db.records.vacuum_records()
        except CollectionBusy as busy:
            results.append(PruneResult(name, [], [], 0, dry_run, skipped=str(busy)))
            continue
        results.append(PruneResult(name, expired, failed, versions, dry_run))
    return results
