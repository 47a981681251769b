"""Policies an operator sets: notes and pins through the CLI and retention that honours them,
prune's dry run saying why for every snapshot, and cancelling a running backup or restore over
the HTTP API."""

from __future__ import annotations

import json

import numpy as np
from conftest import make_collection, query, run_cli, wait_for
from test_api import start_api


def test_notes_and_pins_are_shown_and_a_pinned_snapshot_outlives_retention(env, tmp_path, client, name):
    make_collection(client, name, 30)
    env = {**env, "CHROMA_COLLECTION_NAME": name}
    first = run_cli(["backup", "--note", "before the re-index", "--json"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    keep = json.loads(first.stdout)[0]["snapshot_id"]
    for _ in range(3):
        assert run_cli(["backup"], env, cwd=tmp_path).returncode == 0
    pin = run_cli(["pin", "--snapshot", str(keep)], env, cwd=tmp_path)
    assert pin.stdout.strip() == f"pinned snapshot {keep} of {name} (before the re-index): prune keeps it"

    listed = run_cli(["snapshots"], env, cwd=tmp_path).stdout
    assert "PINNED; note: before the re-index" in next(
        line for line in listed.splitlines() if line.strip().startswith(str(keep))
    )
    snap = next(
        s for s in json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout) if s["snapshot_id"] == keep
    )
    assert (snap["pinned"], snap["note"]) == (True, "before the re-index")

    strict = {**env, "RETENTION_DAYS": "0", "RETENTION_MIN_SNAPSHOTS": "1"}
    dry = run_cli(["prune", "--dry-run"], strict, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    reasons = {int(line.split()[0]): line.split("  ")[-1].strip() for line in dry.stdout.splitlines()[1:]}
    assert reasons[keep] == "pinned"
    assert reasons[keep + 3] == "one of the newest 1, one of the newest 1 taken while ok"
    assert reasons[keep + 1] == "older than 0 days and kept by no rule"
    assert len(json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)) == 4  # nothing deleted yet

    assert run_cli(["prune"], strict, cwd=tmp_path).returncode == 0
    left = [s["snapshot_id"] for s in json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)]
    assert left == [keep + 3, keep]
    assert run_cli(["unpin", "--snapshot", str(keep)], env, cwd=tmp_path).returncode == 0
    assert run_cli(["prune"], strict, cwd=tmp_path).returncode == 0
    assert [s["snapshot_id"] for s in json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)] == [
        keep + 3
    ]


def test_pinning_a_snapshot_that_is_not_there_is_one_line(env, tmp_path, client, name):
    make_collection(client, name, 5)
    env = {**env, "CHROMA_COLLECTION_NAME": name}
    assert run_cli(["backup"], env, cwd=tmp_path).returncode == 0
    result = run_cli(["pin", "--snapshot", "999"], env, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"error: snapshot 999 is not a snapshot of collection '{name}'",
    )


def test_a_running_backup_and_a_running_restore_are_cancelled_over_the_api(env, tmp_path, client, name):
    collection = client.create_collection(name, embedding_function=None)
    rng = np.random.default_rng(0)
    for start in range(0, 12_000, 4000):
        collection.add(
            ids=[f"r{i}" for i in range(start, start + 4000)],
            embeddings=rng.standard_normal((4000, 32)).astype("float32"),
        )
    api = start_api(
        {
            **env,
            "CHROMA_COLLECTION_NAME": name,
            "READ_RATE_LIMIT": "1500",
            "READ_RATE_ADAPTIVE": "false",
            "BATCH_SIZE": "200",
        },
        tmp_path,
    )
    url = env["DATABASE_URL"]
    try:
        wait_for(lambda: "job=backup done" in api.daemon.output(), timeout=60, what="the backup at start")
        task = api.post("/api/v1/backups", json={"collections": [name]}).json()["task_id"]
        wait_for(lambda: api.get(f"/api/v1/tasks/{task}").json()["records_done"] > 0, what="the backup reading")
        cancel = api.delete(f"/api/v1/tasks/{task}")
        assert cancel.status_code == 202, cancel.text
        done = api.finish(task)
        assert done["state"] == "cancelled" and "cancelled" in done["error"]
        rows = query(url, "SELECT status, error FROM chroma_data_snapshots ORDER BY snapshot_id")
        assert rows[-1][0] == "failed" and "cancelled" in rows[-1][1]  # no partial snapshot
        assert api.delete(f"/api/v1/tasks/{task}").status_code == 409

        restore = api.post("/api/v1/restores", json={"collection": name, "target": name + "-copy"}).json()["task_id"]
        wait_for(lambda: api.get(f"/api/v1/tasks/{restore}").json()["records_done"] > 0, what="the restore writing")
        assert api.delete(f"/api/v1/tasks/{restore}").status_code == 202
        finished = api.finish(restore)
        assert finished["state"] == "cancelled"
        names = [c.name for c in client.list_collections()]
        assert name + "-copy" not in names and not any("-restoring-" in n for n in names)  # nothing half-built
        assert api.delete("/api/v1/tasks/nope").status_code == 404
    finally:
        api.daemon.kill()
