"""Benchmark: backup and restore measured against Chroma's own read and write speed, in one run.

    python bench/bench.py --records 100000 --dim 384 [--repeat 2] [--json PATH]

Builds a synthetic collection in a real ``chroma run`` server (the populated data directory is
cached under bench/.cache, so re-runs skip the slow HNSW build), uses PostgreSQL from
--database-url / TEST_DATABASE_URL or an embedded pgserver, and measures each operation at least
``--repeat`` times in a fresh process (so peak RSS is that operation's own):

  raw_read         paging every record with embeddings, documents, metadatas (best page size)
  backup_full      first backup into an empty schema
  backup_nochange  second backup, nothing changed (plus bytes written to PostgreSQL)
  backup_churn     backup after changing 1% of records (updates, deletes, adds)
  raw_add          adding the same records into a fresh collection, max-size batches
  restore          restoring the latest snapshot into a new collection (verified)
  storage          relation size after 1 full backup and after 24 backups with 1% churn each
  verify           comparing the live collection with the no-change snapshot, record by record
  deep_check       the deep check: every record read and queried by its own vector (health --deep)
  memory           peak RSS and time of a full backup at --baseline-records (default records/5),
                   to compare with the full backup's at --records (RSS flat, time linear)

    python bench/bench.py --records 1000000 --scale [--repeat 1]

measures only what grows with the collection (raw_read, backup_full, backup_nochange, verify) at a
million records and the full backup at 100k as the baseline; the collection's build time is
reported (it is cached with the data directory).

    python bench/bench.py --server --collections 20 --records 100000 [--parallel 1,2,4]

measures a whole-server restore (``restore --all``) of --collections collections of different
sizes (summing to --records) and spaces in two databases onto an empty server, with each
--parallel setting, against Chroma's own ``add`` of the same records into the same collections
with as many writers in the same run (raw_add_pN: do writes to different collections run side by
side?), and reports the restore time per million records (the RTO).

    python bench/bench.py --collections 1000 --records-per-collection 1000 --dim 64 [--concurrency 1,4]

measures the many-collections case: Chroma's own client reading every collection, then for each
BACKUP_CONCURRENCY setting a first (full) and a no-change backup round and a health round of all
of them (``python main.py backup`` / ``health`` as the CLI runs them, each in a fresh process).

and prints medians and the ratios the README quotes.  Absolute times on a shared 2-core machine
are noisy; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from chroma_backup.chroma.launcher import LocalChroma

ROOT = Path(__file__).resolve().parent.parent

COLLECTION = "bench"
SEED = 42
TOPICS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
WORDS = ("vector", "backup", "restore", "index", "segment", "query", "record", "batch", "server", "snapshot")


# -- the synthetic data -------------------------------------------------------------------------


def synthetic_batch(start: int, stop: int, dim: int, seed: int = SEED):
    import numpy as np

    from chroma_backup.records import RecordBatch

    rng = np.random.default_rng([seed, start])
    n = stop - start
    words = rng.integers(0, len(WORDS), size=(n, 28))
    return RecordBatch(
        ids=[f"rec-{i:08d}" for i in range(start, stop)],
        embeddings=rng.normal(size=(n, dim)).astype("<f4"),
        documents=[" ".join(WORDS[w] for w in row)[:200] for row in words],  # ~200 characters
        metadatas=[
            {"topic": TOPICS[i % len(TOPICS)], "rank": int(i), "score": float(i % 997) / 7.0, "public": bool(i % 3)}
            for i in range(start, stop)
        ],
        uris=[None] * n,
    )


# -- servers ------------------------------------------------------------------------------------


class Chroma(LocalChroma):
    """The shared launcher, with its data path made absolute (chroma runs from the parent
    directory) and a longer start timeout (a big cached collection loads first)."""

    def __init__(self, path: Path):
        super().__init__(path.resolve())

    def __enter__(self) -> Chroma:
        self.start(timeout=120)
        return self


def settings_for(port: int, database_url: str, table: str, env: dict | None = None):
    """The settings of a CLI run against the bench's server and catalog (COLLECTION unless
    ``env`` says otherwise)."""
    from chroma_backup.settings import load_settings

    return load_settings(
        {
            "CHROMADB_HOST": "127.0.0.1",
            "CHROMADB_PORT": str(port),
            "DATABASE_URL": database_url,
            "BACKUP_TABLE": table,
            "CHROMA_COLLECTION_NAME": COLLECTION,
            **(env or {}),
        },
        env_file=None,
    )


def stores(port: int, database_url: str, table: str):
    from chroma_backup.chroma import ChromaStore
    from chroma_backup.postgres import Database

    settings = settings_for(port, database_url, table)
    database = Database(settings)
    database.migrate()
    return ChromaStore.connect(settings), database


def populate(path: Path, records: int, dim: int) -> None:
    from chroma_backup.chroma import ChromaStore, CollectionInfo

    with Chroma(path) as server:
        chroma = ChromaStore.connect(settings_for(server.port, "postgresql://unused@localhost/x", "unused"))
        info = CollectionInfo(
            "", COLLECTION, {"bench": True}, {"hnsw": {"space": "l2"}}, None, dim, chroma.server_version
        )
        collection = chroma.create(COLLECTION, info)
        size = chroma.batch_size()
        for start in range(0, records, size):
            chroma.add(collection, synthetic_batch(start, min(records, start + size), dim))
            print(f"  populated {min(records, start + size)}/{records}", end="\r", flush=True)
        print()


# -- measurements (each runs in a fresh process) --------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def m_raw_read(port: int, page: int) -> dict:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_collection(COLLECTION, embedding_function=None)
    started = time.perf_counter()
    total, offset = 0, 0
    while True:
        got = collection.get(limit=page, offset=offset, include=["embeddings", "documents", "metadatas"])
        n = len(got["ids"])
        total += n
        offset += n
        if n < page:
            break
    return {"seconds": time.perf_counter() - started, "records": total, "rss_mb": _peak_rss_mb()}


def m_backup(port: int, database_url: str, table: str, workers: int = 1) -> dict:
    from chroma_backup.core import export_collection_to_postgres
    from chroma_backup.core.reading import RunOptions

    chroma, database = stores(port, database_url, table)
    before = database.retention.storage_bytes()
    started = time.perf_counter()
    result = export_collection_to_postgres(chroma, database, COLLECTION, run=RunOptions(read_workers=workers))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "records": result.records,
        "rss_mb": _peak_rss_mb(),
        "bytes_written": database.retention.storage_bytes() - before,
        "copy_bytes": result.bytes_written,
        "added": result.added,
        "updated": result.updated,
        "deleted": result.deleted,
    }


def m_verify(port: int, database_url: str, table: str, workers: int = 1) -> dict:
    from chroma_backup.core import verify_collection
    from chroma_backup.core.reading import RunOptions

    chroma, database = stores(port, database_url, table)
    started = time.perf_counter()
    result = verify_collection(chroma, database, COLLECTION, run=RunOptions(read_workers=workers))
    seconds = time.perf_counter() - started
    if not result.identical:
        raise RuntimeError(f"verify found differences: {result.as_json()}")
    return {"seconds": seconds, "records": result.live_records, "rss_mb": _peak_rss_mb()}


def m_deep(port: int, database_url: str, table: str, workers: int = 1) -> dict:
    """The deep check: every record read and queried against the newest snapshot."""
    from chroma_backup.core.deep import deep_scan
    from chroma_backup.core.reading import RunOptions
    from chroma_backup.core.snapshots import resolve_snapshot

    chroma, database = stores(port, database_url, table)
    snapshot = resolve_snapshot(database, chroma.tenant, chroma.database, COLLECTION)
    started = time.perf_counter()
    found = deep_scan(chroma, database, chroma.open(COLLECTION), snapshot, run=RunOptions(read_workers=workers))
    seconds = time.perf_counter() - started
    if found.unreadable or found.gone:
        raise RuntimeError(f"the deep check found damage in a healthy collection: {found.counts()}")
    return {"seconds": seconds, "records": found.checked, "rss_mb": _peak_rss_mb(), "unindexed": found.unindexed}


def m_raw_add(port: int, records: int, dim: int) -> dict:
    from chroma_backup.chroma import ChromaStore, CollectionInfo

    chroma = ChromaStore.connect(settings_for(port, "postgresql://unused@localhost/x", "unused"))
    name = "rawadd-" + uuid.uuid4().hex[:8]
    size = chroma.batch_size()
    batches = [synthetic_batch(start, min(records, start + size), dim) for start in range(0, records, size)]
    info = CollectionInfo("", name, {"bench": True}, {"hnsw": {"space": "l2"}}, None, dim, chroma.server_version)
    collection = chroma.create(name, info)
    started = time.perf_counter()
    for batch in batches:
        chroma.add(collection, batch)
    seconds = time.perf_counter() - started
    chroma.delete(name)
    return {"seconds": seconds, "records": records, "rss_mb": _peak_rss_mb()}


def m_restore(port: int, database_url: str, table: str, workers: int = 1) -> dict:
    from chroma_backup.core import import_postgres_to_chroma
    from chroma_backup.core.reading import RunOptions

    chroma, database = stores(port, database_url, table)
    target = "restored-" + uuid.uuid4().hex[:8]
    started = time.perf_counter()
    result = import_postgres_to_chroma(
        chroma, database, COLLECTION, target=target, run=RunOptions(read_workers=workers)
    )
    seconds = time.perf_counter() - started
    chroma.delete(target)
    return {"seconds": seconds, "records": result.records, "rss_mb": _peak_rss_mb(), "verified": result.verified}


def churn(port: int, records: int, dim: int, round_: int, fraction: float = 0.01) -> dict:
    """Change ``fraction`` of the records: 40% of it updates, 30% deletes, 30% adds."""
    import numpy as np

    from chroma_backup.chroma import ChromaStore

    chroma = ChromaStore.connect(settings_for(port, "postgresql://unused@localhost/x", "unused"))
    collection = chroma.open(COLLECTION)
    ids = chroma.list_ids(collection)
    rng = np.random.default_rng([SEED, 1000 + round_])
    k = max(3, int(len(ids) * fraction))
    picked = rng.choice(len(ids), size=int(k * 0.7), replace=False)
    update_ids = [ids[i] for i in picked[: int(k * 0.4)]]
    delete_ids = [ids[i] for i in picked[int(k * 0.4) :]]
    updates = synthetic_batch(0, len(update_ids), dim, seed=SEED + 7 + round_)
    updates.ids = update_ids
    chroma.upsert(collection, updates)
    chroma.delete_records(collection, delete_ids)
    start = 10 * records + round_ * records
    chroma.add(collection, synthetic_batch(start, start + int(k * 0.3), dim))
    return {"updated": len(update_ids), "deleted": len(delete_ids), "added": int(k * 0.3)}


# -- the whole-server case -------------------------------------------------------------------------

SERVER_DATABASES = ("default_database", "bench_b")
SPACES = ("l2", "cosine", "ip")


def server_layout(collections: int, records: int) -> list[tuple[str, str, str, int]]:
    """(database, name, space, records) of each collection: sizes 1 : 2 : ... : n, summing to
    ``records``, spaces and databases taken in turn."""
    total = collections * (collections + 1) // 2
    sizes = [max(1, records * (i + 1) // total) for i in range(collections)]
    return [(SERVER_DATABASES[i % 2], f"col-{i:03d}", SPACES[i % 3], size) for i, size in enumerate(sizes)]


def server_batches(layout_item: tuple[str, str, str, int], index: int, dim: int, size: int):
    *_, records = layout_item
    for start in range(0, records, size):
        yield synthetic_batch(start, min(records, start + size), dim, seed=SEED + index)


def write_server(port: int, layout: list[tuple[str, str, str, int]], dim: int, writers: int) -> float:
    """Chroma's own speed: create the collections and ``add`` their records, ``writers``
    collections at a time (each writer its own connection), largest first; returns seconds."""
    import queue
    import threading

    from chroma_backup.chroma import ChromaStore, CollectionInfo

    settings = settings_for(port, "postgresql://unused@localhost/x", "unused")
    for database in SERVER_DATABASES:
        ChromaStore.connect(settings, database=database, create=True).close()
    pending: queue.Queue = queue.Queue()
    for index, item in sorted(enumerate(layout), key=lambda pair: -pair[1][3]):
        pending.put((index, item))
    errors: list[BaseException] = []

    def writer() -> None:
        stores: dict[str, ChromaStore] = {}
        try:
            while True:
                try:
                    index, item = pending.get_nowait()
                except queue.Empty:
                    return
                database, name, space, _ = item
                if database not in stores:
                    stores[database] = ChromaStore.connect(settings, database=database)
                chroma = stores[database]
                info = CollectionInfo("", name, None, {"hnsw": {"space": space}}, None, dim, chroma.server_version)
                collection = chroma.create(name, info)
                for batch in server_batches(item, index, dim, chroma.batch_size()):
                    chroma.add(collection, batch)
        except BaseException as error:  # raised in the caller
            errors.append(error)
        finally:
            for store in stores.values():
                store.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def m_raw_add_server(path: str, layout: list, dim: int, writers: int) -> dict:
    with Chroma(Path(path)) as server:
        seconds = write_server(server.port, layout, dim, writers)
    return {"seconds": seconds, "records": sum(item[3] for item in layout), "rss_mb": _peak_rss_mb()}


def m_backup_server(port: int, database_url: str, table: str, layout: list) -> dict:
    from chroma_backup.chroma import ChromaStore
    from chroma_backup.core import export_collection_to_postgres
    from chroma_backup.postgres import Database

    settings = settings_for(port, database_url, table)
    database = Database(settings)
    database.migrate()
    started = time.perf_counter()
    for db_name in SERVER_DATABASES:
        chroma = ChromaStore.connect(settings, database=db_name)
        for item in layout:
            if item[0] == db_name:
                export_collection_to_postgres(chroma, database, item[1])
        chroma.close()
    return {"seconds": time.perf_counter() - started, "records": sum(item[3] for item in layout), "rss_mb": 0.0}


def m_restore_server(path: str, database_url: str, table: str, parallel: int) -> dict:
    """``restore --all`` as the CLI runs it, onto an empty server."""
    from chroma_backup.app.operations import Operations
    from chroma_backup.app.runtime import Backend

    with Chroma(Path(path)) as server:
        settings = settings_for(
            server.port, database_url, table, {"CHROMA_DATABASE": "*", "CHROMA_COLLECTION_NAME": "*"}
        )
        backend = Backend(settings)
        ops = Operations(backend)
        try:
            started = time.perf_counter()
            result = ops.restore_all(parallel=parallel)
            seconds = time.perf_counter() - started
        finally:
            ops.close()
            backend.close()
    if not result.ok:
        raise RuntimeError(f"restore --all failed: {result.as_json()}")
    return {"seconds": seconds, "records": result.records, "rss_mb": _peak_rss_mb()}


def run_server(args) -> dict:
    layout = server_layout(args.collections, args.records)
    parallels = sorted({int(p) for p in args.parallel.split(",")})
    workdir = Path(tempfile.mkdtemp(prefix="bench-server-", dir="/tmp"))
    results: dict = {
        "mode": "server",
        "collections": args.collections,
        "records": args.records,
        "dim": args.dim,
        "repeat": args.repeat,
        "parallel": parallels,
        "machine": f"{os.cpu_count()} cores, {platform_line()}",
        "date": time.strftime("%Y-%m-%d"),
        "layout": [{"database": d, "name": n, "space": s, "records": r} for d, n, s, r in layout],
    }
    server = None
    try:
        database_url, server = database_url_from(args, workdir)
        source = workdir / "source"
        step(f"building {args.collections} collections ({args.records} records x {args.dim})")
        results["build"] = {
            "seconds": round(isolated(m_raw_add_server, str(source), layout, args.dim, 1)["seconds"], 1)
        }
        table = f"bench_{uuid.uuid4().hex[:8]}"
        with Chroma(source) as chroma:
            step("backup of every collection")
            results["backup_all"] = summarize([isolated(m_backup_server, chroma.port, database_url, table, layout)])
        for parallel in parallels:
            step(f"raw_add with {parallel} writer(s)")
            results[f"raw_add_p{parallel}"] = summarize(
                [
                    isolated(m_raw_add_server, str(workdir / f"raw-{parallel}-{i}"), layout, args.dim, parallel)
                    for i in range(args.repeat)
                ]
            )
            step(f"restore --all --parallel {parallel}")
            results[f"restore_all_p{parallel}"] = summarize(
                [
                    isolated(m_restore_server, str(workdir / f"dr-{parallel}-{i}"), database_url, table, parallel)
                    for i in range(args.repeat)
                ]
            )
            for i in range(args.repeat):
                shutil.rmtree(workdir / f"raw-{parallel}-{i}", ignore_errors=True)
                shutil.rmtree(workdir / f"dr-{parallel}-{i}", ignore_errors=True)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    base = results[f"raw_add_p{parallels[0]}"]["median_seconds"]
    ratios_: dict[str, float] = {}
    for parallel in parallels:
        restore = results[f"restore_all_p{parallel}"]["median_seconds"]
        raw = results[f"raw_add_p{parallel}"]["median_seconds"]
        ratios_[f"raw_add_p{parallel}/raw_add_p{parallels[0]}"] = round(raw / base, 3)
        ratios_[f"restore_all_p{parallel}/raw_add_p{parallel}"] = round(restore / raw, 3)
        ratios_[f"restore_all_p{parallel}/raw_add_p{parallels[0]}"] = round(restore / base, 3)
        ratios_[f"rto_p{parallel}_seconds_per_million"] = round(restore / args.records * 1e6, 1)
    results["ratios"] = ratios_
    return results


def print_server_table(results: dict) -> None:
    print()
    print(
        f"whole server: {results['collections']} collections, {results['records']} records x {results['dim']} dims "
        f"in 2 databases, median of {results['repeat']} ({results['machine']}, {results['date']}); built in "
        f"{results['build']['seconds']:.0f} s"
    )
    print(f"{'operation':<18} {'median s':>9} {'records/s':>11}")
    for key, r in results.items():
        if isinstance(r, dict) and "median_seconds" in r:
            print(f"{key:<18} {r['median_seconds']:>9.2f} {r['records_per_second'] or 0:>11.0f}")
    print()
    for key, value in results["ratios"].items():
        print(f"{key:<40} {value:>10}")


# -- the many-collections case ------------------------------------------------------------------


def many_names(collections: int) -> list[str]:
    return [f"c-{i:05d}" for i in range(collections)]


def populate_many(path: Path, collections: int, per: int, dim: int) -> None:
    from chroma_backup.chroma import ChromaStore, CollectionInfo

    with Chroma(path) as server:
        chroma = ChromaStore.connect(settings_for(server.port, "postgresql://unused@localhost/x", "unused"))
        for index, name in enumerate(many_names(collections)):
            info = CollectionInfo("", name, None, {"hnsw": {"space": "l2"}}, None, dim, chroma.server_version)
            collection = chroma.create(name, info)
            for start in range(0, per, chroma.batch_size()):
                chroma.add(collection, synthetic_batch(start, min(per, start + chroma.batch_size()), dim, SEED + index))
            print(f"  populated {index + 1}/{collections} collections", end="\r", flush=True)
        chroma.close()
        print()


def m_raw_read_many(port: int, collections: int, per: int) -> dict:
    """Chroma's own client reading every record of every collection (one get per collection
    when it fits the server's batch size, else pages of it)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))
    page = min(per, client.get_max_batch_size())
    started = time.perf_counter()
    total = 0
    for name in many_names(collections):
        collection = client.get_collection(name, embedding_function=None)
        for offset in range(0, per, page):
            got = collection.get(limit=page, offset=offset, include=["embeddings", "documents", "metadatas"])
            total += len(got["ids"])
    return {"seconds": time.perf_counter() - started, "records": total, "rss_mb": _peak_rss_mb()}


def m_round(port: int, database_url: str, table: str, kind: str, concurrency: int) -> dict:
    """One backup or health round of every collection, as ``python main.py backup`` / ``health``."""
    from chroma_backup.app.operations import Operations
    from chroma_backup.app.runtime import Backend

    settings = settings_for(
        port,
        database_url,
        table,
        {"CHROMA_COLLECTION_NAME": "*", "BACKUP_CONCURRENCY": str(concurrency), "HEALTH_CONCURRENCY": str(concurrency)},
    )
    backend = Backend(settings)
    ops = Operations(backend)
    try:
        started = time.perf_counter()
        if kind == "health":
            reports = ops.health_round()
            records = sum(r.verdict.records or 0 for r in reports)
            bad = [r.as_json() for r in reports if not r.verdict.ok]
        else:
            results = ops.backup_round()
            records = sum(r.records for r in results)
            bad = [r.as_json() for r in results if r.status != "complete"]
        seconds = time.perf_counter() - started
    finally:
        ops.close()
        backend.close()
    if bad:
        raise RuntimeError(f"{kind} round: {len(bad)} collections not ok, e.g. {bad[0]}")
    return {"seconds": seconds, "records": records, "rss_mb": _peak_rss_mb()}


def run_many(args) -> dict:
    cache = Path(args.cache_dir) / f"many-{args.collections}x{args.records_per_collection}x{args.dim}-s{SEED}"
    if not (cache / "chroma.sqlite3").exists():
        print(f"building {args.collections} collections x {args.records_per_collection} records in {cache} ...")
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        populate_many(cache, args.collections, args.records_per_collection, args.dim)
    concurrencies = sorted({int(c) for c in args.concurrency.split(",")})
    workdir = Path(tempfile.mkdtemp(prefix="bench-many-", dir="/tmp"))
    results: dict = {
        "mode": "many",
        "collections": args.collections,
        "records_per_collection": args.records_per_collection,
        "dim": args.dim,
        "repeat": args.repeat,
        "machine": f"{os.cpu_count()} cores, {platform_line()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    server = None
    try:
        shutil.copytree(cache, workdir / "chroma")
        database_url, server = database_url_from(args, workdir)
        with Chroma(workdir / "chroma") as chroma:
            step("raw_read of every collection")
            isolated(m_raw_read_many, chroma.port, args.collections, args.records_per_collection)  # warms the server
            results["raw_read_all"] = summarize(
                [
                    isolated(m_raw_read_many, chroma.port, args.collections, args.records_per_collection)
                    for _ in range(args.repeat)
                ]
            )
            for c in concurrencies:
                tables = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(args.repeat)]
                step(f"backup rounds and a health round with concurrency {c}")
                results[f"backup_full_c{c}"] = summarize(
                    [isolated(m_round, chroma.port, database_url, t, "backup", c) for t in tables]
                )
                results[f"backup_nochange_c{c}"] = summarize(
                    [isolated(m_round, chroma.port, database_url, t, "backup", c) for t in tables]
                )
                results[f"health_c{c}"] = summarize(
                    [isolated(m_round, chroma.port, database_url, t, "health", c) for t in tables]
                )
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    raw = results["raw_read_all"]["median_seconds"]
    results["ratios"] = {}
    for c in concurrencies:
        results["ratios"][f"backup_full_c{c}/raw_read_all"] = round(
            results[f"backup_full_c{c}"]["median_seconds"] / raw, 3
        )
        results["ratios"][f"backup_nochange_c{c}/raw_read_all"] = round(
            results[f"backup_nochange_c{c}"]["median_seconds"] / raw, 3
        )
        results["ratios"][f"health_c{c}/20min"] = round(results[f"health_c{c}"]["median_seconds"] / 1200, 4)
    return results


def print_many_table(results: dict) -> None:
    print()
    print(
        f"{results['collections']} collections x {results['records_per_collection']} records x {results['dim']} dims, "
        f"median of {results['repeat']} ({results['machine']}, {results['date']})"
    )
    print(f"{'operation':<22} {'median s':>9} {'records/s':>11} {'peak RSS MB':>12}")
    for key, r in results.items():
        if isinstance(r, dict) and "median_seconds" in r:
            print(
                f"{key:<22} {r['median_seconds']:>9.2f} {r['records_per_second'] or 0:>11.0f} {r['peak_rss_mb']:>12.1f}"
            )
    print()
    for key, value in results["ratios"].items():
        print(f"{key:<40} {value:>10}")


# -- the application's latency during a backup ---------------------------------------------------


def m_app(port: int, qps: float, seconds: float, dim: int) -> dict:
    """An application issuing ``query()`` at a steady rate: (start time, latency) of each."""
    import chromadb
    import numpy as np
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_collection(COLLECTION, embedding_function=None)
    rng = np.random.default_rng(SEED + 99)
    samples = []
    started = time.time()
    next_at = started
    while time.time() - started < seconds:
        now = time.time()
        if now < next_at:
            time.sleep(next_at - now)
        begin = time.time()
        collection.query(query_embeddings=rng.normal(size=(1, dim)).astype("float32"), n_results=10, include=[])
        samples.append((begin, time.time() - begin))
        next_at += 1.0 / qps
    return {"samples": samples}


def m_timed_backup(port: int, database_url: str, table: str, env: dict) -> dict:
    """A full backup as the CLI's round runs it, with the pacing settings in ``env``."""
    from chroma_backup.app.operations import Operations
    from chroma_backup.app.runtime import Backend

    settings = settings_for(port, database_url, table, env)
    backend = Backend(settings)
    ops = Operations(backend)
    try:
        started = time.time()
        result = ops.backup_round()[0]
        ended = time.time()
    finally:
        ops.close()
        backend.close()
    if result.status != "complete":
        raise RuntimeError(f"backup failed: {result.error}")
    return {"start": started, "end": ended, "seconds": ended - started, "records": result.records}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


LATENCY_SETTINGS = {
    "unpaced": {"READ_RATE_ADAPTIVE": "false"},
    "adaptive": {"READ_RATE_ADAPTIVE": "true"},
}


def run_latency(args) -> dict:
    cache, _ = cached_collection(args.cache_dir, args.records, args.dim)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-", dir="/tmp"))
    settings = dict(LATENCY_SETTINGS) if not args.variants else json.loads(args.variants)
    for limit in [int(x) for x in args.rate_limits.split(",") if x]:
        settings[f"limit{limit}"] = {"READ_RATE_ADAPTIVE": "false", "READ_RATE_LIMIT": str(limit)}
    results: dict = {
        "mode": "latency",
        "records": args.records,
        "dim": args.dim,
        "qps": args.qps,
        "repeat": args.repeat,
        "machine": f"{os.cpu_count()} cores, {platform_line()}",
        "date": time.strftime("%Y-%m-%d"),
        "runs": {},
    }
    server = None
    try:
        shutil.copytree(cache, workdir / "chroma")
        database_url, server = database_url_from(args, workdir)
        with Chroma(workdir / "chroma") as chroma, ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            step("the application alone")
            idle = [lat for _, lat in pool.submit(m_app, chroma.port, args.qps, 20, args.dim).result()["samples"]]
            results["idle"] = {
                "p50_ms": round(1000 * percentile(idle, 0.5), 2),
                "p99_ms": round(1000 * percentile(idle, 0.99), 2),
            }
            for name, env in settings.items():
                runs = []
                for _ in range(args.repeat):
                    step(f"a full backup ({name}) while the application queries")
                    app = pool.submit(m_app, chroma.port, args.qps, args.app_seconds, args.dim)
                    time.sleep(3)
                    backup = pool.submit(
                        m_timed_backup, chroma.port, database_url, f"bench_{uuid.uuid4().hex[:8]}", env
                    )
                    b = backup.result()
                    samples = app.result()["samples"]
                    during = [lat for begin, lat in samples if b["start"] <= begin <= b["end"]]
                    runs.append(
                        {
                            "backup_seconds": round(b["seconds"], 2),
                            "p50_ms": round(1000 * percentile(during, 0.5), 2),
                            "p99_ms": round(1000 * percentile(during, 0.99), 2),
                            "queries": len(during),
                            "covered": samples[-1][0] >= b["end"] if samples else False,
                        }
                    )
                results["runs"][name] = {
                    "backup_seconds": statistics.median(r["backup_seconds"] for r in runs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                    "p99/idle_p99": round(statistics.median(r["p99_ms"] for r in runs) / results["idle"]["p99_ms"], 2),
                    "all": runs,
                }
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def print_latency_table(results: dict) -> None:
    print()
    idle = results["idle"]
    print(
        f"an application at {results['qps']} queries/s on {results['records']} records x {results['dim']} dims "
        f"({results['machine']}, {results['date']}): idle p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms"
    )
    print(f"{'during a full backup':<22} {'backup s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99/idle':>9}")
    for name, r in results["runs"].items():
        print(
            f"{name:<22} {r['backup_seconds']:>9.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['p99/idle_p99']:>9.2f}"
        )


def isolated(fn, *args) -> dict:
    """Run one measurement in a fresh process (its own peak RSS, no warm caches of ours)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# -- the harness --------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    records = runs[0]["records"]
    summary = {
        "median_seconds": round(median, 3),
        "runs_seconds": [round(s, 3) for s in seconds],
        "records": records,
        "records_per_second": round(records / median, 1) if median else None,
        "peak_rss_mb": round(max(r["rss_mb"] for r in runs), 1),
    }
    for key in ("bytes_written", "copy_bytes"):
        if key in runs[0]:
            summary[key] = int(statistics.median(r[key] for r in runs))
    return summary


def database_url_from(args, workdir: Path):
    if args.database_url:
        return args.database_url, None
    import pgserver

    server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    return server.get_uri(), server


def cached_collection(cache_dir: str, records: int, dim: int) -> tuple[Path, dict]:
    """The populated Chroma data directory (built once, then copied per run) and how long the
    build took."""
    cache = Path(cache_dir) / f"chroma-{records}x{dim}-s{SEED}"
    built = cache / "build.json"
    if not (cache / "chroma.sqlite3").exists():
        print(f"building the synthetic collection ({records} x {dim}) in {cache} ...", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        started = time.perf_counter()
        populate(cache, records, dim)
        seconds = time.perf_counter() - started
        built.write_text(
            json.dumps(
                {
                    "build_seconds": round(seconds, 1),
                    "records": records,
                    "dim": dim,
                    "built_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                }
            )
        )
    return cache, json.loads(built.read_text()) if built.exists() else {"build_seconds": None}


def baseline_rss(args, database_url: str, workdir: Path) -> dict:
    """A full backup of a smaller collection (same dims), for the memory target (the peak RSS
    growth from this size to --records must stay flat) and the time's linearity."""
    cache, _ = cached_collection(args.cache_dir, args.baseline_records, args.dim)
    shutil.copytree(cache, workdir / "baseline")
    with Chroma(workdir / "baseline") as chroma:
        runs = [
            isolated(m_backup, chroma.port, database_url, f"bench_{uuid.uuid4().hex[:8]}", args.read_workers)
            for _ in range(args.repeat)
        ]
    return summarize(runs)


def measure_raw_read(port: int, pages: tuple[int, ...], repeat: int, results: dict) -> None:
    """The best single-stream paged read: every page size once (which also warms the server's
    caches), then the best one ``repeat`` more times; raw_read is those repeats."""
    page_runs = {page: isolated(m_raw_read, port, page) for page in pages}
    best_page = min(page_runs, key=lambda page: page_runs[page]["seconds"])
    results["raw_read_page_size"] = best_page
    results["raw_read_pages_seconds"] = {page: round(r["seconds"], 3) for page, r in page_runs.items()}
    step("raw_read")
    results["raw_read"] = summarize([isolated(m_raw_read, port, best_page) for _ in range(repeat)])


def measure_backups(args, port: int, database_url: str, results: dict, pages: tuple[int, ...]) -> str:
    """What grows with the collection (all of --scale): the best paged read, a full and a
    no-change backup, and a verify; returns the table the backups went to."""
    measure_raw_read(port, pages, args.repeat, results)
    tables = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(args.repeat)]
    step("backup_full")
    results["backup_full"] = summarize([isolated(m_backup, port, database_url, t, args.read_workers) for t in tables])
    step("backup_nochange")
    results["backup_nochange"] = summarize(
        [isolated(m_backup, port, database_url, tables[0], args.read_workers) for _ in range(args.repeat)]
    )
    step("verify")
    results["verify"] = summarize(
        [isolated(m_verify, port, database_url, tables[0], args.read_workers) for _ in range(args.repeat)]
    )
    step("deep_check")
    deep_runs = [isolated(m_deep, port, database_url, tables[0], args.read_workers) for _ in range(args.repeat)]
    results["deep_check"] = {**summarize(deep_runs), "unindexed": deep_runs[0]["unindexed"]}
    return tables[0]


def run(args) -> dict:
    cache, build = cached_collection(args.cache_dir, args.records, args.dim)
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    results: dict = {
        "records": args.records,
        "dim": args.dim,
        "repeat": args.repeat,
        "read_workers": args.read_workers,
        "machine": f"{os.cpu_count()} cores, {platform_line()}",
        "scale": args.scale,
        "date": time.strftime("%Y-%m-%d"),
        "build": build,
    }
    server = None
    try:
        shutil.copytree(cache, workdir / "chroma")
        database_url, server = database_url_from(args, workdir)
        with Chroma(workdir / "chroma") as chroma:
            if args.scale:  # a million records: every page size and restore would take hours
                measure_backups(args, chroma.port, database_url, results, (1000, 2500))
            else:
                run_all(args, chroma.port, database_url, results)
        if args.baseline_records:
            step(f"backup_full at {args.baseline_records} records (memory and linearity baseline)")
            results["backup_full_baseline"] = baseline_rss(args, database_url, workdir)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    results["ratios"] = ratios(args, results)
    return results


def run_all(args, port: int, database_url: str, results: dict) -> None:
    table = measure_backups(args, port, database_url, results, (250, 1000, 2500, 5461))
    step("backup_churn")
    churn_runs = []
    for i in range(args.repeat):
        churn(port, args.records, args.dim, round_=i)
        churn_runs.append(isolated(m_backup, port, database_url, table, args.read_workers))
    results["backup_churn"] = summarize(churn_runs)

    step("raw_add")
    results["raw_add"] = summarize([isolated(m_raw_add, port, args.records, args.dim) for _ in range(args.repeat)])
    step("restore")
    results["restore"] = summarize(
        [isolated(m_restore, port, database_url, table, args.read_workers) for _ in range(args.repeat)]
    )

    step(f"storage ({args.storage_rounds} backups with 1% churn)")
    storage_table = f"bench_{uuid.uuid4().hex[:8]}"
    first = isolated(m_backup, port, database_url, storage_table, args.read_workers)
    storage_1 = size_of(port, database_url, storage_table)
    for i in range(args.storage_rounds - 1):
        churn(port, args.records, args.dim, round_=100 + i)
        isolated(m_backup, port, database_url, storage_table, args.read_workers)
    storage_n = size_of(port, database_url, storage_table)
    results["storage"] = {
        "storage_1_bytes": storage_1,
        f"storage_{args.storage_rounds}_bytes": storage_n,
        "rounds": args.storage_rounds,
        "first_backup_records": first["records"],
    }


def ratios(args, results: dict) -> dict:
    raw_read = results["raw_read"]["median_seconds"]
    out = {
        "backup_full/raw_read": round(results["backup_full"]["median_seconds"] / raw_read, 3),
        "backup_nochange/raw_read": round(results["backup_nochange"]["median_seconds"] / raw_read, 3),
        "verify/raw_read": round(results["verify"]["median_seconds"] / raw_read, 3),
        "deep_check/backup_nochange": round(
            results["deep_check"]["median_seconds"] / results["backup_nochange"]["median_seconds"], 3
        ),
        "nochange_bytes/full_bytes": round(
            results["backup_nochange"]["bytes_written"] / max(1, results["backup_full"]["bytes_written"]), 5
        ),
    }
    if not args.scale:
        out["backup_churn/raw_read"] = round(results["backup_churn"]["median_seconds"] / raw_read, 3)
        out["restore/raw_add"] = round(results["restore"]["median_seconds"] / results["raw_add"]["median_seconds"], 3)
        out[f"storage_{args.storage_rounds}/storage_1"] = round(
            results["storage"][f"storage_{args.storage_rounds}_bytes"] / results["storage"]["storage_1_bytes"], 3
        )
    base = results.get("backup_full_baseline")
    if base:
        out["backup_rss_growth_mb"] = round(results["backup_full"]["peak_rss_mb"] - base["peak_rss_mb"], 1)
        out["backup_full/backup_full_baseline"] = round(
            results["backup_full"]["median_seconds"] / base["median_seconds"], 3
        )
    return out


def size_of(port: int, database_url: str, table: str) -> int:
    _, database = stores(port, database_url, table)
    try:
        return database.retention.storage_bytes()
    finally:
        database.close()


def platform_line() -> str:
    import platform

    return f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"


def step(name: str) -> None:
    print(f"measuring {name} ...", flush=True)


TARGETS = {
    "backup_rss_growth_mb": 64,
    # A first backup reads every record twice (the second read confirms what the first read:
    # Chroma's get is not atomic against an upsert): twice the single read's 0.80.
    "backup_full/raw_read": 1.60,
    "backup_nochange/raw_read": 0.75,
    "restore/raw_add": 1.05,
    "storage_24/storage_1": 1.2,
    "nochange_bytes/full_bytes": 0.01,
}


def target_for(key: str, results: dict) -> float | None:
    if key == "backup_full/backup_full_baseline":  # linear: at most 10% above proportional
        return round(1.1 * results["records"] / results["backup_full_baseline"]["records"], 2)
    return TARGETS.get(key)


def print_table(results: dict) -> None:
    print()
    build = results["build"].get("build_seconds")
    print(
        f"{results['records']} records x {results['dim']} dims, median of {results['repeat']}, "
        f"{results['read_workers']} read workers ({results['machine']}, {results['date']}); "
        f"collection built in {f'{build:.0f} s' if build else 'an earlier run'}"
    )
    print(f"{'operation':<18} {'median s':>9} {'records/s':>11} {'peak RSS MB':>12}")
    for key in (
        "raw_read",
        "backup_full",
        "backup_nochange",
        "verify",
        "deep_check",
        "backup_churn",
        "raw_add",
        "restore",
        "backup_full_baseline",
    ):
        r = results.get(key)
        if r is None:
            continue
        label = key if key != "backup_full_baseline" else f"backup_full@{r['records']}"
        print(
            f"{label:<18} {r['median_seconds']:>9.2f} {r['records_per_second'] or 0:>11.0f} {r['peak_rss_mb']:>12.1f}"
        )
    s = results.get("storage")
    if s:
        last = s[f"storage_{s['rounds']}_bytes"]
        print(
            f"storage: after 1 backup {s['storage_1_bytes'] / 2**20:.1f} MiB, after {s['rounds']} "
            f"{last / 2**20:.1f} MiB"
        )
    print(f"no-change backup wrote {results['backup_nochange']['bytes_written']} bytes")
    print()
    print(f"{'ratio':<34} {'value':>8} {'target':>9}")
    for key, value in results["ratios"].items():
        target = target_for(key, results)
        verdict = "" if target is None else ("ok" if value <= target else "MISSED")
        print(f"{key:<34} {value:>8.3f} {('<= ' + str(target)) if target else '':>9}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--storage-rounds", type=int, default=24, help="backups in the storage measurement")
    parser.add_argument("--read-workers", type=int, default=3, help="READ_WORKERS for backups and restore verification")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="PostgreSQL to use (default: TEST_DATABASE_URL, else an embedded pgserver)",
    )
    parser.add_argument("--cache-dir", default=str(ROOT / "bench" / ".cache"))
    parser.add_argument(
        "--baseline-records",
        type=int,
        default=None,
        help="also measure a full backup at this size, for the peak RSS growth and the time's "
        "linearity (default: records/5, or 100000 with --scale; 0 = skip)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="measure only what grows with the collection: raw_read, backup_full, "
        "backup_nochange and verify (for --records 1000000; restore is measured at 100k)",
    )
    parser.add_argument(
        "--server",
        action="store_true",
        help="the whole-server case: restore --all of --collections collections against Chroma's own add",
    )
    parser.add_argument("--collections", type=int, default=20, help="collections of the --server case")
    parser.add_argument("--parallel", default="1,2,4", help="--server: the parallel settings measured, e.g. 1,2,4")
    parser.add_argument(
        "--records-per-collection",
        type=int,
        default=0,
        help="the many-collections case: --collections collections of this many records each",
    )
    parser.add_argument("--concurrency", default="1,4", help="many-collections: BACKUP_CONCURRENCY settings measured")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="an application's query latency while idle and during a full backup, unpaced, adaptive and "
        "with each --rate-limits setting",
    )
    parser.add_argument("--qps", type=float, default=20.0, help="--latency: the application's queries per second")
    parser.add_argument("--app-seconds", type=float, default=60.0, help="--latency: how long the application runs")
    parser.add_argument("--rate-limits", default="", help="--latency: READ_RATE_LIMIT settings to measure, e.g. 5000")
    parser.add_argument(
        "--variants",
        default="",
        help='--latency: JSON {"name": {"SETTING": "value"}}: the settings measured (default: unpaced, adaptive)',
    )
    args = parser.parse_args(argv)
    if args.latency:
        results = run_latency(args)
        print_latency_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    if args.records_per_collection:
        if args.collections < 1 or args.records_per_collection < 1:
            parser.error("--collections >= 1 and --records-per-collection >= 1")
        results = run_many(args)
        print_many_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    if args.server:
        if args.collections < 1 or args.records < args.collections:
            parser.error("--collections >= 1 and --records >= --collections")
        results = run_server(args)
        print_server_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    if args.records < 10 or args.dim < 1 or args.repeat < 1 or args.storage_rounds < 2:
        parser.error("--records >= 10, --dim >= 1, --repeat >= 1, --storage-rounds >= 2")
    if args.baseline_records is None:
        if args.scale:
            args.baseline_records = min(100_000, args.records // 10)
        else:
            args.baseline_records = args.records // 5 if args.records >= 50 else 0
    results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
