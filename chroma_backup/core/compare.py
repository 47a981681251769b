"""Comparing live records with stored ones, and a live collection's description with a saved one.

A comparison holds counts and the first few example ids of each kind, never every id.  In cosine
space Chroma re-rounds every vector it stores (``COSINE_ULP_TOLERANCE``): there a digest mismatch
that is only such rounding counts as ``rounded``, not ``changed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from chroma_backup.chroma import CollectionInfo, index_params
from chroma_backup.core.ports import ChromaPort, Chunk, Collection, ListingPort, Row
from chroma_backup.core.reading import RunOptions, read_batches
from chroma_backup.records import ContentDigest, RecordBatch, batch_rows, encode_metadata

EXAMPLES = 5  # example ids reported per kind of difference


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


def _rounded_only(live_rows: dict[str, Row], stored: Iterable[RecordBatch], ulps: int) -> set[str]:
    """Ids whose live record equals the stored one except for embeddings within ``ulps``."""
    rounded = set()
    for batch in stored:
        for row in batch_rows(batch):
            live = live_rows.get(row[0])
            if live is not None and live[2:5] == row[2:5] and _within_ulps(live[1], row[1], ulps):
                rounded.add(row[0])
    return rounded


def _compare_batch(
    chunk: Chunk, batch: RecordBatch, result: Comparison, content: ContentDigest, load_stored: StoredLoader | None
) -> list[str]:
    """Check one batch of live records against the digests expected for its chunk; with
    ``load_stored`` (cosine space), digest mismatches that are only re-rounded vectors count as
    ``rounded``.  Returns the chunk's ids that the batch lacks (gone when read)."""
    expected = dict(chunk)
    suspects: dict[str, Row] = {}
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
        known: Chunk = [(rid, digest) for rid, digest in chunk if digest is not None]
        if known:
            yield known


def compare_collection(
    chroma: ChromaPort,
    collection: Collection,
    listing: ListingPort,
    *,
    space: str = "l2",
    load_stored: StoredLoader | None = None,
    dimension: int | None = None,
    run: RunOptions = RunOptions(),
) -> Comparison:
    """Record-by-record comparison of a live collection with the stored versions ``listing``
    stands for.  The ids are listed into PostgreSQL and read back joined with their stored
    digests, so memory stays flat whatever the collection's size.

    In a cosine collection, records whose digest differs are looked up with ``load_stored`` and
    count as ``rounded`` (not ``changed``) when only their embeddings differ, by at most
    ``COSINE_ULP_TOLERANCE`` units in the last place.
    """
    result = Comparison(live=listing.load(chroma.iter_ids(collection)), expected=listing.stored_count())
    content = ContentDigest()
    size = chroma.read_batch_size(run.read_size, dimension)
    loader = load_stored if space == "cosine" else None
    for chunk, batch in read_batches(chroma, collection, _known(listing.chunks(size), result), run.read_workers):
        run.check_stop("verify")
        listing.forget(_compare_batch(chunk, batch, result, content, loader))
        run.advance(len(batch))
    missing, examples = listing.unlisted(EXAMPLES)
    result.note("missing", examples, missing)
    result.content_digest = content.hexdigest()
    return result


def _index_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    return [
        f"{key}: expected {expected.get(key)!r}, got {actual.get(key)!r}"
        for key in sorted(set(expected) | set(actual))
        if expected.get(key) != actual.get(key)
    ]


def json_differences(expected: Any, actual: Any, path: str) -> list[str]:
    """Every key path where two JSON documents differ, as ``path.key: expected X, got Y``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual), key=str):
            out += json_differences(expected.get(key, _ABSENT), actual.get(key, _ABSENT), f"{path}.{key}")
        return out
    if (expected == actual and type(expected) is type(actual)) or (
        isinstance(expected, (int, float))
        and isinstance(actual, (int, float))
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
        and expected == actual
    ):
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
            differences += json_differences(
                expected.configuration_json, actual.configuration_json or {}, "configuration"
            )
        if expected.schema_json is not None:
            differences += json_differences(expected.schema_json, actual.schema_json or {}, "schema")
    return differences


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
            if (
                key not in (copy.schema_json.get("keys") or {})
                and isinstance(types, dict)
                and all(defaults.get(kind) == entry for kind, entry in types.items())
            ):
                del keys[key]
        expected = replace(expected, schema_json={**schema, "keys": keys})
    differences = collection_differences(expected, copy)
    if not copy.legacy:
        in_force = index_params(None, copy.configuration_json)
        differences += [d for d in _index_differences(expected.index_params, in_force) if d not in differences]
    return differences
