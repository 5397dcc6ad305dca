"""The batched engine behind every masked-LM benchmark: probabilities of tokens at masked positions.

StereoSet, CrowS-Pairs and the WinoBias probe all reduce to one question asked thousands of
times: *given this token sequence (with one or more ``[MASK]`` tokens), how likely is token
``t`` at position ``i``?* The official evaluators ask it one sequence per forward pass. That is
slow, so this module collects all the questions a benchmark needs as a flat list of
:class:`MaskedTokenQuery` and answers them together:

1. identical input sequences are run once (StereoSet asks the first-piece question for all three
   candidates of a cluster on the very same masked context),
2. the unique inputs are sorted by length and padded into batches of ``batch_size``, so padding
   stays small,
3. the vocabulary projection (the masked-LM head, as expensive as the whole encoder for a small
   model) is applied only at the positions asked about, not at every position,
4. everything runs under ``torch.inference_mode`` on the model's device, in float32 unless bf16
   autocast is asked for (``bf16=True``, CUDA only): bf16 rounding flips close comparisons (on
   CPU, emulated bf16 changed 73 of 200 CrowS-Pairs outcomes), so a benchmark's default numbers
   are float32 on every device.

The answers equal those of the one-sequence-per-forward computation up to float rounding
(a few 1e-6 relative in float32): padding is masked out of attention and the head is applied
position by position, so batching changes only the order of floating-point sums. The
``reference=True`` path *is* that one-sequence-per-forward computation, kept for tests and for
``benchmarks/intrinsic_throughput.py``.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForMaskedLM
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> model = BertForMaskedLM(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
    ...                                    num_attention_heads=2, intermediate_size=32))
    >>> q = [MaskedTokenQuery(input_ids=(2, 4, 7, 3), position=1, target_id=9)]
    >>> fast = score_masked_tokens(model, q, output="log_prob")
    >>> slow = score_masked_tokens(model, q, output="log_prob", reference=True)
    >>> bool(abs(fast[0] - slow[0]) < 1e-5)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "MaskedTokenQuery",
    "score_masked_tokens",
    "resolve_device",
    "check_masked_lm",
    "inference_context",
    "autocast_dtype",
    "OUTPUTS",
]

OUTPUTS = ("log_prob", "prob")


@dataclass(frozen=True)
class MaskedTokenQuery:
    """One question to a masked LM: the probability of ``target_id`` at ``position``.

    Attributes:
        input_ids: the full token sequence fed to the model, special tokens included and the
            masked positions already replaced by the mask token id.
        position: index into ``input_ids`` whose output distribution is read.
        target_id: the vocabulary id whose probability is returned.
    """

    input_ids: tuple[int, ...]
    position: int
    target_id: int


def resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to run on: ``device`` if given (the model is moved there), else the model's."""
    if device is not None:
        device = torch.device(device)
        model.to(device)
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def check_masked_lm(model: torch.nn.Module, tokenizer: Any | None = None) -> None:
    """Refuse a model without a masked-LM head, or a tokenizer without a mask token.

    Raises:
        ValueError: one line saying what is missing and what to load instead.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    if not callable(get_head) or get_head() is None:
        raise ValueError(f"{type(model).__name__} has no masked-LM head; load the model with "
                         "AutoModelForMaskedLM for the masked-LM benchmarks")
    if tokenizer is not None and getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"{type(tokenizer).__name__} has no mask token; the masked-LM benchmarks need one")


def autocast_dtype(device: torch.device, bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of scoring on ``device``: None (float32) unless ``bf16`` is True.

    Raises:
        ValueError: ``bf16=True`` on a device other than CUDA (CPU scoring stays float32 so that
            it matches the reference exactly).
    """
    if not bf16:
        return None
    if device.type != "cuda":
        raise ValueError(f"bf16=True is only allowed on CUDA, got device {device}; use bf16=False")
    return torch.bfloat16


@contextlib.contextmanager
def inference_context(device: torch.device, bf16: bool | None = None) -> Iterator[None]:
    """``torch.inference_mode``, in float32 unless ``bf16=True`` (bf16 autocast on CUDA, :func:`autocast_dtype`)."""
    dtype = autocast_dtype(device, bf16)
    with torch.inference_mode():
        if dtype is not None:
            with torch.autocast(device_type="cuda", dtype=dtype):
                yield
        else:
            yield


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _validate(queries: Sequence[MaskedTokenQuery], output: str, batch_size: int) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r} is not allowed; expected one of {', '.join(OUTPUTS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; expected an integer >= 1")
    for i, q in enumerate(queries):
        if not 0 <= q.position < len(q.input_ids):
            raise ValueError(f"query {i}: position {q.position} is outside its input of length {len(q.input_ids)}")


def _pick(logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    """Probability (or log-probability) of ``targets`` under float32 ``logits`` (last dim = vocab)."""
    logits = logits.float()
    dist = torch.log_softmax(logits, dim=-1) if output == "log_prob" else torch.softmax(logits, dim=-1)
    return dist.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class _HeadAtPositions:
    """Make a masked LM apply its head only at chosen positions of each row.

    A forward hook on ``model.base_model`` replaces its hidden states ``(B, L, H)`` by the rows
    at ``self.index`` ``(B, P)``, so the head (position-wise in every Hugging Face masked LM)
    returns logits ``(B, P, V)`` instead of ``(B, L, V)``. If the model does not route its head
    through ``base_model`` (the hook never fires, or the logits come back with another shape)
    :meth:`logits` falls back to full logits and gathers the positions afterwards.
    """

    def __init__(self, model: torch.nn.Module, enabled: bool = True):
        self.model = model
        self.index: torch.Tensor | None = None
        self.fired = False
        self.handle = None
        body = getattr(model, "base_model", None)
        if enabled and isinstance(body, torch.nn.Module) and body is not model:
            self.handle = body.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        if self.index is None:
            return output
        hidden = output[0]
        if not torch.is_tensor(hidden) or hidden.dim() != 3 or hidden.size(0) != self.index.size(0):
            return output
        index = self.index.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        gathered = hidden.gather(1, index)
        self.fired = True
        if isinstance(output, tuple):
            return (gathered,) + tuple(output[1:])
        output["last_hidden_state"] = gathered
        return output

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, P, V)`` at ``positions`` ``(B, P)``."""
        if self.handle is not None:
            self.index, self.fired = positions, False
            try:
                out = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            finally:
                self.index = None
            if self.fired and out.shape[:2] == positions.shape:
                return out
            self.remove()  # this architecture does not support it; use full logits from now on
        out = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        index = positions.unsqueeze(-1).expand(-1, -1, out.size(-1))
        return out.gather(1, index)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def _pad_id(model: torch.nn.Module, pad_token_id: int | None) -> int:
    if pad_token_id is not None:
        return int(pad_token_id)
    config_pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    return int(config_pad) if config_pad is not None else 0


def _score_batched(model: torch.nn.Module, queries: Sequence[MaskedTokenQuery], *, output: str, batch_size: int,
                   device: torch.device, pad_id: int, head_at_masks_only: bool) -> np.ndarray:
    # input sequence -> position -> [(query index, target id)]; insertion order keeps it deterministic
    groups: dict[tuple[int, ...], dict[int, list[tuple[int, int]]]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.input_ids, {}).setdefault(q.position, []).append((i, q.target_id))
    inputs = sorted(groups, key=len, reverse=True)  # longest first: a memory error shows at once
    result = np.empty(len(queries), dtype=np.float64)
    runner = _HeadAtPositions(model, enabled=head_at_masks_only)
    try:
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            width = len(chunk[0])
            n_pos = max(len(groups[seq]) for seq in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            pos = torch.zeros((len(chunk), n_pos), dtype=torch.long)
            rows: list[int] = []
            cols: list[int] = []
            targets: list[int] = []
            owners: list[int] = []
            for r, seq in enumerate(chunk):
                ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[r, :len(seq)] = 1
                for c, (position, asks) in enumerate(groups[seq].items()):
                    pos[r, c] = position
                    for owner, target in asks:
                        rows.append(r)
                        cols.append(c)
                        targets.append(target)
                        owners.append(owner)
            logits = runner.logits(ids.to(device), mask.to(device), pos.to(device))
            picked_rows = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
            values = _pick(picked_rows, torch.tensor(targets, device=device), output)
            result[np.asarray(owners)] = values.double().cpu().numpy()
    finally:
        runner.remove()
    return result


def _score_reference(model: torch.nn.Module, queries: Sequence[MaskedTokenQuery], *, output: str,
                     device: torch.device) -> np.ndarray:
    result = np.empty(len(queries), dtype=np.float64)
    for i, q in enumerate(queries):
        ids = torch.tensor([q.input_ids], dtype=torch.long, device=device)
        logits = model(input_ids=ids).logits[0, q.position]
        target = torch.tensor(q.target_id, device=device)
        result[i] = _pick(logits, target, output).item()
    return result


def score_masked_tokens(model: torch.nn.Module, queries: Sequence[MaskedTokenQuery], *, output: str = "log_prob",
                        batch_size: int = 64, device: str | torch.device | None = None,
                        pad_token_id: int | None = None, bf16: bool | None = None,
                        head_at_masks_only: bool = True, reference: bool = False) -> np.ndarray:
    """Answer every query: the (log-)probability of its target at its position.

    Args:
        model: a ``transformers`` masked LM (``...ForMaskedLM``); put in eval mode while scoring
            and returned to its previous mode afterwards.
        queries: the questions, in any order; duplicates are answered once.
        output: ``"log_prob"`` (``log_softmax``, as CrowS-Pairs uses) or ``"prob"`` (``softmax``,
            as StereoSet uses), both computed from float32 logits.
        batch_size: unique input sequences per forward pass.
        device: where to run; None uses the model's device. A given device moves the model.
        pad_token_id: the padding id; None takes ``model.config.pad_token_id`` (else 0). It never
            affects a score: padding is excluded from attention.
        bf16: bf16 autocast (CUDA only); False or None (the default) scores in float32.
        head_at_masks_only: apply the masked-LM head only at the queried positions (same numbers,
            about half the work for a small model). Turn off for a model whose head is not
            position-wise.
        reference: score one query per forward pass, as the official evaluators do (no batching,
            no de-duplication, full logits). For tests and benchmarks.

    Returns:
        float64 array, one value per query, in the order of ``queries``.

    Raises:
        ValueError: unknown ``output``, ``batch_size`` below 1, or a position outside its input.
    """
    queries = list(queries)
    _validate(queries, output, batch_size)
    dev = resolve_device(model, device)
    if not queries:
        return np.empty(0, dtype=np.float64)
    with _eval_mode(model), inference_context(dev, bf16):
        if reference:
            return _score_reference(model, queries, output=output, device=dev)
        return _score_batched(model, queries, output=output, batch_size=batch_size, device=dev,
                              pad_id=_pad_id(model, pad_token_id), head_at_masks_only=head_at_masks_only)
