"""``python main.py demo``: the whole backup -> failure -> recovery loop on a bare machine.

Starts a throwaway Chroma server (``chroma run`` from the chromadb wheel) and an embedded
PostgreSQL in a temporary directory, then runs the same domain functions the daemon runs and
prints a short report of each step.  No model is ever downloaded: records carry embeddings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from typing import Iterator

import numpy as np

DEMO_COLLECTION = "demo_docs"
DIM = 128
TOPICS = ("billing", "shipping", "returns", "accounts", "security")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chroma_command() -> list[str]:
    candidate = os.path.join(os.path.dirname(sys.executable), "chroma")
    return [candidate] if os.path.exists(candidate) else ["chroma"]


@contextmanager
def chroma_server(path: str, port: int, log_path: str) -> Iterator[None]:
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(_chroma_command() + ["run", "--path", path, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=os.path.dirname(path))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma run did not start (see {log_path})")
                time.sleep(0.1)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def sample_batch(n: int, seed: int = 7):
    from records import RecordBatch

    rng = np.random.default_rng(seed)
    ids = [f"doc-{i:05d}" for i in range(n)]
    return RecordBatch(
        ids=ids,
        embeddings=rng.normal(size=(n, DIM)).astype("<f4"),
        documents=[f"Support article {i} about {TOPICS[i % len(TOPICS)]}: " + "lorem ipsum " * 12 for i in range(n)],
        metadatas=[{"topic": TOPICS[i % len(TOPICS)], "views": int(rng.integers(0, 10**6)), "rating": float(i % 50) / 10,
                    "published": i % 3 != 0} for i in range(n)],
        uris=[None] * n,
    )


class Report:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step = 0

    @contextmanager
    def __call__(self, title: str) -> Iterator[list[str]]:
        self.step += 1
        notes: list[str] = []
        began = time.monotonic()
        yield notes
        print(f"{self.step:>2}. {title:<52} {time.monotonic() - began:6.2f}s  " + "; ".join(notes), flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from chroma import CollectionInfo
    from config import load_settings
    from jobs import Backend, Operations

    workdir = tempfile.mkdtemp(prefix="chroma-demo-", dir="/tmp" if os.path.isdir("/tmp") else None)
    port = _free_port()
    settings = load_settings({"DATA_DIR": workdir, "CHROMADB_HOST": "127.0.0.1", "CHROMADB_PORT": str(port),
                              "CHROMA_COLLECTION_NAME": DEMO_COLLECTION, "HEALTH_CONFIRM_SECONDS": "1",
                              "DB_NAME": "chroma_backup"}, env_file=None)
    report = Report()
    backend = Backend(settings)
    print(f"demo: working in {workdir}")
    with ExitStack() as cleanup:
        if args.keep:
            cleanup.callback(print, f"demo: kept {workdir}")
        else:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        with report("start Chroma server and embedded PostgreSQL") as notes:
            cleanup.enter_context(chroma_server(os.path.join(workdir, "chroma"), port,
                                                os.path.join(workdir, "chroma.log")))
            cleanup.callback(backend.close)
            ops = Operations(backend)
            cleanup.callback(ops.close)
            ops.db  # starts the embedded PostgreSQL and creates the schema
            chroma = ops.chroma
            notes.append(f"chroma {chroma.address}, postgres {os.path.join(workdir, 'postgres')}")
        with report(f"create '{DEMO_COLLECTION}' ({args.records} records, {DIM}-d, cosine)") as notes:
            info = CollectionInfo(id="", name=DEMO_COLLECTION, metadata={"owner": "demo"},
                                  configuration_json={"hnsw": {"space": "cosine", "ef_construction": 128}},
                                  schema_json=None, dimension=DIM, server_version=chroma.server_version)
            collection = chroma.create(DEMO_COLLECTION, info)
            batch = sample_batch(args.records)
            size = chroma.batch_size()
            for start in range(0, len(batch), size):
                chroma.add(collection, _slice(batch, start, start + size))
            notes.append(f"{chroma.count(collection)} records")
        with report("backup #1 (full)") as notes:
            [first] = ops.backup_round([DEMO_COLLECTION])
            if first.status != "complete":
                raise RuntimeError(f"backup failed: {first.error}")
            notes.append(f"snapshot {first.snapshot_id}: {first.records} records written")
        with report("change records: 50 updated, 20 deleted, 30 added") as notes:
            changed = sample_batch(args.records + 30, seed=99)
            chroma.upsert(collection, _slice(changed, 0, 50))
            chroma.delete_records(collection, batch.ids[100:120])
            chroma.add(collection, _slice(changed, args.records, args.records + 30))
            notes.append(f"{chroma.count(collection)} records now")
        with report("backup #2 (incremental)") as notes:
            [second] = ops.backup_round([DEMO_COLLECTION])
            if second.status != "complete":
                raise RuntimeError(f"backup failed: {second.error}")
            notes.append(f"snapshot {second.snapshot_id}: +{second.added} ~{second.updated} -{second.deleted}, "
                         f"{second.bytes_written // 1024} KiB written")
        with report(f"disaster: delete collection '{DEMO_COLLECTION}'") as notes:
            chroma.delete(DEMO_COLLECTION)
            notes.append("gone")
        target = settings.target_name(DEMO_COLLECTION)
        with report("health check detects it and auto-restores") as notes:
            [health] = ops.health_round([DEMO_COLLECTION], restore=True)
            verdict, recovery = health.verdict, health.recovery
            notes.append(f"status={verdict.status}, recovery={recovery.action if recovery else 'none'} -> {target}")
            if recovery is None or recovery.action != "restored":
                raise RuntimeError(f"recovery did not restore: {recovery}")
        with report(f"verify '{target}' against snapshot {second.snapshot_id}") as notes:
            result = ops.verify(DEMO_COLLECTION, target=target)
            notes.append(f"identical={result.identical}, {result.live_records} records, space {result.space}")
            if not result.identical:
                raise RuntimeError("the restored collection differs from the snapshot")
        print(f"demo: done in {time.monotonic() - report.started:.1f}s: backup -> failure -> recovery -> "
              "verified identical")
        return 0


def _slice(batch, start: int, stop: int):
    from records import RecordBatch

    return RecordBatch(batch.ids[start:stop], batch.embeddings[start:stop], batch.documents[start:stop],
                       batch.metadatas[start:stop], batch.uris[start:stop])
