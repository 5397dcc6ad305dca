"""Magnitude pruning hits its target exactly and pruned weights stay zero through training."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.loop import TrainSettings, train
from fairfront.spaces import pruning
from fairfront.spaces.distillation import distillation_loss
from fairfront.spaces.pruning import MagnitudePruner, MovementScores, PruningSpace, ScheduledPruning, prunable_weights
from fairfront.spaces.schedules import SparsitySchedule


def tiny_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3))


def random_split(n: int = 64, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 60, size=rng.integers(4, 12)), [3]]) for _ in range(n)]
    return EncodedSplit(ids, rng.integers(0, 3, size=n), rng.integers(0, 2, size=n))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.1, 0.5, 0.83, 0.97])
def test_achieved_sparsity_equals_target(scope: str, target: float) -> None:
    model = tiny_model()
    pruner = MagnitudePruner(prunable_weights(model), scope=scope)
    pruner.prune_to(target)
    assert abs(pruner.sparsity() - target) < 0.005
    if scope == "layer":
        for w in pruner.weights.values():
            assert abs(float((w == 0).float().mean()) - target) < 0.005 + 1 / w.numel()


def test_global_scope_prunes_the_smallest_magnitudes() -> None:
    model = tiny_model()
    weights = prunable_weights(model)
    pruner = MagnitudePruner(weights)
    before = torch.cat([w.detach().abs().flatten() for w in weights.values()]).clone()
    pruner.prune_to(0.5)
    kept = torch.cat([m.flatten() for m in pruner.masks.values()])
    assert before[~kept].max() <= before[kept].min()


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.51, 0.9, 1.0])
def test_the_cut_drops_exactly_the_k_smallest_even_among_ties(sparsity: float) -> None:
    """Many equal scores (already-pruned zeros, -inf movement scores, repeated values) at the cut."""
    from fairfront.spaces.pruning import _smallest_mask

    values = torch.tensor([0.0] * 30 + [-math.inf] * 10 + [0.5] * 25 + [2.0, 1.0, 3.0] * 5 + [0.25] * 20)
    values = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))]
    k = int(round(sparsity * len(values)))
    keep = _smallest_mask(values, sparsity)
    assert int((~keep).sum()) == k
    order = sorted(range(len(values)), key=lambda i: (float(values[i]), i))  # value, then lowest index
    assert sorted(torch.nonzero(~keep).flatten().tolist()) == sorted(order[:k])


def _drop_first(order: torch.Tensor, k: int) -> torch.Tensor:
    """The reference keep-mask: the first k of a stable sort's ``order`` are the k smallest, lowest index first
    among ties."""
    keep = torch.ones(len(order), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


def _count_full_partitions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    full = pruning._keep_by_partition

    def counted(x: np.ndarray, k: int) -> np.ndarray:
        calls.append(k)
        return full(x, k)

    monkeypatch.setattr(pruning, "_keep_by_partition", counted)
    return calls


def _large(seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """Just above the size from which the cut is bracketed by a sample."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(pruning._BRACKET_MIN + 150_000, generator=g), g


def _mostly_zeros(g: torch.Generator, values: torch.Tensor) -> torch.Tensor:
    values = values.abs()  # a gradual schedule's magnitudes: 80% already pruned to exactly zero
    values[torch.randperm(len(values), generator=g)[: round(0.8 * len(values))]] = 0.0
    return values


def _few_values(g: torch.Generator, values: torch.Tensor) -> torch.Tensor:
    return torch.tensor([0.1, 0.2, 0.5, 1.0])[torch.randint(0, 4, values.shape, generator=g)]


def _rounded(g: torch.Generator, values: torch.Tensor) -> torch.Tensor:
    return torch.round(values * 300) / 300  # a few hundred copies of each value near the cut, inside the bracket


def _some_minus_inf(g: torch.Generator, values: torch.Tensor) -> torch.Tensor:
    values[torch.rand(values.shape, generator=g) < 0.1] = -math.inf  # movement scores of pruned weights
    return values


@pytest.mark.parametrize(("make", "sparsities"), [
    (lambda g, v: v, (0.001, 0.3, 0.5, 0.97)),
    (_mostly_zeros, (0.5, 0.8, 0.8 + 1e-6, 0.81, 0.9)),  # inside the zeros, at their end, just above, above
    (_few_values, (0.2, 0.25, 0.5, 0.6)),
    (_rounded, (0.3, 0.5)),
    (_some_minus_inf, (0.05, 0.1, 0.5)),
], ids=["normal", "80% zeros", "four distinct values", "rounded", "-inf"])
def test_the_bracketed_cut_drops_the_same_k_as_a_stable_sort(make, sparsities, monkeypatch) -> None:
    values, g = _large(0)
    values = make(g, values)
    full_partitions = _count_full_partitions(monkeypatch)
    order = torch.sort(values, stable=True).indices
    for sparsity in sparsities:
        k = int(round(sparsity * len(values)))
        keep = pruning._smallest_mask(values, sparsity)
        assert int((~keep).sum()) == k, sparsity
        assert torch.equal(keep, _drop_first(order, k)), sparsity
    assert full_partitions == []  # the sample bracketed every cut: this tested the bracketing, not the fallback


@pytest.mark.parametrize(("sampled", "spread"), [(10.0, 1.0), (-10.0, 1.0), (-10.0, 0.0)],
                         ids=["sample above the cut", "sample below the cut", "sample of one value below the cut"])
def test_a_sample_that_misses_the_cut_falls_back_to_the_full_partition(sampled: float, spread: float,
                                                                       monkeypatch) -> None:
    """Exactly the sampled positions hold outliers, so the sample brackets the wrong values."""
    values, g = _large(1)
    sample = torch.tensor(pruning._sample_index(len(values), pruning._SAMPLE))
    values[sample] = sampled + spread * torch.rand(len(sample), generator=g)
    full_partitions = _count_full_partitions(monkeypatch)
    keep = pruning._smallest_mask(values, 0.4)
    k = int(round(0.4 * len(values)))
    assert full_partitions == [k]
    assert torch.equal(keep, _drop_first(torch.sort(values, stable=True).indices, k))


def test_scores_in_another_dtype_are_ranked_in_it_and_identity_scores_change_nothing() -> None:
    w = nn.Parameter(torch.ones(1, 6))
    exact = torch.tensor([[1 + 3e-12, 1 + 1e-12, 1.0, 1 + 2e-12, 1 + 5e-12, 1 + 4e-12]], dtype=torch.float64)
    pruner = MagnitudePruner({"w": w}, scores=lambda magnitudes: {"w": exact})  # equal once rounded to float32
    pruner.prune_to(0.5)
    assert pruner.masks["w"].tolist() == [[True, False, False, False, True, True]]  # float32 would drop 0, 1, 2
    model = tiny_model()
    plain = MagnitudePruner(prunable_weights(model))
    plain.prune_to(0.6)
    model = tiny_model()
    same = MagnitudePruner(prunable_weights(model), scores=lambda magnitudes: magnitudes)
    same.prune_to(0.3)
    same.prune_to(0.6)
    assert all(torch.equal(plain.masks[name], same.masks[name]) for name in plain.masks)


def test_only_encoder_linears_are_pruned_by_default() -> None:
    model = tiny_model()
    names = prunable_weights(model)
    assert all(".encoder." in n for n in names)
    assert not any("embeddings" in n or "classifier" in n for n in names)
    with_head = prunable_weights(model, include_classifier=True, include_embeddings=True)
    assert "classifier.weight" in with_head and any("word_embeddings" in n for n in with_head)


def test_pruned_weights_stay_exactly_zero_through_training() -> None:
    model = tiny_model()
    pruner = MagnitudePruner(prunable_weights(model))
    schedule = SparsitySchedule("gradual", 0.7, start=0.0, end=0.5, frequency=2)
    split = random_split()
    train(model, split, TrainSettings(epochs=4, batch_size=8, learning_rate=1e-2, warmup_fraction=0.0),
          loss_fn=lambda logits, b: F.cross_entropy(logits, b["labels"]), seed=0, pad_id=0,
          hooks=[ScheduledPruning(pruner, schedule)])
    assert pruner.sparsity() == pytest.approx(0.7, abs=0.005)
    for name, w in pruner.weights.items():
        assert torch.all(w[~pruner.masks[name]] == 0), name


def test_distillation_loss_is_cross_entropy_at_alpha_zero() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.equal(distillation_loss(s, t, y, temperature=3.0, alpha=0.0),
                       F.cross_entropy(s, y, reduction="none"))
    # alpha = 1: pure soft-target term, zero when student equals teacher
    assert torch.allclose(distillation_loss(t, t, y, temperature=2.0, alpha=1.0), torch.zeros(8), atol=1e-6)
    soft = distillation_loss(s, t, y, temperature=2.0, alpha=1.0)
    expected = 4.0 * (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1)
    assert torch.allclose(soft, expected, atol=1e-6)


def test_a_fairness_mix_range_from_zero_keeps_plain_pruning_exactly_in_the_space() -> None:
    space = PruningSpace(sparsity=(0.5, 0.5), schedules=("one_shot",), fairness_mix=(0.0, 0.8))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    mixes = [space.sample(study.ask()).fairness_mix for _ in range(40)]
    assert 0.0 in mixes and any(0.0 < m <= 0.8 for m in mixes)
    assert "pruning.fairness_mix_zero" in study.trials[0].params
    fixed = PruningSpace(fairness_mix=(0.2, 0.8))  # no zero in the range: no switch
    trial = study.ask()
    assert 0.2 <= fixed.sample(trial).fairness_mix <= 0.8 and "pruning.fairness_mix_zero" not in trial.params


def test_movement_scores_accumulate_minus_gradient_times_weight() -> None:
    lin = torch.nn.Linear(3, 2)
    movement = MovementScores({"w": lin.weight})
    expected = torch.zeros_like(lin.weight)
    for x in (torch.randn(4, 3), torch.randn(4, 3)):
        lin.zero_grad()
        lin(x).pow(2).sum().backward()
        expected -= lin.weight.grad * lin.weight.detach()
        movement.after_backward(0, 2)
    torch.testing.assert_close(movement.totals["w"], expected)


def test_movement_keeps_weights_moving_away_from_zero_not_the_largest() -> None:
    w = torch.nn.Parameter(torch.tensor([[5.0, 4.0, 0.5, 0.25]]))
    movement = MovementScores({"w": w})
    assert movement.scores({"w": w.detach().abs()})["w"].tolist() == [[5.0, 4.0, 0.5, 0.25]]  # no step yet: magnitude
    w.grad = torch.tensor([[1.0, 1.0, -1.0, -1.0]])  # descent shrinks the large weights and grows the small ones
    movement.after_backward(0, 1)
    pruner = MagnitudePruner({"w": w}, scores=movement.scores)
    pruner.prune_to(0.5)
    assert pruner.masks["w"].tolist() == [[False, False, True, True]]
    assert w.detach().tolist() == [[0.0, 0.0, 0.5, 0.25]]
    assert movement.scores({"w": w.detach().abs()})["w"][0, :2].tolist() == [-math.inf, -math.inf]  # stay pruned


def _prune_while_training(movement: bool) -> tuple[MagnitudePruner, MovementScores | None]:
    model = tiny_model()
    weights = prunable_weights(model)
    scores = MovementScores(weights) if movement else None
    pruner = MagnitudePruner(weights, scores=scores.scores if scores else None)
    schedule = SparsitySchedule("gradual", 0.6, start=0.2, end=0.6, frequency=2)
    train(model, random_split(), TrainSettings(epochs=3, batch_size=8, learning_rate=1e-2, warmup_fraction=0.0),
          loss_fn=lambda logits, b: F.cross_entropy(logits, b["labels"]), seed=0, pad_id=0,
          hooks=[h for h in (scores, ScheduledPruning(pruner, schedule)) if h is not None])
    return pruner, scores


def test_movement_pruning_in_training_reaches_the_target_keeps_zeros_and_differs_from_magnitude() -> None:
    pruner, movement = _prune_while_training(movement=True)
    assert movement.steps > 0 and pruner.sparsity() == pytest.approx(0.6, abs=0.005)
    for name, w in pruner.weights.items():
        assert torch.all(w[~pruner.masks[name]] == 0), name
    plain, _ = _prune_while_training(movement=False)
    kept = torch.cat([m.flatten() for m in pruner.masks.values()])
    kept_plain = torch.cat([m.flatten() for m in plain.masks.values()])
    assert (kept != kept_plain).float().mean() > 0.05  # another criterion, another set of weights


def test_movement_is_searched_only_with_schedules_that_train_before_pruning() -> None:
    space = PruningSpace(schedules=("one_shot", "gradual"), criteria=("magnitude", "movement"), fairness_mix=(0.0, 0.5))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    configs = [space.sample(study.ask()) for _ in range(40)]
    assert all(c.criterion == "magnitude" for c in configs if c.schedule.kind == "one_shot")
    assert any(c.criterion == "movement" for c in configs)
    assert all(c.fairness_mix == 0.0 for c in configs if c.criterion == "movement")
