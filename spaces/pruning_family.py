"""``[space.pruning]``: the unstructured pruning a study searches, read and sampled without torch.

The masks, pruners and criteria a trial applies are in :mod:`fairfront.spaces.pruning`, imported when
a trial starts (reading a study file, e.g. ``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice, suggest_float, suggest_int, suggest_weight
from fairfront.spaces.schedules import SCHEDULES, SparsitySchedule

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext

__all__ = ["PruningSpace", "PruningConfig", "PruningFamily", "SCOPES", "CRITERIA"]

SCOPES = ("global", "layer")
CRITERIA = ("magnitude", "movement")
"""The names of :data:`fairfront.spaces.pruning.PRUNING_CRITERIA`, in its order."""


@dataclass(frozen=True)
class PruningConfig:
    """One trial's pruning setting."""

    sparsity: float
    schedule: SparsitySchedule
    scope: str = "global"
    include_embeddings: bool = False
    include_classifier: bool = False
    fairness_mix: float = 0.0
    criterion: str = "magnitude"


@dataclass(frozen=True)
class PruningSpace:
    """Ranges of ``[space.pruning]``; :meth:`sample` draws a :class:`PruningConfig`."""

    sparsity: tuple[float, float] = (0.3, 0.9)
    schedules: tuple[str, ...] = ("one_shot", "gradual")
    scopes: tuple[str, ...] = ("global",)
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.5, 0.8)
    frequency: tuple[int, int] = (5, 20)
    iterations: tuple[int, int] = (2, 5)
    include_embeddings: bool = False
    include_classifier: bool = False
    fairness_mix: tuple[float, float] = (0.0, 0.0)
    criteria: tuple[str, ...] = ("magnitude",)

    @classmethod
    def from_table(cls, t: Table) -> PruningSpace:
        space = cls(
            sparsity=t.range("sparsity", cls.sparsity, low=0.0, high=0.99),
            schedules=t.strings("schedule", cls.schedules, choices=SCHEDULES),
            scopes=t.strings("scope", cls.scopes, choices=SCOPES),
            start=t.range("start", cls.start, low=0.0, high=1.0),
            end=t.range("end", cls.end, low=0.0, high=1.0),
            frequency=t.range("frequency", cls.frequency, low=1, integer=True),
            iterations=t.range("iterations", cls.iterations, low=1, integer=True),
            include_embeddings=t.boolean("include_embeddings", False),
            include_classifier=t.boolean("include_classifier", False),
            fairness_mix=t.range("fairness_mix", cls.fairness_mix, low=0.0, high=1.0),
            criteria=t.strings("criterion", cls.criteria, choices=CRITERIA),
        )
        if "movement" in space.criteria and set(space.schedules) == {"one_shot"}:
            raise ConfigError(t.key("criterion"), list(space.criteria), "'magnitude' with schedule = ['one_shot'] "
                              "(movement scores need training steps before the weights are pruned)")
        if space.start[1] > space.end[0]:
            raise ConfigError(t.key("start"), list(space.start),
                              f"a window that starts before it ends (start <= {space.end[0]}, the lowest end)")
        t.done()
        return space

    def sample(self, trial) -> PruningConfig:
        sparsity = suggest_float(trial, "pruning.sparsity", self.sparsity)
        kind = suggest_choice(trial, "pruning.schedule", self.schedules)
        scope = suggest_choice(trial, "pruning.scope", self.scopes)
        start, end, frequency, iterations = 0.0, 0.75, 10, 4
        if kind != "one_shot":
            start = suggest_float(trial, "pruning.start", self.start)
            end = suggest_float(trial, "pruning.end", self.end)
        if kind == "gradual":
            frequency = suggest_int(trial, "pruning.frequency", self.frequency)
        if kind == "iterative":
            iterations = suggest_int(trial, "pruning.iterations", self.iterations)
        schedule = SparsitySchedule(kind, sparsity, start, end, frequency, iterations)
        criteria = tuple(c for c in self.criteria if kind != "one_shot" or c != "movement")
        criterion = suggest_choice(trial, "pruning.criterion", criteria)
        mix = 0.0
        if criterion == "magnitude":  # the fairness mix re-weights magnitudes (see fair_compression)
            lo, hi = self.fairness_mix  # a range from 0 keeps plain magnitude pruning (mix exactly 0) in the space
            mix = suggest_weight(trial, "pruning.fairness_mix", self.fairness_mix, allow_zero=lo == 0 < hi, log=False)
        return PruningConfig(sparsity, schedule, scope, self.include_embeddings, self.include_classifier, mix,
                             criterion)


class PruningFamily(CompressionFamily):
    """``[space.pruning]``: masks that follow a schedule during fine-tuning, made exact when it ends."""

    name = "pruning"
    space_type = PruningSpace
    config_type = PruningConfig
    tasks = ("classification", "masked_lm")

    def check_task(self, space: PruningSpace, table, task: str) -> None:
        if task != "masked_lm":
            return
        if tuple(space.schedules) != ("one_shot",):
            raise ConfigError("space.pruning.schedule", list(space.schedules), "[\"one_shot\"] in a masked_lm "
                              "study (nothing is trained, so there is no schedule to follow)")
        if space.fairness_mix != (0.0, 0.0):
            raise ConfigError("space.pruning.fairness_mix", list(space.fairness_mix), "0 in a masked_lm "
                              "study (fairness-aware scores need labelled groups)")

    def start(self, config: PruningConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.pruning import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
