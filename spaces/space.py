"""The whole search space: every compression family a study searches, and one trial's draw of it.

A ``[space.<family>]`` table switches a family on; a family that is absent is not applied, so a
study can search any combination. The built-in families, in the order a trial applies them
(:mod:`fairfront.spaces.registry` lists them, and can take more):

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

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.spaces import registry
from fairfront.spaces.family import CompressionFamily

__all__ = ["SearchSpace", "CompressionConfig"]


class _ByFamily:
    """Immutable values keyed by family, in application order; an absent family reads as ``None``.

    Each instance keeps the families registered when it was made, so a config shipped to a worker
    process still knows every family the driver had, registered there or not.
    """

    _kind = "value"

    def __init__(self, families: tuple[CompressionFamily, ...], values: Mapping[str, Any]):
        names = [f.name for f in families]
        unknown = [n for n in values if n not in names]
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown compression family {unknown[0]!r}; registered: "
                            + ", ".join(names))
        object.__setattr__(self, "_families", families)
        object.__setattr__(self, "_values", {n: values[n] for n in names if values.get(n) is not None})

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            for family in self._families:
                if family.name == name:
                    return self._values.get(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (no such compression family)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def items(self) -> list[tuple[CompressionFamily, Any]]:
        """``(family, value)`` for every family present, in application order."""
        return [(f, self._values[f.name]) for f in self._families if f.name in self._values]

    @property
    def names(self) -> tuple[str, ...]:
        """The families present, in application order."""
        return tuple(f.name for f, _ in self.items())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return ([f.name for f in self._families] == [f.name for f in other._families]
                and self._values == other._values)

    def __hash__(self) -> int:
        return hash((type(self), tuple(self._values.items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{n}={v!r}" for n, v in self._values.items()) + ")"


class CompressionConfig(_ByFamily):
    """What one trial applies: each sampled family's config; an unsampled family reads as ``None``.

    Example:
        >>> from fairfront.spaces.quantization import QuantizationConfig
        >>> c = CompressionConfig(quantization=QuantizationConfig(True))
        >>> c.quantization.int8, c.pruning
        (True, None)
    """

    def __init__(self, **configs: Any):
        super().__init__(registry.families(), configs)

    def as_dict(self) -> dict[str, dict | None]:
        """Every registered family's name with its config as a dict, ``None`` where not sampled."""
        return {f.name: (asdict(self._values[f.name]) if f.name in self._values else None) for f in self._families}


class SearchSpace(_ByFamily):
    """The spaces of the families a study searches (``sf.space.pruning`` is ``None`` when absent)."""

    def __init__(self, **spaces: Any):
        super().__init__(registry.families(), spaces)

    @classmethod
    def from_table(cls, t: Table) -> SearchSpace:
        registered = registry.family_names()
        spaces = {}
        for name in list(t.data):
            if name not in registered:
                raise ConfigError(t.key(name), message="unknown compression family; allowed: " + ", ".join(registered))
            spaces[name] = registry.get_family(name).from_table(t.table(name))
        t.done()
        if not spaces:
            raise ConfigError(t.path or "space", message="no compression family; add at least one of: "
                              + ", ".join(f"[space.{n}]" for n in registered))
        return cls(**spaces)

    def check_task(self, task: str, tables: Mapping[str, Any]) -> None:
        """What a study of ``task`` refuses of each family's space (``tables``: the raw ``[space]`` table)."""
        for family, space in self.items():
            family.check_task(space, tables.get(family.name, {}), task)

    def needing_groups(self) -> list[CompressionFamily]:
        """The searched families that need each example's group."""
        return [family for family, _ in self.items() if family.needs_groups]

    def check_model(self, num_layers: int) -> None:
        """Checks that need the loaded model (run before the study is created)."""
        for family, space in self.items():
            family.check_model(space, num_layers)

    def sample(self, trial) -> CompressionConfig:
        """One trial's draw, family by family in application order (the order the sampler sees)."""
        return CompressionConfig(**{family.name: family.sample(space, trial) for family, space in self.items()})
