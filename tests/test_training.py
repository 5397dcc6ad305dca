"""The training loop's own promises: batches as padded, loss checks and progress reports per step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training import loop as training
from fairfront.objectives.training.loop import CHECK_EVERY, NonFiniteLoss, TrainSettings, make_batch, train


class _BagClassifier(nn.Module):
    """Mean of token embeddings, then a linear layer: the smallest model the loop can train."""

    def __init__(self, vocab: int = 20, classes: int = 3):
        super().__init__()
        self.config = SimpleNamespace(num_labels=classes)
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return SimpleNamespace(logits=self.head(pooled))


def _split(n: int = 40, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, 20, size=rng.integers(2, 9)).astype(np.int64) for _ in range(n)]
    return EncodedSplit(ids, rng.integers(0, 3, size=n).astype(np.int64), rng.integers(-1, 2, size=n).astype(np.int64))


def test_make_batch_pads_to_the_longest_and_keeps_labels_groups_and_indices() -> None:
    split = _split()
    index = np.array([3, 0, 7, 12])
    batch = make_batch(split, index, pad_id=0, device=torch.device("cpu"))
    width = max(len(split.input_ids[i]) for i in index)
    assert batch["input_ids"].shape == (4, width) and batch["attention_mask"].shape == (4, width)
    for row, i in enumerate(index):
        n = len(split.input_ids[i])
        assert batch["input_ids"][row, :n].tolist() == split.input_ids[i].tolist()
        assert batch["input_ids"][row, n:].eq(0).all() and batch["attention_mask"][row, n:].eq(0).all()
        assert batch["attention_mask"][row, :n].eq(1).all()
    assert batch["labels"].tolist() == split.labels[index].tolist()
    assert batch["groups"].tolist() == split.groups[index].tolist()
    assert batch["index"].tolist() == index.tolist()
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_progress_is_reported_for_every_step_in_order_with_finite_losses() -> None:
    seen: list[tuple[int, int, float]] = []
    steps = CHECK_EVERY + 5  # one full window and a partial one
    settings = TrainSettings(epochs=10, max_steps=steps, batch_size=8, learning_rate=1e-2)
    stats = train(_BagClassifier(), _split(), settings,
                  loss_fn=lambda logits, batch: nn.functional.cross_entropy(logits, batch["labels"]), seed=0,
                  pad_id=0, progress=lambda step, total, loss: seen.append((step, total, loss)))
    assert [s for s, _, _ in seen] == list(range(1, steps + 1))
    assert all(total == steps and np.isfinite(loss) for _, total, loss in seen)
    assert stats.steps == steps and stats.final_loss == seen[-1][2]


@pytest.mark.parametrize("bad_step", [0, 5, CHECK_EVERY + 2])
def test_a_non_finite_loss_fails_naming_its_step(bad_step: int) -> None:
    calls = {"n": 0}

    def loss_fn(logits, batch):
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        step, calls["n"] = calls["n"], calls["n"] + 1
        return loss * float("nan") if step == bad_step else loss

    with pytest.raises(NonFiniteLoss, match=rf"at step {bad_step} of 40"):
        train(_BagClassifier(), _split(), TrainSettings(epochs=10, max_steps=40, batch_size=8), loss_fn=loss_fn,
              seed=0, pad_id=0)



class _DenseEmbeddingGradients(training.KeptEmbeddingGradients):
    """The loop with PyTorch's own dense embedding gradients and clipping, as the reference."""

    def __init__(self, model: nn.Module, *, enabled: bool):
        super().__init__(model, enabled=False)

    def clip_grad_norm_(self, parameters, max_norm: float) -> None:
        nn.utils.clip_grad_norm_(parameters, max_norm)


class _GradientWatch:
    """Records, after each backward pass, whether the embedding gradient is sparse and its padding row."""

    def __init__(self, model: _BagClassifier):
        self.model, self.seen = model, []

    def after_backward(self, step: int, total: int) -> None:
        grad = self.model.embed.weight.grad
        self.seen.append((grad.is_sparse, float(grad.to_dense()[0].abs().sum())))


def _train_bag(steps: int) -> tuple[nn.Module, _GradientWatch]:
    torch.manual_seed(0)
    model = _BagClassifier()
    watch = _GradientWatch(model)
    train(model, _split(), TrainSettings(epochs=10, max_steps=steps, batch_size=8, learning_rate=1e-2,
                                         max_grad_norm=0.05),  # small, so clipping scales every step
          loss_fn=lambda logits, batch: nn.functional.cross_entropy(logits, batch["labels"]), seed=0, pad_id=0,
          hooks=[watch], device=torch.device("cpu"))
    return model, watch


def test_kept_embedding_gradients_train_exactly_as_dense_ones(monkeypatch) -> None:
    """Sparse gradients added into kept buffers: hooks see dense gradients, and every weight ends the
    same as with PyTorch's own dense embedding gradient (clipping and AdamW's weight decay included)."""
    kept, kept_watch = _train_bag(25)
    monkeypatch.setattr(training, "KeptEmbeddingGradients", _DenseEmbeddingGradients)
    dense, dense_watch = _train_bag(25)
    assert not kept.embed.sparse  # the model is given back as it came
    assert [sparse for sparse, _ in kept_watch.seen] == [False] * 25
    assert kept_watch.seen == dense_watch.seen  # padding row included: its gradient stays zero
    for (name, a), b in zip(kept.named_parameters(), dense.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_embeddings_are_given_back_dense_when_training_fails() -> None:
    model = _BagClassifier()
    with pytest.raises(NonFiniteLoss):
        train(model, _split(), TrainSettings(max_steps=3, batch_size=8), seed=0, pad_id=0,
              loss_fn=lambda logits, batch: nn.functional.cross_entropy(logits, batch["labels"]) * float("nan"))
    assert not model.embed.sparse
