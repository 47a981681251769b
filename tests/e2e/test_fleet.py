"""Several daemons on one catalog: each collection backed up once per interval between them, no
failures from each other's locks, one restore for one lost collection, and a killed replica's
collections backed up by the other; a round's concurrency and the read pacer on real servers."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from conftest import FAST, make_collection, query, run_cli, wait_for

INTERVAL_SECONDS = 0.03 * 60  # FAST's EXPORT_INTERVAL_MINUTES


def snapshots_of(url, prefix):
    return query(
        url,
        "SELECT c.name, s.started_at, s.replica FROM chroma_data_snapshots s JOIN chroma_data_collections c "
        "USING (collection_ref) WHERE s.status = 'complete' AND c.name LIKE %s ORDER BY c.name, s.started_at",
        (prefix + "%",),
    )


@pytest.mark.slow
def test_two_daemons_share_the_work_and_recover_a_lost_collection_once(env, tmp_path, client, name, daemons):
    names = [f"{name}-{i:02d}" for i in range(10)]
    for i, collection in enumerate(names):
        make_collection(client, collection, 60, seed=i)
    fleet_env = {
        **env,
        **FAST,
        "CHROMA_COLLECTION_NAME": ",".join(names),
        "BACKUP_CONCURRENCY": "2",
        # the production defaults: one reader, small pages, adaptive pacing
        "READ_WORKERS": "1",
        "READ_PAGE_SIZE": "50",
        "READ_RATE_ADAPTIVE": "true",
    }
    a = daemons({**fleet_env, "REPLICA_NAME": "replica-a"}, tmp_path)
    b = daemons({**fleet_env, "REPLICA_NAME": "replica-b"}, tmp_path)
    url = env["DATABASE_URL"]
    time.sleep(14)

    rows = snapshots_of(url, name)
    per = {}
    for collection, started, _replica in rows:
        per.setdefault(collection, []).append(started)
    assert set(per) == set(names)
    for collection, times in per.items():
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.8 * 0.9 * INTERVAL_SECONDS for gap in gaps), (collection, gaps)  # once per interval
    assert {replica for *_, replica in rows} == {"replica-a", "replica-b"}  # both did their share
    for daemon in (a, b):
        output = daemon.output()
        assert " ERROR " not in output and "status=failed" not in output, output[-3000:]
        assert "status=skipped" in output or "skipped=" in output

    lost = names[3]
    client.delete_collection(lost)
    wait_for(lambda: lost + "_restored" in [c.name for c in client.list_collections()], what="the recovery")
    time.sleep(4)  # both replicas see it again
    restores = query(url, "SELECT target, status FROM chroma_data_restores WHERE target = %s", (lost + "_restored",))
    assert restores == [(lost + "_restored", "complete")]  # one restore, by one replica

    a.proc.kill()  # replica a dies mid-work
    a.proc.wait(10)
    killed_at = time.time()
    time.sleep(3 * INTERVAL_SECONDS + 2)
    recent = query(
        url,
        "SELECT DISTINCT c.name FROM chroma_data_snapshots s JOIN chroma_data_collections c USING (collection_ref) "
        "WHERE s.status = 'complete' AND s.replica = 'replica-b' AND s.started_at > to_timestamp(%s)",
        (killed_at,),
    )
    backed = {row[0] for row in recent}
    assert backed >= {n for n in names if n != lost}  # (the list selects names: not the restored copy)
    assert b.terminate()[0] == 0


def test_a_backup_by_hand_of_a_collection_another_process_holds_is_skipped_not_failed(env, tmp_path, client, name):
    from chroma_backup.postgres import Database
    from chroma_backup.settings import load_settings

    make_collection(client, name, 20)
    holder = Database(load_settings(env, env_file=None))
    try:
        with holder.locks.collection_lock("default_tenant", "default_database", name):
            result = run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    finally:
        holder.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{name}: skipped: collection '{name}' is busy: another backup or restore of it is running"
    )
    assert " ERROR " not in result.stderr


def test_a_round_with_concurrency_backs_up_exactly_what_one_worker_does(env, tmp_path, client, name):
    import json

    names = [f"{name}-{i}" for i in range(6)]
    for i, collection in enumerate(names):
        make_collection(client, collection, 120, seed=i)
    one = run_cli(
        ["backup", "--json"],
        {**env, "CHROMA_COLLECTION_NAME": ",".join(names), "BACKUP_CONCURRENCY": "1"},
        cwd=tmp_path,
    )
    many = run_cli(
        ["backup", "--json"],
        {**env, "CHROMA_COLLECTION_NAME": ",".join(names), "BACKUP_CONCURRENCY": "4", "BACKUP_TABLE": "other"},
        cwd=tmp_path,
    )
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    digests = lambda out: [(r["collection"], r["records"], r["digest"]) for r in json.loads(out)]
    assert digests(many.stdout) == digests(one.stdout)  # same order, same content


def test_a_read_rate_limit_holds_for_a_backup(env, tmp_path, client, name):
    collection = client.create_collection(name, embedding_function=None)
    rng = np.random.default_rng(0)
    collection.add(ids=[f"r{i}" for i in range(5000)], embeddings=rng.standard_normal((5000, 8)).astype(np.float32))
    started = time.monotonic()
    result = run_cli(
        ["backup", "--collection", name],
        {**env, "READ_RATE_LIMIT": "1000", "READ_RATE_ADAPTIVE": "false"},
        cwd=tmp_path,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert seconds >= 3.5  # 5,000 records at 1,000/s, a second of burst (and the confirmation reads more)
