"""Flat for months: the daemon's memory, threads, descriptors and connections held on the Chroma
server stay flat over hundreds of backup rounds with an application writing, and a round over
300 collections costs no more memory than one over 10."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, wait_for

ROUNDS_WARM, ROUNDS_END = 20, 200


def process_figures(pid: int, chroma_port: int) -> dict[str, int]:
    """RSS (kB), threads, open descriptors and TCP connections to the Chroma port, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    connections = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == chroma_port and parts[3] == "01" and parts[9] in sockets:  # ESTABLISHED, ours
                connections += 1
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "chroma_connections": connections,
    }


def settled(pid: int, chroma_port: int, samples: int = 30) -> dict[str, int]:
    """The largest of each figure over a few seconds, and the fewest threads and descriptors (job
    and reader threads come and go, and so do a run's short-lived descriptors: the pipe of a COPY,
    a second PostgreSQL connection; a leak raises the floor)."""
    seen = []
    for _ in range(samples):
        seen.append(process_figures(pid, chroma_port))
        time.sleep(0.1)
    return {
        **{key: max(s[key] for s in seen) for key in seen[0]},
        "threads_floor": min(s["threads"] for s in seen),
        "fds_floor": min(s["fds"] for s in seen),
    }


class Churn(threading.Thread):
    def __init__(self, collections):
        super().__init__(daemon=True)
        self.collections = collections
        self.stop = threading.Event()

    def run(self):
        rng = np.random.default_rng(11)
        serial = 10_000
        while not self.stop.wait(0.5):
            for col in self.collections:
                ids = [f"r{i}" for i in rng.choice(2000, 20, replace=False)]
                col.upsert(
                    ids=ids, embeddings=rng.standard_normal((20, 16)).astype(np.float32), metadatas=[{"v": serial}] * 20
                )
                col.delete(ids=[f"r{i}" for i in rng.choice(2000, 3, replace=False)])
                col.add(
                    ids=[f"n{serial + i}" for i in range(3)], embeddings=rng.standard_normal((3, 16)).astype(np.float32)
                )
                serial += 3


def completed_backups(log: str) -> int:
    return log.count(" status=complete health=")


@pytest.mark.slow
def test_the_daemon_stays_flat_over_200_backup_rounds_with_churn(env, tmp_path, client, name, chroma_server, daemons):
    collections = []
    for suffix, config in (("l2", None), ("cos", {"hnsw": {"space": "cosine"}})):
        col = client.create_collection(f"{name}-{suffix}", embedding_function=None, configuration=config)
        rng = np.random.default_rng(3)
        col.add(
            ids=[f"r{i}" for i in range(2000)],
            embeddings=rng.standard_normal((2000, 16)).astype(np.float32),
            metadatas=[{"v": 0, "page": i} for i in range(2000)],
            documents=[f"doc {i}" for i in range(2000)],
        )
        collections.append(col)
    churn = Churn(collections)
    daemon = daemons(
        {
            **env,
            "CHROMA_COLLECTION_NAME": ",".join(c.name for c in collections),
            "EXPORT_INTERVAL_MINUTES": "0.002",
            "HEALTH_CHECK_INTERVAL_MINUTES": "0.004",
            "HEALTH_CONFIRM_SECONDS": "0.5",
            "LOG_LEVEL": "INFO",
        },
        tmp_path,
    )
    pid, port = daemon.proc.pid, chroma_server.port
    churn.start()
    try:
        wait_for(lambda: completed_backups(daemon.output()) >= 2 * ROUNDS_WARM, timeout=120, what="20 rounds")
        warm = settled(pid, port)
        wait_for(lambda: completed_backups(daemon.output()) >= 2 * ROUNDS_END, timeout=900, what="200 rounds")
        end = settled(pid, port)
    finally:
        churn.stop.set()
        churn.join()
    output = daemon.output()
    assert " status=failed" not in output, [line for line in output.splitlines() if "status=failed" in line][:3]
    print(f"soak: round {ROUNDS_WARM} {warm}, round {ROUNDS_END} {end}")
    assert end["rss_kb"] - warm["rss_kb"] <= 20 * 1024, (warm, end)
    assert end["threads_floor"] <= warm["threads_floor"], (warm, end)
    assert end["threads"] <= warm["threads"] + 3, (warm, end)  # a backup's readers and a health job at most
    assert end["fds_floor"] <= warm["fds_floor"] + 1, (warm, end)
    assert end["fds"] <= warm["fds"] + 4, (warm, end)  # a COPY's pipe and a second connection come and go
    assert end["chroma_connections"] <= warm["chroma_connections"], (warm, end)


def peak_rss_kb(env, cwd, args) -> int:
    """The peak RSS of one ``python main.py ARGS`` run (a fresh process of its own)."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stderr.write(r.stderr[-2000:])"
    )
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    out = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, str(ROOT / "main.py"), *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    code, peak = out.stdout.split()
    assert code == "0", out.stderr
    return int(peak)


@pytest.mark.slow
def test_a_round_over_300_collections_peaks_within_64_mb_of_a_round_over_10(env, tmp_path, client, chroma_server, name):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    peaks = {}
    for count in (10, 300):
        database = f"{name}-{count}"
        client._admin_client.create_database(database)
        scoped = chromadb.HttpClient(
            host="127.0.0.1",
            port=chroma_server.port,
            database=database,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        rng = np.random.default_rng(count)
        for i in range(count):
            scoped.create_collection(f"c{i:03d}", embedding_function=None).add(
                ids=[f"r{j}" for j in range(50)],
                embeddings=rng.standard_normal((50, 16)).astype(np.float32),
                metadatas=[{"j": j} for j in range(50)],
            )
        peaks[count] = peak_rss_kb({**env, "CHROMA_DATABASE": database}, tmp_path, ["backup", "--json"])
    print(f"peak RSS of a backup round: {json.dumps(peaks)} kB")
    assert peaks[300] - peaks[10] <= 64 * 1024, peaks
