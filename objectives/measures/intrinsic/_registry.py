"""The registry of intrinsic bias benchmarks and the single entry point trials call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fairfront.errors import ConfigError
from fairfront.objectives.measures.intrinsic import crows_pairs, seat, stereoset, winobias

__all__ = ["IntrinsicBenchmark", "INTRINSIC_BENCHMARKS", "evaluate_intrinsic"]


@dataclass(frozen=True)
class IntrinsicBenchmark:
    """What a benchmark measures and how its headline number reads.

    Attributes:
        name: the registry key.
        description: one line for reports and ``--help`` text.
        citation: the paper to cite.
        needs: ``"masked_lm"`` (a model with a masked-LM head) or ``"encoder"`` (any encoder).
        headline: the result key that a study uses as the bias objective (a ``/``-separated path).
        ideal: the headline value of an unbiased model; ``bias`` = ``|headline - ideal|``.
    """

    name: str
    description: str
    citation: str
    needs: str
    headline: str
    ideal: float


INTRINSIC_BENCHMARKS: dict[str, IntrinsicBenchmark] = {
    "stereoset": IntrinsicBenchmark(
        name="stereoset",
        description="StereoSet intrasentence: stereotype score SS (ideal 50), LMS and ICAT, per domain",
        citation=stereoset.CITATION, needs="masked_lm", headline="overall/ss", ideal=50.0),
    "crows_pairs": IntrinsicBenchmark(
        name="crows_pairs",
        description="CrowS-Pairs: % of pairs where the more stereotypical sentence has the higher PLL (ideal 50)",
        citation=crows_pairs.CITATION, needs="masked_lm", headline="metric_score", ideal=50.0),
    "winobias": IntrinsicBenchmark(
        name="winobias",
        description="WinoBias pronoun probe: masked-pronoun accuracy gap, pro minus anti stereotype (ideal 0)",
        citation=winobias.CITATION, needs="masked_lm", headline="overall/gap", ideal=0.0),
    "seat": IntrinsicBenchmark(
        name="seat",
        description="SEAT/WEAT 6-8: mean |effect size| of gender associations in sentence embeddings (ideal 0)",
        citation=seat.CITATION, needs="encoder", headline="mean_abs_effect_size", ideal=0.0),
}


def _lookup(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for key in path.split("/"):
        value = value[key]
    return value


def evaluate_intrinsic(name: str, model: torch.nn.Module, tokenizer: Any, *,
                       data_dir: str | os.PathLike[str] | None = None, batch_size: int = 64,
                       limit: int | None = None, device: str | torch.device | None = None,
                       items: Sequence[Any] | None = None, bf16: bool = False) -> dict[str, Any]:
    """Run one intrinsic benchmark on a model and return its JSON-serialisable result.

    Args:
        name: a key of :data:`INTRINSIC_BENCHMARKS`.
        model: a masked LM for ``stereoset``, ``crows_pairs`` and ``winobias``; any encoder for
            ``seat``.
        tokenizer: the model's tokenizer.
        data_dir: the data root (``stereoset/``, ``crows_pairs/``, ``winobias/`` below it); None
            uses the default location.
        batch_size: sequences per forward pass.
        limit: score only the first ``limit`` items (clusters, pairs, line ids, or sentences per
            SEAT set); None scores everything.
        device: where to run; None keeps the model where it is.
        items: score exactly these items instead of loading the data (``limit`` then applies to
            them): StereoSet clusters, CrowS-Pairs pairs, WinoBias sentences, or SEAT tests (see
            :mod:`fairfront.objectives.measures.intrinsic.halves` for the validation/test halves).
        bf16: bf16 autocast (CUDA only); the default scores in float32.

    Returns:
        The benchmark's result plus ``"headline"`` (``{"key", "value", "ideal", "bias"}``, where
        ``bias = |value - ideal|`` is lower-is-better and can be minimised directly).

    Raises:
        ConfigError: unknown ``name``.
        ValueError: a masked-LM benchmark got a model without a masked-LM head.

    Example:
        >>> sorted(INTRINSIC_BENCHMARKS)
        ['crows_pairs', 'seat', 'stereoset', 'winobias']
    """
    if name not in INTRINSIC_BENCHMARKS:
        raise ConfigError("intrinsic benchmark", name, "one of: " + ", ".join(INTRINSIC_BENCHMARKS))
    spec = INTRINSIC_BENCHMARKS[name]
    common = {"limit": limit, "batch_size": batch_size, "device": device, "bf16": bf16}
    subset = None if items is None else list(items)
    if name == "stereoset":
        result = stereoset.evaluate_stereoset(model, tokenizer, data_dir=data_dir, clusters=subset, **common)
    elif name == "crows_pairs":
        result = crows_pairs.evaluate_crows_pairs(model, tokenizer, data_dir=data_dir, pairs=subset, **common)
    elif name == "winobias":
        split = "dev"
        if subset:
            splits = {s.split for s in subset}
            split = splits.pop() if len(splits) == 1 else "all"
        result = winobias.evaluate_winobias(model, tokenizer, data_dir=data_dir, sentences=subset, split=split,
                                            **common)
    else:
        result = seat.evaluate_seat(model, tokenizer, tests=subset, **common)
    value = _lookup(result, spec.headline)
    result["headline"] = {"key": spec.headline, "value": value, "ideal": spec.ideal,
                          "bias": None if value is None else abs(float(value) - spec.ideal)}
    return result
