"""Forgetting weights and fairness-aware importance (fairfront.spaces.fair_compression)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fairfront.spaces.fair_compression import (
    FORGETTING_MODES,
    fairness_aware_importance,
    fairness_gradient_scores,
    forgetting_weights,
    recall_deficit,
)
from fairfront.spaces.fairness_losses import equal_opportunity_penalty

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logits(n=12, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen) * 2


# ---------------------------------------------------------------------------------------------
# forgetting weights


@pytest.mark.parametrize("mode", FORGETTING_MODES)
def test_strength_zero_gives_exactly_ones(mode):
    student, teacher = _logits(seed=1), _logits(seed=2)
    labels, groups = torch.arange(12) % 3, torch.arange(12) % 2
    w = forgetting_weights(student, teacher, labels, groups, strength=0.0, mode=mode,
                           group_recall_deficit=torch.rand(2, 3))
    assert torch.equal(w, torch.ones(12))


def test_disagreement_weights_by_hand():
    student = _logits(seed=1).requires_grad_(True)
    teacher = _logits(seed=2)
    labels = torch.zeros(12, dtype=torch.long)
    w = forgetting_weights(student, teacher, labels, strength=2.0)
    p = torch.softmax(student.detach(), dim=1)
    d = 1 - p[torch.arange(12), teacher.argmax(1)]
    expected = (1 + 2.0 * d) / (1 + 2.0 * d).mean()
    assert torch.allclose(w, expected)
    assert not w.requires_grad
    assert float(w.mean()) == pytest.approx(1.0)
    assert int(w.argmax()) == int(d.argmax())


def test_the_forgotten_example_outweighs_the_kept_one():
    teacher = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    student = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])  # forgot example 1
    w = forgetting_weights(student, teacher, torch.tensor([0, 0, 1]), strength=1.0)
    assert w[1] > 1.5 * w[0] and w[0] == w[2]


def test_group_recall_weights_follow_the_cell_deficit():
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    groups = torch.tensor([0, 0, 1, 1, -1, 1])
    deficit = torch.tensor([[0.0, -0.3], [0.5, float("nan")]])  # ahead and nan cells count as 0
    w = forgetting_weights(_logits(6, 2), None, labels, groups, strength=1.0, mode="group_recall",
                           group_recall_deficit=deficit)
    raw = torch.tensor([1.0, 1.0, 1.5, 1.0, 1.0, 1.0])
    assert torch.allclose(w, raw / raw.mean())


def test_both_averages_the_two_terms():
    student, teacher = _logits(6, 2, seed=3), _logits(6, 2, seed=4)
    labels, groups = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 0, 1, 1, 1, 0])
    deficit = torch.tensor([[0.1, 0.2], [0.8, 0.0]])
    d_dis = 1 - torch.softmax(student, 1)[torch.arange(6), teacher.argmax(1)]
    d_rec = deficit[groups, labels]
    w = forgetting_weights(student, teacher, labels, groups, strength=3.0, mode="both",
                           group_recall_deficit=deficit)
    raw = 1 + 3.0 * (d_dis + d_rec) / 2
    assert torch.allclose(w, raw / raw.mean())


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "forget"}, "mode must be one of"),
    ({"strength": -1.0}, "strength"),
    ({"teacher_logits": None}, "teacher_logits"),
    ({"mode": "group_recall", "groups": None}, "needs groups"),
    ({"mode": "group_recall", "group_recall_deficit": torch.zeros(2, 5)}, r"\[G, 3\]"),
    ({"mode": "group_recall", "group_recall_deficit": torch.zeros(1, 3)}, r"-1\.\.0"),
])
def test_forgetting_weights_reject_bad_input(kwargs, match):
    args = {"student_logits": _logits(4), "teacher_logits": _logits(4, seed=1),
            "labels": torch.tensor([0, 1, 2, 0]), "groups": torch.tensor([0, 1, 0, 1]),
            "strength": 1.0, "mode": "disagreement", "group_recall_deficit": torch.zeros(2, 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        forgetting_weights(**args)


def test_recall_deficit_by_hand_and_into_weights():
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, -1])
    teacher = labels.clone()
    student = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1, 0])  # lost one of group 1's positives
    student_logits = nn.functional.one_hot(student, 2).float()  # logits are arg-maxed
    deficit = recall_deficit(student_logits, teacher, labels, groups, num_groups=3, num_classes=2)
    assert torch.allclose(deficit, torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, 0.0]]))
    w = forgetting_weights(student_logits, None, labels, groups, strength=1.0, mode="group_recall",
                           group_recall_deficit=deficit)
    in_cell = (groups == 1) & (labels == 1)
    assert (w[in_cell] > 1).all() and (w[~in_cell] < 1).all()


# ---------------------------------------------------------------------------------------------
# fairness-aware importance


def test_mix_zero_returns_the_plain_scores_exactly():
    plain, fair = torch.rand(5, 4), torch.rand(5, 4) * 100
    assert torch.equal(fairness_aware_importance(plain, fair, mix=0.0), plain)
    plain_d = {"a": torch.rand(3), "b": torch.rand(2, 2)}
    fair_d = {"a": torch.rand(3), "b": torch.rand(2, 2)}
    out = fairness_aware_importance(plain_d, fair_d, mix=0.0)
    assert out.keys() == plain_d.keys() and all(torch.equal(out[k], plain_d[k]) for k in plain_d)


def test_mix_formula_scale_invariance_and_mix_one_ranking():
    plain, fair = torch.rand(50) + 0.1, torch.rand(50)
    got = fairness_aware_importance(plain, fair, mix=0.3)
    expected = plain.mean() * (0.7 * plain / plain.mean() + 0.3 * fair / fair.mean())
    assert torch.allclose(got, expected)
    # the fairness scores' units do not matter, only their shape
    assert torch.allclose(fairness_aware_importance(plain, fair * 1e6, mix=0.3), got)
    only_fair = fairness_aware_importance(plain, fair, mix=1.0)
    assert torch.equal(only_fair.argsort(), fair.argsort())


def test_a_weight_that_carries_the_gap_is_kept():
    plain = torch.tensor([1.0, 2.0, 3.0, 4.0])
    fair = torch.tensor([5.0, 0.0, 0.0, 0.0])

    def keep_one(scores):  # the weight pruned first
        return int(scores.argmin())

    assert keep_one(plain) == 0
    assert keep_one(fairness_aware_importance(plain, fair, mix=0.5)) != 0
    zero_fair = fairness_aware_importance(plain, torch.zeros(4), mix=0.5)
    assert torch.allclose(zero_fair, 0.5 * plain)


def test_dicts_are_normalised_together():
    plain = {"a": torch.rand(4) + 0.1, "b": torch.rand(6) + 0.1}
    fair = {"a": torch.rand(4) * 10, "b": torch.rand(6)}
    out = fairness_aware_importance(plain, fair, mix=0.4)
    flat = fairness_aware_importance(torch.cat([plain["a"], plain["b"]]), torch.cat([fair["a"], fair["b"]]), mix=0.4)
    assert torch.allclose(torch.cat([out["a"], out["b"]]), flat)


@pytest.mark.parametrize("plain, fair, mix, match", [
    (torch.ones(3), torch.ones(3), 1.5, r"\[0, 1\]"),
    (torch.ones(3), torch.ones(4), 0.5, "shapes differ"),
    (torch.ones(3), -torch.ones(3), 0.5, ">= 0"),
    ({"a": torch.ones(2)}, {"b": torch.ones(2)}, 0.5, "same keys"),
    ({"a": torch.ones(2)}, torch.ones(2), 0.5, "both be tensors or both be dicts"),
])
def test_fairness_aware_importance_rejects_bad_input(plain, fair, mix, match):
    with pytest.raises(ValueError, match=match):
        fairness_aware_importance(plain, fair, mix=mix)


# ---------------------------------------------------------------------------------------------
# fairness gradient scores


def _linear_setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    batches = []
    for _ in range(3):
        x = torch.randn(16, 3, generator=gen)
        groups = torch.randint(0, 2, (16,), generator=gen)
        x[:, 2] = groups.float() * 2  # feature 2 reveals the group
        batches.append((x, torch.randint(0, 2, (16,), generator=gen), groups))
    return model, batches


def _eo(model, batch):
    x, y, g = batch
    return equal_opportunity_penalty(model(x), y, g)


def test_scores_are_w_times_the_gradient_of_the_mean_penalty():
    model, batches = _linear_setup()
    names = ["0.weight", "2.weight", "2.bias"]
    scores = fairness_gradient_scores(model, batches, _eo, names)
    model.eval()
    params = dict(model.named_parameters())
    mean_penalty = sum(_eo(model, b) for b in batches) / len(batches)
    grads = torch.autograd.grad(mean_penalty, [params[n] for n in names])
    for name, grad in zip(names, grads):
        assert scores[name].shape == params[name].shape
        assert torch.allclose(scores[name], (params[name] * grad).abs().detach(), atol=1e-7)
    signed = fairness_gradient_scores(model, batches, _eo, names, signed=True)
    for name, grad in zip(names, grads):
        assert torch.allclose(signed[name], (-params[name] * grad).clamp(min=0).detach(), atol=1e-7)
        assert (signed[name] <= scores[name] + 1e-7).all()


def test_scoring_leaves_the_model_as_it_was():
    model, batches = _linear_setup()
    model.train()
    model[0].bias.requires_grad_(False)
    model[2].weight.grad = torch.full_like(model[2].weight, 7.0)  # a caller's accumulated gradient
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = fairness_gradient_scores(model, batches, _eo, {"0.bias": model[0].bias, "2.weight": model[2].weight})
    assert model.training
    assert not model[0].bias.requires_grad and scores["0.bias"].abs().sum() > 0
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert torch.equal(model[2].weight.grad, torch.full_like(model[2].weight, 7.0))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # eval mode during scoring: dropout does not make two runs differ
    again = fairness_gradient_scores(model, batches, _eo, ["0.bias", "2.weight"])
    assert all(torch.equal(scores[n], again[n]) for n in scores)


def test_removing_the_top_signed_weight_widens_the_gap():
    """The signed score predicts, to first order, which single weight's removal widens the gap most."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    _, batches = _linear_setup(seed=1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.8, -0.3, -1.0], [-0.5, 0.9, 1.0]]))

    def gap():
        with torch.no_grad():
            return float(sum(_eo(model, b) for b in batches) / len(batches))

    base = gap()
    signed = fairness_gradient_scores(model, batches, _eo, ["weight"], signed=True)["weight"]
    unsigned = fairness_gradient_scores(model, batches, _eo, ["weight"])["weight"]
    assert signed.max() > 0
    changes = torch.zeros(2, 3)
    for i in range(2):
        for j in range(3):
            saved = model.weight[i, j].item()
            with torch.no_grad():
                model.weight[i, j] = 0.0
            changes[i, j] = gap() - base
            with torch.no_grad():
                model.weight[i, j] = saved
    top = divmod(int(signed.argmax()), 3)
    assert changes[top] > 0
    assert int(changes.argmax()) == int(signed.argmax())
    # a weight with zero signed score but a large unsigned one narrows the gap when removed
    narrowing = (signed == 0) & (unsigned > 0.1 * unsigned.max())
    assert narrowing.any() and (changes[narrowing] < 0).all()


def test_scores_on_a_tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 50, (8, 10), generator=gen), torch.randint(0, 2, (8,), generator=gen),
                torch.randint(0, 2, (8,), generator=gen)) for _ in range(2)]

    def penalty(m, batch):
        ids, labels, groups = batch
        return equal_opportunity_penalty(m(input_ids=ids).logits, labels, groups)

    names = [n for n, p in model.named_parameters()
             if ".encoder." in f".{n}." and n.endswith("weight") and p.dim() == 2]
    scores = fairness_gradient_scores(model, batches, penalty, names)
    assert set(scores) == set(names) and len(names) == 12
    params = dict(model.named_parameters())
    for name in names:
        assert scores[name].shape == params[name].shape and (scores[name] >= 0).all()
    assert sum(float(s.sum()) for s in scores.values()) > 0
    assert all(p.grad is None for p in model.parameters())
    mixed = fairness_aware_importance({n: params[n].detach().abs() for n in names}, scores, mix=0.5)
    assert all(torch.isfinite(mixed[n]).all() for n in names)


@pytest.mark.parametrize("params, batches, match", [
    (["nope.weight"], None, "does not have"),
    ([], None, "at least one parameter"),
    (["0.weight"], [], "at least one batch"),
])
def test_gradient_scores_reject_bad_input(params, batches, match):
    model, default = _linear_setup()
    with pytest.raises(ValueError, match=match):
        fairness_gradient_scores(model, default if batches is None else batches, _eo, params)


def test_gradient_scores_need_a_scalar_penalty():
    model, batches = _linear_setup()
    with pytest.raises(ValueError, match="scalar"):
        fairness_gradient_scores(model, batches, lambda m, b: m(b[0]), ["0.weight"])
