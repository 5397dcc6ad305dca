"""``[space.quantization]``: whether a trial's model is made int8, read and sampled without torch.

The conversion is :mod:`fairfront.spaces.quantization`, imported when a trial starts (reading a study
file, e.g. ``fairfront validate``, loads no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.spaces.family import CompressionFamily, FamilyTrial
from fairfront.spaces.sampling import suggest_choice

if TYPE_CHECKING:
    from fairfront.spaces.family import TrialContext

__all__ = ["QuantizationConfig", "QuantizationSpace", "QuantizationFamily"]


@dataclass(frozen=True)
class QuantizationConfig:
    int8: bool


@dataclass(frozen=True)
class QuantizationSpace:
    """``[space.quantization]``: whether a trial quantizes its trained student to dynamic int8."""

    int8: tuple[bool, ...] = (False, True)

    @classmethod
    def from_table(cls, t: Table) -> QuantizationSpace:
        space = cls(t.booleans("int8", cls.int8))
        t.done()
        return space

    def sample(self, trial) -> QuantizationConfig:
        return QuantizationConfig(bool(suggest_choice(trial, "quantization.int8", self.int8)))


class QuantizationFamily(CompressionFamily):
    """``[space.quantization]``: the trained (or, in a masked_lm study, compressed) model made int8."""

    name = "quantization"
    space_type = QuantizationSpace
    config_type = QuantizationConfig
    tasks = ("classification", "masked_lm")

    def start(self, config: QuantizationConfig, ctx: TrialContext) -> FamilyTrial:
        from fairfront.spaces.quantization import start_trial  # torch: imported when a trial runs

        return start_trial(config, ctx)
