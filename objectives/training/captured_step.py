"""The whole training step in a CUDA graph, with batches padded to a few length buckets.

A small student's step on a GPU is launch-bound: hundreds of short kernels (forward, the
distillation and fairness terms, backward, clipping, the optimizer, the pruning masks), each
launched by Python. A CUDA graph records them once and replays them with one launch. A graph
needs static shapes and fixed addresses, so:

- every full-size batch is padded to the smallest of a few **length buckets** (powers of two from
  16, and the split's longest example) and copied into that bucket's static input buffer (one
  copy of one packed tensor); padded positions have attention mask 0, so the logits and
  gradients are those of the unpadded batch up to float rounding (dropout, where a model has
  it, draws its masks over the padded shape: the same distribution, other draws);
- each bucket's step is captured once, on the side stream it was warmed up on (its first batch
  runs eagerly there: a real step, so the numbers do not change), into one shared memory pool;
- what changes between steps happens outside the graph, in place: the learning rate is a
  tensor that the scheduler fills, gradients are zeroed (not freed) inside the graph, and a
  pruning schedule rewrites its mask tensors with ``copy_`` before a step;
- a batch of another size (an epoch's short last batch) runs the same step uncaptured.

Only hooks marked ``cuda_graph_safe = True`` run inside the graph (their ``after_backward`` and
``after_step`` do the same in-place work on the same tensors every step); a hook without the mark
runs its ``after_step`` eagerly after the replay, and one with an ``after_backward`` keeps the
whole step uncaptured. Where the step cannot be captured (no CUDA device, such a hook, an
optimizer other than fused AdamW, a capture that fails on an operation that synchronises with
the host) the loop takes the ordinary step and says why once per process. (Group DRO selects rows by
boolean indexing, which reads a count back to the host: a capture that includes it fails and falls
back this way. The fairness penalties take the study's group count and have fixed shapes.)

:class:`StaticShapeStep` also runs without capture (``capture=False``), on any device: that is how
the padded static-shape step is checked against the ordinary one on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training.settings import CUDA_GRAPH_MODES

__all__ = ["CUDA_GRAPH_MODES", "StaticShapeStep", "batch_views", "capture_blocker", "length_buckets", "pack_batch",
           "report_once"]

SMALLEST_BUCKET = 16
_log = logging.getLogger("fairfront.training")
_reported: set[str] = set()


def report_once(message: str, *, level: int = logging.INFO) -> bool:
    """Log ``message`` the first time this process sees it; whether it was logged now."""
    if message in _reported:
        return False
    _reported.add(message)
    _log.log(level, message)
    return True


def length_buckets(longest: int, smallest: int = SMALLEST_BUCKET) -> list[int]:
    """Padded widths: powers of two from ``smallest`` below ``longest``, then ``longest`` itself."""
    widths, w = [], smallest
    while w < longest:
        widths.append(w)
        w *= 2
    return widths + [max(1, longest)]


def capture_blocker(mode: str, device: torch.device, hooks: Sequence[object], *, fused_adamw: bool) -> str | None:
    """Why this run's step cannot be captured in a CUDA graph (every reason, joined), or None when it can."""
    if mode == "off":
        return "cuda_graphs = \"off\""
    reasons = []
    if device.type != "cuda" or not torch.cuda.is_available():
        reasons.append("no CUDA device")
    reasons += [f"the {type(hook).__name__} hook's after_backward is not marked cuda_graph_safe"
                for hook in hooks if hasattr(hook, "after_backward") and not getattr(hook, "cuda_graph_safe", False)]
    if not fused_adamw:
        reasons.append("the parameters do not allow fused AdamW (its capturable step needs it)")
    return "; ".join(reasons) or None


@dataclass
class _Bucket:
    """One bucket's static input buffer, its views as a batch, and its graph once captured."""

    packed: torch.Tensor
    batch: dict
    warmed: bool = False
    graph: torch.cuda.CUDAGraph | None = None
    loss: torch.Tensor | None = None


class StaticShapeStep:
    """The training step over batches padded to length buckets; captured per bucket when ``capture``.

    ``step_fn(batch) -> loss`` is the whole optimizer step (forward, loss, backward, hooks,
    clipping, ``optimizer.step()``); it must zero gradients in place, not free them.
    """

    def __init__(self, step_fn: Callable[[dict], torch.Tensor], *, batch_size: int, longest: int, pad_id: int,
                 device: torch.device, capture: bool):
        self.step_fn, self.batch_size, self.pad_id, self.device = step_fn, batch_size, pad_id, device
        self.widths = length_buckets(longest)
        self.capture = capture
        self.buckets: dict[int, _Bucket] = {}
        self.failed: str | None = None
        self.stream = torch.cuda.Stream(device) if capture else None
        self.pool = torch.cuda.graph_pool_handle() if capture else None

    @property
    def captured(self) -> int:
        """How many buckets' steps are captured graphs."""
        return sum(b.graph is not None for b in self.buckets.values())

    def width_for(self, length: int) -> int:
        return next(w for w in self.widths if w >= length)

    def run(self, split: EncodedSplit, index: np.ndarray) -> torch.Tensor | None:
        """One step on these examples; None when the batch is not full-size (the caller steps it as usual)."""
        if len(index) != self.batch_size:
            return None
        width = self.width_for(int(split.lengths[index].max()))
        bucket = self.buckets.get(width) or self._new_bucket(width)
        source = torch.from_numpy(pack_batch(split, index, pad_id=self.pad_id, width=width))
        if self.device.type == "cuda":
            source = source.pin_memory()
        bucket.packed.copy_(source, non_blocking=True)
        if not self.capture or self.failed is not None:
            return self.step_fn(bucket.batch)
        if not bucket.warmed:
            return self._warm_up(bucket)
        if bucket.graph is None and not self._capture(bucket, width):
            return self.step_fn(bucket.batch)
        bucket.graph.replay()
        return bucket.loss.clone()  # the graph overwrites its loss at the next replay

    def _new_bucket(self, width: int) -> _Bucket:
        n = self.batch_size
        cells = n * width
        packed = torch.zeros(2 * cells + 3 * n, dtype=torch.int64, device=self.device)
        bucket = _Bucket(packed, batch_views(packed, n, width))
        self.buckets[width] = bucket
        return bucket

    def _warm_up(self, bucket: _Bucket) -> torch.Tensor:
        """The bucket's first step, run eagerly on the capture stream (lazy state, cuBLAS handles)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            loss = self.step_fn(bucket.batch)
        current.wait_stream(self.stream)
        bucket.warmed = True
        return loss

    def _capture(self, bucket: _Bucket, width: int) -> bool:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                loss = self.step_fn(bucket.batch)
        except Exception as err:  # an operation that synchronises with the host, or is not capturable
            self.failed = f"capturing the step (bucket width {width}) failed: {type(err).__name__}: {err}"
            report_once(f"training without CUDA graphs: {self.failed}", level=logging.WARNING)
            return False
        bucket.graph, bucket.loss = graph, loss
        return True


def batch_views(packed: torch.Tensor, n: int, width: int) -> dict:
    """The five batch tensors as views of one packed buffer (its layout is :func:`pack_batch`'s)."""
    cells = n * width
    rest = packed[2 * cells:]
    return {"input_ids": packed[:cells].view(n, width), "attention_mask": packed[cells:2 * cells].view(n, width),
            "labels": rest[:n], "groups": rest[n:2 * n], "index": rest[2 * n:]}


def pack_batch(split: EncodedSplit, index: np.ndarray, *, pad_id: int, width: int | None = None) -> np.ndarray:
    """Token ids, attention mask, labels, groups and indices of the examples, padded to ``width``, in one array.

    ``width`` defaults to the longest chosen example (dynamic padding).
    """
    seqs = [split.input_ids[i] for i in index]
    n = len(seqs)
    width = width or max(len(s) for s in seqs)
    cells = n * width
    packed = np.zeros(2 * cells + 3 * n, dtype=np.int64)
    ids, mask = packed[:cells].reshape(n, width), packed[cells:2 * cells].reshape(n, width)
    ids.fill(pad_id)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = s
        mask[row, :len(s)] = 1
    tail = packed[2 * cells:]
    tail[:n], tail[n:2 * n], tail[2 * n:] = split.labels[index], split.groups[index], index
    return packed

