"""What changed: between two snapshots, or between a snapshot and the live collection.

Each change is handed to the caller as it is found (``on_change``), in bounded memory whatever the
collection's size: between snapshots from the record versions (``changes``), against the live
collection by reading it as a backup does — its ids listed into PostgreSQL and joined with the
snapshot's digests, its records read in pages and digested, a changed record's stored version
looked up to say which parts differ, and the stored ids the listing lacks streamed as deleted.
In cosine space a vector Chroma only re-rounded (``COSINE_ULP_TOLERANCE``) is no change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chroma_backup.core.compare import COSINE_ULP_TOLERANCE, _within_ulps
from chroma_backup.core.ports import ChromaPort, Chunk, CollectionInfo, DatabasePort, Row
from chroma_backup.core.reading import RunOptions, read_batches
from chroma_backup.core.snapshots import resolve_snapshot, snapshot_info
from chroma_backup.errors import SnapshotNotFound, UsageError
from chroma_backup.records import RecordBatch, batch_rows

ADDED, UPDATED, DELETED = "added", "updated", "deleted"
PARTS = ("embedding", "document", "metadata", "uri")
LIVE = "live"


@dataclass(frozen=True)
class Change:
    record_id: str
    kind: str  # added | updated | deleted
    parts: tuple[str, ...] = ()  # of an update: which of PARTS differ

    def as_json(self) -> dict[str, Any]:
        return {"id": self.record_id, "change": self.kind, "parts": list(self.parts)}


def _no_parts() -> dict[str, int]:
    return dict.fromkeys(PARTS, 0)


@dataclass
class DiffResult:
    collection: str
    from_snapshot: int
    to: str  # a snapshot id, or "live"
    added: int = 0
    updated: int = 0
    deleted: int = 0
    parts: dict[str, int] = field(default_factory=_no_parts)  # updated records per part that differs
    unchanged: int = 0
    seconds: float = 0.0

    def count(self, change: Change) -> None:
        setattr(self, change.kind, getattr(self, change.kind) + 1)
        for part in change.parts:
            self.parts[part] += 1

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def summary(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "from": self.from_snapshot,
            "to": self.to,
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "parts": self.parts,
            "unchanged": self.unchanged,
            "seconds": round(self.seconds, 3),
        }


OnChange = Callable[[Change], None]


def _ignore(_: Change) -> None:
    pass


def diff_collection(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    *,
    from_snapshot: int | None = None,
    at: datetime | None = None,
    to: str = LIVE,
    tenant: str | None = None,
    database: str | None = None,
    on_change: OnChange = _ignore,
    run: RunOptions = RunOptions(),
) -> DiffResult:
    """The changes from a snapshot (by id, the newest at or before ``at``, or the newest) to
    ``to``: another snapshot's id, or ``live`` (the collection as it is now)."""
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    older = resolve_snapshot(db, tenant, database, name, snapshot_id=from_snapshot, at=at)
    result = DiffResult(name, older.snapshot_id, to)
    if to == LIVE:
        _diff_live(
            chroma, db, older.collection_ref, older.snapshot_id, snapshot_info(older), name, result, on_change, run
        )
    else:
        try:
            newer_id = int(to)
        except ValueError:
            raise UsageError(f"--to: expected a snapshot id or live, got {to!r}") from None
        newer = resolve_snapshot(db, tenant, database, name, snapshot_id=newer_id)
        if newer.snapshot_id == older.snapshot_id:
            raise SnapshotNotFound(f"--to {to}: the same snapshot as --from")
        for record_id, kind, parts in db.changes.between(older.collection_ref, older.snapshot_id, newer.snapshot_id):
            run.check_stop("diff")
            change = Change(record_id, kind, parts)
            result.count(change)
            on_change(change)
        result.unchanged = max(0, (newer.records or 0) - result.added - result.updated)
    result.seconds = time.monotonic() - started
    return result


def _diff_live(
    chroma: ChromaPort,
    db: DatabasePort,
    ref: int,
    snapshot_id: int,
    info: CollectionInfo,
    name: str,
    result: DiffResult,
    on_change: OnChange,
    run: RunOptions,
) -> None:
    collection = chroma.open(name)
    size = chroma.read_batch_size(run.read_size, info.dimension)
    ulps = COSINE_ULP_TOLERANCE if info.space == "cosine" else 0
    lookup = db.sibling()  # the stored versions of changed records: this connection holds the listing
    try:
        with db.records.listing(ref, snapshot_id) as listing:
            listing.load(chroma.iter_ids(collection))

            def known(chunks: Iterable[Chunk]) -> Iterable[Chunk]:
                for chunk in chunks:
                    for record_id, digest in chunk:
                        if digest is None:
                            change = Change(record_id, ADDED)
                            result.count(change)
                            on_change(change)
                    stored: Chunk = [(rid, digest) for rid, digest in chunk if digest is not None]
                    if stored:
                        yield stored

            for chunk, batch in read_batches(chroma, collection, known(listing.chunks(size)), run.read_workers):
                run.check_stop("diff")
                expected = dict(chunk)
                suspects: dict[str, Row] = {}
                for row in batch_rows(batch):
                    if expected.pop(row[0]) != row[5]:
                        suspects[row[0]] = row
                    else:
                        result.unchanged += 1
                if suspects:
                    stored = lookup.records.iter_snapshot_records(ref, snapshot_id, len(suspects), list(suspects))
                    changes = _updates(suspects, stored, ulps)
                    result.unchanged += len(suspects) - len(changes)  # re-rounded cosine vectors
                    for change in changes:
                        result.count(change)
                        on_change(change)
                listing.forget(list(expected))  # gone when read: deleted meanwhile, so not live
                run.advance(len(batch))
            for page in listing.unlisted_ids(size):
                for record_id in page:
                    change = Change(record_id, DELETED)
                    result.count(change)
                    on_change(change)
    finally:
        lookup.close()


def _updates(live: dict[str, Row], stored: Iterable[RecordBatch], ulps: int) -> list[Change]:
    """The changes of records whose live digest differs from the stored one, with the parts
    that differ (an embedding within ``ulps`` is the same)."""
    changes = []
    for batch in stored:
        for old in batch_rows(batch):
            new = live[old[0]]
            parts = []
            if not (old[1] == new[1] or (ulps and _within_ulps(old[1], new[1], ulps))):
                parts.append("embedding")
            for index, part in ((2, "document"), (3, "metadata"), (4, "uri")):
                if old[index] != new[index]:
                    parts.append(part)
            if parts:
                changes.append(Change(old[0], UPDATED, tuple(parts)))
    return changes
