"""Writing records of a snapshot back into a live collection, in place (repair, record-level
restore): each page written with ``upsert`` (which re-indexes a record the index had lost), read
back and compared with what was written, and the run's row in the restores table finished."""

from __future__ import annotations

import logging
from typing import Any

from chroma_backup.core.compare import _within_ulps
from chroma_backup.core.ports import ChromaPort, Collection, DatabasePort, Row
from chroma_backup.core.reading import read_flagging
from chroma_backup.errors import BackupError, VerificationFailed
from chroma_backup.records import RecordBatch, batch_rows
from chroma_backup.states import COMPLETE

log = logging.getLogger(__name__)


def same_content(live: Row, stored: Row, ulps: int) -> bool:
    """The same record: equal digests, or (cosine space) only vectors within ``ulps`` apart."""
    return bool(live[5] == stored[5] or (ulps and live[2:5] == stored[2:5] and _within_ulps(live[1], stored[1], ulps)))


def write_back(chroma: ChromaPort, collection: Collection, batch: RecordBatch, ulps: int) -> None:
    """Upsert ``batch`` into the live collection and read it back: every record must read back as
    written (``VerificationFailed`` names the first that does not)."""
    chroma.upsert(collection, batch)
    back, unreadable = read_flagging(chroma, collection, list(batch.ids))
    live = {row[0]: row for row in batch_rows(back)}
    bad = [row[0] for row in batch_rows(batch) if row[0] not in live or not same_content(live[row[0]], row, ulps)]
    if bad or unreadable:
        raise VerificationFailed(
            f"{len(bad or unreadable)} record(s) written back into {collection.name!r} do not read back as "
            f"written (e.g. {(bad or unreadable)[0]!r})"
        )


def finish_live_write(
    db: DatabasePort, restore_id: int, *, status: str, records: int, counts: dict[str, Any], error: str | None
) -> None:
    """Record how a repair or record-level restore ended (a failure to record it is logged)."""
    try:
        db.restores.finish_restore(
            restore_id, status=status, records=records, verified=status == COMPLETE, error=error, counts=counts
        )
    except BackupError as second:
        log.error("restore %d could not be recorded as %s: %s", restore_id, status, second)
