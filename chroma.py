"""Chroma: the client factory, version detection, collection description and re-creation, paging.

The only module that imports chromadb (and its HTTP transport, httpx).  Every difference between
Chroma versions lives here.  Errors are translated by class: ``NotFoundError`` becomes
``CollectionNotFound``; connection failures, timeouts and 502/503/504 become ``ChromaUnavailable``
(transient); any other error the server returns becomes ``ChromaFailure``.

The default embedding function is never attached: collections are always opened and created with
``embedding_function=None`` and records always carry their embeddings.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx
import numpy as np

from config import Settings
from errors import ChromaFailure, ChromaUnavailable, CollectionNotFound, first_line
from idstream import IdStreamParser, MalformedListing
from records import RecordBatch
from wire import SPARSE_TAG, MalformedAnswer, decode_get

log = logging.getLogger(__name__)

# get(ids=...) fails above 32,763 ids on 1.5.9, whatever the server's max batch size says.
MAX_IDS_PER_GET = 32_000
# Measured here (3 readers, full backup, decoded by ``wire``): at 100k, pages of 250 / 500 / 1,000
# took Chroma 8.1 / 7.4 / 6.9 CPU-seconds and the backup 11.6 / 10.5 / 10.1 s (peak RSS 168 / 195 /
# 290 MB); but at 1M pages of 500 peaked at 361 MB (208 MB at 100k) while pages of 250 peaked at
# 215 MB in 103.5 s against 99.4 s: the peak RSS must not grow with the collection.
READ_BATCH = 250
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
_TRANSIENT_STATUS = {502, 503, 504}


@contextmanager
def _translated(what: str) -> Iterator[None]:
    from chromadb import errors as chroma_errors

    try:
        yield
    except chroma_errors.NotFoundError as error:
        raise CollectionNotFound(f"{what}: {first_line(error)}") from error
    except (httpx.TransportError, ConnectionError, TimeoutError) as error:
        raise ChromaUnavailable(f"Chroma unreachable during {what}: {type(error).__name__}: {first_line(error)}") from error
    except httpx.HTTPStatusError as error:
        status = error.response.status_code
        cls = ChromaUnavailable if status in _TRANSIENT_STATUS else ChromaFailure
        raise cls(f"Chroma answered HTTP {status} during {what}") from error
    except chroma_errors.ChromaError as error:
        raise ChromaFailure(f"Chroma error during {what}: {type(error).__name__}: {first_line(error)}") from error
    except Exception as error:
        if type(error) is not Exception:
            raise
        # chromadb raises a bare Exception(body) for errors it has no class for, e.g. a 0.6.x
        # server's {"error": "InvalidCollection", ...}: classify by that error name.
        name = _error_name(str(error))
        if name in _NOT_FOUND_ERRORS:
            raise CollectionNotFound(f"{what}: {name}") from error
        raise ChromaFailure(f"Chroma error during {what}: {name or first_line(error)}") from error


_NOT_FOUND_ERRORS = {"InvalidCollection", "NotFoundError"}


def _error_name(body: str) -> str | None:
    try:
        data = json.loads(body.split(" (trace ID:")[0])
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


def _raise_unavailable(response: httpx.Response) -> None:
    """httpx response hook: a gateway/unavailable status is transient, whatever the body says."""
    if response.status_code in _TRANSIENT_STATUS:
        raise ChromaUnavailable(f"Chroma answered HTTP {response.status_code} ({response.request.url.path})")


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


def _chroma_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Inverse of ``wire.plain_metadata``."""
    if not metadata:
        return None
    result = {}
    for key, value in metadata.items():
        if isinstance(value, dict) and SPARSE_TAG in value:
            from chromadb.api.types import SparseVector

            sparse = value[SPARSE_TAG]
            value = SparseVector(indices=sparse["indices"], values=sparse["values"], labels=sparse.get("labels"))
        result[key] = value
    return result


@dataclass
class ChromaStore:
    """One Chroma server, tenant and database."""

    client: Any
    tenant: str
    database: str
    address: str
    server_version: str
    timeout: float
    _max_batch: int | None = field(default=None, repr=False)
    _reconnect: Any = field(default=None, repr=False)  # opens another client like this one

    @classmethod
    def connect(cls, settings: Settings, *, host: str | None = None, port: int | None = None,
                ssl: bool | None = None, timeout: float | None = None,
                database: str | None = None) -> "ChromaStore":
        host, port = host or settings.chromadb_host, port or settings.chromadb_port
        ssl = settings.chromadb_use_ssl if ssl is None else ssl
        database = database or settings.chroma_database
        timeout = timeout or settings.chroma_timeout_seconds
        address = f"{'https' if ssl else 'http'}://{host}:{port}"
        client, version = _http_client(settings, host, port, ssl, database, timeout, address)
        return cls(client, settings.chroma_tenant, database, address, version, timeout,
                   _reconnect=lambda: cls.connect(settings, host=host, port=port, ssl=ssl, timeout=timeout,
                                                  database=database))

    def clone(self) -> "ChromaStore":
        """Another client to the same server and database (one per reading thread: the server
        answers concurrent reads in parallel)."""
        return self._reconnect()

    # -- server ---------------------------------------------------------------------------------

    @property
    def legacy(self) -> bool:
        """True for 0.x servers (no configuration/schema on create)."""
        return _version_tuple(self.server_version) < (1,)

    def heartbeat(self) -> int:
        with _translated("heartbeat"):
            return self.client.heartbeat()

    def max_batch_size(self) -> int:
        if self._max_batch is None:
            with _translated("reading the max batch size"):
                self._max_batch = int(self.client.get_max_batch_size())
        return self._max_batch

    def batch_size(self, wanted: int = 0) -> int:
        """Records per write: ``wanted`` (0 = as large as allowed) capped by the server's limits."""
        limit = min(self.max_batch_size(), MAX_IDS_PER_GET)
        return min(wanted, limit) if wanted > 0 else limit

    def read_batch_size(self, wanted: int = 0) -> int:
        """Records per read: ``wanted``, or READ_BATCH when 0 (larger pages cost Chroma less CPU
        and every reader more memory)."""
        return self.batch_size(wanted or READ_BATCH)

    def list_databases(self) -> list[str]:
        """Every database of this store's tenant."""
        with _translated(f"listing the databases of tenant {self.tenant!r}"):
            return sorted(d["name"] if isinstance(d, dict) else d.name
                          for d in self.client._admin_client.list_databases(tenant=self.tenant))

    def list_collection_names(self) -> list[str]:
        with _translated("listing collections"):
            collections = self.client.list_collections()
        return sorted(c if isinstance(c, str) else c.name for c in collections)

    # -- collections ----------------------------------------------------------------------------

    def open(self, name: str) -> Any:
        with _translated(f"opening collection {name!r}"):
            return self.client.get_collection(name, embedding_function=None)

    def exists(self, name: str) -> bool:
        try:
            self.open(name)
            return True
        except CollectionNotFound:
            return False

    def describe(self, collection: Any) -> CollectionInfo:
        model = getattr(collection, "_model", None)
        schema = getattr(model, "serialized_schema", None) if model is not None else None
        config = getattr(model, "configuration_json", None) if model is not None else None
        if config is None:
            config = getattr(collection, "configuration_json", None)
        dimension = getattr(model, "dimension", None) if model is not None else None
        return CollectionInfo(
            id=str(collection.id),
            name=collection.name,
            metadata=dict(collection.metadata) if collection.metadata else None,
            configuration_json=_json_safe(config),
            schema_json=_json_safe(schema),
            dimension=dimension,
            server_version=self.server_version,
        )

    def configured_params(self, collection: Any) -> dict[str, Any]:
        """The index parameters a 1.x server's configuration says are in force (None on 0.x)."""
        if self.legacy:
            return {}
        return index_params(None, self.describe(collection).configuration_json)

    def create(self, name: str, info: CollectionInfo) -> Any:
        """Create ``name`` with the saved schema/configuration and metadata of ``info``."""
        metadata = dict(info.metadata) if info.metadata else None
        kwargs: dict[str, Any] = {"embedding_function": None}
        params = info.index_params
        if self.legacy:
            # 0.6.x servers reject configuration=...: the legacy metadata keys carry the index.
            metadata = dict(metadata or {})
            for legacy_key, key in LEGACY_HNSW_KEYS.items():
                if key in params:
                    metadata[legacy_key] = params[key]
        elif info.schema_json and not _has_legacy_keys(info.metadata):
            from chromadb.api.types import Schema

            kwargs["schema"] = Schema.deserialize_from_json(info.schema_json)
        elif not _has_legacy_keys(info.metadata):
            hnsw = {key: params[key] for key in HNSW_KEYS if key in params}
            kwargs["configuration"] = {"hnsw": hnsw}
        with _translated(f"creating collection {name!r}"):
            return self.client.create_collection(name, metadata=metadata or None, **kwargs)

    def rename(self, collection: Any, new_name: str) -> None:
        with _translated(f"renaming collection {collection.name!r} to {new_name!r}"):
            collection.modify(name=new_name)

    def delete(self, name: str) -> None:
        with _translated(f"deleting collection {name!r}"):
            self.client.delete_collection(name)

    # -- records --------------------------------------------------------------------------------

    def count(self, collection: Any) -> int:
        with _translated(f"counting {collection.name!r}"):
            return int(collection.count())

    def list_ids(self, collection: Any) -> list[str]:
        """Every id as one list (small collections and tests; backups stream ``iter_ids``)."""
        return [record_id for page in self.iter_ids(collection) for record_id in page]

    def iter_ids(self, collection: Any) -> Iterator[list[str]]:
        """Every id of the collection from one ``get(include=[])`` request (the consistent
        enumeration a backup reads by), parsed as the response arrives and handed out as it
        completes: memory stays flat however large the collection (``idstream``)."""
        url, body = self._get_request(collection, None, [])
        return _streamed_ids(self.client._server, url, body, f"listing ids of {collection.name!r}")

    def _get_request(self, collection: Any, ids: list[str] | None, include: list[str]) -> tuple[str, str]:
        """URL and body of a ``get`` posted through the chromadb client's own HTTP session (its
        headers, timeout and transient-status hook), for answers we decode ourselves."""
        path = f"/tenants/{self.tenant}/databases/{self.database}/collections/{collection.id}/get"
        body = json.dumps({"ids": ids, "where": None, "limit": None, "offset": None, "where_document": None,
                           "include": include})
        return self.client._server._api_url + urllib.parse.quote(path, safe="/"), body

    def fetch(self, collection: Any, ids: list[str]) -> RecordBatch:
        """The full records for ``ids`` (missing ids are skipped; order is the server's).

        Posted through the chromadb client's session like ``iter_ids``, and decoded by ``wire``
        (vectors straight to float32) instead of the client's float-by-float decoding."""
        what = f"reading records of {collection.name!r}"
        server = self.client._server
        url, body = self._get_request(collection, ids, INCLUDE_ALL)
        with _translated(what):
            response = server._session.post(url, content=body)
            server._raise_chroma_error(response)
        try:
            return decode_get(response.content)
        except MalformedAnswer as error:
            raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None

    def add(self, collection: Any, batch: RecordBatch) -> None:
        if not len(batch):
            return
        if self.legacy:
            _refuse_lists(batch)
        documents = batch.documents if any(d is not None for d in batch.documents) else None
        metadatas = [_chroma_metadata(m) for m in batch.metadatas]
        uris = batch.uris if any(u is not None for u in batch.uris) else None
        with _translated(f"adding records to {collection.name!r}"):
            collection.add(
                ids=batch.ids,
                embeddings=batch.embeddings,
                documents=documents,
                metadatas=metadatas if any(m is not None for m in metadatas) else None,
                uris=uris,
            )

    def upsert(self, collection: Any, batch: RecordBatch) -> None:
        """Insert or replace records (the demo changes records with it)."""
        with _translated(f"upserting records into {collection.name!r}"):
            collection.upsert(ids=batch.ids, embeddings=batch.embeddings, documents=batch.documents,
                              metadatas=[_chroma_metadata(m) for m in batch.metadatas])

    def delete_records(self, collection: Any, ids: list[str]) -> None:
        with _translated(f"deleting records from {collection.name!r}"):
            collection.delete(ids=ids)

    def query(self, collection: Any, embeddings: np.ndarray, n_results: int) -> tuple[list[list[str]], list[list[float]]]:
        """Nearest ids and distances for each query embedding (never query_texts)."""
        with _translated(f"querying {collection.name!r}"):
            result = collection.query(query_embeddings=embeddings, n_results=n_results, include=["distances"])
        return [list(ids) for ids in result["ids"]], [list(d) for d in result["distances"]]

    def ids_at(self, collection: Any, offsets: list[int]) -> list[str]:
        """The ids at these positions of the collection's storage order (a random probe sample)."""
        ids: list[str] = []
        with _translated(f"listing ids of {collection.name!r}"):
            for offset in offsets:
                ids.extend(collection.get(limit=1, offset=offset, include=[])["ids"])
        return list(dict.fromkeys(ids))

    def existing_ids(self, collection: Any, ids: list[str]) -> list[str]:
        """Which of ``ids`` exist (no content read)."""
        with _translated(f"looking up ids in {collection.name!r}"):
            return list(collection.get(ids=ids, include=[])["ids"])


def _streamed_ids(server: Any, url: str, body: str, what: str) -> Iterator[list[str]]:
    """POST an id-only ``get`` and parse the body as it streams in."""
    parser = IdStreamParser()
    with _translated(what), server._session.stream("POST", url, content=body) as response:
        if response.status_code >= 400:
            response.read()
            server._raise_chroma_error(response)
        try:
            for text in response.iter_text():
                ids = parser.feed(text)
                if ids:
                    yield ids
            parser.close()
        except MalformedListing as error:
            raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None


def _http_client(settings: Settings, host: str, port: int, ssl: bool, database: str, timeout: float,
                 address: str) -> tuple[Any, str]:
    """A chromadb HttpClient with a request timeout and transient-status hook, and the server's
    version."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    try:
        with _translated(f"connecting to {address}"):
            client = chromadb.HttpClient(
                host=host, port=port, ssl=ssl, headers=_auth_headers(settings),
                settings=ChromaSettings(anonymized_telemetry=False), tenant=settings.chroma_tenant, database=database,
            )
            # chromadb's HTTP session has no timeout at all; a hung server would hang us.
            session = client._server._session
            session.timeout = httpx.Timeout(timeout)
            session.event_hooks["response"].append(_raise_unavailable)
            return client, str(client.get_version())
    except ValueError as error:  # chromadb's "Could not connect to a Chroma server"
        raise ChromaUnavailable(f"Chroma unreachable at {address}: {first_line(error)}") from error


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
