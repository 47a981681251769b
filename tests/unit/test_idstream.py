"""The streamed id listing: whatever the ids and wherever the network splits the body, the parser
hands out exactly the ids ``json.loads`` would, in order, and refuses a body that is not a listing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from chroma_backup.chroma.idstream import IdStreamParser, MalformedListing


def parse_in_pieces(body: str, cuts: list[int]) -> list[str]:
    parser, out, start = IdStreamParser(), [], 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        out += parser.feed(body[start:cut])
        start = cut
    parser.close()
    return out


ids_strategy = st.lists(st.text(min_size=0, max_size=40), max_size=60)


@hsettings(max_examples=300, deadline=None)
@given(
    ids=ids_strategy,
    cuts=st.lists(st.integers(min_value=0), max_size=30),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]),
    ids_last=st.booleans(),
)
def test_any_ids_split_anywhere_come_out_exactly_as_listed(ids, cuts, ascii_only, indent, ids_last):
    fields = {"embeddings": None, "documents": None, "include": [], "n": 12345}
    body_obj = {**fields, "ids": ids} if ids_last else {"ids": ids, **fields}
    body = json.dumps(body_obj, ensure_ascii=ascii_only, indent=indent)
    assert parse_in_pieces(body, cuts) == ids


def test_the_other_fields_are_kept_and_numbers_split_across_chunks_are_whole():
    parser = IdStreamParser()
    assert parser.feed('{"n": 12') == []
    assert parser.feed('345, "ids": ["a"') == ["a"]
    assert parser.feed(', "b"]}') == ["b"]
    parser.close()
    assert parser.fields == {"n": 12345}


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"ids": ["a", ', "truncated or malformed id listing (state ids)"),
        ('{"ids": ["a"]', "truncated or malformed id listing (state after_value)"),
        ('{"ids": [1]}', "an id in the listing is not a string"),
        ('{"ids": ["a" "b"]}', "expected ','"),
        ('{"other": null}', "the listing has no 'ids' array"),
        ('["a"]', "expected '{'"),
        ('{"ids": ["a"]} trailing', "truncated or malformed id listing (state end)"),
    ],
)
def test_a_body_that_is_not_a_whole_listing_is_refused(body, message):
    parser = IdStreamParser()
    with pytest.raises(MalformedListing) as raised:
        parser.feed(body)
        parser.close()
    assert str(raised.value).startswith(message)
