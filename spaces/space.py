"""The whole search space: every compression family a study searches, and one trial's draw of it.

A ``[space.<family>]`` table switches a family on; a family that is absent is not applied, so a
study can search any combination. The families, in the order a trial applies them:

=====================  =====================================================================
``distillation``       student depth (layers kept from the teacher), KD temperature and mix,
                       hidden-state / attention transfer
``structured``         attention heads and feed-forward neurons physically removed (one-shot)
``pruning``            unstructured magnitude pruning on a schedule (optionally fairness-aware)
``imbalance``          the task loss: cross-entropy, class-balanced, focal, logit-adjusted
``fairness``           group penalties, group DRO, or group reweighting
``fair_distillation``  up-weighting the examples the student forgets
``quantization``       post-training dynamic int8
=====================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces.distillation import DistillationConfig, DistillationSpace
from fairfront.spaces.fair_compression import FairDistillationConfig, FairDistillationSpace
from fairfront.spaces.fairness import FairnessConfig, FairnessSpace
from fairfront.spaces.imbalance import ImbalanceConfig, ImbalanceSpace
from fairfront.spaces.pruning import PruningConfig, PruningSpace
from fairfront.spaces.quantization import QuantizationConfig, QuantizationSpace
from fairfront.spaces.structured import StructuredConfig, StructuredSpace

__all__ = ["SearchSpace", "CompressionConfig", "FAMILIES"]

FAMILIES = {"distillation": DistillationSpace, "structured": StructuredSpace, "pruning": PruningSpace,
            "imbalance": ImbalanceSpace, "fairness": FairnessSpace, "fair_distillation": FairDistillationSpace,
            "quantization": QuantizationSpace}


@dataclass(frozen=True)
class CompressionConfig:
    """What one trial applies; ``None`` means the family is not used."""

    distillation: DistillationConfig | None = None
    structured: StructuredConfig | None = None
    pruning: PruningConfig | None = None
    imbalance: ImbalanceConfig | None = None
    fairness: FairnessConfig | None = None
    fair_distillation: FairDistillationConfig | None = None
    quantization: QuantizationConfig | None = None


@dataclass(frozen=True)
class SearchSpace:
    distillation: DistillationSpace | None = None
    structured: StructuredSpace | None = None
    pruning: PruningSpace | None = None
    imbalance: ImbalanceSpace | None = None
    fairness: FairnessSpace | None = None
    fair_distillation: FairDistillationSpace | None = None
    quantization: QuantizationSpace | None = None

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

    def check_model(self, num_layers: int) -> None:
        """Checks that need the loaded model (run before the study is created)."""
        if self.distillation is not None:
            self.distillation.check_model(num_layers)

    def sample(self, trial) -> CompressionConfig:
        drawn = {f.name: getattr(self, f.name).sample(trial) for f in fields(self) if getattr(self, f.name)}
        return CompressionConfig(**drawn)
