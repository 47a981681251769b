"""Confirmed changes: every version a backup writes is read a second time and kept only when both
reads agree, because Chroma's ``get`` is not atomic against an ``upsert``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chroma_backup.core.ports import ChromaPort, Collection, Row, SnapshotWriterPort
from chroma_backup.core.reading import RunOptions, read_batches
from chroma_backup.records import ContentDigest, batch_rows

log = logging.getLogger(__name__)


# Chroma's get is not atomic against an upsert: a page read while a record is upserted can pair
# the new embedding with the old document and metadata (measured: 28 record versions in 12 of 185
# snapshots under churn).  Every version a backup writes is therefore read a second time and kept
# only when both reads agree; one that changed between them is read again, up to CONFIRM_ROUNDS
# times.
CONFIRM_ROUNDS = 3


@dataclass
class Tally:
    """A snapshot's change counts, each record counted once."""

    added: int = 0
    updated: int = 0
    deleted: int = 0


def confirm_changes(
    chroma: ChromaPort,
    collection: Collection,
    writer: SnapshotWriterPort,
    size: int,
    run: RunOptions,
    content: ContentDigest,
    tally: Tally,
) -> None:
    """Read every version this snapshot wrote again and keep it only when both reads agree.

    A record whose second read differs gets the second read, which is confirmed in turn (a
    record that keeps changing is taken in the newest state two reads agree on).  One that has
    not settled after CONFIRM_ROUNDS keeps its previous version (or, new in this run, waits for
    the next run); one deleted since its first read is deleted as of this snapshot.  ``content``
    and ``tally`` are corrected to match, so every record is counted once."""
    pending: list[str] | None = None  # None: every version written (streamed from PostgreSQL)
    for round_ in range(1, CONFIRM_ROUNDS + 1):
        moved: list[tuple[Row, bytes]] = []  # (later read's row, digest of the version written)
        gone: dict[str, bytes] = {}
        for chunk, batch in read_batches(chroma, collection, writer.written(size, pending), run.read_workers):
            run.check_stop("backup")
            written: dict[str, bytes] = dict(chunk)
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


def _keep_previous(
    writer: SnapshotWriterPort, moved: list[tuple[Row, bytes]], content: ContentDigest, tally: Tally
) -> None:
    written = {row[0]: digest for row, digest in moved}
    for record_id, previous in writer.discard_versions(list(written), reopen=True).items():
        content.remove(written[record_id])
        if previous is None:
            tally.added -= 1
        else:
            tally.updated -= 1
            content.add(previous)
    log.info(
        "backup records_unsettled=%d (changed on every read; kept as before, or left to the next run)", len(written)
    )
