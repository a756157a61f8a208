"""Bonus notebook ch02_data/bpe.ipynb: byte-level BPE that gives exactly tiktoken's GPT-2 ids."""

import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ch02_data.bpe import (
    BYTE_TO_CHAR,
    CHAR_TO_BYTE,
    ByteBPETokenizer,
    TokenizerFileError,
    bytes_to_unicode,
    gpt2_bpe_tokenizer,
    merge_by_rank,
    merge_steps,
    pretoken_counts,
    pretokenize,
    read_gpt2_files,
    symbols_to_bytes,
    to_symbols,
    train_byte_bpe,
)
from ch02_data.text_data import apply_bpe_merges
from shared.resources import fetch, gpt2_tokenizer

EOT = "<|endoftext|>"


@functools.cache
def course() -> ByteBPETokenizer:
    return gpt2_bpe_tokenizer()


@functools.cache
def reference():
    return gpt2_tokenizer()


# --- the byte table -----------------------------------------------------------------------


def test_byte_table_is_a_bijection_onto_printable_characters():
    assert sorted(BYTE_TO_CHAR) == list(range(256))
    chars = list(BYTE_TO_CHAR.values())
    assert len(set(chars)) == 256
    assert all(c.isprintable() and not c.isspace() for c in chars)
    assert {CHAR_TO_BYTE[c] for c in chars} == set(range(256))
    assert bytes_to_unicode() == BYTE_TO_CHAR


def test_byte_table_keeps_printable_latin1_and_moves_the_rest_in_byte_order():
    assert BYTE_TO_CHAR[ord("A")] == "A" and BYTE_TO_CHAR[0xE9] == "é"
    assert BYTE_TO_CHAR[0] == "\u0100"  # the first moved byte
    assert BYTE_TO_CHAR[0x20] == "Ġ" and BYTE_TO_CHAR[0x0A] == "Ċ"
    assert BYTE_TO_CHAR[0xAD] == chr(0x100 + 67)  # the soft hyphen is the last of the 68


def test_byte_table_order_is_gpt2s_first_256_ids():
    encoder = json.loads(fetch("gpt2-encoder-json").read_text(encoding="utf-8"))
    assert [encoder[c] for c in BYTE_TO_CHAR.values()] == list(range(256))


@given(st.text())
def test_symbols_round_trip_to_the_utf8_bytes(text):
    symbols = to_symbols(text)
    assert len(symbols) == len(text.encode("utf-8"))
    assert symbols_to_bytes(symbols) == text.encode("utf-8")


# --- pre-tokens and training --------------------------------------------------------------


def test_pretokenize_follows_gpt2s_pattern():
    assert pretokenize("We'll see  it\n\nin 2024!! ok  ") == [
        "We",
        "'ll",
        " see",
        " ",
        " it",
        "\n",
        "\n",
        "in",
        " 2024",
        "!!",
        " ok",
        "  ",
    ]


def test_training_on_a_tiny_text_learns_the_merges_worked_out_by_hand():
    # Pre-tokens "aab", " aab", " ab". Pair counts: ab 3, aa 2, Ġa 2 -> merge (a, b).
    # Then (a, ab) 2 beats (Ġ, a) 1 and (Ġ, ab) 1. Then a tie of (Ġ, aab) and (Ġ, ab), both 1:
    # the alphabetically first wins. Then (Ġ, ab), after which every pre-token is one symbol.
    text = "aab aab ab"
    assert pretoken_counts(text) == {"aab": 1, "Ġaab": 1, "Ġab": 1}
    merges = train_byte_bpe(text, 10)
    assert merges == [("a", "b"), ("a", "ab"), ("Ġ", "aab"), ("Ġ", "ab")]
    tokenizer = ByteBPETokenizer.from_merges(merges)
    assert tokenizer.n_vocab == 260
    assert tokenizer.encode("aab ab") == [257, 259]
    assert tokenizer.decode([257, 259]) == "aab ab"


def test_merging_by_rank_gives_the_pieces_of_replaying_the_merges(verdict_text):
    merges = train_byte_bpe(verdict_text, 100)
    ranks = ByteBPETokenizer.from_merges(merges).ranks
    for word in pretoken_counts(verdict_text):
        assert merge_by_rank(word, ranks) == apply_bpe_merges(word, merges), word


def test_merge_steps_join_one_pair_per_step():
    states = list(merge_steps(to_symbols(" bookkeepers"), course().ranks))
    assert states[0] == list(to_symbols(" bookkeepers"))
    assert [len(s) for s in states] == list(range(len(states[0]), len(states[-1]) - 1, -1))
    assert [course().ranks[t] for t in states[-1]] == reference().encode(" bookkeepers")


# --- special tokens and decoding ----------------------------------------------------------


def test_special_token_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="allowed_special=") as caught:
        course().encode(f"one{EOT}two")
    assert "disallowed_special=()" in str(caught.value)
    assert course().encode(f"one{EOT}", allowed_special={EOT}) == [505, 50256]
    assert course().encode(f"one{EOT}", allowed_special="all") == [505, 50256]
    assert course().encode(EOT, disallowed_special=()) == reference().encode(
        EOT, disallowed_special=()
    )
    with pytest.raises(ValueError, match="not special tokens"):
        course().encode("x", allowed_special={"<|im_start|>"})


def test_decode_round_trip_and_replacement_of_cut_characters():
    text = "Grüße, 世界! 👋"
    ids = course().encode(text)
    assert course().decode(ids) == text
    assert course().decode_bytes(ids) == text.encode("utf-8")
    cat = course().encode("🐈")  # four bytes, in more than one token
    assert len(cat) > 1
    assert course().decode(cat[:1]) == reference().decode(cat[:1])
    assert course().decode(cat[:1]).endswith("\ufffd")
    with pytest.raises(ValueError, match="not in this tokenizer"):
        course().decode([50257])


# --- GPT-2's files ------------------------------------------------------------------------


def _write_files(folder, merges_text, vocab=None):
    if vocab is None:
        vocab = {c: i for i, c in enumerate(BYTE_TO_CHAR.values())} | {"Ġt": 256, EOT: 257}
    encoder = folder / "encoder.json"
    encoder.write_text(json.dumps(vocab), encoding="utf-8")
    merges = folder / "vocab.bpe"
    merges.write_text(merges_text, encoding="utf-8")
    return encoder, merges


def test_small_valid_files_make_a_tokenizer(tmp_path):
    tokenizer = gpt2_bpe_tokenizer(*_write_files(tmp_path, "#version: 0.2\nĠ t\n"))
    assert tokenizer.special_tokens == {EOT: 257}
    assert tokenizer.encode(" t t", allowed_special={EOT}) == [256, 256]


@pytest.mark.parametrize(
    ("merges_text", "message"),
    [
        ("#version: 0.2\nĠ t\nĠ zzq\n", r"line 3 \('Ġ zzq'\): 'zzq' is not in encoder.json"),
        ("#version: 0.2\nĠ t x\n", "line 2.*two tokens separated by one space"),
        ("#version: 0.2\nĠ t\nĠ t\n", "merge 1 makes id 256, expected 257"),
    ],
)
def test_bad_merge_files_are_reported_with_their_line(tmp_path, merges_text, message):
    with pytest.raises(TokenizerFileError, match=message):
        read_gpt2_files(*_write_files(tmp_path, merges_text))


def test_bad_encoder_files_are_reported(tmp_path):
    bytes_only = {c: i for i, c in enumerate(BYTE_TO_CHAR.values())}
    cases = [
        ({k: v for k, v in bytes_only.items() if k != "Ġ"}, "lacks 1 of the 256 byte tokens"),
        (bytes_only | {"Ġt": 0}, "the same id to two tokens"),
        (bytes_only | {"Ġt": "256"}, "integer ids"),
    ]
    for vocab, message in cases:
        with pytest.raises(TokenizerFileError, match=message):
            read_gpt2_files(*_write_files(tmp_path, "#version: 0.2\n", vocab))
    (tmp_path / "encoder.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="is not a JSON file"):
        read_gpt2_files(tmp_path / "encoder.json", tmp_path / "vocab.bpe")


def test_gpt2_files_load_completely():
    vocab, merges = read_gpt2_files(fetch("gpt2-encoder-json"), fetch("gpt2-vocab-bpe"))
    assert len(vocab) == 50257 and len(merges) == 50000
    assert course().n_vocab == reference().n_vocab == 50257
    assert course().special_tokens == {EOT: 50256}


def test_facade_offers_the_tokenizer():
    import shared

    assert shared.ByteBPETokenizer is ByteBPETokenizer
    assert shared.facade_index()["gpt2_bpe_tokenizer"] == "ch02_data.bpe"


# --- exactly tiktoken ---------------------------------------------------------------------


def test_same_ids_as_tiktoken_on_the_verdict_and_the_instruction_data(verdict_text):
    records = json.loads(fetch("instruction-data").read_text(encoding="utf-8"))
    instructions = EOT.join(f"{r['instruction']}\n\n{r['input']}\n\n{r['output']}" for r in records)
    for text in (verdict_text, instructions):
        ids = course().encode(text, allowed_special={EOT})
        assert ids == reference().encode(text, allowed_special={EOT})
        assert course().decode(ids) == text


# Pieces that stress the pre-tokenizer: whitespace runs of every kind, contractions (and their
# upper-case look-alikes, which are not contractions), digits of several scripts, emoji with
# joiners and modifiers, combining marks, and the special token itself.
TRICKY = st.sampled_from(
    [" ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "\r\n", "\u3000", "\xa0", "\u2028", "\x85"]
    + ["'s", "'S", "'ll", "'LL", "don't", "''", "' s"]
    + [" 2024", "2024", "1234567", "٣٤٥", "²", "½", "Ⅻ"]
    + ["😀", "👩‍👩‍👧", "🐈‍⬛", "👍🏽", "🇫🇷", "e\u0301", "a\u0308\u0301", "\u0301", "ñ"]
    + ["naïve", " Über", "日本語", "한국어", "!!", "...", "—", "\ufeff", "\u200b"]
    + [EOT, " " + EOT, EOT + "\n", "<|", "|>", "<|endoftext"]
)
TEXTS = st.lists(st.one_of(st.text(max_size=16), TRICKY), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(TEXTS)
def test_same_ids_as_tiktoken_with_the_special_token_allowed(text):
    ids = course().encode(text, allowed_special={EOT})
    assert ids == reference().encode(text, allowed_special={EOT})
    assert course().decode(ids) == text


@settings(max_examples=500, deadline=None)
@given(TEXTS)
def test_same_ids_or_the_same_refusal_as_tiktoken_by_default(text):
    if EOT in text:
        with pytest.raises(ValueError):
            reference().encode(text)
        with pytest.raises(ValueError, match="allowed_special"):
            course().encode(text)
    else:
        assert course().encode(text) == reference().encode(text)
    as_text = course().encode(text, disallowed_special=())
    assert as_text == reference().encode(text, disallowed_special=())
    assert course().decode(as_text) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50256), max_size=20))
def test_decoding_any_ids_gives_tiktokens_text(ids):
    assert course().decode(ids) == reference().decode(ids)
