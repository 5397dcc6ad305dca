"""Fairness-aware compression: forgetting weights and fairness-aware importance scores.

Compression does not lose accuracy evenly: a pruned or distilled student forgets a small set of
examples first, and these are disproportionately from rare classes and under-represented groups
(Hooker et al. 2019, 2020). Two levers act on that without changing the training loop:

- :func:`forgetting_weights` up-weights, in the student's loss, the examples it is forgetting:
  those on which it no longer agrees with the dense teacher, and those in (group, class) cells
  whose recall has fallen behind the teacher's (see :func:`recall_deficit`).
- :func:`fairness_aware_importance` changes *what* is pruned: it mixes a weight's usual importance
  with its importance for the group gap, estimated by :func:`fairness_gradient_scores`, so weights
  whose removal would widen the gap are kept (:func:`equal_opportunity_gap` is the gap the
  trials protect).

The ``[space.fair_distillation]`` family that applies the forgetting weights is
:mod:`fairfront.spaces.fair_distillation`; its config and space stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from fairfront.spaces import fairness_losses
from fairfront.spaces.fair_distillation_family import FORGETTING_MODES

__all__ = [
    "FORGETTING_MODES",
    "forgetting_weights",
    "recall_deficit",
    "fairness_aware_importance",
    "fairness_gradient_scores",
    "equal_opportunity_gap",
]

_Scores = TypeVar("_Scores", Tensor, Mapping[str, Tensor])


def forgetting_weights(student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor,
                       groups: Tensor | None = None, *, strength: float, mode: str = "disagreement",
                       group_recall_deficit: Tensor | None = None) -> Tensor:
    """Per-example loss weights, mean 1, that up-weight what the compressed student is forgetting.

    Hooker et al. (2019) find that compression hurts a small set of "compression-identified
    exemplars" (where the compressed and the dense model disagree) far more than the rest, and
    suggest re-weighting them. The weight of example ``i`` is::

        d_i = 1 - p_student(argmax_c p_teacher(c | x_i) | x_i)      mode="disagreement"
        d_i = max(0, deficit[g_i, y_i])                            mode="group_recall"
        d_i = (disagreement_i + recall_i) / 2                      mode="both"
        w_i = (1 + strength * d_i) / mean_j (1 + strength * d_j)

    The disagreement is the student's probability of *not* predicting the teacher's label, a soft
    count of a compression-identified exemplar. ``deficit[g, y]`` is how far the student's recall
    on the (group ``g``, class ``y``) cell lies below the teacher's, tracked by the caller (see
    :func:`recall_deficit`); cells where the student is ahead get no extra weight, and examples of
    unknown group (``-1``) get ``d = 0`` from this term. Both terms lie in ``[0, 1]``, so
    ``strength`` means the same in every mode: the most-forgotten example weighs at most
    ``1 + strength`` times the least, before the rescaling to mean 1 that keeps the loss on the same
    scale for every ``strength``. ``strength = 0`` gives exactly ones. The weights are detached.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``; needed for ``"disagreement"`` and ``"both"``.
        labels: ``[B]`` long class ids.
        groups: ``[B]`` long group ids (``-1`` unknown); needed for ``"group_recall"`` and ``"both"``.
        strength: ``>= 0``.
        mode: one of :data:`FORGETTING_MODES`.
        group_recall_deficit: ``[G, C]`` recall deficits; needed for ``"group_recall"`` and ``"both"``.

    Returns:
        ``[B]`` float32 weights with mean 1.

    Example:
        >>> student = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> teacher = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # the student forgot example 1
        >>> w = forgetting_weights(student, teacher, torch.tensor([0, 0]), strength=1.0)
        >>> [round(v, 3) for v in w.tolist()]
        [0.746, 1.254]
    """
    batch, num_classes = _check_batch(student_logits, labels, mode)
    strength = float(strength)
    if not 0.0 <= strength < float("inf"):
        raise ValueError(f"strength must be a finite number >= 0; got {strength}")
    device = student_logits.device
    terms: list[Tensor] = []
    if mode in ("disagreement", "both"):
        terms.append(_disagreement(student_logits, teacher_logits, mode))
    if mode in ("group_recall", "both"):
        terms.append(_group_recall_term(labels, groups, group_recall_deficit, mode, num_classes, device))
    if strength == 0.0 or batch == 0:
        return torch.ones(batch, dtype=torch.float32, device=device)
    d = terms[0] if len(terms) == 1 else (terms[0] + terms[1]) / 2.0
    weights = 1.0 + strength * d
    return weights / weights.mean()


def _check_batch(student_logits: Tensor, labels: Tensor, mode: str) -> tuple[int, int]:
    """The batch size and class count of ``student_logits``, after checking the labels and mode fit them."""
    if student_logits.dim() != 2 or student_logits.shape[1] < 2:
        raise ValueError(f"student_logits must have shape [B, C] with C >= 2; got {tuple(student_logits.shape)}")
    batch, num_classes = student_logits.shape
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape [{batch}]; got {tuple(labels.shape)}")
    if mode not in FORGETTING_MODES:
        raise ValueError(f"mode must be one of {', '.join(FORGETTING_MODES)}; got {mode!r}")
    return batch, num_classes


def _disagreement(student_logits: Tensor, teacher_logits: Tensor | None, mode: str) -> Tensor:
    """``[B]`` soft count of a compression-identified exemplar: the student's odds of missing the teacher's label."""
    if teacher_logits is None or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"mode={mode!r} needs teacher_logits of shape {tuple(student_logits.shape)}; got "
                         f"{None if teacher_logits is None else tuple(teacher_logits.shape)}")
    with torch.no_grad():
        target = teacher_logits.to(student_logits.device).argmax(dim=1, keepdim=True)
        p_student = torch.softmax(student_logits.detach().float(), dim=1).gather(1, target).squeeze(1)
        return 1.0 - p_student


def _group_recall_term(labels: Tensor, groups: Tensor | None, group_recall_deficit: Tensor | None, mode: str,
                       num_classes: int, device: torch.device) -> Tensor:
    """``[B]`` recall deficit of each example's (group, class) cell, clamped to [0, 1]; 0 for unknown groups."""
    batch = labels.shape[0]
    if groups is None or groups.shape != (batch,):
        raise ValueError(f"mode={mode!r} needs groups of shape [{batch}]; got "
                         f"{None if groups is None else tuple(groups.shape)}")
    if group_recall_deficit is None or group_recall_deficit.dim() != 2 \
            or group_recall_deficit.shape[1] != num_classes:
        raise ValueError(f"mode={mode!r} needs group_recall_deficit of shape [G, {num_classes}]; got "
                         f"{None if group_recall_deficit is None else tuple(group_recall_deficit.shape)}")
    groups = groups.to(device=device, dtype=torch.long)
    num_groups = group_recall_deficit.shape[0]
    if batch and bool((groups.min() < -1) | (groups.max() >= num_groups)):
        raise ValueError(f"groups must lie in -1..{num_groups - 1} (rows of group_recall_deficit); "
                         f"got {int(groups.min())}..{int(groups.max())}")
    deficit = group_recall_deficit.detach().to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
    deficit = torch.nan_to_num(deficit, nan=0.0)
    known = groups >= 0
    cell = deficit[groups.clamp(min=0), labels.to(device=device, dtype=torch.long)]
    return torch.where(known, cell, torch.zeros_like(cell))


def recall_deficit(student_pred: Tensor, teacher_pred: Tensor, labels: Tensor, groups: Tensor, *,
                   num_groups: int, num_classes: int) -> Tensor:
    """Per-(group, class) recall of the teacher minus that of the student, ``[G, C]``.

    Feed it the hard predictions (or logits, which are arg-maxed) of both models on an evaluation
    pass, and hand the result to :func:`forgetting_weights` as ``group_recall_deficit``. A cell with
    no example gets 0, examples of unknown group (``-1``) are skipped. Positive values mean the
    student has lost recall on that cell; negative ones that it is ahead.

    Example:
        >>> labels, groups = torch.tensor([1, 1, 1, 1]), torch.tensor([0, 0, 1, 1])
        >>> recall_deficit(torch.tensor([1, 1, 0, 1]), labels, labels, groups, num_groups=2, num_classes=2)
        tensor([[0.0000, 0.0000],
                [0.0000, 0.5000]])
    """
    preds = [p.argmax(dim=1) if p.dim() == 2 else p for p in (student_pred, teacher_pred)]
    n = labels.shape[0]
    if any(p.shape != (n,) for p in preds) or groups.shape != (n,):
        raise ValueError(f"student_pred, teacher_pred and groups must match labels' shape [{n}]; got "
                         f"{[tuple(p.shape) for p in preds]} and {tuple(groups.shape)}")
    groups = groups.to(torch.long)
    labels = labels.to(device=groups.device, dtype=torch.long)
    if n and bool((groups.min() < -1) | (groups.max() >= num_groups)):
        raise ValueError(f"groups must lie in -1..{num_groups - 1}; got {int(groups.min())}..{int(groups.max())}")
    if n and bool((labels.min() < 0) | (labels.max() >= num_classes)):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got {int(labels.min())}..{int(labels.max())}")
    known = groups >= 0
    cell = groups[known] * num_classes + labels[known]
    size = num_groups * num_classes
    counts = torch.bincount(cell, minlength=size).to(torch.float32)
    recalls = []
    for pred in preds:
        hit = (pred.to(labels.device)[known] == labels[known]).to(torch.float32)
        hits = torch.zeros(size, dtype=torch.float32, device=labels.device).index_add(0, cell, hit)
        recalls.append(hits / counts.clamp(min=1.0))
    return (recalls[1] - recalls[0]).view(num_groups, num_classes)


def fairness_aware_importance(plain_importance: _Scores, fairness_grad_importance: _Scores, *,
                              mix: float) -> _Scores:
    """Mix a weight's plain importance with its importance for the group gap; higher = keep.

    ``plain_importance`` is the usual pruning score (``|w|``, ``|w * dL/dw|``, ...);
    ``fairness_grad_importance`` is ``|w * dP/dw|`` from :func:`fairness_gradient_scores`, the
    first-order size of the change in the fairness penalty ``P`` if ``w`` were removed. The two
    have unrelated units, so each is first divided by its mean over all scored entries (mean rather
    than max: gradient scores are heavy-tailed and one outlier would flatten the rest). The mix is
    expressed back in the plain score's units::

        score = mean(plain) * ((1 - mix) * plain / mean(plain) + mix * fair / mean(fair))

    so ``mix = 0`` returns ``plain_importance`` exactly and ``mix = 1`` ranks by the gap alone.
    A fairness score that is zero everywhere contributes nothing.

    Pass dicts (parameter name -> scores) to normalise over all of them together, which global
    pruning needs: per-tensor calls would rescale each tensor's fairness scores separately.

    Args:
        plain_importance: scores ``>= 0``, a tensor or a dict of tensors.
        fairness_grad_importance: scores ``>= 0`` of the same shape(s) (and keys).
        mix: in ``[0, 1]``.

    Example:
        >>> plain, fair = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 0.0, 0.0])
        >>> fairness_aware_importance(plain, fair, mix=0.5)  # weight 0 now outranks weight 1
        tensor([3.5000, 1.0000, 1.5000])
    """
    mix = float(mix)
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must lie in [0, 1]; got {mix}")
    as_dict = isinstance(plain_importance, Mapping)
    if as_dict != isinstance(fairness_grad_importance, Mapping):
        raise ValueError("plain_importance and fairness_grad_importance must both be tensors or both be dicts")
    plain = dict(plain_importance) if as_dict else {"": plain_importance}
    fair = dict(fairness_grad_importance) if as_dict else {"": fairness_grad_importance}
    if plain.keys() != fair.keys():
        raise ValueError(f"the two score dicts must have the same keys; only in one: "
                         f"{sorted(set(plain) ^ set(fair))}")
    for key in plain:
        where = f" for {key!r}" if as_dict else ""
        if plain[key].shape != fair[key].shape:
            raise ValueError(f"score shapes differ{where}: {tuple(plain[key].shape)} vs {tuple(fair[key].shape)}")
        for name, t in (("plain_importance", plain[key]), ("fairness_grad_importance", fair[key])):
            if t.numel() and not bool(torch.isfinite(t).all() & (t >= 0).all()):
                raise ValueError(f"{name}{where} must be finite and >= 0 (use absolute values)")
    if mix == 0.0:
        out = {k: v.clone() for k, v in plain.items()}
    else:
        plain_mean = _mean_over(plain.values())
        fair_mean = _mean_over(fair.values())
        scale = plain_mean if plain_mean > 0 else 1.0
        fair_factor = mix * scale / fair_mean if fair_mean > 0 else 0.0
        out = {k: (1.0 - mix) * plain[k] + fair_factor * fair[k].to(device=plain[k].device, dtype=plain[k].dtype)
               for k in plain}
    return out if as_dict else out[""]


def fairness_gradient_scores(model: nn.Module, batches: Iterable[Any],
                             penalty_fn: Callable[[nn.Module, Any], Tensor],
                             params: Mapping[str, Tensor] | Iterable[str], *,
                             signed: bool = False) -> dict[str, Tensor]:
    """Importance of each named parameter entry for the fairness penalty: ``|w * dP/dw|``.

    ``P`` is the mean over ``batches`` of ``penalty_fn(model, batch)`` (a scalar, e.g. the model's
    logits passed to :func:`~fairfront.spaces.fairness_losses.equal_opportunity_penalty`). Removing
    ``w`` changes ``P`` by about ``-w * dP/dw`` (first-order Taylor), so the absolute value is how
    much the gap depends on ``w``. With ``signed=True`` the score is ``max(0, -w * dP/dw)``: only
    weights whose removal would *widen* the gap count; those whose removal would narrow it score 0.

    The model runs in eval mode (no dropout noise) and is restored to its mode afterwards.
    Gradients are taken with :func:`torch.autograd.grad` for the named parameters only, so no
    ``.grad`` is written or cleared, nothing else accumulates, and no weight changes; parameters
    that are frozen are enabled for the pass and frozen again.

    Args:
        model: the network.
        batches: a few batches (anything ``penalty_fn`` accepts); at least one.
        penalty_fn: ``(model, batch) -> scalar tensor``.
        params: names (or ``name -> parameter``, e.g. the output of ``prunable_weights``) to score.
        signed: see above.

    Returns:
        ``name -> float32 tensor`` shaped like the parameter, ``>= 0``, detached.
    """
    named = dict(model.named_parameters())
    names = list(params.keys()) if isinstance(params, Mapping) else list(params)
    if not names:
        raise ValueError("params must name at least one parameter of the model")
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"params names parameters the model does not have: {unknown[:5]}")
    tensors = [named[n] for n in names]
    was_training = model.training
    frozen = [not t.requires_grad for t in tensors]
    totals = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
    n_batches = 0
    try:
        model.eval()
        for t in tensors:
            t.requires_grad_(True)
        for batch in batches:
            penalty = penalty_fn(model, batch)
            if not isinstance(penalty, Tensor) or penalty.numel() != 1:
                raise ValueError("penalty_fn must return a scalar tensor")
            n_batches += 1
            if not penalty.requires_grad:
                continue  # a constant penalty has zero gradient
            grads = torch.autograd.grad(penalty.reshape(()), tensors, allow_unused=True)
            for total, grad in zip(totals, grads):
                if grad is not None:
                    total.add_(grad.detach().float())
    finally:
        for t, was_frozen in zip(tensors, frozen):
            if was_frozen:
                t.requires_grad_(False)
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("batches must contain at least one batch")
    scores: dict[str, Tensor] = {}
    for name, t, total in zip(names, tensors, totals):
        taylor = t.detach().float() * (total / n_batches)
        scores[name] = (-taylor).clamp(min=0.0) if signed else taylor.abs()
    return scores


def _mean_over(tensors: Iterable[Tensor]) -> float:
    total, count = 0.0, 0
    for t in tensors:
        total += float(t.detach().float().sum())
        count += t.numel()
    return total / count if count else 0.0


def equal_opportunity_gap(logits: Tensor, batch: Mapping[str, Any]) -> Tensor:
    """The group gap fairness-aware pruning protects: the soft equal-opportunity penalty on one batch."""
    return fairness_losses.equal_opportunity_penalty(logits, batch["labels"], batch["groups"])


def __getattr__(name: str) -> Any:
    """``FairDistillationConfig`` and ``FairDistillationSpace``, defined with their family (imported lazily:
    that module imports this one)."""
    if name in ("FairDistillationConfig", "FairDistillationSpace"):
        from fairfront.spaces import fair_distillation

        return getattr(fair_distillation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
