"""The Chroma door: the only package that talks to a Chroma server (its HTTP API, through httpx).

- ``store``: ``ChromaStore``, one server, tenant and database, and ``Collection``
- ``compat``: Chroma 0.6.x and 1.x (``CollectionInfo``, index parameters, creation plans)
- ``sizing``: records and bytes per request
- ``http``: the transport and the translation of its errors
- ``wire``, ``idstream``: answers decoded and bodies encoded without a Python object per vector
  component (pure)
- ``launcher``: a local ``chroma run`` server (the demo, the benchmark and the tests)
"""

from chroma_backup.chroma.compat import (
    HNSW_KEYS,
    LEGACY_HNSW_KEYS,
    PLAN_CLIENT,
    PLAN_CONFIGURATION,
    PLAN_SCHEMA,
    CollectionInfo,
    creation_plans,
    index_params,
)
from chroma_backup.chroma.sizing import _records_within as records_within
from chroma_backup.chroma.store import ChromaStore, Collection

__all__ = [
    "HNSW_KEYS",
    "LEGACY_HNSW_KEYS",
    "PLAN_CLIENT",
    "PLAN_CONFIGURATION",
    "PLAN_SCHEMA",
    "ChromaStore",
    "Collection",
    "CollectionInfo",
    "creation_plans",
    "index_params",
    "records_within",
]
