import pytest

from shared.resources import fetch


@pytest.fixture(scope="session")
def verdict_text() -> str:
    return fetch("the-verdict").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_tied_gpt():
    """A factory: ``tiny_tied_gpt(cfg, seed)`` builds a seeded ``GPTModel(cfg)`` in eval mode
    whose output head is the token embedding, tied as GPT-2's is.

    Each test file keeps its own config and seed (``model = tiny_tied_gpt(CFG, seed=3)``).
    """
    import torch

    from ch04_gpt_model.gpt_model import GPTModel

    def build(cfg: dict, seed: int) -> GPTModel:
        torch.manual_seed(seed)
        model = GPTModel(cfg).eval()
        model.out_head.weight = model.tok_emb.weight
        return model

    return build
