"""Group-fairness penalties, group DRO and group reweighting (fairfront.spaces.fairness_losses)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fairfront.spaces.fairness_losses import (
    FAIRNESS_METHODS,
    FAIRNESS_PENALTIES,
    GroupDRO,
    demographic_parity_penalty,
    equal_opportunity_penalty,
    equalized_odds_penalty,
    group_balanced_sampler_weights,
    group_balanced_weights,
)

PENALTIES = sorted(FAIRNESS_PENALTIES.items())
PENALTY_IDS = [name for name, _ in PENALTIES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sgd_step(loss, params, *, lr):
    """Plain gradient descent (torch.optim's first use costs seconds of import time)."""
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g


def _reference(logits, labels, groups, members_of):
    """Loop-by-loop soft-rate spread: pairwise RMS over groups, RMS over classes (binary: class 1)."""
    probs = torch.softmax(logits.double(), dim=1)
    num_classes = probs.shape[1]
    classes = [1] if num_classes == 2 else range(num_classes)
    group_ids = sorted({int(g) for g in groups if g >= 0})
    per_class = []
    for y in classes:
        rates = []
        for g in group_ids:
            rows = [i for i in range(len(labels)) if int(groups[i]) == g and members_of(int(labels[i]), y)]
            if rows:
                rates.append(sum(float(probs[i, y]) for i in rows) / len(rows))
        pairs = list(itertools.combinations(rates, 2))
        if pairs:
            per_class.append(sum((a - b) ** 2 for a, b in pairs) / len(pairs))
    return math.sqrt(sum(per_class) / len(per_class)) if per_class else 0.0


def _tpr_members(label, y):
    return label == y


def _fpr_members(label, y):
    return label != y


def _all_members(label, y):
    return True


def _favoured_batch(num_classes=2, per_group=12, seed=0):
    """Group 0's examples are confidently right, group 1's mostly wrong: a large gap."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (2 * per_group,), generator=gen)
    labels[:num_classes] = torch.arange(num_classes)
    labels[per_group:per_group + num_classes] = torch.arange(num_classes)
    groups = torch.cat([torch.zeros(per_group), torch.ones(per_group)]).long()
    logits = torch.randn(2 * per_group, num_classes, generator=gen) * 0.1
    onehot = F.one_hot(labels, num_classes).float()
    logits += torch.where(groups[:, None] == 0, 3.0 * onehot, -1.0 * onehot)
    # group 1 also over-predicts class 1, so selection rates differ too
    logits[per_group:, 1] += 2.0
    return logits, labels, groups


# ---------------------------------------------------------------------------------------------
# penalties


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
@pytest.mark.parametrize("num_classes, num_groups", [(2, 2), (4, 3)])
def test_penalty_is_zero_when_groups_are_identical(name, penalty, num_classes, num_groups):
    gen = torch.Generator().manual_seed(1)
    base_logits = torch.randn(10, num_classes, generator=gen)
    base_labels = torch.randint(0, num_classes, (10,), generator=gen)
    logits = base_logits.repeat(num_groups, 1).requires_grad_(True)
    labels = base_labels.repeat(num_groups)
    groups = torch.arange(num_groups).repeat_interleave(10)
    value = penalty(logits, labels, groups)
    assert value.dim() == 0
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_sgd_on_the_penalty_shrinks_the_gap(name, penalty, num_classes):
    logits, labels, groups = _favoured_batch(num_classes)
    logits = logits.clone().requires_grad_(True)
    before = penalty(logits, labels, groups).item()
    assert before > 0.1
    for _ in range(20):
        _sgd_step(penalty(logits, labels, groups), [logits], lr=5.0)
    after = penalty(logits, labels, groups).item()
    assert after < 0.5 * before


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
def test_lambda_zero_leaves_the_task_loss_and_its_gradient_unchanged(name, penalty):
    # the worst case for "0 * penalty": a group with one class only, a class absent, unknown groups
    logits = torch.randn(6, 3).requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    groups = torch.tensor([0, 0, -1, 1, 1, -1])
    plain = F.cross_entropy(logits, labels)
    (plain_grad,) = torch.autograd.grad(plain, logits)
    combined = F.cross_entropy(logits, labels) + 0.0 * penalty(logits, labels, groups)
    (combined_grad,) = torch.autograd.grad(combined, logits)
    assert torch.equal(combined.detach(), plain.detach())
    assert torch.equal(combined_grad, plain_grad)


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
@pytest.mark.parametrize("labels, groups, zero_for", [
    ([1, 1, 0, 0], [-1, -1, -1, -1], PENALTY_IDS),  # no group known
    ([1, 1, 0, 0], [0, 0, 0, 0], PENALTY_IDS),  # a single group
    ([1, 1, 1, 1], [0, 0, 1, 1], []),  # no negatives at all: FPR undefined, TPR and DP still compared
    ([1, 1, 0, 0], [0, 0, 1, 1], ["equal_opportunity", "equalized_odds"]),  # each class in one group only
    ([], [], PENALTY_IDS),  # empty batch
], ids=["unknown", "one_group", "no_negatives", "positives_in_one_group", "empty"])
def test_degenerate_batches_give_finite_values_and_gradients(name, penalty, labels, groups, zero_for):
    logits = torch.randn(len(labels), 2).requires_grad_(True)
    value = penalty(logits, torch.tensor(labels, dtype=torch.long), torch.tensor(groups, dtype=torch.long))
    assert torch.isfinite(value)
    assert (value.item() == 0.0) == (name in zero_for)
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("penalty, members, combine", [
    (equal_opportunity_penalty, [_tpr_members], sum),
    (lambda lo, la, g: equalized_odds_penalty(lo, la, g, agg="max"), [_tpr_members, _fpr_members], max),
    (lambda lo, la, g: equalized_odds_penalty(lo, la, g, agg="sum"), [_tpr_members, _fpr_members], sum),
    (demographic_parity_penalty, [_all_members], sum),
], ids=["eo", "eodds_max", "eodds_sum", "dp"])
@pytest.mark.parametrize("num_classes, num_groups", [(2, 2), (2, 4), (5, 3)])
def test_penalty_matches_a_loop_reference(penalty, members, combine, num_classes, num_groups):
    gen = torch.Generator().manual_seed(num_classes * 10 + num_groups)
    logits = torch.randn(40, num_classes, generator=gen) * 2
    labels = torch.randint(0, num_classes, (40,), generator=gen)
    groups = torch.randint(-1, num_groups, (40,), generator=gen)
    if num_classes > 2:
        labels[(groups == 0) & (labels == num_classes - 1)] = 0  # a class absent from group 0
    expected = combine(_reference(logits, labels, groups, m) for m in members)
    got = float(penalty(logits, labels, groups))
    assert expected > 0
    assert got == pytest.approx(expected, abs=1e-5)


def test_equalized_odds_aggregations():
    logits, labels, groups = _favoured_batch(2)
    tpr = _reference(logits, labels, groups, _tpr_members)
    fpr = _reference(logits, labels, groups, _fpr_members)
    assert float(equalized_odds_penalty(logits, labels, groups)) == pytest.approx(max(tpr, fpr), abs=1e-6)
    assert float(equalized_odds_penalty(logits, labels, groups, agg="sum")) == pytest.approx(tpr + fpr, abs=1e-6)
    with pytest.raises(ValueError, match="agg"):
        equalized_odds_penalty(logits, labels, groups, agg="mean")


def test_near_hard_logits_reproduce_the_fairlearn_gaps():
    metrics = pytest.importorskip("fairlearn.metrics")
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (200,), generator=gen)
    groups = torch.randint(0, 2, (200,), generator=gen)
    flip = torch.rand(200, generator=gen) < torch.where(groups == 0, 0.1, 0.35)
    preds = torch.where(flip, 1 - labels, labels)
    logits = F.one_hot(preds, 2).float() * 40.0  # p(pred) = 1 up to 4e-18
    kwargs = {"y_true": labels.numpy(), "y_pred": preds.numpy(), "sensitive_features": groups.numpy()}
    eo = metrics.equal_opportunity_difference(**kwargs)
    eodds = metrics.equalized_odds_difference(**kwargs)
    dp = metrics.demographic_parity_difference(**kwargs)
    assert float(equal_opportunity_penalty(logits, labels, groups)) == pytest.approx(eo, abs=1e-6)
    assert float(equalized_odds_penalty(logits, labels, groups)) == pytest.approx(eodds, abs=1e-6)
    assert float(demographic_parity_penalty(logits, None, groups)) == pytest.approx(dp, abs=1e-6)


def test_multiclass_two_groups_is_the_soft_tpr_gap_rms():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(60, 4, generator=gen)
    labels = torch.arange(60) % 4
    groups = (torch.arange(60) // 4) % 2
    probs = torch.softmax(logits, dim=1)
    gaps = []
    for y in range(4):
        tpr = [float(probs[(labels == y) & (groups == g), y].mean()) for g in (0, 1)]
        gaps.append(tpr[0] - tpr[1])
    rms = math.sqrt(sum(g * g for g in gaps) / 4)
    assert float(equal_opportunity_penalty(logits, labels, groups)) == pytest.approx(rms, abs=1e-6)


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
def test_unknown_group_rows_are_ignored(name, penalty):
    logits, labels, groups = _favoured_batch(3)
    noise = torch.randn(7, 3) * 5
    with_unknown = penalty(torch.cat([logits, noise]), torch.cat([labels, torch.tensor([0, 1, 2, 0, 1, 2, 0])]),
                           torch.cat([groups, torch.full((7,), -1)]))
    assert float(with_unknown) == pytest.approx(float(penalty(logits, labels, groups)), abs=1e-7)


def test_every_group_gets_gradient_with_three_groups():
    logits = torch.zeros(6, 2, requires_grad=True)
    with torch.no_grad():
        logits[:, 1] = torch.tensor([3.0, 3.0, 0.0, 0.0, -1.0, -1.0])
    labels = torch.ones(6, dtype=torch.long)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    equal_opportunity_penalty(logits, labels, groups).backward()
    per_group = logits.grad[:, 1].view(3, 2).sum(1)
    # the best group is pulled down, the worst up, and the middle one is not left out
    assert per_group[0] > 0 and per_group[2] < 0 and per_group[1] != 0


@pytest.mark.parametrize("kwargs, match", [
    ({"logits": torch.zeros(4)}, "logits must have shape"),
    ({"logits": torch.zeros(4, 1)}, "C >= 2"),
    ({"labels": torch.tensor([0, 1, 2, 0])}, "labels must lie in 0..1"),
    ({"labels": torch.zeros(3, dtype=torch.long)}, "labels must have shape"),
    ({"groups": torch.tensor([0, 1, -2, 0])}, "groups must be >= -1"),
    ({"groups": torch.tensor([0.0, 1.0, 0.0, 1.0])}, "integer group ids"),
])
def test_bad_inputs_raise_one_clear_line(kwargs, match):
    args = {"logits": torch.zeros(4, 2), "labels": torch.tensor([0, 1, 0, 1]), "groups": torch.tensor([0, 0, 1, 1])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        equal_opportunity_penalty(args["logits"], args["labels"], args["groups"])


def test_registries_name_every_method_with_a_citation():
    assert set(FAIRNESS_PENALTIES) == {"equal_opportunity", "equalized_odds", "demographic_parity"}
    assert set(FAIRNESS_METHODS) == set(FAIRNESS_PENALTIES) | {"group_dro", "group_reweight"}
    years = {"equal_opportunity": "2016", "equalized_odds": "2016", "demographic_parity": "2017",
             "group_dro": "2020", "group_reweight": "2012"}
    for name, method in FAIRNESS_METHODS.items():
        assert method.description and years[name] in method.citation
        assert (method.kind == "penalty") == (name in FAIRNESS_PENALTIES)
    logits, labels, groups = _favoured_batch(2)
    for fn in FAIRNESS_PENALTIES.values():
        assert float(fn(logits, labels, groups)) > 0


# ---------------------------------------------------------------------------------------------
# group DRO


def test_group_dro_update_and_loss_by_hand():
    dro = GroupDRO(num_groups=3, step_size=0.5)
    loss = torch.tensor([1.0, 3.0, 2.0, 2.0, 7.0], requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, -1])  # group 2 absent, last example unknown
    robust = dro(loss, groups)
    raw = torch.tensor([math.exp(0.5 * 2.0), math.exp(0.5 * 2.0), 1.0])
    q = raw / raw.sum()
    assert torch.allclose(dro.q, q)
    assert robust.item() == pytest.approx(float(q[0] * 2.0 + q[1] * 2.0), abs=1e-6)
    robust.backward()
    assert torch.allclose(loss.grad, torch.tensor([q[0] / 2, q[0] / 2, q[1] / 2, q[1] / 2, 0.0]))


def test_group_dro_moves_q_toward_the_worst_group():
    dro = GroupDRO(num_groups=3, step_size=0.1)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = torch.tensor([0.2, 0.3, 1.5, 1.4, 0.6, 0.5])
    history = [dro.q[1].item()]
    for _ in range(10):
        dro(loss, groups)
        history.append(dro.q[1].item())
    assert all(b > a for a, b in zip(history, history[1:]))
    assert int(dro.q.argmax()) == 1 and int(dro.q.argmin()) == 0
    assert float(dro.q.sum()) == pytest.approx(1.0)


def test_group_dro_step_zero_is_the_mean_of_group_means():
    dro = GroupDRO(num_groups=2, step_size=0.0)
    loss = torch.tensor([1.0, 1.0, 1.0, 5.0])
    out = dro(loss, torch.tensor([0, 0, 0, 1]))
    assert float(out) == pytest.approx(3.0)
    assert torch.equal(dro.q, torch.tensor([0.5, 0.5]))


def test_group_dro_state_round_trip_and_resume():
    torch.manual_seed(0)
    batches = [(torch.rand(8) * 3, torch.randint(-1, 3, (8,))) for _ in range(6)]
    a = GroupDRO(num_groups=3, step_size=0.3)
    for loss, groups in batches[:3]:
        a(loss, groups)
    b = GroupDRO(num_groups=3, step_size=0.01)
    b.load_state_dict(a.state_dict())
    assert b.step_size == 0.3
    for loss, groups in batches[3:]:
        assert float(a(loss, groups)) == float(b(loss, groups))
    assert torch.equal(a.q, b.q)
    with pytest.raises(ValueError, match="num_groups"):
        GroupDRO(num_groups=2, step_size=0.1).load_state_dict(a.state_dict())


def test_group_dro_survives_huge_losses_and_unknown_only_batches():
    dro = GroupDRO(num_groups=2, step_size=1.0)
    for _ in range(5):
        dro(torch.tensor([1e4, 0.0]), torch.tensor([0, 1]))
    assert torch.isfinite(dro.q).all() and float(dro.q.sum()) == pytest.approx(1.0)
    assert int(dro.q.argmax()) == 0 and torch.isfinite(dro.state_dict()["log_q"]).all()
    loss = torch.tensor([2.0, 3.0], requires_grad=True)
    out = dro(loss, torch.tensor([-1, -1]))
    out.backward()
    assert out.item() == 0.0 and torch.equal(loss.grad, torch.zeros(2))


def test_group_dro_lowers_the_worst_group_loss_of_a_trained_model():
    """ERM fits the majority; group DRO trades some of it for the minority group."""
    gen = torch.Generator().manual_seed(0)
    n_major, n_minor = 90, 10
    x = torch.randn(n_major + n_minor, 2, generator=gen)
    groups = torch.cat([torch.zeros(n_major), torch.ones(n_minor)]).long()
    # the label follows feature 0 in the majority and feature 1 in the minority
    labels = torch.where(groups == 0, (x[:, 0] > 0).long(), (x[:, 1] > 0).long())

    def worst_group_loss(step_size):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        dro = None if step_size is None else GroupDRO(num_groups=2, step_size=step_size)
        for _ in range(60):
            per_example = F.cross_entropy(model(x), labels, reduction="none")
            loss = per_example.mean() if dro is None else dro(per_example, groups)
            _sgd_step(loss, list(model.parameters()), lr=1.0)
        with torch.no_grad():
            per_example = F.cross_entropy(model(x), labels, reduction="none")
            return max(float(per_example[groups == g].mean()) for g in (0, 1))

    assert worst_group_loss(0.05) < worst_group_loss(None) - 0.05


@pytest.mark.parametrize("kwargs", [{"num_groups": 0, "step_size": 0.1}, {"num_groups": 2, "step_size": -1.0},
                                    {"num_groups": 2.0, "step_size": 0.1}])
def test_group_dro_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        GroupDRO(**kwargs)


def test_group_dro_rejects_out_of_range_groups():
    with pytest.raises(ValueError, match=r"-1\.\.1"):
        GroupDRO(num_groups=2, step_size=0.1)(torch.ones(3), torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------------------------------------
# reweighting and resampling


def test_group_balanced_weights_by_hand():
    groups = torch.tensor([0, 0, 0, 1, -1, 2, 2, 2])  # group 3 absent
    w = group_balanced_weights(groups, num_groups=4)
    n_known, present = 7, 3
    expected = [n_known / (present * 3)] * 3 + [n_known / (present * 1), 1.0] + [n_known / (present * 3)] * 3
    expected = torch.tensor(expected) / torch.tensor(expected).mean()
    assert torch.allclose(w, expected)
    assert float(w.mean()) == pytest.approx(1.0)
    totals = [float(w[groups == g].sum()) for g in (0, 1, 2)]
    assert totals[0] == pytest.approx(totals[1]) and totals[1] == pytest.approx(totals[2])


def test_kamiran_calders_weights_make_label_independent_of_group():
    gen = torch.Generator().manual_seed(5)
    groups = torch.randint(0, 3, (300,), generator=gen)
    # positive rate 70 % in group 0, 20 % elsewhere
    labels = (torch.rand(300, generator=gen) < torch.where(groups == 0, 0.7, 0.2)).long()
    w = group_balanced_weights(groups, num_groups=3, labels=labels)
    assert float(w.mean()) == pytest.approx(1.0)
    overall = float((w * labels).sum() / w.sum())
    for g in range(3):
        rate = float((w * labels)[groups == g].sum() / w[groups == g].sum())
        assert rate == pytest.approx(overall, abs=1e-5)
    # the weighted groups keep their size
    for g in range(3):
        assert float(w[groups == g].sum()) == pytest.approx(float((groups == g).sum()), rel=1e-5)


def test_group_balanced_weights_reject_bad_groups():
    with pytest.raises(ValueError, match=r"-1\.\.1"):
        group_balanced_weights(torch.tensor([0, 2]), num_groups=2)
    assert torch.equal(group_balanced_weights(torch.tensor([-1, -1]), num_groups=2), torch.ones(2))


def test_sampler_weights_draw_groups_equally_and_keep_unknowns():
    groups = [0] * 90 + [1] * 10 + [-1] * 20
    w = group_balanced_sampler_weights(groups)
    assert w.dtype == torch.float64 and float(w.sum()) == pytest.approx(1.0)
    g = torch.tensor(groups)
    assert float(w[g == 0].sum()) == pytest.approx(float(w[g == 1].sum()))
    assert float(w[g == -1].sum()) == pytest.approx(20 / 120)
    sampler = torch.utils.data.WeightedRandomSampler(w, num_samples=20000, generator=torch.Generator().manual_seed(0))
    drawn = g[torch.tensor(list(sampler))]
    share_minor = float((drawn == 1).float().mean())
    assert share_minor == pytest.approx(0.5 * 100 / 120, abs=0.02)
    with pytest.raises(ValueError, match="non-empty"):
        group_balanced_sampler_weights([])


@pytest.mark.parametrize("name, penalty", PENALTIES, ids=PENALTY_IDS)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_a_fixed_group_count_gives_the_same_penalty_and_gradient(name, penalty, num_classes):
    """The fixed-shape form a CUDA graph captures: unknown rows, an absent group and spare group ids."""
    gen = torch.Generator().manual_seed(7)
    raw = torch.randn(12, num_classes, generator=gen)
    labels = torch.randint(0, num_classes, (12,), generator=gen)
    groups = torch.tensor([0, 0, 2, 2, -1, 0, 2, -1, 0, 2, 2, 0])  # group 1 absent, two unknown rows
    values, grads = [], []
    for num_groups in (None, 3, 6):
        logits = raw.clone().requires_grad_(True)
        value = penalty(logits, labels, groups, num_groups=num_groups)
        value.backward()
        values.append(float(value.detach()))
        grads.append(logits.grad)
    assert values[0] > 0
    assert values[1] == pytest.approx(values[0], abs=1e-7) and values[2] == pytest.approx(values[0], abs=1e-7)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-6, atol=1e-8)


def test_a_group_id_beyond_the_fixed_group_count_is_refused():
    with pytest.raises(ValueError, match="groups must be < num_groups = 2; got 2"):
        equal_opportunity_penalty(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 2, 0]),
                                  num_groups=2)
