"""The recovered collection is protected too; a restore re-creates the configuration exactly;
exit codes a scheduler can use; honest counts after a cosine restore."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from conftest import make_collection, run_cli

from chroma_backup.core import (
    export_collection_to_postgres,
    import_postgres_to_chroma,
    json_differences,
    verify_collection,
)

NO_CONFIRM = {"HEALTH_CONFIRM_SECONDS": "0"}


def snapshots(env, tmp_path, name):
    return json.loads(run_cli(["snapshots", "--collection", name, "--json"], env, cwd=tmp_path).stdout)


def test_a_recovery_target_is_backed_up_and_checked_and_says_where_it_came_from(env, tmp_path, client, name):
    make_collection(client, name, 40)
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0
    source_snapshot = snapshots(env, tmp_path, name)[0]["snapshot_id"]
    client.delete_collection(name)
    recovered = run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    target = name + "_restored"

    # the application now writes to the recovered collection: with * it is protected like any other
    client.get_collection(target, embedding_function=None).add(ids=["new"], embeddings=[[0.5] * 8])
    backup = run_cli(["backup", "--json"], env, cwd=tmp_path)
    by_name = {r["collection"]: r for r in json.loads(backup.stdout)}
    assert by_name[target]["status"] == "complete" and by_name[target]["records"] == 41
    [snap] = snapshots(env, tmp_path, target)
    assert snap["origin"] == {"collection": name, "snapshot_id": source_snapshot}
    assert (
        f"restored from {name} snapshot {source_snapshot}"
        in run_cli(["snapshots", "--collection", target], env, cwd=tmp_path).stdout
    )
    health = json.loads(run_cli(["health", "--json"], env, cwd=tmp_path).stdout)
    assert {r["collection"]: r["status"] for r in health}[target] == "ok"


def test_a_user_collection_is_never_left_out_because_of_its_name(env, tmp_path, client, name):
    lookalike = name + "_restored"
    make_collection(client, lookalike, 10)
    backup = run_cli(["backup", "--json"], env, cwd=tmp_path)
    assert lookalike in [r["collection"] for r in json.loads(backup.stdout)]


def test_a_broken_recovery_target_is_restored_in_place_and_the_broken_one_kept_aside(env, tmp_path, client, name):
    make_collection(client, name, 30)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    client.delete_collection(name)
    run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    target = name + "_restored"
    assert run_cli(["backup", "--collection", target], env, cwd=tmp_path).returncode == 0

    # the recovery target loses most of its records: shrunk, recovered in place, no _restored_restored
    col = client.get_collection(target, embedding_function=None)
    col.delete(ids=[f"r{i}" for i in range(25)])
    result = run_cli(["health", "--collection", target, "--restore", "--json"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [report] = json.loads(result.stdout)
    assert report["status"] == "shrunk"
    assert report["recovery"]["action"] == "restored" and report["recovery"]["in_place"] is True
    assert report["recovery"]["target"] == target
    assert client.get_collection(target, embedding_function=None).count() == 30
    names = [c.name for c in client.list_collections()]
    assert target + "_restored" not in names
    [aside] = [n for n in names if n.startswith(target + "-replaced-")]
    assert client.get_collection(aside, embedding_function=None).count() == 5

    # the kept-aside collection is left out of * rounds, with one line saying so
    backup = run_cli(["backup"], env, cwd=tmp_path)
    assert f"skipped collection={aside} reason=a restore's working collection" in backup.stderr
    assert aside not in backup.stdout


def test_health_restore_exits_0_after_a_recovery_and_on_later_runs(env, tmp_path, client, name):
    make_collection(client, name, 20)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    client.delete_collection(name)
    first = run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    assert first.returncode == 0 and "recovery: restored" in first.stdout
    again = run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    assert (
        again.returncode == 0
        and f"{name}: recovered (collection does not exist; recovered into {name}_restored (restore 1 of snapshot 1, "
        in again.stdout
    )
    assert "recovery:" not in again.stdout  # nothing restored again


def test_a_deleted_collection_recovered_into_another_is_not_an_alarm_for_plain_health(env, tmp_path, client, name):
    make_collection(client, name, 20)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    client.delete_collection(name)
    missing = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert missing.returncode == 1 and json.loads(missing.stdout)[0]["status"] == "missing"
    run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)

    plain = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout
    [verdict] = json.loads(plain.stdout)
    assert verdict["status"] == "recovered"
    assert verdict["detail"].startswith(
        f"collection does not exist; recovered into {name}_restored (restore 1 of snapshot 1, "
    )

    # the original comes back: it is judged as itself again
    make_collection(client, name, 20)
    back = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert back.returncode == 0 and json.loads(back.stdout)[0]["status"] == "ok"
    # and once it was seen, losing it again is an alarm again (the old copy is not a recovery of it)
    client.delete_collection(name)
    again = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert again.returncode == 1 and json.loads(again.stdout)[0]["status"] == "missing"


def test_a_restore_made_before_the_collection_was_last_seen_is_not_a_recovery(env, tmp_path, client, name):
    """A drill copy made last week does not turn today's deletion into 'recovered'."""
    make_collection(client, name, 20)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    assert run_cli(["restore", "--collection", name, "--to", name + "-drill"], env, cwd=tmp_path).returncode == 0
    assert run_cli(["health", "--collection", name], env, cwd=tmp_path).returncode == 0
    client.delete_collection(name)
    result = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert result.returncode == 1 and json.loads(result.stdout)[0]["status"] == "missing"


def test_health_restore_exits_1_when_recovery_is_blocked(env, tmp_path, client, name):
    make_collection(client, name, 20)
    run_cli(["backup", "--collection", name], env, cwd=tmp_path)
    client.delete_collection(name)
    client.create_collection(name + "_restored", embedding_function=None).add(ids=["x"], embeddings=[[1.0] * 8])
    result = run_cli(["health", "--collection", name, "--restore"], {**env, **NO_CONFIRM}, cwd=tmp_path)
    assert result.returncode == 1 and "recovery: blocked" in result.stdout


def _default_ef():
    from chromadb.utils.embedding_functions import DefaultEmbeddingFunction

    return DefaultEmbeddingFunction()  # declared only: it is never called, so no model is fetched


CREATIONS = {
    "langchain_l2": lambda c, n: c.get_or_create_collection(
        n, embedding_function=None, metadata=None, configuration=None
    ),
    "langchain_cosine": lambda c, n: c.get_or_create_collection(
        n, embedding_function=None, metadata=None, configuration={"hnsw": {"space": "cosine"}}
    ),
    "explicit_configuration": lambda c, n: c.create_collection(
        n, embedding_function=None, configuration={"hnsw": {"space": "ip", "ef_search": 50, "max_neighbors": 24}}
    ),
    "hnsw_metadata": lambda c, n: c.create_collection(
        n, embedding_function=None, metadata={"hnsw:space": "cosine", "hnsw:M": 32}
    ),
    "known_embedding_function": lambda c, n: c.create_collection(
        n, embedding_function=_default_ef(), configuration={"hnsw": {"space": "cosine"}}
    ),
}


@pytest.mark.parametrize("kind", sorted(CREATIONS))
def test_a_restore_re_creates_configuration_and_schema_exactly(stores, client, kind):
    chroma, db = stores
    name = "k" + uuid.uuid4().hex[:10]
    source = CREATIONS[kind](client, name)
    source.add(
        ids=["a", "b", "c"], embeddings=np.arange(24, dtype=np.float32).reshape(3, 8) + 1, documents=["x", "y", None]
    )
    export_collection_to_postgres(chroma, db, name)
    assert import_postgres_to_chroma(chroma, db, name, target=name + "-r").verified
    original, restored = chroma.describe(chroma.open(name)), chroma.describe(chroma.open(name + "-r"))
    assert json_differences(original.configuration_json, restored.configuration_json, "configuration") == []
    assert json_differences(original.schema_json, restored.schema_json, "schema") == []
    assert restored.configuration_json.get("embedding_function") == original.configuration_json.get(
        "embedding_function"
    )


def test_verify_reports_a_configuration_difference_by_key(stores, client, name):
    chroma, db = stores
    col = make_collection(client, name, 10, space="cosine")
    export_collection_to_postgres(chroma, db, name)
    col.modify(configuration={"hnsw": {"ef_search": 33}})
    result = verify_collection(chroma, db, name)
    assert not result.identical
    assert "configuration.hnsw.ef_search: expected 100, got 33" in result.index_differences


def test_a_cosine_restore_into_the_same_name_is_not_counted_as_updates(stores, client, name):
    chroma, db = stores
    make_collection(client, name, 2000, dim=32, space="cosine")
    first = export_collection_to_postgres(chroma, db, name)
    restored = import_postgres_to_chroma(chroma, db, name, target=name, overwrite=True)
    assert restored.replaced and restored.verified
    after = export_collection_to_postgres(chroma, db, name)
    assert (after.added, after.updated, after.deleted, after.bytes_written) == (0, 0, 0, 0)
    assert after.digest == first.digest
    # and a real change is still a change
    client.get_collection(name, embedding_function=None).update(ids=["r1"], embeddings=[[0.25] * 32])
    assert export_collection_to_postgres(chroma, db, name).updated == 1
