"""shared.derived: tensors derived from parameters, cached until a parameter changes."""

import gc
import weakref

import pytest
import torch

from shared.derived import (
    derived_tensor,
    fused_bias,
    fused_row_major_copy,
    fused_weight_copy,
    fused_weight_view,
    row_major_weight,
    side_by_side,
    transposed_weight,
)


def _counting(make):
    """``make`` wrapped so that the test can see how often it ran."""
    calls = []

    def counted():
        calls.append(1)
        return make()

    return counted, calls


def test_a_derived_tensor_is_made_once_while_its_sources_are_unchanged():
    source = torch.randn(3, 4)
    make, calls = _counting(lambda: source.sum(0))
    first = derived_tensor("column sums", (source,), make)
    again = derived_tensor("column sums", (source,), make)
    assert again is first and len(calls) == 1


def test_an_in_place_change_of_a_source_remakes_the_derived_tensor():
    weight = torch.nn.Parameter(torch.randn(5, 3))
    before = transposed_weight(weight)
    with torch.no_grad():
        weight.mul_(2.0)  # an in-place write, as an optimizer step or load_state_dict makes
    after = transposed_weight(weight)
    assert after is not before
    assert torch.equal(after, weight.detach().T)
    assert torch.equal(before * 2.0, after)  # the old copy was not changed under its holder


def test_an_optimizer_step_remakes_the_transposed_copy():
    layer = torch.nn.Linear(4, 6)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    stale = transposed_weight(layer.weight).clone()
    layer(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    fresh = transposed_weight(layer.weight)
    assert not torch.equal(fresh, stale)
    assert torch.equal(fresh, layer.weight.detach().T)


def test_new_data_for_a_source_remakes_the_derived_tensor():
    weight = torch.nn.Parameter(torch.randn(5, 3))
    before = transposed_weight(weight)
    replacement = torch.randn(5, 3)
    weight.data = replacement  # no in-place write: the data now lives elsewhere
    assert torch.equal(transposed_weight(weight), replacement.T)
    assert not torch.equal(before, replacement.T)


def test_a_change_of_any_one_source_remakes_a_tensor_derived_from_several():
    weights = tuple(torch.randn(2, 3) for _ in range(3))
    first = fused_weight_copy(weights)
    assert fused_weight_copy(weights) is first
    weights[2].add_(1.0)
    remade = fused_weight_copy(weights)
    assert remade is not first
    assert torch.equal(remade, torch.cat([w.T for w in weights], dim=1))


def test_row_major_copies_undo_a_transposed_storage_and_follow_changes():
    stored = torch.randn(3, 5)  # (in, out) in memory, as load_gpt2's views of the GPT-2 file
    weight = torch.nn.Parameter(stored.T)  # (out, in), not contiguous
    rows = row_major_weight(weight)
    assert rows.is_contiguous() and torch.equal(rows, weight.detach())
    assert row_major_weight(weight) is rows  # made once
    parts = tuple(torch.randn(4, 2).T for _ in range(3))  # three (2, 4) views, q/k/v-like
    fused = fused_row_major_copy(parts)
    assert fused.shape == (6, 4) and fused.is_contiguous()
    assert torch.equal(fused.T, fused_weight_copy(parts))  # the same matrix, the other order
    with torch.no_grad():
        weight.mul_(-1.0)
    assert torch.equal(row_major_weight(weight), -rows)


def test_derivations_of_the_same_sources_are_kept_apart():
    source = torch.randn(3, 4)
    sums = derived_tensor("sums", (source,), lambda: source.sum(0))
    maxima = derived_tensor("maxima", (source,), lambda: source.amax(0))
    assert torch.equal(derived_tensor("sums", (source,), lambda: None), sums)
    assert torch.equal(derived_tensor("maxima", (source,), lambda: None), maxima)


def test_the_derived_tensor_is_freed_with_its_source():
    weight = torch.nn.Parameter(torch.randn(64, 32))
    copy = weakref.ref(transposed_weight(weight))
    gc.collect()
    assert copy() is not None  # the cache keeps it while the weight lives
    del weight
    gc.collect()
    assert copy() is None


def test_the_cache_does_not_keep_its_sources_alive():
    weights = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    fused_weight_copy(weights)
    fused_weight_view(weights)
    fused_bias(weights)
    transposed_weight(weights[0])
    alive = [weakref.ref(w) for w in weights]
    del weights
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_derived_tensors_carry_no_gradient():
    weight = torch.nn.Parameter(torch.randn(5, 3))
    copy = transposed_weight(weight)
    assert copy.shape == (3, 5) and copy.is_contiguous()
    assert not copy.requires_grad and copy.grad_fn is None


def test_side_by_side_finds_the_matrix_the_parts_form():
    joint = torch.randn(6, 12)
    parts = list(joint.split(4, dim=1))  # three (6, 4) column blocks of one row-major matrix
    whole = side_by_side(parts)
    assert torch.equal(whole, joint) and whole.data_ptr() == joint.data_ptr()  # a view
    assert side_by_side([parts[1], parts[0], parts[2]]) is None  # adjacent, wrong order
    assert side_by_side(parts[:2]) is None  # not a whole row-major matrix
    assert side_by_side([parts[0], torch.randn(6, 4), parts[2]]) is None  # other memory
    assert side_by_side(list(torch.randn(12, 6).T.split(4, dim=1))) is None  # column-major


def test_fused_weight_view_uses_weights_that_lie_side_by_side_and_copies_nothing():
    joint = torch.randn(6, 12)  # (in, 3 * out): how GPT-2's c_attn stores q, k and v
    weights = [part.T for part in joint.split(4, dim=1)]  # (out, in) views, as load_gpt2 makes
    view = fused_weight_view(weights)
    assert view.data_ptr() == joint.data_ptr()
    assert torch.equal(view, fused_weight_copy(weights))
    separate = [torch.randn(4, 6) for _ in range(3)]
    assert fused_weight_view(separate) is None  # no copy is made for separate weights


def test_a_cached_none_is_reconsidered_when_the_sources_move():
    layers = [torch.nn.Linear(6, 4) for _ in range(3)]
    weights = [layer.weight for layer in layers]
    assert fused_weight_view(weights) is None
    joint = torch.randn(6, 12)
    for weight, part in zip(weights, joint.split(4, dim=1), strict=True):
        weight.data = part.T  # now they lie side by side
    assert fused_weight_view(weights).data_ptr() == joint.data_ptr()


def test_fused_bias_joins_the_biases_and_follows_them():
    biases = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
    assert torch.equal(fused_bias(biases), torch.cat([b.detach() for b in biases]))
    with torch.no_grad():
        biases[1].zero_()
    assert torch.equal(fused_bias(biases)[4:8], torch.zeros(4))


def test_a_failing_derivation_caches_nothing():
    source = torch.randn(2)

    def broken():
        raise RuntimeError("cannot derive")

    with pytest.raises(RuntimeError, match="cannot derive"):
        derived_tensor("broken", (source,), broken)
    assert torch.equal(derived_tensor("broken", (source,), lambda: source * 2), source * 2)
