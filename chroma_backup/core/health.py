"""Health of a collection: the ladder and the self-recall probe.

The ladder, first failure classifying: ``unreachable`` (heartbeat or connection fails: never a
reason to restore), ``missing`` (collection gone), ``corrupt`` (count/get/query raise, or the
self-recall probe gets wrong answers), ``shrunk`` (count below HEALTH_MIN_RECORD_RATIO of the
newest snapshot taken while ``ok``), ``ok``.  Each step is bounded by the Chroma client's timeout.

Self-recall respects the distance space: a sampled record's own distance is computed here from
its stored vector (l2: 0; cosine: 0 for a non-zero vector; ip: 1 - v.v), and the record passes
when its id is among the hits or the k-th hit is at least as close as the record itself.  Records
whose vector, own distance or hit distances are not finite prove nothing and are skipped.  HNSW is
approximate, so one miss is not damage: the verdict comes from the miss rate over the sample.

Like ``export_import``, these functions take the stores as arguments.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from chroma_backup.catalog import Snapshot
from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.core.reading import read_tolerantly
from chroma_backup.errors import ChromaFailure, ChromaUnavailable, CollectionNotFound, first_line
from chroma_backup.records import RecordBatch, concat_batches
from chroma_backup.states import CORRUPT, HEALTHY, MISSING, OK, RECOVERED_INTO, SHRUNK, UNREACHABLE

log = logging.getLogger(__name__)

RECALL_DEPTH = 10  # hits asked for per probed record
SECOND_CHANCE_DEPTH = 200  # hits asked for a record the first query missed
# A healthy HNSW index misses a record now and then (measured here: ~1-3% of probed records under
# churn, see README "Health states"); an index that searches half the data misses about half.
# Damage = at least MISS_RATE of the usable sample missed, and at least MIN_MISSES records.
MISS_RATE = 0.3
MIN_MISSES = 2
# Up to this many records, a probe's random sample is drawn from one listing of every id (a
# request per sampled position costs more); above it, from random positions.
LIST_ALL_BELOW = 20_000
# Relative slack when comparing Chroma's float32 distances with our float64 own distance.
DISTANCE_RTOL = {"l2": 1e-5, "cosine": 1e-4, "ip": 1e-3}


@dataclass
class Probe:
    """What the self-recall probe saw: records judged, missed, and skipped as no evidence."""

    usable: int = 0
    misses: int = 0
    skipped: int = 0
    first_miss: str | None = None

    @property
    def damaged(self) -> bool:
        if self.usable == 0:
            return False
        return self.misses >= min(MIN_MISSES, self.usable) and self.misses >= MISS_RATE * self.usable


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
    probe: Probe | None = field(default=None)

    @property
    def ok(self) -> bool:
        """Nothing for an operator to do (``ok``, or ``recovered`` into another collection)."""
        return self.status in HEALTHY

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def own_distance(vector: np.ndarray, space: str) -> float | None:
    """The distance Chroma reports between a stored vector and itself; None when the record
    proves nothing (non-finite vector or distance, zero vector in cosine space)."""
    v = vector.astype(np.float64)
    if not np.all(np.isfinite(v)):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        square = float(np.dot(v, v))
    if not math.isfinite(square):
        return None
    if space == "cosine":
        return 0.0 if square > 0 else None
    if space == "ip":
        return 1.0 - square
    return 0.0


def _slack(vector: np.ndarray, space: str) -> float:
    """How far Chroma's float32 distance may be from ours for the same pair."""
    square = float(np.dot(vector.astype(np.float64), vector.astype(np.float64)))
    scale = 1.0 if space == "cosine" else max(square, 1.0 if space == "ip" else 0.0)
    return DISTANCE_RTOL.get(space, 1e-5) * scale


def _judge(record_id: str, own: float, slack: float, hits: list[str], dists: list[Any], depth: int) -> str | None:
    """None when the record was found (or is no evidence), else why it was missed."""
    if len(hits) < depth:
        return f"querying with {record_id!r} returned {len(hits)} of {depth} hits"
    if record_id in hits or dists[-1] <= own + slack:
        return None
    return f"querying with the stored embedding of {record_id!r} did not find it"


def self_recall(chroma: ChromaPort, collection: Any, batch: RecordBatch, space: str, count: int) -> Probe:
    """Query with each sampled record's own vector and count the records the index fails to find
    (``recall``)."""
    return recall(chroma, collection, batch, space, count)[0]


def recall(chroma: ChromaPort, collection: Any, batch: RecordBatch, space: str, count: int) -> tuple[Probe, list[str]]:
    """Query with each record's own vector: what the probe saw, and the ids the index did not find.

    A record missed among the first RECALL_DEPTH hits gets a second chance with SECOND_CHANCE_DEPTH
    hits (a wider search): greedy HNSW search can get stuck among many identical vectors (zero
    vectors, say) and miss a record that is there, while a record missing from the index is not
    found however wide the search.
    """
    probe = Probe()
    missed_ids: list[str] = []
    usable = []
    for i in range(len(batch)):
        own = own_distance(batch.embeddings[i], space)
        if own is None:
            probe.skipped += 1
        else:
            usable.append((i, own, _slack(batch.embeddings[i], space)))
    depth = min(RECALL_DEPTH, count)
    if not usable or depth == 0:
        return probe, missed_ids
    found, distances = chroma.query(collection, np.stack([batch.embeddings[i] for i, _, _ in usable]), depth)
    missed = []  # (record, its hits, their distances) for each record the first query missed
    for (i, own, slack), hits, dists in zip(usable, found, distances, strict=True):
        if any(d is None or not math.isfinite(d) for d in dists):
            probe.skipped += 1  # Chroma could not compute a distance: no evidence either way
            continue
        probe.usable += 1
        if _judge(batch.ids[i], own, slack, hits, dists, depth) is not None:
            missed.append(((i, own, slack), hits, dists))
    wide = min(SECOND_CHANCE_DEPTH, count)
    if missed and wide > depth:  # the second chance: the missed records queried again, wider
        found, distances = chroma.query(collection, np.stack([batch.embeddings[i] for (i, _, _), _, _ in missed]), wide)
        missed = [(record, hits, dists) for (record, _, _), hits, dists in zip(missed, found, distances, strict=True)]
    for (i, own, slack), hits, dists in missed:
        finite = [d for d in dists if d is not None and math.isfinite(d)]
        reason = _judge(batch.ids[i], own, slack, hits, finite, max(wide, depth))
        if reason is not None:
            probe.misses += 1
            probe.first_miss = probe.first_miss or reason
            missed_ids.append(batch.ids[i])
    return probe, missed_ids


def _sample(chroma: ChromaPort, db: DatabasePort, collection: Any, ref: int | None, count: int, n: int) -> RecordBatch:
    """Up to ``n`` random records: ids from the newest backup first (they must still be readable),
    topped up with random positions in the live collection."""
    ids = db.records.sample_record_ids(ref, n) if ref is not None else []
    batch = read_tolerantly(chroma, collection, ids) if ids else concat_batches([])
    wanted = min(n, count)
    if len(batch) < wanted:
        if count <= LIST_ALL_BELOW:  # one listing request instead of one request per position
            candidates = random.sample(chroma.list_ids(collection), min(count, 2 * wanted))
        else:
            candidates = chroma.ids_at(collection, random.sample(range(count), min(count, 2 * wanted)))
        extra = [rid for rid in candidates if rid not in set(batch.ids)]
        batch = concat_batches([batch, read_tolerantly(chroma, collection, extra[: wanted - len(batch)])])
    return batch


def _recovered_into(chroma: ChromaPort, db: DatabasePort, ref: int) -> str | None:
    """Where a missing collection's data is now: the newest verified restore of it made on this
    server and database since the collection was found missing, into a collection that still
    exists (the one that restore created).  None when there is none (it is ``missing``)."""
    for restore in db.restores.restores_since_missing(ref, chroma.address, chroma.database):
        try:
            live = chroma.open(restore["target"])
        except CollectionNotFound:
            continue
        if restore["target_collection_id"] in (None, str(live.id)):
            return (
                f"collection does not exist; recovered into {restore['target']} (restore {restore['restore_id']} "
                f"of snapshot {restore['source_snapshot_id']}, {restore['finished_at']:%Y-%m-%d %H:%M:%S} UTC)"
            )
    return None


def _baseline(db: DatabasePort, tenant: str, database: str, name: str) -> tuple[int | None, Snapshot | None]:
    """The collection's catalog row and its newest snapshot taken while ``ok``."""
    ref = db.catalog.collection_ref(tenant, database, name)
    return ref, db.catalog.latest_complete(ref, healthy_only=True) if ref is not None else None


def missing_database_verdict(db: DatabasePort, tenant: str, database: str, name: str, why: str) -> HealthVerdict:
    """The verdict on a collection whose database the server does not have: ``missing``."""
    _, baseline = _baseline(db, tenant, database, name)
    return HealthVerdict(
        collection=name,
        status=MISSING,
        detail=f"collection does not exist ({why})",
        records=None,
        snapshot_records=baseline.records if baseline else None,
        snapshot_id=baseline.snapshot_id if baseline else None,
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=0.0,
    )


def check_collection_health(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    *,
    min_ratio: float,
    sample_size: int,
    tenant: str | None = None,
    database: str | None = None,
) -> HealthVerdict:
    """Classify one collection; never raises for a Chroma problem (that is the verdict).

    ``shrunk`` compares with the newest snapshot whose verdict was ``ok`` (an accepted size is such
    a snapshot); ``min_ratio`` 0 leaves the step out.
    """
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    ref, baseline = _baseline(db, tenant, database, name)
    state: dict[str, Any] = {"records": None, "probe": None}

    def verdict(status: str, detail: str) -> HealthVerdict:
        return HealthVerdict(
            collection=name,
            status=status,
            detail=detail,
            records=state["records"],
            snapshot_records=baseline.records if baseline else None,
            snapshot_id=baseline.snapshot_id if baseline else None,
            checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=time.monotonic() - started,
            probe=state["probe"],
        )

    step = "heartbeat"
    try:
        chroma.heartbeat()
        step = "open"
        collection = chroma.open(name)
        space = chroma.describe(collection).space
        step = "count"
        count = state["records"] = chroma.count(collection)
        if count == 0:
            if baseline is not None and baseline.records and min_ratio > 0:
                return verdict(SHRUNK, f"0 records, snapshot {baseline.snapshot_id} had {baseline.records}")
            return verdict(OK, "empty collection")
        step = "get"
        batch = _sample(chroma, db, collection, ref if baseline is not None else None, count, sample_size)
        if len(batch) == 0:
            return verdict(CORRUPT, f"count says {count} records but none can be read")
        step = "query"
        probe = state["probe"] = self_recall(chroma, collection, batch, space, count)
        if probe.damaged:
            return verdict(
                CORRUPT, f"self-recall failed for {probe.misses} of {probe.usable} sampled records ({probe.first_miss})"
            )
        if baseline is not None and baseline.records and count < min_ratio * baseline.records:
            return verdict(
                SHRUNK, f"{count} records, below {min_ratio:g} x {baseline.records} of snapshot {baseline.snapshot_id}"
            )
    except CollectionNotFound:
        recovered = _recovered_into(chroma, db, ref) if ref is not None else None
        if recovered is not None:
            return verdict(RECOVERED_INTO, recovered)
        return verdict(MISSING, "collection does not exist")
    except ChromaUnavailable as error:
        return verdict(UNREACHABLE, f"{step}: {first_line(error)}")
    except ChromaFailure as error:
        return verdict(CORRUPT, f"{step} failed: {first_line(error)}")
    if probe.usable == 0:
        return verdict(
            OK,
            f"{len(batch)} sampled records read; none usable for self-recall ({space} space, "
            "non-finite or zero vectors): judged by count and get alone",
        )
    misses = f", {probe.misses} missed (HNSW is approximate)" if probe.misses else ""
    return verdict(OK, f"{len(batch)} sampled records read, {probe.usable} found by self-recall{misses}")
