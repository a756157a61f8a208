"""DPO bonus (ch07_instruction/dpo.ipynb): log-probabilities, the loss, batches, training."""

import copy
import json
import math

import pytest
import tiktoken
import torch
from helpers import tiny_gpt_config

from ch04_gpt_model.gpt_model import GPTModel
from ch07_instruction.dpo import (
    PreferenceDataset,
    create_preference_dataloader,
    dpo_loss,
    dpo_loss_batch,
    evaluate_dpo,
    frozen_reference,
    load_preference_data,
    preference_collate_fn,
    response_log_probs,
    train_dpo,
    validate_preference_data,
)
from ch07_instruction.instruction import InstructionDataError
from shared.io import JSONFileError

RECORDS = [
    {"instruction": "Name a color.", "input": "", "chosen": "Blue.", "rejected": "Ugh, blue."},
    {"instruction": "Add.", "input": "2 and 3", "chosen": "5.", "rejected": "Obviously 5."},
    {"instruction": "Greet.", "input": "", "chosen": "Hello!", "rejected": "What now?"},
    {"instruction": "Say yes.", "input": "", "chosen": "Yes.", "rejected": "Fine, yes."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiktoken.get_encoding("gpt2")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPTModel(tiny_gpt_config(context_length=64)).eval()


def test_response_log_probs_matches_a_hand_computation():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.0, 2.0], [1.0, 1.0, 1.0]]])
    targets = torch.tensor([[-100, 2, 0]])
    by_hand = (2.0 - math.log(math.exp(0.5) + 1 + math.exp(2.0))) + math.log(1 / 3)
    assert response_log_probs(logits, targets).item() == pytest.approx(by_hand, abs=1e-6)


def test_only_unmasked_targets_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.tensor([[-100, -100, 3, 1, -100], [-100, 4, -100, -100, -100]])
    changed = logits.clone()
    changed[0, :2] += 100.0  # positions whose targets are masked
    changed[1, 2:] -= 50.0
    assert torch.allclose(response_log_probs(logits, targets), response_log_probs(changed, targets))
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = log_probs[0, 2, 3] + log_probs[0, 3, 1]
    assert response_log_probs(logits, targets)[0].item() == pytest.approx(expected.item())


def test_dpo_loss_matches_the_hand_example():
    loss, chosen, rejected = dpo_loss(
        torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-3.5]), torch.tensor([-4.5]), 0.1
    )
    assert (chosen - rejected).item() == pytest.approx(0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-6)


def test_loss_is_log_2_when_the_policy_is_the_reference(tokenizer):
    model = tiny_model()
    loader = create_preference_dataloader(RECORDS, tokenizer, batch_size=2)
    stats = evaluate_dpo(model, frozen_reference(model), loader)
    assert stats["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-6)


def test_collate_shapes_and_masking(tokenizer):
    dataset = PreferenceDataset(RECORDS, tokenizer)
    batch = preference_collate_fn([dataset[0], dataset[1]])
    assert set(batch) == {"chosen_inputs", "chosen_targets", "rejected_inputs", "rejected_targets"}
    for side in ("chosen", "rejected"):
        assert batch[f"{side}_inputs"].shape == batch[f"{side}_targets"].shape
        assert batch[f"{side}_inputs"].shape[0] == 2
    (ids, prompt_length), _ = dataset[0]
    scored = batch["chosen_targets"][0][batch["chosen_targets"][0] != -100].tolist()
    assert scored == ids[prompt_length:] + [50256]  # the response and its end-of-text token
    assert tokenizer.decode(scored[:-1]) == "Blue."


def test_bad_records_give_clear_errors(tokenizer):
    broken = RECORDS[:1] + [{"instruction": "Hi", "input": "", "rejected": "No."}]
    with pytest.raises(InstructionDataError, match="record 1 has no text under 'chosen'"):
        validate_preference_data(broken)
    with pytest.raises(InstructionDataError, match="record 1"):
        PreferenceDataset(broken, tokenizer)
    with pytest.raises(InstructionDataError, match="JSON list"):
        validate_preference_data({"instruction": "Hi"})
    with pytest.raises(ValueError, match="not a .chosen, rejected. pair"):
        preference_collate_fn([[1, 2, 3]])


def test_preference_file_errors_name_the_file(tmp_path):
    good = tmp_path / "pairs.json"
    good.write_text(json.dumps(RECORDS), encoding="utf-8")
    assert load_preference_data(good) == RECORDS
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(RECORDS)[:-5], encoding="utf-8")
    with pytest.raises(JSONFileError, match="damaged.json is not valid JSON"):
        load_preference_data(damaged)
    with pytest.raises(JSONFileError, match="missing.json is missing"):
        load_preference_data(tmp_path / "missing.json")


def test_without_reference_the_reference_terms_are_zero(tokenizer):
    model = tiny_model()
    batch = next(iter(create_preference_dataloader(RECORDS, tokenizer, batch_size=4)))
    stats = dpo_loss_batch(model, None, batch, beta=0.1)
    gap = stats["chosen_log_prob"] - stats["rejected_log_prob"]
    assert stats["reward_margin"] == pytest.approx(0.1 * gap, rel=1e-5)


@pytest.mark.slow
def test_training_raises_the_margin_and_leaves_the_reference_frozen(tokenizer):
    policy = tiny_model()
    reference = frozen_reference(policy)
    before = copy.deepcopy(reference.state_dict())
    loader = create_preference_dataloader(RECORDS, tokenizer, batch_size=4)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    history = train_dpo(
        policy, reference, loader, loader, optimizer, num_epochs=6, eval_freq=3, verbose=False
    )
    assert history["val"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert history["val"][-1]["reward_margin"] > history["val"][0]["reward_margin"] + 0.01
    assert history["val"][-1]["loss"] < math.log(2)
    assert all(not p.requires_grad for p in reference.parameters())
    assert not reference.training
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, before[name]), name
