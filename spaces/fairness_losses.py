"""Differentiable group-fairness penalties, group DRO and group reweighting.

Every term here is computed from ``probs = softmax(logits)`` so it can be added to the task loss
and trained through. Shapes: ``logits`` is ``[B, C]`` (``C >= 2``), ``labels`` is ``[B]`` (long
class ids), ``groups`` is ``[B]`` (long group ids ``0..G-1``; ``-1`` means "group unknown" and is
ignored by every group term). Binary tasks have ``C == 2`` with class 1 the positive class.

**Overlapping groups.** The penalties and :class:`GroupDRO` also take ``groups`` as a ``[B, G]``
0/1 membership matrix (``[data] group_membership``): a group's rate or loss is then the mean over
its members, so an example in two groups counts in both and one in no group in none (with one-hot
rows this is exactly the group-id form).

**Soft rates.** A measured rate such as the true-positive rate counts hard predictions, which
have no gradient. The penalties replace the indicator ``[y_hat == y]`` by ``p(y|x)``: the soft TPR of
class ``y`` in group ``g`` is the mean of ``p(y|x)`` over the examples of group ``g`` labelled
``y``. A (group, class) cell with no example in the batch has no rate and contributes nothing
(fairlearn would report a rate of 0 there, which as a training signal would pull that group's
other rates toward a gap that does not exist).

**Spread over groups.** For each class the rates of the groups present are compared by the
root-mean-square of all pairwise differences, ``sqrt(mean_{g<h} (r_g - r_h)**2)``:

- for two groups it is exactly ``|r_a - r_b|``, the gap the bias objective measures;
- for more groups every group receives gradient (``max - min`` moves only the two extremes, so a
  third group can drift unchecked), and it stays on the scale of a gap between two groups;
- it is smooth except at zero, where its value is exactly 0 and the gradient is taken as 0.

**Classes.** Binary tasks use the positive class only. Multi-class tasks take the root mean square
over classes of the per-class spreads, which for two groups is ``sqrt(mean_y Gap_y**2)``, the
TPR-gap RMS of De-Arteaga et al. (2019) computed on soft rates. Classes present in fewer than two
groups are skipped, so a batch with no comparable cell gives exactly 0 (still attached to the graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "equal_opportunity_penalty",
    "equalized_odds_penalty",
    "demographic_parity_penalty",
    "GroupDRO",
    "group_balanced_weights",
    "group_balanced_sampler_weights",
    "FairnessMethod",
    "FAIRNESS_PENALTIES",
    "FAIRNESS_METHODS",
]


def equal_opportunity_penalty(logits: Tensor, labels: Tensor, groups: Tensor, *, num_groups: int | None = None
                              ) -> Tensor:
    """Soft equal-opportunity gap (Hardt et al. 2016): the spread of true-positive rates across groups.

    The soft TPR of class ``y`` in group ``g`` is the mean of ``p(y|x)`` over group ``g``'s examples
    labelled ``y``. Binary tasks compare the positive class only; multi-class tasks take the RMS over
    classes of the per-class spreads (see the module docstring for the spread).

    Args:
        logits: ``[B, C]`` scores, ``C >= 2``.
        labels: ``[B]`` long class ids.
        groups: ``[B]`` long group ids, ``-1`` for unknown.
        num_groups: how many group ids there are, when known: the group tables then have this
            fixed size and nothing is read back to the host while a CUDA graph is being captured
            (the value is the same; see :func:`_group_rates`).

    Returns:
        A scalar tensor, ``>= 0``, differentiable with respect to ``logits``.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
        >>> labels = torch.tensor([1, 1, 1, 1])
        >>> groups = torch.tensor([0, 0, 1, 1])
        >>> round(float(equal_opportunity_penalty(logits, labels, groups)), 4)  # 0.8808 - 0.5
        0.3808
    """
    probs, labels, groups = _checked(logits, labels, groups, num_groups)
    return _spread_over_classes(probs, _one_hot(labels, probs), groups, num_groups)


# ---------------------------------------------------------------------------------------------
# shared machinery


def _capturing() -> bool:
    """Whether a CUDA graph is being captured: then no value may be read back to the host."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _one_hot(labels: Tensor, probs: Tensor) -> Tensor:
    """``one_hot(labels, C)`` in ``probs``' dtype, by comparison (``F.one_hot`` may check its input on the host)."""
    classes = torch.arange(probs.shape[1], device=labels.device)
    return (labels.unsqueeze(1) == classes).to(probs.dtype)


def _checked(logits: Tensor, labels: Tensor | None, groups: Tensor, num_groups: int | None = None
             ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Validate shapes and ids; return ``softmax(logits)`` (float32 or wider) with labels and groups.

    The checks of values read them back to the host, so they are skipped while a CUDA graph is
    being captured; every step that runs eagerly (each bucket's first, short batches, every step
    on a CPU) still makes them.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape [B, C] with C >= 2; got shape {tuple(logits.shape)}")
    batch, num_classes = logits.shape
    check = batch and not _capturing()
    if groups.dim() == 2 and groups.shape[0] == batch:
        groups = _membership(groups, logits.device, num_groups)
    elif groups.dim() != 1 or groups.shape[0] != batch:
        raise ValueError(f"groups must have shape [{batch}] (group ids) or [{batch}, G] (memberships) to match "
                         f"logits; got shape {tuple(groups.shape)}")
    elif groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"groups must hold integer group ids (-1 = unknown); got dtype {groups.dtype}")
    else:
        groups = groups.to(device=logits.device, dtype=torch.long)
    if check and groups.dim() == 1:
        bad = groups.min() < -1
        if num_groups is not None:
            bad = bad | (groups.max() >= num_groups)
        if bool(bad):  # one read-back for both checks
            if bool(groups.min() < -1):
                raise ValueError(f"groups must be >= -1 (-1 = unknown); got {int(groups.min())}")
            raise ValueError(f"groups must be < num_groups = {num_groups}; got {int(groups.max())}")
    if labels is not None:
        if labels.dim() != 1 or labels.shape[0] != batch:
            raise ValueError(f"labels must have shape [{batch}] to match logits; got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must hold integer class ids; got dtype {labels.dtype}")
        labels = labels.to(device=logits.device, dtype=torch.long)
        if check and bool((labels.min() < 0) | (labels.max() >= num_classes)):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}; got values "
                             f"{int(labels.min())}..{int(labels.max())}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.softmax(logits.to(dtype), dim=1), labels, groups


def _membership(groups: Tensor, device: torch.device, num_groups: int | None) -> Tensor:
    """A ``[B, G]`` membership matrix as float32 on ``device``, its width checked against ``num_groups``."""
    if num_groups is not None and groups.shape[1] != num_groups:
        raise ValueError(f"a membership matrix must have num_groups = {num_groups} columns; got {groups.shape[1]}")
    return groups.to(device=device, dtype=torch.float32)


def _group_rates(values: Tensor, members: Tensor, groups: Tensor, num_groups: int | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Per-(group, class) means of ``values`` over ``members``; also the member counts.

    With ``groups`` a ``[B, G]`` membership matrix each group's sums run over its members
    (``groups.T @ ...``): fixed shapes, nothing read back to the host.

    ``values`` and ``members`` are ``[B, C]``; rows with group ``-1`` are dropped. Returns
    ``rates [G, C]`` (0 where a cell is empty) and ``counts [G, C]``. ``G`` is the batch's largest
    group id + 1, or ``num_groups`` when given: then unknown rows get weight 0 instead of being
    dropped, so every shape is fixed and nothing is read back to the host (a CUDA graph can
    capture it). The extra groups are empty, and empty groups take no part in a spread.
    """
    if groups.dim() == 2:
        membership = groups.to(values.dtype)
        counts = membership.T @ members
        return (membership.T @ (values * members)) / counts.clamp(min=1.0), counts
    if num_groups is not None:
        shape = (num_groups, values.shape[1])
        w = members * (groups >= 0).to(members.dtype).unsqueeze(1)
        g = groups.clamp(min=0)
        sums = values.new_zeros(shape).index_add(0, g, values * w)
        counts = values.new_zeros(shape).index_add(0, g, w)
        return sums / counts.clamp(min=1.0), counts
    known = groups >= 0
    g = groups[known]
    num_groups = int(g.max()) + 1 if g.numel() else 0
    shape = (num_groups, values.shape[1])
    w = members[known]
    sums = values.new_zeros(shape).index_add(0, g, values[known] * w)
    counts = values.new_zeros(shape).index_add(0, g, w)
    rates = sums / counts.clamp(min=1.0)
    return rates, counts


def _spread_over_classes(values: Tensor, members: Tensor, groups: Tensor, num_groups: int | None = None) -> Tensor:
    """Spread across groups of per-(group, class) soft rates, reduced over classes.

    ``values [B, C]`` are the per-example quantities averaged into rates (``p(y|x)``);
    ``members [B, C]`` says which examples count toward each class's rate.
    """
    rates, counts = _group_rates(values, members, groups, num_groups)
    if values.shape[1] == 2:  # binary: the positive class only
        rates, counts = rates[:, 1:], counts[:, 1:]
    present = (counts > 0).to(rates.dtype)  # [G, C']
    diff = rates.unsqueeze(0) - rates.unsqueeze(1)  # [G, G, C']
    pair = present.unsqueeze(0) * present.unsqueeze(1)  # [G, G, C'], includes i == j (diff 0)
    n_groups = present.sum(0)  # [C']
    n_pairs = (n_groups * n_groups - n_groups)  # ordered pairs i != j
    mean_sq = (diff.square() * pair).sum((0, 1)) / n_pairs.clamp(min=1.0)  # per class
    used = n_pairs > 0
    total = (mean_sq * used).sum() / used.sum().clamp(min=1).to(rates.dtype)
    return _safe_sqrt(total) + 0.0 * values.sum()


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` whose gradient at ``x == 0`` is 0 instead of nan (double-``where`` trick)."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------
# the other penalties

_EO_AGGREGATIONS = ("max", "sum")


def equalized_odds_penalty(logits: Tensor, labels: Tensor, groups: Tensor, *, agg: str = "max",
                           num_groups: int | None = None) -> Tensor:
    """Soft equalized-odds gap (Hardt et al. 2016): TPR spread and FPR spread across groups, combined.

    The soft FPR of class ``y`` in group ``g`` is the mean of ``p(y|x)`` over group ``g``'s examples
    whose label is *not* ``y``. Each spread is reduced over classes as in
    :func:`equal_opportunity_penalty`.

    ``agg="max"`` (default) takes the larger of the two spreads, which is the soft counterpart of the
    measured equalized-odds difference (fairlearn's ``agg='worst_case'``), so the penalty pushes on
    the number the bias objective reports. ``agg="sum"`` adds them, which keeps gradient on both
    rates at every step (with ``max`` only the currently larger gap is pushed).

    Args:
        logits: ``[B, C]`` scores.
        labels: ``[B]`` long class ids.
        groups: ``[B]`` long group ids, ``-1`` for unknown.
        agg: ``"max"`` or ``"sum"``.
        num_groups: as for :func:`equal_opportunity_penalty`.

    Returns:
        A scalar tensor, ``>= 0``.
    """
    if agg not in _EO_AGGREGATIONS:
        raise ValueError(f"agg must be one of {', '.join(_EO_AGGREGATIONS)}; got {agg!r}")
    probs, labels, groups = _checked(logits, labels, groups, num_groups)
    positives = _one_hot(labels, probs)
    tpr = _spread_over_classes(probs, positives, groups, num_groups)
    fpr = _spread_over_classes(probs, 1.0 - positives, groups, num_groups)
    return torch.maximum(tpr, fpr) if agg == "max" else tpr + fpr


def demographic_parity_penalty(logits: Tensor, labels: Tensor | None, groups: Tensor, *,
                               num_groups: int | None = None) -> Tensor:
    """Soft demographic-parity gap: the spread across groups of the mean ``p(y|x)`` per group.

    The soft selection rate of class ``y`` in group ``g`` is the mean of ``p(y|x)`` over all of group
    ``g``'s examples (Zafar et al. 2017 constrain the same quantity; Agarwal et al. 2018 reduce it to
    cost-sensitive learning). ``labels`` is not used; it is accepted (``None`` is fine) so that every
    entry of :data:`FAIRNESS_PENALTIES` is called the same way.

    Returns:
        A scalar tensor, ``>= 0``.
    """
    probs, _, groups = _checked(logits, labels, groups, num_groups)
    return _spread_over_classes(probs, torch.ones_like(probs), groups, num_groups)


# ---------------------------------------------------------------------------------------------
# group DRO


class GroupDRO:
    """Online group distributionally robust optimisation (Sagawa et al. 2020, Algorithm 1).

    Keeps a distribution ``q`` over groups. Each call computes the mean loss ``L_g`` of every group
    present in the batch, moves ``q`` toward the groups that are doing worst,
    ``q_g <- q_g * exp(step_size * L_g)`` for present groups followed by renormalisation, and
    returns ``sum_g q_g * L_g`` to be minimised. Absent groups keep their weight and contribute no
    loss (as in the authors' code, where an absent group's loss is 0), and examples whose group is
    ``-1`` are left out. With ``groups`` a ``[B, G]`` membership matrix, ``L_g`` is the mean loss over
    group ``g``'s members (an example in two groups counts in both, as in Sagawa et al.'s per-group
    losses, which only need each group's examples). ``q`` is updated on detached losses; the gradient
    flows through ``L_g`` only.

    The weights are kept in log space, so a long run with large losses neither overflows nor drives
    a group's weight to exactly zero. ``q`` lives on the device of the last loss it saw.

    Args:
        num_groups: ``G``; group ids must lie in ``0..G-1`` (or be ``-1``).
        step_size: ``eta >= 0``; 0 keeps ``q`` uniform (the mean of the group losses).

    Example:
        >>> dro = GroupDRO(num_groups=2, step_size=1.0)
        >>> loss = dro(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([0, 0, 1]))
        >>> [round(v, 3) for v in dro.q.tolist()]  # exp(1) : exp(3)
        [0.119, 0.881]
    """

    def __init__(self, num_groups: int, step_size: float):
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be an integer >= 1; got {num_groups!r}")
        step_size = float(step_size)
        if not (step_size >= 0.0 and step_size != float("inf")):
            raise ValueError(f"step_size must be a finite number >= 0; got {step_size!r}")
        self.num_groups = num_groups
        self.step_size = step_size
        self._log_q = torch.full((num_groups,), -math.log(num_groups))

    @property
    def q(self) -> Tensor:
        """The current weights over groups, ``[G]``, summing to 1."""
        return torch.softmax(self._log_q, dim=0)

    def __call__(self, per_example_loss: Tensor, groups: Tensor) -> Tensor:
        """Update ``q`` from this batch and return the robust loss ``sum_g q_g * L_g`` (a scalar)."""
        if per_example_loss.dim() != 1:
            raise ValueError(f"per_example_loss must have shape [B]; got shape {tuple(per_example_loss.shape)}")
        loss = per_example_loss.to(torch.promote_types(per_example_loss.dtype, torch.float32))
        if groups.dim() == 2 and groups.shape[0] == loss.shape[0]:
            membership = _membership(groups, loss.device, self.num_groups).to(loss.dtype)
            sums, counts = membership.T @ loss, membership.sum(0)
        else:
            sums, counts = self._by_id(loss, groups)
        group_loss = sums / counts.clamp(min=1.0)
        with torch.no_grad():
            log_q = self._log_q.to(device=loss.device, dtype=loss.dtype)
            log_q = log_q + self.step_size * group_loss.detach() * (counts > 0)
            self._log_q = log_q - torch.logsumexp(log_q, dim=0)
        return (self.q.to(loss.dtype) * group_loss).sum() + 0.0 * loss.sum()

    def _by_id(self, loss: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """Per-group loss sums and example counts from ``[B]`` group ids (``-1``: left out)."""
        if groups.shape != loss.shape:
            raise ValueError(f"groups must have shape {tuple(loss.shape)} to match the loss (or [B, G] "
                             f"memberships); got shape {tuple(groups.shape)}")
        if groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise ValueError(f"groups must hold integer group ids (-1 = unknown); got dtype {groups.dtype}")
        groups = groups.to(device=loss.device, dtype=torch.long)
        if groups.numel() and bool((groups.min() < -1) | (groups.max() >= self.num_groups)):
            raise ValueError(f"groups must lie in -1..{self.num_groups - 1}; got values "
                             f"{int(groups.min())}..{int(groups.max())}")
        known = groups >= 0
        g = groups[known]
        sums = loss.new_zeros(self.num_groups).index_add(0, g, loss[known])
        return sums, torch.bincount(g, minlength=self.num_groups).to(loss.dtype)

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume: ``num_groups``, ``step_size``, ``q`` (and exact ``log_q``), on CPU."""
        return {"num_groups": self.num_groups, "step_size": self.step_size,
                "q": self.q.detach().cpu().clone(), "log_q": self._log_q.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict`; ``num_groups`` must match."""
        if int(state["num_groups"]) != self.num_groups:
            raise ValueError(f"state has num_groups={state['num_groups']}, this GroupDRO has {self.num_groups}")
        if "log_q" in state:
            log_q = torch.as_tensor(state["log_q"], dtype=torch.float32)
        else:
            log_q = torch.log(torch.as_tensor(state["q"], dtype=torch.float32))
        if log_q.shape != (self.num_groups,):
            raise ValueError(f"state q must have shape [{self.num_groups}]; got {tuple(log_q.shape)}")
        self.step_size = float(state["step_size"])
        self._log_q = (log_q - torch.logsumexp(log_q, dim=0)).to(self._log_q.device)


# ---------------------------------------------------------------------------------------------
# reweighting and resampling


def group_balanced_weights(groups: Tensor, num_groups: int, *, labels: Tensor | None = None) -> Tensor:
    """Per-example loss weights that give every group the same total weight, mean 1.

    Without ``labels``: inverse group frequency, ``w_i = n_known / (G_present * n_{g_i})``, so each
    group present contributes equally however rare it is. With ``labels``: Kamiran & Calders'
    (2012) reweighing, ``w_i = P(g_i) * P(y_i) / P(g_i, y_i)``, which makes group and label
    statistically independent in the weighted data (it also corrects a group whose labels are
    skewed, not only a rare group). Frequencies come from ``groups`` itself (a batch or a whole
    split). Examples with group ``-1`` get weight 1 before the final rescaling to mean 1.

    Example:
        >>> w = group_balanced_weights(torch.tensor([0, 0, 0, 1]), num_groups=2)
        >>> [round(v, 4) for v in w.tolist()]  # the lone group-1 example counts as much as group 0
        [0.6667, 0.6667, 0.6667, 2.0]
    """
    groups = _checked_groups(groups, num_groups)
    batch = groups.shape[0]
    weights = torch.ones(batch, dtype=torch.float32, device=groups.device)
    known = groups >= 0
    g = groups[known]
    if g.numel() == 0:
        return weights
    n_known = float(g.numel())
    group_counts = torch.bincount(g, minlength=num_groups).to(torch.float32)
    if labels is None:
        n_present = float((group_counts > 0).sum())
        weights[known] = n_known / (n_present * group_counts[g])
    else:
        if labels.shape != groups.shape or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class ids of shape [{batch}]; "
                             f"got dtype {labels.dtype}, shape {tuple(labels.shape)}")
        y = labels.to(device=groups.device, dtype=torch.long)[known]
        if bool(y.min() < 0):
            raise ValueError(f"labels must be >= 0; got {int(y.min())}")
        num_classes = int(y.max()) + 1
        label_counts = torch.bincount(y, minlength=num_classes).to(torch.float32)
        cell_counts = torch.bincount(g * num_classes + y, minlength=num_groups * num_classes).to(torch.float32)
        weights[known] = group_counts[g] * label_counts[y] / (n_known * cell_counts[g * num_classes + y])
    return weights / weights.mean()


def group_balanced_sampler_weights(all_groups: Tensor | object) -> Tensor:
    """Sampling weights over a whole split for ``torch.utils.data.WeightedRandomSampler``.

    Resampling instead of reweighting: each group present is drawn equally often, while examples of
    unknown group (``-1``) keep their uniform share ``1/N``. Known examples get
    ``(n_known / N) / (G_present * n_g)``; the weights sum to 1 (float64, as the sampler uses).

    Example:
        >>> w = group_balanced_sampler_weights([0, 0, 0, 1])
        >>> sampler = torch.utils.data.WeightedRandomSampler(w, num_samples=4)
        >>> [round(v, 4) for v in w.tolist()]
        [0.1667, 0.1667, 0.1667, 0.5]
    """
    groups = torch.as_tensor(all_groups)
    if groups.dim() != 1 or groups.numel() == 0:
        raise ValueError(f"all_groups must be a non-empty 1-D sequence of group ids; got shape {tuple(groups.shape)}")
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"all_groups must hold integer group ids (-1 = unknown); got dtype {groups.dtype}")
    groups = groups.to(torch.long)
    if bool(groups.min() < -1):
        raise ValueError(f"all_groups must be >= -1 (-1 = unknown); got {int(groups.min())}")
    total = groups.numel()
    weights = torch.full((total,), 1.0 / total, dtype=torch.float64, device=groups.device)
    known = groups >= 0
    g = groups[known]
    if g.numel():
        counts = torch.bincount(g).to(torch.float64)
        n_present = float((counts > 0).sum())
        weights[known] = (g.numel() / total) / (n_present * counts[g])
    return weights


def _checked_groups(groups: Tensor, num_groups: int) -> Tensor:
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be an integer >= 1; got {num_groups!r}")
    if groups.dim() != 1:
        raise ValueError(f"groups must have shape [B]; got shape {tuple(groups.shape)}")
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"groups must hold integer group ids (-1 = unknown); got dtype {groups.dtype}")
    groups = groups.to(torch.long)
    if groups.numel() and bool((groups.min() < -1) | (groups.max() >= num_groups)):
        raise ValueError(f"groups must lie in -1..{num_groups - 1}; got values "
                         f"{int(groups.min())}..{int(groups.max())}")
    return groups


# ---------------------------------------------------------------------------------------------
# registries


@dataclass(frozen=True)
class FairnessMethod:
    """One way of making training fairness-aware, as the fairness space names it.

    ``kind`` says how the trial code uses it: ``"penalty"`` (``loss + lam * fn(logits, labels,
    groups)``), ``"reducer"`` (replaces the mean of the per-example loss) or ``"weights"`` (per-example
    loss weights).
    """

    name: str
    kind: str
    description: str
    citation: str


FAIRNESS_PENALTIES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "equal_opportunity": equal_opportunity_penalty,
    "equalized_odds": equalized_odds_penalty,
    "demographic_parity": demographic_parity_penalty,
}

FAIRNESS_METHODS: dict[str, FairnessMethod] = {m.name: m for m in (
    FairnessMethod("equal_opportunity", "penalty",
                   "spread of soft true-positive rates across groups (RMS over classes)",
                   "Hardt, Price & Srebro 2016, Equality of Opportunity in Supervised Learning"),
    FairnessMethod("equalized_odds", "penalty",
                   "larger of the soft TPR and FPR spreads across groups",
                   "Hardt, Price & Srebro 2016, Equality of Opportunity in Supervised Learning"),
    FairnessMethod("demographic_parity", "penalty",
                   "spread of the mean predicted probability per group",
                   "Zafar et al. 2017, Fairness Constraints; Agarwal et al. 2018, A Reductions Approach "
                   "to Fair Classification"),
    FairnessMethod("group_dro", "reducer",
                   "minimise the loss of the worst group via online exponentiated-gradient group weights",
                   "Sagawa et al. 2020, Distributionally Robust Neural Networks (ICLR)"),
    FairnessMethod("group_reweight", "weights",
                   "per-example weights that balance groups (and groups x labels)",
                   "Kamiran & Calders 2012, Data Preprocessing Techniques for Classification without "
                   "Discrimination"),
)}
