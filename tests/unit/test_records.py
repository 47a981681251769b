"""The canonical record encoding: lossless metadata JSON and digests."""

import numpy as np

from chroma_backup.records import ContentDigest, decode_metadata, encode_metadata, record_digest


def test_metadata_types_survive_encoding():
    meta = {
        "int": 2**63 - 1,
        "neg": -(2**63),
        "float": 1.0,
        "tiny": 1e-300,
        "huge": 1e16,
        "bool": True,
        "text": "ünïcode \"quoted\" 'single' \\ \t\n",
        "ints": [1, 2],
        "floats": [1.5, 2.0],
        "bools": [True, False],
    }
    back = decode_metadata(encode_metadata(meta))
    assert back == meta
    assert all(type(back[k]) is type(meta[k]) for k in meta)
    assert [type(v) for v in back["floats"]] == [float, float]


def test_floats_that_jsonb_would_turn_into_integers_are_tagged():
    assert encode_metadata({"x": 1e16}) == '{"x":{"$float":"1e+16"}}'
    assert encode_metadata({"x": 1.0}) == '{"x":1.0}'


def test_metadata_encoding_ignores_key_order():
    assert encode_metadata({"a": 1, "b": 2}) == encode_metadata({"b": 2, "a": 1})


def test_jsonb_style_output_decodes_too():
    assert decode_metadata('{"a": 1.0, "b": {"$float": "1e+16"}}') == {"a": 1.0, "b": 1e16}


def test_digest_tells_none_from_empty_document():
    vector = np.zeros(3, "<f4").tobytes()
    assert record_digest("a", vector, None, None, None) != record_digest("a", vector, "", None, None)


def test_digest_sees_one_bit_of_an_embedding():
    a = np.array([0.1, 0.2], "<f4")
    b = a.copy()
    b.view("<i4")[0] += 1
    assert record_digest("x", a.tobytes(), "d", None, None) != record_digest("x", b.tobytes(), "d", None, None)


def test_content_digest_is_order_independent():
    digests = [bytes([i]) * 16 for i in range(5)]
    one, two = ContentDigest(), ContentDigest()
    one.add_all(digests)
    two.add_all(reversed(digests))
    assert one.hexdigest() == two.hexdigest() and one.count == 5


def test_the_digest_format_never_changes():
    """Snapshots taken by earlier versions are compared with these digests: the bytes hashed are
    fixed (\\x01 + 8-byte little-endian length + field, or \\x00 for None, in field order)."""
    assert record_digest("rec-1", bytes(range(8)), "doc", '{"a":1}', None).hex() == "da836b7566df724f649095b6b5568d65"
    assert record_digest("", b"", "", None, "").hex() == "8fd9e008b3adf51adb28bfe6deba8fcd"
