"""``[bias]``: the references a study prepares once for compression-specific bias measures.

Two measures need more than the dense teacher's predictions, and both are built once per study
(cached with the teacher) rather than in every trial:

* ``dense_population = N``: N extra dense models, fine-tuned exactly like the teacher but with
  seeds ``seed + 1 ... seed + N``. With the teacher they form a population of N + 1 dense
  models whose *modal* prediction defines the reference for Compression Identified Exemplars
  (Hooker et al. 2019, 2020): a population, not one model, so that an example counts as
  forgotten only when compression changed it, not when any retraining with another seed would
  have. ``0`` (the default) trains no extra model and disables the CIE measures.
* ``counterfactual = [...]``: swap lists (built-in names from
  :func:`~fairfront.objectives.measures.counterfactual.builtin_swap_lists`, or paths to files of term
  pairs) whose counterfactual validation and test texts every trial is scored on (Garg et al.
  2019). Each list is applied on its own: a text changed by two lists yields two
  counterfactuals.

* ``intrinsic = [...]``: intrinsic bias benchmarks (``stereoset``, ``crows_pairs``, ``winobias``,
  ``seat``; :mod:`fairfront.objectives.measures.intrinsic`) every trial scores the compressed model on,
  on a fixed validation half (objective values) and test half (user attributes); see
  :mod:`fairfront.objectives.measures.intrinsic.halves`. ``intrinsic_limit = N`` scores only the first N
  items of each half; ``intrinsic_data_dir`` is the data root (default: the datasets' folder
  lookup); ``intrinsic_batch_size`` the sequences per forward pass; ``intrinsic_bf16 = true``
  scores them under bf16 autocast on CUDA (default ``false``: float32, since bf16 rounding flips
  close comparisons such as a CrowS-Pairs pair's). Each benchmark listed is also
  a bias objective under its own name; naming one in ``[objectives] bias`` without listing it
  here is refused (as for ``cie_fraction``), never added silently.

The pairs of every list are read when the study file is loaded, so a missing or malformed list
is refused before a study exists, the lists travel to remote workers inside the settings, and
editing a list changes the prepared study's fingerprint.

Example:
    >>> from fairfront._config import Table
    >>> s = BiasSettings.from_table(Table({"dense_population": 4}, "bias"), base_dir=Path("."))
    >>> s.dense_population, s.population_size, s.counterfactual
    (4, 5, ())
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairfront._config import Table
from fairfront.errors import ConfigError, DataError
from fairfront.objectives.measures.counterfactual import builtin_swap_lists, load_swap_pairs
from fairfront.objectives.measures.registry import MEASURES, names

__all__ = ["BiasSettings", "SwapList", "MAX_DENSE_POPULATION", "POPULATION_MEASURES", "COUNTERFACTUAL_MEASURES",
           "INTRINSIC_MEASURES", "check_objectives", "resolve_swap_list"]

MAX_DENSE_POPULATION = 100
"""Upper bound of ``dense_population`` (Hooker et al. used 30 models per setting)."""

POPULATION_MEASURES = names(kind="bias", needs="dense_population")
"""Bias measures that need ``[bias] dense_population > 0``."""

COUNTERFACTUAL_MEASURES = names(kind="bias", needs="counterfactual")
"""Bias measures that need ``[bias] counterfactual`` lists."""

INTRINSIC_MEASURES = names(kind="bias", needs="intrinsic")
"""Bias measures that need ``[bias] intrinsic`` to list them (the keys of
:data:`fairfront.objectives.measures.intrinsic.INTRINSIC_BENCHMARKS`)."""


@dataclass(frozen=True)
class SwapList:
    """One counterfactual swap list, read when the study file was loaded.

    Attributes:
        name: The name used in reports: the built-in name, or the file's stem for a user file.
        source: The file it was read from.
        pairs: ``(term, counterpart)`` pairs in file order.
    """

    name: str
    source: str
    pairs: tuple[tuple[str, str], ...]

    def digest(self) -> str:
        """A short hash of the pairs (the fingerprint uses it, so an edited list is a new study)."""
        return hashlib.sha256(json.dumps(self.pairs).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BiasSettings:
    """The ``[bias]`` table, validated.

    Attributes:
        dense_population: Extra dense models trained with other seeds (0 = none). The teacher is
            one more member, so the population has ``dense_population + 1`` models.
        counterfactual: The swap lists whose counterfactual texts are scored.
        intrinsic: The intrinsic benchmarks every trial scores (registry names).
        intrinsic_limit: Items per benchmark half (None: all).
        intrinsic_data_dir: The benchmarks' data root (None: the default lookup).
        intrinsic_batch_size: Sequences per forward pass when scoring them.
        intrinsic_bf16: Score them under bf16 autocast on CUDA (False: float32 everywhere).
    """

    dense_population: int = 0
    counterfactual: tuple[SwapList, ...] = ()
    intrinsic: tuple[str, ...] = ()
    intrinsic_limit: int | None = None
    intrinsic_data_dir: str | None = None
    intrinsic_batch_size: int = 64
    intrinsic_bf16: bool = False

    @classmethod
    def from_table(cls, t: Table, *, base_dir: Path, data_dir: str | os.PathLike[str] | None = None) -> BiasSettings:
        """Read ``[bias]``; swap lists are resolved and read here (relative paths against ``base_dir``).

        Args:
            t: The table.
            base_dir: The study file's folder.
            data_dir: Where built-in swap lists live; default: the project's data folder.
        """
        n = t.integer("dense_population", 0, low=0, high=MAX_DENSE_POPULATION)
        key = t.key("counterfactual")
        raw = t.data.get("counterfactual", [])
        names = (t.string("counterfactual"),) if isinstance(raw, str) else t.strings("counterfactual", (),
                                                                                       nonempty=False)
        if isinstance(t.data.get("intrinsic"), str):
            intrinsic = (t.string("intrinsic", choices=INTRINSIC_MEASURES),)
        else:
            intrinsic = t.strings("intrinsic", (), choices=INTRINSIC_MEASURES, nonempty=False)
        if len(set(intrinsic)) != len(intrinsic):
            raise ConfigError(t.key("intrinsic"), list(intrinsic), "distinct benchmark names")
        limit = t.integer("intrinsic_limit", None, low=1)
        intrinsic_dir = t.string("intrinsic_data_dir", None)
        batch = t.integer("intrinsic_batch_size", 64, low=1, high=4096)
        bf16 = t.boolean("intrinsic_bf16", False)
        t.done()
        if intrinsic_dir is not None:
            folder = Path(intrinsic_dir).expanduser()
            folder = folder if folder.is_absolute() else (Path(base_dir) / folder).resolve()
            if not folder.is_dir():
                raise ConfigError(t.key("intrinsic_data_dir"), intrinsic_dir, f"an existing folder (no such folder: "
                                  f"{folder})")
            intrinsic_dir = str(folder)
        lists = tuple(resolve_swap_list(name, key=key, base_dir=base_dir, data_dir=data_dir) for name in names)
        seen: dict[str, str] = {}
        for given, swap in zip(names, lists):
            if swap.name in seen:
                raise ConfigError(key, given, f"distinct swap lists ({seen[swap.name]!r} has the same name "
                                  f"{swap.name!r})")
            seen[swap.name] = given
        return cls(dense_population=n, counterfactual=lists, intrinsic=intrinsic, intrinsic_limit=limit,
                   intrinsic_data_dir=intrinsic_dir, intrinsic_batch_size=batch, intrinsic_bf16=bf16)

    @property
    def population_size(self) -> int:
        """Members of the dense population, the teacher included (0 when there is none)."""
        return self.dense_population + 1 if self.dense_population > 0 else 0

    @property
    def list_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.counterfactual)

    def identity(self) -> dict:
        """What the prepared study's fingerprint includes."""
        out = {"dense_population": self.dense_population,
               "counterfactual": [[s.name, s.digest()] for s in self.counterfactual]}
        if self.intrinsic:
            out["intrinsic"] = {"names": list(self.intrinsic), "limit": self.intrinsic_limit,
                                "data_dir": self.intrinsic_data_dir, "batch_size": self.intrinsic_batch_size,
                                "content": {name: _benchmark_digest(name, self.intrinsic_data_dir)
                                            for name in self.intrinsic}}
            if self.intrinsic_bf16:  # only when set, so studies prepared before the key keep their fingerprint
                out["intrinsic"]["bf16"] = True
        return out


def _benchmark_digest(name: str, data_dir: str | None) -> str | None:
    """The bytes of an intrinsic benchmark's data folder (SEAT's tests are built in), or None where it is missing."""
    from fairfront.objectives.data.datasets import content_digest
    from fairfront.objectives.measures.intrinsic._paths import benchmark_folder

    if name == "seat":
        return None
    try:
        return content_digest(benchmark_folder(name, data_dir))
    except DataError:
        return None


def _builtin(data_dir: str | os.PathLike[str] | None) -> dict[str, Path]:
    if data_dir is None:
        from fairfront.objectives.data.datasets import default_data_dir

        try:
            data_dir = default_data_dir()
        except DataError as err:
            raise ConfigError("bias.counterfactual", message=str(err)) from None
    return builtin_swap_lists(data_dir) if data_dir is not None else {}


def resolve_swap_list(name: str, *, key: str = "bias.counterfactual", base_dir: Path,
                      data_dir: str | os.PathLike[str] | None = None) -> SwapList:
    """A built-in swap list by name, or a user's file of term pairs by path, read and checked.

    Raises:
        ConfigError: One line naming the list and what exists (the built-in names found in the
            data folder) when it is neither a built-in name nor an existing file, cannot be
            parsed, or holds no pair.
    """
    builtin = _builtin(data_dir)
    if name in builtin:
        path, label = builtin[name], name
    else:
        candidate = Path(name).expanduser()
        path = candidate if candidate.is_absolute() else Path(base_dir) / candidate
        label = path.stem
        if not path.is_file():
            names = ", ".join(builtin) or "none found: no data folder (set FAIRFRONT_DATA_DIR)"
            raise ConfigError(key, name, f"a built-in swap list ({names}) or an existing file of term pairs "
                              f"(not found: {path})")
    try:
        pairs = load_swap_pairs(path)
    except DataError as err:
        raise ConfigError(key, name, message=f"unreadable swap list: {err}") from None
    if not pairs:
        raise ConfigError(key, name, message=f"swap list {path} holds no term pair")
    return SwapList(label, str(path), tuple(pairs))


def check_objectives(settings: BiasSettings, bias_measures: Sequence[str], *, key: str = "objectives.bias") -> None:
    """Refuse a bias objective whose reference the study does not prepare.

    Raises:
        ConfigError: ``cie_fraction`` without ``[bias] dense_population > 0``, a counterfactual
            measure without ``[bias] counterfactual`` lists, or an intrinsic benchmark that
            ``[bias] intrinsic`` does not list.

    Example:
        >>> check_objectives(BiasSettings(), ["tpr_gap", "cie_fraction"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fairfront.errors.ConfigError: objectives.bias: 'cie_fraction' needs a dense population: set [bias] ...
    """
    for name in bias_measures:
        measure = MEASURES.get(name)
        setting = measure.bias_setting if measure is not None else None
        if setting == "dense_population" and settings.dense_population == 0:
            raise ConfigError(key, message=f"{name!r} needs a dense population: set [bias] dense_population = N "
                              "(N > 0 extra dense models)")
        if setting == "counterfactual" and not settings.counterfactual:
            raise ConfigError(key, message=f"{name!r} needs counterfactual swap lists: set [bias] counterfactual = "
                              "[...] (built-in names or files of term pairs)")
        if setting == "intrinsic" and measure.benchmark not in settings.intrinsic:
            raise ConfigError(key, message=f"{name!r} is an intrinsic benchmark: list it in [bias] intrinsic = "
                              f"[{', '.join(repr(n) for n in (*settings.intrinsic, name))}] to score it")
