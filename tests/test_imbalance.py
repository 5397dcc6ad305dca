"""Per-example losses for imbalanced classes (fairfront.spaces.imbalance)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from fairfront.spaces.imbalance import (
    IMBALANCE_LOSSES,
    class_balanced_loss,
    class_balanced_weights,
    cross_entropy,
    focal_loss,
    logit_adjusted_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(num_classes=3, n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, num_classes, generator=gen) * 2, torch.randint(0, num_classes, (n,), generator=gen)


def _neg_log_p(logits, labels):
    return -torch.log_softmax(logits.double(), dim=1).gather(1, labels[:, None]).squeeze(1)


def test_cross_entropy_is_per_example_negative_log_likelihood():
    logits, labels = _batch()
    loss = cross_entropy(logits, labels)
    assert loss.shape == (16,)
    assert torch.allclose(loss.double(), _neg_log_p(logits, labels), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# class-balanced


def test_class_balanced_weights_by_hand():
    counts, beta = [100, 10, 1], 0.9
    effective = [(1 - beta ** n) / (1 - beta) for n in counts]
    raw = [1 / e for e in effective]
    expected = [3 * r / sum(raw) for r in raw]
    got = class_balanced_weights(counts, beta)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(got.sum()) == pytest.approx(3.0)
    assert got[2] > got[1] > got[0]


def test_class_balanced_weights_limits():
    assert torch.equal(class_balanced_weights([500, 5, 50], 0.0), torch.ones(3))
    inverse = torch.tensor([1 / 500, 1 / 5, 1 / 50])
    assert torch.allclose(class_balanced_weights([500, 5, 50], 1.0), 3 * inverse / inverse.sum())
    # beta close to 1 approaches inverse frequency
    near = class_balanced_weights([500, 5, 50], 0.99999)
    assert torch.allclose(near, 3 * inverse / inverse.sum(), rtol=1e-2)
    # an empty class gets 0 and the rest keep sum C
    w = class_balanced_weights([10, 0, 10], 0.5)
    assert w[1] == 0 and float(w.sum()) == pytest.approx(3.0) and w[0] == w[2]


@pytest.mark.parametrize("counts, beta, match", [
    ([10], 0.9, "at least 2"),
    ([10, -1], 0.9, ">= 0"),
    ([10, 2.5], 0.9, "whole numbers"),
    ([0, 0], 0.9, "at least one class"),
    ([10, 5], 1.5, r"\[0, 1\]"),
])
def test_class_balanced_weights_reject_bad_input(counts, beta, match):
    with pytest.raises(ValueError, match=match):
        class_balanced_weights(counts, beta)


def test_class_balanced_loss_weights_each_example_by_its_class():
    logits, labels = _batch()
    loss = class_balanced_loss([80, 15, 5], beta=0.99)
    w = class_balanced_weights([80, 15, 5], 0.99)
    assert torch.allclose(loss(logits, labels), w[labels] * cross_entropy(logits, labels))
    assert torch.equal(class_balanced_loss([80, 15, 5], beta=0.0)(logits, labels), cross_entropy(logits, labels))


# ---------------------------------------------------------------------------------------------
# focal


def test_focal_gamma_zero_is_cross_entropy_exactly():
    logits, labels = _batch()
    logits.requires_grad_(True)
    focal = focal_loss(0.0)(logits, labels)
    ce = cross_entropy(logits, labels)
    assert torch.equal(focal, ce)
    assert torch.equal(torch.autograd.grad(focal.sum(), logits)[0], torch.autograd.grad(ce.sum(), logits)[0])


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_matches_the_formula_and_spares_hard_examples(gamma):
    logits, labels = _batch()
    nll = _neg_log_p(logits, labels)
    expected = (1 - torch.exp(-nll)) ** gamma * nll
    got = focal_loss(gamma)(logits, labels)
    assert torch.allclose(got.double(), expected, atol=1e-6)
    # the ratio focal / CE is (1 - p_t)**gamma: largest for the example the model gets most wrong
    ratio = got / cross_entropy(logits, labels)
    assert int(ratio.argmax()) == int(nll.argmax()) and int(ratio.argmin()) == int(nll.argmin())


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_is_finite_for_certain_predictions(gamma):
    logits = torch.tensor([[200.0, -200.0], [0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = focal_loss(gamma)(logits, labels)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    assert loss[0].item() == 0.0


def test_focal_alpha():
    logits, labels = _batch(num_classes=2)
    plain = focal_loss(2.0)(logits, labels)
    binary = focal_loss(2.0, alpha=0.25)(logits, labels)
    expected = torch.where(labels == 1, 0.25, 0.75) * plain
    assert torch.allclose(binary, expected)
    per_class = focal_loss(2.0, alpha=[0.75, 0.25])(logits, labels)
    assert torch.allclose(per_class, expected)
    with pytest.raises(ValueError, match="built for 2 classes"):
        focal_loss(2.0, alpha=0.25)(*_batch(num_classes=3))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        focal_loss(2.0, alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(-1.0)


# ---------------------------------------------------------------------------------------------
# logit adjustment


def test_logit_adjusted_tau_zero_is_cross_entropy_exactly():
    logits, labels = _batch()
    assert torch.equal(logit_adjusted_loss([0.7, 0.2, 0.1], tau=0.0)(logits, labels), cross_entropy(logits, labels))


def test_logit_adjusted_formula_and_counts_as_priors():
    logits, labels = _batch()
    priors = torch.tensor([0.7, 0.2, 0.1])
    expected = cross_entropy(logits + 1.5 * priors.log(), labels)
    assert torch.allclose(logit_adjusted_loss(priors, tau=1.5)(logits, labels), expected, atol=1e-6)
    assert torch.allclose(logit_adjusted_loss([70, 20, 10], tau=1.5)(logits, labels), expected, atol=1e-6)


def test_logit_adjustment_learns_balanced_scores_from_imbalanced_labels():
    """A bias-only model fit with CE learns the prior; with logit adjustment it learns nothing of it."""
    labels = torch.tensor([0] * 80 + [1] * 20)

    def fitted_bias(loss_fn):
        bias = torch.zeros(2, requires_grad=True)
        for _ in range(300):
            (grad,) = torch.autograd.grad(loss_fn(bias.expand(100, 2), labels).mean(), [bias])
            with torch.no_grad():
                bias -= 2.0 * grad
        return (bias[0] - bias[1]).item()

    assert fitted_bias(cross_entropy) == pytest.approx(math.log(4.0), abs=0.01)
    assert fitted_bias(logit_adjusted_loss([0.8, 0.2], tau=1.0)) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("priors, tau, match", [
    ([0.5, 0.0, 0.5], 1.0, "positive"),
    ([1.0], 1.0, "at least 2"),
    ([0.5, 0.5], -1.0, "tau"),
])
def test_logit_adjusted_rejects_bad_input(priors, tau, match):
    with pytest.raises(ValueError, match=match):
        logit_adjusted_loss(priors, tau)


# ---------------------------------------------------------------------------------------------
# every loss


def _all_losses(counts):
    return {
        "cross_entropy": cross_entropy,
        "class_balanced": class_balanced_loss(counts, 0.999),
        "focal": focal_loss(2.0),
        "focal_alpha": focal_loss(1.0, alpha=[1.0, 2.0, 3.0]),
        "logit_adjusted": logit_adjusted_loss(counts, 1.0),
    }


@pytest.mark.parametrize("name", list(_all_losses([5, 3, 2])))
def test_every_loss_is_per_example_finite_and_differentiable_with_absent_classes(name):
    loss_fn = _all_losses([50, 30, 20])[name]
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.zeros(6, dtype=torch.long)  # classes 1 and 2 absent from the batch
    loss = loss_fn(logits, labels)
    assert loss.shape == (6,) and torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert loss_fn(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize("name", ["class_balanced", "focal", "logit_adjusted"])
def test_built_losses_pickle_for_ray_workers(name):
    loss_fn = _all_losses([50, 30, 20])[name]
    logits, labels = _batch()
    clone = pickle.loads(pickle.dumps(loss_fn))
    assert torch.equal(clone(logits, labels), loss_fn(logits, labels))
    assert name.split("_")[0] in repr(loss_fn).lower()


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="labels must have shape"):
        cross_entropy(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="built for 3 classes"):
        logit_adjusted_loss([1, 1, 1], 1.0)(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))


def test_registry_entries_build_and_reduce_to_cross_entropy_at_their_neutral_value():
    assert set(IMBALANCE_LOSSES) == {"cross_entropy", "class_balanced", "focal", "logit_adjusted"}
    expected_params = {"cross_entropy": None, "class_balanced": "beta", "focal": "gamma", "logit_adjusted": "tau"}
    logits, labels = _batch()
    ce = cross_entropy(logits, labels)
    counts = [60, 30, 10]
    for name, spec in IMBALANCE_LOSSES.items():
        assert spec.parameter == expected_params[name]
        assert spec.description and spec.citation and spec.scale in ("linear", "log1m")
        if spec.parameter is None:
            assert torch.equal(spec.build(None, counts)(logits, labels), ce)
            continue
        assert 0.0 <= spec.low < spec.high
        assert name == "cross_entropy" or any(str(y) in spec.citation for y in (2017, 2019, 2021))
        for value in (spec.low, spec.high):
            loss = spec.build(value, counts)(logits, labels)
            assert loss.shape == (16,) and torch.isfinite(loss).all()
        assert torch.equal(spec.build(0.0, counts)(logits, labels), ce)
