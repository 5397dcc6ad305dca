"""Which layer and which head: ablation and the gradient estimate on a trial's model and on the dense teacher.

The trial's compressed model is made again exactly as ``fairfront export`` makes it
(:func:`fairfront.search.export.remake`); the teacher comes from the same prepared study. Both are
analysed on the validation split's tokenized examples from the prepared cache
(:mod:`fairfront.objectives.analysis`). An int8 trial is refused: its measures are the int8 model's,
whose quantized linear layers take no gates, so ablating its float weights would explain another model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from fairfront.errors import ConfigError
from fairfront.objectives.analysis import ablate_components, gap_gradients, rank_agreement
from fairfront.objectives.measures.group_fairness import BIAS_MEASURES
from fairfront.objectives.training.prepare import Prepared
from fairfront.search.attrs import stored_record
from fairfront.search.front_data import Objective
from fairfront.search.studyfile import StudyFile

__all__ = ["check_ablatable", "focus_measure", "analyse_model", "teacher_and_trial"]

DEFAULT_FOCUS = "tpr_gap"


def check_ablatable(sf: StudyFile, trial: FrozenTrial) -> None:
    """Refuse, before anything runs, a trial whose model ablation cannot explain."""
    if sf.model.task == "masked_lm":
        raise ConfigError("--trial", message=f"study {sf.study.name!r} compresses a masked LM; ablation explains "
                          "sequence classifiers' group measures only")
    quantization = (stored_record(trial).get("compression") or {}).get("quantization") or {}
    if quantization.get("int8"):
        raise ConfigError("--trial", trial.number, "a trial without int8 quantization (its measures are the int8 "
                          "model's, whose quantized layers cannot be ablated; choose a float trial)")


def focus_measure(objs: list[Objective]) -> str:
    """The group measure components are ranked by: the first bias objective that is one, else ``tpr_gap``."""
    return next((o.measure for o in objs if o.kind == "bias" and o.measure in BIAS_MEASURES), DEFAULT_FOCUS)


def analyse_model(model: torch.nn.Module, prepared: Prepared, *, label: str, focus: str, n_resamples: int,
                  seed: int, batch_size: int, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Ablation of every component, the gradient estimate, and their rank agreement, for one model."""
    split = prepared.splits["validation"]
    log(f"{label}: ablating every attention head and feed-forward block on {len(split)} validation examples "
        f"({n_resamples} paired resamples)")
    ablation = ablate_components(model, split, pad_id=prepared.pad_id, focus=focus, n_resamples=n_resamples,
                                 seed=seed, batch_size=batch_size, device=device, log=log)
    estimate = gap_gradients(model, split, pad_id=prepared.pad_id, batch_size=batch_size, device=device)
    log(f"{label}: gradient estimate |d gap / d gate| computed")
    agreement = {kind or "all": rank_agreement(estimate, ablation, kind=kind) for kind in (None, "head", "ffn")}
    return {"trial": label, "ablation": ablation, "gradient": estimate, "agreement": agreement}


def teacher_and_trial(study: optuna.Study, sf: StudyFile, trial: FrozenTrial, prepared: Prepared, *, focus: str,
                      n_resamples: int, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """``{"trial N": ..., "teacher": ...}``: the trial's model made again as ``export`` makes it, and the teacher."""
    from fairfront.search.export import remake

    if prepared.splits["validation"].membership is not None:
        raise ConfigError("--trial", message=f"study {sf.study.name!r} has overlapping groups ([data] "
                          "group_membership); ablation's paired group measures need one group per example "
                          "(leave --trial out)")
    if not (prepared.splits["validation"].groups >= 0).any():
        raise ConfigError("--trial", message=f"study {sf.study.name!r} has no group labels in its validation split; "
                          "ablation ranks components by how they move a group measure (leave --trial out)")
    made = remake(study, sf, trial, Path("."), log, prepared=prepared)
    model = made.model()
    batch_size = made.spec.student.eval_batch_size
    common: dict[str, Any] = {"focus": focus, "n_resamples": n_resamples, "seed": seed, "batch_size": batch_size,
              "device": made.device, "log": log}
    out = {f"trial {trial.number}": analyse_model(model, made.prepared, label=f"trial {trial.number}", **common)}
    out["teacher"] = analyse_model(made.prepared.teacher().eval(), made.prepared, label="teacher", **common)
    return out
