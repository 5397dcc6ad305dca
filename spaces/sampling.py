"""How a family draws its values from an Optuna trial.

A range whose two ends are equal is a fixed value and is not suggested at all, so fixing a value
in the study file removes it from the search instead of wasting the sampler's effort on it.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Suggester", "suggest_float", "suggest_int", "suggest_choice", "suggest_weight"]


class Suggester(Protocol):
    """The part of ``optuna.Trial`` the spaces use (also satisfied by ``FixedTrial``)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def suggest_float(trial: Suggester, name: str, bounds: tuple[float, float], *, log: bool = False) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(trial.suggest_float(name, lo, hi, log=log))


def suggest_int(trial: Suggester, name: str, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    return int(lo) if lo == hi else int(trial.suggest_int(name, lo, hi))


def suggest_choice(trial: Suggester, name: str, choices: tuple[Any, ...]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def suggest_weight(trial: Suggester, name: str, bounds: tuple[float, float], *, allow_zero: bool,
                   log: bool = True) -> float:
    """A weight (on a log scale by default), with an exact zero kept inside the space as the baseline.

    ``allow_zero`` adds a categorical ``<name>_zero`` switch: when it is on, the weight is exactly
    0.0 (the plain method), so every study also samples the uncompensated baseline; a continuous
    range alone would reach 0 with probability zero.
    """
    if allow_zero and suggest_choice(trial, f"{name}_zero", (False, True)):
        return 0.0
    return suggest_float(trial, name, bounds, log=log)
