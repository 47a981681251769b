"""Surgical recovery against real servers, with damage made as real failures make it: a deep
check that finds exactly the records a damaged index lost or someone deleted, a repair that makes
it clean again without touching any other record, record-level restores by id and by metadata
filter, and diff."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time

import numpy as np
import psycopg2
import pytest
from conftest import client_for, run_cli

N = 2500
SOURCES = [f"file-{i}.md" for i in range(4)]


def fill(collection, start, stop, seed=0):
    rng = np.random.default_rng([seed, start])
    for s in range(start, stop, 500):
        e = min(stop, s + 500)
        collection.add(
            ids=[f"r{i}" for i in range(s, e)],
            embeddings=rng.standard_normal((e - s, 16)).astype(np.float32),
            documents=[f"chunk {i}" for i in range(s, e)],
            metadatas=[{"source": SOURCES[i % 4], "page": i, "draft": i % 2 == 0} for i in range(s, e)],
        )


def vector_segment(server, collection_id):
    db = sqlite3.connect(server.path / "chroma.sqlite3")
    try:
        row = db.execute(
            "SELECT id FROM segments WHERE scope = 'VECTOR' AND collection = ?", (collection_id,)
        ).fetchone()
    finally:
        db.close()
    return server.path / row[0]


@pytest.fixture
def lost_index(own_chroma_server, env, tmp_path):
    """A collection of 2,500 records whose HNSW index lost records r1000-r1999 (its segment files
    went back to an older state, as after a crash or a partial restore of the volume): ids,
    documents and metadata are there, the vectors are not (``Error finding id``)."""
    server = own_chroma_server
    client = client_for(server)
    collection = client.create_collection("docs", embedding_function=None)
    fill(collection, 0, 1000)  # Chroma writes the index files at sync_threshold (1000)
    time.sleep(0.5)
    segment = vector_segment(server, str(collection.id))
    saved = tmp_path / "segment-at-1000"
    shutil.copytree(segment, saved)
    fill(collection, 1000, N)  # written again at 2000; records 2000-2499 wait in the log
    my_env = {**env, "CHROMADB_PORT": str(server.port), "CHROMA_COLLECTION_NAME": "docs"}
    assert run_cli(["backup"], my_env, cwd=tmp_path).returncode == 0
    server.stop(signal.SIGKILL)
    shutil.rmtree(segment)
    shutil.copytree(saved, segment)
    server.start()
    return server, my_env


def deep(env, tmp_path):
    result = run_cli(["health", "--deep", "--json"], env, cwd=tmp_path)
    return result, json.loads(result.stdout)[0]


def test_the_deep_check_finds_exactly_the_records_a_damaged_index_lost(lost_index, tmp_path):
    _server, env = lost_index
    result, report = deep(env, tmp_path)
    assert result.returncode == 1
    assert report["status"] == "corrupt"
    found = report["deep"]
    assert (found["records"], found["unreadable"], found["gone"], found["complete"]) == (N, 1000, 0, True)
    assert all(1000 <= int(rid[1:]) < 2000 for rid in found["examples"]["unreadable"])
    assert report["detail"].startswith("deep check: 2,500 records checked: 1,000 unreadable, ")
    assert "deep collection=docs status=corrupt records=2500 checked=2500 unreadable=1000" in result.stderr


def test_repair_puts_back_only_what_was_lost_in_place_and_a_second_repair_does_nothing(
    lost_index, tmp_path, database_url
):
    server, env = lost_index
    client = client_for(server)
    docs = client.get_collection("docs", embedding_function=None)
    docs.update(ids=["r5"], metadatas=[{"source": "edited-after-the-backup"}])  # the application moved on
    docs.delete(ids=[f"r{i}" for i in range(2100, 2130)])  # and 30 records vanish behind its back

    dry = run_cli(["repair", "--dry-run", "--json"], env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["rewritten"] == 1030 and planned["by_kind"] == {"unreadable": 1000, "unindexed": 0, "gone": 30}
    assert deep(env, tmp_path)[1]["deep"]["unreadable"] == 1000  # the dry run changed nothing

    repair = run_cli(["repair"], env, cwd=tmp_path)
    assert repair.returncode == 0, repair.stderr
    assert repair.stdout.startswith("repaired docs from snapshot 1: 2,470 records checked: 1,000 unreadable, ")
    assert "1,030 records rewritten and verified (1,000 unreadable, 0 unindexed, 30 gone)" in repair.stdout

    result, report = deep(env, tmp_path)
    assert result.returncode == 0 and report["status"] == "ok"
    assert (report["deep"]["unreadable"], report["deep"]["gone"]) == (0, 0)
    verify = json.loads(run_cli(["verify", "--json"], env, cwd=tmp_path).stdout)
    assert (verify["missing"], verify["extra"], verify["changed"]) == (0, 0, 1)  # only the application's edit
    assert docs.get(ids=["r5"])["metadatas"] == [{"source": "edited-after-the-backup", "page": 5, "draft": False}]
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT kind, status, verified, records, counts->>'unreadable' FROM chroma_data_restores")
        assert cur.fetchall() == [("repair", "complete", True, 1030, "1000")]
    conn.close()

    again = run_cli(["repair", "--json"], env, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["rewritten"] == 0
    history = run_cli(["health", "--history", "--json"], env, cwd=tmp_path)
    assert any(e["event"] == "repair" for e in json.loads(history.stdout))


@pytest.fixture
def docs(env, tmp_path, client, name):
    collection = client.create_collection(name, embedding_function=None)
    fill(collection, 0, 400)
    my_env = {**env, "CHROMA_COLLECTION_NAME": name}
    assert run_cli(["backup"], my_env, cwd=tmp_path).returncode == 0
    return collection, my_env


def test_undelete_by_id_restores_exactly_those_records(docs, tmp_path, name):
    collection, env = docs
    collection.delete(ids=["r10", "r11", "r12"])
    args = ["restore", "--ids", "r10", "r11", "--into-live", "--json"]
    dry = run_cli([*args, "--dry-run"], env, cwd=tmp_path)
    assert dry.returncode == 0 and json.loads(dry.stdout)["written"] == 2
    assert collection.count() == 397  # nothing changed
    result = run_cli(args, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["selected"], out["missing"], out["written"], out["verified"]) == (2, 2, 2, True)
    assert collection.count() == 399 and collection.get(ids=["r12"])["ids"] == []
    verify = json.loads(run_cli(["verify", "--json"], env, cwd=tmp_path).stdout)
    assert (verify["missing"], verify["changed"], verify["examples"]["missing"]) == (1, 0, ["r12"])


def test_undelete_by_where_restores_exactly_the_matching_records_and_modes_decide_what_is_overwritten(
    docs, tmp_path, name
):
    collection, env = docs
    gone = collection.get(where={"source": "file-2.md"})["ids"]
    collection.delete(ids=gone)  # a script deleted the wrong source
    edited = {"source": "file-1.md", "page": 1, "note": "edited since"}
    collection.update(ids=["r1"], metadatas=[edited])  # file-1.md: not selected
    collection.upsert(
        ids=["r6"], embeddings=[[0.0] * 16], documents=["edited"], metadatas=[{"source": "file-2.md", "page": 6}]
    )  # re-added by the application, with other content
    where = json.dumps({"$and": [{"source": "file-2.md"}, {"page": {"$gte": 0}}]})

    missing_only = run_cli(
        ["restore", "--where", where, "--into-live", "--mode", "missing", "--json"], env, cwd=tmp_path
    )
    assert missing_only.returncode == 0, missing_only.stderr
    out = json.loads(missing_only.stdout)
    assert (out["selected"], out["missing"], out["different"], out["written"]) == (100, 99, 1, 99)
    assert collection.get(ids=["r6"])["documents"] == ["edited"]  # missing mode leaves it alone

    merge = run_cli(["restore", "--where", where, "--into-live"], env, cwd=tmp_path)
    assert merge.returncode == 0, merge.stderr
    assert "wrote 1 records of snapshot 1" in merge.stdout
    assert collection.get(ids=["r6"])["documents"] == ["chunk 6"]
    assert collection.get(ids=["r1"])["metadatas"] == [
        {**edited, "draft": False}
    ]  # not selected: untouched (update merges)
    verify = json.loads(run_cli(["verify", "--json"], env, cwd=tmp_path).stdout)
    assert (verify["missing"], verify["extra"], verify["changed"]) == (0, 0, 1)


def test_record_level_restore_errors_are_one_line(docs, tmp_path):
    _, env = docs
    cases = [
        (
            ["restore", "--ids", "r1"],
            2,
            "error: --ids, --ids-file and --where write into the live collection: add --into-live",
        ),
        (
            ["restore", "--where", "{nope", "--into-live"],
            2,
            "error: --where: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        (
            ["restore", "--where", '{"a": {"$regex": "x"}}', "--into-live"],
            2,
            "error: --where: a: unsupported operator $regex",
        ),
        (
            ["restore", "--ids-file", "/nonexistent/ids.txt", "--into-live"],
            2,
            "error: --ids-file: cannot read '/nonexistent/ids.txt': No such file or directory",
        ),
        (
            ["restore", "--ids", "r1", "--into-live", "--to", "x-y"],
            2,
            "error: --to does not go with --ids, --ids-file or --where (records go back in place)",
        ),
        (
            ["restore", "--ids", "r1", "nope-1", "--into-live"],
            1,
            "error: 1 id(s) are not in snapshot 1 (e.g. 'nope-1')",
        ),
    ]
    for args, code, message in cases:
        result = run_cli(args, env, cwd=tmp_path)
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (code, message), args


def test_undelete_from_an_ids_file(docs, tmp_path):
    collection, env = docs
    collection.delete(ids=[f"r{i}" for i in range(100, 200)])
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"r{i}\n" for i in range(100, 200)) + "\n")
    result = run_cli(["restore", "--ids-file", str(ids), "--into-live", "--json"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 100 and collection.count() == 400


def test_diff_between_snapshots_and_against_live_names_every_change_and_its_parts(docs, tmp_path, name):
    collection, env = docs
    collection.delete(ids=["r1", "r2"])
    collection.update(ids=["r3"], metadatas=[{"source": "moved"}])
    collection.update(ids=["r4"], embeddings=[[1.0] * 16], documents=["new text"])
    collection.add(ids=["new-1"], embeddings=[[0.5] * 16])

    live = run_cli(["diff", "--ids"], env, cwd=tmp_path)
    assert live.returncode == 1
    lines = live.stdout.splitlines()
    assert sorted(lines[:-1]) == ["+ new-1", "- r1", "- r2", "~ r3 (metadata)", "~ r4 (embedding,document)"]
    assert lines[-1].startswith(
        f"{name}: snapshot 1 -> live: 1 added, 2 updated (embedding 1, document 1, metadata 1, uri 0), 2 deleted, "
        "396 unchanged ("
    )

    assert run_cli(["backup"], env, cwd=tmp_path).returncode == 0
    between = run_cli(["diff", "--from", "1", "--to", "2", "--json"], env, cwd=tmp_path)
    assert between.returncode == 1
    data = json.loads(between.stdout)
    assert sorted((c["id"], c["change"], tuple(c["parts"])) for c in data["changes"]) == [
        ("new-1", "added", ()),
        ("r1", "deleted", ()),
        ("r2", "deleted", ()),
        ("r3", "updated", ("metadata",)),
        ("r4", "updated", ("embedding", "document")),
    ]
    assert data["summary"]["added"] == 1 and data["summary"]["unchanged"] == 396
    same = run_cli(["diff"], env, cwd=tmp_path)
    assert same.returncode == 0 and " 0 added, 0 updated" in same.stdout


def test_the_daemon_deep_checks_on_its_schedule_and_repairs_with_auto_repair(lost_index, tmp_path, daemons):
    import requests
    from conftest import free_port, wait_for

    _server, env = lost_index
    port = free_port()
    daemon = daemons(
        {
            **env,
            "DEEP_CHECK_INTERVAL_HOURS": "0.001",  # every 3.6 s
            "AUTO_REPAIR": "true",
            "AUTO_RESTORE": "false",  # the sampled check may see the damage too: no whole copy here
            "EXPORT_INTERVAL_MINUTES": "60",
            "HTTP_PORT": str(port),
        },
        tmp_path,
    )
    wait_for(
        lambda: "repair collection=docs snapshot=1 dry_run=False unreadable=1000" in daemon.output(),
        timeout=120,
        what="the repair",
    )
    wait_for(
        lambda: "deep collection=docs status=ok records=2500 checked=2500 unreadable=0" in daemon.output(),
        timeout=60,
        what="a clean deep check",
    )
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'chroma_backup_deep_records{collection="docs",kind="unreadable"} 0.0' in metrics
    assert 'chroma_backup_deep_records{collection="docs",kind="checked"} 2500.0' in metrics
    assert "deep collection=docs status=corrupt records=2500 checked=2500 unreadable=1000" in daemon.output()
    assert daemon.terminate()[0] == 0
