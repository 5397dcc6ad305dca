"""Structured pruning: physically removing attention heads and feed-forward neurons.

Unstructured magnitude masks (:mod:`fairfront.spaces.pruning`) make a model sparse but not faster
on ordinary hardware. Removing whole attention heads and whole feed-forward neurons instead
*slices* the weight matrices: every ``nn.Linear`` that touches a removed structure is replaced by
a smaller one, so the parameter count, the stored size and the latency all drop for real.

What is scored, and how:

- **Heads** (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"): every head ``h``
  of every layer gets a gate ``xi_h`` that multiplies its context vector; the importance is
  ``|dL/dxi_h|`` at ``xi = 1``, summed over batches, then L2-normalised within each layer so
  that layers of different gradient scale can be ranked together.
- **Feed-forward neurons** (first-order Taylor, Molchanov et al., 2017): a gate on each
  intermediate activation; ``|dL/dgate_j| = |sum over tokens of a_j * dL/da_j|``, i.e.
  gradient x activation, summed over batches and normalised per layer in the same way.
- ``"magnitude"``: the L2 norm of all weights that belong to the structure (the query, key and
  value rows of a head plus its columns of the output projection; a neuron's input row plus
  its output column). Needs no data.
- **Fairness-aware** (``fairness_mix = m > 0``, with a differentiable group-gap function ``P``,
  e.g. the equal-opportunity penalty): the same gates also give ``|dP/dxi|``, how much each
  head or neuron moves the gap between groups; after per-layer normalisation the score is
  ``(1 - m) * plain + m * fair``, so structures the gap depends on are kept. ``m = 0`` is the
  plain score.

transformers 5.x no longer accepts a ``head_mask`` argument, so the gates are applied with
forward pre-hooks: one on ``attention.output.dense`` (whose input is the concatenated per-head
context, so head ``h`` is the slice ``[h*d, (h+1)*d)``) and one on ``output.dense`` (whose input
is the intermediate activation). The hooks are removed before the functions return, and only the
gates receive gradients (``torch.autograd.grad``), so the model's ``.grad`` fields are untouched.

Every layer always keeps at least one head and one feed-forward neuron: a layer with zero heads
would need a different module (the attention reshape cannot infer a head count from zero
features). Requests that would empty a layer raise ``ValueError``; the budget-driven
:func:`structured_prune` caps each layer at "all but one" instead.

Saving and loading: a pruned model is saved with the usual ``save_pretrained`` (safetensors).
Its config keeps the global ``num_attention_heads`` (which fixes the head size) and
``intermediate_size``, and gains one extra key, ``fairfront_layer_shapes``
(``{"num_attention_heads": [per layer], "intermediate_size": [per layer]}``). Plain
``from_pretrained`` would build full-size layers and refuse the smaller tensors;
:func:`load_pruned` builds the model from the config, slices it to the recorded shape and then
loads the weights.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=128))
    >>> summary = structured_prune(model, head_fraction=0.25, ffn_fraction=0.5,
    ...                            importance="magnitude", scope="layer")
    >>> summary["heads_remaining"], summary["intermediate_sizes"]
    ([3, 3], [64, 64])

Its ``[space.structured]`` table, config and family are :mod:`fairfront.spaces.structured_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fairfront.errors import DataError
from fairfront.spaces.fair_compression import equal_opportunity_gap
from fairfront.spaces.family import FamilyTrial, TrialContext
from fairfront.spaces.structured_family import (
    IMPORTANCE_METHODS,
    SCOPES,
    StructuredConfig,
    StructuredFamily,
    StructuredSpace,
)

__all__ = [
    "IMPORTANCE_METHODS",
    "SCOPES",
    "SHAPE_KEY",
    "StructuredConfig",
    "StructuredFamily",
    "StructuredSpace",
    "encoder_layers",
    "ffn_importance",
    "gate_gradient_scores",
    "head_importance",
    "layer_shapes",
    "load_pruned",
    "num_heads",
    "prune_ffn_neurons",
    "prune_heads",
    "structured_prune",
]

SHAPE_KEY = "fairfront_layer_shapes"

_LAYOUT = (
    "model.base_model.encoder.layer[i] with attention.self.{query,key,value}, "
    "attention.output.dense, intermediate.dense and output.dense as nn.Linear"
)


# --------------------------------------------------------------------------------------------
# Architecture access
# --------------------------------------------------------------------------------------------


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the encoder's layer list after checking it has the BERT layout.

    Every function in this module (and the student builder) works on any encoder that follows
    the BERT layout (BERT, RoBERTa, MiniLM, ELECTRA's discriminator); anything else is refused
    here with one clear line instead of failing deep inside a slicing step.

    Raises:
        ValueError: if the model does not have that layout.
    """
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"{type(model).__name__} is not a BERT-like encoder: expected {_LAYOUT}")
    for i, layer in enumerate(layers):
        try:
            linears = (
                layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                layer.attention.output.dense, layer.intermediate.dense, layer.output.dense,
            )
        except AttributeError:
            raise ValueError(f"{type(model).__name__} layer {i} is not BERT-like: expected {_LAYOUT}") from None
        if not all(isinstance(m, nn.Linear) for m in linears):
            raise ValueError(f"{type(model).__name__} layer {i} is not BERT-like (quantized?): expected {_LAYOUT}")
    return layers


def _head_size(model: nn.Module, layer: nn.Module) -> int:
    size = getattr(layer.attention.self, "attention_head_size", None)
    if size is None:
        config = model.config
        size = config.hidden_size // config.num_attention_heads
    return int(size)


def num_heads(model: nn.Module, layer: nn.Module) -> int:
    """Attention heads ``layer`` has now (fewer than the config says once heads are pruned)."""
    return layer.attention.self.query.out_features // _head_size(model, layer)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The number of attention heads and feed-forward neurons in each layer, as they are now.

    This is what the config records under :data:`SHAPE_KEY` and what a trial report shows
    for a structured-pruned model.
    """
    layers = encoder_layers(model)
    return {
        "num_attention_heads": [num_heads(model, layer) for layer in layers],
        "intermediate_size": [layer.intermediate.dense.out_features for layer in layers],
    }


def _record_shapes(model: nn.Module) -> None:
    shapes = layer_shapes(model)
    configs = {id(model.config): model.config}
    base_config = getattr(model.base_model, "config", None)
    if base_config is not None:
        configs[id(base_config)] = base_config
    for config in configs.values():
        setattr(config, SHAPE_KEY, shapes)


def _slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new, smaller ``nn.Linear`` keeping ``index`` along ``dim`` (0: outputs, 1: inputs)."""
    weight = layer.weight.detach().index_select(dim, index.to(layer.weight.device))
    bias = None
    if layer.bias is not None:
        bias = layer.bias.detach()
        if dim == 0:
            bias = bias.index_select(0, index.to(bias.device))
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(layer.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    new.train(layer.training)
    return new


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_layer_index(layer: object, n_layers: int, what: str) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"{what}: layer {layer!r} is not a layer index; allowed: 0..{n_layers - 1}")
    return layer


# --------------------------------------------------------------------------------------------
# Slicing
# --------------------------------------------------------------------------------------------


def prune_heads(model: nn.Module, heads_to_prune: Mapping[int, Sequence[int]]) -> None:
    """Remove attention heads in place by slicing the query/key/value and output projections.

    Why: a head that is removed this way costs nothing at inference time, unlike a masked one.
    Head indices refer to the heads the layer has *now* (after any earlier pruning they are
    renumbered ``0..h-1``). The attention module's ``num_attention_heads``/``all_head_size``
    and the config's :data:`SHAPE_KEY` are updated.

    Args:
        model: a BERT-like model (see :func:`encoder_layers`).
        heads_to_prune: ``{layer index: [head indices to remove]}``.

    Raises:
        ValueError: for an unknown layer or head, or a request that would leave a layer with
            no head.

    Example:
        >>> prune_heads(model, {0: [1, 3], 1: [0]})  # doctest: +SKIP
    """
    layers = encoder_layers(model)
    plans: list[tuple[int, list[int]]] = []
    for layer_idx, heads in heads_to_prune.items():
        _check_layer_index(layer_idx, len(layers), "prune_heads")
        n = num_heads(model, layers[layer_idx])
        remove = sorted({int(h) for h in heads})
        if any(not 0 <= h < n for h in remove):
            raise ValueError(f"prune_heads: layer {layer_idx} heads {remove} out of range; allowed: 0..{n - 1}")
        if len(remove) >= n:
            raise ValueError(
                f"prune_heads: removing {len(remove)} of {n} heads would empty layer {layer_idx}; "
                "keep at least one head per layer"
            )
        plans.append((layer_idx, remove))
    for layer_idx, remove in plans:
        if not remove:
            continue
        layer = layers[layer_idx]
        d = _head_size(model, layer)
        n = num_heads(model, layer)
        kept = [h for h in range(n) if h not in set(remove)]
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in kept])
        attn = layer.attention.self
        attn.query = _slice_linear(attn.query, index, 0)
        attn.key = _slice_linear(attn.key, index, 0)
        attn.value = _slice_linear(attn.value, index, 0)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, index, 1)
        attn.num_attention_heads = len(kept)
        attn.all_head_size = len(kept) * d
    _record_shapes(model)


def prune_ffn_neurons(model: nn.Module, keep: Mapping[int, torch.Tensor | Sequence[int]]) -> None:
    """Keep only the given feed-forward neurons of each listed layer (in place).

    Why: the feed-forward block holds two thirds of a BERT layer's weights; slicing
    ``intermediate.dense`` (rows) and ``output.dense`` (columns) removes them for real.
    Indices refer to the layer's current neurons; duplicates are ignored and order is kept
    ascending. Layers not listed are left alone.

    Args:
        model: a BERT-like model.
        keep: ``{layer index: indices of neurons to keep}`` (a LongTensor or a list).

    Raises:
        ValueError: for an unknown layer, an index out of range or an empty keep set.
    """
    layers = encoder_layers(model)
    plans: list[tuple[int, torch.Tensor]] = []
    for layer_idx, indices in keep.items():
        _check_layer_index(layer_idx, len(layers), "prune_ffn_neurons")
        m = layers[layer_idx].intermediate.dense.out_features
        index = torch.as_tensor(indices, dtype=torch.long).flatten().unique(sorted=True)
        if index.numel() == 0:
            raise ValueError(f"prune_ffn_neurons: layer {layer_idx} would keep no neuron; keep at least one")
        if int(index.min()) < 0 or int(index.max()) >= m:
            raise ValueError(f"prune_ffn_neurons: layer {layer_idx} index out of range; allowed: 0..{m - 1}")
        plans.append((layer_idx, index))
    for layer_idx, index in plans:
        layer = layers[layer_idx]
        if index.numel() == layer.intermediate.dense.out_features:
            continue
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, index, 0)
        layer.output.dense = _slice_linear(layer.output.dense, index, 1)
    _record_shapes(model)


# --------------------------------------------------------------------------------------------
# Importance
# --------------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"importance method {method!r} is unknown; allowed: {', '.join(IMPORTANCE_METHODS)}")


def _normalise(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    return [s / (s.norm(p=2) + 1e-20) for s in scores]


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")
"""Batch entries passed to the model; others (groups, example indices) are for ``objective``."""


def _mix(plain: list[torch.Tensor], fair: list[torch.Tensor], m: float) -> list[torch.Tensor]:
    """``(1 - m) * plain + m * fair`` per layer, both on their per-layer L2 scale."""
    return [(1.0 - m) * p / (p.norm(p=2) + 1e-20) + m * f for p, f in zip(plain, fair)]


def gate_gradient_scores(model: nn.Module, batches: Iterable[Mapping[str, Any]],
                     objective: Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor] | None = None
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Summed |gradient| of per-head and per-neuron gates over the batches (unnormalised).

    The differentiated quantity is the model's own loss, or ``objective(logits, batch)`` (e.g. a
    group-gap penalty, which needs more than the model's inputs: only ``input_ids`` and
    ``attention_mask`` go to the model then).
    """
    layers = encoder_layers(model)
    if batches is None:
        raise ValueError("gradient importance needs batches of {input_ids, attention_mask, labels}; got None")
    batches = list(batches)
    if not batches:
        raise ValueError("gradient importance needs at least one batch; got an empty list")
    device = layers[0].attention.self.query.weight.device
    dtype = layers[0].attention.self.query.weight.dtype
    head_gates = [torch.ones(num_heads(model, layer), device=device, dtype=dtype, requires_grad=True)
                  for layer in layers]
    ffn_gates = [torch.ones(layer.intermediate.dense.out_features, device=device, dtype=dtype,
                            requires_grad=True) for layer in layers]

    def head_hook(gate: torch.Tensor):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            context = args[0]
            shape = context.shape
            gated = (context.reshape(*shape[:-1], gate.numel(), -1) * gate[:, None]).reshape(shape)
            return (gated, *args[1:])
        return hook

    def ffn_hook(gate: torch.Tensor):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (args[0] * gate, *args[1:])
        return hook

    handles = []
    for layer, hg, fg in zip(layers, head_gates, ffn_gates):
        handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(hg)))
        handles.append(layer.output.dense.register_forward_pre_hook(ffn_hook(fg)))
    head_acc = [torch.zeros(g.numel(), dtype=torch.float32, device=device) for g in head_gates]
    ffn_acc = [torch.zeros(g.numel(), dtype=torch.float32, device=device) for g in ffn_gates]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if "labels" not in batch:
                raise ValueError("gradient importance needs a 'labels' entry in every batch")
            inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            with torch.enable_grad():
                if objective is None:
                    loss = model(**{k: v for k, v in inputs.items() if k in _MODEL_INPUTS}).loss
                else:
                    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                    loss = objective(logits.float(), inputs)
                grads = torch.autograd.grad(loss, [*head_gates, *ffn_gates], allow_unused=True)
            for acc, g in zip(head_acc + ffn_acc, grads):
                if g is not None:
                    acc += g.detach().abs().float()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [a.cpu() for a in head_acc], [a.cpu() for a in ffn_acc]


def _magnitude_head_scores(model: nn.Module) -> list[torch.Tensor]:
    scores = []
    for layer in encoder_layers(model):
        n, d = num_heads(model, layer), _head_size(model, layer)
        attn = layer.attention.self
        sq = sum(m.weight.detach().float().pow(2).reshape(n, d, -1).sum(dim=(1, 2))
                 for m in (attn.query, attn.key, attn.value))
        out = layer.attention.output.dense.weight.detach().float().pow(2)
        sq = sq + out.reshape(out.shape[0], n, d).sum(dim=(0, 2))
        scores.append(sq.sqrt().cpu())
    return scores


def _magnitude_ffn_scores(model: nn.Module) -> list[torch.Tensor]:
    scores = []
    for layer in encoder_layers(model):
        w_in = layer.intermediate.dense.weight.detach().float().pow(2).sum(dim=1)
        w_out = layer.output.dense.weight.detach().float().pow(2).sum(dim=0)
        scores.append((w_in + w_out).sqrt().cpu())
    return scores


def _head_scores(model: nn.Module, batches: Iterable[Mapping[str, Any]] | None, method: str,
                 normalize: bool) -> list[torch.Tensor]:
    _check_method(method)
    scores = gate_gradient_scores(model, batches)[0] if method == "gradient" else _magnitude_head_scores(model)
    return _normalise(scores) if normalize else scores


def head_importance(model: nn.Module, batches: Iterable[Mapping[str, Any]] | None = None, *,
                    method: str = "gradient", normalize: bool = True) -> torch.Tensor:
    """Score every attention head; low scores are the first to be removed.

    Why: Michel et al. showed many heads can go with little loss, and *which* heads go may
    change who the model fails on; the study ranks heads by this score
    (study key ``space.structured.importance``).

    Args:
        model: a BERT-like sequence classifier.
        batches: for ``"gradient"``, dicts of ``input_ids``, ``attention_mask``, ``labels``
            (and optionally ``token_type_ids``); a few batches suffice. Ignored for
            ``"magnitude"``.
        method: ``"gradient"`` (Michel et al.: ``|dL/dxi_h|`` of a head gate) or
            ``"magnitude"`` (L2 norm of the head's weights).
        normalize: divide each layer's scores by their L2 norm, as Michel et al. do, so that
            scores are comparable across layers.

    Returns:
        A float tensor ``[num_layers, max heads per layer]``; where layers have been pruned
        to fewer heads, the missing slots are ``nan``.

    Example:
        >>> scores = head_importance(model, method="magnitude")  # doctest: +SKIP
        >>> scores.shape  # doctest: +SKIP
        torch.Size([2, 4])
    """
    scores = _head_scores(model, batches, method, normalize)
    width = max(s.numel() for s in scores)
    out = torch.full((len(scores), width), float("nan"))
    for i, s in enumerate(scores):
        out[i, : s.numel()] = s
    return out


def ffn_importance(model: nn.Module, batches: Iterable[Mapping[str, Any]] | None = None, *,
                   method: str = "gradient", normalize: bool = True) -> list[torch.Tensor]:
    """Score every feed-forward neuron of every layer; low scores are removed first.

    Why: the feed-forward block is most of a layer's parameters, so neurons are the main lever
    on size (study key ``space.structured.ffn_fraction`` with ``space.structured.importance``).

    Args:
        model: a BERT-like sequence classifier.
        batches: as for :func:`head_importance`.
        method: ``"gradient"`` (|gradient x activation| summed over tokens and batches) or
            ``"magnitude"`` (L2 norm of the neuron's input row and output column).
        normalize: divide each layer's scores by their L2 norm.

    Returns:
        One float tensor per layer (layers may have different sizes after pruning).
    """
    _check_method(method)
    scores = gate_gradient_scores(model, batches)[1] if method == "gradient" else _magnitude_ffn_scores(model)
    return _normalise(scores) if normalize else scores


# --------------------------------------------------------------------------------------------
# Choosing what to remove
# --------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _select_lowest(scores: list[torch.Tensor], fraction: float, scope: str) -> dict[int, list[int]]:
    """Indices to remove per layer: the lowest-scoring ``fraction``, one unit always kept per layer."""
    sizes = [s.numel() for s in scores]
    removed: dict[int, list[int]] = {i: [] for i in range(len(scores))}
    if fraction <= 0.0:
        return removed
    if scope == "layer":
        for i, s in enumerate(scores):
            k = min(_round_half_up(fraction * sizes[i]), sizes[i] - 1)
            order = torch.argsort(s, stable=True)
            removed[i] = sorted(int(j) for j in order[:k])
        return removed
    total = sum(sizes)
    k = min(_round_half_up(fraction * total), total - len(sizes))
    flat = torch.cat(scores)
    owners = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    positions = torch.cat([torch.arange(n) for n in sizes])
    chosen = 0
    for j in torch.argsort(flat, stable=True).tolist():
        if chosen >= k:
            break
        layer = int(owners[j])
        if len(removed[layer]) >= sizes[layer] - 1:
            continue
        removed[layer].append(int(positions[j]))
        chosen += 1
    return {i: sorted(v) for i, v in removed.items()}


def structured_prune(model: nn.Module, *, head_fraction: float = 0.0, ffn_fraction: float = 0.0,
                     importance: str = "gradient", batches: Iterable[Mapping[str, Any]] | None = None,
                     scope: str = "global", normalize: bool = True, fairness_mix: float = 0.0,
                     gap: Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor] | None = None) -> dict[str, Any]:
    """Score heads and neurons, then remove the lowest-scoring fractions in place.

    Why: one call per trial turns sampled settings into a smaller model. Study keys:
    ``space.structured.head_fraction``, ``space.structured.ffn_fraction``,
    ``space.structured.importance`` and ``space.structured.scope``.

    Both scores are computed on the model as it is before any removal (one pass over
    ``batches`` for ``"gradient"``). ``scope="global"`` ranks all heads (all neurons) of the
    model together after per-layer normalisation, so some layers lose more than others;
    ``scope="layer"`` removes the same fraction from every layer. Fractions are rounded half up
    to whole units, and no layer ever loses its last head or last neuron.

    Args:
        model: a BERT-like model, modified in place (deep-copy it first to keep the original).
        head_fraction: fraction of attention heads to remove, in ``[0, 1)``.
        ffn_fraction: fraction of feed-forward neurons to remove, in ``[0, 1)``.
        importance: ``"gradient"`` (needs ``batches`` with labels) or ``"magnitude"``.
        batches: a few labelled batches, see :func:`head_importance`.
        scope: ``"global"`` or ``"layer"``.
        normalize: per-layer L2 normalisation of scores before ranking.
        fairness_mix: weight ``m`` in ``[0, 1]`` of the fairness-aware score ``|dP/dxi|``; needs
            ``gap`` (``P(logits, batch)``) and ``batches`` holding what it reads (labels, groups).
        gap: the differentiable group-gap function for ``fairness_mix``.

    Returns:
        ``{"heads_removed": {layer: [head indices]}, "neurons_removed": {layer: count},
        "heads_remaining": [per layer], "intermediate_sizes": [per layer],
        "params_before": int, "params_after": int}``.
    """
    _check_prune_args(head_fraction, ffn_fraction, importance, batches, scope, fairness_mix, gap)
    batches = None if batches is None else list(batches)
    layers = encoder_layers(model)
    params_before = _param_count(model)
    head_scores, ffn_scores = _prune_scores(model, head_fraction, ffn_fraction, importance, batches, normalize,
                                            fairness_mix, gap)
    heads_removed = {i: [] for i in range(len(layers))}
    if head_scores is not None:
        heads_removed = _select_lowest(head_scores, head_fraction, scope)
    neurons_removed = {i: 0 for i in range(len(layers))}
    keep: dict[int, torch.Tensor] = {}
    if ffn_scores is not None:
        keep, dropped = _neurons_to_keep(ffn_scores, ffn_fraction, scope)
        neurons_removed.update(dropped)
    prune_heads(model, {i: h for i, h in heads_removed.items() if h})
    prune_ffn_neurons(model, keep)
    shapes = layer_shapes(model)
    return {
        "heads_removed": heads_removed,
        "neurons_removed": neurons_removed,
        "heads_remaining": shapes["num_attention_heads"],
        "intermediate_sizes": shapes["intermediate_size"],
        "params_before": params_before,
        "params_after": _param_count(model),
    }


def _check_prune_args(head_fraction: float, ffn_fraction: float, importance: str,
                      batches: Iterable[Mapping[str, Any]] | None, scope: str, fairness_mix: float,
                      gap: Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor] | None) -> None:
    """Refuse settings :func:`structured_prune` cannot honour, before the model is touched."""
    for name, value in (("head_fraction", head_fraction), ("ffn_fraction", ffn_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} = {value!r} is not allowed: expected a number in [0, 1)")
    _check_method(importance)
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} is unknown; allowed: {', '.join(SCOPES)}")
    if importance == "gradient" and batches is None and (head_fraction > 0 or ffn_fraction > 0):
        raise ValueError("importance='gradient' needs batches with labels; pass batches= or use 'magnitude'")
    if not 0.0 <= fairness_mix <= 1.0:
        raise ValueError(f"fairness_mix = {fairness_mix!r} is not allowed: expected a number in [0, 1]")
    if fairness_mix > 0 and (gap is None or batches is None):
        raise ValueError("fairness_mix > 0 needs gap= (a group-gap function) and batches= with labels and groups")


def _prune_scores(model: nn.Module, head_fraction: float, ffn_fraction: float, importance: str,
                  batches: list[Mapping[str, Any]] | None, normalize: bool, fairness_mix: float,
                  gap: Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor] | None,
                  ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
    """Head and neuron scores of the unpruned model (``None`` where nothing of that kind is removed).

    Both kinds come from one gradient pass when ``importance="gradient"``; a positive ``fairness_mix``
    blends in the normalised scores of the group gap.
    """
    head_scores: list[torch.Tensor] | None = None
    ffn_scores: list[torch.Tensor] | None = None
    if importance == "gradient" and (head_fraction > 0 or ffn_fraction > 0):
        head_scores, ffn_scores = gate_gradient_scores(model, batches)
        if normalize:
            head_scores, ffn_scores = _normalise(head_scores), _normalise(ffn_scores)
    else:
        if head_fraction > 0:
            head_scores = _head_scores(model, None, "magnitude", normalize)
        if ffn_fraction > 0:
            ffn_scores = ffn_importance(model, method="magnitude", normalize=normalize)
    if fairness_mix > 0 and (head_fraction > 0 or ffn_fraction > 0):
        fair_heads, fair_ffn = (_normalise(x) for x in gate_gradient_scores(model, batches, gap))
        if head_scores is not None:
            head_scores = _mix(head_scores, fair_heads, fairness_mix)
        if ffn_scores is not None:
            ffn_scores = _mix(ffn_scores, fair_ffn, fairness_mix)
    return head_scores, ffn_scores


def _neurons_to_keep(ffn_scores: list[torch.Tensor], ffn_fraction: float, scope: str
                     ) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """Indices of the feed-forward neurons kept, and the count removed, for each layer that loses any."""
    keep: dict[int, torch.Tensor] = {}
    neurons_removed: dict[int, int] = {}
    for i, drop in _select_lowest(ffn_scores, ffn_fraction, scope).items():
        if drop:
            mask = torch.ones(ffn_scores[i].numel(), dtype=torch.bool)
            mask[drop] = False
            keep[i] = mask.nonzero().flatten()
            neurons_removed[i] = len(drop)
    return keep, neurons_removed


# --------------------------------------------------------------------------------------------
# Loading a pruned checkpoint
# --------------------------------------------------------------------------------------------


def _reshape_to(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> None:
    layers = encoder_layers(model)
    heads = list(shapes.get("num_attention_heads", []))
    inter = list(shapes.get("intermediate_size", []))
    if len(heads) != len(layers) or len(inter) != len(layers):
        raise DataError(f"{SHAPE_KEY} lists {len(heads)}/{len(inter)} layers but the model has {len(layers)}")
    prune_heads(model, {i: list(range(h, num_heads(model, layer)))
                        for i, (h, layer) in enumerate(zip(heads, layers)) if h < num_heads(model, layer)})
    prune_ffn_neurons(model, {i: torch.arange(m) for i, (m, layer) in enumerate(zip(inter, layers))
                              if m < layer.intermediate.dense.out_features})


def _read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            files = sorted(set(json.load(fh)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(os.path.join(path, name)))
        return state
    raise DataError(f"{path}: no model.safetensors or model.safetensors.index.json to load")


def load_pruned(path: str | os.PathLike[str], *, model_class: Any = None,
                attn_implementation: str | None = None) -> nn.Module:
    """Load a model saved with ``save_pretrained`` after structured pruning.

    Why: ``from_pretrained`` builds every layer at the config's full size and refuses the
    sliced tensors. This builds the model from the config, slices it to the shape recorded
    under :data:`SHAPE_KEY`, then loads the safetensors weights strictly. A checkpoint without
    that key is loaded with plain ``from_pretrained``.

    Args:
        path: the folder written by ``save_pretrained``.
        model_class: a transformers model class (default
            ``AutoModelForSequenceClassification``).
        attn_implementation: e.g. ``"eager"`` when attention maps are needed.

    Raises:
        DataError: when the folder has no safetensors weights or the weights do not match.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cls = model_class or AutoModelForSequenceClassification
    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    config = AutoConfig.from_pretrained(path)
    shapes = getattr(config, SHAPE_KEY, None)
    if shapes is None:
        return cls.from_pretrained(path, **kwargs)
    if hasattr(cls, "from_config"):
        model = cls.from_config(config, **kwargs)
    else:
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        model = cls(config)
    _reshape_to(model, shapes)
    state = _read_safetensors(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(f"{path}: weights do not match the pruned shape (missing {result.missing_keys[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]})")
    model.eval()
    return model


def start_trial(config: StructuredConfig, ctx: TrialContext) -> FamilyTrial:
    """The structured family's hooks into one trial (:meth:`StructuredFamily.start`)."""
    return _StructuredTrial(config)


class _StructuredTrial(FamilyTrial):
    def __init__(self, config: StructuredConfig):
        self.config = config

    def prepare(self, ctx: TrialContext) -> None:
        c = self.config
        if c.head_fraction <= 0 and c.ffn_fraction <= 0:
            return
        if ctx.task == "classification":
            summary = structured_prune(ctx.model, head_fraction=c.head_fraction, ffn_fraction=c.ffn_fraction,
                                       importance=c.importance, batches=ctx.calibration, scope=c.scope,
                                       fairness_mix=c.fairness_mix, gap=equal_opportunity_gap)
        else:
            if c.importance != "magnitude":
                raise ValueError("a masked_lm study prunes structures by magnitude only (no labelled batches)")
            summary = structured_prune(ctx.model, head_fraction=c.head_fraction, ffn_fraction=c.ffn_fraction,
                                       importance="magnitude", batches=None, scope=c.scope)
        ctx.record("structured", summary)
