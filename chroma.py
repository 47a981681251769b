"""Chroma: one server, tenant and database as the program sees it (``ChromaStore``).

Every difference between Chroma versions lives here: how a collection is described and re-created
(0.6.x keeps the index in ``hnsw:*`` metadata, 1.x in a configuration and a schema), how vectors
travel (base64 where the server takes it), how requests are sized.  The HTTP itself is
``chroma_http`` (the only importer of httpx); large answers are decoded by ``wire`` and
``idstream``.  The default embedding function can never run: no embedding function exists here,
and records always carry their embeddings.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from chroma_http import RequestTooLarge, Transport, encode
from config import Settings
from errors import ChromaFailure, CollectionNotFound, first_line
from idstream import IdStreamParser, MalformedListing
from records import RecordBatch
from wire import SPARSE_TAG, MalformedAnswer, decode_get

log = logging.getLogger(__name__)

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
INCLUDE_ALL = ["embeddings", "documents", "metadatas", "uris"]
HNSW_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")
# 0.6.x-era collection metadata keys and their 1.x configuration names.
LEGACY_HNSW_KEYS = {
    "hnsw:space": "space",
    "hnsw:construction_ef": "ef_construction",
    "hnsw:search_ef": "ef_search",
    "hnsw:M": "max_neighbors",
    "hnsw:resize_factor": "resize_factor",
    "hnsw:sync_threshold": "sync_threshold",
}
# How a 1.x collection is asked for (``creation_plans``).
PLAN_CONFIGURATION = "configuration"
PLAN_SCHEMA = "schema"
PLAN_CLIENT = "client"
SCHEMA_OWN_KEYS = ("#embedding", "#document")  # schema keys every collection has
LIST_PAGE = 1000  # collections / databases per listing request
_SPARSE_TYPE = {"#type": "sparse_vector"}


@dataclass(frozen=True)
class Collection:
    """A collection as the server described it when it was opened."""

    id: str
    name: str
    metadata: dict[str, Any] | None
    configuration_json: dict[str, Any] | None
    schema_json: dict[str, Any] | None
    dimension: int | None

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> "Collection":
        return cls(id=str(model["id"]), name=model["name"], metadata=model.get("metadata") or None,
                   configuration_json=_json_safe(model.get("configuration_json")),
                   schema_json=_json_safe(model.get("serialized_schema")), dimension=model.get("dimension"))


@dataclass(frozen=True)
class CollectionInfo:
    """What it takes to re-create a collection exactly, as read from the server."""

    id: str
    name: str
    metadata: dict[str, Any] | None
    configuration_json: dict[str, Any] | None
    schema_json: dict[str, Any] | None
    dimension: int | None
    server_version: str

    @property
    def legacy(self) -> bool:
        """Read from a 0.x server (its configuration_json does not describe the index)."""
        return bool(self.server_version) and _version_tuple(self.server_version) < (1,)

    @property
    def index_params(self) -> dict[str, Any]:
        return index_params(self.metadata, self.configuration_json, legacy_server=self.legacy)

    @property
    def space(self) -> str:
        return self.index_params.get("space", "l2")

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """Collection metadata without the legacy index keys (0.6 servers keep the index there)."""
        plain = {k: v for k, v in (self.metadata or {}).items() if k not in LEGACY_HNSW_KEYS}
        return plain or None


# Chroma's defaults (identical on 0.6.x and 1.x), so parameters read from different servers compare.
HNSW_DEFAULTS = {"space": "l2", "ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
                 "resize_factor": 1.2, "sync_threshold": 1000}


def index_params(metadata: dict[str, Any] | None, configuration_json: dict[str, Any] | None, *,
                 legacy_server: bool = False) -> dict[str, Any]:
    """Distance space and HNSW parameters as actually in force.

    On 1.x the configuration describes the index, except for collections created by 0.6.x: they
    report ``space: l2`` while the space really used is ``metadata["hnsw:space"]``, so the legacy
    metadata keys win wherever present.  A 0.6.x server's configuration_json describes nothing
    (it shows defaults whatever the collection uses): there the metadata keys alone count.
    """
    config = {} if legacy_server else (configuration_json or {})
    hnsw = config.get("hnsw") or {}
    spann = config.get("spann") or {}
    if spann and not hnsw:
        params = {f"spann_{key}": value for key, value in spann.items() if value is not None and key != "space"}
        params["space"] = spann.get("space") or "l2"
    else:
        params = dict(HNSW_DEFAULTS)
        params.update({key: hnsw[key] for key in HNSW_KEYS if hnsw.get(key) is not None})
    for legacy_key, key in LEGACY_HNSW_KEYS.items():
        if metadata and legacy_key in metadata:
            params[key] = metadata[legacy_key]
    return params


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _wire_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Inverse of ``wire.plain_metadata``: sparse vectors in the wire's tagged form."""
    if not metadata:
        return None
    result = {}
    for key, value in metadata.items():
        if isinstance(value, dict) and SPARSE_TAG in value:
            sparse = value[SPARSE_TAG]
            value = {**_SPARSE_TYPE, "indices": sparse["indices"], "values": sparse["values"]}
            if sparse.get("labels") is not None:
                value["tokens"] = sparse["labels"]
        result[key] = value
    return result


@dataclass
class ChromaStore:
    """One Chroma server, tenant and database, over one connection pool that every thread of a
    run shares.  ``close`` it when the run ends."""

    transport: Transport
    tenant: str
    database: str
    address: str
    server_version: str
    max_batch: int
    base64: bool  # the server takes vectors base64-encoded (1.x)
    write_budget: int = WRITE_BUDGET_BYTES  # bytes per write request (halved on HTTP 413)

    @classmethod
    def connect(cls, settings: Settings, *, host: str | None = None, port: int | None = None,
                ssl: bool | None = None, timeout: float | None = None,
                database: str | None = None) -> "ChromaStore":
        """Reach the server, read its version and limits, and check the tenant and database."""
        host, port = host or settings.chromadb_host, port or settings.chromadb_port
        ssl = settings.chromadb_use_ssl if ssl is None else ssl
        database = database or settings.chroma_database
        address = f"{'https' if ssl else 'http'}://{host}:{port}"
        transport = Transport(address, _auth_headers(settings), timeout or settings.chroma_timeout_seconds)
        try:
            version = str(transport.call("GET", "/version", f"connecting to {address}"))
            checks = transport.call("GET", "/pre-flight-checks", f"connecting to {address}")
            tenant = settings.chroma_tenant
            transport.call("GET", Transport.path("tenants", tenant), f"opening tenant {tenant!r} on {address}")
            transport.call("GET", Transport.path("tenants", tenant, "databases", database),
                           f"opening database {database!r} of tenant {tenant!r} on {address}")
        except BaseException:
            transport.close()
            raise
        return cls(transport, tenant, database, address, version, int(checks.get("max_batch_size") or 0) or 1000,
                   bool(checks.get("supports_base64_encoding")))

    def close(self) -> None:
        self.transport.close()

    def _path(self, *parts: str) -> str:
        return Transport.path("tenants", self.tenant, "databases", self.database, "collections", *parts)

    # -- server ---------------------------------------------------------------------------------

    @property
    def legacy(self) -> bool:
        """True for 0.x servers (no configuration/schema on create)."""
        return _version_tuple(self.server_version) < (1,)

    def heartbeat(self) -> int:
        return int(self.transport.call("GET", "/heartbeat", "heartbeat")["nanosecond heartbeat"])

    def max_batch_size(self) -> int:
        return self.max_batch

    def batch_size(self, wanted: int = 0) -> int:
        """Records per write: ``wanted`` (0 = as large as allowed) capped by the server's limits."""
        limit = min(self.max_batch, MAX_IDS_PER_GET)
        return min(wanted, limit) if wanted > 0 else limit

    def read_batch_size(self, wanted: int = 0, dimension: int | None = None) -> int:
        """Records per read: ``wanted``, or READ_BATCH when 0 (larger pages cost Chroma less CPU
        and every reader more memory), within READ_BUDGET_BYTES of answer for ``dimension``."""
        return min(self.batch_size(wanted or READ_BATCH), _records_within(READ_BUDGET_BYTES, dimension))

    def readback_size(self, dimension: int | None) -> int:
        """Records per read when a restore reads back what it wrote: a written batch in one
        request (the read-back's cost to Chroma is per request), within READ_BUDGET_BYTES."""
        return min(self.batch_size(), _records_within(READ_BUDGET_BYTES, dimension))

    def list_databases(self) -> list[str]:
        """Every database of this store's tenant."""
        path = Transport.path("tenants", self.tenant, "databases")
        return sorted(d["name"] for d in self._pages(path, f"listing the databases of tenant {self.tenant!r}"))

    def list_collection_names(self) -> list[str]:
        return sorted(c["name"] for c in self._pages(self._path(), "listing collections"))

    def _pages(self, path: str, what: str) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.transport.call("GET", path, what, params={"limit": LIST_PAGE, "offset": offset})
            yield from page
            if len(page) < LIST_PAGE:
                return
            offset += len(page)

    # -- collections ----------------------------------------------------------------------------

    def open(self, name: str) -> Collection:
        return Collection.from_model(self.transport.call("GET", self._path(name), f"opening collection {name!r}"))

    def exists(self, name: str) -> bool:
        try:
            self.open(name)
            return True
        except CollectionNotFound:
            return False

    def describe(self, collection: Collection) -> CollectionInfo:
        return CollectionInfo(id=collection.id, name=collection.name, metadata=collection.metadata,
                              configuration_json=collection.configuration_json, schema_json=collection.schema_json,
                              dimension=collection.dimension, server_version=self.server_version)

    def creation_plans(self, info: CollectionInfo) -> list[str]:
        """The ways to ask this server for a copy of ``info``'s collection, best first."""
        return creation_plans(info, legacy_server=self.legacy)

    def create(self, name: str, info: CollectionInfo, plan: str = PLAN_CLIENT) -> Collection:
        """Create ``name`` from the saved form of ``info`` as ``plan`` says (``creation_plans``)."""
        metadata, configuration, schema = _creation_body(info, plan, legacy_server=self.legacy)
        body = {"name": name, "metadata": metadata, "configuration": configuration, "schema": schema,
                "get_or_create": False}
        what = f"creating collection {name!r}" + ("" if plan == PLAN_CLIENT else f" from the saved {plan}")
        return Collection.from_model(self.transport.call("POST", self._path(), what, body=body))

    def rename(self, collection: Collection, new_name: str) -> None:
        self.transport.call("PUT", self._path(collection.id), f"renaming collection {collection.name!r} to "
                            f"{new_name!r}", body={"new_name": new_name, "new_metadata": None})

    def delete(self, name: str) -> None:
        self.transport.call("DELETE", self._path(name), f"deleting collection {name!r}")

    # -- records --------------------------------------------------------------------------------

    def count(self, collection: Collection) -> int:
        return int(self.transport.call("GET", self._path(collection.id, "count"), f"counting {collection.name!r}"))

    def list_ids(self, collection: Collection) -> list[str]:
        """Every id as one list (small collections and tests; backups stream ``iter_ids``)."""
        return [record_id for page in self.iter_ids(collection) for record_id in page]

    def iter_ids(self, collection: Collection) -> Iterator[list[str]]:
        """Every id of the collection from one ``get(include=[])`` request (the consistent
        enumeration a backup reads by), parsed as the answer arrives and handed out as it
        completes: memory stays flat however large the collection (``idstream``)."""
        what = f"listing ids of {collection.name!r}"
        parser = IdStreamParser()
        with self.transport.stream("POST", self._path(collection.id, "get"), what, body=_get_body(None, [])) as texts:
            try:
                for text in texts:
                    ids = parser.feed(text)
                    if ids:
                        yield ids
                parser.close()
            except MalformedListing as error:
                raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None

    def fetch(self, collection: Collection, ids: list[str]) -> RecordBatch:
        """The full records for ``ids`` (missing ids are skipped; order is the server's), decoded
        by ``wire`` (vectors straight to float32)."""
        what = f"reading records of {collection.name!r}"
        body = self.transport.fetch("POST", self._path(collection.id, "get"), what, body=_get_body(ids, INCLUDE_ALL))
        try:
            return decode_get(body)
        except MalformedAnswer as error:
            raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None

    def add(self, collection: Collection, batch: RecordBatch) -> None:
        """Write ``batch`` in requests of at most ``write_budget`` bytes (and the server's batch
        size).  A request the server still refuses as too large (HTTP 413) is halved and the
        budget with it, for the rest of this store's life; nothing of a refused request was
        written."""
        if len(batch):
            if self.legacy:
                _refuse_lists(batch)
            _write_within_budget(self, collection, batch, "add")

    def upsert(self, collection: Collection, batch: RecordBatch) -> None:
        """Insert or replace records (the demo changes records with it)."""
        if len(batch):
            _write_within_budget(self, collection, batch, "upsert")

    def write(self, collection: Collection, batch: RecordBatch, verb: str) -> None:
        """One ``add`` or ``upsert`` request of ``batch`` (``add`` sizes the requests)."""
        body = write_body(batch, self.base64)
        what = f"adding records to {collection.name!r}" if verb == "add" else \
            f"upserting records into {collection.name!r}"
        self.transport.call("POST", self._path(collection.id, verb), what, body=body)

    def delete_records(self, collection: Collection, ids: list[str]) -> None:
        self.transport.call("POST", self._path(collection.id, "delete"), f"deleting records from {collection.name!r}",
                            body={"ids": ids, "where": None, "where_document": None})

    def query(self, collection: Collection, embeddings: np.ndarray,
              n_results: int) -> tuple[list[list[str]], list[list[float]]]:
        """Nearest ids and distances for each query embedding (never query texts)."""
        body = {"ids": None, "query_embeddings": np.asarray(embeddings, dtype=np.float32).tolist(),
                "n_results": n_results, "where": None, "where_document": None, "include": ["distances"]}
        result = self.transport.call("POST", self._path(collection.id, "query"), f"querying {collection.name!r}",
                                     body=body)
        return [list(ids) for ids in result["ids"]], [list(d) for d in result["distances"]]

    def ids_at(self, collection: Collection, offsets: list[int]) -> list[str]:
        """The ids at these positions of the collection's storage order (a random probe sample)."""
        ids: list[str] = []
        for offset in offsets:
            body = {**_get_body(None, []), "limit": 1, "offset": offset}
            ids.extend(self.transport.call("POST", self._path(collection.id, "get"),
                                           f"listing ids of {collection.name!r}", body=body)["ids"])
        return list(dict.fromkeys(ids))

    def existing_ids(self, collection: Collection, ids: list[str]) -> list[str]:
        """Which of ``ids`` exist (no content read)."""
        return list(self.transport.call("POST", self._path(collection.id, "get"),
                                        f"looking up ids in {collection.name!r}", body=_get_body(ids, []))["ids"])


def _get_body(ids: list[str] | None, include: list[str]) -> dict[str, Any]:
    return {"ids": ids, "where": None, "limit": None, "offset": None, "where_document": None, "include": include}


def write_body(batch: RecordBatch, base64: bool) -> dict[str, Any]:
    """The JSON body of an ``add`` or ``upsert`` of ``batch``."""
    return {"ids": batch.ids, "embeddings": _wire_embeddings(batch.embeddings, base64),
            "metadatas": _column([_wire_metadata(m) for m in batch.metadatas]),
            "documents": _column(batch.documents), "uris": _column(batch.uris)}


def _column(values: list[Any]) -> list[Any] | None:
    """A column of an add, or None when no record has a value in it."""
    return values if any(v is not None for v in values) else None


def _wire_embeddings(embeddings: np.ndarray, encode: bool) -> list[Any]:
    """Vectors as the server takes them: base64 of little-endian float32 (1.x), or JSON numbers."""
    vectors = np.ascontiguousarray(embeddings, dtype="<f4")
    if encode:
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    return vectors.tolist()


def _creation_body(info: CollectionInfo, plan: str, *, legacy_server: bool) -> tuple[Any, Any, Any]:
    """Metadata, configuration and schema of a create request for ``plan``: the saved JSON as
    read for the configuration and schema plans; the client's own form otherwise (legacy metadata
    keys on a 0.x server, which rejects a configuration; the HNSW parameters as a configuration
    on 1.x unless the metadata keys carry them)."""
    metadata = dict(info.metadata) if info.metadata else None
    if plan == PLAN_CONFIGURATION:
        return metadata, info.configuration_json, None
    if plan == PLAN_SCHEMA:
        return metadata, None, info.schema_json
    params = info.index_params
    if legacy_server:
        metadata = dict(metadata or {})
        metadata.update({legacy_key: params[key] for legacy_key, key in LEGACY_HNSW_KEYS.items() if key in params})
        return metadata or None, None, None
    if _has_legacy_keys(info.metadata):
        return metadata, None, None
    hnsw = {key: params[key] for key in HNSW_KEYS if key in params}
    return metadata, {"hnsw": hnsw, "spann": None, "embedding_function": {"type": "legacy"}}, None


def _write_within_budget(store: ChromaStore, collection: Collection, batch: RecordBatch, verb: str) -> None:
    pending = deque(_split_by_bytes(batch, store.write_budget, store.base64, store.batch_size()))
    while pending:
        part = pending.popleft()
        try:
            store.write(collection, part, verb)
        except RequestTooLarge as error:
            if len(part) == 1:
                raise ChromaFailure(f"{first_line(error)}: record {part.ids[0]!r} alone is larger than the "
                                    "server accepts; raise its max_payload_size_bytes") from None
            size = request_bytes(part, store.base64)
            store.write_budget = max(1, min(store.write_budget, size) // 2)
            log.warning("chroma refused a write of %d records (~%d bytes) as too large; writing at most %d bytes "
                        "per request from now on", len(part), size, store.write_budget)
            half = len(part) // 2
            pending.extendleft([part.slice(half, len(part)), part.slice(0, half)])


def creation_plans(info: CollectionInfo, *, legacy_server: bool) -> list[str]:
    """The ways to ask a server (``legacy_server``: 0.x) for a copy of ``info``'s collection, best
    first (the domain tries them in order and keeps the first whose configuration and schema read
    back equal).

    The rule, from Chroma 1.5.9's create (``Schema::reconcile_schema_and_config``): a request
    carrying a schema and a configuration that are both non-default is refused; a default
    configuration next to a non-default schema is ignored (its embedding function too); a
    schema the server counts as default (no metadata keys, default indexes) is replaced by its
    own default, which drops a declared embedding function; collection metadata with legacy
    ``hnsw:*`` keys counts as a configuration.  So:

    - a schema with per-key entries (records with metadata arrived, or indexes were declared)
      is sent as the schema alone: the server keeps it as it is, embedding function included;
    - otherwise (and always with legacy ``hnsw:*`` metadata, which a schema would conflict
      with) the configuration alone, exactly as read: its embedding function entry (null,
      ``legacy`` or a known function) and HNSW parameters are kept, and the schema's per-key
      entries grow again as the records arrive;
    - last, the client's form (a snapshot whose saved form this server does not take, e.g. one
      written by another server version).
    Saved JSON is sent as read, never through chromadb's Schema classes: their
    ``deserialize_from_json`` fills in ``DefaultEmbeddingFunction`` where a schema has none.
    """
    if legacy_server or info.legacy:
        return [PLAN_CLIENT]
    if _has_legacy_keys(info.metadata) and index_params(None, info.configuration_json) != info.index_params:
        # Made by 0.6.x and opened by 1.x: the configuration says l2 where the metadata keys
        # rule; only the metadata keys (the client's form) give the copy the space in force.
        return [PLAN_CLIENT]
    schema_keys = set(((info.schema_json or {}).get("keys") or {})) - set(SCHEMA_OWN_KEYS)
    plans = [PLAN_SCHEMA, PLAN_CONFIGURATION] if schema_keys and not _has_legacy_keys(info.metadata) \
        else [PLAN_CONFIGURATION, PLAN_SCHEMA]
    available = {PLAN_SCHEMA: info.schema_json is not None, PLAN_CONFIGURATION: info.configuration_json is not None}
    return [plan for plan in plans if available[plan]] + [PLAN_CLIENT]


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
    fields = [batch.ids[i], batch.documents[i], _wire_metadata(batch.metadatas[i]), batch.uris[i]]
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


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The header carrying CHROMA_AUTH_TOKEN (never logged)."""
    if not settings.chroma_auth_token:
        return {}
    if settings.chroma_auth_header == "X-Chroma-Token":
        return {"X-Chroma-Token": settings.chroma_auth_token}
    return {"Authorization": f"Bearer {settings.chroma_auth_token}"}


def _refuse_lists(batch: RecordBatch) -> None:
    """0.6.x servers accept list-valued metadata and silently drop it: refuse before writing."""
    for record_id, metadata in zip(batch.ids, batch.metadatas):
        for key, value in (metadata or {}).items():
            if isinstance(value, list):
                raise ChromaFailure(
                    f"this Chroma 0.x server would silently drop list-valued metadata (record {record_id!r}, "
                    f"key {key!r}); restore into a 1.x server instead"
                )


def _has_legacy_keys(metadata: dict[str, Any] | None) -> bool:
    return bool(metadata) and any(key in metadata for key in LEGACY_HNSW_KEYS)


def _json_safe(value: Any) -> Any:
    """A JSON-serialisable copy (configuration objects may hold non-JSON leaves)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)
