"""The last encoder layer computed at the first position only, where the head reads nothing else.

A sequence classifier of the BERT family classifies from the first token's final hidden state:
BERT's pooler and the RoBERTa/ELECTRA classification heads read ``hidden[:, 0]`` and no other
position. In the last layer, then, only the first position's query, attention output and
feed-forward block reach the logits; keys and values still come from every position. Running
just that row gives the same logits and the same gradients (the other positions' outputs would
receive zero gradient) for less work: in a six-layer MiniLM the last layer's query, output and
feed-forward projections at the other positions are about an eighth of the encoder's
multiply-adds, in the forward and the backward pass, in training and in prediction.

:func:`first_token_only` switches this on for the duration of a ``with`` block by giving the last
layer's module an instance ``forward`` (parameter names, state dicts and hooks are untouched).
It is a no-op where it would change what a caller sees: another head, an encoder-decoder
layout, a dynamically quantized layer, transformers before 5.0 (whose layers return tuples), or a
caller that asks for hidden states or attentions (the training loop does not use it then). Latency is
measured on the plain model, as a user would deploy it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
import transformers
from torch import nn

__all__ = ["FIRST_TOKEN_HEADS", "first_token_layer", "first_token_only"]

FIRST_TOKEN_HEADS = frozenset({
    "BertForSequenceClassification", "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification", "ElectraForSequenceClassification",
})
"""Classifiers whose head reads the encoder's output at the first position only."""

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def first_token_layer(model: nn.Module) -> nn.Module | None:
    """The last encoder layer if it may run at the first position only, else ``None``."""
    config = getattr(model, "config", None)
    if (type(model).__name__ not in FIRST_TOKEN_HEADS or _TRANSFORMERS_MAJOR < 5 or config is None
            or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False)):
        return None
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    attention = getattr(getattr(layer, "attention", None), "self", None)
    parts = [getattr(attention, name, None) for name in ("query", "key", "value", "attention_head_size", "dropout")]
    if any(p is None for p in parts) or not callable(getattr(layer, "feed_forward_chunk", None)):
        return None
    try:  # plain float projections: dynamic int8 ones quantize each input with its whole tensor's range,
        # so a row's output depends on the other rows and computing fewer rows would change it
        linears = (attention.query, attention.key, attention.value, layer.attention.output.dense,
                   layer.intermediate.dense, layer.output.dense)
    except AttributeError:
        return None
    return layer if all(isinstance(m, nn.Linear) for m in linears) else None


@contextmanager
def first_token_only(model: nn.Module, *, enabled: bool = True) -> Iterator[bool]:
    """Within the block the model's last layer computes the first position only; yields whether it does."""
    layer = first_token_layer(model) if enabled else None
    if layer is None:
        yield False
        return
    full = layer.forward

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or args or (attention_mask is not None and attention_mask.dim() != 4):
            return full(hidden_states, attention_mask, encoder_hidden_states, *args, **kwargs)
        first = hidden_states[:, :1]
        context = _first_query_attention(layer.attention.self, first, hidden_states, attention_mask)
        return layer.feed_forward_chunk(layer.attention.output(context, first))

    layer.forward = forward
    try:
        yield True
    finally:
        del layer.forward  # the class's own forward again


def _first_query_attention(attention: nn.Module, first: torch.Tensor, states: torch.Tensor,
                           mask: torch.Tensor | None) -> torch.Tensor:
    """Self-attention output at the first position: its query against every position's key and value.

    With one query per head, projecting every position's key and value would be most of the work;
    the projections are moved onto the query side instead (exact by associativity):
    ``q . (W_k x + b_k) = (W_k^T q) . x + q . b_k`` and, with attention weights ``p``,
    ``sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + (sum_j p_j) b_v`` -- per sequence a
    head's ``d x hidden`` products, not one ``hidden x hidden`` product per position. ``mask`` is
    the encoder's 4-D mask (boolean, or additive floats under eager attention) cut to the first
    row; dropout on the attention weights as in training.
    """
    batch = states.shape[0]
    size = int(attention.attention_head_size)
    key, value = attention.key, attention.value
    heads = key.out_features // size
    query = attention.query(first).view(batch, heads, size)                      # (B, h, d)
    w_key = key.weight.view(heads, size, -1)                                       # (h, d, H)
    scores = torch.einsum("bhe,ble->bhl", torch.einsum("bhd,hde->bhe", query, w_key.to(query.dtype)), states)
    if key.bias is not None:  # the same for every position: kept so the scores equal the full layer's
        scores = scores + torch.einsum("bhd,hd->bh", query, key.bias.view(heads, size).to(query.dtype))[..., None]
    scores = scores * getattr(attention, "scaling", size ** -0.5)
    if mask is not None:
        mask = mask[:, :, 0, :]                                                    # (B, 1, L)
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask.to(scores.dtype))
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    if attention.training and attention.dropout.p > 0:
        weights = F.dropout(weights, attention.dropout.p, training=True)
    mixed = torch.einsum("bhl,ble->bhe", weights, states)                         # (B, h, H)
    context = torch.einsum("bhe,hde->bhd", mixed, value.weight.view(heads, size, -1).to(mixed.dtype))
    if value.bias is not None:
        context = context + weights.sum(-1, keepdim=True) * value.bias.view(heads, size).to(context.dtype)
    return context.reshape(batch, 1, heads * size)
