"""Records in transit: exact embedding bytes, lossless metadata JSON, and content digests.

Pure functions, no I/O.  ``chroma.py`` hands records over as plain Python values (decoded by
``wire.py``, sparse vectors already turned into ``{"$sparse": {...}}``); this module defines the
one canonical encoding that backup, restore and verify all digest, so a digest computed from a
live collection equals the one stored at backup time exactly when the content is identical.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT_TAG = "$float"
DIGEST_BITS = 128
_DIGEST_MOD = 1 << DIGEST_BITS


@dataclass
class RecordBatch:
    """Up to one server batch of records, column-wise, in whatever order the store returned."""

    ids: list[str]
    embeddings: np.ndarray  # shape (n, dim), dtype '<f4'
    documents: list[str | None]
    metadatas: list[dict[str, Any] | None]
    uris: list[str | None]
    digests: list[bytes] | None = None  # as stored (batches read from PostgreSQL)

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> RecordBatch:
        """Records ``start`` to ``stop`` (a view of the same embeddings)."""
        return RecordBatch(
            self.ids[start:stop],
            self.embeddings[start:stop],
            self.documents[start:stop],
            self.metadatas[start:stop],
            self.uris[start:stop],
            None if self.digests is None else self.digests[start:stop],
        )

    def take(self, indices: Sequence[int]) -> RecordBatch:
        """The records at ``indices``, in that order."""
        return RecordBatch(
            [self.ids[i] for i in indices],
            self.embeddings[list(indices)] if len(indices) else self.embeddings[:0],
            [self.documents[i] for i in indices],
            [self.metadatas[i] for i in indices],
            [self.uris[i] for i in indices],
            None if self.digests is None else [self.digests[i] for i in indices],
        )


_PLAIN_TYPES = (str, int, bool)


def _encode_value(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN_TYPES:  # the common case first (bool is a subclass of int, checked by type)
        return value
    if kind is float:
        text = repr(value)
        # PostgreSQL's jsonb keeps "1.0" as 1.0 but turns "1e+16" into an integer; tag those
        # (and non-finite values) so the type survives the round trip.
        if not math.isfinite(value) or "e" in text or "E" in text:
            return {FLOAT_TAG: text}
        return value
    if isinstance(value, (str, int)):  # subclasses (e.g. enum values) keep their plain value
        return value
    if isinstance(value, float):
        return _encode_value(float(value))
    if isinstance(value, (list, tuple)):
        return [_encode_value(item) for item in value]
    if isinstance(value, dict):  # already tagged (sparse vectors from chroma.py)
        return {key: _encode_value(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return _encode_value(value.item())
    raise TypeError(f"unsupported metadata value of type {type(value).__name__}")


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1 and FLOAT_TAG in value:
            return float(value[FLOAT_TAG])
        return {key: _decode_value(item) for key, item in value.items()}
    return value


# One encoder for every record (json.dumps with options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_metadata(metadata: dict[str, Any] | None) -> str | None:
    """Canonical JSON text of a metadata dict (sorted keys, floats tagged where needed)."""
    if metadata is None:
        return None
    encoded = {
        key if type(key) is str else str(key): value if type(value) in _PLAIN_TYPES else _encode_value(value)
        for key, value in metadata.items()
    }
    return _CANONICAL.encode(encoded)


def decode_metadata(text: str | None) -> dict[str, Any] | None:
    """Inverse of ``encode_metadata`` (also accepts jsonb's re-formatted output)."""
    if text is None or text == "":
        return None
    return {key: _decode_value(value) for key, value in json.loads(text).items()}


_ABSENT = b"\x00"
_PRESENT = b"\x01"


def record_digest(
    record_id: str, embedding: bytes, document: str | None, metadata_json: str | None, uri: str | None
) -> bytes:
    """blake2b-128 over the length-prefixed canonical fields (``\\x01`` + 8-byte little-endian
    length + bytes, or ``\\x00`` for None): None and "" differ."""
    parts: list[bytes] = []
    for data in (
        record_id.encode("utf-8"),
        embedding,
        None if document is None else document.encode("utf-8"),
        None if metadata_json is None else metadata_json.encode("utf-8"),
        None if uri is None else uri.encode("utf-8"),
    ):
        if data is None:
            parts.append(_ABSENT)
        else:
            parts += (_PRESENT, len(data).to_bytes(8, "little"), data)
    return hashlib.blake2b(b"".join(parts), digest_size=DIGEST_BITS // 8).digest()


def batch_rows(batch: RecordBatch) -> list[tuple[str, bytes, str | None, str | None, str | None, bytes]]:
    """(id, embedding bytes, document, metadata JSON, uri, digest) for every record of ``batch``."""
    rows = []
    embeddings = batch.embeddings
    for i, record_id in enumerate(batch.ids):
        vector = embeddings[i].tobytes()
        meta = encode_metadata(batch.metadatas[i])
        document = batch.documents[i]
        uri = batch.uris[i]
        rows.append((record_id, vector, document, meta, uri, record_digest(record_id, vector, document, meta, uri)))
    return rows


class ContentDigest:
    """Order-independent digest of a set of record digests (their sum modulo 2**128)."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, digest: bytes) -> None:
        self.total = (self.total + int.from_bytes(digest, "big")) % _DIGEST_MOD
        self.count += 1

    def remove(self, digest: bytes) -> None:
        """Take back one ``add`` of ``digest``."""
        self.total = (self.total - int.from_bytes(digest, "big")) % _DIGEST_MOD
        self.count -= 1

    def add_all(self, digests: Sequence[bytes]) -> None:
        for digest in digests:
            self.add(digest)

    def hexdigest(self) -> str:
        return self.total.to_bytes(DIGEST_BITS // 8, "big").hex()

    def digest(self) -> bytes:
        return self.total.to_bytes(DIGEST_BITS // 8, "big")


def concat_batches(batches: Sequence[RecordBatch]) -> RecordBatch:
    """One batch holding the records of ``batches`` in order (empty batches allowed)."""
    parts = [b for b in batches if len(b)]
    if not parts:
        return RecordBatch([], np.zeros((0, 0), dtype="<f4"), [], [], [])
    return RecordBatch(
        ids=[rid for b in parts for rid in b.ids],
        embeddings=np.concatenate([b.embeddings for b in parts]),
        documents=[d for b in parts for d in b.documents],
        metadatas=[m for b in parts for m in b.metadatas],
        uris=[u for b in parts for u in b.uris],
    )
