"""Unstructured pruning by magnitude or movement: the masks a trial applies.

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
so it is searched only with the ``gradual`` and ``iterative`` schedules. A ``fairness_mix`` above
zero makes magnitude pruning fairness-aware (:func:`fairness_aware_scores`): weights the group gap
depends on are kept. Each criterion is a :class:`PruningCriterion` in :data:`PRUNING_CRITERIA`.

Its ``[space.pruning]`` table, config and family are :mod:`fairfront.spaces.pruning_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fairfront.spaces import fair_compression
from fairfront.spaces.family import FamilyTrial, TrialContext
from fairfront.spaces.pruning_family import CRITERIA, SCOPES, PruningConfig, PruningFamily, PruningSpace
from fairfront.spaces.schedules import SparsitySchedule

__all__ = ["PruningSpace", "PruningConfig", "PruningFamily", "MagnitudePruner", "ScheduledPruning", "MovementScores",
           "PruningCriterion", "PRUNING_CRITERIA", "prunable_weights", "fairness_aware_scores", "CRITERIA"]

ScoreFunction = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""Maps the weights' current magnitudes to the importance they are ranked by (higher = keep)."""


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

    def __init__(self, weights: dict[str, nn.Parameter], scope: str = "global", scores: ScoreFunction | None = None):
        if scope not in SCOPES:
            raise ValueError(f"pruning scope {scope!r} is unknown; allowed: {', '.join(SCOPES)}")
        self.weights = weights
        self.scope = scope
        self.scores = scores
        self.masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        self._scales: list[torch.Tensor] | None = None  # masks in the weights' dtypes, for apply()
        self._flat: torch.Tensor | None = None  # |w| of all weights, refilled by each prune_to
        self._views: dict[str, torch.Tensor] = {}
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
            if self.scope == "global":
                flat = self._gather(flat, importance)
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
        if self._scales is None:
            self._scales = [self.masks[name].to(w.dtype) for name, w in self.weights.items()]
        else:  # in place: ten million fresh floats cost more to allocate than to write
            for scale, name in zip(self._scales, self.weights):
                scale.copy_(self.masks[name])
        self.apply()

    def _magnitudes(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``|w|`` in float32, written straight into one flat buffer, and each weight's view of it.

        The buffer is kept between calls: allocating tens of megabytes afresh (page faults) takes
        longer than computing the magnitudes into it.
        """
        first = next(iter(self.weights.values()))
        if self._flat is None or self._flat.device != first.device:
            self._flat = torch.empty(sum(w.numel() for w in self.weights.values()), dtype=torch.float32,
                                     device=first.device)
            self._views, offset = {}, 0
            for name, w in self.weights.items():
                self._views[name] = self._flat[offset:offset + w.numel()].view_as(w)
                offset += w.numel()
        for name, w in self.weights.items():
            view = self._views[name]
            if w.dtype == torch.float32:
                torch.abs(w.detach(), out=view)
            else:
                view.copy_(w.detach()).abs_()
        return self._flat, dict(self._views)

    def _gather(self, flat: torch.Tensor, importance: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scores as one flat tensor, written over the magnitudes in ``flat`` where that is exact.

        In place when every score tensor is float32 like ``flat`` and either is its own view of
        ``flat`` or shares no memory with it; otherwise concatenated (in their own dtype), as before.
        """
        storage = flat.untyped_storage().data_ptr()
        pairs = [(importance[name], self._views[name]) for name in self.weights]
        if not all(t.dtype == v.dtype and t.device == v.device and t.shape == v.shape
                   and (t is v or t.untyped_storage().data_ptr() != storage) for t, v in pairs):
            return torch.cat([t.flatten() for t, _ in pairs])
        for t, v in pairs:
            if t is not v:
                v.copy_(t)
        return flat

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
    """A training-loop hook: follows the sparsity schedule before each step, keeps pruned weights at zero after it.

    ``cuda_graph_safe``: ``after_step`` multiplies the same weights by the same scale tensors every
    step (``prune_to``, before a step, rewrites the scales in place), so a captured training step
    may include it.
    """

    cuda_graph_safe = True

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

    ``cuda_graph_safe``: ``after_backward`` adds into the same score tensors from the same
    gradient tensors every step (a captured step zeroes gradients in place), so a captured step may
    include it. Inside a graph ``steps`` stops counting, which changes nothing: it is only asked
    whether any step has been seen, and a bucket's first step runs eagerly before its capture.
    """

    cuda_graph_safe = True

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
        return {name: torch.where(magnitudes[name] > 0, self.totals[name],
                                  torch.full_like(self.totals[name], -math.inf))
                for name in magnitudes}


class PruningCriterion:
    """How a trial's pruner ranks the weights: ``build`` gives its score function and the hooks it trains with."""

    name: str

    def build(self, weights: dict[str, nn.Parameter], config: PruningConfig,
              ctx: TrialContext) -> tuple[ScoreFunction | None, list[object]]:
        raise NotImplementedError


class MagnitudeCriterion(PruningCriterion):
    """``|w|``; with ``fairness_mix > 0`` mixed with each weight's effect on the group gap."""

    name = "magnitude"

    def build(self, weights, config, ctx):
        if config.fairness_mix > 0:
            return fairness_aware_scores(ctx.model, weights, ctx.calibration, config.fairness_mix), []
        return None, []


class MovementCriterion(PruningCriterion):
    """Movement scores accumulated over the training steps (a training-loop hook)."""

    name = "movement"

    def build(self, weights, config, ctx):
        movement = MovementScores(weights)
        return movement.scores, [movement]


PRUNING_CRITERIA: dict[str, PruningCriterion] = {c.name: c for c in (MagnitudeCriterion(), MovementCriterion())}


def fairness_aware_scores(model: nn.Module, weights: dict[str, nn.Parameter], batches: list[dict],
                          mix: float) -> ScoreFunction:
    """Importance = mix of |w| and |w * dP/dw| (P = equal-opportunity gap on a few training batches).

    The gradient of the gap is taken once, on the dense weights; at each pruning step the fair
    score is ``|w_now| * |dP/dw|``, so weights that shrink during training lose importance in both.
    """

    def gap(net, batch):
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        return fair_compression.equal_opportunity_gap(logits, batch)

    names = {id(p): n for n, p in model.named_parameters()}
    params = {names[id(w)]: w for w in weights.values()}
    fair = fair_compression.fairness_gradient_scores(model, batches, gap, params)
    grad_abs = {}
    for key, w in weights.items():
        w_abs = w.detach().abs().float()
        score = fair[names[id(w)]].float()
        grad_abs[key] = torch.where(w_abs > 0, score / w_abs.clamp_min(1e-12), torch.zeros_like(w_abs))

    def scores(magnitudes: dict) -> dict:
        fair_now = {k: magnitudes[k] * grad_abs[k] for k in magnitudes}
        return fair_compression.fairness_aware_importance(magnitudes, fair_now, mix=mix)

    return scores


def start_trial(config: PruningConfig, ctx: TrialContext) -> FamilyTrial:
    """The pruning family's hooks into one trial (:meth:`PruningFamily.start`)."""
    return _PruningTrial(config)


class _PruningTrial(FamilyTrial):
    def __init__(self, config: PruningConfig):
        self.config = config
        self.pruner: MagnitudePruner | None = None
        self.hooks: list[object] = []

    def _weights(self, ctx: TrialContext) -> dict[str, nn.Parameter]:
        return prunable_weights(ctx.model, include_embeddings=self.config.include_embeddings,
                                include_classifier=self.config.include_classifier)

    def prepare(self, ctx: TrialContext) -> None:
        if ctx.task != "classification":
            return  # nothing is trained: pruned at once, in without_training
        weights = self._weights(ctx)
        scores, hooks = PRUNING_CRITERIA[self.config.criterion].build(weights, self.config, ctx)
        self.pruner = MagnitudePruner(weights, scope=self.config.scope, scores=scores)
        self.hooks = [*hooks, ScheduledPruning(self.pruner, self.config.schedule)]

    def step_hooks(self) -> list[object]:
        return self.hooks

    def after_training(self, ctx: TrialContext) -> None:
        self.pruner.prune_to(self.config.sparsity)  # the schedule has reached it; make it exact for scoring
        ctx.record("achieved_sparsity", self.pruner.sparsity())

    def without_training(self, ctx: TrialContext) -> None:
        if self.config.schedule.kind != "one_shot" or self.config.fairness_mix > 0:
            raise ValueError("a masked_lm study prunes one-shot by magnitude only (nothing is trained)")
        pruner = MagnitudePruner(self._weights(ctx), scope=self.config.scope)
        pruner.prune_to(self.config.sparsity)
        ctx.record("achieved_sparsity", pruner.sparsity())


_BRACKET_MIN = 1 << 20  # below about a million values one partition of them all is as fast as bracketing
_SAMPLE = 1 << 16
_CHUNK = 1 << 18  # values per chunk of a scan: a megabyte of float32, which stays in cache


def _smallest_mask(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that drops exactly the ``round(sparsity * n)`` smallest values (ties: lowest index first).

    The cut is the k-th smallest value, found by selection rather than ``topk``: on a CPU
    ``numpy.partition`` is about ten times faster than ``torch.topk`` for the ten million weights
    of a MiniLM encoder, and a gradual schedule recomputes the cut many times per trial. For that
    many values even one full partition dominates, so a sample first brackets the cut and only the
    values inside the bracket are partitioned (:func:`_keep_by_bracket`); when the bracket misses,
    all values are partitioned as before. Either way the mask is the same.
    """
    n = values.numel()
    k = int(round(sparsity * n))
    if k <= 0 or k >= n:
        return torch.full((n,), k <= 0, dtype=torch.bool, device=values.device)
    if values.device.type == "cpu":
        x = values.detach().numpy()
        keep = _keep_by_bracket(x, k) if n >= _BRACKET_MIN and x.dtype.kind == "f" else None
        return torch.from_numpy(keep if keep is not None else _keep_by_partition(x, k))
    cut = float(torch.kthvalue(values, k).values)
    below = values < cut
    keep = ~below
    missing = k - int(torch.count_nonzero(below))
    if missing > 0:  # values equal to the cut: drop as many as needed to make exactly k
        keep[torch.nonzero(values == cut).flatten()[:missing]] = False
    return keep


def _keep_by_partition(x: np.ndarray, k: int) -> np.ndarray:
    """The keep-mask from the k-th smallest of all of ``x``, by one partition."""
    cut = np.partition(x, k - 1)[k - 1]
    below = np.less(x, cut)
    return _keep_from_below(x, below, cut, k - np.count_nonzero(below))


def _keep_by_bracket(x: np.ndarray, k: int) -> np.ndarray | None:
    """The keep-mask found by partitioning only the values between two order statistics of a sample.

    ``lo`` and ``hi`` lie a few standard deviations of the sample quantile below and above the cut's
    rank. Counting ``x <= lo`` and ``x < hi`` tells whether the cut is ``lo``, strictly between
    them (then only those values, about 2% of ``x``, are partitioned) or ``hi``; otherwise the
    sample missed and this returns None. The sample only decides how fast, never which mask. A
    mass of equal values (the zeros a gradual schedule has already pruned) sits at an end of the
    bracket, so it is counted, never partitioned.
    """
    n, m = len(x), _SAMPLE
    q = k / n
    margin = 4.0 * math.sqrt(m * q * (1.0 - q)) + 2.0
    i_lo, i_hi = math.floor(q * m - margin), math.ceil(q * m + margin)
    sample = np.sort(x[_sample_index(n, m)])
    lo = sample[i_lo] if i_lo >= 0 else x.dtype.type(-np.inf)
    hi = sample[i_hi] if i_hi < m else x.dtype.type(np.inf)

    at_most_lo, n_at_most_lo, index, band = _sweep(x, lo, hi)
    if k == n_at_most_lo:  # x <= lo are exactly the k smallest, with every value equal to the k-th among them
        return np.logical_not(at_most_lo, out=at_most_lo)
    if k < n_at_most_lo:  # the cut is lo itself, or the sample missed low
        below = np.less(x, lo, out=at_most_lo)
        n_below = np.count_nonzero(below)
        return _keep_from_below(x, below, lo, k - n_below) if n_below < k else None
    if not lo < hi:  # nothing lies between them: the sample missed high
        return None
    n_below_hi = n_at_most_lo + len(index)  # as lo < hi, x <= lo is part of x < hi
    if k > n_below_hi:  # the cut is hi itself, or the sample missed high
        if k > n_below_hi + np.count_nonzero(x == hi):
            return None
        at_most_lo[index] = True  # now x < hi
        return _keep_from_below(x, at_most_lo, hi, k - n_below_hi)

    j = k - n_at_most_lo - 1
    cut = np.partition(band, j)[j]
    drop = band < cut
    missing = k - n_at_most_lo - np.count_nonzero(drop)
    if missing > 0:  # the band holds every value equal to the cut, in index order
        drop[np.flatnonzero(band == cut)[:missing]] = True
    keep = np.logical_not(at_most_lo, out=at_most_lo)
    keep[index[drop]] = False
    return keep


def _sweep(x: np.ndarray, lo, hi) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """``x <= lo``, its count, and the positions and values of ``lo < x < hi``.

    One pass in chunks small enough to stay in cache, so ``x`` is read from memory once, not twice.
    """
    at_most_lo = np.empty(len(x), dtype=bool)
    scratch = np.empty(min(len(x), _CHUNK), dtype=bool)
    count, index, band = 0, [], []
    for start in range(0, len(x), _CHUNK):
        chunk, low = x[start:start + _CHUNK], at_most_lo[start:start + _CHUNK]
        count += np.count_nonzero(np.less_equal(chunk, lo, out=low))
        between = scratch[:len(chunk)]
        np.greater(np.less(chunk, hi, out=between), low, out=between)  # x < hi and not x <= lo
        at = np.flatnonzero(between)
        band.append(chunk[at])
        index.append(at + start)
    return at_most_lo, count, np.concatenate(index), np.concatenate(band)


def _keep_from_below(x: np.ndarray, below: np.ndarray, cut, missing: int) -> np.ndarray:
    """Turn ``below`` (``x < cut``) in place into the keep-mask, dropping also the first ``missing`` equal to the cut.

    Scans in chunks and stops at the last one it drops, rather than listing every equal value: at
    the cut there can be millions of them (already-pruned zeros).
    """
    for start in range(0, len(x), _CHUNK):
        if missing <= 0:
            break
        equal = x[start:start + _CHUNK] == cut
        found = np.count_nonzero(equal)
        if found >= missing:
            equal[np.flatnonzero(equal)[missing - 1] + 1:] = False
        below[start:start + _CHUNK] |= equal
        missing -= found
    return np.logical_not(below, out=below)


@functools.lru_cache(maxsize=4)
def _sample_index(n: int, m: int) -> np.ndarray:
    """``m`` fixed pseudo-random positions among ``n``: random, so that a layout's rows and heads do not bias them."""
    index = np.sort(np.random.default_rng(0).integers(0, n, m))  # sorted: read in memory order
    index.flags.writeable = False
    return index
