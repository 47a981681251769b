"""``--where`` is Chroma's own filter: for any filter Chroma accepts, the records our evaluator
picks from the stored metadata are exactly the ones Chroma's ``get(where=...)`` returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chroma_backup.core.where import matches, validate_where
from chroma_backup.errors import UsageError

VALUES = st.one_of(
    st.integers(-3, 3), st.sampled_from([0.5, 1.0, 2.5, -1.5]), st.sampled_from(["a", "b", "c", ""]), st.booleans()
)
KEYS = ["k1", "k2", "k3"]


def metadata_for(i: int) -> dict:
    rng = np.random.default_rng(i)
    meta = {}
    for key in KEYS:
        kind = rng.integers(0, 6)
        if kind == 0:
            continue  # the key is absent
        if kind == 1:
            meta[key] = int(rng.integers(-3, 4))
        elif kind == 2:
            meta[key] = [0.5, 1.0, 2.5, -1.5][int(rng.integers(0, 4))]
        elif kind == 3:
            meta[key] = ["a", "b", "c", ""][int(rng.integers(0, 4))]
        elif kind == 4:
            meta[key] = bool(rng.integers(0, 2))
        else:
            meta[key] = [["a", "b"], ["c"], [1, 2], [True]][int(rng.integers(0, 4))]
    return meta or {"other": 1}


@pytest.fixture(scope="module")
def collection(chroma_server):
    import uuid

    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    col = client.create_collection("where-" + uuid.uuid4().hex[:8], embedding_function=None)
    n = 300
    col.add(
        ids=[f"r{i}" for i in range(n)],
        embeddings=np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32),
        metadatas=[metadata_for(i) for i in range(n)],
    )
    stored = col.get(include=["metadatas"])
    return col, dict(zip(stored["ids"], stored["metadatas"], strict=True))


def leaf():
    key = st.sampled_from(KEYS)
    return st.one_of(
        st.builds(lambda k, v: {k: v}, key, VALUES),
        st.builds(lambda k, op, v: {k: {op: v}}, key, st.sampled_from(["$eq", "$ne"]), VALUES),
        st.builds(
            lambda k, op, v: {k: {op: v}},
            key,
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
            st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.0, -1.5])),
        ),
        st.builds(
            lambda k, op, v: {k: {op: v}},
            key,
            st.sampled_from(["$in", "$nin"]),
            st.lists(VALUES, min_size=1, max_size=3),
        ),
        st.builds(
            lambda k, op, v: {k: {op: v}},
            key,
            st.sampled_from(["$contains", "$not_contains"]),
            st.sampled_from(["a", "c", 1, True]),
        ),
    )


FILTERS = st.recursive(
    leaf(),
    lambda inner: st.builds(
        lambda op, items: {op: items}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=2, max_size=3)
    ),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=FILTERS)
def test_our_evaluation_of_a_where_filter_is_chromas(collection, where):
    col, stored = collection
    try:
        expected = set(col.get(where=where, include=[])["ids"])
    except Exception:  # a filter Chroma refuses is not one we must agree on
        assume(False)
    validate_where(where)
    assert {rid for rid, meta in stored.items() if matches(where, meta)} == expected, where


@pytest.mark.parametrize(
    "where,message",
    [
        ({}, "--where: expected a non-empty JSON object, got {}"),
        ([1], "--where: expected a non-empty JSON object, got [1]"),
        ({"$not": []}, "--where: unsupported operator $not"),
        ({"a": {"$gt": "x"}}, "--where: a: $gt takes a number, got 'x'"),
        ({"a": {"$in": 3}}, "--where: a: $in takes a non-empty list of values of one type"),
        ({"a": {"$nin": [1, "x"]}}, "--where: a: $nin takes a non-empty list of values of one type"),
        ({"$and": []}, "--where: $and takes a non-empty list of filters"),
        ({"a": {"$eq": 1, "$ne": 2}}, "--where: a: one operator per key, got ['$eq', '$ne']"),
    ],
)
def test_a_filter_we_do_not_evaluate_is_refused_with_one_line(where, message):
    with pytest.raises(UsageError) as error:
        validate_where(where)
    assert str(error.value) == message
