"""Chroma 0.6.x and 1.x: how a collection is described and re-created on each.

0.6.x keeps a collection's distance space and HNSW parameters in ``hnsw:*`` collection metadata
and rejects ``configuration=``; 1.x keeps them in a configuration and a schema (and still honours
the metadata keys of collections made by 0.6.x).  ``CollectionInfo`` is what a backup saves of a
collection; ``creation_plans`` says how a server is asked for an exact copy of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chroma_backup.errors import ChromaFailure
from chroma_backup.records import RecordBatch

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
        return str(self.index_params.get("space", "l2"))

    @property
    def user_metadata(self) -> dict[str, Any] | None:
        """Collection metadata without the legacy index keys (0.6 servers keep the index there)."""
        plain = {k: v for k, v in (self.metadata or {}).items() if k not in LEGACY_HNSW_KEYS}
        return plain or None


# Chroma's defaults (identical on 0.6.x and 1.x), so parameters read from different servers compare.
HNSW_DEFAULTS = {
    "space": "l2",
    "ef_construction": 100,
    "ef_search": 100,
    "max_neighbors": 16,
    "resize_factor": 1.2,
    "sync_threshold": 1000,
}


def index_params(
    metadata: dict[str, Any] | None, configuration_json: dict[str, Any] | None, *, legacy_server: bool = False
) -> dict[str, Any]:
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
    schema_keys = set((info.schema_json or {}).get("keys") or {}) - set(SCHEMA_OWN_KEYS)
    plans = (
        [PLAN_SCHEMA, PLAN_CONFIGURATION]
        if schema_keys and not _has_legacy_keys(info.metadata)
        else [PLAN_CONFIGURATION, PLAN_SCHEMA]
    )
    available = {PLAN_SCHEMA: info.schema_json is not None, PLAN_CONFIGURATION: info.configuration_json is not None}
    return [plan for plan in plans if available[plan]] + [PLAN_CLIENT]


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


def _refuse_lists(batch: RecordBatch) -> None:
    """0.6.x servers accept list-valued metadata and silently drop it: refuse before writing."""
    for record_id, metadata in zip(batch.ids, batch.metadatas, strict=True):
        for key, value in (metadata or {}).items():
            if isinstance(value, list):
                raise ChromaFailure(
                    f"this Chroma 0.x server would silently drop list-valued metadata (record {record_id!r}, "
                    f"key {key!r}); restore into a 1.x server instead"
                )


def _has_legacy_keys(metadata: dict[str, Any] | None) -> bool:
    return metadata is not None and any(key in metadata for key in LEGACY_HNSW_KEYS)
