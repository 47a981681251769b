"""Decoding a get answer: whatever the records, ``wire.decode_get`` returns exactly what the
chromadb client's decoding (a JSON parser, then a float32 array) returns, bit for bit, and it
refuses a body that is not an answer for its ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from chroma_backup.chroma.wire import MalformedAnswer, decode_get

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
metadata = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            scalars,
            st.lists(st.text(max_size=5), min_size=1, max_size=3),
            st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=3),
        ),
        max_size=5,
    ),
)


@st.composite
def answers(draw):
    n = draw(st.integers(min_value=0, max_value=6))
    dim = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(st.text(max_size=20), min_size=n, max_size=n, unique=True))
    component = st.one_of(float32s, float32s, float32s, st.none())  # null: Chroma's NaN or infinity
    vectors = draw(st.lists(st.lists(component, min_size=dim, max_size=dim), min_size=n, max_size=n))
    return {
        "ids": ids,
        "embeddings": np.array(vectors, dtype="<f4").reshape(n, dim),
        "documents": draw(st.lists(st.one_of(st.none(), st.text(max_size=30)), min_size=n, max_size=n)),
        "metadatas": draw(st.lists(metadata, min_size=n, max_size=n)),
        "uris": draw(st.lists(st.one_of(st.none(), st.text(max_size=10)), min_size=n, max_size=n)),
    }


def float_text(value: np.float32, style: str) -> str:
    if np.isnan(value):
        return "null"
    if style == "float32":  # 1.x servers (Rust): the shortest text that reads back as this float32
        return str(value)
    return repr(float(value))  # 0.x servers (Python): the float64 the float32 widens to


def body_of(answer: dict, style: str, ascii_only: bool = True) -> bytes:
    """The answer's JSON as a server writes it (numbers in the server's style)."""
    rows = ",".join("[" + ",".join(float_text(v, style) for v in row) + "]" for row in answer["embeddings"])
    fields = [f'"embeddings":[{rows}]'] + [
        f"{json.dumps(key)}:{json.dumps(answer[key], ensure_ascii=ascii_only)}"
        for key in ("ids", "documents", "metadatas", "uris")
    ]
    return ("{" + ",".join(fields) + ',"include":["embeddings"]}').encode("utf-8")


def client_decoding(body: bytes) -> dict:
    """What the chromadb client's path gives: every number through a correctly rounding JSON
    parser into float64, then float32."""
    data = json.loads(body)
    data["embeddings"] = np.asarray(data["embeddings"], dtype="<f4")
    return data


@hsettings(max_examples=300, deadline=None)
@given(answer=answers(), style=st.sampled_from(["float32", "float64"]), ascii_only=st.booleans())
def test_any_answer_decodes_to_exactly_what_the_client_decodes(answer, style, ascii_only):
    body = body_of(answer, style, ascii_only)
    expected = client_decoding(body)
    batch = decode_get(body)
    assert batch.ids == expected["ids"]
    assert batch.embeddings.dtype == np.dtype("<f4")
    assert batch.embeddings.reshape(-1).view("<u4").tolist() == expected["embeddings"].reshape(-1).view("<u4").tolist()
    assert batch.embeddings.tobytes() == answer["embeddings"].tobytes()
    assert batch.documents == expected["documents"]
    assert batch.metadatas == [m or None for m in expected["metadatas"]]
    assert [[type(v) for v in (m or {}).values()] for m in batch.metadatas] == [
        [type(v) for v in (m or {}).values()] for m in expected["metadatas"]
    ]
    assert batch.uris == expected["uris"]


def test_extreme_float32_values_keep_their_bits():
    values = np.array([[0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.1]], dtype="<f4")
    answer = {"ids": ["a"], "embeddings": values, "documents": None, "metadatas": None, "uris": None}
    for style in ("float32", "float64"):
        assert decode_get(body_of(answer, style)).embeddings.tobytes() == values.tobytes()


def test_integer_components_are_read_as_floats():
    batch = decode_get(b'{"ids":["a"],"embeddings":[[1,-2,0]]}')
    assert batch.embeddings.tolist() == [[1.0, -2.0, 0.0]]


def test_null_components_are_nan_as_the_client_reads_them():
    # Chroma writes NaN and infinities as null (a cosine collection's zero vector becomes NaN).
    body = b'{"ids":["a","b"],"embeddings":[[null,1.5],[2.0,null]]}'
    assert decode_get(body).embeddings.tobytes() == client_decoding(body)["embeddings"].tobytes()
    assert np.isnan(decode_get(body).embeddings[[0, 1], [0, 1]]).all()


def test_absent_or_null_columns_are_none_per_record():
    batch = decode_get(b'{"ids":["a","b"],"embeddings":[[1.0],[2.0]],"documents":null}')
    assert (batch.documents, batch.metadatas, batch.uris) == ([None, None], [None, None], [None, None])


def test_an_empty_answer_is_an_empty_batch():
    batch = decode_get(b'{"ids":[],"embeddings":[],"documents":[],"metadatas":[],"uris":null}')
    assert len(batch) == 0 and batch.embeddings.shape == (0, 0)


def test_sparse_vectors_on_the_wire_become_tagged_values_with_their_labels():
    body = json.dumps(
        {
            "ids": ["a", "b"],
            "embeddings": [[1.0], [2.0]],
            "metadatas": [
                {"s": {"#type": "sparse_vector", "indices": [1, 5], "values": [0.5, 2], "tokens": ["x", "y"]}, "k": 1},
                {"s": {"#type": "sparse_vector", "indices": [2], "values": [1.0]}},
            ],
        }
    ).encode()
    assert decode_get(body).metadatas == [
        {"s": {"$sparse": {"indices": [1, 5], "values": [0.5, 2.0], "labels": ["x", "y"]}}, "k": 1},
        {"s": {"$sparse": {"indices": [2], "values": [1.0]}}},
    ]


def test_empty_metadata_is_none():
    assert decode_get(b'{"ids":["a"],"embeddings":[[1.0]],"metadatas":[{}]}').metadatas == [None]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"ids":["a"],', "not JSON"),
        (b'["a"]', "not a JSON object"),
        (b'{"embeddings":[[1.0]]}', "no 'ids' array of strings"),
        (b'{"ids":[1],"embeddings":[[1.0]]}', "no 'ids' array of strings"),
        (b'{"ids":["a"]}', "no embeddings"),
        (b'{"ids":["a","b"],"embeddings":[[1.0]]}', "embeddings are not 2 rows"),
        (b'{"ids":["a","b"],"embeddings":[[1.0],[2.0,3.0]]}', "embeddings are not rows of one length"),
        (b'{"ids":["a"],"embeddings":[1.0]}', "embeddings are not rows of one length"),
        (b'{"ids":["a"],"embeddings":[[1.0,"x"]]}', "embeddings hold a value that is not a number"),
        (b'{"ids":["a"],"embeddings":[[null,true]]}', "embeddings hold a value that is not a number"),
        (b'{"ids":["a"],"embeddings":[[[],1.0]]}', "embeddings are not rows of numbers"),
        (b'{"ids":["a"],"embeddings":[[1.0]],"documents":["x","y"]}', "2 documents for 1 ids"),
        (b'{"ids":["a"],"embeddings":[[1.0]],"metadatas":"x"}', "'metadatas' is not an array"),
        (b'{"ids":["a"],"embeddings":[[1.0]],"metadatas":[3]}', "a metadata is a int, not an object"),
    ],
)
def test_a_body_that_is_not_an_answer_for_its_ids_is_refused(body, message):
    with pytest.raises(MalformedAnswer, match="^" + message):
        decode_get(body)


def test_a_refused_body_leaves_the_decoder_usable():
    for _ in range(3):
        with pytest.raises(MalformedAnswer):
            decode_get(b'{"ids":["a"],"embeddings":[[1.0,"x"]]}')
        assert decode_get(b'{"ids":["a"],"embeddings":[[1.5]]}').embeddings.tolist() == [[1.5]]
