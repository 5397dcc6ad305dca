"""Honest model size: what a compressed model really costs to store and to run.

"Size" is easy to overstate. A magnitude-pruned model still stores its zeros unless it is
written in a sparse format, and a sparse format pays for its indices; a model with torch's
pruning re-parametrisation keeps both the dense original and a mask; an int8 model keeps its
embeddings in fp32. This module measures each of these views so that a study can pick the one
it optimises (study key ``objectives.size.measure``) and report the others:

- :func:`parameter_count` and :func:`nonzero_parameters`: counts of the *effective* weights
  (masked weights count as the product ``weight_orig * weight_mask``; int8 linear weights are
  counted too, although they are not ``nn.Parameter``\\ s).
- :func:`storage_bytes`: ``dense_fp32``, ``sparse`` (int32 CSR, see :func:`sparse_tensor_bytes`),
  ``int8`` and ``serialized`` bytes.
- :func:`measure_latency`: median milliseconds per batch.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=128))
    >>> parameter_count(model) == sum(p.numel() for p in model.parameters())
    True
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "measure_latency",
    "nonzero_parameters",
    "parameter_count",
    "sparse_tensor_bytes",
    "storage_bytes",
]

_FP32 = 4
_INDEX = 4  # int32 column indices and row pointers


def _is_dynamic_quantized_linear(module: nn.Module) -> bool:
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


def _effective_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, str]]:
    """Yield ``(name, tensor, kind)`` for every weight as the model uses it.

    ``kind`` is ``"linear_weight"`` (the weight matrix of a float or int8 linear layer),
    ``"embedding"`` or ``"other"``. Shared parameters are yielded once.
    """
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        if ".parametrizations." in f".{mod_name}." and not hasattr(module, "parametrizations"):
            continue  # the original tensors inside a parametrize container; the owner yields them
        prefix = f"{mod_name}." if mod_name else ""
        if _is_dynamic_quantized_linear(module):
            weight = module.weight().dequantize()
            yield f"{prefix}weight", weight, "linear_weight"
            bias = module.bias()
            if bias is not None:
                yield f"{prefix}bias", bias.detach(), "other"
            continue
        kind_of_module = "embedding" if isinstance(module, nn.Embedding) else None
        parametrized = set(getattr(module, "parametrizations", {}) or {})
        for name in sorted(parametrized):
            original = getattr(module.parametrizations, name).original
            if id(original) in seen:
                continue
            seen.add(id(original))
            kind = kind_of_module or ("linear_weight" if isinstance(module, nn.Linear) and name == "weight"
                                      else "other")
            yield f"{prefix}{name}", getattr(module, name).detach(), kind
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            name, tensor = pname, param.detach()
            if pname.endswith("_orig") and hasattr(module, pname[: -len("_orig")] + "_mask"):
                name = pname[: -len("_orig")]
                tensor = getattr(module, name).detach()  # torch.nn.utils.prune: orig * mask
            kind = kind_of_module or ("linear_weight" if isinstance(module, nn.Linear) and name == "weight"
                                      else "other")
            yield f"{prefix}{name}", tensor, kind


def parameter_count(model: nn.Module, *, include_embeddings: bool = True) -> int:
    """Number of weights the model uses, int8 linear weights included.

    Why: ``sum(p.numel() for p in model.parameters())`` misses int8 weights (they are packed
    buffers) and double-counts nothing only by luck; this is the denominator of every sparsity
    figure in a trial report.

    Args:
        model: any torch model.
        include_embeddings: count ``nn.Embedding`` tables (often the largest part of a small
            encoder, and untouched by most compression).
    """
    return sum(t.numel() for _, t, kind in _effective_tensors(model)
               if include_embeddings or kind != "embedding")


def nonzero_parameters(model: nn.Module, *, include_embeddings: bool = True) -> int:
    """Number of weights that are not exactly zero, after any pruning mask is applied.

    Why: the size objective of a pruning study (``objectives.size.measure = "nonzero"``):
    structured pruning lowers it by slicing, unstructured pruning by zeroing.

    Args:
        model: any torch model.
        include_embeddings: as for :func:`parameter_count`.
    """
    return sum(int(torch.count_nonzero(t)) for _, t, kind in _effective_tensors(model)
               if include_embeddings or kind != "embedding")


def sparse_tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of one tensor in the cheaper of dense fp32 and int32 CSR.

    The CSR encoding views the tensor as a matrix (a vector is one row; a tensor of higher rank
    keeps its first dimension as rows) and stores ``4 * nnz`` bytes of fp32 values,
    ``4 * nnz`` bytes of int32 column indices and ``4 * (rows + 1)`` bytes of int32 row
    pointers: exactly what ``tensor.to_sparse_csr()`` holds with int32 indices, so the figure is
    one a user can actually ship and load. CSR only wins below 50% density, so the dense size
    ``4 * numel`` is taken when it is smaller.

    Example:
        >>> sparse_tensor_bytes(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))  # 4 + 4 + 4*(2+1)
        20
        >>> sparse_tensor_bytes(torch.ones(2, 3))  # dense wins: 4*6
        24
    """
    rows = 1 if tensor.dim() < 2 else tensor.shape[0]
    nnz = int(torch.count_nonzero(tensor))
    csr = _FP32 * nnz + _INDEX * nnz + _INDEX * (rows + 1)
    return min(_FP32 * tensor.numel(), csr)


def _serialized_bytes(state: object) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def storage_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes needed to store the model, four ways.

    Why: the size objective (``objectives.size.measure``: ``"dense_fp32"``, ``"sparse"``,
    ``"int8"`` or ``"serialized"``) must be comparable across pruning, distillation and
    quantization trials.

    Returns:
        ``dense_fp32``: every effective weight at 4 bytes.
        ``sparse``: per tensor, the cheaper of dense fp32 and int32 CSR
        (:func:`sparse_tensor_bytes`), summed.
        ``int8``: for a model with int8 linear layers, the real size of its serialized state
        dict; for a float model, the estimate of quantizing every linear weight matrix to one
        byte per entry plus one fp32 scale per output row, with all other tensors (biases,
        embeddings, LayerNorm) kept at 4 bytes.
        ``serialized``: bytes of ``torch.save(model.state_dict())`` (includes pruning masks and
        ``*_orig`` copies if the model still carries them).
    """
    dense = 0
    sparse = 0
    int8_estimate = 0
    quantized = False
    for _, tensor, kind in _effective_tensors(model):
        dense += _FP32 * tensor.numel()
        sparse += sparse_tensor_bytes(tensor)
        if kind == "linear_weight":
            rows = tensor.shape[0] if tensor.dim() >= 1 else 1
            int8_estimate += tensor.numel() + _FP32 * rows
        else:
            int8_estimate += _FP32 * tensor.numel()
    for module in model.modules():
        if _is_dynamic_quantized_linear(module):
            quantized = True
            break
    serialized = _serialized_bytes(model.state_dict())
    return {
        "dense_fp32": dense,
        "sparse": sparse,
        "int8": serialized if quantized else int8_estimate,
        "serialized": serialized,
    }


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def measure_latency(model: nn.Module, *, batch_sizes: Sequence[int] = (1, 32), seq_len: int = 64,
                    repeats: int = 10, warmup: int = 2, threads: int | None = None,
                    seed: int = 0) -> dict[int, float]:
    """Median wall-clock milliseconds of one forward pass, per batch size.

    Why: slicing heads or quantizing changes latency, while unstructured zeros usually do not;
    a study reports this so that the size objective is not mistaken for speed (study keys
    ``objectives.latency.batch_sizes``, ``objectives.latency.seq_len``,
    ``objectives.latency.repeats``, ``objectives.latency.threads``).

    Inputs are random token ids of length ``seq_len`` with a full attention mask. The model
    runs in ``torch.inference_mode`` and eval mode (its training flag is restored afterwards)
    on the device it is on; this is meant for CPU (int8 models run only there), and waits for
    CUDA kernels when the model is on a GPU. ``threads`` sets ``torch.set_num_threads`` for the
    measurement only.

    Returns:
        ``{batch size: median ms}``.

    Example:
        >>> measure_latency(model, batch_sizes=(1,), seq_len=16, repeats=3)  # doctest: +SKIP
        {1: 1.8}
    """
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batch_sizes = {batch_sizes!r} is not allowed: expected positive integers")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is None:
        raise ValueError(f"{type(model).__name__} has no config.vocab_size to draw input ids from")
    max_len = getattr(config, "max_position_embeddings", None)
    if not isinstance(seq_len, int) or seq_len < 1 or (max_len is not None and seq_len > max_len):
        raise ValueError(f"seq_len = {seq_len!r} is not allowed: expected 1..{max_len}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats = {repeats}, warmup = {warmup}: expected repeats >= 1 and warmup >= 0")
    if threads is not None and threads < 1:
        raise ValueError(f"threads = {threads} is not allowed: expected None or a positive integer")

    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    results: dict[int, float] = {}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for batch in sizes:
                ids = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)
                mask = torch.ones_like(ids)
                for _ in range(warmup):
                    model(input_ids=ids, attention_mask=mask)
                sync()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(input_ids=ids, attention_mask=mask)
                    sync()
                    times.append((time.perf_counter() - start) * 1000.0)
                results[batch] = float(statistics.median(times))
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return results
