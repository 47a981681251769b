"""Chroma 0.6.3 <-> 1.x: back up from either server, restore into the other, verify identical."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

SPACES = ["cosine", "ip"]


def legacy_client(server):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.HttpClient(host="127.0.0.1", port=server.port, settings=ChromaSettings(anonymized_telemetry=False))


def records(dim=12, seed=3, lists=False):
    rng = np.random.default_rng(seed)
    ids = ["plain", "ünïcode-ид", "quote'd", 'dq"x', "x'); DROP TABLE chroma_data; --", "tab\tnew\nline"]
    metadatas = [
        {"int": 7, "float": 7.0, "bool": True, "str": "seven"},
        {"big": 2**62, "neg": -(2**62), "huge": 1e16, "tiny": 1e-300},
        {"unicode": "ключ ✓ 🚀", "quote": "'\"", "false": False},
        None,
        {"sql": "'); DELETE FROM x; --"},
        {"f": 0.1, "i": -1},
    ]
    if lists:
        metadatas[0]["tags"] = ["a", "b"]
    return dict(
        ids=ids,
        embeddings=rng.normal(size=(len(ids), dim)).astype(np.float32),
        documents=[None, "", "ünïcode ✓", "it's", "line\nbreak\\", "plain"],
        metadatas=metadatas,
        uris=[None, "s3://b/k", None, "file:///ü", None, ""],
    )


def typed(metadatas):
    # 1.x returns {} where 0.6.3 returns None for a record without metadata (neither accepts {}
    # on add), so both mean "no metadata".
    return [{k: (type(v).__name__, v) for k, v in m.items()} if m else None for m in metadatas]


def read_back(col):
    got = col.get(include=["embeddings", "documents", "metadatas", "uris"])
    order = np.argsort(got["ids"])
    return (
        [got["ids"][i] for i in order],
        [got["documents"][i] for i in order],
        typed([got["metadatas"][i] for i in order]),
        [got["uris"][i] for i in order],
        np.asarray(got["embeddings"], dtype="<f4")[order],
    )


def assert_same(a, b, ulps):
    assert a[:4] == b[:4]
    diff = np.abs(a[4].view("<i4").astype(np.int64) - b[4].view("<i4").astype(np.int64))
    assert diff.max() <= ulps


@pytest.mark.parametrize("space", SPACES)
def test_a_063_collection_migrates_into_a_1x_server(
    env, tmp_path, legacy_chroma_server, chroma_server, client, name, space
):
    old = legacy_client(legacy_chroma_server)
    source = old.create_collection(
        name,
        embedding_function=None,
        metadata={
            "hnsw:space": space,
            "hnsw:M": 24,
            "hnsw:construction_ef": 150,
            "hnsw:search_ef": 60,
            "team": "search ✓",
        },
    )
    source.add(**records())
    old_env = {**env, "CHROMADB_PORT": str(legacy_chroma_server.port)}

    backup = run_cli(["backup", "--collection", name, "--json"], old_env, cwd=tmp_path)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    [snapshot] = json.loads(run_cli(["snapshots", "--json"], old_env, cwd=tmp_path).stdout)
    assert snapshot["server_version"] == "0.6.3"

    restore = run_cli(
        [
            "restore",
            "--collection",
            name,
            "--to",
            name + "-v1",
            "--to-host",
            "127.0.0.1",
            "--to-port",
            str(chroma_server.port),
            "--json",
        ],
        old_env,
        cwd=tmp_path,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert json.loads(restore.stdout)["space"] == space

    verify = run_cli(
        ["verify", "--collection", name, "--target", name + "-v1", "--port", str(chroma_server.port)],
        old_env,
        cwd=tmp_path,
    )
    assert verify.returncode == 0, verify.stdout
    assert "identical" in verify.stdout

    target = client.get_collection(name + "-v1", embedding_function=None)
    hnsw = target.configuration_json["hnsw"]
    assert (hnsw["space"], hnsw["max_neighbors"], hnsw["ef_construction"], hnsw["ef_search"]) == (space, 24, 150, 60)
    assert target.metadata["team"] == "search ✓"
    assert_same(read_back(source), read_back(target), ulps=2 if space == "cosine" else 0)


@pytest.mark.parametrize("space", SPACES)
def test_a_1x_collection_migrates_into_a_063_server(env, tmp_path, legacy_chroma_server, client, name, space):
    source = client.create_collection(
        name,
        embedding_function=None,
        metadata={"team": "rag", "v": 2},
        configuration={"hnsw": {"space": space, "max_neighbors": 32, "ef_construction": 180, "ef_search": 70}},
    )
    source.add(**records(seed=9))
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0

    restore = run_cli(
        [
            "restore",
            "--collection",
            name,
            "--to",
            name + "-old",
            "--to-host",
            "127.0.0.1",
            "--to-port",
            str(legacy_chroma_server.port),
            "--json",
        ],
        env,
        cwd=tmp_path,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr

    verify = run_cli(
        ["verify", "--collection", name, "--target", name + "-old", "--json", "--port", str(legacy_chroma_server.port)],
        env,
        cwd=tmp_path,
    )
    verdict = json.loads(verify.stdout)
    assert verify.returncode == 0 and verdict["identical"], verify.stdout

    target = legacy_client(legacy_chroma_server).get_collection(name + "-old", embedding_function=None)
    assert target.metadata["hnsw:space"] == space and target.metadata["hnsw:M"] == 32
    assert target.metadata["hnsw:construction_ef"] == 180 and target.metadata["team"] == "rag"
    assert_same(read_back(source), read_back(target), ulps=2 if space == "cosine" else 0)


def test_list_metadata_is_never_silently_lost_on_a_063_server(env, tmp_path, legacy_chroma_server, client, name):
    source = client.create_collection(name, embedding_function=None)
    source.add(**records(lists=True))
    assert run_cli(["backup", "--collection", name], env, cwd=tmp_path).returncode == 0
    restore = run_cli(
        [
            "restore",
            "--collection",
            name,
            "--to",
            name + "-old",
            "--to-host",
            "127.0.0.1",
            "--to-port",
            str(legacy_chroma_server.port),
        ],
        env,
        cwd=tmp_path,
    )
    assert restore.returncode == 1
    assert "would silently drop list-valued metadata (record 'plain', key 'tags')" in restore.stderr
    names = [c if isinstance(c, str) else c.name for c in legacy_client(legacy_chroma_server).list_collections()]
    assert not [n for n in names if n.startswith(name)]
