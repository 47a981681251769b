"""The deep check: the whole live collection against a snapshot, record by record.

The sampled health ladder reads 20 records; a collection that lost 5% of its embeddings passes it
most of the time.  The deep scan lists every live id (into PostgreSQL, as a backup does), reads
every record with its embedding in pages, and queries the index with each record's own vector in
batched queries (the self-recall rule of ``health``: found among the hits, or no farther than the
farthest hit; a miss gets a second, wider query), and reports:

- ``unreadable``: listed, but its record cannot be read (``Error finding id``: the id and metadata
  are there, the vector is not);
- ``unindexed``: readable, but the index does not find it by its own vector;
- ``gone``: in the snapshot, not in the collection (deleted since, by the application or not: as
  far as the snapshot history can tell).

Every finding is handed to ``on_damage`` page by page as it is made (``repair`` writes those
records back), so memory stays flat.  The scan stops at ``max_seconds`` and says it is partial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.core.health import recall
from chroma_backup.core.ports import ChromaPort, Chunk, Collection, DatabasePort
from chroma_backup.core.reading import RunOptions, ordered_map, read_flagging
from chroma_backup.records import RecordBatch

UNREADABLE, UNINDEXED, GONE = "unreadable", "unindexed", "gone"
# HNSW is approximate: a healthy index does not find some records by their own vector (measured
# here: 688 of 20,000 uniform random 128-d vectors in l2, none of 20,000 x 384-d in cosine), and
# rewriting them helps only partly (688 -> 149 -> 63 over two rewrites).  So records the index
# misses are damage only when they are at least this share of the records checked (an index
# that searches half of its data misses about half); an unreadable record always is.
DEEP_MISS_RATE = 0.25
KINDS = (UNREADABLE, UNINDEXED, GONE)
EXAMPLES = 5
DEEP_PAGE = 250  # records read and queried per request

OnDamage = Callable[[str, list[str]], None]  # (kind, record ids)


def _no_examples() -> dict[str, list[str]]:
    return {kind: [] for kind in KINDS}


@dataclass
class DeepFindings:
    collection: str
    snapshot_id: int
    records: int = 0  # live ids listed
    checked: int = 0  # records examined (read, or found unreadable; readable ones queried too)
    unreadable: int = 0
    unindexed: int = 0
    gone: int = 0
    no_evidence: int = 0  # readable records whose vector proves nothing (non-finite, zero in cosine)
    complete: bool = True  # False: the time budget ran out before every record was checked
    examples: dict[str, list[str]] = field(default_factory=_no_examples)
    seconds: float = 0.0

    @property
    def index_damaged(self) -> bool:
        """The index misses more records than a healthy approximate index does."""
        return self.unindexed >= 2 and self.unindexed >= DEEP_MISS_RATE * max(1, self.checked)

    @property
    def damaged(self) -> bool:
        return bool(self.unreadable) or self.index_damaged

    def note(self, kind: str, record_ids: list[str]) -> None:
        setattr(self, kind, getattr(self, kind) + len(record_ids))
        room = EXAMPLES - len(self.examples[kind])
        if room > 0:
            self.examples[kind].extend(record_ids[:room])

    def counts(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "records": self.records,
            "checked": self.checked,
            "unreadable": self.unreadable,
            "unindexed": self.unindexed,
            "gone": self.gone,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }

    def detail(self) -> str:
        scope = f"{self.checked:,} records checked" + ("" if self.complete else f" of {self.records:,} (time budget)")
        approximate = "" if self.index_damaged or not self.unindexed else " (HNSW is approximate)"
        found = (
            f"{self.unreadable:,} unreadable, {self.unindexed:,} not found by the index{approximate}, "
            f"{self.gone:,} gone since snapshot {self.snapshot_id}"
        )
        first = next((f"; e.g. {kind} {self.examples[kind][0]!r}" for kind in KINDS if self.examples[kind]), "")
        return f"deep check: {scope}: {found}{first}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass
class _Page:
    batch: RecordBatch
    unreadable: list[str]
    unindexed: list[str]
    no_evidence: int


def deep_scan(
    chroma: ChromaPort,
    db: DatabasePort,
    collection: Collection,
    snapshot: Snapshot,
    *,
    max_seconds: float = 0.0,
    on_damage: OnDamage | None = None,
    run: RunOptions = RunOptions(),
) -> DeepFindings:
    """Scan the live ``collection`` against ``snapshot`` (module docstring); ``max_seconds`` 0
    means no budget."""
    started = time.monotonic()
    findings = DeepFindings(collection.name, snapshot.snapshot_id)
    space = chroma.describe(collection).space
    report = on_damage or (lambda kind, ids: None)

    def found(kind: str, ids: list[str]) -> None:
        if ids:
            findings.note(kind, ids)
            report(kind, ids)

    with db.records.listing(snapshot.collection_ref, snapshot.snapshot_id) as listing:
        findings.records = listing.load(chroma.iter_ids(collection))

        def work(chunk: Chunk) -> _Page:
            ids = [record_id for record_id, _ in chunk]
            batch, unreadable = read_flagging(chroma, collection, ids)
            probe, missed = recall(chroma, collection, batch, space, findings.records)
            return _Page(batch, unreadable, missed, probe.skipped)

        size = min(DEEP_PAGE, chroma.read_batch_size(run.read_size, snapshot.dimension))
        for chunk, page in ordered_map(work, listing.chunks(size), run.read_workers):
            run.check_stop("deep check")
            seen = set(page.batch.ids) | set(page.unreadable)
            listing.forget([record_id for record_id, _ in chunk if record_id not in seen])  # deleted meanwhile
            findings.checked += len(page.batch) + len(page.unreadable)
            findings.no_evidence += page.no_evidence
            found(UNREADABLE, page.unreadable)
            found(UNINDEXED, page.unindexed)
            run.advance(len(chunk))
            if max_seconds and time.monotonic() - started > max_seconds:
                findings.complete = False
                break
        for ids in listing.unlisted_ids(size):
            found(GONE, ids)
    findings.seconds = time.monotonic() - started
    return findings
