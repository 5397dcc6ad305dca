"""The one training loop: teacher fine-tuning and every compressed student use it.

What differs between a teacher and a pruned, distilled, fairness-regularised student is not the
loop but two pluggable parts:

- ``loss_fn(logits, batch) -> scalar``: the objective (cross-entropy, distillation, fairness
  penalties...), built by the trial from the families it sampled;
- ``hooks``: objects with optional ``before_step(step, total)``, ``after_backward(step, total)``
  and ``after_step(step, total)`` methods (a pruning schedule updates its masks before a step and
  re-applies them after it; movement pruning reads the gradients after the backward pass).

Batches are length-grouped (texts of similar length share a batch, so dynamic padding pads
little) and shuffled with the run's seed; on CUDA the forward pass runs under bf16 autocast. Two
exact savings apply where they can: the last encoder layer runs at the first position only
(:mod:`fairfront.objectives.training.first_token`), and on CPU embedding gradients are written into
buffers kept for the run (:class:`KeptEmbeddingGradients`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.captured_step import (
    StaticShapeStep,
    batch_views,
    capture_blocker,
    pack_batch,
    report_once,
)
from fairfront.objectives.training.first_token import first_token_only
from fairfront.objectives.training.settings import TrainSettings

__all__ = ["TrainSettings", "TrainStats", "NonFiniteLoss", "KeptEmbeddingGradients", "train", "predict_logits",
           "iterate_batches", "make_batch", "make_optimizer", "autocast"]


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the trial fails with this reason."""


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    examples_per_second: float
    step_mode: str = "eager"
    """``eager``, ``static shapes, uncaptured`` (``(capture failed)``) or ``cuda graphs (N bucket(s) captured)``."""


def make_batch(split: EncodedSplit, index: np.ndarray, *, pad_id: int, device: torch.device) -> dict:
    """Pad the chosen examples to their longest one; keep their indices (for cached teacher logits).

    The five arrays travel to the device as one pinned, asynchronous copy: a copy from ordinary
    (pageable) memory would make the host wait for the GPU to finish the previous step.
    """
    packed = pack_batch(split, index, pad_id=pad_id)
    t = torch.from_numpy(packed)
    t = t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
    n = len(index)
    return batch_views(t, n, (len(packed) - 3 * n) // (2 * n))


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
          progress: Callable[[int, int, float], None] | None = None,
          cuda_graphs: str = "auto", static_shapes: bool | None = None) -> TrainStats:
    """Train ``model`` in place on ``split``; raise :class:`NonFiniteLoss` on a NaN/inf loss.

    ``forward_kwargs`` (e.g. ``output_hidden_states=True``) are passed to the model, and its full
    outputs are then given to ``loss_fn`` as ``batch["outputs"]``. ``cuda_graphs = "auto"``
    captures the step in CUDA graphs where it qualifies
    (:mod:`fairfront.objectives.training.captured_step`; why not is logged once); ``static_shapes``
    forces (True) or forbids (False) the padded static-shape step without capture, for checking it.
    """
    device = device or next(model.parameters()).device
    model.to(device).train()
    total = settings.total_steps(len(split))
    fused = _fused_ok([p for p in model.parameters() if p.requires_grad])
    blocker = capture_blocker(cuda_graphs, device, hooks, fused_adamw=fused)
    if blocker is not None and cuda_graphs != "off":  # on a GPU this costs speed: say it louder
        report_once(f"training without CUDA graphs: {blocker}", level=logging.WARNING if device.type == "cuda"
                    else logging.INFO)
    static = blocker is None if static_shapes is None else static_shapes
    optimizer, scheduler = make_optimizer(model, settings, total, tensor_lr=static)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    step, seen, started = 0, 0, time.perf_counter()
    window = _LossWindow(progress, total)
    kwargs = forward_kwargs or {}
    inside = [h for h in hooks if blocker is not None or getattr(h, "cuda_graph_safe", False)]
    outside = [h for h in hooks if h not in inside]
    clock = [0, total]  # the step number hooks see in the static step (frozen inside a captured graph)
    runner = StaticShapeStep(_whole_step(model, optimizer, loss_fn, inside, settings, device, kwargs, clock),
                             batch_size=settings.batch_size, longest=int(split.lengths.max()), pad_id=pad_id,
                             device=device, capture=blocker is None) if static else None
    with (KeptEmbeddingGradients(model, enabled=device.type == "cpu" and not static) as embedding_grads,
          first_token_only(model, enabled=not forward_kwargs)):
        while step < total:
            for index in iterate_batches(split, settings.batch_size, rng=rng):
                if step >= total:
                    break
                for hook in hooks:
                    getattr(hook, "before_step", _noop)(step, total)
                if runner is None:
                    loss = _eager_step(model, optimizer, loss_fn, hooks, settings, device, kwargs, embedding_grads,
                                       make_batch(split, index, pad_id=pad_id, device=device), step, total)
                else:
                    clock[0] = step
                    loss = runner.run(split, index)
                    if loss is None:  # not a full batch: the same step, uncaptured
                        loss = runner.step_fn(make_batch(split, index, pad_id=pad_id, device=device))
                    for hook in outside:
                        getattr(hook, "after_step", _noop)(step, total)
                scheduler.step()
                seen += len(index)
                step += 1
                window.add(step, loss.detach())
    optimizer.zero_grad(set_to_none=True)  # evaluation needs no gradients: give their memory back
    loss_value = window.flush()
    seconds = time.perf_counter() - started
    model.eval()
    mode = "eager" if runner is None else "static shapes, uncaptured" + (" (capture failed)" if runner.failed else "")
    if runner is not None and runner.captured and not runner.failed:
        mode = f"cuda graphs ({runner.captured} bucket(s) captured)"
    return TrainStats(step, seconds, loss_value, seen / seconds if seconds > 0 else float("inf"), mode)


def make_optimizer(model: nn.Module, settings: TrainSettings, total: int, *, tensor_lr: bool = False
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (fused where it applies) with linear warm-up and decay.

    With ``tensor_lr`` the learning rate is a device tensor that the scheduler fills in place (a
    captured step reads it from the same address every replay) and the step is capturable on CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    fused = _fused_ok(params)
    extra = {"capturable": device.type == "cuda"} if tensor_lr and fused else {}
    lr = torch.tensor(settings.learning_rate, device=device) if tensor_lr and fused else settings.learning_rate
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if tensor_lr and fused:  # each group fills its own tensor: they must not share one
        groups = [dict(g, lr=lr.clone()) for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused, **extra)
    warmup = int(settings.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    return optimizer, scheduler


def _eager_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, hooks: Sequence[object],
                settings: TrainSettings, device: torch.device, forward_kwargs: dict,
                embedding_grads: KeptEmbeddingGradients, batch: dict, step: int, total: int) -> torch.Tensor:
    """The ordinary step: dynamic shapes, gradients freed and made afresh, kept embedding gradients on CPU."""
    with autocast(device):
        logits = _forward(model, batch, **forward_kwargs)
        loss = loss_fn(logits, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    embedding_grads.densify()
    for hook in hooks:
        getattr(hook, "after_backward", _noop)(step, total)
    if settings.max_grad_norm > 0:
        embedding_grads.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    embedding_grads.clear()
    for hook in hooks:
        getattr(hook, "after_step", _noop)(step, total)
    return loss


def _whole_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, hooks: Sequence[object],
                settings: TrainSettings, device: torch.device, forward_kwargs: dict,
                clock: list[int]) -> Callable[[dict], torch.Tensor]:
    """The step a CUDA graph captures: the same work, with gradients zeroed in place and no host sync.

    Hooks see the step number in ``clock``; inside a graph it is frozen at capture, so a hook that
    runs there must not depend on it (that is what ``cuda_graph_safe`` promises).
    """
    cast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if device.type == "cuda" else None

    def step(batch: dict) -> torch.Tensor:
        with cast or autocast(device):
            logits = _forward(model, batch, **forward_kwargs)
            loss = loss_fn(logits, batch)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        for hook in hooks:
            getattr(hook, "after_backward", _noop)(*clock)
        if settings.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        for hook in hooks:
            getattr(hook, "after_step", _noop)(*clock)
        return loss

    return step


class KeptEmbeddingGradients:
    """Embedding gradients written into buffers kept for the whole run, on CPU.

    An embedding's dense gradient is as large as its table (30,522 x 384 floats, 47 MB, for
    MiniLM's word embeddings). Made afresh at every step, it is fresh memory from the operating
    system (allocations that large are mapped, and unmapped when freed), and touching every page of
    it to write zeros costs about as much as a transformer layer's backward pass. Instead the
    embeddings produce sparse gradients (only the rows of the batch's tokens), which
    :meth:`densify` adds into a zeroed buffer that becomes the parameter's ``.grad``: clipping,
    hooks and the fused AdamW step see exactly the dense gradient they would otherwise get.
    :meth:`clear` then zeroes just the rows it wrote, and :meth:`clip_grad_norm_` (which the loop
    uses for every parameter) reads only those rows of a kept buffer. On CUDA the caching allocator
    already reuses memory, so the plain dense gradient is kept there (``enabled=False``).
    """

    def __init__(self, model: nn.Module, *, enabled: bool):
        self.modules = [m for m in model.modules() if isinstance(m, nn.Embedding) and not m.sparse
                        and m.weight.requires_grad] if enabled else []
        self.buffers: dict[nn.Embedding, torch.Tensor] = {}
        self.written: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> KeptEmbeddingGradients:
        for m in self.modules:
            m.sparse = True
        return self

    def __exit__(self, *exc) -> None:
        for m in self.modules:
            m.sparse = False
        self.buffers.clear()

    def densify(self) -> None:
        """Replace each sparse embedding gradient by the kept buffer holding its dense form."""
        for m in self.modules:
            grad = m.weight.grad
            if grad is None or not grad.is_sparse:  # e.g. a tied weight that also got a dense gradient
                continue
            buffer = self.buffers.get(m)
            if buffer is None:
                buffer = self.buffers[m] = torch.zeros_like(m.weight)
            rows = grad._indices()[0]
            buffer.index_add_(0, rows, grad._values().to(buffer.dtype))
            m.weight.grad = buffer
            self.written.append((buffer, rows))

    def clip_grad_norm_(self, parameters: Iterable[torch.Tensor], max_norm: float) -> None:
        """``torch.nn.utils.clip_grad_norm_``, reading and scaling only the written rows of kept buffers.

        The other rows are zero: they add nothing to the norm and scaling leaves them zero, so the
        clipped gradients are the same, without two passes over a 47 MB table per step.
        """
        written = {id(buffer): rows for buffer, rows in self.written}
        tensors, scaled_rows = [], []
        for p in parameters:
            grad = p.grad
            if grad is None:
                continue
            rows = written.get(id(grad))
            if rows is None:
                tensors.append(grad)
            else:
                rows = torch.unique(rows)
                part = grad.index_select(0, rows)
                tensors.append(part)
                scaled_rows.append((grad, rows, part))
        if not tensors:
            return
        total = nn.utils.get_total_norm(tensors)
        torch._foreach_mul_(tensors, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        for grad, rows, part in scaled_rows:
            grad.index_copy_(0, rows, part)

    def clear(self) -> None:
        """Zero the rows :meth:`densify` wrote (after the optimizer step has used them)."""
        for buffer, rows in self.written:
            buffer.index_fill_(0, rows, 0.0)
        self.written.clear()


class _LossWindow:
    """Checks losses for NaN/inf and reports progress every few steps, not every step.

    Reading a loss back (``float(loss)``) makes the host wait for the device; on a GPU doing it
    every step stalls the queue of kernels, which is most of a small model's step time. The loss
    tensors of up to :data:`CHECK_EVERY` steps are kept and read back together; a non-finite loss
    is reported with its own step number, at most that many steps late (the trial fails anyway).
    """

    def __init__(self, progress: Callable[[int, int, float], None] | None, total: int):
        self.progress, self.total = progress, total
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.last = float("nan")

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if len(self.losses) >= CHECK_EVERY:
            self.flush()

    def flush(self) -> float:
        """Check and report the kept losses; returns the last finite loss seen."""
        if not self.losses:
            return self.last
        values = torch.stack([x.float() for x in self.losses]).tolist()
        steps, self.steps, self.losses = self.steps, [], []
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                raise NonFiniteLoss(f"non-finite training loss ({value}) at step {step - 1} of {self.total}")
            self.last = value
            if self.progress is not None:
                self.progress(step, self.total, value)
        return self.last


CHECK_EVERY = 16
"""Steps between loss read-backs (see :class:`_LossWindow`)."""


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Whether AdamW's fused kernel applies: floating parameters on CPU or CUDA.

    The fused step updates all parameters in one kernel per group; on CPU it is over ten times
    faster than the per-tensor loop (``benchmarks/compression_loop.py``), with the same update rule.
    """
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _noop(step: int, total: int) -> None:
    return None


@torch.inference_mode()
def predict_logits(model: nn.Module, split: EncodedSplit, *, batch_size: int, pad_id: int,
                   device: torch.device | None = None) -> np.ndarray:
    """Logits for every example of ``split``, in the split's order."""
    device = device or next(model.parameters()).device
    model.to(device).eval()
    out = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    with first_token_only(model):
        for index in iterate_batches(split, batch_size, rng=None):
            batch = make_batch(split, index, pad_id=pad_id, device=device)
            with autocast(device):
                out[index] = _forward(model, batch).cpu().numpy()
    return out
