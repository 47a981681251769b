"""The command line as an operator uses it: real processes, exit codes, exact messages."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import psycopg2
import pytest
from conftest import make_collection, run_cli

COMMANDS = ["run", "backup", "snapshots", "restore", "verify", "health", "accept", "prune", "demo"]


def test_help_lists_every_command(tmp_path):
    result = run_cli(["--help"], {}, cwd=tmp_path)
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(tmp_path, command):
    result = run_cli([command, "--help"], {}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: main.py {command}")


def test_unknown_option_is_a_usage_error(tmp_path):
    result = run_cli(["restore", "--snapshot", "abc"], {}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: main.py restore: argument --snapshot: expected a positive integer, got 'abc'\n"


def test_bad_collection_argument_exits_2(env, tmp_path):
    result = run_cli(["backup", "--collection", "x'; DROP TABLE chroma_data; --"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: --collection: expected a Chroma collection name")


def test_bad_at_time_exits_2(env, tmp_path, client, name):
    make_collection(client, name, 5)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    result = run_cli(["restore", "--collection", name, "--at", "yesterday"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: --at: expected an ISO 8601 time such as 2026-11-24T03:00:00Z, got 'yesterday'"
    )


def test_backup_snapshots_restore_verify_from_the_command_line(env, tmp_path, client, name):
    make_collection(client, name, 300, space="cosine")
    backup = run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path)
    assert backup.returncode == 0, backup.stderr
    [result] = json.loads(backup.stdout)
    assert (result["status"], result["records"], result["added"]) == ("complete", 300, 300)

    listing = run_cli(["snapshots", "--collection", name, "--json"], env, cwd=tmp_path)
    [snap] = json.loads(listing.stdout)
    for key in (
        "snapshot_id",
        "collection",
        "status",
        "started_at",
        "finished_at",
        "records",
        "added",
        "updated",
        "deleted",
        "dimension",
        "digest",
    ):
        assert key in snap
    assert snap["digest"] == result["digest"] and len(snap["digest"]) == 32

    dry = run_cli(["restore", "--collection", name, "--dry-run", "--json"], env, cwd=tmp_path)
    assert dry.returncode == 0 and json.loads(dry.stdout)["dry_run"] is True
    assert name + "_restored" not in [c.name for c in client.list_collections()]

    restore = run_cli(["restore", "--collection", name, "--json"], env, cwd=tmp_path)
    assert restore.returncode == 0, restore.stderr
    data = json.loads(restore.stdout)
    assert (data["snapshot_id"], data["source"], data["target"], data["records"], data["verified"]) == (
        snap["snapshot_id"],
        name,
        name + "_restored",
        300,
        True,
    )
    assert "seconds" in data

    verify = run_cli(["verify", "--collection", name, "--target", name + "_restored", "--json"], env, cwd=tmp_path)
    assert verify.returncode == 0
    verdict = json.loads(verify.stdout)
    assert (verdict["identical"], verdict["missing"], verdict["extra"], verdict["changed"]) == (True, 0, 0, 0)


def test_restore_into_an_existing_target_exits_1(env, tmp_path, client, name):
    make_collection(client, name, 5)
    client.create_collection(name + "_restored", embedding_function=None)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    result = run_cli(["restore", "--collection", name], env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: target collection '{name}_restored' already exists; pass --overwrite to replace it "
        "(the restore is built and verified first) or --to another name"
    )


def test_verify_exits_1_when_the_collection_changed(env, tmp_path, client, name):
    col = make_collection(client, name, 20)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    col.delete(ids=["r3"])
    result = run_cli(["verify", "--collection", name], env, cwd=tmp_path)
    assert result.returncode == 1
    assert "DIFFERENT" in result.stdout and "missing: 'r3'" in result.stdout


def test_a_missing_collection_fails_alone(env, tmp_path, client, name):
    make_collection(client, name, 10)
    missing = "nope" + uuid.uuid4().hex[:6]
    result = run_cli(["backup", "--collection", missing, "--collection", name, "--json"], env, cwd=tmp_path)
    assert result.returncode == 1
    by_name = {r["collection"]: r for r in json.loads(result.stdout)}
    assert by_name[name]["status"] == "complete"
    assert by_name[missing]["status"] == "failed" and "does not exist" in by_name[missing]["error"]


def test_restore_without_backups_says_so(env, tmp_path, name):
    result = run_cli(["restore", "--collection", name], env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: no backups of collection '{name}' (tenant default_tenant, database default_database)"
    )


def _pg(database_url):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    return conn


def test_a_killed_backup_leaves_no_partial_snapshot(env, tmp_path, client, name, database_url):
    import subprocess
    import sys

    from conftest import ROOT

    make_collection(client, name, 20_000, dim=8)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "backup", "--collection", name],
        env={**os.environ, **env, "BATCH_SIZE": "100"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    conn = _pg(database_url)
    deadline = time.monotonic() + 60
    copying = False
    while time.monotonic() < deadline and proc.poll() is None and not copying:
        with conn.cursor() as cur:  # the backup has started writing record versions
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chroma-backup' AND query LIKE 'COPY%%'"
            )
            copying = cur.fetchone()[0] > 0
        time.sleep(0.05)
    assert copying and proc.poll() is None, "the backup was not caught midway"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    with conn.cursor() as cur:
        cur.execute("SELECT status FROM chroma_data_snapshots")
        assert [row[0] for row in cur.fetchall()] == ["running"]
        time.sleep(0.5)  # let the server notice the dropped connection and roll back
        cur.execute("SELECT count(*) FROM chroma_data")
        assert cur.fetchone()[0] == 0

    # the next process to open the catalog tells the truth about it
    listing = json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)
    assert [(s["status"], s["error"]) for s in listing] == [
        ("failed", "interrupted: the backup process or its connection ended before commit")
    ]
    again = run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["records"] == 20_000
    statuses = [s["status"] for s in json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)]
    assert statuses == ["complete", "failed"]
    conn.close()


def test_prune_dry_run_from_the_command_line(env, tmp_path, client, name):
    make_collection(client, name, 10)
    for _ in range(3):
        run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    env = {**env, "RETENTION_DAYS": "0", "RETENTION_MIN_SNAPSHOTS": "1"}
    dry = run_cli(["prune", "--dry-run", "--json"], env, cwd=tmp_path)
    assert dry.returncode == 0
    assert len(json.loads(dry.stdout)[0]["snapshots_deleted"]) == 2
    assert len(json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)) == 3
    real = run_cli(["prune"], env, cwd=tmp_path)
    assert real.returncode == 0 and "deleted 2 snapshots" in real.stdout
    assert len(json.loads(run_cli(["snapshots", "--json"], env, cwd=tmp_path).stdout)) == 1


def test_embedded_postgres_is_used_when_no_server_is_configured(chroma_server, client, name, short_tmp):
    make_collection(client, name, 10)
    data_dir = short_tmp / ("e" + uuid.uuid4().hex[:6])
    env = {"CHROMADB_HOST": "127.0.0.1", "CHROMADB_PORT": str(chroma_server.port), "DATA_DIR": str(data_dir)}
    result = run_cli(["backup", "--collection", name], env, cwd=short_tmp)
    assert result.returncode == 0, result.stderr
    assert "postgres=embedded" in result.stderr
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    listing = run_cli(["snapshots", "--json"], env, cwd=short_tmp)
    assert json.loads(listing.stdout)[0]["records"] == 10


def test_the_console_script_and_python_m_are_the_same_command_line(tmp_path):
    import shutil
    import subprocess
    import sys

    script = shutil.which("chroma-backup", path=os.path.dirname(sys.executable)) or shutil.which("chroma-backup")
    assert script, "chroma-backup is not installed (pip install -r requirements-dev.txt installs it)"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    reference = run_cli(["restore", "--snapshot", "abc"], {}, cwd=tmp_path)
    for command, prog in (
        ([script], "chroma-backup"),
        ([sys.executable, "-m", "chroma_backup"], "python -m chroma_backup"),
    ):
        helped = subprocess.run([*command, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {prog} [-h] COMMAND ...")
        failed = subprocess.run(
            [*command, "restore", "--snapshot", "abc"], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert (failed.returncode, failed.stderr) == (2, reference.stderr.replace("main.py", prog))
