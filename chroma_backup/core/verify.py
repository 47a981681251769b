"""Verify: a live collection compared with a snapshot, record by record and key by key."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from chroma_backup.core.compare import collection_differences, compare_collection
from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.snapshots import _stored_loader, resolve_snapshot, snapshot_info


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


def verify_collection(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    *,
    snapshot_id: int | None = None,
    target: str | None = None,
    tenant: str | None = None,
    database: str | None = None,
    run: RunOptions = RunOptions(),
) -> VerifyResult:
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
            comparison = compare_collection(
                chroma,
                collection,
                listing,
                space=info.space,
                load_stored=_stored_loader(lookup_db, snapshot) if lookup_db else None,
                dimension=info.dimension,
                run=run,
            )
    finally:
        if lookup_db is not None:
            lookup_db.close()
    differences = collection_differences(info, chroma.describe(collection))
    return VerifyResult(
        collection=name,
        target=target,
        snapshot_id=snapshot.snapshot_id,
        identical=comparison.identical and not differences,
        expected_records=comparison.expected,
        live_records=comparison.live,
        missing=comparison.missing,
        extra=comparison.extra,
        changed=comparison.changed,
        rounded=comparison.rounded,
        examples=comparison.examples,
        space=info.space,
        index_differences=differences,
        seconds=time.monotonic() - started,
    )
