"""Per-example task losses for imbalanced classes.

Compression tends to cost the rare classes first (Hooker et al. 2019), so the task loss a trial
trains with is itself searched. Every loss here maps ``(logits [B, C], labels [B]) -> [B]``: it
returns one loss per example and does not reduce, so the caller can take the mean, pass it to
:class:`~fairfront.spaces.fairness_losses.GroupDRO`, or multiply it by per-example weights.

The parametrised losses are built by factories (``focal_loss(gamma=2.0)``) that return small frozen,
picklable callables, so a trial's loss can be shipped to a Ray worker and shows its settings in
its ``repr``. Each one reduces to plain cross-entropy at its neutral setting, bit for bit:
``beta=0``, ``gamma=0`` (with no ``alpha``) and ``tau=0``.

Its ``[space.imbalance]`` table, config and family are :mod:`fairfront.spaces.imbalance_family`
(read without torch); :data:`IMBALANCE_LOSSES` there imports this module when a loss is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from fairfront.spaces.imbalance_family import (
    IMBALANCE_LOSSES,
    ImbalanceConfig,
    ImbalanceFamily,
    ImbalanceLoss,
    ImbalanceSpace,
)

__all__ = [
    "PerExampleLoss",
    "cross_entropy",
    "class_balanced_weights",
    "class_balanced_loss",
    "focal_loss",
    "logit_adjusted_loss",
    "ImbalanceLoss",
    "IMBALANCE_LOSSES",
    "ImbalanceConfig",
    "ImbalanceSpace",
    "ImbalanceFamily",
]

PerExampleLoss = Callable[[Tensor, Tensor], Tensor]
"""``(logits [B, C], labels [B]) -> per-example loss [B]``."""


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Plain cross-entropy per example, ``-log softmax(logits)[y]``, shape ``[B]``.

    Example:
        >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor([1.3863, 1.3863])
    """
    _check(logits, labels)
    return F.cross_entropy(logits, labels, reduction="none")


# ---------------------------------------------------------------------------------------------
# class-balanced loss (Cui et al. 2019)


def class_balanced_weights(class_counts: Sequence[int] | Tensor, beta: float) -> Tensor:
    """Class weights from the effective number of samples (Cui et al. 2019).

    The effective number of a class with ``n`` examples is ``E_n = (1 - beta**n) / (1 - beta)``: extra
    examples of a frequent class add less and less new information. Weights are ``1 / E_n``,
    normalised to sum to ``C``, so ``beta = 0`` gives all ones (plain cross-entropy) and
    ``beta -> 1`` approaches inverse class frequency (``beta = 1`` is accepted and means exactly
    that). A class with no examples gets weight 0 (it never occurs as a label) and the others share
    the sum ``C``.

    Args:
        class_counts: training examples per class, length ``C >= 2``.
        beta: in ``[0, 1]``; Cui et al. use 0.9 to 0.9999.

    Returns:
        ``[C]`` float32 weights.

    Example:
        >>> class_balanced_weights([90, 10], beta=0.0).tolist()
        [1.0, 1.0]
        >>> # beta = 1: inverse frequency, 2 * (1/90, 1/10) / (1/90 + 1/10)
        >>> [round(w, 3) for w in class_balanced_weights([90, 10], beta=1.0).tolist()]
        [0.2, 1.8]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() < 2:
        raise ValueError(f"class_counts must list at least 2 classes; got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()) or bool((counts != counts.round()).any()):
        raise ValueError(f"class_counts must be whole numbers >= 0; got {counts.tolist()}")
    if not bool((counts > 0).any()):
        raise ValueError("class_counts must have at least one class with examples; got all zeros")
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1]; got {beta}")
    present = counts > 0
    if beta == 1.0:
        effective = counts
    else:
        effective = (1.0 - torch.pow(beta, counts)) / (1.0 - beta)
    weights = torch.where(present, 1.0 / torch.where(present, effective, 1.0), 0.0)
    weights = weights * (counts.numel() / weights.sum())
    return weights.to(torch.float32)


@dataclass(frozen=True)
class _ClassBalancedLoss:
    class_counts: tuple[int, ...]
    beta: float
    weights: Tensor = field(repr=False, compare=False)

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check(logits, labels, self.weights.numel())
        ce = F.cross_entropy(logits, labels, reduction="none")
        return self.weights.to(device=ce.device, dtype=ce.dtype)[labels] * ce


def class_balanced_loss(class_counts: Sequence[int] | Tensor, beta: float) -> PerExampleLoss:
    """Class-balanced cross-entropy (Cui et al. 2019): ``w[y] * CE`` with :func:`class_balanced_weights`.

    Example:
        >>> loss = class_balanced_loss([90, 10], beta=0.999)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1])).tolist()[1] > 0.6931  # the rare class weighs more
        True
    """
    weights = class_balanced_weights(class_counts, beta)
    counts = tuple(int(c) for c in torch.as_tensor(class_counts).tolist())
    return _ClassBalancedLoss(counts, float(beta), weights)


# ---------------------------------------------------------------------------------------------
# focal loss (Lin et al. 2017)


@dataclass(frozen=True)
class _FocalLoss:
    gamma: float
    alpha: tuple[float, ...] | None

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check(logits, labels, None if self.alpha is None else len(self.alpha))
        ce = F.cross_entropy(logits, labels, reduction="none")
        loss = ce
        if self.gamma != 0.0:
            # 1 - p_t computed as -expm1(-ce) keeps precision when p_t is close to 1; the floor keeps
            # the gradient of (1 - p_t)**gamma finite at p_t == 1 for gamma < 1.
            one_minus_p = (-torch.expm1(-ce)).clamp(min=torch.finfo(ce.dtype).tiny)
            loss = one_minus_p.pow(self.gamma) * ce
        if self.alpha is not None:
            alpha = torch.tensor(self.alpha, device=ce.device, dtype=ce.dtype)
            loss = alpha[labels] * loss
        return loss


def focal_loss(gamma: float, alpha: float | Sequence[float] | None = None) -> PerExampleLoss:
    """Focal loss (Lin et al. 2017): ``-alpha_t * (1 - p_t)**gamma * log p_t`` per example.

    Down-weights examples the model already gets right, so the rare, hard ones dominate the
    gradient. ``gamma = 0`` with ``alpha=None`` is plain cross-entropy, exactly.

    Args:
        gamma: focusing parameter ``>= 0`` (Lin et al. found 2 best; 0 to 5 is the useful range).
        alpha: class weighting. ``None``: none. A float ``a`` in ``(0, 1)``: binary tasks only,
            weight ``a`` on class 1 and ``1 - a`` on class 0 (the paper's ``alpha_t``). A sequence:
            one weight ``>= 0`` per class.

    Example:
        >>> logits, labels = torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0])
        >>> focal_loss(2.0)(logits, labels) < cross_entropy(logits, labels)  # the easy example loses most
        tensor([True, True])
    """
    gamma = float(gamma)
    if not 0.0 <= gamma < float("inf"):
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma}")
    alphas: tuple[float, ...] | None
    if alpha is None:
        alphas = None
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"a scalar alpha must lie in (0, 1) (weight of class 1, binary only); got {alpha}")
        alphas = (1.0 - float(alpha), float(alpha))
    else:
        alphas = tuple(float(a) for a in torch.as_tensor(alpha, dtype=torch.float64).flatten().tolist())
        if len(alphas) < 2 or any(not 0.0 <= a < float("inf") for a in alphas):
            raise ValueError(f"alpha must give a finite weight >= 0 for each of at least 2 classes; got {list(alphas)}")
    return _FocalLoss(gamma, alphas)


# ---------------------------------------------------------------------------------------------
# logit adjustment (Menon et al. 2021)


@dataclass(frozen=True)
class _LogitAdjustedLoss:
    class_priors: tuple[float, ...]
    tau: float

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        _check(logits, labels, len(self.class_priors))
        if self.tau == 0.0:
            return F.cross_entropy(logits, labels, reduction="none")
        shift = (self.tau * torch.tensor(self.class_priors, dtype=torch.float64).log())
        shift = shift.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits + shift, labels, reduction="none")


def logit_adjusted_loss(class_priors: Sequence[float] | Tensor, tau: float) -> PerExampleLoss:
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``CE(logits + tau * log pi, y)``.

    Adding the log prior during training makes the model learn the balanced (per-class) error
    instead of the prior-weighted one; at test time the raw logits are used, which removes the
    majority-class bias the prior would otherwise bake in. ``tau = 0`` is plain cross-entropy,
    exactly; ``tau = 1`` is the paper's default.

    Args:
        class_priors: training frequency of each class, or raw counts (normalised here); all must be
            positive (a class absent from training cannot be prior-adjusted).
        tau: scaling ``>= 0``.

    Example:
        >>> loss = logit_adjusted_loss([0.9, 0.1], tau=1.0)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1]))  # the rare label costs more
        tensor([0.1054, 2.3026])
    """
    priors = torch.as_tensor(class_priors, dtype=torch.float64).flatten()
    if priors.numel() < 2:
        raise ValueError(f"class_priors must list at least 2 classes; got {priors.tolist()}")
    if not bool(torch.isfinite(priors).all()) or bool((priors <= 0).any()):
        raise ValueError(f"class_priors must all be positive and finite (a class absent from training "
                         f"cannot be prior-adjusted); got {priors.tolist()}")
    tau = float(tau)
    if not 0.0 <= tau < float("inf"):
        raise ValueError(f"tau must be a finite number >= 0; got {tau}")
    priors = priors / priors.sum()
    return _LogitAdjustedLoss(tuple(priors.tolist()), tau)


def _check(logits: Tensor, labels: Tensor, num_classes: int | None = None) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape [B, C] with C >= 2; got shape {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape [{logits.shape[0]}] to match logits; got shape {tuple(labels.shape)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"this loss was built for {num_classes} classes; logits have {logits.shape[1]}")
