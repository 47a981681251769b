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
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg2
import pytest

from chroma_backup.chroma.launcher import LocalChroma, free_port  # noqa: F401 - the tests import it from here
from chroma_backup.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


ChromaServer = LocalChroma  # the one launcher the demo, the benchmark and the tests share


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
def own_chroma_server(short_tmp):
    """A Chroma server of this test's own (to be wiped, killed or restarted)."""
    server = ChromaServer(short_tmp / ("own-" + uuid.uuid4().hex[:6])).start()
    yield server
    server.stop(signal.SIGKILL)


def wipe(server):
    """The 3 a.m. case: the volume is gone and the server comes back empty."""
    server.stop(signal.SIGKILL)
    shutil.rmtree(server.path)
    server.start()


def client_for(server, database="default_database"):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(
        host="127.0.0.1", port=server.port, database=database, settings=ChromaSettings(anonymized_telemetry=False)
    )


def create_databases(server, names):
    """Create databases (other than Chroma's default one) on a server."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    admin = chromadb.AdminClient(
        ChromaSettings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host="127.0.0.1",
            chroma_server_http_port=server.port,
            anonymized_telemetry=False,
        )
    )
    for name in names:
        if name != "default_database":
            admin.create_database(name)


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
        # Reads as fast as the server allows (the production defaults pace reads for the
        # application's sake: the smoke run and tests/e2e/test_fleet.py run with them).
        "READ_WORKERS": "3",
        "READ_PAGE_SIZE": "250",
        "READ_RATE_ADAPTIVE": "false",
    }


@pytest.fixture
def settings(env) -> Settings:
    return load_settings(env, env_file=None)


@pytest.fixture
def stores(settings):
    from chroma_backup.chroma import ChromaStore
    from chroma_backup.postgres import Database

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

    return chromadb.HttpClient(
        host="127.0.0.1", port=chroma_server.port, settings=ChromaSettings(anonymized_telemetry=False)
    )


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
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


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
        subprocess.run(
            [str(LEGACY_VENV / "bin" / "pip"), "install", "-q", *LEGACY_REQUIREMENTS],
            check=True,
            capture_output=True,
            timeout=1200,
        )
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


# The daemon with every interval short: a backup and a health check every ~2 s.
FAST = {"EXPORT_INTERVAL_MINUTES": "0.03", "HEALTH_CHECK_INTERVAL_MINUTES": "0.03", "HEALTH_CONFIRM_SECONDS": "0.5"}


# -- processes and polling ---------------------------------------------------------------------


def wait_for(predicate, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def query(database_url, sql, params=()):
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    except psycopg2.errors.UndefinedTable:
        return []
    finally:
        conn.close()


def statuses(database_url, name):
    return [
        row[0]
        for row in query(
            database_url,
            "SELECT s.status FROM chroma_data_snapshots s JOIN chroma_data_collections c USING (collection_ref) "
            "WHERE c.name = %s ORDER BY snapshot_id",
            (name,),
        )
    ]


class DaemonProcess:
    def __init__(self, env, cwd):
        self.log_path = Path(cwd) / f"daemon-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "run"],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout=10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def daemons():
    started = []

    def start(env, cwd):
        daemon = DaemonProcess(env, cwd)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
