"""Statuses that tell the truth under real faults: PostgreSQL stopped and restarted, Chroma's
connections cut by a fault proxy, Chroma killed between the two renames of a swap, a restoring
process killed midway, and the answer of a commit lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg2
import pytest
import requests
from conftest import ROOT, ChromaServer, free_port, make_collection, query, run_cli, statuses, wait_for
from faultproxy import FaultProxy

from chroma_backup.core import export_collection_to_postgres, import_postgres_to_chroma
from chroma_backup.errors import PostgresUnavailable, SwapFailed


class OwnPostgres:
    """A PostgreSQL server of this test's own (pgserver), to stop and start at will."""

    def __init__(self, path):
        import pgserver

        self.pgserver = pgserver
        self.path = path
        self.server = pgserver.get_server(path, cleanup_mode=None)
        self.url = self.server.get_uri()

    def stop(self):
        self.pgserver.pg_ctl(["-m", "immediate", "stop"], pgdata=self.path, user=self.server.system_user)

    def start(self):
        self.server.ensure_postgres_running()


@pytest.fixture
def own_postgres(short_tmp):
    pg = OwnPostgres(short_tmp / ("pgf-" + uuid.uuid4().hex[:6]))
    yield pg
    try:
        pg.stop()
    except Exception:
        pass


@pytest.fixture
def own_chroma(short_tmp):
    server = ChromaServer(short_tmp / ("chf-" + uuid.uuid4().hex[:6])).start()
    yield server
    server.stop(signal.SIGKILL)


def chroma_client(port):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False))


def healthz(port):
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except requests.ConnectionError:
        return None
    return answer.status_code, answer.json()


def test_a_daemon_started_while_postgres_is_down_says_so_and_backs_up_soon_after_it_returns(
    env, tmp_path, client, name, daemons, own_postgres
):
    make_collection(client, name, 30)
    own_postgres.stop()
    port = free_port()
    daemon = daemons(
        {
            **env,
            "DATABASE_URL": own_postgres.url,
            "CHROMA_COLLECTION_NAME": name,
            "HTTP_PORT": str(port),
            "UNREACHABLE_SECONDS": "2",
            "EXPORT_INTERVAL_MINUTES": "60",
            "HEALTH_CHECK_INTERVAL_MINUTES": "60",
            "RETRY_MAX_ATTEMPTS": "2",
            "RETRY_MAX_SECONDS": "2",
        },
        tmp_path,
    )
    down = wait_for(lambda: (h := healthz(port)) and h[0] == 503 and h, timeout=30, what="/healthz 503")
    assert down[1]["error"].startswith("postgres unreachable for ")
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'chroma_backup_dependency_up{dependency="postgres"} 0.0' in metrics
    assert 'chroma_backup_dependency_up{dependency="chroma"} 1.0' in metrics
    wait_for(
        lambda: "job=backup failed; next try in 15s" in daemon.output(), timeout=30, what="the start-up backup to fail"
    )

    own_postgres.start()
    # the next try comes within seconds, not at the next hourly turn
    wait_for(lambda: "complete" in statuses(own_postgres.url, name), timeout=60, what="a backup once PostgreSQL is up")
    wait_for(lambda: (h := healthz(port)) and h[0] == 200, timeout=30, what="/healthz 200 again")
    assert "dependency=postgres status=up" in daemon.output()
    assert daemon.terminate()[0] == 0


def test_an_idle_connection_cut_by_a_postgres_restart_is_reopened_transparently(own_postgres, monkeypatch):
    import chroma_backup.postgres.session as session_module
    from chroma_backup.postgres import Database
    from chroma_backup.settings import load_settings

    settings = load_settings({"DATABASE_URL": own_postgres.url}, env_file=None)
    database = Database(settings)
    database.migrate()

    monkeypatch.setattr(session_module, "IDLE_CHECK_SECONDS", 3600.0)  # as before: no check
    own_postgres.stop()
    own_postgres.start()
    with pytest.raises(PostgresUnavailable):
        database.catalog.collection_names("default_tenant", "default_database")

    monkeypatch.setattr(session_module, "IDLE_CHECK_SECONDS", 0.0)
    database.catalog.collection_names("default_tenant", "default_database")  # a fresh connection
    own_postgres.stop()
    own_postgres.start()
    assert database.catalog.collection_names("default_tenant", "default_database") == []  # no error
    database.close()


def test_a_committed_snapshot_is_complete_even_when_the_upkeep_after_it_fails(stores, client, name, monkeypatch):
    chroma, db = stores
    make_collection(client, name, 20)
    export_collection_to_postgres(chroma, db, name)
    client.get_collection(name, embedding_function=None).delete(ids=["r1"])

    def dropped():
        raise PostgresUnavailable("PostgreSQL connection lost during vacuuming the record table: injected")

    monkeypatch.setattr(db.records, "vacuum_records", dropped)
    result = export_collection_to_postgres(chroma, db, name)
    assert (result.status, result.deleted) == ("complete", 1)
    assert db.catalog.get_snapshot(result.snapshot_id).status == "complete"


class LostCommit(psycopg2.extensions.connection):
    """A connection whose commit, once armed, is done but answers an error (the connection dropped
    just after the server committed): a fault PostgreSQL cannot produce on demand."""

    armed = False

    def commit(self):
        super().commit()
        if LostCommit.armed:
            LostCommit.armed = False
            self.close()
            raise psycopg2.OperationalError("server closed the connection unexpectedly")


def test_a_commit_whose_answer_is_lost_is_reported_complete(stores, client, name, monkeypatch):
    from chroma_backup.postgres.records import SnapshotWriter

    chroma, db = stores
    make_collection(client, name, 20)
    real_connect = psycopg2.connect
    monkeypatch.setattr(psycopg2, "connect", lambda *a, **kw: real_connect(*a, connection_factory=LostCommit, **kw))
    db.session.close()  # reconnects through the factory
    real_complete = SnapshotWriter.complete

    def complete(self, **kwargs):
        real_complete(self, **kwargs)
        LostCommit.armed = True

    monkeypatch.setattr(SnapshotWriter, "complete", complete)
    result = export_collection_to_postgres(chroma, db, name)
    assert result.status == "complete" and result.records == 20
    assert db.catalog.get_snapshot(result.snapshot_id).status == "complete"


@pytest.mark.slow
def test_a_backup_whose_chroma_connections_are_cut_is_retried_within_seconds(
    env, tmp_path, client, name, daemons, chroma_server
):
    make_collection(client, name, 20_000)
    proxy = FaultProxy(chroma_server.port)
    try:
        daemon = daemons(
            {
                **env,
                "CHROMADB_PORT": str(proxy.port),
                "CHROMA_COLLECTION_NAME": name,
                "EXPORT_INTERVAL_MINUTES": "60",
                "HEALTH_CHECK_INTERVAL_MINUTES": "60",
                "BATCH_SIZE": "50",
                "RETRY_MAX_ATTEMPTS": "1",
            },
            tmp_path,
        )
        url = env["DATABASE_URL"]
        wait_for(
            lambda: (
                query(
                    url,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chroma-backup' "
                    "AND query LIKE 'COPY%%'",
                )[0][0]
                > 0
            ),
            timeout=60,
            what="the backup to copy records",
        )
        assert proxy.cut() > 0
        wait_for(lambda: "failed" in statuses(url, name), timeout=30, what="the cut backup to fail")
        wait_for(lambda: "complete" in statuses(url, name), timeout=90, what="the retry to complete")
        assert statuses(url, name)[:2] == ["failed", "complete"]
        assert "job=backup failed; next try in 15s" in daemon.output()
        assert daemon.terminate()[0] == 0
    finally:
        proxy.close()


class KillBetweenRenames:
    """The store, with Chroma killed (SIGKILL) just before the swap's second rename."""

    def __init__(self, inner, server):
        self._inner, self.server, self.renames = inner, server, 0

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def rename(self, collection, new_name):
        self.renames += 1
        if self.renames == 2:
            self.server.stop(signal.SIGKILL)
        return self._inner.rename(collection, new_name)


def test_chroma_killed_between_the_renames_of_a_swap_leaves_a_true_message_and_nothing_hidden(
    env, tmp_path, own_chroma, name
):
    from chroma_backup.chroma import ChromaStore
    from chroma_backup.postgres import Database
    from chroma_backup.settings import load_settings

    own = {**env, "CHROMADB_PORT": str(own_chroma.port)}
    settings = load_settings(own, env_file=None)
    db = Database(settings)
    db.migrate()
    chroma = ChromaStore.connect(settings, timeout=5)
    client = chroma_client(own_chroma.port)
    make_collection(client, name, 30)
    export_collection_to_postgres(chroma, db, name)
    client.get_collection(name, embedding_function=None).add(ids=["newer"], embeddings=[[0.5] * 8])  # not backed up

    with pytest.raises(SwapFailed) as failure:
        import_postgres_to_chroma(KillBetweenRenames(chroma, own_chroma), db, name, target=name, overwrite=True)
    aside = f"{name}-replaced-1"
    assert str(failure.value).startswith(f"the swap into {name!r} failed (Chroma unreachable during renaming ")
    assert f"the old collection is {name!r} or {aside!r}" in str(failure.value)
    [row] = db.restores.list_restores(db.catalog.collection_ref("default_tenant", "default_database", name))
    assert row["status"] == "failed" and "Chroma cannot say where things are now" in row["error"]
    chroma.close()
    db.close()

    own_chroma.start()  # same data, same port
    names = [c.name for c in chroma_client(own_chroma.port).list_collections()]
    assert aside in names and name not in names  # the first rename was done
    backup = run_cli(["backup", "--json"], own, cwd=tmp_path)
    backed_up = {r["collection"]: r for r in json.loads(backup.stdout)}
    assert backed_up[aside]["status"] == "complete" and backed_up[aside]["records"] == 31  # its data, newer one too


@pytest.mark.slow
def test_a_restore_killed_midway_is_marked_failed_and_its_half_built_copy_removed(env, tmp_path, client, name):
    make_collection(client, name, 20_000)
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "restore", "--collection", name, "--to", name + "-r"],
        env={**os.environ, **env, "BATCH_SIZE": "200"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    building = f"{name}-r-restoring-1"

    def filling():
        try:
            return client.get_collection(building, embedding_function=None).count() > 0
        except Exception:
            return False

    wait_for(filling, timeout=60, what="the restore to fill its working collection")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)  # the server notices the dropped connection
    url = env["DATABASE_URL"]
    assert query(url, "SELECT status FROM chroma_data_restores") == [("running",)]

    # the next process marks it failed, saying why, and its next round removes the half-built copy
    health = run_cli(["health", "--collection", name], env, cwd=tmp_path)
    assert "stale_restores_failed count=1" in health.stderr
    assert query(url, "SELECT status, error FROM chroma_data_restores") == [
        ("failed", "interrupted: the restore process or its connection ended before it finished")
    ]
    assert f"removed collection={building}: the half-built copy of restore 1, which did not finish" in health.stderr
    names = [c.name for c in client.list_collections()]
    assert building not in names and name + "-r" not in names
