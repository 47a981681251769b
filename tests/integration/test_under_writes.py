"""Backups of a collection an application keeps writing: every backup completes, and no snapshot
holds a record state that never existed (Chroma's get is not atomic against an upsert)."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg2
import pytest

from chroma_backup.core import export_collection_to_postgres, read_tolerantly, verify_collection
from chroma_backup.core.reading import RunOptions
from chroma_backup.errors import ChromaFailure

DIM = 16


def versioned(ids, version, rng):
    """Records whose embedding, document and metadata all say which write made them."""
    embeddings = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    embeddings[:, 0] = version
    return dict(
        ids=ids,
        embeddings=embeddings,
        documents=[f"v{version}" for _ in ids],
        metadatas=[{"version": version, "source": "app"} for _ in ids],
    )


class Application(threading.Thread):
    """Upserts (all three fields at once), deletes and adds in bursts, as an application does."""

    def __init__(self, collection, n):
        super().__init__(daemon=True)
        self.collection, self.n = collection, n
        self.stop = threading.Event()
        self.writes = 0

    def run(self):
        rng = np.random.default_rng(7)
        version, next_id = 1, self.n
        while not self.stop.is_set():
            version += 1
            ids = [f"r{i}" for i in rng.choice(self.n, 150, replace=False)]
            self.collection.upsert(**versioned(ids, version, rng))
            gone = [f"r{i}" for i in rng.choice(self.n, 10, replace=False)]
            self.collection.delete(ids=gone)
            self.collection.add(**versioned([f"n{next_id + i}" for i in range(10)], version, rng))
            next_id += 10
            self.writes += 1


def torn_versions(database_url):
    """Stored record versions whose fields were not written together."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT record_id, valid_from, embedding, document, metadata->>'version' FROM chroma_data")
        rows = cur.fetchall()
    conn.close()
    torn = []
    for record_id, valid_from, embedding, document, meta_version in rows:
        vector_version = np.frombuffer(bytes(embedding), dtype="<f4")[0]
        if not (document == f"v{meta_version}" == f"v{int(vector_version)}"):
            torn.append((record_id, valid_from, float(vector_version), document, meta_version))
    return torn


@pytest.mark.slow
def test_backups_under_churn_complete_and_hold_only_states_that_existed(stores, client, name, database_url):
    chroma, db = stores
    collection = client.create_collection(name, embedding_function=None)
    rng = np.random.default_rng(1)
    for start in range(0, 3000, 1000):
        collection.add(**versioned([f"r{i}" for i in range(start, start + 1000)], 1, rng))
    app = Application(collection, 3000)
    app.start()
    results = []
    try:
        deadline = time.monotonic() + 60
        while len(results) < 25 and time.monotonic() < deadline:
            results.append(export_collection_to_postgres(chroma, db, name, run=RunOptions(read_workers=3)))
    finally:
        app.stop.set()
        app.join()
    assert app.writes >= 10, "the application hardly wrote: the test proves nothing"
    assert len(results) >= 10 and all(r.status == "complete" for r in results)
    assert torn_versions(database_url) == []
    # quiet now: one more backup, and the live collection equals it
    final = export_collection_to_postgres(chroma, db, name)
    assert verify_collection(chroma, db, name, snapshot_id=final.snapshot_id).identical


def test_a_page_with_ids_deleted_meanwhile_is_read_without_them(stores, client, name):
    chroma, _db = stores
    collection = client.create_collection(name, embedding_function=None)
    rng = np.random.default_rng(2)
    collection.add(**versioned([f"r{i}" for i in range(50)], 1, rng))
    live = chroma.open(name)
    calls = []
    real_fetch = chroma.fetch

    def flaky(col, ids):  # the server's "Error finding id" for an id deleted between listing and get
        calls.append(len(ids))
        if "r7" in ids:
            raise ChromaFailure("Chroma error during reading records: InternalError: Error finding id")
        return real_fetch(col, ids)

    collection.delete(ids=["r7"])
    chroma.fetch = flaky
    batch = read_tolerantly(chroma, live, [f"r{i}" for i in range(50)])
    assert sorted(batch.ids) == sorted(f"r{i}" for i in range(50) if i != 7)
    assert calls[0] == 50 and 1 in calls  # halved down to the single id


def test_an_id_that_exists_but_cannot_be_read_is_an_error(stores, client, name):
    chroma, _db = stores
    collection = client.create_collection(name, embedding_function=None)
    collection.add(**versioned([f"r{i}" for i in range(10)], 1, np.random.default_rng(3)))
    live = chroma.open(name)

    def broken(col, ids):
        raise ChromaFailure("Chroma error during reading records: InternalError: Error loading hnsw index")

    chroma.fetch = broken
    with pytest.raises(ChromaFailure, match="Error loading hnsw index"):
        read_tolerantly(chroma, live, [f"r{i}" for i in range(10)])
