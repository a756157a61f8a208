"""Tensors derived from parameters, cached until a parameter changes.

Chapter 5's fast decoder multiplies with tensors made from a model's weights: a transposed,
contiguous copy of a ``Linear`` weight (or a row-major one, for a weight stored transposed),
or the query, key and value weights joined into one
matrix. Making them costs a full pass over the weights, so they are made once and reused;
they must never go stale, though, or a model that trained on would decode with old weights.
This module keeps that bookkeeping out of the chapter:

- ``derived_tensor(what, sources, make)`` returns ``make()``, computed once and reused until
  one of the ``sources`` changes. A source has changed when it was modified in place (an
  optimizer step, ``load_state_dict``, ``param.mul_``: PyTorch counts such writes in
  ``tensor._version``) or when its data now lives elsewhere (``param.data = ...``,
  ``model.to(...)``). The cached tensor is dropped when a source is garbage-collected, and
  the cache holds no reference to the sources, so it never keeps a model alive.
- ``transposed_weight``, ``row_major_weight``, ``fused_weight_copy``,
  ``fused_row_major_copy``, ``fused_weight_view`` and ``fused_bias`` are the tensors the
  decoder derives, built on it.
- ``side_by_side`` finds the one matrix that several tensors already form in memory.

Derived tensors are detached: no gradient flows through them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "derived_tensor",
    "fused_bias",
    "fused_row_major_copy",
    "fused_weight_copy",
    "fused_weight_view",
    "row_major_weight",
    "side_by_side",
    "transposed_weight",
]

# (what, ids of the source tensors) -> (the sources' (version, data pointer), derived tensor)
_CACHE: dict[tuple, tuple] = {}


def derived_tensor(
    what: str, sources: Sequence[torch.Tensor], make: Callable[[], torch.Tensor | None]
) -> torch.Tensor | None:
    """``make()``, computed once from ``sources`` and reused until one of them changes.

    ``what`` names the derivation, so that two different tensors derived from the same
    sources are cached apart. ``make`` must not hold on to the sources (use ``.detach()``),
    or they would never be freed. A ``None`` result is cached like any other.
    """
    key = (what, *map(id, sources))
    stamp = tuple((source._version, source.data_ptr()) for source in sources)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    value = make()
    if cached is None:  # first time for these sources: forget the value when one is freed
        for source in sources:
            weakref.finalize(source, _CACHE.pop, key, None)
    _CACHE[key] = (stamp, value)
    return value


def transposed_weight(weight: torch.Tensor) -> torch.Tensor:
    """A contiguous ``(in, out)`` copy of a Linear weight, made once and remade if it changes."""
    return derived_tensor("transposed", (weight,), lambda: weight.detach().T.contiguous())


def row_major_weight(weight: torch.Tensor) -> torch.Tensor:
    """A contiguous ``(out, in)`` copy of a Linear weight, made once and remade if it changes.

    For a weight stored in another order, such as ``load_gpt2``'s transposed views of the
    GPT-2 file: some CPU kernels (bfloat16 without native bf16 instructions) multiply with
    those many times slower than with the row-major ``nn.Linear`` layout.
    """
    return derived_tensor("row-major", (weight,), lambda: weight.detach().contiguous())


def side_by_side(parts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The contiguous matrix that the (in, out_i) ``parts`` already form in memory, or None.

    True when the parts are adjacent column blocks, in order, of one row-major
    (in, sum of out_i) tensor, as GPT-2's query, key and value weights are once chapter 5's
    ``load_gpt2`` has mapped the file's ``c_attn``. The answer is a view: nothing is copied.
    """
    first, offset = parts[0], parts[0].storage_offset()
    for part in parts:
        if (
            part.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
            or part.stride() != first.stride()
            or part.shape[0] != first.shape[0]
            or part.storage_offset() != offset
        ):
            return None
        offset += part.shape[1] * part.stride(1)
    width = sum(part.shape[1] for part in parts)
    whole = first.as_strided((first.shape[0], width), first.stride(), first.storage_offset())
    return whole if whole.is_contiguous() else None


def fused_weight_copy(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """One contiguous (in, sum of out_i) copy of Linear weights (out_i, in), columns in order.

    ``x @ fused_weight_copy((w_q, w_k, w_v))`` computes the three products ``x @ w.T`` in one.
    """
    return derived_tensor(
        "fused copy", weights, lambda: torch.cat([w.detach().T for w in weights], 1)
    )


def fused_row_major_copy(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """One contiguous (sum of out_i, in) copy of Linear weights (out_i, in), rows in order.

    Its transpose (a view) is ``fused_weight_copy``'s matrix in the row-major layout:
    ``x @ fused_row_major_copy((w_q, w_k, w_v)).T`` computes the three products in one.
    """
    return derived_tensor(
        "fused row-major copy", weights, lambda: torch.cat([w.detach() for w in weights], 0)
    )


def fused_weight_view(weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """``fused_weight_copy``'s matrix as a view of the weights' memory, or None.

    None unless the weights' transposes already lie side by side in memory (see
    ``side_by_side``); nothing is copied.
    """
    return derived_tensor(
        "fused view", weights, lambda: side_by_side([w.detach().T for w in weights])
    )


def fused_bias(biases: Sequence[torch.Tensor]) -> torch.Tensor:
    """The biases of the layers that ``fused_weight_copy`` joins, end to end (sum of out_i,)."""
    return derived_tensor("fused bias", biases, lambda: torch.cat([b.detach() for b in biases]))
