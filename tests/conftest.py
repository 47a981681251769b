"""Real services for the suite: PostgreSQL and a Chroma server.

PostgreSQL is the server named by TEST_DATABASE_URL when set, otherwise an embedded pgserver
instance started once per session.  Every test gets a fresh database of its own.  Chroma is a
real ``chroma run`` server from the chromadb wheel, started once per session; tests use unique
collection names.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Settings, load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chroma_executable() -> str:
    candidate = Path(sys.executable).with_name("chroma")
    return str(candidate) if candidate.exists() else "chroma"


class ChromaServer:
    """A ``chroma run`` process that tests may stop and start again (same data, same port)."""

    def __init__(self, path: Path, port: int | None = None):
        self.path = path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.executable = chroma_executable()
        self.log = open(path.parent / f"chroma-{self.port}.log", "ab")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ChromaServer":
        self.proc = subprocess.Popen(
            [self.executable, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=self.path.parent,  # 0.6.x writes chroma.log into its working directory
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/api/v2/heartbeat", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("chroma run did not answer its heartbeat")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server: SIGTERM shuts down gracefully (it finishes serving open keep-alive
        connections first); SIGKILL is a crash, cutting every connection at once."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def short_tmp():
    """A short temporary directory (Unix socket paths must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cbt", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(short_tmp):
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(short_tmp / "pg", cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture
def database_url(pg_admin_url):
    """A fresh, empty database for this test; dropped afterwards."""
    import psycopg2

    name = "t_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(pg_admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(pg_admin_url, name)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def chroma_server(short_tmp):
    server = ChromaServer(short_tmp / "chroma").start()
    yield server
    server.stop()


@pytest.fixture
def env(database_url, chroma_server, tmp_path):
    """Environment for the program against the test's database and the session's Chroma."""
    return {
        "DATABASE_URL": database_url,
        "CHROMADB_HOST": "127.0.0.1",
        "CHROMADB_PORT": str(chroma_server.port),
        "DATA_DIR": str(tmp_path / "data"),
        "CHROMA_COLLECTION_NAME": "*",
        "RETRY_MAX_ATTEMPTS": "2",
        "RETRY_MAX_SECONDS": "5",
        "HTTP_PORT": "0",  # tests that use the HTTP server give it a free port of their own
    }


@pytest.fixture
def settings(env) -> Settings:
    return load_settings(env, env_file=None)


@pytest.fixture
def stores(settings):
    from chroma import ChromaStore
    from db import Database

    database = Database(settings)
    database.migrate()
    chroma = ChromaStore.connect(settings)
    yield chroma, database
    chroma.close()
    database.close()


@pytest.fixture
def client(chroma_server):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port,
                               settings=ChromaSettings(anonymized_telemetry=False))


@pytest.fixture
def name():
    """A unique collection name for this test."""
    return "c" + uuid.uuid4().hex[:10]


def make_collection(client, name, n, dim=8, *, space=None, seed=0, batch=5000, configuration=None, metadata=None):
    """A collection of ``n`` records with random float32 embeddings, documents and typed metadata,
    made the way applications make it: ``create_collection(name, embedding_function=None)``
    unless a distance ``space`` (as a configuration) or an explicit ``configuration`` is asked for."""
    rng = np.random.default_rng(seed)
    config = configuration or ({"hnsw": {"space": space}} if space else None)
    col = client.create_collection(name, embedding_function=None, configuration=config, metadata=metadata)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        col.add(
            ids=[f"r{i}" for i in range(start, stop)],
            embeddings=rng.random((stop - start, dim), dtype=np.float32),
            documents=[f"document {i}" for i in range(start, stop)],
            metadatas=[{"i": i, "even": i % 2 == 0, "score": i / 7} for i in range(start, stop)],
        )
    return col


def run_cli(args, env, *, cwd, timeout=300, input=None):
    """``python main.py ARGS`` in a subprocess with exactly ``env`` (plus PATH and HOME)."""
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, input=input)


LEGACY_VENV = Path(os.environ.get("CHROMA_063_VENV", Path.home() / ".cache" / "chroma-0.6.3-venv"))
LEGACY_REQUIREMENTS = ["chromadb==0.6.3", "posthog<6"]


def legacy_chroma_executable() -> Path | None:
    """``chroma`` from a separate virtual environment with chromadb 0.6.3 (built once, cached
    outside the repo; .ci/run builds it).  None when it cannot be built here."""
    exe = LEGACY_VENV / "bin" / "chroma"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LEGACY_VENV)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(LEGACY_VENV / "bin" / "pip"), "install", "-q", *LEGACY_REQUIREMENTS], check=True,
                       capture_output=True, timeout=1200)
    except (subprocess.SubprocessError, OSError):
        return None
    return exe if exe.exists() else None


@pytest.fixture(scope="session")
def legacy_chroma_server(short_tmp):
    """A real Chroma 0.6.3 server."""
    exe = legacy_chroma_executable()
    if exe is None:
        reason = f"could not build the chromadb 0.6.3 environment at {LEGACY_VENV}"
        if os.environ.get("REQUIRE_CHROMA_063"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = ChromaServer(short_tmp / "chroma063")
    server.executable = str(exe)
    server.start(timeout=60)
    yield server
    server.stop()
