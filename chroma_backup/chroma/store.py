"""``ChromaStore``: one Chroma server, tenant and database as the program sees it.

Built on ``http`` (the only importer of httpx: Chroma's ``/api/v2``), ``compat`` (0.6.x and 1.x),
``sizing`` (request sizes) and ``wire`` / ``idstream`` (answers decoded without a Python object per
vector component).  The default embedding function can never run: no embedding function exists
here, and records always carry their embeddings.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from chroma_backup.chroma.compat import (
    PLAN_CLIENT,
    CollectionInfo,
    _creation_body,
    _refuse_lists,
    _version_tuple,
    creation_plans,
)
from chroma_backup.chroma.http import RequestTooLarge, Transport
from chroma_backup.chroma.idstream import IdStreamParser, MalformedListing
from chroma_backup.chroma.pacing import ReadPacer
from chroma_backup.chroma.sizing import (
    MAX_IDS_PER_GET,
    READ_BATCH,
    READ_BUDGET_BYTES,
    WRITE_BUDGET_BYTES,
    _records_within,
    _split_by_bytes,
    request_bytes,
)
from chroma_backup.chroma.wire import MalformedAnswer, decode_get, write_body
from chroma_backup.errors import ChromaFailure, ChromaUnavailable, CollectionNotFound, DatabaseNotFound, first_line
from chroma_backup.records import RecordBatch
from chroma_backup.settings import Settings

log = logging.getLogger(__name__)

INCLUDE_ALL = ["embeddings", "documents", "metadatas", "uris"]
LIST_PAGE = 1000  # collections / databases per listing request


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
    def from_model(cls, model: dict[str, Any]) -> Collection:
        return cls(
            id=str(model["id"]),
            name=model["name"],
            metadata=model.get("metadata") or None,
            configuration_json=_json_safe(model.get("configuration_json")),
            schema_json=_json_safe(model.get("serialized_schema")),
            dimension=model.get("dimension"),
        )


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
    pacer: ReadPacer | None = None  # paces record reads (READ_RATE_LIMIT, READ_RATE_ADAPTIVE)

    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        ssl: bool | None = None,
        timeout: float | None = None,
        database: str | None = None,
        create: bool = False,
        pacer: ReadPacer | None = None,
    ) -> ChromaStore:
        """Reach the server, read its version and limits, and check the tenant and database:
        ``DatabaseNotFound`` when either does not exist, unless ``create`` (a restore onto an
        empty server), which creates them."""
        database = database or settings.chroma_database
        address, transport = _transport(settings, host, port, ssl, timeout)
        try:
            version = str(transport.call("GET", "/version", f"connecting to {address}"))
            checks = transport.call("GET", "/pre-flight-checks", f"connecting to {address}")
            tenant = settings.chroma_tenant
            _open_or_create(transport, ("tenants", tenant), f"tenant {tenant!r} on {address}", create)
            _open_or_create(
                transport,
                ("tenants", tenant, "databases", database),
                f"database {database!r} of tenant {tenant!r} on {address}",
                create,
            )
        except BaseException:
            transport.close()
            raise
        if pacer is not None and pacer.active:
            transport.on_throttled = pacer.refused
        return cls(
            transport,
            tenant,
            database,
            address,
            version,
            int(checks.get("max_batch_size") or 0) or 1000,
            bool(checks.get("supports_base64_encoding")),
            pacer=pacer if pacer is not None and pacer.active else None,
        )

    @classmethod
    def tenant_databases(
        cls,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        ssl: bool | None = None,
        timeout: float | None = None,
    ) -> set[str]:
        """The databases of the configured tenant on a server (none when the tenant does not
        exist): what a restore onto a new or wiped server finds there, without creating anything."""
        address, transport = _transport(settings, host, port, ssl, timeout)
        tenant = settings.chroma_tenant
        try:
            try:
                transport.call("GET", Transport.path("tenants", tenant), f"opening tenant {tenant!r} on {address}")
            except CollectionNotFound:
                return set()
            path = Transport.path("tenants", tenant, "databases")
            return {d["name"] for d in _pages(transport, path, f"listing the databases of tenant {tenant!r}")}
        finally:
            transport.close()

    def close(self) -> None:
        self.transport.close()

    def unpaced(self) -> ChromaStore:
        """This store, its reads not paced (a restore's read-back: restoring fast is the point)."""
        return dataclasses.replace(self, pacer=None)

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
        return sorted(
            d["name"] for d in _pages(self.transport, path, f"listing the databases of tenant {self.tenant!r}")
        )

    def list_collection_names(self) -> list[str]:
        return sorted(c["name"] for c in _pages(self.transport, self._path(), "listing collections"))

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
        return CollectionInfo(
            id=collection.id,
            name=collection.name,
            metadata=collection.metadata,
            configuration_json=collection.configuration_json,
            schema_json=collection.schema_json,
            dimension=collection.dimension,
            server_version=self.server_version,
        )

    def creation_plans(self, info: CollectionInfo) -> list[str]:
        """The ways to ask this server for a copy of ``info``'s collection, best first."""
        return creation_plans(info, legacy_server=self.legacy)

    def create(self, name: str, info: CollectionInfo, plan: str = PLAN_CLIENT) -> Collection:
        """Create ``name`` from the saved form of ``info`` as ``plan`` says (``creation_plans``)."""
        metadata, configuration, schema = _creation_body(info, plan, legacy_server=self.legacy)
        body = {
            "name": name,
            "metadata": metadata,
            "configuration": configuration,
            "schema": schema,
            "get_or_create": False,
        }
        what = f"creating collection {name!r}" + ("" if plan == PLAN_CLIENT else f" from the saved {plan}")
        return Collection.from_model(self.transport.call("POST", self._path(), what, body=body))

    def rename(self, collection: Collection, new_name: str) -> None:
        self.transport.call(
            "PUT",
            self._path(collection.id),
            f"renaming collection {collection.name!r} to {new_name!r}",
            body={"new_name": new_name, "new_metadata": None},
        )

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
        if self.pacer is None:
            body = self.transport.fetch(
                "POST", self._path(collection.id, "get"), what, body=_get_body(ids, INCLUDE_ALL)
            )
        else:
            self.pacer.wait_for(len(ids))
            started = time.monotonic()
            try:
                body = self.transport.fetch(
                    "POST", self._path(collection.id, "get"), what, body=_get_body(ids, INCLUDE_ALL)
                )
            except ChromaUnavailable:  # 503, or 429 for longer than the transport waits
                self.pacer.refused()
                raise
            self.pacer.observe(time.monotonic() - started, len(ids))
        try:
            return decode_get(body)
        except MalformedAnswer as error:
            raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None

    def fetch_first(self, collection: Collection, limit: int) -> RecordBatch:
        """The first ``limit`` records of the collection in one request (its ids and content
        together: a small collection read whole, as consistently as one request reads)."""
        what = f"reading records of {collection.name!r}"
        body_json = {**_get_body(None, INCLUDE_ALL), "limit": limit, "offset": 0}
        if self.pacer is not None:
            self.pacer.wait_for(limit)
        started = time.monotonic()
        body = self.transport.fetch("POST", self._path(collection.id, "get"), what, body=body_json)
        seconds = time.monotonic() - started
        try:
            batch = decode_get(body)
        except MalformedAnswer as error:
            raise ChromaFailure(f"Chroma sent a malformed answer during {what}: {error}") from None
        if self.pacer is not None:
            self.pacer.observe(seconds, max(1, len(batch)), kind="first")
        return batch

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
        what = (
            f"adding records to {collection.name!r}" if verb == "add" else f"upserting records into {collection.name!r}"
        )
        self.transport.call("POST", self._path(collection.id, verb), what, body=body)

    def delete_records(self, collection: Collection, ids: list[str]) -> None:
        self.transport.call(
            "POST",
            self._path(collection.id, "delete"),
            f"deleting records from {collection.name!r}",
            body={"ids": ids, "where": None, "where_document": None},
        )

    def query(
        self, collection: Collection, embeddings: np.ndarray, n_results: int
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Nearest ids and distances for each query embedding (never query texts)."""
        body = {
            "ids": None,
            "query_embeddings": np.asarray(embeddings, dtype=np.float32).tolist(),
            "n_results": n_results,
            "where": None,
            "where_document": None,
            "include": ["distances"],
        }
        result = self.transport.call(
            "POST", self._path(collection.id, "query"), f"querying {collection.name!r}", body=body
        )
        return [list(ids) for ids in result["ids"]], [list(d) for d in result["distances"]]

    def ids_at(self, collection: Collection, offsets: list[int]) -> list[str]:
        """The ids at these positions of the collection's storage order (a random probe sample)."""
        ids: list[str] = []
        for offset in offsets:
            body = {**_get_body(None, []), "limit": 1, "offset": offset}
            ids.extend(
                self.transport.call(
                    "POST", self._path(collection.id, "get"), f"listing ids of {collection.name!r}", body=body
                )["ids"]
            )
        return list(dict.fromkeys(ids))

    def existing_ids(self, collection: Collection, ids: list[str]) -> list[str]:
        """Which of ``ids`` exist (no content read)."""
        return list(
            self.transport.call(
                "POST",
                self._path(collection.id, "get"),
                f"looking up ids in {collection.name!r}",
                body=_get_body(ids, []),
            )["ids"]
        )


def _get_body(ids: list[str] | None, include: list[str]) -> dict[str, Any]:
    return {"ids": ids, "where": None, "limit": None, "offset": None, "where_document": None, "include": include}


def _write_within_budget(store: ChromaStore, collection: Collection, batch: RecordBatch, verb: str) -> None:
    pending = deque(_split_by_bytes(batch, store.write_budget, store.base64, store.batch_size()))
    while pending:
        part = pending.popleft()
        try:
            store.write(collection, part, verb)
        except RequestTooLarge as error:
            if len(part) == 1:
                raise ChromaFailure(
                    f"{first_line(error)}: record {part.ids[0]!r} alone is larger than the "
                    "server accepts; raise its max_payload_size_bytes"
                ) from None
            size = request_bytes(part, store.base64)
            store.write_budget = max(1, min(store.write_budget, size) // 2)
            log.warning(
                "chroma refused a write of %d records (~%d bytes) as too large; writing at most %d bytes "
                "per request from now on",
                len(part),
                size,
                store.write_budget,
            )
            half = len(part) // 2
            pending.extendleft([part.slice(half, len(part)), part.slice(0, half)])


def server_address(settings: Settings, host: str | None, port: int | None, ssl: bool | None) -> str:
    """A server's base address: the configured one's parts where none are given."""
    ssl = settings.chromadb_use_ssl if ssl is None else ssl
    return f"{'https' if ssl else 'http'}://{host or settings.chromadb_host}:{port or settings.chromadb_port}"


def _transport(
    settings: Settings, host: str | None, port: int | None, ssl: bool | None, timeout: float | None
) -> tuple[str, Transport]:
    address = server_address(settings, host, port, ssl)
    return address, Transport(address, _auth_headers(settings), timeout or settings.chroma_timeout_seconds)


def _pages(transport: Transport, path: str, what: str) -> Iterator[dict[str, Any]]:
    """Every item of a paged listing (collections, databases)."""
    offset = 0
    while True:
        page = transport.call("GET", path, what, params={"limit": LIST_PAGE, "offset": offset})
        yield from page
        if len(page) < LIST_PAGE:
            return
        offset += len(page)


def _open_or_create(transport: Transport, parts: tuple[str, ...], what: str, create: bool) -> None:
    """Check that a tenant or a database exists; create it when it does not and ``create``."""
    try:
        transport.call("GET", Transport.path(*parts), f"opening {what}")
        return
    except CollectionNotFound:
        if not create:
            raise DatabaseNotFound(f"{what} does not exist") from None
    transport.call("POST", Transport.path(*parts[:-1]), f"creating {what}", body={"name": parts[-1]})
    log.info("created %s", what)


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The header carrying CHROMA_AUTH_TOKEN (never logged)."""
    if not settings.chroma_auth_token:
        return {}
    if settings.chroma_auth_header == "X-Chroma-Token":
        return {"X-Chroma-Token": settings.chroma_auth_token}
    return {"Authorization": f"Bearer {settings.chroma_auth_token}"}


def _json_safe(value: Any) -> Any:
    """A JSON-serialisable copy (configuration objects may hold non-JSON leaves)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)
