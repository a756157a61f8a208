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
    build_vocab,
    create_dataloader,
    simple_tokenize,
)

TEXT = 'Hello, world. Is this-- a test? "Yes," she said.'


def test_simple_tokenize_splits_punctuation_and_drops_whitespace():
    assert simple_tokenize("Hello, world.  Is this-- a\ttest?") == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "--",
        "a",
        "test",
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
    ids = tokenizer.encode("Hello, world.")
    assert tokenizer.decode(ids) == "Hello, world."
    with pytest.raises(KeyError, match="'tea'.*SimpleTokenizerV2"):
        tokenizer.encode("Hello tea")


def test_v2_maps_unknown_tokens_and_requires_unk_entry():
    vocab = build_vocab(simple_tokenize(TEXT), special_tokens=[UNKNOWN_TOKEN, END_OF_TEXT])
    tokenizer = SimpleTokenizerV2(vocab)
    ids = tokenizer.encode("Hello tea <|endoftext|> world")
    assert ids == [vocab["Hello"], vocab[UNKNOWN_TOKEN], vocab[END_OF_TEXT], vocab["world"]]
    assert tokenizer.decode(ids) == "Hello <|unk|> <|endoftext|> world"
    with pytest.raises(ValueError, match="no '<\\|unk\\|>' entry"):
        SimpleTokenizerV2(build_vocab(["a"]))


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
