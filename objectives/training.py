"""The one training loop: teacher fine-tuning and every compressed student use it.

What differs between a teacher and a pruned, distilled, fairness-regularised student is not the
loop but two pluggable parts:

- ``loss_fn(logits, batch) -> scalar``: the objective (cross-entropy, distillation, fairness
  penalties...), built by the trial from the families it sampled;
- ``hooks``: objects with optional ``before_step(step, total)`` and ``after_step(step, total)``
  methods (a pruning schedule updates its masks before a step and re-applies them after it).

Batches are length-grouped (texts of similar length share a batch, so dynamic padding pads
little) and shuffled with the run's seed; on CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fairfront._config import Table
from fairfront.objectives.data import EncodedSplit

__all__ = ["TrainSettings", "TrainStats", "NonFiniteLoss", "train", "predict_logits", "iterate_batches",
           "make_batch", "autocast"]


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the trial fails with this reason."""


@dataclass(frozen=True)
class TrainSettings:
    """``[teacher]`` or ``[student]``: how long and how fast to train."""

    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64

    @classmethod
    def from_table(cls, t: Table, *, defaults: TrainSettings | None = None) -> TrainSettings:
        d = defaults or cls()
        settings = cls(
            epochs=t.number("epochs", d.epochs, low=0.0, low_open=True, high=1000.0),
            max_steps=t.integer("max_steps", d.max_steps, low=1),
            batch_size=t.integer("batch_size", d.batch_size, low=1, high=4096),
            learning_rate=t.number("learning_rate", d.learning_rate, low=0.0, low_open=True, high=1.0),
            weight_decay=t.number("weight_decay", d.weight_decay, low=0.0, high=1.0),
            warmup_fraction=t.number("warmup_fraction", d.warmup_fraction, low=0.0, high=1.0),
            max_grad_norm=t.number("max_grad_norm", d.max_grad_norm, low=0.0),
            eval_batch_size=t.integer("eval_batch_size", d.eval_batch_size, low=1, high=4096),
        )
        t.done()
        return settings

    def total_steps(self, n_examples: int) -> int:
        per_epoch = math.ceil(n_examples / self.batch_size)
        steps = max(1, math.ceil(self.epochs * per_epoch))
        return min(steps, self.max_steps) if self.max_steps else steps


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    examples_per_second: float


def make_batch(split: EncodedSplit, index: np.ndarray, *, pad_id: int, device: torch.device) -> dict:
    """Pad the chosen examples to their longest one; keep their indices (for cached teacher logits)."""
    seqs = [split.input_ids[i] for i in index]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = s
        mask[row, :len(s)] = 1
    return {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device),
            "labels": torch.from_numpy(split.labels[index]).to(device),
            "groups": torch.from_numpy(split.groups[index]).to(device),
            "index": torch.from_numpy(np.asarray(index, dtype=np.int64)).to(device)}


def iterate_batches(split: EncodedSplit, batch_size: int, *, rng: np.random.Generator | None,
                    group_factor: int = 50) -> Iterator[np.ndarray]:
    """Length-grouped batches: shuffle, sort within chunks of ``group_factor`` batches, shuffle batches.

    With ``rng=None`` the order is deterministic by length (for evaluation).
    """
    n = len(split)
    lengths = split.lengths
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        yield from (order[i:i + batch_size] for i in range(0, n, batch_size))
        return
    order = rng.permutation(n)
    chunk = batch_size * group_factor
    batches = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b]


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _forward(model: nn.Module, batch: dict, **kwargs) -> torch.Tensor:
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    if kwargs:
        batch["outputs"] = outputs  # hidden states / attentions for transfer losses
    return outputs.logits.float()


def train(model: nn.Module, split: EncodedSplit, settings: TrainSettings, *,
          loss_fn: Callable[[torch.Tensor, dict], torch.Tensor], seed: int, pad_id: int,
          hooks: Sequence[object] = (), device: torch.device | None = None,
          forward_kwargs: dict | None = None,
          progress: Callable[[int, int, float], None] | None = None) -> TrainStats:
    """Train ``model`` in place on ``split``; raise :class:`NonFiniteLoss` on a NaN/inf loss.

    ``forward_kwargs`` (e.g. ``output_hidden_states=True``) are passed to the model, and its full
    outputs are then given to ``loss_fn`` as ``batch["outputs"]``.
    """
    device = device or next(model.parameters()).device
    model.to(device).train()
    total = settings.total_steps(len(split))
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.learning_rate)
    warmup = int(settings.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    step, loss_value, seen, started = 0, float("nan"), 0, time.perf_counter()
    while step < total:
        for index in iterate_batches(split, settings.batch_size, rng=rng):
            if step >= total:
                break
            for hook in hooks:
                getattr(hook, "before_step", _noop)(step, total)
            batch = make_batch(split, index, pad_id=pad_id, device=device)
            with autocast(device):
                logits = _forward(model, batch, **(forward_kwargs or {}))
                loss = loss_fn(logits, batch)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite training loss ({loss.item()}) at step {step} of {total}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            for hook in hooks:
                getattr(hook, "after_step", _noop)(step, total)
            loss_value = float(loss.detach())
            seen += len(index)
            step += 1
            if progress is not None:
                progress(step, total, loss_value)
    seconds = time.perf_counter() - started
    model.eval()
    return TrainStats(step, seconds, loss_value, seen / seconds if seconds > 0 else float("inf"))


def _noop(step: int, total: int) -> None:
    return None


@torch.inference_mode()
def predict_logits(model: nn.Module, split: EncodedSplit, *, batch_size: int, pad_id: int,
                   device: torch.device | None = None) -> np.ndarray:
    """Logits for every example of ``split``, in the split's order."""
    device = device or next(model.parameters()).device
    model.to(device).eval()
    out = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    for index in iterate_batches(split, batch_size, rng=None):
        batch = make_batch(split, index, pad_id=pad_id, device=device)
        with autocast(device):
            out[index] = _forward(model, batch).cpu().numpy()
    return out
