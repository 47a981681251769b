"""The operations layer: one set of rounds for the CLI and the daemon, every database of a tenant,
health history."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import make_collection, run_cli, wait_for
from test_daemon import FAST


def test_the_cli_and_the_daemon_produce_the_same_backup_and_health_results(env, tmp_path, client, name, daemons):
    make_collection(client, name, 60)
    [cli] = json.loads(run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path).stdout)
    [cli_health] = json.loads(run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path).stdout)

    daemon = daemons({**env, **FAST, "CHROMA_COLLECTION_NAME": name}, tmp_path)
    pattern = (
        rf"backup collection={name} snapshot=(\d+) status=complete health=(\w+) records=(\d+) "
        r"added=(\d+) updated=(\d+) deleted=(\d+)"
    )
    match = wait_for(lambda: re.search(pattern, daemon.output()), what="the daemon's backup line")
    health = wait_for(
        lambda: re.search(rf"health collection={name} status=(\w+) records=(\d+)", daemon.output()),
        what="the daemon's health line",
    )
    assert daemon.terminate()[0] == 0

    # the same round: the daemon's backup is the CLI's, one snapshot later, with nothing changed
    assert int(match.group(1)) > cli["snapshot_id"]
    assert (match.group(2), int(match.group(3))) == (cli["health"], cli["records"])
    assert (int(match.group(4)), int(match.group(5)), int(match.group(6))) == (0, 0, 0)
    assert (health.group(1), int(health.group(2))) == (cli_health["status"], cli_health["records"])


def test_health_history_records_deletion_auto_restore_and_re_creation(env, tmp_path, client, name):
    make_collection(client, name, 30)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    assert run_cli(["health", "--collection", name], env, cwd=tmp_path).returncode == 0
    client.delete_collection(name)
    run_cli(["health", "--collection", name, "--restore"], {**env, "HEALTH_CONFIRM_SECONDS": "0"}, cwd=tmp_path)
    make_collection(client, name, 30)
    check = json.loads(run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path).stdout)[0]
    assert check["status"] == "ok" and check["since"] is not None

    history = run_cli(["health", "--history", "--collection", name, "--json"], env, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    events = [(e["event"], e["status"]) for e in reversed(json.loads(history.stdout))]
    assert events == [("status", "ok"), ("status", "missing"), ("restore", "restored"), ("status", "ok")]
    text = run_cli(["health", "--history", "--collection", name], env, cwd=tmp_path).stdout
    assert f"{name:<24} -> missing" in text and "restored snapshot" in text


@pytest.fixture
def two_databases(client, chroma_server):
    """Two new databases of the default tenant, each with its own client."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    clients = {}
    for database in ("dba" + uuid.uuid4().hex[:6], "dbb" + uuid.uuid4().hex[:6]):
        client._admin_client.create_database(database)
        clients[database] = chromadb.HttpClient(
            host="127.0.0.1",
            port=chroma_server.port,
            database=database,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
    return clients


def test_two_databases_with_the_same_collection_name_are_kept_apart(env, tmp_path, two_databases, name):
    (first, a), (second, b) = two_databases.items()
    make_collection(a, name, 10)
    make_collection(b, name, 20, seed=1)
    env = {**env, "CHROMA_DATABASE": f"{first},{second}", "CHROMA_COLLECTION_NAME": name}

    backup = run_cli(["backup", "--json"], env, cwd=tmp_path)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    results = {r["collection"]: r["records"] for r in json.loads(backup.stdout)}
    assert results == {f"{first}/{name}": 10, f"{second}/{name}": 20}

    listing = json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)
    assert sorted((s["database"], s["records"]) for s in listing) == [(first, 10), (second, 20)]

    ambiguous = run_cli(["restore", "--collection", name], env, cwd=tmp_path)
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.splitlines()[-1] == (
        f"error: --collection {name} is ambiguous: {first}/{name}, {second}/{name}; name it as DATABASE/COLLECTION"
    )

    restore = run_cli(["restore", "--collection", f"{second}/{name}", "--json"], env, cwd=tmp_path)
    assert restore.returncode == 0, restore.stderr
    assert b.get_collection(name + "_restored", embedding_function=None).count() == 20
    assert name + "_restored" not in [c.name for c in a.list_collections()]

    a.delete_collection(name)
    health = {r["collection"]: r["status"] for r in json.loads(run_cli(["health", "--json"], env, cwd=tmp_path).stdout)}
    assert health[f"{first}/{name}"] == "missing" and health[f"{second}/{name}"] == "ok"


def test_every_database_of_the_tenant_with_a_star(env, tmp_path, two_databases, name):
    (first, a), (second, b) = two_databases.items()
    make_collection(a, name, 5)
    make_collection(b, name, 6, seed=1)
    env = {**env, "CHROMA_DATABASE": "*", "CHROMA_COLLECTION_NAME": name}
    results = {
        r["collection"]: r["records"] for r in json.loads(run_cli(["backup", "--json"], env, cwd=tmp_path).stdout)
    }
    assert results[f"{first}/{name}"] == 5 and results[f"{second}/{name}"] == 6
    restore = run_cli(
        ["restore", "--collection", f"{first}/{name}", "--to", name + "-x", "--to-database", second, "--json"],
        env,
        cwd=tmp_path,
    )
    assert restore.returncode == 0, restore.stderr
    assert b.get_collection(name + "-x", embedding_function=None).count() == 5
