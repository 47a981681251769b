"""How large a Chroma request may be: records per read and per write, by count and by bytes.

A 1.x server caps a request's records (``max_batch_size``, 5,461 here) and its body (40 MiB by
default, HTTP 413 above): a batch of wide vectors (3072-d) is cut by its size as well.
"""

from __future__ import annotations

from chroma_backup.chroma.http import encode
from chroma_backup.chroma.wire import wire_metadata
from chroma_backup.records import RecordBatch

# get(ids=...) fails above 32,763 ids on 1.5.9, whatever the server's max batch size says.
MAX_IDS_PER_GET = 32_000
# Records per read.  Measured (3 readers, full backup at 100k, decoded by ``wire``): pages of 500
# cost Chroma less CPU but made the peak RSS grow with the collection at 1M; 250 did not
# (docs/performance.md).
READ_BATCH = 250
# A 1.x server refuses request bodies over 40 MiB by default (HTTP 413, ``max_payload_size_bytes``);
# writes are cut by their estimated size well below that, as well as by the record count.  A
# server (or a proxy in front of it) that still answers 413 halves the budget for the rest of the
# run (``ChromaStore.add``).
WRITE_BUDGET_BYTES = 32 << 20
# The estimated size of one ``get`` answer: a read asks for at most this much (a 3072-d vector is
# ~37 kB of JSON text), so a reader never holds a page of hundreds of MB.
READ_BUDGET_BYTES = 32 << 20
JSON_FLOAT_BYTES = 13  # one float32 component as a get answer writes it ("-0.123456789,")


def _records_within(budget: int, dimension: int | None) -> int:
    """How many records with vectors of ``dimension`` fit a get answer of ``budget`` bytes."""
    if not dimension:
        return MAX_IDS_PER_GET
    return max(1, budget // (dimension * JSON_FLOAT_BYTES + 256))


# The transport writes compact UTF-8 JSON (``chroma_http.encode``); a body's fixed frame (its
# keys and nulls) and each record's separators on top of its fields.
_BODY_FRAME = 128
_RECORD_FRAME = 8


def request_bytes(batch: RecordBatch, base64: bool) -> int:
    """The size of an ``add`` of ``batch`` as the transport sends it: vectors base64-encoded (4
    bytes per component, 4/3 for the encoding) or as JSON numbers (at most 25 bytes each), and the
    text fields as their JSON."""
    return _BODY_FRAME + sum(_record_bytes(batch, i, base64) for i in range(len(batch)))


def _record_bytes(batch: RecordBatch, i: int, base64: bool) -> int:
    dim = batch.embeddings.shape[1] if batch.embeddings.ndim == 2 else 0
    vector = (dim * 4 + 2) // 3 * 4 + 3 if base64 else dim * 25 + 2
    fields = [batch.ids[i], batch.documents[i], wire_metadata(batch.metadatas[i]), batch.uris[i]]
    return vector + len(encode(fields)) + _RECORD_FRAME


def _split_by_bytes(batch: RecordBatch, budget: int, base64: bool, most: int) -> list[RecordBatch]:
    """``batch`` cut into consecutive parts of at most ``most`` records whose estimated request
    size stays within ``budget`` (a record larger than the budget goes alone)."""
    parts, start, size = [], 0, _BODY_FRAME
    for i in range(len(batch)):
        record = _record_bytes(batch, i, base64)
        if i > start and (size + record > budget or i - start >= most):
            parts.append(batch.slice(start, i))
            start, size = i, _BODY_FRAME
        size += record
    parts.append(batch.slice(start, len(batch)))
    return parts
