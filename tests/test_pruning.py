"""Magnitude pruning hits its target exactly and pruned weights stay zero through training."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from fairfront.objectives.data import EncodedSplit
from fairfront.objectives.training import TrainSettings, train
from fairfront.spaces.distillation import distillation_loss
from fairfront.spaces.pruning import MagnitudePruner, PruningSpace, prunable_weights
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

    class Hook:
        def before_step(self, step, total):
            pruner.prune_to(schedule.at(step, total)) if schedule.at(step, total) != pruner.target else None

        def after_step(self, step, total):
            pruner.apply()

    split = random_split()
    train(model, split, TrainSettings(epochs=4, batch_size=8, learning_rate=1e-2, warmup_fraction=0.0),
          loss_fn=lambda logits, b: F.cross_entropy(logits, b["labels"]), seed=0, pad_id=0, hooks=[Hook()])
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
