"""Write requests are sized by bytes: the estimate a batch is cut by never falls short of the body
actually sent (so a budget below the server's limit keeps every request below it)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chroma_backup.chroma.http import encode
from chroma_backup.chroma.sizing import _split_by_bytes, request_bytes
from chroma_backup.chroma.wire import write_body
from chroma_backup.records import RecordBatch

text = st.text(max_size=60)  # any unicode, control characters included (JSON escapes them)
metadata = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | text
    | st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4),
    min_size=1,
    max_size=5,
)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 20))
    dim = draw(st.integers(1, 64))
    embeddings = draw(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=n * dim, max_size=n * dim)
    )
    return RecordBatch(
        ids=draw(st.lists(st.text(min_size=1, max_size=30), min_size=n, max_size=n, unique=True)),
        embeddings=np.array(embeddings, dtype="<f4").reshape(n, dim),
        documents=draw(st.lists(st.none() | text, min_size=n, max_size=n)),
        metadatas=draw(st.lists(metadata, min_size=n, max_size=n)),
        uris=draw(st.lists(st.none() | text, min_size=n, max_size=n)),
    )


@settings(max_examples=200, deadline=None)
@given(batch=batches(), base64=st.booleans())
def test_the_size_estimate_never_falls_short_of_the_body_sent(batch, base64):
    sent = len(encode(write_body(batch, base64)))
    assert request_bytes(batch, base64) >= sent


@settings(max_examples=100, deadline=None)
@given(batch=batches(), budget=st.integers(1, 20_000), most=st.integers(1, 25))
def test_a_batch_is_cut_into_consecutive_parts_within_the_budget_and_the_count(batch, budget, most):
    parts = _split_by_bytes(batch, budget, True, most)
    assert [rid for part in parts for rid in part.ids] == batch.ids
    for part in parts:
        assert len(part) <= most
        assert len(part) == 1 or request_bytes(part, True) <= budget
