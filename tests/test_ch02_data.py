"""Chapter 2: tokenizers, the sliding-window dataset and the data loader."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ch02_data.text_data import (
    END_OF_TEXT,
    UNKNOWN_TOKEN,
    GPTDataset,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    apply_bpe_merges,
    build_vocab,
    create_dataloader,
    learn_bpe_merges,
    simple_tokenize,
)

TEXT = 'Well, the kettle. Is it-- boiling yet? "No," he sighed.'


def test_simple_tokenize_splits_punctuation_and_drops_whitespace():
    assert simple_tokenize("Well, the kettle.  Is it-- boiling\tyet?") == [
        "Well",
        ",",
        "the",
        "kettle",
        ".",
        "Is",
        "it",
        "--",
        "boiling",
        "yet",
        "?",
    ]
    assert simple_tokenize("   ") == []


def test_build_vocab_is_sorted_and_appends_special_tokens():
    vocab = build_vocab(["b", "a", "b", "c"], special_tokens=[UNKNOWN_TOKEN, END_OF_TEXT])
    assert vocab == {"a": 0, "b": 1, "c": 2, UNKNOWN_TOKEN: 3, END_OF_TEXT: 4}
    # a special token already among the tokens is not added twice
    assert len(build_vocab(["a", UNKNOWN_TOKEN], special_tokens=[UNKNOWN_TOKEN])) == 2


def test_v1_round_trip_and_unknown_token_error():
    tokenizer = SimpleTokenizerV1(build_vocab(simple_tokenize(TEXT)))
    ids = tokenizer.encode("Well, the kettle.")
    assert tokenizer.decode(ids) == "Well, the kettle."
    with pytest.raises(KeyError, match="'soup'.*SimpleTokenizerV2"):
        tokenizer.encode("kettle soup")


def test_v2_maps_unknown_tokens_and_requires_unk_entry():
    vocab = build_vocab(simple_tokenize(TEXT), special_tokens=[UNKNOWN_TOKEN, END_OF_TEXT])
    tokenizer = SimpleTokenizerV2(vocab)
    ids = tokenizer.encode("kettle soup <|endoftext|> yet")
    assert ids == [vocab["kettle"], vocab[UNKNOWN_TOKEN], vocab[END_OF_TEXT], vocab["yet"]]
    assert tokenizer.decode(ids) == "kettle <|unk|> <|endoftext|> yet"
    with pytest.raises(ValueError, match="no '<\\|unk\\|>' entry"):
        SimpleTokenizerV2(build_vocab(["a"]))


# --- byte-pair merges ----------------------------------------------------------


def test_learn_bpe_merges_takes_the_most_frequent_pair_first():
    counts = {"lower": 5, "lowest": 2, "newer": 6, "wider": 3}
    merges = learn_bpe_merges(counts, num_merges=5)
    assert merges == [("e", "r"), ("w", "er"), ("l", "o"), ("e", "wer"), ("n", "ewer")]
    assert apply_bpe_merges("newer", merges) == ["newer"]
    assert apply_bpe_merges("lowest", merges) == ["lo", "w", "e", "s", "t"]
    # a new word is split by the same merges, in the order they were learned
    assert apply_bpe_merges("renewer", merges) == ["r", "e", "newer"]
    # ties go to the alphabetically first pair; learning stops when every word is one symbol
    assert learn_bpe_merges({"ab": 1, "cd": 1}, num_merges=10) == [("a", "b"), ("c", "d")]
    assert apply_bpe_merges("", merges) == []


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text("abc", min_size=1, max_size=8), st.integers(1, 9), max_size=6),
    st.text("abcd", max_size=12),
    st.integers(min_value=0, max_value=12),
)
def test_bpe_pieces_always_join_back_into_the_word(counts, word, num_merges):
    merges = learn_bpe_merges(counts, num_merges)
    assert len(merges) <= num_merges
    pieces = apply_bpe_merges(word, merges)
    assert "".join(pieces) == word
    # every piece is a single character or a symbol that one of the merges built
    built = {"".join(pair) for pair in merges}
    assert all(len(piece) == 1 or piece in built for piece in pieces)


# --- sliding windows as properties --------------------------------------------

window_params = st.integers(min_value=2, max_value=300).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(min_value=1, max_value=n - 1),  # max_length: at least one window fits
        st.integers(min_value=1, max_value=n + 5),  # stride, possibly larger than the text
    )
)


@settings(max_examples=200, deadline=None)
@given(window_params)
def test_windows_step_by_stride_and_stay_inside_the_text(params):
    n, max_length, stride = params
    ids = torch.arange(n)  # distinct ids, so a value is its position
    ds = GPTDataset(ids, max_length=max_length, stride=stride)
    assert len(ds) == math.ceil((n - max_length) / stride)
    for k in range(len(ds)):
        inputs, targets = ds[k]
        assert inputs.shape == targets.shape == (max_length,)
        assert inputs[0].item() == k * stride  # windows step by stride
        assert targets[-1].item() <= n - 1  # no window runs past the text
    # maximal: one more window would need a target past the end
    assert len(ds) * stride + max_length >= n


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=50256), min_size=2, max_size=200),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=1, max_value=16),
)
def test_every_target_is_its_input_shifted_by_one(token_ids, max_length, stride):
    if len(token_ids) < max_length + 1:
        with pytest.raises(ValueError, match="needs"):
            GPTDataset(token_ids, max_length=max_length, stride=stride)
        return
    ds = GPTDataset(token_ids, max_length=max_length, stride=stride)
    for k in range(len(ds)):
        inputs, targets = ds[k]
        start = k * stride
        assert inputs.tolist() == token_ids[start : start + max_length]
        assert targets.tolist() == token_ids[start + 1 : start + max_length + 1]


@pytest.mark.parametrize("max_length,stride", [(0, 1), (4, 0), (-1, 2)])
def test_dataset_rejects_non_positive_sizes(max_length, stride):
    with pytest.raises(ValueError, match="must be >= 1"):
        GPTDataset(list(range(10)), max_length=max_length, stride=stride)


def test_create_dataloader_batches_and_drop_last(verdict_text):
    loader = create_dataloader(verdict_text, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    n_windows = len(loader.dataset)
    assert len(loader) == n_windows // 8  # drop_last: the smaller final batch is dropped
    keep = create_dataloader(
        verdict_text, batch_size=8, max_length=4, stride=4, shuffle=False, drop_last=False
    )
    assert len(keep) == math.ceil(n_windows / 8)


def test_create_dataloader_seeded_shuffle_is_reproducible(verdict_text):
    def first_batch(seed):
        loader = create_dataloader(verdict_text, batch_size=4, max_length=8, stride=8, seed=seed)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_create_dataloader_rejects_too_short_text():
    with pytest.raises(ValueError, match="needs 257"):
        create_dataloader("Too short.", max_length=256)
