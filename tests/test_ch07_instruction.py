"""Chapter 7: instruction data, prompts, collate, scores, the LLM judge, streaming, the CLI."""

import json
import os
import re
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch
from helpers import run_module, tiny_gpt_config  # tests/ is on sys.path
from hypothesis import given
from hypothesis import strategies as st
from test_judge import closed_port_url, running_fake_ollama, running_redirect

from ch04_gpt_model.gpt_model import GPTModel
from ch05_pretraining.checkpoints import save_checkpoint
from ch05_pretraining.pretraining import generate, text_to_token_ids
from ch05_pretraining.speed import CachedDecoder
from ch07_instruction.chat import (
    chat_session,
    decode_incrementally,
    stop_at_new_section,
    stream_answer,
    stream_token_ids,
)
from ch07_instruction.evaluation import (
    judge_responses,
    lcs_length,
    mean_rouge_l,
    parse_judge_score,
    response_token_loss,
    rouge_l,
)
from ch07_instruction.instruction import (
    END_OF_TEXT_ID,
    InstructionDataError,
    InstructionDataset,
    config_from_model,
    custom_collate_fn,
    extract_response,
    format_input,
    format_prompt,
    generate_response,
    load_instruction_data,
    load_responses,
    save_responses,
    split_instruction_data,
    validate_instruction_data,
)
from shared import fetch, gpt2_tokenizer
from shared.io import write_json_atomically
from shared.judge import JudgeReplyError, JudgeUnavailableError

# GPT-2's vocabulary, one tiny block, room for a whole instruction prompt
TINY = tiny_gpt_config(context_length=128, emb_dim=16, n_heads=2, n_layers=1)
RECORD = {"instruction": "Name a primary color.", "input": "", "output": "Red is a primary color."}


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(7)
    return GPTModel(TINY).eval()


@pytest.fixture(scope="module")
def instruction_data():
    return load_instruction_data(fetch("instruction-data"))


# --- collate: padding, shifting, masking ------------------------------------------------

# 50256 may occur inside a text (a real end-of-text token): masking must go by length, not value
token_ids = st.lists(st.integers(0, END_OF_TEXT_ID), min_size=1, max_size=12)
batches = st.lists(token_ids, min_size=1, max_size=5)


def expected_rows(seq, longest):
    n = len(seq)
    inputs = seq + [END_OF_TEXT_ID] * (longest - n)
    targets = seq[1:] + [END_OF_TEXT_ID] + [-100] * (longest - n)
    return inputs, targets


@given(batch=batches, limit=st.one_of(st.none(), st.integers(1, 14)))
def test_collate_pads_shifts_and_ignores_all_padding_but_the_first(batch, limit):
    inputs, targets = custom_collate_fn(batch, allowed_max_length=limit)
    longest = max(len(seq) for seq in batch)
    width = longest if limit is None else min(longest, limit)
    assert inputs.shape == targets.shape == (len(batch), width)
    assert inputs.dtype == targets.dtype == torch.long
    for row, seq in enumerate(batch):
        want_inputs, want_targets = expected_rows(seq, longest)
        assert inputs[row].tolist() == want_inputs[:width]
        assert targets[row].tolist() == want_targets[:width]
        # shifted by one: wherever a target is a real token, it is the next input
        for t in range(width - 1):
            if t + 1 < len(seq):
                assert targets[row, t] == inputs[row, t + 1]


@given(seq=token_ids)
def test_a_batch_of_one_has_no_ignored_targets(seq):
    inputs, targets = custom_collate_fn([seq])
    assert inputs.tolist() == [seq]
    assert targets.tolist() == [seq[1:] + [END_OF_TEXT_ID]]
    assert not (targets == -100).any()


@given(length=st.integers(1, 12), rows=st.integers(1, 4), data=st.data())
def test_sequences_at_the_maximum_length_are_not_masked(length, rows, data):
    batch = [
        data.draw(st.lists(st.integers(0, 50256), min_size=length, max_size=length))
        for _ in range(rows)
    ]
    inputs, targets = custom_collate_fn(batch)
    assert inputs.shape == (rows, length)
    assert not (targets == -100).any()
    assert (targets[:, -1] == END_OF_TEXT_ID).all()  # every row ends with its end-of-text target


@given(batch=batches, limit=st.integers(1, 14))
def test_allowed_max_length_keeps_a_prefix(batch, limit):
    full_inputs, full_targets = custom_collate_fn(batch)
    inputs, targets = custom_collate_fn(batch, allowed_max_length=limit)
    assert torch.equal(inputs, full_inputs[:, :limit])
    assert torch.equal(targets, full_targets[:, :limit])
    assert inputs.shape[1] == min(limit, full_inputs.shape[1])


@given(data=st.data(), batch=batches)
def test_masking_the_instruction_ignores_exactly_the_prompt_targets(data, batch):
    prompt_lengths = [data.draw(st.integers(0, len(seq))) for seq in batch]
    pairs = list(zip(batch, prompt_lengths, strict=True))
    plain_inputs, plain_targets = custom_collate_fn(batch)
    inputs, targets = custom_collate_fn(pairs, mask_instruction=True)
    assert torch.equal(inputs, plain_inputs)
    for row, p in enumerate(prompt_lengths):
        # the target at position t is token t + 1: a prompt token exactly when t + 1 < p
        masked = max(p - 1, 0)
        assert (targets[row, :masked] == -100).all()
        assert torch.equal(targets[row, masked:], plain_targets[row, masked:])
    # pairs without mask_instruction behave like plain sequences
    assert torch.equal(custom_collate_fn(pairs)[1], plain_targets)


def test_padding_does_not_change_an_examples_loss(tiny_model):
    short, long = [10, 20, 30], [1, 2, 3, 4, 5, 6, 7, 8]
    ce = torch.nn.functional.cross_entropy

    def summed_loss(batch, row):
        inputs, targets = custom_collate_fn(batch)
        with torch.no_grad():
            losses = ce(tiny_model(inputs).flatten(0, 1), targets.flatten(), reduction="none")
        return losses.view(targets.shape)[row].sum()

    torch.testing.assert_close(summed_loss([short, long], 0), summed_loss([short], 0))


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        custom_collate_fn([])
    with pytest.raises(ValueError, match="item 1 of the batch must be a non-empty"):
        custom_collate_fn([[1, 2], []])
    with pytest.raises(ValueError, match=r"item 0 .* no prompt length.*with_prompt_length=True"):
        custom_collate_fn([[1, 2, 3]], mask_instruction=True)
    with pytest.raises(ValueError, match="item 1 of the batch has the prompt length -1"):
        custom_collate_fn([([1, 2], 1), ([3, 4], -1)], mask_instruction=True)


def test_an_empty_prompt_masks_nothing():
    inputs, targets = custom_collate_fn([([5, 6, 7], 0), ([8, 9], 1)], mask_instruction=True)
    assert targets.tolist() == [[6, 7, END_OF_TEXT_ID], [9, END_OF_TEXT_ID, -100]]


def test_a_tuple_of_token_ids_is_a_sequence_not_a_pair():
    inputs, targets = custom_collate_fn([(5, 7), [1, 2, 3]])
    assert inputs.tolist() == [[5, 7, END_OF_TEXT_ID], [1, 2, 3]]
    assert targets.tolist() == [[7, END_OF_TEXT_ID, -100], [2, 3, END_OF_TEXT_ID]]


def test_collate_puts_tensors_on_the_device():
    inputs, targets = custom_collate_fn([[1, 2]], device="meta")
    assert inputs.device.type == targets.device.type == "meta"


# --- prompts and data ------------------------------------------------------------------------

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


def test_format_input_with_and_without_input():
    with_input = {"instruction": "Fix the spelling.", "input": "freind", "output": "friend"}
    assert format_input(with_input) == (
        f"{PREAMBLE}\n\n### Instruction:\nFix the spelling.\n\n### Input:\nfreind"
    )
    assert format_input(RECORD) == f"{PREAMBLE}\n\n### Instruction:\nName a primary color."
    assert "### Input" not in format_input(RECORD)
    assert format_prompt(with_input) == format_input(with_input) + "\n\n### Response:\n"


@pytest.mark.parametrize(
    "bad_record,match",
    [
        ({"instruction": "x", "input": ""}, r"record 3 has no 'output' key"),
        ({"input": "", "output": "y"}, r"record 3 has no 'instruction' key"),
        (
            {"instruction": "x", "input": None, "output": "y"},
            r"record 3: 'input' must be a string, got NoneType",
        ),
        (
            {"instruction": "x", "input": "", "output": 5},
            r"record 3: 'output' must be a string, got int",
        ),
        (["x", "", "y"], r"record 3 is a list, expected an object"),
    ],
)
def test_malformed_record_names_its_index(bad_record, match):
    records = [dict(RECORD) for _ in range(3)] + [bad_record] + [dict(RECORD)]
    with pytest.raises(InstructionDataError, match=match):
        validate_instruction_data(records)


def test_malformed_files(tmp_path):
    (tmp_path / "object.json").write_text('{"instruction": "x"}', encoding="utf-8")
    with pytest.raises(InstructionDataError, match="must be a JSON list"):
        load_instruction_data(tmp_path / "object.json")
    (tmp_path / "broken.json").write_text('[{"instruction": ', encoding="utf-8")
    with pytest.raises(InstructionDataError, match="is not valid JSON"):
        load_instruction_data(tmp_path / "broken.json")
    records = [RECORD, {**RECORD, "output": ["not", "text"]}]
    (tmp_path / "typed.json").write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(InstructionDataError, match="record 1: 'output' must be a string"):
        load_instruction_data(tmp_path / "typed.json")


def test_the_data_set_loads_and_splits_85_5_10(instruction_data):
    assert len(instruction_data) == 1100
    train, val, test = split_instruction_data(instruction_data, seed=123)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    indices = list(range(1100))
    parts = split_instruction_data(indices, seed=123)
    assert sorted(sum(parts, [])) == indices  # disjoint and complete
    assert split_instruction_data(indices, seed=123) == parts
    assert split_instruction_data(indices, seed=124)[0] != parts[0]
    with pytest.raises(ValueError, match="train_frac"):
        split_instruction_data(indices, train_frac=0.95, test_frac=0.1)


def test_dataset_splits_each_example_into_prompt_and_answer(tokenizer, instruction_data):
    records = instruction_data[:20]
    dataset = InstructionDataset(records, tokenizer, with_prompt_length=True)
    assert len(dataset) == 20
    for entry, (ids, prompt_length) in zip(records, dataset, strict=True):
        assert tokenizer.decode(ids[:prompt_length]) == format_prompt(entry)
        assert tokenizer.decode(ids[prompt_length:]) == entry["output"]
        # the very tokens generate_response feeds the model for this instruction
        assert ids[:prompt_length] == text_to_token_ids(format_prompt(entry), tokenizer)[0].tolist()
    assert InstructionDataset(records, tokenizer)[0] == dataset[0][0]


def test_dataset_encodes_end_of_text_like_a_prompt_at_answer_time(tokenizer):
    entry = {
        "instruction": "Explain <|endoftext|>.",
        "input": "",
        "output": "It ends a text<|endoftext|>",
    }
    ((ids, prompt_length),) = InstructionDataset([entry], tokenizer, with_prompt_length=True)
    prompt_ids = text_to_token_ids(format_prompt(entry), tokenizer)[0].tolist()
    assert END_OF_TEXT_ID in prompt_ids
    assert ids[:prompt_length] == prompt_ids
    assert ids[prompt_length:] == tokenizer.encode("It ends a text") + [END_OF_TEXT_ID]


def test_a_record_that_cannot_be_encoded_is_named(tokenizer):
    import tiktoken

    # an encoding with one more special token, which text_to_token_ids does not allow
    strict = tiktoken.Encoding(
        "gpt2-with-pad",
        pat_str=tokenizer._pat_str,
        mergeable_ranks=tokenizer._mergeable_ranks,
        special_tokens={**tokenizer._special_tokens, "<|pad|>": 50257},
    )
    records = [RECORD, RECORD, {**RECORD, "output": "Use <|pad|> here."}]
    with pytest.raises(
        InstructionDataError, match=r"record 2 cannot be formatted and tokenized.*<\|pad\|>"
    ):
        InstructionDataset(records, strict)
    with pytest.raises(InstructionDataError, match=r"record 1 .*KeyError: 'output'"):
        InstructionDataset([RECORD, {"instruction": "x", "input": ""}], tokenizer)
    with pytest.raises(InstructionDataError, match=r"record 0 .*TypeError"):
        InstructionDataset([{**RECORD, "output": 5}], tokenizer)


def test_extract_response():
    assert extract_response("prompt\n\n### Response:\n Paris. <|endoftext|>junk") == "Paris."
    assert extract_response("### Response:\nParis.\n### Instruction:\nMore") == "Paris."
    prompt = format_prompt(RECORD)
    assert extract_response(prompt + "Blue.", prompt=prompt) == "Blue."
    assert extract_response(prompt + "### Input:\nMore", prompt=prompt) == ""  # a section at once
    assert extract_response(prompt + "Steps:\n#1 mix", prompt=prompt) == "Steps:\n#1 mix"
    with pytest.raises(ValueError, match="no '### Response:' header"):
        extract_response("no header here")


# --- offline scores ----------------------------------------------------------------------------


def _lcs_brute_force(a, b):
    for size in range(min(len(a), len(b)), 0, -1):
        subsequences = {tuple(a[i] for i in picked) for picked in combinations(range(len(a)), size)}
        if any(
            tuple(b[i] for i in picked) in subsequences
            for picked in combinations(range(len(b)), size)
        ):
            return size
    return 0


@given(st.lists(st.sampled_from("abc"), max_size=7), st.lists(st.sampled_from("abc"), max_size=7))
def test_lcs_length_matches_brute_force(a, b):
    assert lcs_length(a, b) == _lcs_brute_force(a, b) == lcs_length(b, a)


words = st.lists(
    st.sampled_from(["the", "cat", "sat", "on", "mat", "Paris", "is"]), max_size=8
).map(" ".join)


@given(words, words)
def test_rouge_l_is_a_symmetric_score_between_0_and_1(a, b):
    score = rouge_l(a, b)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(rouge_l(b, a))
    assert rouge_l(a, a) == 1.0


def test_rouge_l_values():
    reference = "The capital of France is Paris."
    assert rouge_l("the capital of france is paris", reference) == 1.0  # case and punctuation
    assert rouge_l("Paris is the capital of France.", reference) == pytest.approx(4 / 6)
    assert rouge_l("I like cheese.", reference) == 0.0
    assert rouge_l("", reference) == 0.0
    entries = [{**RECORD, "model_response": RECORD["output"]}, {**RECORD, "model_response": "No."}]
    assert mean_rouge_l(entries) == pytest.approx(0.5)


def test_response_token_loss_scores_only_answer_tokens(tokenizer, tiny_model):
    records = [RECORD, {"instruction": "Add 2 and 3.", "input": "2, 3", "output": "5"}]
    score = response_token_loss(tiny_model, records, tokenizer, batch_size=2)
    total, count = 0.0, 0
    for entry in records:
        prompt = tokenizer.encode(format_prompt(entry))
        full = prompt + tokenizer.encode(entry["output"]) + [END_OF_TEXT_ID]
        with torch.no_grad():
            log_probs = torch.log_softmax(tiny_model(torch.tensor([full[:-1]]))[0], dim=-1)
        for position in range(len(prompt) - 1, len(full) - 1):
            total -= log_probs[position, full[position + 1]].item()
            count += 1
    assert score["tokens"] == count
    assert score["loss"] == pytest.approx(total / count, rel=1e-5)
    assert score["perplexity"] == pytest.approx(torch.tensor(total / count).exp().item(), rel=1e-5)


def test_config_from_model_rebuilds_the_model(tiny_model):
    config = config_from_model(tiny_model)
    assert config == TINY
    rebuilt = GPTModel(config)
    rebuilt.load_state_dict(tiny_model.state_dict())


# --- saving answers ----------------------------------------------------------------------------


def test_responses_round_trip_and_atomic_writes(tmp_path):
    entries = [{**RECORD, "model_response": "Blue is a primary color. 🎨"}]
    path = save_responses(tmp_path / "answers.json", entries)
    assert load_responses(path) == entries
    with pytest.raises(InstructionDataError, match="record 0 has no text under 'model_response'"):
        save_responses(tmp_path / "other.json", [RECORD])
    write_json_atomically(tmp_path / "plain.json", [RECORD])
    with pytest.raises(
        InstructionDataError, match="record 0 of .* has no text under 'model_response'"
    ):
        load_responses(tmp_path / "plain.json")
    # a write that fails half-way leaves the old file and no temporary file behind
    with pytest.raises(TypeError):
        write_json_atomically(path, [{"fine": 1}, {"not json": object()}])
    assert load_responses(path) == entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.json", "plain.json"]


# --- streaming ----------------------------------------------------------------------------------


def test_stream_token_ids_yields_the_tokens_of_generate(tiny_model):
    prompt = torch.tensor([[40, 367, 2885]])
    greedy = generate(tiny_model, prompt, 12, TINY["context_length"])[0, 3:].tolist()
    assert list(stream_token_ids(tiny_model, prompt, 12, TINY["context_length"])) == greedy
    eos = greedy[3]  # the fourth token plays end-of-text: streaming stops before it
    streamed = list(stream_token_ids(tiny_model, prompt, 12, TINY["context_length"], eos_id=eos))
    assert streamed == greedy[: greedy.index(eos)]

    def sampled(fn):
        gen = torch.Generator().manual_seed(3)
        return fn(
            tiny_model, prompt, 8, TINY["context_length"], temperature=1.0, top_k=20, generator=gen
        )

    assert list(sampled(stream_token_ids)) == sampled(generate)[0, 3:].tolist()
    with pytest.raises(ValueError, match=r"shape \(1, tokens\)"):
        next(stream_token_ids(tiny_model, torch.zeros((2, 3), dtype=torch.long), 4, 32))
    with pytest.raises(ValueError, match="temperature must be"):
        next(stream_token_ids(tiny_model, prompt, 4, 32, temperature=-1.0))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        next(stream_token_ids(tiny_model, prompt, -1, 32))  # fault test: once yielded nothing


text_without_surrogates = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(text=text_without_surrogates)
def test_decode_incrementally_never_splits_characters(tokenizer, text):
    ids = tokenizer.encode(text, disallowed_special=())
    pieces = list(decode_incrementally(ids, tokenizer))
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces) or "\ufffd" in text


pieces_of_text = st.lists(st.sampled_from(["a", " ", "\n", "#", "##", "### ", "\n### ", "x\n#"]))


def _answer_as_extract_response_cuts(text):
    return re.split(r"(?:^|\n)### ", text, maxsplit=1)[0]


@given(pieces=pieces_of_text)
def test_stop_at_new_section_passes_on_exactly_the_answer(pieces):
    # a stream cannot take text back, so equality with the cut text also means that no
    # piece of the marker was ever passed on
    passed = list(stop_at_new_section(pieces))
    assert "".join(passed) == _answer_as_extract_response_cuts("".join(pieces))
    assert all(passed)  # no empty pieces


def test_stop_at_new_section_holds_back_a_possible_marker():
    pieces = iter(["Red.\n#", "## Instruction:", "never read"])
    passed = stop_at_new_section(pieces)
    assert next(passed) == "Red."  # "\n#" is held back
    assert list(passed) == []
    assert next(pieces) == "never read"  # it stopped reading at the marker
    assert list(stop_at_new_section(["Steps:\n#", "1 mix"])) == ["Steps:", "\n#1 mix"]
    assert list(stop_at_new_section(["ends with\n##"])) == ["ends with", "\n##"]


def test_stream_answer_gives_the_answer_of_generate_response(tiny_model, tokenizer):
    decoder = CachedDecoder(tiny_model)
    for entry in (RECORD, {"instruction": "Add 2 and 3.", "input": "2, 3", "output": "5"}):
        pieces = list(
            stream_answer(tiny_model, format_prompt(entry), tokenizer, 10, decoder=decoder)
        )
        assert "".join(pieces).strip() == generate_response(tiny_model, entry, tokenizer, "cpu", 10)
        assert len(pieces) > 1  # streamed, not returned at once


CHAIN = ["\n", "Blue", ".", "\n\n", "###", " Instruction", ":"]  # "\n" ends every prompt


def _successor_model(tokenizer, chain):
    # A GPTModel whose greedy next token depends only on the current one: each token of
    # `chain` is followed by the next. Positions and blocks add nothing (their output
    # projections are zero), and the head scores chain[i + 1] with the normalised embedding
    # of chain[i], which no other embedding matches as well.
    ids = [tokenizer.encode(token)[0] for token in chain]
    torch.manual_seed(11)
    model = GPTModel(TINY).eval()
    with torch.no_grad():
        model.pos_emb.weight.zero_()
        for block in model.trf_blocks:
            for linear in (block.att.out_proj, block.ff.fc_out):
                linear.weight.zero_()
                linear.bias.zero_()
        model.out_head.weight.zero_()
        for current, following in zip(ids[:-1], ids[1:], strict=True):
            model.out_head.weight[following] = model.final_norm(model.tok_emb.weight[current])
    return model


def test_stream_answer_stops_at_a_new_section(tokenizer):
    model = _successor_model(tokenizer, CHAIN)
    prompt = format_prompt(RECORD)
    out = generate(model, text_to_token_ids(prompt, tokenizer), 8, TINY["context_length"])
    generated = tokenizer.decode(out[0].tolist())
    assert generated.startswith(prompt + "Blue.\n\n### Instruction:")  # the model goes on
    pieces = list(stream_answer(model, prompt, tokenizer, 8))
    assert "#" not in "".join(pieces)
    assert "".join(pieces).strip() == extract_response(generated, prompt) == "Blue."


def test_decode_incrementally_on_split_characters(tokenizer):
    ids = tokenizer.encode("Grüße 🦙 中文")
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)  # one token alone is broken
    assert "".join(decode_incrementally(ids, tokenizer)) == "Grüße 🦙 中文"


# --- the LLM judge: the chapter's prompt and score parser, through shared.judge's client ------
# The client itself (timeouts, refused connections, garbage replies) is tested in test_judge.py.


@pytest.fixture
def fake_ollama():
    with running_fake_ollama() as server:
        yield server


ANSWERED = [
    {**RECORD, "model_response": "Blue."},
    {**RECORD, "model_response": "Red is a primary color."},
]


def test_judge_scores_answers_through_the_chat_api(fake_ollama):
    report = judge_responses(ANSWERED, url=fake_ollama.url, timeout=5)
    assert report.scores == [87, 87] and report.mean == 87 and report.problems == []
    request = fake_ollama.requests[0]
    assert request["model"] == "llama3" and request["stream"] is False
    prompt = request["messages"][0]["content"]
    assert "Red is a primary color." in prompt and "Blue." in prompt and "0 to 100" in prompt


def test_replies_without_a_score_are_skipped_not_guessed(fake_ollama):
    fake_ollama.mode = "no-number"
    report = judge_responses(ANSWERED[:1], url=fake_ollama.url, timeout=5)
    assert report.scores == [None] and report.mean is None
    assert "record 0" in report.problems[0] and "no score" in report.problems[0]
    fake_ollama.mode = "not-json"
    report = judge_responses(ANSWERED, url=fake_ollama.url, timeout=5)
    assert report.scores == [None, None] and "not JSON" in report.problems[1]


def test_judging_stops_when_the_judge_is_unavailable(fake_ollama):
    with pytest.raises(JudgeUnavailableError, match="no answer from an Ollama server"):
        judge_responses(ANSWERED, url=closed_port_url(), timeout=1)
    fake_ollama.mode = "model-missing"
    with pytest.raises(JudgeUnavailableError, match="ollama pull llama3"):
        judge_responses(ANSWERED, url=fake_ollama.url, timeout=5)


@pytest.mark.parametrize(
    "reply,score",
    [
        ("85", 85),
        (" 100.\n", 100),
        ("Score: 72", 72),
        ("I would rate it 40/100.", 40),
        ("On a scale from 0 to 100, this deserves 90.", 90),
        ("The answer is correct and complete: 95", 95),
        ("Score of 0 to 100: 12 out of 100", 12),
        # numbers quoted before the grade: the labelled one counts, not the first one
        ("The reference says 32 degrees, and so does the answer. Rating: 90", 90),
        ("It lists 3 of the 4 colors the reference names.\nScore: 70", 70),
        ("Score: 60 at first sight. After checking the facts, final score: 75", 75),
        ("I rated it 88/100, as it misses 1 detail.", 88),
        ("85\nThe answer names 3 colors, like the reference.", 85),
    ],
)
def test_parse_judge_score(reply, score):
    assert parse_judge_score(reply) == score


@pytest.mark.parametrize(
    "reply,match",
    [
        ("Grade: 7/10", r"7/10, a score on another scale"),
        ("8 out of 10", r"8/10, a score on another scale"),
        ("Rating: 4/5 stars. The reference has 3 more details.", r"4/5, a score on another scale"),
        ("It names 3 colors; the reference names 4.", r"several numbers \(3, 4\) and no label"),
        ("Score: 7.5", r"7.5 is not a whole number from 0 to 100"),
        ("Score: 150", r"150 is not a whole number from 0 to 100"),
    ],
)
def test_parse_judge_score_refuses_to_guess(reply, match):
    with pytest.raises(JudgeReplyError, match=match):
        parse_judge_score(reply)


@pytest.mark.parametrize("reply", ["A fine answer!", "", "I give it 150", "-"])
def test_parse_judge_score_without_a_score(reply):
    with pytest.raises(JudgeReplyError, match="no score from 0 to 100"):
        parse_judge_score(reply)


# --- command line --------------------------------------------------------------------------------
# `python -m ch07_instruction` runs in subprocesses for --help, finetune and chat; respond and
# evaluate run through the same main() in this process, which saves several interpreter starts.


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "GPT_COURSE_MODE": "test", "GPT_COURSE_CACHE": str(cache)}


def _cli(*args, env, cwd=None, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "ch07_instruction", *args],
        cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_help(cli_env, capsys):
    from ch07_instruction.__main__ import build_parser

    out = _cli("--help", env=cli_env)
    assert out.returncode == 0
    for command in ("finetune", "respond", "evaluate", "chat"):
        assert command in out.stdout
    for command, options in [("finetune", ["--mask-instruction", "--lr", "--size"]),
                             ("evaluate", ["--ollama-url", "--judge-model"])]:  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0
        printed = capsys.readouterr().out
        assert all(option in printed for option in options)


@pytest.mark.slow
def test_cli_finetune_respond_evaluate(tmp_path, cli_env, fake_ollama, monkeypatch, capsys):
    from ch07_instruction.__main__ import main

    out = _cli("finetune", "--out", "ckpt", "--train-subset", "8", "--val-subset", "4", "--batch-size", "4",
               "--epochs", "1", "--mask-instruction", env=cli_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "TEST MODE" in out.stderr and "prompt tokens masked" in out.stdout
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert meta["training_state"]["epoch"] == 1
    info = meta["extra"]  # the fine-tuning record is saved with the checkpoint, atomically
    assert info["mask_instruction"] is True and info["train_examples"] == 8
    assert info["split_seed"] == 123 and not (tmp_path / "ckpt" / "finetune.json").exists()
    # a checkpoint 'finetune' wrote holds only its own files: fine-tuning again may replace it
    again = _cli("finetune", "--out", "ckpt", "--train-subset", "4", "--val-subset", "4", "--batch-size", "4",
                 "--epochs", "1", env=cli_env, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (
        json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["extra"]["train_examples"]
        == 4
    )

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT_COURSE_CACHE", cli_env["GPT_COURSE_CACHE"])
    assert (
        main(
            [
                "respond",
                "--checkpoint",
                "ckpt",
                "--out",
                "answers.json",
                "--limit",
                "2",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    answers = load_responses(tmp_path / "answers.json")
    _, _, test = split_instruction_data(load_instruction_data(fetch("instruction-data")), seed=123)
    assert [a["instruction"] for a in answers] == [t["instruction"] for t in test[:2]]
    capsys.readouterr()

    evaluate = [
        "evaluate",
        "--checkpoint",
        "ckpt",
        "--responses",
        "answers.json",
        "--out",
        "scores.json",
    ]
    assert main([*evaluate, "--ollama-url", closed_port_url()]) == 0
    printed = capsys.readouterr().out
    assert "ROUGE-L" in printed and "perplexity" in printed
    assert "LLM judge skipped" in printed and "ollama serve" in printed
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["records"] == 2 and scores["answer_perplexity"] > 1 and "judge_mean" not in scores

    assert main([*evaluate, "--ollama-url", fake_ollama.url]) == 0
    assert "mean score 87.0 over 2 of 2 answers" in capsys.readouterr().out
    assert json.loads((tmp_path / "scores.json").read_text())["judge_scores"] == [87, 87]


def test_cli_reports_a_missing_checkpoint(tmp_path, monkeypatch):
    from ch07_instruction.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="error: nowhere is not a checkpoint folder"):
        main(["respond", "--checkpoint", "nowhere", "--out", "a.json"])


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("chat") / "tiny"
    save_checkpoint(folder, tiny_model, config=config_from_model(tiny_model))
    return folder


def _expected_chat_answer(model, tokenizer, instruction, max_new_tokens):
    idx = torch.tensor([tokenizer.encode(format_prompt({"instruction": instruction, "input": ""}))])
    out = generate(model, idx, max_new_tokens, TINY["context_length"], eos_id=END_OF_TEXT_ID)
    text = tokenizer.decode([t for t in out[0, idx.shape[1] :].tolist() if t != END_OF_TEXT_ID])
    return _answer_as_extract_response_cuts(text)


def test_chat_streams_an_answer_and_ends_on_eof(tiny_checkpoint, tiny_model, tokenizer, cli_env):
    out = _cli("chat", "--checkpoint", str(tiny_checkpoint), "--max-new-tokens", "6",
               env=cli_env, stdin="Name a color.\n\nWhat is 2 + 2?\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    first = _expected_chat_answer(tiny_model, tokenizer, "Name a color.", 6)
    second = _expected_chat_answer(tiny_model, tokenizer, "What is 2 + 2?", 6)
    assert first.strip()
    assert f"model> {first}\n" in out.stdout and f"model> {second}\n" in out.stdout
    assert out.stdout.count("model> ") == 2  # the empty line is skipped


@pytest.mark.parametrize("word", ["exit", "QUIT"])
def test_chat_ends_on_exit(tiny_checkpoint, cli_env, word):
    out = _cli("chat", "--checkpoint", str(tiny_checkpoint), "--max-new-tokens", "3",
               env=cli_env, stdin=f"Name a color.\n{word}\nName another color.\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("model> ") == 1


def test_chat_stops_printing_at_a_new_section(tmp_path, tokenizer, cli_env):
    model = _successor_model(tokenizer, CHAIN)
    folder = save_checkpoint(tmp_path / "chain", model, config=config_from_model(model))
    out = _cli("chat", "--checkpoint", str(folder), "--max-new-tokens", "8",
               env=cli_env, stdin="Name a color.\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "model> Blue.\n" in out.stdout
    assert "#" not in out.stdout and "Instruction" not in out.stdout


def test_chat_session_ends_on_ctrl_c_at_the_prompt(tiny_model, tokenizer, capsys):
    lines = iter(["Name a color."])

    def read(prompt):
        print(prompt, end="")
        line = next(lines, None)
        if line is None:
            raise KeyboardInterrupt
        return line

    chat_session(tiny_model, tokenizer, 3, read=read)
    out = capsys.readouterr().out
    assert out.count("model> ") == 1 and out.endswith("you> \n")


def _responses_file(folder):
    return save_responses(folder / "answers.json", ANSWERED)


def test_cli_evaluate_when_the_judge_stops_or_gives_no_score(tmp_path, fake_ollama, capsys):
    from ch07_instruction.__main__ import main

    evaluate = ["evaluate", "--responses", str(_responses_file(tmp_path)), "--out", str(tmp_path / "s.json")]  # fmt: skip
    assert main([*evaluate, "--no-judge"]) == 0
    assert "LLM judge skipped (--no-judge)" in capsys.readouterr().out
    assert fake_ollama.requests == []  # --no-judge asks no server
    fake_ollama.mode = "model-missing"  # listed by /api/tags, but every grading request fails
    assert main([*evaluate, "--ollama-url", fake_ollama.url]) == 0
    out = capsys.readouterr().out
    assert "LLM judge stopped:" in out and "ollama pull llama3" in out
    assert "judge_scores" not in json.loads((tmp_path / "s.json").read_text())
    fake_ollama.mode = "no-number"
    assert main([*evaluate, "--ollama-url", fake_ollama.url]) == 0
    out = capsys.readouterr().out
    assert "mean score n/a over 0 of 2 answers" in out and "no score for record 0" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["judge_scores"] == [None, None] and scores["judge_mean"] is None


def test_cli_answers_user_errors_in_one_line(tmp_path, tiny_checkpoint):
    from ch07_instruction.__main__ import main

    (tmp_path / "none.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SystemExit, match="error: .*none.json holds no answers"):
        main(["evaluate", "--responses", str(tmp_path / "none.json"), "--no-judge"])
    tune = ["finetune", "--out", str(tmp_path / "ckpt"), "--batch-size", "4"]
    with pytest.raises(SystemExit, match="error: 2 training examples cannot fill one batch of 4"):
        main([*tune, "--train-subset", "2", "--val-subset", "2"])
    with pytest.raises(SystemExit, match="error: the validation set is empty"):
        main([*tune, "--train-subset", "8", "--val-subset", "0"])
    assert not (tmp_path / "ckpt").exists()


# --- fault tests: empty input, output paths, damaged checkpoints, the judge's address -----------
# Before these fixes the command line answered nothing and saved "[]", refused a folder of
# earlier runs only after training (and then its own checkpoint, because of finetune.json), wrote
# a folder given as --out only after all the work, and the judge followed redirects anywhere.

REPO_ROOT = Path(__file__).resolve().parent.parent


def _records(n):
    return [
        {"instruction": f"Name color {i}.", "input": "", "output": f"Color {i}."} for i in range(n)
    ]


@pytest.mark.parametrize("records", [0, 5])  # 5 records leave no test set: 10% of 5 rounds to 0
def test_cli_respond_refuses_to_answer_nothing(tmp_path, tiny_checkpoint, records):
    from ch07_instruction.__main__ import main

    data = write_json_atomically(tmp_path / "data.json", _records(records))
    out = tmp_path / "answers.json"
    expected = rf"error: no test instructions to answer: .*data\.json holds {records} records"
    with pytest.raises(SystemExit, match=expected):
        main(
            [
                "respond",
                "--checkpoint",
                str(tiny_checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
            ]
        )
    assert not out.exists()


@pytest.mark.parametrize("limit", ["0", "-1"])  # before: 0 saved "[]", -1 silently dropped one
def test_cli_respond_limit_must_be_positive(tmp_path, tiny_checkpoint, capsys, limit):
    from ch07_instruction.__main__ import main

    out = tmp_path / "answers.json"
    with pytest.raises(SystemExit) as exited:
        main(["respond", "--checkpoint", str(tiny_checkpoint), "--limit", limit, "--out", str(out)])
    assert exited.value.code == 2
    assert f"--limit: must be a positive number, got {limit}" in capsys.readouterr().err
    assert not out.exists()


def test_cli_json_out_that_is_a_folder_is_refused_before_any_work(tmp_path, tiny_checkpoint, monkeypatch):  # fmt: skip
    from ch07_instruction import instruction
    from ch07_instruction.__main__ import main

    folder = tmp_path / "runs"
    (folder / "earlier").mkdir(parents=True)

    def answer(*args, **kwargs):
        raise AssertionError("answered the test set although --out is a folder")

    monkeypatch.setattr(instruction, "generate_responses", answer)
    expected = r"error: .*runs is a folder; --out names a JSON file"
    with pytest.raises(SystemExit, match=expected):
        main(
            ["respond", "--checkpoint", str(tiny_checkpoint), "--limit", "1", "--out", str(folder)]
        )
    responses = save_responses(tmp_path / "answers.json", ANSWERED)
    with pytest.raises(SystemExit, match=expected):
        main(["evaluate", "--responses", str(responses), "--no-judge", "--out", str(folder)])
    assert [p.name for p in folder.iterdir()] == ["earlier"]


@pytest.mark.parametrize("kind", ["folder of earlier runs", "file"])
def test_cli_finetune_refuses_a_foreign_out_before_reading_data(tmp_path, kind):
    from ch07_instruction.__main__ import main

    out = tmp_path / "runs"
    if kind == "file":
        out.write_text("mine", encoding="utf-8")
    else:
        (out / "first").mkdir(parents=True)
        (out / "first" / "notes.txt").write_text("mine", encoding="utf-8")
    # --data names no file: the refusal must come before the data (or GPT-2) is read
    with pytest.raises(SystemExit) as exited:
        main(["finetune", "--out", str(out), "--data", str(tmp_path / "missing.json")])
    message = str(exited.value.code)
    assert message.startswith(f"error: {out} ") and "missing.json" not in message
    kept = out if kind == "file" else out / "first" / "notes.txt"
    assert kept.read_text(encoding="utf-8") == "mine"


def test_cli_respond_uses_the_split_seed_saved_with_the_checkpoint(tmp_path, tiny_model):
    from ch07_instruction.__main__ import main

    folder = save_checkpoint(tmp_path / "ckpt", tiny_model, config=config_from_model(tiny_model),
                             extra={"split_seed": 7})  # fmt: skip
    out = tmp_path / "answers.json"
    args = ["respond", "--checkpoint", str(folder), "--limit", "1", "--max-new-tokens", "1"]
    assert main([*args, "--out", str(out)]) == 0
    _, _, test = split_instruction_data(load_instruction_data(fetch("instruction-data")), seed=7)
    assert [entry["instruction"] for entry in load_responses(out)] == [test[0]["instruction"]]


@pytest.mark.parametrize("seed", ["7", 1.5, True, None])
def test_cli_respond_refuses_a_damaged_split_seed(tmp_path, tiny_model, seed):
    from ch07_instruction.__main__ import main

    folder = save_checkpoint(tmp_path / "ckpt", tiny_model, config=config_from_model(tiny_model),
                             extra={"split_seed": seed})  # fmt: skip
    out = tmp_path / "answers.json"
    with pytest.raises(SystemExit, match=r"records the split seed .*not a whole number; pass --split-seed"):  # fmt: skip
        main(["respond", "--checkpoint", str(folder), "--limit", "1", "--out", str(out)])
    assert not out.exists()
    # --split-seed overrides the damaged record
    main(["respond", "--checkpoint", str(folder), "--limit", "1", "--max-new-tokens", "1",
          "--split-seed", "7", "--out", str(out)])  # fmt: skip
    assert len(load_responses(out)) == 1


def _rewrite_json(path, change):
    meta = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(meta)), encoding="utf-8")


def _truncate(path, size):
    data = path.read_bytes()
    path.write_bytes(data[:size] if size >= 0 else data[: len(data) // 2])


DAMAGED_CHECKPOINTS = {  # what is wrong -> how to do it to a copy of a good checkpoint
    "truncated weights": lambda folder: _truncate(folder / "model.safetensors", -1),
    "weights cut inside the header": lambda folder: _truncate(folder / "model.safetensors", 20),
    "empty weights": lambda folder: _truncate(folder / "model.safetensors", 0),
    "cut-off checkpoint.json": lambda folder: _truncate(folder / "checkpoint.json", -1),
    "checkpoint.json not an object": lambda folder: _rewrite_json(
        folder / "checkpoint.json", lambda meta: [meta]
    ),
    "config not an object": lambda folder: _rewrite_json(
        folder / "checkpoint.json", lambda meta: {**meta, "config": "124M"}
    ),
}


@pytest.mark.parametrize("damage", DAMAGED_CHECKPOINTS)
def test_cli_respond_on_a_damaged_checkpoint_is_one_error_line(tmp_path, tiny_checkpoint, cli_env, damage):  # fmt: skip
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoint, folder)
    DAMAGED_CHECKPOINTS[damage](folder)
    out = tmp_path / "answers.json"
    done = run_module("ch07_instruction", "respond", "--checkpoint", str(folder), "--limit", "1",
                      "--out", str(out), env=cli_env, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(folder) in line  # it names what is damaged
    assert not out.exists()


def test_cli_evaluate_refuses_a_judge_address_that_is_not_http(tmp_path, fake_ollama):
    from ch07_instruction.__main__ import main

    responses = save_responses(tmp_path / "answers.json", ANSWERED)
    with pytest.raises(
        SystemExit, match=r"error: 'file:///etc/passwd' is not an http:// or https://"
    ):
        main(["evaluate", "--responses", str(responses), "--ollama-url", "file:///etc/passwd"])


def test_cli_evaluate_takes_no_grade_through_a_redirect(tmp_path, fake_ollama, capsys):
    from ch07_instruction.__main__ import main

    responses = save_responses(tmp_path / "answers.json", ANSWERED)
    scores = tmp_path / "scores.json"
    with running_redirect(fake_ollama.url) as redirect:  # fake_ollama would grade every answer 87
        evaluate = ["evaluate", "--responses", str(responses), "--out", str(scores)]
        assert main([*evaluate, "--ollama-url", redirect.url]) == 0
    out = capsys.readouterr().out
    assert "LLM judge skipped" in out and "redirect" in out and "mean score" not in out
    assert "judge_scores" not in json.loads(scores.read_text()) and fake_ollama.requests == []


def test_readme_names_the_commands_that_exist():
    from ch07_instruction.__main__ import COMMANDS

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for command in re.findall(r"python -m ch07_instruction (\S+)", readme):
        assert command in COMMANDS or command.startswith("--"), command
    (listing,) = [
        line for line in readme.splitlines() if "python -m ch07_instruction --help" in line
    ]
    named = set(re.findall(r"[a-z]+", listing.split("#", 1)[1]))
    assert set(COMMANDS) <= named and "answer" not in named
    assert "jupyter lab --allow-root" in readme  # JupyterLab refuses to start as root without it
