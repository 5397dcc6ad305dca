"""Unstructured pruning by magnitude or movement: the space a trial samples it from, and the masks it applies.

Which weights: the ``nn.Linear`` weights of the encoder (attention projections and feed-forward
layers). Embeddings and the classification head are left dense by default, as in Gordon et al.
(2020) and Chen et al. (2020), because pruning them mostly measures vocabulary loss; both can be
included. Biases and LayerNorm parameters are never pruned.

How: ``global`` ranks all prunable weights together (layers that matter less lose more);
``layer`` gives every matrix the same sparsity. The smallest ``round(sparsity * n)`` magnitudes are
zeroed exactly (ties broken by position), so the achieved sparsity equals the target. The masks
are re-applied after every optimizer step, so pruned weights stay exactly zero through training.

Which criterion: ``magnitude`` keeps the largest ``|w|``; ``movement`` (Sanh et al. 2020, "Movement
Pruning") keeps the weights that fine-tuning moves *away from zero*, scored by the accumulated
``S = -sum_t dL/dw_t * w_t`` (:class:`MovementScores`). Movement needs training before it prunes,
so it is searched only with the ``gradual`` and ``iterative`` schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.sampling import suggest_choice, suggest_float, suggest_int, suggest_weight
from fairfront.spaces.schedules import SCHEDULES, SparsitySchedule

__all__ = ["PruningSpace", "PruningConfig", "MagnitudePruner", "ScheduledPruning", "MovementScores",
           "prunable_weights", "CRITERIA"]

SCOPES = ("global", "layer")
CRITERIA = ("magnitude", "movement")


@dataclass(frozen=True)
class PruningConfig:
    """One trial's pruning setting."""

    sparsity: float
    schedule: SparsitySchedule
    scope: str = "global"
    include_embeddings: bool = False
    include_classifier: bool = False
    fairness_mix: float = 0.0
    criterion: str = "magnitude"


@dataclass(frozen=True)
class PruningSpace:
    """Ranges of ``[space.pruning]``; :meth:`sample` draws a :class:`PruningConfig`."""

    sparsity: tuple[float, float] = (0.3, 0.9)
    schedules: tuple[str, ...] = ("one_shot", "gradual")
    scopes: tuple[str, ...] = ("global",)
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.5, 0.8)
    frequency: tuple[int, int] = (5, 20)
    iterations: tuple[int, int] = (2, 5)
    include_embeddings: bool = False
    include_classifier: bool = False
    fairness_mix: tuple[float, float] = (0.0, 0.0)
    criteria: tuple[str, ...] = ("magnitude",)

    @classmethod
    def from_table(cls, t: Table) -> PruningSpace:
        space = cls(
            sparsity=t.range("sparsity", cls.sparsity, low=0.0, high=0.99),
            schedules=t.strings("schedule", cls.schedules, choices=SCHEDULES),
            scopes=t.strings("scope", cls.scopes, choices=SCOPES),
            start=t.range("start", cls.start, low=0.0, high=1.0),
            end=t.range("end", cls.end, low=0.0, high=1.0),
            frequency=t.range("frequency", cls.frequency, low=1, integer=True),
            iterations=t.range("iterations", cls.iterations, low=1, integer=True),
            include_embeddings=t.boolean("include_embeddings", False),
            include_classifier=t.boolean("include_classifier", False),
            fairness_mix=t.range("fairness_mix", cls.fairness_mix, low=0.0, high=1.0),
            criteria=t.strings("criterion", cls.criteria, choices=CRITERIA),
        )
        if "movement" in space.criteria and set(space.schedules) == {"one_shot"}:
            raise ConfigError(t.key("criterion"), list(space.criteria), "'magnitude' with schedule = ['one_shot'] "
                              "(movement scores need training steps before the weights are pruned)")
        if space.start[1] > space.end[0]:
            raise ConfigError(t.key("start"), list(space.start),
                              f"a window that starts before it ends (start <= {space.end[0]}, the lowest end)")
        t.done()
        return space

    def sample(self, trial) -> PruningConfig:
        sparsity = suggest_float(trial, "pruning.sparsity", self.sparsity)
        kind = suggest_choice(trial, "pruning.schedule", self.schedules)
        scope = suggest_choice(trial, "pruning.scope", self.scopes)
        start, end, frequency, iterations = 0.0, 0.75, 10, 4
        if kind != "one_shot":
            start = suggest_float(trial, "pruning.start", self.start)
            end = suggest_float(trial, "pruning.end", self.end)
        if kind == "gradual":
            frequency = suggest_int(trial, "pruning.frequency", self.frequency)
        if kind == "iterative":
            iterations = suggest_int(trial, "pruning.iterations", self.iterations)
        schedule = SparsitySchedule(kind, sparsity, start, end, frequency, iterations)
        criteria = tuple(c for c in self.criteria if kind != "one_shot" or c != "movement")
        criterion = suggest_choice(trial, "pruning.criterion", criteria)
        mix = 0.0
        if criterion == "magnitude":  # the fairness mix re-weights magnitudes (see fair_compression)
            lo, hi = self.fairness_mix  # a range from 0 keeps plain magnitude pruning (mix exactly 0) in the space
            mix = suggest_weight(trial, "pruning.fairness_mix", self.fairness_mix, allow_zero=lo == 0 < hi, log=False)
        return PruningConfig(sparsity, schedule, scope, self.include_embeddings, self.include_classifier, mix,
                             criterion)


def prunable_weights(model: nn.Module, *, include_embeddings: bool = False,
                     include_classifier: bool = False) -> dict[str, nn.Parameter]:
    """The weight matrices magnitude pruning may zero, by parameter name."""
    base = getattr(model, "base_model", model)
    head_prefix = "" if base is model else model.base_model_prefix + "."
    weights: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            in_encoder = ".encoder." in f".{name}."
            in_head = bool(head_prefix) and not name.startswith(head_prefix)
            if in_encoder or (include_classifier and in_head):
                weights[f"{name}.weight"] = module.weight
        elif isinstance(module, nn.Embedding) and include_embeddings:
            weights[f"{name}.weight"] = module.weight
    if not weights:
        raise ValueError("no prunable encoder weights found: the model has no nn.Linear under '.encoder.'")
    return weights


class MagnitudePruner:
    """Keeps binary masks over ``weights`` and applies them in place.

    Example:
        >>> lin = nn.Linear(4, 4)
        >>> pruner = MagnitudePruner({"w": lin.weight})
        >>> pruner.prune_to(0.5)
        >>> round(pruner.sparsity(), 2)
        0.5
    """

    def __init__(self, weights: dict[str, nn.Parameter], scope: str = "global",
                 scores: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None):
        if scope not in SCOPES:
            raise ValueError(f"pruning scope {scope!r} is unknown; allowed: {', '.join(SCOPES)}")
        self.weights = weights
        self.scope = scope
        self.scores = scores
        self.masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        self._scales: list[torch.Tensor] | None = None  # masks in the weights' dtypes, for apply()
        self.target = 0.0

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Recompute masks so exactly ``round(sparsity * n)`` weights are zero, then apply them.

        The importance is ``|w|``, or what ``scores`` maps the magnitudes to (fairness-aware
        pruning mixes in each weight's effect on the group gap). Already-pruned weights score zero,
        so they rank lowest and stay pruned as sparsity grows.
        """
        self.target = sparsity
        flat, importance = self._magnitudes()
        if self.scores is not None:
            importance = self.scores(importance)
            flat = torch.cat([importance[name].flatten() for name in self.weights])
        if self.scope == "global":
            masks = _smallest_mask(flat, sparsity)
            offset = 0
            for name, w in self.weights.items():
                n = w.numel()
                self.masks[name] = masks[offset:offset + n].view_as(w)
                offset += n
        else:
            for name, w in self.weights.items():
                self.masks[name] = _smallest_mask(importance[name].flatten(), sparsity).view_as(w)
        self._scales = [self.masks[name].to(w.dtype) for name, w in self.weights.items()]
        self.apply()

    def _magnitudes(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``|w|`` in float32, written straight into one flat buffer, and each weight's view of it."""
        first = next(iter(self.weights.values()))
        flat = torch.empty(sum(w.numel() for w in self.weights.values()), dtype=torch.float32, device=first.device)
        views, offset = {}, 0
        for name, w in self.weights.items():
            view = flat[offset:offset + w.numel()].view_as(w)
            if w.dtype == torch.float32:
                torch.abs(w.detach(), out=view)
            else:
                view.copy_(w.detach()).abs_()
            views[name] = view
            offset += w.numel()
        return flat, views

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (call after every optimizer step).

        One fused multiply over all weights by masks converted once per :meth:`prune_to`: this
        runs every step, so it must not allocate.
        """
        if self._scales is None:
            self._scales = [self.masks[name].to(w.dtype) for name, w in self.weights.items()]
        torch._foreach_mul_(list(self.weights.values()), self._scales)

    def sparsity(self) -> float:
        """Fraction of the prunable weights that are exactly zero now."""
        zeros = sum(int((w == 0).sum()) for w in self.weights.values())
        total = sum(w.numel() for w in self.weights.values())
        return zeros / total


class ScheduledPruning:
    """A training-loop hook: follows the sparsity schedule before each step, keeps pruned weights at zero after it."""

    def __init__(self, pruner: MagnitudePruner, schedule: SparsitySchedule):
        self.pruner, self.schedule = pruner, schedule

    def before_step(self, step: int, total: int) -> None:
        target = self.schedule.at(step, total)
        if target != self.pruner.target:
            self.pruner.prune_to(target)

    def after_step(self, step: int, total: int) -> None:  # noqa: ARG002 - the hook's signature
        self.pruner.apply()


class MovementScores:
    """Movement importance (Sanh et al. 2020): ``S = -sum_t dL/dw_t * w_t`` over the training steps.

    A training-loop hook: ``after_backward`` adds this step's ``-grad * w`` (the raw gradient,
    before clipping). A weight that training pushes away from zero gains score, one it pulls towards
    zero loses it, whatever its size. Pass :meth:`scores` to :class:`MagnitudePruner`: weights
    already pruned (exactly zero) score ``-inf``, so they stay pruned as the sparsity grows; before
    any step has been seen the magnitudes are used, since there is no movement to rank by yet.
    """

    def __init__(self, weights: dict[str, nn.Parameter]):
        self.weights = weights
        self.totals = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}
        self.steps = 0

    @torch.no_grad()
    def after_backward(self, step: int, total: int) -> None:  # noqa: ARG002 - the hook's signature
        for name, w in self.weights.items():
            if w.grad is not None:  # in place, in float32: this runs every training step
                self.totals[name].addcmul_(w.grad, w, value=-1.0)
        self.steps += 1

    def scores(self, magnitudes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.steps == 0:
            return magnitudes
        return {name: torch.where(magnitudes[name] > 0, self.totals[name], torch.full_like(self.totals[name], -math.inf))
                for name in magnitudes}


def _smallest_mask(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that drops exactly the ``round(sparsity * n)`` smallest values (ties: lowest index first).

    The cut is the k-th smallest value, found by selection rather than ``topk``: on a CPU
    ``numpy.partition`` is about ten times faster than ``torch.topk`` for the ten million weights
    of a MiniLM encoder, and a gradual schedule recomputes the cut many times per trial.
    """
    n = values.numel()
    k = int(round(sparsity * n))
    if k <= 0 or k >= n:
        return torch.full((n,), k <= 0, dtype=torch.bool, device=values.device)
    if values.device.type == "cpu":
        cut = float(np.partition(values.detach().numpy(), k - 1)[k - 1])
    else:
        cut = float(torch.kthvalue(values, k).values)
    below = values < cut
    keep = ~below
    missing = k - int(torch.count_nonzero(below))
    if missing > 0:  # values equal to the cut: drop as many as needed to make exactly k
        keep[torch.nonzero(values == cut).flatten()[:missing]] = False
    return keep
