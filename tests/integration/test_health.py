"""Health verdicts that never stop backups for the wrong reason (real Chroma, real PostgreSQL).

A property-based test generates valid collections of every kind (spaces, dimensions, norms
spanning six orders of magnitude, duplicates, zero vectors, components of +-3e38, denormals, a
single record) and asserts each reads ``ok`` and backs up; hand-picked cases pin the rest.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from conftest import make_collection, run_cli
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from chroma_backup.app.operations import Operations
from chroma_backup.app.runtime import Backend
from chroma_backup.states import COMPLETE, CORRUPT, OK, SHRUNK


@pytest.fixture
def ops(settings):
    operations = Operations(Backend(settings))
    yield operations
    operations.close()


def vectors(seed: int, n: int, dim: int, special: dict[str, float]) -> np.ndarray:
    """``n`` float32 vectors with norms spanning 1e-3..1e3 and a share of tricky rows."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim))
    base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
    out = (base * 10.0 ** rng.uniform(-3, 3, size=(n, 1))).astype(np.float32)
    for i in range(n):
        roll = rng.random()
        if roll < special["duplicate"] and i > 0:
            out[i] = out[rng.integers(0, i)]
        elif roll < special["duplicate"] + special["zero"]:
            out[i] = 0.0
        elif roll < special["duplicate"] + special["zero"] + special["huge"]:
            out[i, rng.integers(0, dim)] = np.float32(3e38) * rng.choice([-1, 1])
        elif roll < special["duplicate"] + special["zero"] + special["huge"] + special["denormal"]:
            out[i] = np.float32(1e-40) * rng.choice([-1, 1], size=dim)
    return out


collections = st.fixed_dictionaries(
    {
        "space": st.sampled_from(["l2", "cosine", "ip"]),
        "dim": st.one_of(st.integers(2, 64), st.sampled_from([384, 1536])),
        "n": st.one_of(st.just(1), st.integers(2, 40), st.integers(200, 400)),
        "seed": st.integers(0, 2**32 - 1),
        "special": st.fixed_dictionaries(
            {
                "duplicate": st.sampled_from([0.0, 0.2, 0.6]),
                "zero": st.sampled_from([0.0, 0.1]),
                "huge": st.sampled_from([0.0, 0.05]),
                "denormal": st.sampled_from([0.0, 0.05]),
            }
        ),
    }
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=collections)
def test_every_valid_collection_reads_ok_and_backs_up(ops, client, spec):
    name = "h" + uuid.uuid4().hex[:10]
    col = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": spec["space"]}})
    try:
        data = vectors(spec["seed"], spec["n"], spec["dim"], spec["special"])
        for start in range(0, len(data), 5000):
            col.add(
                ids=[f"v{i}" for i in range(start, min(len(data), start + 5000))], embeddings=data[start : start + 5000]
            )
        verdict = ops.check(name)
        assert verdict.status == OK, f"{spec}: {verdict.detail}"
        [result] = ops.backup_round([name])
        assert result.status == COMPLETE and result.records == spec["n"], result.error
        assert result.health == OK
        again = ops.check(name)  # now sampled from the backup: still ok
        assert again.status == OK, f"{spec}: {again.detail}"
    finally:
        client.delete_collection(name)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_an_ip_collection_with_varying_norms_is_ok(ops, client, name):
    # Under inner product a longer vector in the same direction scores higher than the record
    # itself: not being one's own nearest neighbour is correct there.
    rng = np.random.default_rng(5)
    data = unit_vectors(500, 16) * rng.uniform(0.5, 2.0, size=(500, 1)).astype(np.float32)
    col = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "ip"}})
    col.add(ids=[f"i{i}" for i in range(500)], embeddings=data)
    for _ in range(5):
        verdict = ops.check(name)
        assert verdict.status == OK, verdict.detail


def test_non_finite_distances_are_no_evidence_and_never_crash_the_round(ops, client, name):
    col = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "l2"}})
    col.add(ids=["big", "zero", "one"], embeddings=[[3e38, -3e38, 1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    other = name + "-next"
    make_collection(client, other, 30)
    results = {r.collection: r for r in ops.backup_round([name, other])}
    assert results[name].status == COMPLETE and results[name].health == OK
    assert results[other].status == COMPLETE


def test_a_collection_whose_vectors_prove_nothing_is_judged_by_count_and_get(ops, client, name):
    col = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    col.add(ids=["z1", "z2"], embeddings=[[0.0, 0.0], [0.0, 0.0]])
    verdict = ops.check(name)
    assert verdict.status == OK
    assert "judged by count and get alone" in verdict.detail


class DroppingHalf:
    """A fault a real index cannot produce on demand: queries search only half of the data (as an
    index whose segment directory is gone does, silently)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def query(self, collection, embeddings, n_results):
        found, distances = self._inner.query(collection, embeddings, n_results)
        keep = [
            [(i, d) for i, d in zip(ids, ds, strict=True) if int(i[1:]) % 2 == 0]
            for ids, ds in zip(found, distances, strict=True)
        ]
        return [[i for i, _ in row] for row in keep], [[d for _, d in row] for row in keep]


def test_an_index_searching_half_the_data_reads_corrupt(ops, client, name):
    make_collection(client, name, 400, dim=16)
    assert ops.check(name).status == OK
    ops.stores._chromas[ops.settings.chroma_database] = DroppingHalf(ops.chroma)
    verdict = ops.check(name)
    assert verdict.status == CORRUPT
    assert verdict.detail.startswith("self-recall failed for ")


def test_shrink_keeps_backups_labelled_and_accept_makes_the_new_size_the_baseline(env, tmp_path, client, name):
    col = make_collection(client, name, 100)
    first = json.loads(run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path).stdout)[0]
    assert first["health"] == OK
    col.delete(ids=[f"r{i}" for i in range(70)])

    # a legitimate big deletion: backups go on, labelled shrunk
    shrunk = run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path)
    assert shrunk.returncode == 0, shrunk.stderr
    [second] = json.loads(shrunk.stdout)
    assert (second["status"], second["health"], second["records"]) == (COMPLETE, SHRUNK, 30)
    listing = json.loads(run_cli(["snapshots", "--collection", name, "--json"], env, cwd=tmp_path).stdout)
    assert [s["health"] for s in listing] == [SHRUNK, OK]
    assert "shrunk" in run_cli(["snapshots", "--collection", name], env, cwd=tmp_path).stdout

    # recovery restores the newest snapshot taken while ok, not the shrunk one
    recover = run_cli(
        ["health", "--collection", name, "--restore", "--json"], {**env, "HEALTH_CONFIRM_SECONDS": "0"}, cwd=tmp_path
    )
    [report] = json.loads(recover.stdout)
    assert report["status"] == SHRUNK and report["recovery"]["action"] == "restored"
    assert report["recovery"]["snapshot_id"] == first["snapshot_id"]
    assert recover.returncode == 0  # recovered: a scheduler must not read a failure
    assert client.get_collection(name + "_restored", embedding_function=None).count() == 100

    accepted = run_cli(["accept", "--collection", name], env, cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith(f"{name}: accepted 30 records as the new baseline")
    check = run_cli(["health", "--collection", name, "--json"], env, cwd=tmp_path)
    assert check.returncode == 0 and json.loads(check.stdout)[0]["status"] == OK
    listing = json.loads(run_cli(["snapshots", "--collection", name, "--json"], env, cwd=tmp_path).stdout)
    assert listing[0]["accepted"] is True and listing[0]["health"] == OK
    assert "accepted by an operator" in run_cli(["snapshots", "--collection", name], env, cwd=tmp_path).stdout


def test_accept_refuses_a_missing_collection(env, tmp_path, name):
    result = run_cli(["accept", "--collection", name], env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: collection '{name}' is missing (collection does not exist); accept only accepts a new size of "
        "a readable collection"
    )


def test_accept_requires_a_collection(env, tmp_path):
    result = run_cli(["accept"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: main.py accept: the following arguments are required: --collection\n"


class ExplodingFetch:
    """Raises an unexpected (non-BackupError) exception reading one collection."""

    def __init__(self, inner, victim):
        self._inner = inner
        self.victim = victim

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

    def fetch(self, collection, ids):
        if collection.name == self.victim:
            raise TypeError("'<=' not supported between instances of 'NoneType' and 'float'")
        return self._inner.fetch(collection, ids)

    def fetch_first(self, collection, limit):
        if collection.name == self.victim:
            raise TypeError("'<=' not supported between instances of 'NoneType' and 'float'")
        return self._inner.fetch_first(collection, limit)


@pytest.fixture
def ops_one_at_a_time(env):
    """Operations whose rounds work on one collection at a time (the store a test wraps is the
    one every collection of the round is read through)."""
    from chroma_backup.settings import load_settings

    operations = Operations(
        Backend(load_settings({**env, "BACKUP_CONCURRENCY": "1", "HEALTH_CONCURRENCY": "1"}, env_file=None))
    )
    yield operations
    operations.close()


def test_an_unexpected_error_in_one_collection_never_stops_the_others(ops_one_at_a_time, client, name):
    ops = ops_one_at_a_time
    victim, survivor = name + "-a", name + "-b"
    make_collection(client, victim, 20)
    make_collection(client, survivor, 20)
    ops.stores._chromas[ops.settings.chroma_database] = ExplodingFetch(ops.chroma, victim)
    results = {r.collection: r for r in ops.backup_round([victim, survivor])}
    assert results[survivor].status == COMPLETE
    assert results[victim].status == "failed"
    assert results[victim].error.startswith("unexpected TypeError: '<=' not supported")
    reports = {r.collection: r for r in ops.health_round([victim, survivor])}
    assert reports[survivor].verdict.status == OK
    assert reports[victim].verdict.status == "failed"


def test_the_cli_exits_1_when_one_collection_fails_and_backs_up_the_rest(settings, client, name, monkeypatch, capsys):
    import chroma_backup.cli as main
    from chroma_backup.app.stores import Stores

    victim, survivor = name + "-a", name + "-b"
    make_collection(client, victim, 20)
    make_collection(client, survivor, 20)
    real = Stores.chroma_for
    monkeypatch.setattr(Stores, "chroma_for", lambda self, database: ExplodingFetch(real(self, database), victim))
    monkeypatch.setattr(main, "load_settings", lambda: settings)
    monkeypatch.setattr(main, "setup_logging", lambda _settings: None)
    code = main.main(["backup", "--collection", victim, "--collection", survivor])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{survivor}: snapshot " in out and " complete, 20 records" in out
    assert f"{victim}: failed: unexpected TypeError" in out
