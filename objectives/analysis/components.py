"""The components of an encoder that can be switched off one at a time: attention heads and feed-forward blocks.

Transformers 5 no longer takes a ``head_mask``, so a head is gated where its output enters the
attention's output projection (the per-head context vectors, the same place structured pruning's
gradient gates sit), and a feed-forward block by multiplying its output projection's output by
zero (the residual connection and layer norm then see the layer's input alone).

The gates are per *row* of a batch: one forward pass of a batch repeated ``m`` times, each copy
with a different component switched off, ablates ``m`` components at once (:func:`ablated_predictions`).

Example:
    >>> comps = components(model)  # doctest: +SKIP
    >>> comps[0].name, comps[-1].name  # doctest: +SKIP
    ('layer 0 head 0', 'layer 1 ffn')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.first_token import first_token_only
from fairfront.objectives.training.loop import iterate_batches, make_batch
from fairfront.spaces.structured import encoder_layers, num_heads

__all__ = ["Component", "components", "component_sets", "ablated_predictions", "gated"]


@dataclass(frozen=True)
class Component:
    """One attention head (``head`` is its index) or one layer's feed-forward block (``head`` is None)."""

    layer: int
    head: int | None = None

    @property
    def kind(self) -> str:
        return "ffn" if self.head is None else "head"

    @property
    def name(self) -> str:
        return f"layer {self.layer} ffn" if self.head is None else f"layer {self.layer} head {self.head}"


def components(model: nn.Module) -> list[Component]:
    """Every head of every layer, then every layer's feed-forward block."""
    layers = encoder_layers(model)
    heads = [Component(i, h) for i, layer in enumerate(layers) for h in range(num_heads(model, layer))]
    return heads + [Component(i) for i in range(len(layers))]


def component_sets(model: nn.Module) -> list[tuple[str, list[Component]]]:
    """The sets ablated in one batched pass each: each layer's heads, then all feed-forward blocks."""
    comps = components(model)
    sets = [(f"layer {i} heads", [c for c in comps if c.layer == i and c.head is not None])
            for i in range(len(encoder_layers(model)))]
    return [s for s in sets if s[1]] + [("feed-forward blocks", [c for c in comps if c.head is None])]


@contextmanager
def gated(model: nn.Module, head_gates: Sequence[torch.Tensor | None],
          ffn_gates: Sequence[torch.Tensor | None]) -> Iterator[None]:
    """Multiply each layer's per-head context by ``head_gates[i]`` (``[rows, heads]``) and its feed-forward
    output by ``ffn_gates[i]`` (``[rows]``) while the block runs; None leaves that layer alone."""

    def head_hook(gate: torch.Tensor) -> Callable[..., tuple[Any, ...]]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            context = args[0]
            shape = context.shape
            split = context.reshape(shape[0], -1, gate.shape[1], shape[-1] // gate.shape[1])
            return ((split * gate[:, None, :, None].to(context.dtype)).reshape(shape), *args[1:])
        return hook

    def ffn_hook(gate: torch.Tensor) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            return output * gate.reshape(-1, *([1] * (output.dim() - 1))).to(output.dtype)
        return hook

    handles = []
    for layer, hg, fg in zip(encoder_layers(model), head_gates, ffn_gates):
        if hg is not None:
            handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(hg)))
        if fg is not None:
            handles.append(layer.output.dense.register_forward_hook(ffn_hook(fg)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _gates(model: nn.Module, ablate: Sequence[Component], rows: int,
           device: torch.device) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Gates for ``len(ablate)`` copies of a ``rows``-example batch, copy ``r`` without ``ablate[r]``."""
    layers = encoder_layers(model)
    heads: list[torch.Tensor | None] = [None] * len(layers)
    ffns: list[torch.Tensor | None] = [None] * len(layers)
    total = rows * len(ablate)
    for r, comp in enumerate(ablate):
        if comp.head is None:
            gate = ffns[comp.layer]
            if gate is None:
                gate = ffns[comp.layer] = torch.ones(total, device=device)
            gate[r * rows:(r + 1) * rows] = 0.0
        else:
            gate = heads[comp.layer]
            if gate is None:
                gate = heads[comp.layer] = torch.ones(total, num_heads(model, layers[comp.layer]), device=device)
            gate[r * rows:(r + 1) * rows, comp.head] = 0.0
    return heads, ffns


@torch.no_grad()
def ablated_predictions(model: nn.Module, split: EncodedSplit, ablate: Sequence[Component], *, pad_id: int,
                        batch_size: int = 64, device: torch.device | None = None) -> np.ndarray:
    """Predicted class ids ``[len(ablate), n_examples]``: row ``r`` with ``ablate[r]`` switched off.

    An empty ``ablate`` gives the unablated model's predictions as one row. Each batch of examples
    is repeated once per component and run in one forward pass (the examples per pass shrink so that
    a pass holds about ``batch_size`` rows times the number of components, never fewer than one example).
    """
    device = device or next(model.parameters()).device
    model.to(device).eval()
    copies = max(1, len(ablate))
    out = np.zeros((copies, len(split)), dtype=np.int64)
    with first_token_only(model):  # as the trial predicts: the last layer at the first position only
        for index in iterate_batches(split, max(1, batch_size // copies), rng=None):
            batch = make_batch(split, index, pad_id=pad_id, device=device)
            ids = batch["input_ids"].repeat(copies, 1)
            mask = batch["attention_mask"].repeat(copies, 1)
            heads, ffns = _gates(model, ablate, len(index), device) if ablate else ([], [])
            with gated(model, heads, ffns):
                logits = model(input_ids=ids, attention_mask=mask).logits
            out[:, index] = logits.argmax(dim=-1).reshape(copies, len(index)).cpu().numpy()
    return out
