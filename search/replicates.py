"""A trial trained with several seeds: its replicates run as separate tasks, combined before it is told.

With ``[study] replicates = k`` each trial's compressed model is trained ``k`` times, with the
seeds :func:`~fairfront.search.studyfile.replicate_seed` gives (replicate 0 has the seed an
unreplicated trial has). The executor runs the ``k`` attempts as separate tasks, so they run in
parallel where the cluster has room. The study is told the mean of each objective; the trial's
``replicates`` attribute keeps the seeds, each objective's value per seed, the mean and the
standard error of the mean (``s / sqrt(k)`` with the sample standard deviation ``s``). Every
other measure the trial stores is its first seed's.

A replicate that finishes before its siblings is stored on the running trial at once
(:func:`finished_replicate`); when the trial is interrupted, recovery carries those attributes to
its re-run, whose group starts with them (:meth:`ReplicateGroup.restore`), so ``resume`` trains only
the missing replicates and the finished ones keep their seeds.

The same arithmetic gives ``fairfront confirm`` its mean and t-based 95% interval across seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fairfront.jsonsafe import json_safe
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search.attrs import REPLICATE_ATTR

if TYPE_CHECKING:
    import optuna

__all__ = ["mean_se", "t_interval", "combine", "ReplicateGroup", "finished_replicate"]


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean of ``values`` and its standard error ``s / sqrt(n)``; None for one value (no spread known)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_se needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """The mean and its two-sided Student-t interval (``mean ± t_{n-1} · se``); no interval for one value."""
    from scipy import stats

    mean, se = mean_se(values)
    if se is None:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + level / 2, df=len(values) - 1)) * se
    return mean, mean - half, mean + half


def finished_replicate(replicate: int, spec: TrialSpec, outcome: TrialOutcome) -> tuple[str, dict[str, Any]]:
    """The trial attribute that keeps a replicate finished before its trial (replicate 0 with its measures)."""
    record: dict[str, Any] = {"seed": spec.seed, "values": list(outcome.values)}
    if replicate == 0:
        record["attrs"] = outcome.attrs
    return f"{REPLICATE_ATTR}.{replicate}", record


def keep_finished(trial: optuna.Trial, replicate: int, spec: TrialSpec, outcome: TrialOutcome) -> None:
    """Store a replicate finished before its trial as a system attribute of the running trial (its nested
    record stays out of the dashboard's columns), so a resume after an interruption runs only the rest."""
    key, record = finished_replicate(replicate, spec, outcome)
    trial.storage.set_trial_system_attr(trial._trial_id, key, json_safe(record))


def combine(outcomes: Sequence[TrialOutcome], seeds: Sequence[int], names: Sequence[str]) -> TrialOutcome:
    """One trial's outcome from its replicates (in seed order): the mean values, the per-seed record."""
    per_seed = {name: [o.values[i] for o in outcomes] for i, name in enumerate(names)}
    stats = {name: mean_se(values) for name, values in per_seed.items()}
    record: dict[str, Any] = {"seeds": list(seeds), "values": per_seed,
                              "mean": {name: m for name, (m, _) in stats.items()},
                              "se": {name: se for name, (_, se) in stats.items()}}
    first = outcomes[0]
    report = dataclasses.replace(first.report, replicates=record) if first.report is not None else None
    return TrialOutcome(values=[stats[name][0] for name in names], attrs={**first.attrs, "replicates": record},
                        report=report)


@dataclass
class ReplicateGroup:
    """One trial's replicates in flight: their specs, the outcomes that arrived and the attempts each
    finished replicate needed (its ``Attempts.user_attrs()``), by replicate index."""

    trial: optuna.Trial
    specs: list[TrialSpec]
    results: dict[int, TrialOutcome] = field(default_factory=dict)
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def restore(self, user_attrs: dict[str, Any]) -> None:
        """Start with the replicates an interrupted run of this trial finished (:func:`finished_replicate`)."""
        for key, record in user_attrs.items():
            head, _, index = key.rpartition(".")
            if head != REPLICATE_ATTR or not index.isdigit() or int(index) >= len(self.specs):
                continue
            r = int(index)
            self.specs[r] = dataclasses.replace(self.specs[r], seed=record["seed"])
            self.results[r] = TrialOutcome(list(record["values"]), dict(record.get("attrs") or {}))

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.specs)

    def outcome(self, names: Sequence[str]) -> TrialOutcome:
        """The trial's outcome: the only one for an unreplicated trial, else the replicates combined."""
        outcomes = [self.results[r] for r in range(len(self.specs))]
        if len(outcomes) == 1:
            return outcomes[0]
        return combine(outcomes, [s.seed for s in self.specs], names)
