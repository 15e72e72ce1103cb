"""Tests of lmlab.text.tokenizer: exact round trips, unknown characters, files."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmlab.text.tokenizer import (
    UNKNOWN_CHAR,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    get_tokenizer,
    load_tokenizer,
)

# ---------------------------------------------------------------------------------------------- char


@given(st.text(min_size=1))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(set(text))


@given(st.text(min_size=1), st.data())
def test_char_round_trip_of_any_substring(text, data):
    tok = CharTokenizer.from_text(text)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, len(text)))
    assert tok.decode(tok.encode(text[i:j])) == text[i:j]


def test_char_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert isinstance(tok, Tokenizer)


def test_char_unknown_character_error_names_character_and_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError) as info:
        tok.encode("abcaé")
    msg = str(info.value)
    assert "'é'" in msg
    assert "position 4" in msg
    assert "unknown=" in msg  # says how to allow unknown characters


def test_char_replace_policy_adds_unknown_token():
    tok = CharTokenizer.from_text("abc", unknown="replace")
    assert tok.vocab_size == 4
    assert tok.unknown_id == 3
    assert tok.chars[3] == UNKNOWN_CHAR
    assert tok.encode("axb€") == [0, 3, 1, 3]
    assert tok.decode([0, 3, 1]) == "a\ufffdb"


def test_char_replace_policy_reuses_replacement_char_already_in_text():
    tok = CharTokenizer.from_text("ab\ufffd", unknown="replace")
    assert tok.vocab_size == 3
    assert tok.encode("z") == [tok.unknown_id] == [2]


def test_char_skip_policy_drops_unknown_characters():
    tok = CharTokenizer.from_text("abc", unknown="skip")
    assert tok.vocab_size == 3
    assert tok.encode("axbyc") == [0, 1, 2]


def test_char_rejects_bad_policy_and_empty_text():
    with pytest.raises(ValueError, match="replace"):
        CharTokenizer.from_text("abc", unknown="ignore")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer(("a", "a"))
    with pytest.raises(ValueError, match="single character"):
        CharTokenizer(("a", "bc"))


def test_decode_accepts_tensors_and_arrays():
    tok = CharTokenizer.from_text("abc")
    assert tok.decode(torch.tensor([2, 0, 1])) == "cab"
    assert tok.decode(torch.tensor(1)) == "b"  # 0-D
    assert tok.decode(np.array([1, 1], dtype=np.uint16)) == "bb"
    assert tok.decode((0,)) == "a"
    assert tok.decode([]) == ""


def test_decode_rejects_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"token id 3 is outside the vocabulary \[0, 3\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="-1"):
        tok.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match="shape"):
        tok.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="ints"):
        tok.decode([True, False])
    with pytest.raises(TypeError, match="list"):
        tok.decode(1)


@pytest.mark.parametrize("tok", [CharTokenizer.from_text("abc"), ByteTokenizer()])
def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError, match="bytes"):
        tok.encode(b"abc")
    with pytest.raises(TypeError, match="str"):
        tok.encode(["a", "b"])


# ---------------------------------------------------------------------------------------------- byte


@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids, errors="strict") == text


def test_byte_emoji_and_cjk():
    tok = ByteTokenizer()
    text = "naïve 世界 🙂!"
    ids = tok.encode(text)
    assert tok.vocab_size == 256
    assert len(ids) == len(text.encode("utf-8")) == 6 + 1 + 6 + 1 + 4 + 1  # naïve, space, 世界, space, 🙂, !
    assert ids[-5:] == [0xF0, 0x9F, 0x99, 0x82, ord("!")]
    assert tok.decode(torch.tensor(ids)) == text


def test_byte_decode_invalid_utf8_replaces_by_default_and_strict_raises():
    tok = ByteTokenizer()
    cut = tok.encode("🙂")[:2] + [ord("A")]  # a character cut in the middle
    assert tok.decode(cut) == "\ufffdA"
    assert tok.decode([0xFF, 0x41]) == "\ufffdA"
    with pytest.raises(ValueError, match="not valid UTF-8"):
        tok.decode([0xFF, 0x41], errors="strict")
    with pytest.raises(ValueError, match="errors"):
        tok.decode([65], errors="ignore")
    with pytest.raises(ValueError, match="256"):
        tok.decode([256])


def test_byte_lone_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="position 1"):
        ByteTokenizer().encode("a\udcff")


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("unknown", [None, "replace", "skip"])
def test_char_save_load_round_trip(tmp_path, unknown):
    text = 'Il était une fois 世界 🙂 "quoted" \\ back\nslash\t\x00'
    tok = CharTokenizer.from_text(text, unknown=unknown)
    path = tmp_path / "tok.json"
    tok.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary files left
    back = CharTokenizer.load(path)
    assert back == tok
    assert back.unknown == unknown
    assert back.encode(text) == tok.encode(text)
    loaded = load_tokenizer(str(path))
    assert isinstance(loaded, CharTokenizer) and loaded == tok
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == "char"


def test_byte_save_load_round_trip(tmp_path):
    path = tmp_path / "byte.json"
    ByteTokenizer().save(path)
    assert isinstance(load_tokenizer(path), ByteTokenizer)
    assert ByteTokenizer.load(path) == ByteTokenizer()
    with pytest.raises(ValueError, match="ByteTokenizer"):
        CharTokenizer.load(path)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "tok.json"
    CharTokenizer.from_text("ab").save(path)
    CharTokenizer.from_text("xyz").save(path)
    assert load_tokenizer(path).vocab_size == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON list"),
        ('{"chars": ["a"]}', "'type'"),
        ('{"type": "word", "format_version": 1}', "'word'"),
        ('{"type": "char", "format_version": 99, "chars": ["a"]}', "format_version"),
        ('{"type": "char", "format_version": 1}', "chars"),
        ('{"type": "char", "format_version": 1, "chars": ["a", "a"]}', "repeated"),
        ('{"type": "char", "format_version": 1, "chars": ["ab"]}', "single character"),
        ('{"type": "char", "format_version": 1, "chars": ["a"], "unknown": "drop"}', "unknown"),
    ],
)
def test_malformed_file_is_a_value_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


# ---------------------------------------------------------------------------------------------- factory


def test_get_tokenizer():
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    tok = get_tokenizer("char", "hello")
    assert isinstance(tok, CharTokenizer) and tok.vocab_size == 4
    with pytest.raises(ValueError, match="text="):
        get_tokenizer("char")
    with pytest.raises(ValueError) as info:
        get_tokenizer("bpe")
    assert "'bpe'" in str(info.value) and "char" in str(info.value) and "byte" in str(info.value)


def test_saved_file_has_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "tok.json"
    ByteTokenizer().save(path)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
