"""Does fairness-aware compression lower the group gap? A controlled, replicated comparison.

The question: at matched sparsity, does a fairness-aware compression method give a lower TPR gap
across groups than plain compression, on more than one dataset, by a paired difference whose 95%
interval excludes 0 (Benjamini-Hochberg across the cells), while losing at most 1 point of accuracy?

The experiment holds everything fixed except the method, per dataset (:data:`DATASETS`):

- one dense teacher (all-MiniLM-L6-v2 fine-tuned with the settings of
  ``studies/redditbias_fairness.toml``; the Jigsaw templates reuse them with their own data
  settings; cached, so the study and this benchmark share the RedditBias teacher);
- one compression: global magnitude pruning to the same sparsity on the same gradual schedule,
  the same number of student steps, the same distillation (T = 2, alpha = 0.5) from the teacher's
  cached logits;
- the variants add exactly one fairness lever each (:data:`VARIANTS`);
- every variant runs with the same student seeds, so run ``s`` of a variant and run ``s`` of plain
  compression share their seed and their examples: a cell (dataset x sparsity) is a paired design.

Selection does not look at the test split (:data:`SELECTION_RULE`). The selected method is then
compared with plain compression on the test split by
:func:`fairfront.objectives.measures.significance.paired_differences`: predictions
``[n_seeds, n_examples]`` of both methods (row ``s`` = seed ``s``), a paired bootstrap over
examples (within groups) and seeds for the interval, approximate randomization for the p-value;
the same for accuracy (the cost). The p-values of the gap differences are adjusted across the
cells with Benjamini-Hochberg (:func:`~fairfront.objectives.measures.significance.adjust_p_values`).

run_trial keeps scores, not predictions; the benchmark records the predictions by wrapping the
prediction function the trial module calls (nothing in the trial changes).

Usage::

    python benchmarks/fairness_compression.py --quick          # smoke run: both datasets, tiny subsample
    python benchmarks/fairness_compression.py                  # full configuration (see README)
    python benchmarks/fairness_compression.py --resume --seeds 0 1 2 3 4 5 6   # add seeds, reuse the rest

Writes ``benchmarks/results/fairness_compression.json`` (``--quick``: in the temporary folder) after
every run, atomically, and prints the markdown tables at the end. The file keeps every run's
validation and test predictions, so ``--resume`` adds seeds, variants, sparsities or datasets and
redoes the analysis without retraining anything.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fairfront.jsonsafe import json_safe  # noqa: E402
from fairfront.objectives.measures import group_fairness  # noqa: E402
from fairfront.objectives.measures.report import SplitScores  # noqa: E402
from fairfront.objectives.measures.significance import adjust_p_values, paired_differences  # noqa: E402
from fairfront.objectives.training import trial as trial_module  # noqa: E402
from fairfront.objectives.training.prepare import Prepared, prepare  # noqa: E402
from fairfront.objectives.training.trial import TrialSpec, run_trial  # noqa: E402
from fairfront.search.cli_args import OneLineErrorParser  # noqa: E402 - bad arguments: one error line
from fairfront.search.studyfile import StudyFile, load_study_file  # noqa: E402
from fairfront.spaces.distillation import DistillationConfig  # noqa: E402
from fairfront.spaces.fair_compression import FairDistillationConfig  # noqa: E402
from fairfront.spaces.fairness import FairnessConfig  # noqa: E402
from fairfront.spaces.pruning import PruningConfig  # noqa: E402
from fairfront.spaces.schedules import SparsitySchedule  # noqa: E402
from fairfront.spaces.space import CompressionConfig  # noqa: E402

from _common import cpu_model, write_json_atomic  # noqa: E402 - benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "redditbias_fairness.toml"
RESULTS = REPO / "benchmarks" / "results"
BIAS = "tpr_gap"
PLAIN = "plain"
MAX_ACCURACY_LOSS = 0.01
ALPHA = 0.05

DISTILLATION = DistillationConfig(temperature=2.0, alpha=0.5)


@dataclass(frozen=True)
class DatasetSetup:
    """How one dataset's study settings differ from :data:`STUDY` (everything else is shared)."""

    description: str
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetSetup] = {
    "redditbias": DatasetSetup("RedditBias comments (Barikeri et al. 2021), biased / not biased, 5 target groups"),
    "jigsaw_templates": DatasetSetup(
        "Jigsaw sentence templates (Dixon et al. 2018), toxic / nontoxic, 6 identity categories "
        "(term rows without an identity term count for accuracy only)",
        data={"source": "jigsaw_templates", "options": {"group_by": "category"}, "max_eval": 2000},
        model={"max_length": 32}),
}
"""Built-in datasets with a real group column, and their settings beside the shared study file.

The Jigsaw templates are short (the longest is 14 MiniLM tokens, special tokens included), so 32
tokens keep every sentence; 2,000 evaluation sentences per split give the 6 categories 59
(disability) to 337 (ethnicity) toxic examples each.
"""

TINY = {"name": "tiny-random", "tiny_layers": 2, "tiny_hidden": 128, "tiny_heads": 2, "tiny_intermediate": 256}
"""``--model tiny``: a 2-layer, hidden-128 BERT with a word-level vocabulary, trained from scratch
(for machines where fine-tuning MiniLM in the time available is out of reach)."""

TINY_LEARNING_RATE = 1e-3
"""Teacher and student learning rate with ``--model tiny``: a randomly initialised encoder barely
moves at MiniLM's 1e-4 in a few hundred steps (teacher loss still ~0.65-0.7 after 200 steps)."""

VARIANTS: dict[str, tuple[str, dict]] = {
    PLAIN: ("plain compression: magnitude pruning + distillation", {}),
    "eo_penalty_0.3": ("+ equal-opportunity penalty, weight 0.3",
                       {"fairness": FairnessConfig("equal_opportunity", 0.3)}),
    "eo_penalty_1": ("+ equal-opportunity penalty, weight 1",
                     {"fairness": FairnessConfig("equal_opportunity", 1.0)}),
    "group_dro": ("+ group DRO, step size 0.1", {"fairness": FairnessConfig("group_dro", 0.1)}),
    "group_reweight": ("+ group reweighting (Kamiran & Calders), strength 1",
                       {"fairness": FairnessConfig("group_reweight", 1.0)}),
    "fair_distillation": ("+ fair distillation (teacher disagreement and group-recall deficit), strength 2",
                          {"fair_distillation": FairDistillationConfig(2.0, "both")}),
    "fair_pruning": ("+ fairness-aware pruning scores, mix 0.5", {"fairness_mix": 0.5}),
}
"""Variant name -> (description, what it adds to plain compression). Fixed before the reported runs.

Two choices were settled by a ``--quick`` pilot on RedditBias, from its validation numbers: penalty
weights 1 and 5 both drove the student to predict "biased" for everything, so the weights are 0.3
and 1; fair distillation with ``group_recall`` alone left every weight at 1, so it uses ``both``.
"""

SELECTION_RULE = (
    "Fixed before the reported runs, applied per dataset and sparsity on the VALIDATION split only: average "
    "each variant's accuracy and tpr_gap over the seeds; keep the fairness-aware variants whose mean validation "
    "accuracy is at least plain compression's minus 0.01; the best is the kept variant with the lowest mean "
    "validation tpr_gap (ties: higher validation accuracy). If none is kept, the lowest-gap variant is "
    "reported and marked as outside the accuracy budget. Only its TEST predictions are then compared with "
    "plain compression's, paired by seed and example."
)

GOAL = ("in every dataset x sparsity cell, the selected method's test tpr_gap minus plain compression's (paired "
        "over the same seeds and examples) has a 95% interval below 0 and a Benjamini-Hochberg adjusted "
        "p-value <= 0.05 across the cells, at no more than 1 point of test accuracy lost (mean paired difference)")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def compression_for(variant: str, sparsity: float, steps: int) -> CompressionConfig:
    """The variant's compression: the shared pruning + distillation, plus its one fairness lever."""
    extra = dict(VARIANTS[variant][1])
    mix = extra.pop("fairness_mix", 0.0)
    schedule = SparsitySchedule("gradual", sparsity, start=0.0, end=0.5, frequency=max(1, steps // 16))
    pruning = PruningConfig(sparsity, schedule, scope="global", fairness_mix=mix)
    return CompressionConfig(distillation=DISTILLATION, pruning=pruning, **extra)


def dataset_study(sf: StudyFile, dataset: str, *, model: str, max_train: int | None, teacher_steps: int | None,
                  quick: bool) -> StudyFile:
    """The shared study file with one dataset's data and model settings (and the command line's overrides)."""
    setup = DATASETS[dataset]
    data = replace(sf.data, **setup.data)
    model_spec = replace(sf.model, **setup.model, **(TINY if model == "tiny" else {}))
    teacher, student = sf.teacher, sf.student
    if model == "tiny":
        teacher, student = (replace(teacher, learning_rate=TINY_LEARNING_RATE),
                            replace(student, learning_rate=TINY_LEARNING_RATE))
    if quick:
        data, teacher = replace(data, max_train=300, max_eval=200), replace(teacher, max_steps=60)
    if max_train is not None:
        data = replace(data, max_train=max_train)
    if teacher_steps is not None:  # max_steps caps the epochs' steps, so the epochs must cover it
        epochs = max(teacher.epochs, teacher_steps * teacher.batch_size / (data.max_train or 1) + 1)
        teacher = replace(teacher, max_steps=teacher_steps, epochs=float(math.ceil(epochs)))
    return replace(sf, data=data, model=model_spec, teacher=teacher, student=student)


@contextlib.contextmanager
def recording_predictions(prepared: Prepared) -> Iterator[dict[str, np.ndarray]]:
    """Record the class predictions run_trial makes on the validation and test splits."""
    recorded: dict[str, np.ndarray] = {}
    original = trial_module.predict_logits
    by_id = {id(split): name for name, split in prepared.splits.items()}

    def wrapped(model, data, **kwargs):
        logits = original(model, data, **kwargs)
        name = by_id.get(id(data))
        if name is not None:
            recorded[name] = np.asarray(logits).argmax(axis=1)
        return logits

    trial_module.predict_logits = wrapped
    try:
        yield recorded
    finally:
        trial_module.predict_logits = original


def run_one(prepared: Prepared, sf: StudyFile, *, dataset: str, variant: str, sparsity: float, seed: int,
            steps: int, threads: int) -> dict:
    compression = compression_for(variant, sparsity, steps)
    student = replace(sf.student, max_steps=steps)
    spec = TrialSpec(compression, student, sf.objectives, seed=seed, bootstrap_resamples=0, latency=False)
    load_before = os.getloadavg()[0]
    with recording_predictions(prepared) as predictions:
        outcome = run_trial(prepared, spec, device=torch.device("cpu"), threads=threads)
    report = outcome.report
    return {
        "dataset": dataset, "variant": variant, "sparsity": sparsity, "seed": seed,
        "achieved_sparsity": report.compression_notes.get("achieved_sparsity"),
        "nonzero_params": report.size["nonzero_params"],
        "validation": _summary(report.validation), "test": _summary(report.test),
        "train": report.train.to_record(), "timings": report.timings.to_record(),
        "group_dro_weights": report.compression_notes.get("group_dro_weights"),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "predictions": {split: encode_predictions(predictions[split]) for split in ("validation", "test")},
    }


def encode_predictions(pred: np.ndarray | list | str) -> str:
    """Class ids as one digit each (``"0110..."``): the results file stays small and diffable."""
    if isinstance(pred, str):
        return pred
    pred = np.asarray(pred, dtype=np.int64)
    if len(pred) and (pred.min() < 0 or pred.max() > 9):
        raise ValueError(f"predictions must be class ids 0..9 to be stored as digits; got {pred.min()}..{pred.max()}")
    return "".join(map(str, pred.tolist()))


def decode_predictions(text: str | list) -> np.ndarray:
    if isinstance(text, str):
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
    return np.asarray(text, dtype=np.int64)


def _summary(scores: SplitScores) -> dict:
    fairness = scores.fairness or {}
    return {"accuracy": scores.accuracy["accuracy"], "bias": scores.bias,
            "group_rates": fairness.get("group_rates"), "agreement_with_dense": scores.agreement_with_dense}


# --------------------------------------------------------------------------------------------
# Paired analysis
# --------------------------------------------------------------------------------------------


def paired_test(prepared: Prepared, split: str, pred_a: np.ndarray, pred_b: np.ndarray, *, resamples: int,
                seed: int) -> dict:
    """``a - b`` in accuracy (every example) and in the TPR gap (examples with a group), paired.

    ``pred_a`` and ``pred_b`` are ``[n_seeds, n_examples]`` with row ``s`` of both from seed ``s``.
    """
    data = prepared.splits[split]
    y, groups = np.asarray(data.labels), np.asarray(data.groups)
    keep = groups >= 0
    names = np.asarray(prepared.group_names, dtype=object)[groups[keep]]
    accuracy = paired_differences(y, pred_a, pred_b, measures=("accuracy",), n_resamples=resamples, seed=seed)
    gap = paired_differences(y[keep], pred_a[:, keep], pred_b[:, keep], sensitive_features=names, measures=(BIAS,),
                             n_resamples=resamples, seed=seed, pos_label=prepared.positive_index)
    return {"accuracy": accuracy["measures"]["accuracy"], BIAS: gap["measures"][BIAS],
            "n_seeds": accuracy["n_seeds"], "n_examples": accuracy["n"], "n_grouped": int(keep.sum()),
            "n_resamples": resamples, "test": accuracy["test"]}


def point_scores(prepared: Prepared, split: str, pred: np.ndarray) -> tuple[float, float]:
    """Accuracy (every example) and the registry's ``tpr_gap`` (examples with a group): what a trial reports."""
    data = prepared.splits[split]
    y, groups = np.asarray(data.labels), np.asarray(data.groups)
    keep = groups >= 0
    names = np.asarray(prepared.group_names, dtype=object)[groups[keep]]
    gap = group_fairness.BIAS_MEASURES[BIAS](y[keep], pred[keep], sensitive_features=names,
                                             pos_label=prepared.positive_index)
    return float((y == pred).mean()), float(gap)


def positives_per_group(prepared: Prepared, split: str) -> dict[str, int]:
    """Examples of the positive class per group: what a group's TPR, and so the gap, rests on."""
    data = prepared.splits[split]
    y, groups = np.asarray(data.labels), np.asarray(data.groups)
    return {name: int(((groups == g) & (y == prepared.positive_index)).sum())
            for g, name in enumerate(prepared.group_names)}


def predictions_by_seed(runs: list[dict], variant: str, split: str) -> np.ndarray:
    rows = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
    return np.stack([decode_predictions(r["predictions"][split]) for r in rows])


def analyse_cell(prepared: Prepared, runs: list[dict], *, resamples: int) -> dict:
    """One dataset x sparsity: per-variant means, the validation-only selection, paired tests on test."""
    at = complete_seeds(runs)
    for r in at:
        for split in ("validation", "test"):
            acc, gap = point_scores(prepared, split, decode_predictions(r["predictions"][split]))
            if not (math.isclose(acc, r[split]["accuracy"]) and _same(gap, r[split]["bias"][BIAS])):
                raise RuntimeError(f"recorded predictions do not reproduce the trial's {split} scores "
                                   f"({r['dataset']}, {r['variant']}, seed {r['seed']})")
    variants: dict = {}
    for variant in VARIANTS:
        rows = [r for r in at if r["variant"] == variant]
        if rows:
            variants[variant] = {"description": VARIANTS[variant][0], **{
                split: {"accuracy": float(np.mean([r[split]["accuracy"] for r in rows])),
                        BIAS: _nanmean([r[split]["bias"][BIAS] for r in rows]),
                        f"{BIAS}_seed_range": [_nanmin([r[split]["bias"][BIAS] for r in rows]),
                                               _nanmax([r[split]["bias"][BIAS] for r in rows])]}
                for split in ("validation", "test")}}
    seeds = sorted({r["seed"] for r in at})
    cell: dict = {"seeds": seeds, "variants": variants,
                  "runs_left_out": [f"seed {r['seed']} {r['variant']}" for r in runs if r not in at]}
    if PLAIN not in variants:
        return cell
    plain = predictions_by_seed(at, PLAIN, "test")
    dense = np.broadcast_to(prepared.dense_predictions("test"), plain.shape)
    cell["plain_minus_dense"] = paired_test(prepared, "test", plain, dense, resamples=resamples, seed=0)
    for variant in variants:
        if variant != PLAIN:
            variants[variant]["test_minus_plain"] = paired_test(
                prepared, "test", predictions_by_seed(at, variant, "test"), plain, resamples=resamples, seed=0)
    cell["selection"] = select(variants)
    return cell


def complete_seeds(runs: list[dict]) -> list[dict]:
    """The runs of the seeds that have every variant (an interrupted seed would unbalance the pairs)."""
    variants = {r["variant"] for r in runs}
    seeds = [s for s in sorted({r["seed"] for r in runs})
             if {r["variant"] for r in runs if r["seed"] == s} == variants]
    if PLAIN not in variants:
        return []
    return [r for r in runs if r["seed"] in seeds]


def select(variants: dict) -> dict:
    """Apply :data:`SELECTION_RULE` to the validation numbers."""
    plain = variants[PLAIN]["validation"]
    floor = plain["accuracy"] - MAX_ACCURACY_LOSS
    candidates = {name: v["validation"] for name, v in variants.items() if name != PLAIN}
    eligible = {n: v for n, v in candidates.items() if v["accuracy"] >= floor and v[BIAS] is not None}
    pool = eligible or {n: v for n, v in candidates.items() if v[BIAS] is not None}
    chosen = min(pool, key=lambda n: (pool[n][BIAS], -pool[n]["accuracy"])) if pool else None
    return {"rule": SELECTION_RULE, "validation_accuracy_floor": floor, "eligible": sorted(eligible),
            "chosen": chosen, "chosen_within_accuracy_budget": bool(chosen in eligible)}


def verdicts(cells: dict[str, dict[str, dict]]) -> dict:
    """The primary comparison of every cell (selected minus plain), BH-adjusted across the cells, and the goal."""
    keys = [(d, s) for d, per in cells.items() for s, c in per.items() if c.get("selection", {}).get("chosen")]
    tests = [cells[d][s]["variants"][cells[d][s]["selection"]["chosen"]]["test_minus_plain"] for d, s in keys]
    raw = [t[BIAS]["p_value"] if t[BIAS]["p_value"] is not None else 1.0 for t in tests]
    adjusted = adjust_p_values(raw, "bh").tolist() if raw else []
    for (d, s), test, p_bh in zip(keys, tests, adjusted, strict=True):
        gap, acc = test[BIAS], test["accuracy"]
        below = gap["ci"][1] is not None and gap["ci"][1] < 0
        lost = -acc["difference"] if acc["difference"] is not None else math.inf
        cells[d][s]["verdict"] = {
            "chosen": cells[d][s]["selection"]["chosen"], "gap_difference": gap["difference"], "gap_ci": gap["ci"],
            "gap_p": gap["p_value"], "gap_p_bh": p_bh, "gap_ci_below_zero": bool(below),
            "accuracy_difference": acc["difference"], "accuracy_ci": acc["ci"], "accuracy_p": acc["p_value"],
            "accuracy_lost": lost, "within_accuracy_budget": bool(lost <= MAX_ACCURACY_LOSS + 1e-12),
            "met": bool(below and p_bh <= ALPHA and lost <= MAX_ACCURACY_LOSS + 1e-12)}
    n_cells = sum(len(per) for per in cells.values())
    met = [cells[d][s]["verdict"]["met"] for d, s in keys]
    return {"goal": GOAL, "family": "the selected method's test gap difference in each dataset x sparsity cell",
            "correction": "benjamini_hochberg", "alpha": ALPHA, "cells": n_cells, "cells_tested": len(keys),
            "met_in_every_cell": bool(keys) and len(keys) == n_cells and all(met),
            "cells_met": [f"{d} @ {s}" for (d, s), m in zip(keys, met, strict=True) if m]}


def _same(a: float | None, b: float | None) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and math.isclose(a, b, abs_tol=1e-12)


def _kept(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _nanmean(values: list[float | None]) -> float | None:
    return float(np.mean(_kept(values))) if _kept(values) else None


def _nanmin(values: list[float | None]) -> float | None:
    return float(min(_kept(values))) if _kept(values) else None


def _nanmax(values: list[float | None]) -> float | None:
    return float(max(_kept(values))) if _kept(values) else None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _pts(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _diff(test: dict) -> str:
    ci = test["ci"]
    return f"{_pts(test['difference'], True)} [{_pts(ci[0], True)}, {_pts(ci[1], True)}]"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(result: dict) -> str:
    """The primary table (selected vs plain per cell, BH-adjusted), then every variant."""
    a = result["analysis"]
    lines = [
        "Test split; paired differences (selected method − plain compression, same seeds and examples), "
        f"95% paired bootstrap intervals and approximate-randomization p-values "
        f"({result['settings']['resamples']} resamples); p (BH): Benjamini–Hochberg across the cells; points ×100.",
        "",
        "| dataset | sparsity | seeds | selected (on validation) | test TPR gap plain → selected | Δ gap [95% CI] "
        "| p | p (BH) | Δ accuracy [95% CI] | p | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, per in a["cells"].items():
        for sparsity, cell in per.items():
            v = cell.get("verdict")
            if not v:
                continue
            t = cell["variants"][v["chosen"]]["test_minus_plain"]
            lines.append(
                f"| {dataset} | {sparsity} | {len(cell['seeds'])} | `{v['chosen']}` | "
                f"{_pts(t[BIAS]['b'])} → {_pts(t[BIAS]['a'])} | {_diff(t[BIAS])} | {_p(v['gap_p'])} | "
                f"{_p(v['gap_p_bh'])} | {_diff(t['accuracy'])} | {_p(v['accuracy_p'])} | "
                f"{'met' if v['met'] else 'not met'} |")
    lines += ["", f"Goal ({a['verdict']['goal']}): **{'met' if a['verdict']['met_in_every_cell'] else 'not met'}**"
              f" (met in {len(a['verdict']['cells_met'])} of {a['verdict']['cells']} cells"
              + (": " + ", ".join(a["verdict"]["cells_met"]) if a["verdict"]["cells_met"] else "") + ").", "",
              "Every variant (selection used the validation columns only; Δ columns are paired test differences "
              "against plain compression, not adjusted):", "",
              "| dataset | sparsity | variant | val. accuracy | val. gap | test accuracy | test TPR gap "
              "| Δ gap [95% CI] | p | Δ accuracy [95% CI] |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, per in a["cells"].items():
        for sparsity, cell in per.items():
            for name, v in cell["variants"].items():
                t = v.get("test_minus_plain")
                lines.append(f"| {dataset} | {sparsity} | `{name}` | {_pts(v['validation']['accuracy'])} | "
                             f"{_pts(v['validation'][BIAS])} | {_pts(v['test']['accuracy'])} | "
                             f"{_pts(v['test'][BIAS])} | "
                             + (f"{_diff(t[BIAS])} | {_p(t[BIAS]['p_value'])} | {_diff(t['accuracy'])} |" if t
                                else "| | |"))
            if "plain_minus_dense" in cell:
                t = cell["plain_minus_dense"]
                lines.append(f"| {dataset} | {sparsity} | plain − dense teacher | | | | {_pts(t[BIAS]['b'])} (dense) | "
                             f"{_diff(t[BIAS])} | {_p(t[BIAS]['p_value'])} | {_diff(t['accuracy'])} |")
    return "\n".join(lines)


def _environment(threads: int) -> dict:
    return {"platform": platform.platform(), "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": threads, "device": "cpu"}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 300 training / 200 evaluation examples, 60 teacher steps, seeds 0 1, "
                        "12 student steps, 2 variants, 200 resamples, output in the temporary folder")
    p.add_argument("--dataset", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                   help="datasets (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="student seeds (default: 0-4; quick: 0 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="student steps per run (default: the study file's max_steps; quick: 12)")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7], help="matched sparsities")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="variants to run (plain is always run; default: all; quick: eo_penalty_0.3)")
    p.add_argument("--model", choices=("study", "tiny"), default="study",
                   help="study: the study file's model (MiniLM); tiny: a 2-layer hidden-128 BERT trained from scratch")
    p.add_argument("--max-train", type=int, default=None, help="training subsample (default: the study file's)")
    p.add_argument("--teacher-steps", type=int, default=None, help="teacher steps (default: the study file's)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000; quick: 200)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--study-file", type=Path, default=STUDY)
    p.add_argument("--cache-dir", type=Path, default=REPO / "studies" / "cache")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the results file (same teacher, data and student settings) and "
                        "run only the missing ones; with nothing missing, only the analysis is redone")
    return p


def _fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2, 3, 4])
    variants = [PLAIN] + [v for v in (args.variants or (["eo_penalty_0.3"] if args.quick else list(VARIANTS)))
                          if v != PLAIN]
    resamples = args.resamples if args.resamples is not None else (200 if args.quick else 1000)
    for name, value in (("--steps", args.steps), ("--resamples", resamples), ("--threads", args.threads),
                        ("--max-train", args.max_train), ("--teacher-steps", args.teacher_steps)):
        if value is not None and value < 1:
            raise _fail(f"{name} must be >= 1, got {value}")
    if any(not 0.0 < s < 1.0 for s in args.sparsity):
        raise _fail(f"--sparsity values must lie in (0, 1), got {args.sparsity}")
    base = load_study_file(args.study_file)
    studies = {d: dataset_study(base, d, model=args.model, max_train=args.max_train, teacher_steps=args.teacher_steps,
                                quick=args.quick) for d in args.dataset}
    steps = args.steps if args.steps is not None else (12 if args.quick else base.student.max_steps or 80)
    out = args.out or (Path(tempfile.gettempdir()) / "fairness_compression_quick.json" if args.quick
                       else RESULTS / "fairness_compression.json")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = _new_result(args, argv, seeds=seeds, steps=steps, resamples=resamples, variants=variants,
                         studies=studies)
    prepared = {}
    for dataset, sf in studies.items():
        log(f"{dataset}: preparing the teacher ({sf.model.name}; cached under {args.cache_dir})")
        t0 = time.perf_counter()
        prepared[dataset] = p = prepare(sf.prepare_spec, args.cache_dir, log=log, device=torch.device("cpu"))
        result["datasets"][dataset] = {
            "fingerprint": p.fingerprint, "teacher_train_seconds": p.teacher_seconds,
            "prepare_or_load_seconds": time.perf_counter() - t0, "name": p.data_name, "citation": p.citation,
            "groups": list(p.group_names), "labels": list(p.label_names), "positive_class": p.positive_index,
            **{f"{s}_n": len(p.splits[s]) for s in p.splits},
            "positives_per_group": {s: positives_per_group(p, s) for s in ("validation", "test")}}
    if args.resume and out.is_file():
        _resume(result, json.loads(out.read_text(encoding="utf-8")), out)
    have = {(r["dataset"], r["sparsity"], r["seed"], r["variant"]) for r in result["runs"]}
    # Seed by seed, so that a run stopped early leaves whole seeds in every cell (complete_seeds keeps those).
    todo = [(d, s, seed, v) for seed in seeds for d in studies for s in args.sparsity for v in variants
            if (d, s, seed, v) not in have]
    for done, (dataset, sparsity, seed, variant) in enumerate(todo, start=1):
        log(f"run {done}/{len(todo)}: {dataset}, sparsity {sparsity}, seed {seed}, {variant} "
            f"(load {os.getloadavg()[0]:.1f})")
        run = run_one(prepared[dataset], studies[dataset], dataset=dataset, variant=variant, sparsity=sparsity,
                      seed=seed, steps=steps, threads=args.threads)
        log(f"  {run['timings']['total_s']:.0f}s; validation accuracy {run['validation']['accuracy']:.4f}"
            f" gap {_fmt(run['validation']['bias'][BIAS])}; test accuracy {run['test']['accuracy']:.4f}"
            f" gap {_fmt(run['test']['bias'][BIAS])}")
        result["runs"].append(run)
        result["elapsed_s"] = time.perf_counter() - started
        write_json_atomic(out, result)
    # The analysis covers the seeds asked for; runs of other seeds stay in the file for a later --resume.
    result["analysis"] = analyse(prepared, [r for r in result["runs"] if r["seed"] in seeds], resamples=resamples)
    result["load_average_at_end"] = list(os.getloadavg())
    result["elapsed_s"] = time.perf_counter() - started
    result["markdown"] = markdown(result)
    write_json_atomic(out, result)
    print(result["markdown"])
    log(f"wrote {out} ({result['elapsed_s']:.0f}s in all)")
    return 0


def analyse(prepared: dict[str, Prepared], runs: list[dict], *, resamples: int) -> dict:
    """Every cell of the runs whose dataset was prepared in this invocation, and the BH-adjusted verdict."""
    cells: dict[str, dict[str, dict]] = {}
    for dataset, p in prepared.items():
        mine = [r for r in runs if r["dataset"] == dataset]
        for sparsity in sorted({r["sparsity"] for r in mine}):
            log(f"analysing {dataset} at sparsity {sparsity}")
            cells.setdefault(dataset, {})[str(sparsity)] = analyse_cell(
                p, [r for r in mine if r["sparsity"] == sparsity], resamples=resamples)
    return {"cells": cells, "verdict": verdicts(cells)}


def _new_result(args: argparse.Namespace, argv: list[str] | None, *, seeds: list[int], steps: int, resamples: int,
                variants: list[str], studies: dict[str, StudyFile]) -> dict:
    return {
        "benchmark": "fairness_compression",
        "question": "At matched sparsity, does fairness-aware compression lower the TPR gap, paired over seeds and "
                    "examples, on every dataset, at <= 1 point of accuracy?",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "environment": _environment(args.threads),
        "load_average_at_start": list(os.getloadavg()),
        "settings": {"quick": args.quick, "model_choice": args.model, "seeds": seeds, "student_steps": steps,
                     "sparsity": args.sparsity, "resamples": resamples, "confidence": 0.95, "bias": BIAS,
                     "study_file": str(args.study_file),
                     "per_dataset": {d: {"description": DATASETS[d].description, "model": asdict(sf.model),
                                         "data": asdict(sf.data), "teacher": asdict(sf.teacher),
                                         "student": asdict(replace(sf.student, max_steps=steps))}
                                     for d, sf in studies.items()},
                     "shared_compression": "global magnitude pruning of the encoder's linear weights, gradual "
                                           "schedule (Zhu & Gupta) over the first half of training, masks "
                                           "updated every steps//16 steps; distillation T=2, alpha=0.5",
                     "variants": {v: VARIANTS[v][0] for v in variants},
                     "variant_configs": {v: json_safe(compression_for(v, args.sparsity[0], steps).as_dict())
                                         for v in variants},
                     "selection_rule": SELECTION_RULE, "goal": GOAL},
        "datasets": {},
        "runs": [],
    }


def same_settings(before: dict | None, now: dict) -> bool:
    """Whether runs recorded under ``before`` were made with the settings ``now``.

    A key that ``now`` has and ``before`` lacks is a setting added to the study file since those
    runs: they were made without it, which is the same as long as it is unset (None, empty or false).

    >>> same_settings({"data": {"max_train": 2000}}, {"data": {"max_train": 2000, "group_membership": None}})
    True
    >>> same_settings({"data": {"max_train": 2000}}, {"data": {"max_train": 2000, "group_membership": ["a"]}})
    False
    >>> same_settings({"data": {"group_column": None}}, {"data": {"group_column": None}})
    True
    >>> same_settings(None, {"data": {}})
    False
    """
    if isinstance(before, dict) and isinstance(now, dict):
        return set(before) <= set(now) and all(same_settings(before[k], v) if k in before else not v
                                               for k, v in now.items())
    return before == now


def _resume(result: dict, previous: dict, out: Path) -> None:
    """Keep the earlier runs made under this invocation's settings (per dataset), and record that invocation."""
    wanted = set(result["settings"]["variants"])
    described = previous.get("settings", {}).get("variants", {})
    kept = []
    for dataset, info in result["datasets"].items():
        before = previous.get("datasets", {}).get(dataset)
        if before is None:
            continue
        same = (before.get("fingerprint") == info["fingerprint"]
                and previous["settings"]["student_steps"] == result["settings"]["student_steps"]
                and same_settings(previous["settings"]["per_dataset"].get(dataset),
                                  result["settings"]["per_dataset"][dataset]))
        if not same:
            raise _fail(f"--resume: {out} holds {dataset} runs made with other teacher, data or student settings; "
                        "rerun without --resume or pass another --out")
        kept += [r for r in previous.get("runs", []) if r["dataset"] == dataset and r["variant"] in wanted
                 and VARIANTS[r["variant"]][0] == described.get(r["variant"])]
    log(f"resuming: {len(kept)} run(s) kept from {out}")
    result["runs"] = kept
    result["earlier_invocations"] = (previous.get("earlier_invocations") or []) + [
        {k: previous.get(k) for k in ("date", "command", "load_average_at_start", "load_average_at_end", "elapsed_s")}]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
