"""Post-training dynamic int8 quantization of a model's linear layers.

Why: int8 weights take a quarter of the bytes of fp32 ones and int8 matrix products are faster
on CPUs, with no retraining. Whether the small rounding errors it introduces fall evenly on all
groups is exactly what the study measures (study key ``space.quantization.int8``).

*Dynamic* means the weights are quantized once, ahead of time (symmetric int8, one scale per
output channel by default), while activations are quantized on the fly, per batch, from their
observed range. Everything that is not an ``nn.Linear`` (embeddings, LayerNorm) stays fp32.

Which API, and why: torch 2.13 still ships ``torch.ao.quantization.quantize_dynamic``, but
marks the whole ``torch.ao.quantization`` namespace deprecated in favour of the separate
``torchao`` package (``torchao.quantization.quantize_``), which is not a dependency of this
project. ``quantize_dynamic`` is the only int8 path in torch itself that runs on the fast CPU
kernels (fbgemm/x86, qnnpack on ARM): ``torch._int_mm`` on CPU measured ~35x *slower* than fp32
here, so a hand-written replacement would make the latency objective dishonest. The deprecation
warnings are silenced inside :func:`quantize_dynamic_int8` only; if a later torch removes the
function, this raises a ``RuntimeError`` saying so.

The quantized model runs on **CPU only** (the packed int8 weights have no CUDA kernels); the
copy is moved to CPU before quantizing, and the original model is never touched. It is for
inference: ``model.eval()`` is set and it cannot be trained further.

Example:
    >>> qmodel = quantize_dynamic_int8(model)  # doctest: +SKIP
    >>> qmodel(input_ids=ids).logits  # runs on CPU  # doctest: +SKIP

Its ``[space.quantization]`` table, config and family are :mod:`fairfront.spaces.quantization_family`
(read without torch); the family's ``start`` imports this module when a trial runs.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from fairfront.spaces.family import FamilyTrial, TrialContext
from fairfront.spaces.quantization_family import QuantizationConfig, QuantizationFamily, QuantizationSpace

__all__ = ["is_quantized", "quantize_dynamic_int8", "quantized_linear_names", "QuantizationConfig",
           "QuantizationSpace", "QuantizationFamily"]


def _quantize_dynamic():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torch.ao.quantization import (
                default_dynamic_qconfig,
                per_channel_dynamic_qconfig,
                quantize_dynamic,
            )
        except ImportError:  # pragma: no cover - depends on a future torch
            raise RuntimeError(
                f"torch {torch.__version__} no longer provides torch.ao.quantization.quantize_dynamic; "
                "int8 quantization needs torch<=2.13 or a port to torchao.quantization.quantize_"
            ) from None
    return quantize_dynamic, default_dynamic_qconfig, per_channel_dynamic_qconfig


def quantize_dynamic_int8(model: nn.Module, *, per_channel: bool = True,
                          exclude: Sequence[str] = ()) -> nn.Module:
    """Return a CPU copy of ``model`` whose ``nn.Linear`` layers compute in dynamic int8.

    Why: the cheapest compression there is (no data, no training), and the one engineers
    ship most often; study key ``space.quantization.int8`` (true/false), with
    ``space.quantization.per_channel`` for the weight scales.

    Args:
        model: any torch model (e.g. a BERT-family sequence classifier, pruned or not).
        per_channel: one scale per output row of each weight (more accurate) instead of one
            per matrix.
        exclude: qualified module names (as in ``named_modules``) whose Linear layers, and
            those below them, stay fp32, e.g. ``("classifier",)``.

    Returns:
        A new model in eval mode on CPU; ``model`` is left as it was.

    Raises:
        ValueError: if a name in ``exclude`` is not a module of the model.
    """
    names = dict(model.named_modules())
    unknown = [n for n in exclude if n not in names]
    if unknown:
        raise ValueError(f"exclude names {unknown} are not modules of {type(model).__name__}")
    quantize_dynamic, per_tensor_qconfig, per_channel_qconfig = _quantize_dynamic()
    qconfig = per_channel_qconfig if per_channel else per_tensor_qconfig
    spec: dict[object, object] = {nn.Linear: qconfig}
    for name in exclude:
        # A name key only overrides that very module, so list every Linear below it too.
        for sub, module in names.items():
            if isinstance(module, nn.Linear) and (name in ("", sub) or sub.startswith(name + ".")):
                spec[sub] = None
    work = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        quantized = quantize_dynamic(work, spec, dtype=torch.qint8, inplace=True)
    quantized.eval()
    return quantized


def _is_dynamic_quantized_linear(module: nn.Module) -> bool:
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


def quantized_linear_names(model: nn.Module) -> list[str]:
    """Qualified names of the int8 linear layers in ``model`` (empty for a float model)."""
    return [name for name, module in model.named_modules() if _is_dynamic_quantized_linear(module)]


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds any dynamic int8 linear layer (and so must run on CPU)."""
    return any(_is_dynamic_quantized_linear(m) for m in model.modules())


def start_trial(config: QuantizationConfig, ctx: TrialContext) -> FamilyTrial:
    """The quantization family's hooks into one trial (:meth:`QuantizationFamily.start`)."""
    return _Int8() if config.int8 else FamilyTrial()


class _Int8(FamilyTrial):
    def convert(self, ctx: TrialContext) -> None:
        """Replace the model by its int8 copy, which runs on CPU only: evaluation moves there too."""
        ctx.model = quantize_dynamic_int8(ctx.model.cpu())
        ctx.eval_device = torch.device("cpu")
