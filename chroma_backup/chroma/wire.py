"""Decoding a ``get`` answer's body into a ``RecordBatch`` without a Python float per component.

The chromadb client decodes every vector component of a ``get`` answer into a Python float and
then copies those into a float64 array: at 384 dimensions that is 384 objects per record, and it
was half the CPU a backup spent in Python (measured with py-spy at 100k records).  Here simdjson
parses the body and copies the embeddings straight into a float64 buffer; converting that to
float32 gives the same bits as the client's path (both parsers round correctly, and Chroma sends
each float32 in a form that reads back to itself).  Pure: no I/O.

The shape is checked (a rectangular matrix of numbers, one row per id); a component that is a
one-element array instead of a number cannot be told from that number here, a form no Chroma
server sends (its answer type is a list of float lists).
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import numpy as np
import simdjson

from chroma_backup.records import RecordBatch

SPARSE_TAG = "$sparse"
_TYPE_KEY = "#type"
_SPARSE_TYPE = "sparse_vector"
_local = threading.local()


class MalformedAnswer(ValueError):
    """The body is not a ``get`` answer: not JSON, no ids, or columns that do not fit them."""


def _parser() -> Any:
    # A parser reuses its buffers across documents (allocating them costs as much as parsing a
    # page); one per thread, since readers decode concurrently.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def decode_get(body: bytes) -> RecordBatch:
    """The records of a ``get`` answer (``include`` embeddings, documents, metadatas, uris; any
    of them may be absent or null), embeddings as a little-endian float32 matrix.  Raises
    ``MalformedAnswer``."""
    try:
        ids, embeddings, documents, metadatas, uris = _decode(_parser(), body)
    except BaseException:
        # A proxy kept alive by the traceback would lock the parser: the next call gets a new one.
        _local.parser = None
        raise
    n = len(ids)
    return RecordBatch(
        ids=ids,
        embeddings=embeddings,
        documents=documents if documents is not None else [None] * n,
        metadatas=[plain_metadata(m) for m in metadatas] if metadatas is not None else [None] * n,
        uris=uris if uris is not None else [None] * n,
    )


def _decode(parser: Any, body: bytes) -> tuple[Any, ...]:
    try:
        document = parser.parse(body)
    except (ValueError, RuntimeError) as error:  # UnicodeDecodeError is a ValueError
        raise MalformedAnswer(f"not JSON: {error}") from None
    if not isinstance(document, simdjson.Object):
        raise MalformedAnswer("not a JSON object")
    ids = _column(document, "ids")
    if ids is None or not all(type(record_id) is str for record_id in ids):
        raise MalformedAnswer("no 'ids' array of strings")
    n = len(ids)
    return (
        ids,
        _embeddings(document, n),
        _column(document, "documents", n),
        _column(document, "metadatas", n),
        _column(document, "uris", n),
    )


def _column(document: Any, key: str, n: int | None = None) -> list[Any] | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, simdjson.Array):
        raise MalformedAnswer(f"{key!r} is not an array")
    items = value.as_list()
    if n is not None and len(items) != n:
        raise MalformedAnswer(f"{len(items)} {key} for {n} ids")
    return items


def _embeddings(document: Any, n: int) -> np.ndarray:
    rows = document.get("embeddings")
    if rows is None or n == 0:
        if n and rows is None:
            raise MalformedAnswer("no embeddings")
        return np.zeros((0, 0), dtype="<f4")
    if not isinstance(rows, simdjson.Array) or len(rows) != n:
        raise MalformedAnswer(f"embeddings are not {n} rows")
    first = rows[0]
    dim = len(first) if isinstance(first, simdjson.Array) else -1
    if dim <= 0 or not all(isinstance(row, simdjson.Array) and len(row) == dim for row in rows):
        raise MalformedAnswer("embeddings are not rows of one length")
    try:
        flat = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:
        flat = _with_nulls(rows.as_list())
    if flat.size != n * dim:
        raise MalformedAnswer("embeddings are not rows of numbers")
    return flat.astype("<f4").reshape(n, dim)


def _with_nulls(rows: list[Any]) -> np.ndarray:
    """The slow path for components Chroma sent as ``null``: it writes NaN and infinities so (a
    cosine collection's zero vector normalises to NaN), and the chromadb client reads them as NaN;
    so do we."""
    flat = [value for row in rows for value in row]
    if not all(value is None or type(value) in (int, float) for value in flat):
        raise MalformedAnswer("embeddings hold a value that is not a number")
    return np.array([np.nan if value is None else value for value in flat], dtype=np.float64)


def plain_metadata(metadata: Any) -> dict[str, Any] | None:
    """A metadata dict as Chroma sends it, with sparse vectors (``{"#type": "sparse_vector", ...}``
    on the wire) tagged as ``{"$sparse": {"indices", "values"[, "labels"]}}``; None when empty."""
    if not metadata:
        return None
    if not isinstance(metadata, dict):
        raise MalformedAnswer(f"a metadata is a {type(metadata).__name__}, not an object")
    for value in metadata.values():
        if type(value) is dict:
            return {key: _plain_value(value) for key, value in metadata.items()}
    return metadata


def _plain_value(value: Any) -> Any:
    if type(value) is dict and value.get(_TYPE_KEY) == _SPARSE_TYPE:
        sparse = {"indices": list(value["indices"]), "values": [float(v) for v in value["values"]]}
        if value.get("tokens") is not None:
            sparse["labels"] = list(value["tokens"])
        return {SPARSE_TAG: sparse}
    return value


# -- the other way: the body of an add or upsert ------------------------------------------


def wire_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Inverse of ``wire.plain_metadata``: sparse vectors in the wire's tagged form."""
    if not metadata:
        return None
    result = {}
    for key, value in metadata.items():
        if isinstance(value, dict) and SPARSE_TAG in value:
            sparse = value[SPARSE_TAG]
            value = {_TYPE_KEY: _SPARSE_TYPE, "indices": sparse["indices"], "values": sparse["values"]}
            if sparse.get("labels") is not None:
                value["tokens"] = sparse["labels"]
        result[key] = value
    return result


def write_body(batch: RecordBatch, base64: bool) -> dict[str, Any]:
    """The JSON body of an ``add`` or ``upsert`` of ``batch``."""
    return {
        "ids": batch.ids,
        "embeddings": _wire_embeddings(batch.embeddings, base64),
        "metadatas": _present([wire_metadata(m) for m in batch.metadatas]),
        "documents": _present(batch.documents),
        "uris": _present(batch.uris),
    }


def _present(values: list[Any]) -> list[Any] | None:
    """A column of an add, or None when no record has a value in it."""
    return values if any(v is not None for v in values) else None


def _wire_embeddings(embeddings: np.ndarray, encode: bool) -> list[Any]:
    """Vectors as the server takes them: base64 of little-endian float32 (1.x), or JSON numbers."""
    vectors = np.ascontiguousarray(embeddings, dtype="<f4")
    if encode:
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    return list(vectors.tolist())
