"""The whole search space: every compression family a study searches, and one trial's draw of it.

``[space.<family>]`` tables switch a family on; a family that is absent is not applied (no
pruning, no distillation, or no fairness loss), so a study can search any combination.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.distillation import DistillationConfig, DistillationSpace
from fairfront.spaces.fairness import FairnessConfig, FairnessSpace
from fairfront.spaces.pruning import PruningConfig, PruningSpace

__all__ = ["SearchSpace", "CompressionConfig", "FAMILIES"]

FAMILIES = {"pruning": PruningSpace, "distillation": DistillationSpace, "fairness": FairnessSpace}


@dataclass(frozen=True)
class CompressionConfig:
    """What one trial applies; ``None`` means the family is not used."""

    pruning: PruningConfig | None = None
    distillation: DistillationConfig | None = None
    fairness: FairnessConfig | None = None


@dataclass(frozen=True)
class SearchSpace:
    pruning: PruningSpace | None = None
    distillation: DistillationSpace | None = None
    fairness: FairnessSpace | None = None

    @classmethod
    def from_table(cls, t: Table) -> SearchSpace:
        families = {}
        for name in list(t.data):
            if name not in FAMILIES:
                raise ConfigError(t.key(name), message="unknown compression family; allowed: " + ", ".join(FAMILIES))
            families[name] = FAMILIES[name].from_table(t.table(name))
        t.done()
        if not families:
            raise ConfigError(t.path or "space", message="no compression family; add at least one of: "
                              + ", ".join(f"[space.{n}]" for n in FAMILIES))
        return cls(**families)

    def sample(self, trial) -> CompressionConfig:
        return CompressionConfig(
            pruning=self.pruning.sample(trial) if self.pruning else None,
            distillation=self.distillation.sample(trial) if self.distillation else None,
            fairness=self.fairness.sample(trial) if self.fairness else None,
        )
