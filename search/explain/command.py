"""``fairfront explain``: where a study's bias comes from, computed, then stored with the study in one step.

Every input is checked before anything is computed (the study, the trial, the number of COMPLETE
trials, the exemplars file); every analysis runs (one progress line per long step; Ctrl-C stops it
with nothing written); then :func:`~fairfront.search.explain.store.store` writes the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from fairfront.errors import ConfigError
from fairfront.search.attrs import stored_record
from fairfront.search.explain.exemplars import EXEMPLAR_FORMATS, exemplars, write_exemplars
from fairfront.search.explain.importance import EVALUATORS, MIN_TRIALS, family_table, objective_importances
from fairfront.search.front_data import Objective, objectives
from fairfront.search.studyfile import StudyFile

__all__ = ["ExplainOptions", "explain"]


@dataclass
class ExplainOptions:
    """What ``fairfront explain`` was asked for."""

    storage: str
    cache_dir: Path = Path("studies/cache")
    artifact_dir: Path = Path("studies/artifacts")
    trial: int | None = None
    evaluator: str = "ped_anova"
    exemplars: Path | None = None
    resamples: int = 200
    log: Callable[[str], None] = field(default=print)


@dataclass
class _Study:
    """The study being explained, with its prepared study loaded the first time something needs it."""

    study: optuna.Study
    sf: StudyFile
    objs: list[Objective]
    complete: list[FrozenTrial]
    options: ExplainOptions

    @cached_property
    def prepared(self) -> Any:
        from fairfront.search.export import prepared_study

        return prepared_study(self.sf, self.study, self.options.cache_dir, self.options.log)


def _check(study: optuna.Study, options: ExplainOptions) -> _Study:
    from fairfront.search.export import stored_study_file

    sf = stored_study_file(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS:
        raise ConfigError("study", study.study_name, f"a study with at least {MIN_TRIALS} COMPLETE trials to rank "
                          f"parameters by importance (it has {len(complete)}; resume it with --n-trials {MIN_TRIALS})")
    if options.evaluator not in EVALUATORS:
        raise ConfigError("--evaluator", options.evaluator, f"one of {', '.join(EVALUATORS)}")
    if options.exemplars is not None and options.exemplars.suffix not in EXEMPLAR_FORMATS:
        raise ConfigError("--exemplars", str(options.exemplars), "a file ending in .csv or .jsonl")
    return _Study(study, sf, objectives(study), list(complete), options)


def _trial(ctx: _Study) -> FrozenTrial | None:
    from fairfront.search.explain.model_origins import check_ablatable
    from fairfront.search.export import complete_trial

    if ctx.options.trial is None:
        return None
    trial = complete_trial(ctx.study, ctx.options.trial)
    check_ablatable(ctx.sf, trial)
    return trial


def _cie_trials(ctx: _Study, trial: FrozenTrial | None) -> list[FrozenTrial]:
    """The trials whose exemplars ``--exemplars`` writes (the trial, or the front), checked before any work."""
    chosen = [trial] if trial is not None else list(ctx.study.best_trials)
    for t in chosen:
        cie = ((stored_record(t).get("validation") or {}).get("forgetting") or {}).get("cie") or {}
        if "examples" not in cie:
            raise ConfigError("--exemplars", message=f"trial {t.number} stored no compression-identified exemplars "
                              "(a study stores them with [bias] dense_population >= 1, in trials measured by this "
                              "version); choose a study that has them, or leave --exemplars out")
    return chosen


def _study_level(ctx: _Study) -> dict[str, Any]:
    from fairfront.search.explain.dependence import partial_dependence
    from fairfront.search.explain.who_pays import TEACHER_ATTR, who_pays

    started = time.perf_counter()
    importance = objective_importances(ctx.study, ctx.objs, evaluator=ctx.options.evaluator)
    ctx.options.log(f"importance of {len({p for v in importance.values() for p in v})} parameters for "
                    f"{len(ctx.objs)} objectives ({ctx.options.evaluator}, {len(ctx.complete)} COMPLETE trials) "
                    f"in {time.perf_counter() - started:.1f}s")
    return {"study": ctx.study.study_name, "evaluator": ctx.options.evaluator, "n_complete": len(ctx.complete),
            "objectives": [o.__dict__ for o in ctx.objs], "importance": importance,
            "families": family_table(importance, ctx.objs),
            "dependence": partial_dependence(ctx.complete, ctx.objs, importance),
            "who_pays": who_pays(ctx.complete, ctx.objs, ctx.study.user_attrs.get(TEACHER_ATTR),
                                 lambda: _teacher_rates(ctx))}


def _teacher_rates(ctx: _Study) -> dict[str, dict[str, float | None]] | None:
    """The teacher's per-group rates on the validation split, from its logits in the prepared cache."""
    from fairfront.objectives.measures.group_fairness import fairness_report, membership_report
    from fairfront.search.report_html import per_group_rates

    prepared = ctx.prepared
    split = prepared.splits["validation"]
    dense = prepared.dense_predictions("validation")
    if split.membership is not None:  # overlapping groups: each group over its members
        members = dict(zip(prepared.group_names, split.membership.T))
        return per_group_rates(membership_report(split.labels, dense, membership=members,
                                              class_names=list(prepared.label_names), n_resamples=0))
    keep = split.groups >= 0
    if not keep.any():
        return None
    names = np.asarray(prepared.group_names, dtype=object)[split.groups[keep]]
    report = fairness_report(split.labels[keep], dense[keep],
                             sensitive_features=names, class_names=list(prepared.label_names), n_resamples=0)
    return per_group_rates(report)


def _exemplar_record(ctx: _Study, chosen: list[FrozenTrial]) -> dict[str, Any]:
    import pandas as pd

    from fairfront.objectives.data.datasets._membership import membership_pattern
    from fairfront.objectives.data.task import load_task

    prepared = ctx.prepared
    population = prepared.population_predictions("validation")
    if population is None or ctx.sf.data is None:
        raise ConfigError("--exemplars", message="the prepared study has no dense population ([bias] "
                          "dense_population >= 1), so it has no compression-identified exemplars")
    data = load_task(ctx.sf.data)
    part = data.part("validation")
    named = membership_pattern(part, data.group_names).str.replace("\x1f", ", ") if data.multi_hot else part["group"]
    groups = ["(none)" if pd.isna(g) else str(g) for g in named]
    return exemplars(chosen, population, texts=part["text"].astype(str).tolist(),
                     labels=part["label"].astype(str).tolist(), groups=groups, label_names=prepared.label_names)


def explain(name: str, options: ExplainOptions) -> dict[str, Any]:
    """Run every analysis ``options`` asks for on study ``name`` and store the results with it."""
    from fairfront.search.driver import load_study
    from fairfront.search.explain.model_origins import focus_measure, teacher_and_trial
    from fairfront.search.explain.store import store

    ctx = _check(load_study(name, options.storage), options)
    trial = _trial(ctx)
    chosen = _cie_trials(ctx, trial) if options.exemplars is not None else []
    record = _study_level(ctx)
    if trial is not None:
        record["models"] = teacher_and_trial(ctx.study, ctx.sf, trial, ctx.prepared, focus=focus_measure(ctx.objs),
                                             n_resamples=options.resamples, seed=ctx.sf.study.seed, log=options.log)
    also = None
    if chosen and options.exemplars is not None:
        found = record["exemplars"] = _exemplar_record(ctx, chosen)
        path = options.exemplars

        def also() -> None:
            write_exemplars(found["rows"], path)
            options.log(f"wrote {found['n_cie']} exemplars to {path}")
    record["artifact_id"] = store(ctx.study, record, options.artifact_dir, also)
    return record
