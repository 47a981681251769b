"""Every collection restores exactly, whichever way an application made it: through the CLI as an
operator runs it (``backup`` -> ``restore --to`` -> ``verify --target``), compared with the source
record by record and in configuration, schema and collection metadata."""

from __future__ import annotations

import json

import numpy as np
import psycopg2
import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SPACES = ["l2", "cosine", "ip"]
SYNC_THRESHOLD = 1000  # Chroma's default: HNSW files are written once a collection passes it


def create_styled(client, name, style, space="l2"):
    """A collection made the ways applications make them."""
    from chromadb.utils.embedding_functions import DefaultEmbeddingFunction

    if style == "plain":  # chromadb's own quickstart
        return client.create_collection(name, embedding_function=None)
    if style == "langchain":  # langchain_chroma.Chroma(...)
        return client.get_or_create_collection(name, embedding_function=None, metadata=None, configuration=None)
    if style == "configured":  # explicit configuration, non-default HNSW parameters
        return client.create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": {"space": space, "ef_construction": 128, "max_neighbors": 24, "ef_search": 48}},
        )
    if style == "legacy":  # 0.4-0.6-era code: the index in the collection metadata
        return client.create_collection(
            name, embedding_function=None, metadata={"hnsw:space": space, "owner": "search-team", "version": 2}
        )
    if style == "declared_ef":  # a known embedding function declared (never called: embeddings are passed)
        return client.create_collection(name, embedding_function=DefaultEmbeddingFunction(), metadata={"team": "rag"})
    raise ValueError(style)


STYLES = ["plain", "langchain", "configured", "legacy", "declared_ef"]
SHAPES = ["bare", "metadata", "documents", "uris", "everything"]


def records(n, shape, dim=8, seed=0):
    """``n`` records of one shape: embeddings only, typed metadata (every type, lists and bools
    included), documents None / "" / text, uris, or all of them."""
    rng = np.random.default_rng(seed)
    data = {"ids": [f"doc-{i}" for i in range(n)], "embeddings": rng.standard_normal((n, dim)).astype(np.float32)}
    if shape in ("metadata", "everything"):
        data["metadatas"] = [
            {
                "source": f"file-{i % 5}.md",
                "page": i,
                "score": i / 3,
                "draft": i % 2 == 0,
                "tags": ["a", f"t{i % 3}"],
                "pages": [i, i + 1],
                "flags": [True, False],
                "weights": [0.5, i / 7],
            }
            for i in range(n)
        ]
    if shape in ("documents", "everything"):
        data["documents"] = [
            None if i % 3 == 0 else "" if i % 3 == 1 else f"chunk {i} about topic {i % 7}" for i in range(n)
        ]
        if data["documents"] and all(d is None for d in data["documents"]):
            data["documents"][0] = "only"
    if shape in ("uris", "everything"):
        data["uris"] = [f"s3://bucket/{i}.txt" if i % 2 else None for i in range(n)]
    return data


def fill(collection, n, shape, dim=8, seed=0):
    data = records(n, shape, dim, seed)
    for start in range(0, n, 5000):
        collection.add(**{key: value[start : start + 5000] for key, value in data.items()})


def read_all(col):
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    order = np.argsort(got["ids"])
    embeddings = np.asarray(got["embeddings"], dtype="<f4")
    return {
        got["ids"][i]: (embeddings[i].tobytes(), got["documents"][i], got["metadatas"][i], got["uris"][i])
        for i in order
    }


def typed(value):
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def copy_problems(client, source_name, copy_name):
    """Every way the copy differs from the source (empty: exact)."""
    source = client.get_collection(source_name, embedding_function=None)
    copy = client.get_collection(copy_name, embedding_function=None)
    problems = []
    a, b = read_all(source), read_all(copy)
    if sorted(a) != sorted(b):
        problems.append(f"ids differ: {len(a)} vs {len(b)}")
    space = source.configuration_json["hnsw"]["space"]
    ulps = 2 if space == "cosine" else 0  # Chroma re-rounds cosine vectors it stores
    for rid in sorted(set(a) & set(b)):
        (ea, da, ma, ua), (eb, db_, mb, ub) = a[rid], b[rid]
        diff = np.abs(np.frombuffer(ea, "<i4").astype(np.int64) - np.frombuffer(eb, "<i4").astype(np.int64))
        if diff.size and diff.max() > ulps:
            problems.append(f"embedding of {rid} differs by {diff.max()} ulp")
        if (da, type(da)) != (db_, type(db_)):
            problems.append(f"document of {rid}: {da!r} vs {db_!r}")
        if typed(ma) != typed(mb):
            problems.append(f"metadata of {rid}: {ma!r} vs {mb!r}")
        if ua != ub:
            problems.append(f"uri of {rid}: {ua!r} vs {ub!r}")
    if source.configuration_json != copy.configuration_json:
        problems.append(f"configuration: {source.configuration_json!r} vs {copy.configuration_json!r}")
    if source._model.serialized_schema != copy._model.serialized_schema:
        problems.append("schema differs")
    if typed(source.metadata or {}) != typed(copy.metadata or {}):
        problems.append(f"collection metadata: {source.metadata!r} vs {copy.metadata!r}")
    return problems


def round_trip(env, tmp_path, name):
    """backup -> restore --to -> verify --target through the CLI; returns the restore's JSON."""
    backup = run_cli(["backup", "--collection", name, "--json"], env, cwd=tmp_path)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    restore = run_cli(["restore", "--collection", name, "--to", name + "-copy", "--json"], env, cwd=tmp_path)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    verify = run_cli(["verify", "--collection", name, "--target", name + "-copy"], env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return json.loads(restore.stdout)


@pytest.mark.slow
def test_every_creation_style_and_record_shape_restores_exactly(env, tmp_path, client, name):
    """Each style with records with and without metadata, in one backup round of every collection."""
    made = {}
    for style in STYLES:
        for shape, space in (("bare", "ip"), ("everything", "cosine")):
            collection = f"{name}-{style.replace('_', '-')}-{shape}"
            fill(create_styled(client, collection, style, space), 30, shape)
            made[collection] = style
    backup = run_cli(["backup", "--json", *[f"--collection={c}" for c in made]], env, cwd=tmp_path)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert sorted(r["collection"] for r in json.loads(backup.stdout)) == sorted(made)
    for collection in made:
        restore = run_cli(
            ["restore", "--collection", collection, "--to", collection + "-copy", "--json"], env, cwd=tmp_path
        )
        assert restore.returncode == 0, (collection, restore.stderr)
        result = json.loads(restore.stdout)
        assert result["verified"] and result["exact"] and result["differences"] == [], collection
        verify = run_cli(["verify", "--collection", collection, "--target", collection + "-copy"], env, cwd=tmp_path)
        assert verify.returncode == 0, (collection, verify.stdout)
        assert copy_problems(client, collection, collection + "-copy") == [], collection


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    style=st.sampled_from(STYLES),
    space=st.sampled_from(SPACES),
    shape=st.sampled_from(SHAPES),
    size=st.sampled_from([0, 1, SYNC_THRESHOLD + 1]),
    dim=st.sampled_from([3, 16]),
)
def test_a_copy_equals_its_source_for_any_creation_style_shape_and_size(
    env, tmp_path, client, style, space, shape, size, dim
):
    import uuid

    name = f"hyp-{uuid.uuid4().hex[:10]}"
    collection = create_styled(client, name, style, space)
    fill(collection, size, shape, dim)
    result = round_trip(env, tmp_path, name)
    assert result["records"] == size and result["exact"]
    assert copy_problems(client, name, name + "-copy") == []


@pytest.mark.slow
@pytest.mark.parametrize("dim,n", [(1536, 6000), (3072, 3000)])
def test_wide_vectors_back_up_restore_and_verify(env, tmp_path, client, name, dim, n):
    """OpenAI-sized vectors: a server batch of them is over Chroma's 40 MiB request limit."""
    collection = client.create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    rng = np.random.default_rng(5)
    for start in range(0, n, 500):
        collection.add(
            ids=[f"w{i}" for i in range(start, start + 500)],
            embeddings=rng.standard_normal((500, dim)).astype(np.float32),
            metadatas=[{"page": i} for i in range(start, start + 500)],
        )
    result = round_trip(env, tmp_path, name)
    assert result["records"] == n and result["exact"]
    assert client.get_collection(name + "-copy", embedding_function=None).count() == n


@pytest.mark.slow
def test_a_server_that_refuses_a_write_as_too_large_gets_halved_requests(stores, client, name, caplog):
    """The estimate aside, a 413 halves the request and the restore goes on."""
    from chroma_backup.core import export_collection_to_postgres, import_postgres_to_chroma

    chroma, db = stores
    collection = client.create_collection(name, embedding_function=None)
    rng = np.random.default_rng(1)
    for start in range(0, 3000, 500):
        collection.add(
            ids=[f"w{i}" for i in range(start, start + 500)],
            embeddings=rng.standard_normal((500, 3072)).astype(np.float32),
        )
    export_collection_to_postgres(chroma, db, name)
    chroma.write_budget = 1 << 30  # as if the server's limit were unknown: the first write is ~37 MB x 3
    result = import_postgres_to_chroma(chroma, db, name, target=name + "-copy")
    assert result.verified and result.records == 3000
    assert chroma.write_budget < 40 << 20
    assert "as too large; writing at most" in caplog.text
    assert copy_problems(client, name, name + "-copy") == []


def _tamper_saved_form(database_url, name):
    """Make the newest snapshot's saved configuration and schema carry a key no server can
    re-create (as a snapshot written by a newer server would)."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE chroma_data_snapshots SET configuration_json = configuration_json || "
            "'{\"future_option\": 7}'::jsonb WHERE collection_ref = (SELECT collection_ref FROM "
            "chroma_data_collections WHERE name = %s)",
            (name,),
        )
    conn.close()


def test_a_record_identical_copy_whose_configuration_differs_is_kept_and_named(
    env, tmp_path, client, name, database_url
):
    collection = client.create_collection(name, embedding_function=None)
    fill(collection, 20, "everything")
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0
    _tamper_saved_form(database_url, name)

    restore = run_cli(["restore", "--collection", name, "--to", name + "-copy", "--json"], env, cwd=tmp_path)
    assert restore.returncode == 1
    result = json.loads(restore.stdout)
    assert result["verified"] and not result["exact"]
    assert result["differences"] == ["configuration.future_option: expected 7, got '<absent>'"]
    assert restore.stderr.strip().splitlines()[-1] == (
        f"error: {name}-copy holds every record of snapshot {result['snapshot_id']} identically, but its "
        "configuration differs from the snapshot: configuration.future_option: expected 7, got '<absent>'"
    )
    assert "WARNING" in restore.stderr and "configuration=differs" in restore.stderr
    assert client.get_collection(name + "-copy", embedding_function=None).count() == 20  # kept

    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, verified, differences FROM chroma_data_restores")
        assert cur.fetchall() == [("complete", True, ["configuration.future_option: expected 7, got '<absent>'"])]
    conn.close()
    verify = run_cli(["verify", "--collection", name, "--target", name + "-copy"], env, cwd=tmp_path)
    assert verify.returncode == 1
    assert "collection: configuration.future_option: expected 7, got '<absent>'" in verify.stdout


def test_auto_recovery_keeps_a_copy_whose_configuration_differs(env, tmp_path, client, name, database_url):
    collection = client.create_collection(name, embedding_function=None)
    fill(collection, 20, "metadata")
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0
    _tamper_saved_form(database_url, name)
    client.delete_collection(name)

    health = run_cli(
        ["health", "--restore", "--collection", name, "--json"], {**env, "HEALTH_CONFIRM_SECONDS": "0"}, cwd=tmp_path
    )
    assert health.returncode == 0, health.stdout + health.stderr
    [report] = json.loads(health.stdout)
    assert report["recovery"]["action"] == "restored"
    assert "configuration differs: configuration.future_option" in report["recovery"]["detail"]
    assert "WARNING" in health.stderr and f"recovery collection={name} target={name}_restored kept" in health.stderr
    assert client.get_collection(name + "_restored", embedding_function=None).count() == 20
