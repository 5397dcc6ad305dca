"""Students for distillation, cut from the teacher, and the layer-wise transfer losses.

A student that starts from a subset of the teacher's layers learns much faster than a random one
(Sanh et al., 2019, DistilBERT), and *which* layers it keeps is a setting worth searching: the
lower layers carry more general features, the upper ones more task-specific ones (Sajjad et al.,
2022, "On the effect of dropping layers of pre-trained transformer models").

- :func:`layer_indices` chooses the layers, :func:`make_student` copies them.
- :func:`hidden_state_transfer_loss` (TinyBERT-style MSE between mapped hidden states) and
  :func:`attention_transfer_loss` (MSE, or KL as in MiniLM, between mapped attention maps) are
  added to the logit-distillation loss by the training loop.

Getting attention maps in transformers 5.x: pass ``output_attentions=True`` to the forward call.
The default ``"sdpa"`` attention does not return its weights (the output's ``attentions`` is
then empty and a warning is logged), so both teacher and student must use eager attention:
``model.set_attn_implementation("eager")`` on a built model, or
``from_pretrained(..., attn_implementation="eager")``. :func:`attention_transfer_loss` raises a
``ValueError`` saying so when it receives no maps.

Example:
    >>> keep = layer_indices(12, 6, strategy="uniform")
    >>> keep
    [0, 2, 4, 7, 9, 11]
    >>> student = make_student(teacher, keep)  # doctest: +SKIP
    >>> mapping = layer_mapping(keep)
    >>> mapping[6]  # student's last hidden state <- teacher's last
    12
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fairfront.spaces.distillation_family import LAYER_STRATEGIES
from fairfront.spaces.structured import SHAPE_KEY, encoder_layers

__all__ = [
    "ATTENTION_LOSSES",
    "LAYER_STRATEGIES",
    "attention_transfer_loss",
    "hidden_state_transfer_loss",
    "layer_indices",
    "layer_mapping",
    "make_student",
]

ATTENTION_LOSSES = ("mse", "kl")


def layer_indices(n_teacher_layers: int, n_keep: int, *, strategy: str = "every_other") -> list[int]:
    """Which teacher layers (0-based, ascending) a student of ``n_keep`` layers starts from.

    Why: study keys ``space.distillation.student_layers`` (``n_keep``) and
    ``space.distillation.layer_strategy`` (``strategy``).

    Strategies:
        ``"every_other"``: ``0, 2, 4, ...`` (DistilBERT's rule); needs
        ``n_keep <= ceil(n_teacher_layers / 2)``.
        ``"uniform"``: evenly spread from the first to the last layer,
        ``round(i * (n - 1) / (n_keep - 1))``; for 12 -> 6 this gives DistilBERT's released
        choice ``[0, 2, 4, 7, 9, 11]``. ``n_keep = 1`` keeps layer 0.
        ``"bottom"``: the first ``n_keep`` layers (i.e. drop the top layers, the strategy
        Sajjad et al. found best).
        ``"top"``: the last ``n_keep`` layers.

    Example:
        >>> layer_indices(6, 3)
        [0, 2, 4]
        >>> layer_indices(6, 2, strategy="top")
        [4, 5]
    """
    if isinstance(n_teacher_layers, bool) or not isinstance(n_teacher_layers, int) or n_teacher_layers < 1:
        raise ValueError(f"n_teacher_layers = {n_teacher_layers!r} is not allowed: expected a positive integer")
    if isinstance(n_keep, bool) or not isinstance(n_keep, int) or not 1 <= n_keep <= n_teacher_layers:
        raise ValueError(f"n_keep = {n_keep!r} is not allowed: expected 1..{n_teacher_layers}")
    if strategy == "every_other":
        if 2 * (n_keep - 1) >= n_teacher_layers:
            raise ValueError(
                f"every_other cannot keep {n_keep} of {n_teacher_layers} layers; "
                f"allowed: n_keep <= {(n_teacher_layers + 1) // 2}, or strategy 'uniform'"
            )
        return list(range(0, 2 * n_keep, 2))
    if strategy == "uniform":
        if n_keep == 1:
            return [0]
        step = (n_teacher_layers - 1) / (n_keep - 1)
        # floor(x + 0.5): round half up, so 12 -> 6 gives [0, 2, 4, 7, 9, 11]
        return [int(i * step + 0.5) for i in range(n_keep)]
    if strategy == "bottom":
        return list(range(n_keep))
    if strategy == "top":
        return list(range(n_teacher_layers - n_keep, n_teacher_layers))
    raise ValueError(f"strategy {strategy!r} is unknown; allowed: {', '.join(LAYER_STRATEGIES)}")


def make_student(teacher: nn.Module, keep: Sequence[int]) -> nn.Module:
    """A deep copy of ``teacher`` that keeps only the encoder layers ``keep``.

    Why: the student of a distillation trial (``space.distillation.*``); embeddings, the kept
    layers, pooler and classifier start from the teacher's weights. The teacher is not touched.
    ``config.num_hidden_layers`` becomes ``len(keep)``, and a per-layer shape recorded by
    structured pruning is cut down to the kept layers, so ``save_pretrained`` /
    ``from_pretrained`` (or :func:`fairfront.spaces.structured.load_pruned`) round-trip.

    Args:
        teacher: a BERT-like model (see :func:`fairfront.spaces.structured.encoder_layers`).
        keep: strictly increasing teacher layer indices, e.g. from :func:`layer_indices`.

    Raises:
        ValueError: if ``keep`` is empty, not strictly increasing or out of range.
    """
    n = len(encoder_layers(teacher))
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < n for i in keep) or any(a >= b for a, b in zip(keep, keep[1:])):
        raise ValueError(f"keep = {keep} is not allowed: expected strictly increasing layer indices in 0..{n - 1}")
    student = copy.deepcopy(teacher)
    old_layers = student.base_model.encoder.layer
    new_layers = nn.ModuleList([old_layers[i] for i in keep])
    for new_idx, layer in enumerate(new_layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    student.base_model.encoder.layer = new_layers
    configs = {id(student.config): student.config}
    for owner in (student.base_model, student.base_model.encoder):
        config = getattr(owner, "config", None)
        if config is not None:
            configs[id(config)] = config
    for config in configs.values():
        config.num_hidden_layers = len(keep)
        shapes = getattr(config, SHAPE_KEY, None)
        if shapes:
            setattr(config, SHAPE_KEY, {k: [v[i] for i in keep] for k, v in shapes.items()})
    return student


def layer_mapping(keep: Sequence[int]) -> dict[int, int]:
    """Map student hidden-state indices to teacher ones for a student made with ``keep``.

    ``hidden_states`` tuples start with the embedding output (index 0), so student layer ``j``
    is index ``j + 1`` and teacher layer ``keep[j]`` is ``keep[j] + 1``; the embeddings map
    ``0 -> 0``. For attention maps (no embedding entry) use
    ``{j: keep[j] for j in range(len(keep))}``.

    Example:
        >>> layer_mapping([0, 2])
        {0: 0, 1: 1, 2: 3}
    """
    mapping = {0: 0}
    mapping.update({j + 1: int(t) + 1 for j, t in enumerate(keep)})
    return mapping


def _pairs(mapping: Mapping[int, int] | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else [tuple(p) for p in mapping]
    if not pairs:
        raise ValueError("mapping is empty: expected at least one (student index, teacher index) pair")
    return pairs


def _check_index(states: Sequence[torch.Tensor], index: int, who: str) -> torch.Tensor:
    if not -len(states) <= index < len(states):
        raise ValueError(f"mapping names {who} index {index}, but there are {len(states)} {who} tensors")
    return states[index]


def hidden_state_transfer_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                               mapping: Mapping[int, int] | Sequence[tuple[int, int]], *,
                               projection: nn.Module | None = None,
                               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between mapped student and teacher hidden states (TinyBERT).

    Why: matching intermediate representations, not only logits, transfers more of the
    teacher's behaviour, including, possibly, its biases; study key
    ``space.distillation.hidden_weight`` scales this term.

    Args:
        student_hidden: the student's ``outputs.hidden_states`` (``output_hidden_states=True``),
            each ``[batch, seq, d_student]``.
        teacher_hidden: the teacher's, each ``[batch, seq, d_teacher]`` (no gradient needed).
        mapping: ``{student index: teacher index}`` or pairs, e.g. :func:`layer_mapping`.
        projection: a learned map from ``d_student`` to ``d_teacher`` (e.g.
            ``nn.Linear(d_s, d_t)``, shared by all layers as in TinyBERT); required when the
            widths differ. Its parameters must be given to the optimizer by the caller.
        attention_mask: ``[batch, seq]``; when given, padding positions are left out.

    Returns:
        A scalar tensor: the MSE averaged over mapped layers (and over real tokens and features).
    """
    pairs = _pairs(mapping)
    total = None
    for s_idx, t_idx in pairs:
        s = _check_index(student_hidden, s_idx, "student")
        t = _check_index(teacher_hidden, t_idx, "teacher").detach()
        if projection is not None:
            s = projection(s)
        if s.shape != t.shape:
            raise ValueError(
                f"student state {s_idx} has shape {tuple(s.shape)} but teacher state {t_idx} has {tuple(t.shape)}; "
                "pass projection=nn.Linear(d_student, d_teacher) when widths differ"
            )
        sq = (s - t.to(s.dtype)).pow(2)
        if attention_mask is None:
            loss = sq.mean()
        else:
            mask = attention_mask.to(sq.dtype).unsqueeze(-1)
            loss = (sq * mask).sum() / (mask.sum() * sq.shape[-1]).clamp_min(1.0)
        total = loss if total is None else total + loss
    return total / len(pairs)


def attention_transfer_loss(student_attentions: Sequence[torch.Tensor], teacher_attentions: Sequence[torch.Tensor],
                            mapping: Mapping[int, int] | Sequence[tuple[int, int]], *, method: str = "mse",
                            attention_mask: torch.Tensor | None = None,
                            average_heads: bool = False) -> torch.Tensor:
    """Distance between mapped student and teacher attention maps.

    Why: attention transfer (TinyBERT's MSE, MiniLM's KL over attention distributions) teaches
    the student *where* the teacher looks; study keys ``space.distillation.attention_weight``
    and ``space.distillation.attention_loss`` (``"mse"`` or ``"kl"``).

    Args:
        student_attentions: the student's ``outputs.attentions`` (eager attention and
            ``output_attentions=True``, see the module notes), each ``[batch, heads, seq, seq]``,
            rows summing to one.
        teacher_attentions: the teacher's.
        mapping: ``{student layer: teacher layer}`` (0-based; no embedding entry here).
        method: ``"mse"`` (mean over heads, queries and keys) or ``"kl"``
            (``KL(teacher || student)`` per query row, averaged over heads and queries).
        attention_mask: ``[batch, seq]``; when given, only real query rows are averaged.
        average_heads: compare head-averaged maps, needed when the head counts differ (e.g. a
            head-pruned student).

    Returns:
        A scalar tensor averaged over mapped layers.
    """
    if method not in ATTENTION_LOSSES:
        raise ValueError(f"method {method!r} is unknown; allowed: {', '.join(ATTENTION_LOSSES)}")
    if len(student_attentions) == 0 or len(teacher_attentions) == 0 or any(
            a is None for a in (*student_attentions, *teacher_attentions)):
        raise ValueError("no attention maps: run both models with output_attentions=True and eager attention "
                         "(model.set_attn_implementation('eager'); 'sdpa' returns none)")
    pairs = _pairs(mapping)
    total = None
    for s_idx, t_idx in pairs:
        s = _check_index(student_attentions, s_idx, "student")
        t = _check_index(teacher_attentions, t_idx, "teacher").detach().to(s.dtype)
        if average_heads:
            s, t = s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
        if s.shape != t.shape:
            raise ValueError(
                f"student attention {s_idx} has shape {tuple(s.shape)} but teacher attention {t_idx} has "
                f"{tuple(t.shape)}; use average_heads=True when head counts differ"
            )
        if method == "mse":
            per_row = (s - t).pow(2).mean(dim=-1)  # [batch, heads, queries]
        else:
            eps = torch.finfo(s.dtype).tiny
            per_row = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(eps))).sum(dim=-1)
        if attention_mask is None:
            loss = per_row.mean()
        else:
            rows = attention_mask.to(per_row.dtype)[:, None, :].expand_as(per_row)
            loss = (per_row * rows).sum() / rows.sum().clamp_min(1.0)
        total = loss if total is None else total + loss
    return total / len(pairs)
