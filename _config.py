"""Typed reading of study-file tables, with one clear error line per mistake.

Every part of a study file (the study, the data, the model, each compression family) is read
through a :class:`Table`: it takes the values it knows with their types and bounds, and
:meth:`Table.done` refuses any key it did not take. The error names the full dotted key, the
value and what is allowed, so a typo never silently falls back to a default.

Example:
    >>> t = Table({"sparsity": [0.1, 0.9], "typo": 1}, "space.pruning")
    >>> t.range("sparsity", low=0.0, high=0.99)
    (0.1, 0.9)
    >>> t.done()
    Traceback (most recent call last):
    ...
    fairfront.errors.ConfigError: space.pruning.typo: unknown key; allowed keys: sparsity
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fairfront.errors import ConfigError

__all__ = ["Table", "REQUIRED"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class Table:
    """One TOML table being read; remembers which keys were taken."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(path, data, "a table ([" + path + "])")
        self.data = dict(data)
        self.path = path
        self._taken: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def _raw(self, name: str, default: Any) -> tuple[bool, Any]:
        self._taken.append(name)
        if name not in self.data:
            if default is REQUIRED:
                raise ConfigError(self.key(name), message="missing required key")
            return False, default
        return True, self.data[name]

    def _typed(self, name: str, value: Any, kind: type) -> Any:
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise ConfigError(self.key(name), value, _TYPE_NAMES.get(kind, kind.__name__))
        return value

    def _bounded(self, name: str, value: float, low: float | None, high: float | None,
                 low_open: bool = False) -> None:
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and value > high
        if bad_low or bad_high:
            lo = "-inf" if low is None else str(low)
            hi = "inf" if high is None else str(high)
            raise ConfigError(self.key(name), value, f"a value in {'(' if low_open else '['}{lo}, {hi}]")

    def integer(self, name: str, default: Any = REQUIRED, *, low: int | None = None,
                high: int | None = None) -> int:
        present, value = self._raw(name, default)
        if not present:
            return value
        value = self._typed(name, value, int)
        self._bounded(name, value, low, high)
        return value

    def number(self, name: str, default: Any = REQUIRED, *, low: float | None = None,
               high: float | None = None, low_open: bool = False) -> float:
        present, value = self._raw(name, default)
        if not present:
            return value
        value = self._typed(name, value, float)
        self._bounded(name, value, low, high, low_open)
        return value

    def boolean(self, name: str, default: Any = REQUIRED) -> bool:
        present, value = self._raw(name, default)
        return self._typed(name, value, bool) if present else value

    def string(self, name: str, default: Any = REQUIRED, *, choices: Sequence[str] | None = None) -> str:
        present, value = self._raw(name, default)
        if not present:
            return value
        value = self._typed(name, value, str)
        if choices is not None and value not in choices:
            raise ConfigError(self.key(name), value, "one of: " + ", ".join(choices))
        return value

    def strings(self, name: str, default: Any = REQUIRED, *, choices: Sequence[str] | None = None,
                nonempty: bool = True) -> tuple[str, ...]:
        """A list of strings; each one checked against ``choices`` when given."""
        present, value = self._raw(name, default)
        if not present:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), value, "a list of strings")
        if nonempty and not value:
            raise ConfigError(self.key(name), value, "a non-empty list")
        for v in value:
            if choices is not None and v not in choices:
                raise ConfigError(self.key(name), v, "each one of: " + ", ".join(choices))
        return tuple(value)

    def booleans(self, name: str, default: Any = REQUIRED) -> tuple[bool, ...]:
        """``true``, ``false``, or a list of them to search (``[false, true]``)."""
        present, value = self._raw(name, default)
        if not present:
            return value
        values = [value] if isinstance(value, bool) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, bool) for v in values):
            raise ConfigError(self.key(name), value, "true, false, or a list of them to search, e.g. [false, true]")
        return tuple(dict.fromkeys(values))

    def range(self, name: str, default: Any = REQUIRED, *, low: float | None = None,
              high: float | None = None, integer: bool = False, positive: bool = False) -> tuple:
        """A search range ``[low, high]`` (a single number means a fixed value)."""
        present, value = self._raw(name, default)
        if not present:
            return value
        kind = "integers" if integer else "numbers"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value, value]
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or (integer and not all(isinstance(v, int) for v in value))):
            raise ConfigError(self.key(name), value, f"a range [low, high] of two {kind}")
        lo, hi = value
        if lo > hi:
            raise ConfigError(self.key(name), value, "a range [low, high] with low <= high")
        for v in (lo, hi):
            self._bounded(name, v, 0 if positive else low, high, low_open=positive)
            if low is not None:
                self._bounded(name, v, low, high)
        return (int(lo), int(hi)) if integer else (float(lo), float(hi))

    def table(self, name: str, *, required: bool = False) -> Table:
        present, value = self._raw(name, REQUIRED if required else {})
        return Table(value, self.key(name))

    def done(self) -> None:
        """Refuse the keys nobody took (typos, keys from another version)."""
        unknown = [k for k in self.data if k not in self._taken]
        if unknown:
            allowed = ", ".join(sorted(set(self._taken))) or "(none)"
            raise ConfigError(self.key(unknown[0]), message=f"unknown key; allowed keys: {allowed}")
