"""The whole backup -> failure -> recovery loop on a bare machine (``python main.py demo``).

Starts a throwaway Chroma server (``chroma run`` from the chromadb wheel) and an embedded
PostgreSQL in a temporary directory, then runs the rounds the daemon runs, reporting each step
to ``say``.  No model is ever downloaded: records carry embeddings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.chroma import CollectionInfo
from chroma_backup.chroma.launcher import LocalChroma, free_port
from chroma_backup.errors import BackupError
from chroma_backup.records import RecordBatch
from chroma_backup.settings import load_settings

DEMO_COLLECTION = "demo_docs"
DIM = 128
TOPICS = ("billing", "shipping", "returns", "accounts", "security")


class DemoFailed(BackupError):
    """A step of the demo did not do what it shows."""


def sample_batch(n: int, seed: int = 7) -> RecordBatch:
    rng = np.random.default_rng(seed)
    return RecordBatch(
        ids=[f"doc-{i:05d}" for i in range(n)],
        embeddings=rng.normal(size=(n, DIM)).astype("<f4"),
        documents=[f"Support article {i} about {TOPICS[i % len(TOPICS)]}: " + "lorem ipsum " * 12 for i in range(n)],
        metadatas=[
            {
                "topic": TOPICS[i % len(TOPICS)],
                "views": int(rng.integers(0, 10**6)),
                "rating": float(i % 50) / 10,
                "published": i % 3 != 0,
            }
            for i in range(n)
        ],
        uris=[None] * n,
    )


class _Steps:
    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.started = time.monotonic()
        self.number = 0

    @contextmanager
    def __call__(self, title: str) -> Iterator[list[str]]:
        self.number += 1
        notes: list[str] = []
        began = time.monotonic()
        yield notes
        self.say(f"{self.number:>2}. {title:<52} {time.monotonic() - began:6.2f}s  " + "; ".join(notes))


def run_demo(records: int, keep: bool, say: Callable[[str], None]) -> None:
    """Run the demo, reporting each step; raises ``DemoFailed`` when a step does not hold."""
    workdir = tempfile.mkdtemp(prefix="chroma-demo-", dir="/tmp" if os.path.isdir("/tmp") else None)
    port = free_port()
    settings = load_settings(
        {
            "DATA_DIR": workdir,
            "CHROMADB_HOST": "127.0.0.1",
            "CHROMADB_PORT": str(port),
            "CHROMA_COLLECTION_NAME": DEMO_COLLECTION,
            "HEALTH_CONFIRM_SECONDS": "1",
            "DB_NAME": "chroma_backup",
        },
        env_file=None,
    )
    step = _Steps(say)
    backend = Backend(settings)
    say(f"demo: working in {workdir}")
    with ExitStack() as cleanup:
        if keep:
            cleanup.callback(say, f"demo: kept {workdir}")
        else:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        with step("start Chroma server and embedded PostgreSQL") as notes:
            cleanup.enter_context(LocalChroma(os.path.join(workdir, "chroma"), port))
            cleanup.callback(backend.close)
            ops = Operations(backend)
            cleanup.callback(ops.close)
            ops.stores.db.migrate()  # starts the embedded PostgreSQL and creates the schema
            chroma = ops.chroma
            notes.append(f"chroma {chroma.address}, postgres {os.path.join(workdir, 'postgres')}")
        with step(f"create '{DEMO_COLLECTION}' ({records} records, {DIM}-d, cosine)") as notes:
            info = CollectionInfo(
                id="",
                name=DEMO_COLLECTION,
                metadata={"owner": "demo"},
                configuration_json={"hnsw": {"space": "cosine", "ef_construction": 128}},
                schema_json=None,
                dimension=DIM,
                server_version=chroma.server_version,
            )
            collection = chroma.create(DEMO_COLLECTION, info)
            batch = sample_batch(records)
            chroma.add(collection, batch)
            notes.append(f"{chroma.count(collection)} records")
        with step("backup #1 (full)") as notes:
            [first] = ops.backup_round([DEMO_COLLECTION])
            if first.status != "complete":
                raise DemoFailed(f"backup failed: {first.error}")
            notes.append(f"snapshot {first.snapshot_id}: {first.records} records written")
        with step("change records: 50 updated, 20 deleted, 30 added") as notes:
            changed = sample_batch(records + 30, seed=99)
            chroma.upsert(collection, changed.slice(0, 50))
            chroma.delete_records(collection, batch.ids[100:120])
            chroma.add(collection, changed.slice(records, records + 30))
            notes.append(f"{chroma.count(collection)} records now")
        with step("backup #2 (incremental)") as notes:
            [second] = ops.backup_round([DEMO_COLLECTION])
            if second.status != "complete":
                raise DemoFailed(f"backup failed: {second.error}")
            notes.append(
                f"snapshot {second.snapshot_id}: +{second.added} ~{second.updated} -{second.deleted}, "
                f"{second.bytes_written // 1024} KiB written"
            )
        with step(f"disaster: delete collection '{DEMO_COLLECTION}'") as notes:
            chroma.delete(DEMO_COLLECTION)
            notes.append("gone")
        target = settings.target_name(DEMO_COLLECTION)
        with step("health check detects it and auto-restores") as notes:
            [health] = ops.health_round([DEMO_COLLECTION], restore=True)
            verdict, recovery = health.verdict, health.recovery
            notes.append(f"status={verdict.status}, recovery={recovery.action if recovery else 'none'} -> {target}")
            if recovery is None or recovery.action != "restored":
                raise DemoFailed(f"recovery did not restore: {recovery}")
        with step(f"verify '{target}' against snapshot {second.snapshot_id}") as notes:
            result = ops.verify(DEMO_COLLECTION, target=target)
            notes.append(f"identical={result.identical}, {result.live_records} records, space {result.space}")
            if not result.identical:
                raise DemoFailed("the restored collection differs from the snapshot")
        say(
            f"demo: done in {time.monotonic() - step.started:.1f}s: backup -> failure -> recovery -> verified identical"
        )
