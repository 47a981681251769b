"""Disaster recovery of a whole server: a Chroma server with several databases and collections of
every creation style is backed up, its data directory deleted and the server restarted empty,
and ``restore --all`` brings every collection back under its name and database, identical.
Each test has a server of its own (it is wiped)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import psycopg2
import pytest
from conftest import ROOT, client_for, create_databases, query, run_cli, wait_for, wipe
from test_restore_exact import create_styled, fill, typed

DATABASES = ["default_database", "sales", "support"]
# (creation style, record shape, space) per collection; the sales database holds the others' kinds too
KINDS = [
    ("plain", "metadata", "l2"),
    ("langchain", "everything", "l2"),
    ("configured", "bare", "ip"),
    ("legacy", "metadata", "cosine"),
    ("declared_ef", "documents", "l2"),
]


@pytest.fixture
def server(own_chroma_server):
    return own_chroma_server


@pytest.fixture
def dr_env(env, server):
    return {**env, "CHROMADB_PORT": str(server.port), "CHROMA_DATABASE": "*", "CHROMA_COLLECTION_NAME": "*"}


def populate(server, sizes=(40,)):
    """Collections of every kind in three databases; returns their (database, name)s."""
    create_databases(server, DATABASES)
    made = []
    for d, database in enumerate(DATABASES):
        client = client_for(server, database)
        kinds = KINDS if database == "default_database" else KINDS[d::2]
        for k, (style, shape, space) in enumerate(kinds):
            name = f"{style.replace('_', '-')}-{shape}"
            fill(create_styled(client, name, style, space), sizes[k % len(sizes)], shape, seed=d * 10 + k)
            made.append((database, name))
    return made


def read_state(server, database, name):
    """Everything a restore must bring back exactly: records (typed), configuration, schema,
    collection metadata."""
    col = client_for(server, database).get_collection(name, embedding_function=None)
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    embeddings = np.asarray(got["embeddings"], dtype="<f4").reshape(len(got["ids"]), -1)
    records = {
        rid: (embeddings[i].view("<i4"), typed(got["documents"][i]), typed(got["metadatas"][i]), got["uris"][i])
        for i, rid in enumerate(got["ids"])
    }
    return {
        "records": records,
        "configuration": col.configuration_json,
        "schema": col._model.serialized_schema,
        "metadata": typed(col.metadata or {}),
    }


def server_state(server, wanted):
    return {(database, name): read_state(server, database, name) for database, name in wanted}


def differences(before, after):
    """Every way ``after`` differs from ``before`` (cosine vectors within Chroma's 2-ulp re-rounding)."""
    problems = []
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            problems.append(f"{key}: gone")
            continue
        for part in ("configuration", "schema", "metadata"):
            if old[part] != new[part]:
                problems.append(f"{key}: {part} differs")
        if sorted(old["records"]) != sorted(new["records"]):
            problems.append(f"{key}: ids differ")
            continue
        ulps = 2 if (old["configuration"] or {}).get("hnsw", {}).get("space") == "cosine" else 0
        for rid, (ea, *rest_a) in old["records"].items():
            eb, *rest_b = new["records"][rid]
            if rest_a != rest_b or (ea.size and np.abs(ea.astype(np.int64) - eb.astype(np.int64)).max() > ulps):
                problems.append(f"{key}: record {rid} differs")
    return problems


def live_collections(server):
    found = set()
    for database in DATABASES:
        try:
            found |= {(database, c.name) for c in client_for(server, database).list_collections()}
        except Exception:  # the database itself is gone
            continue
    return found


def restore_all(env, tmp_path, *args):
    result = run_cli(["restore", "--all", "--json", *args], env, cwd=tmp_path)
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


@pytest.mark.slow
def test_a_wiped_server_comes_back_whole_under_its_names_and_databases(server, dr_env, tmp_path, database_url):
    made = populate(server, sizes=(40, 1, 1200))
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    before = server_state(server, made)
    assert sum(len(state["records"]) for state in before.values()) > 1000
    wipe(server)

    dry, plan = restore_all(dr_env, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert live_collections(server) == set()  # nothing changed
    assert sorted((c["database"], c["collection"]) for c in plan["collections"]) == sorted(made)
    assert {c["action"] for c in plan["collections"]} == {"restore"}
    assert {c["database"] for c in plan["collections"] if c["create_database"]} == {"sales", "support"}

    run, result = restore_all(dr_env, tmp_path)
    assert run.returncode == 0, run.stderr
    assert result["ok"] and result["summary"]["restored"] == len(made) and result["summary"]["failed"] == 0
    assert all(c["exact"] and c["outcome"] == "restored" for c in result["collections"])
    assert differences(before, server_state(server, made)) == []
    assert live_collections(server) == set(made)  # no working copies left behind
    for database, name in made:  # and each verifies against its snapshot independently
        verify = run_cli(["verify", "--collection", f"{database}/{name}"], dr_env, cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout

    restores = query(database_url, "SELECT count(*) FROM chroma_data_restores")[0][0]
    again, second = restore_all(dr_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert second["summary"]["restored"] == 0 and second["summary"]["already_restored"] == len(made)
    assert query(database_url, "SELECT count(*) FROM chroma_data_restores")[0][0] == restores


def test_the_plan_is_printed_first_and_the_run_ends_with_one_line(server, dr_env, tmp_path):
    client_for(server).create_collection("docs", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    wipe(server)
    run = run_cli(["restore", "--all"], dr_env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (
        f"plan for http://127.0.0.1:{server.port} (newest snapshot taken while ok; 1 records to restore, 2 at a time):"
    )
    assert lines[1].split() == ["SOURCE", "TARGET", "SNAPSHOT", "RECORDS", "SPACE", "ACTION"]
    assert lines[2].split() == ["default_database/docs", "default_database/docs", "1", "1", "l2", "restore"]
    assert lines[3].startswith("  restored default_database/docs -> default_database/docs: snapshot 1, 1 records")
    assert lines[-1].startswith("restore --all: 1 restored, 0 already restored, 0 failed; 1 records in ")


def test_restore_all_at_a_time_brings_back_each_collection_as_it_was_then(server, dr_env, tmp_path):
    client = client_for(server)
    docs = client.create_collection("docs", embedding_function=None)
    fill(docs, 30, "metadata")
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    then = server_state(server, [("default_database", "docs")])
    time.sleep(1.1)
    moment = datetime.now(timezone.utc).isoformat()
    time.sleep(1.1)
    docs.delete(ids=[f"doc-{i}" for i in range(10)])
    docs.upsert(ids=["doc-20"], embeddings=[[0.5] * 8], metadatas=[{"changed": True}])
    client.create_collection("later", embedding_function=None).add(ids=["x"], embeddings=[[1.0] * 8])
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    wipe(server)

    run, result = restore_all(dr_env, tmp_path, "--at", moment)
    assert run.returncode == 0, run.stderr
    outcome = {c["collection"]: (c["outcome"], c["snapshot_id"]) for c in result["collections"]}
    assert outcome == {"docs": ("restored", 1), "later": ("left_out", None)}
    assert differences(then, server_state(server, [("default_database", "docs")])) == []
    assert live_collections(server) == {("default_database", "docs")}


def test_existing_collections_are_left_alone_unless_overwrite_or_skip_existing(server, dr_env, tmp_path):
    client = client_for(server)
    for name in ("kept", "gone"):
        client.create_collection(name, embedding_function=None).add(ids=["a", "b"], embeddings=[[1.0], [2.0]])
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    client.delete_collection("gone")
    client.get_collection("kept", embedding_function=None).delete(ids=["a"])  # the live one moved on

    refused, plan = restore_all(dr_env, tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: 1 target collection(s) already exist: default_database/kept; pass --skip-existing to leave "
        "them, --overwrite to replace them (each verified first), or --name-template to restore beside them; "
        "nothing was restored"
    )
    assert [c.name for c in client.list_collections()] == ["kept"]  # nothing was restored
    assert {c["collection"]: c["action"] for c in plan["collections"]} == {"gone": "restore", "kept": "conflict"}

    skipped, result = restore_all(dr_env, tmp_path, "--skip-existing")
    assert skipped.returncode == 0, skipped.stderr
    assert {c["collection"]: c["outcome"] for c in result["collections"]} == {
        "gone": "restored",
        "kept": "skip_existing",
    }
    assert client.get_collection("kept", embedding_function=None).count() == 1  # untouched

    beside, result = restore_all(dr_env, tmp_path, "--name-template", "{name}_dr")
    assert beside.returncode == 0, beside.stderr
    assert sorted(c.name for c in client.list_collections()) == ["gone", "gone_dr", "kept", "kept_dr"]

    replaced, result = restore_all(dr_env, tmp_path, "--overwrite", "--collection", "kept")
    assert replaced.returncode == 0, replaced.stderr
    assert client.get_collection("kept", embedding_function=None).count() == 2


def test_bad_combinations_are_usage_errors(dr_env, tmp_path):
    cases = [
        (["--all", "--to", "x-y"], "error: --to does not go with --all (use --name-template, --at, --to-host)"),
        (["--all", "--overwrite", "--skip-existing"], "error: --overwrite and --skip-existing exclude each other"),
        (
            ["--all", "--name-template", "dr"],
            "error: --name-template: expected a collection name containing {name}, got 'dr'",
        ),
        (["--skip-existing"], "error: --skip-existing goes with --all"),
        (
            ["--collection", "a-b", "--collection", "c-d"],
            "error: --collection may be given once (or repeated with --all)",
        ),
    ]
    for args, message in cases:
        result = run_cli(["restore", *args], dr_env, cwd=tmp_path)
        assert (result.returncode, result.stderr.strip()) == (2, message), args


@pytest.mark.slow
def test_a_restore_all_killed_halfway_is_completed_by_a_rerun(server, dr_env, tmp_path, database_url):
    client = client_for(server)
    names = [f"big-{i}" for i in range(4)]
    for i, name in enumerate(names):
        fill(client.create_collection(name, embedding_function=None), 3000, "metadata", dim=64, seed=i)
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    before = server_state(server, [("default_database", n) for n in names])
    wipe(server)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "restore", "--all", "--parallel", "1"],
        env={**os.environ, **dr_env, "BATCH_SIZE": "300"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done = "SELECT count(*) FROM chroma_data_restores WHERE status = 'complete'"
    wait_for(lambda: query(database_url, done)[0][0] >= 1, timeout=120, what="a first collection restored")
    wait_for(lambda: any("-restoring-" in c.name for c in client.list_collections()), timeout=60, what="a second")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)  # the servers notice the dropped connections

    rerun, result = restore_all(dr_env, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert result["summary"]["already_restored"] >= 1 and result["summary"]["restored"] >= 1
    assert result["summary"]["already_restored"] + result["summary"]["restored"] == len(names)
    assert "the half-built copy of restore" in rerun.stderr
    assert differences(before, server_state(server, [("default_database", n) for n in names])) == []
    assert sorted(c.name for c in client.list_collections()) == names


def test_one_collection_failing_never_stops_the_others(server, dr_env, tmp_path, database_url):
    client = client_for(server)
    for name in ("alpha", "beta"):
        fill(client.create_collection(name, embedding_function=None), 20, "bare")
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    # one collection's stored records were damaged after the backup: its restore cannot verify
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE chroma_data SET document = 'tampered' WHERE record_id = 'doc-3' AND collection_ref = "
            "(SELECT collection_ref FROM chroma_data_collections WHERE name = 'alpha')"
        )
    conn.close()
    wipe(server)
    run, result = restore_all(dr_env, tmp_path)
    assert run.returncode == 1
    outcome = {c["collection"]: c["outcome"] for c in result["collections"]}
    assert outcome == {"alpha": "failed", "beta": "restored"}
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("error: 1 collection(s) not restored exactly: default_database/alpha: ")
    )
    assert [c.name for c in client.list_collections()] == ["beta"]


# -- health and the daemon on a wiped server ---------------------------------------------------


def two_databases(server):
    """Three collections in two databases, one of them made the LangChain way."""
    create_databases(server, ["sales"])
    fill(create_styled(client_for(server), "docs", "plain"), 30, "metadata")
    fill(create_styled(client_for(server), "chat", "langchain"), 20, "everything", seed=1)
    fill(create_styled(client_for(server, "sales"), "leads", "legacy", "cosine"), 25, "metadata", seed=2)
    return [("default_database", "docs"), ("default_database", "chat"), ("sales", "leads")]


def test_a_wiped_server_is_one_event_and_health_restore_brings_it_back_under_its_names(server, dr_env, tmp_path):
    made = two_databases(server)
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    before = server_state(server, made)
    wipe(server)
    # the application started again and re-created one of its collections, empty
    client_for(server).get_or_create_collection("chat", embedding_function=None, metadata=None, configuration=None)

    health = run_cli(["health", "--json"], dr_env, cwd=tmp_path)
    assert health.returncode == 1
    reports = {r["collection"]: r for r in json.loads(health.stdout)}
    assert {name: (r["status"], r["wiped"]) for name, r in reports.items()} == {
        "default_database/docs": ("missing", True),
        "default_database/chat": ("shrunk", True),
        "sales/leads": ("missing", True),
    }
    assert health.stderr.count("status=wiped") == 1
    assert (
        "the server lost every selected collection (3 with backups, all gone at once)"
        in reports["sales/leads"]["detail"]
    )

    recover = run_cli(["health", "--restore"], {**dr_env, "HEALTH_CONFIRM_SECONDS": "0.5"}, cwd=tmp_path)
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert len(re.findall(r"recovery action=whole_server_restore server=\S+ restored=3 ", recover.stderr)) == 1
    assert differences(before, server_state(server, made)) == []
    kept = [c.name for c in client_for(server).list_collections() if c.name.startswith("chat-replaced-")]
    assert len(kept) == 1  # the empty collection the application made is kept aside, not deleted
    assert run_cli(["health"], dr_env, cwd=tmp_path).returncode == 0


def test_per_collection_recovery_of_a_wiped_server_goes_to_new_collection_name(server, dr_env, tmp_path):
    made = two_databases(server)
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    wipe(server)
    env = {**dr_env, "HEALTH_CONFIRM_SECONDS": "0.2", "WIPED_SERVER_RECOVERY": "per_collection"}
    recover = run_cli(["health", "--restore"], env, cwd=tmp_path)
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert live_collections(server) == {(database, name + "_restored") for database, name in made}


def test_new_collection_name_name_restores_a_missing_collection_under_its_own_name(server, dr_env, tmp_path):
    client = client_for(server)
    fill(create_styled(client, "docs", "plain"), 30, "metadata")
    fill(create_styled(client, "faq", "plain"), 10, "metadata")
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    before = server_state(server, [("default_database", "docs")])
    client.delete_collection("docs")
    env = {**dr_env, "NEW_COLLECTION_NAME": "{name}", "HEALTH_CONFIRM_SECONDS": "0.2"}
    recover = run_cli(["health", "--restore", "--json"], env, cwd=tmp_path)
    assert recover.returncode == 0, recover.stdout + recover.stderr
    docs = next(r for r in json.loads(recover.stdout) if r["collection"] == "default_database/docs")
    assert docs["recovery"]["action"] == "restored" and docs["recovery"]["target"] == "docs"
    assert differences(before, server_state(server, [("default_database", "docs")])) == []
    again = run_cli(["health", "--json"], env, cwd=tmp_path)
    assert again.returncode == 0 and {r["status"] for r in json.loads(again.stdout)} == {"ok"}


# -- a server that says "too many requests" ------------------------------------------------------


def test_writes_answered_429_are_sent_again_after_a_wait_and_the_restore_completes(server, dr_env, tmp_path):
    from throttle import ThrottlingProxy

    made = two_databases(server)
    assert run_cli(["backup"], dr_env, cwd=tmp_path).returncode == 0
    before = server_state(server, made)
    wipe(server)
    proxy = ThrottlingProxy(server.port, refuse=4, retry_after="0.1")
    try:
        run, result = restore_all({**dr_env, "CHROMADB_PORT": str(proxy.port)}, tmp_path)
    finally:
        proxy.close()
    assert run.returncode == 0, run.stderr
    assert proxy.refused == 4 and result["summary"]["restored"] == 3
    assert "chroma throttled what=adding records to" in run.stderr and "status=429 attempt=1/8 wait=0.10s" in run.stderr
    assert differences(before, server_state(server, made)) == []


def test_a_server_that_keeps_answering_429_fails_the_collection_with_a_clear_error(stores, client, name, monkeypatch):
    from throttle import ThrottlingProxy

    from chroma_backup.chroma import ChromaStore
    from chroma_backup.chroma import http as transport
    from chroma_backup.core import export_collection_to_postgres, import_postgres_to_chroma
    from chroma_backup.errors import ChromaUnavailable
    from chroma_backup.settings import load_settings

    chroma, db = stores
    fill(create_styled(client, name, "plain"), 10, "metadata")
    export_collection_to_postgres(chroma, db, name)
    monkeypatch.setattr(transport, "THROTTLE_FIRST_WAIT", 0.01)
    monkeypatch.setattr(transport, "THROTTLE_MAX_WAIT", 0.02)
    proxy = ThrottlingProxy(int(chroma.address.rsplit(":", 1)[1]), refuse=None)
    throttled = ChromaStore.connect(load_settings({"CHROMADB_PORT": str(proxy.port)}, env_file=None))
    try:
        with pytest.raises(ChromaUnavailable, match=r"HTTP 429 \(too many requests\) during adding records to"):
            import_postgres_to_chroma(throttled, db, name, target=name + "-copy")
    finally:
        throttled.close()
        proxy.close()
    assert proxy.refused == transport.THROTTLE_ATTEMPTS
    assert name + "-copy" not in [c.name for c in client.list_collections()]  # nothing half-built is left
