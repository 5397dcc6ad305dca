"""``[space.structured]``: the heads and neurons a study may remove, read and sampled without torch.

The pruning itself (scores, slicing, reloading) is :mod:`fairfront.spaces.structured`, imported when a
trial starts (reading a study file, e.g. ``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice, suggest_float, suggest_weight

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext

__all__ = ["IMPORTANCE_METHODS", "SCOPES", "StructuredConfig", "StructuredSpace", "StructuredFamily"]

IMPORTANCE_METHODS = ("gradient", "magnitude")
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class StructuredConfig:
    """One trial's structured pruning: the fractions of heads and feed-forward neurons removed."""

    head_fraction: float
    ffn_fraction: float
    importance: str = "gradient"
    scope: str = "global"
    fairness_mix: float = 0.0


@dataclass(frozen=True)
class StructuredSpace:
    """Ranges of ``[space.structured]``. Applied once, before fine-tuning (prune, then recover)."""

    head_fraction: tuple[float, float] = (0.0, 0.5)
    ffn_fraction: tuple[float, float] = (0.0, 0.5)
    importance: tuple[str, ...] = ("gradient",)
    scope: tuple[str, ...] = ("global",)
    calibration_batches: int = 8
    fairness_mix: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_table(cls, t: Table) -> StructuredSpace:
        space = cls(head_fraction=t.range("head_fraction", cls.head_fraction, low=0.0, high=0.95),
                    ffn_fraction=t.range("ffn_fraction", cls.ffn_fraction, low=0.0, high=0.95),
                    importance=t.strings("importance", cls.importance, choices=IMPORTANCE_METHODS),
                    scope=t.strings("scope", cls.scope, choices=SCOPES),
                    calibration_batches=t.integer("calibration_batches", 8, low=1, high=10_000),
                    fairness_mix=t.range("fairness_mix", cls.fairness_mix, low=0.0, high=1.0))
        t.done()
        return space

    def sample(self, trial) -> StructuredConfig:
        lo, hi = self.fairness_mix  # a range from 0 keeps the plain score (mix exactly 0) in the space
        return StructuredConfig(suggest_float(trial, "structured.head_fraction", self.head_fraction),
                                suggest_float(trial, "structured.ffn_fraction", self.ffn_fraction),
                                suggest_choice(trial, "structured.importance", self.importance),
                                suggest_choice(trial, "structured.scope", self.scope),
                                suggest_weight(trial, "structured.fairness_mix", self.fairness_mix,
                                               allow_zero=lo == 0 < hi, log=False))


class StructuredFamily(CompressionFamily):
    """``[space.structured]``: heads and neurons removed once, before fine-tuning (prune, then recover)."""

    name = "structured"
    space_type = StructuredSpace
    config_type = StructuredConfig
    tasks = ("classification", "masked_lm")

    def check_task(self, space: StructuredSpace, table, task: str) -> None:
        if task != "masked_lm":
            return
        if space.fairness_mix != (0.0, 0.0):
            raise ConfigError("space.structured.fairness_mix", list(space.fairness_mix), "0 in a masked_lm "
                              "study (fairness-aware scores need labelled groups)")
        if tuple(space.importance) != ("magnitude",):
            raise ConfigError("space.structured.importance", list(space.importance), "[\"magnitude\"] in a "
                              "masked_lm study (gradient importance needs labelled batches)")

    def start(self, config: StructuredConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.structured import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
