"""The compression families a study can search, in the order a trial applies them.

Adding a family is one module defining a :class:`~fairfront.spaces.family.CompressionFamily` and
one line here (or a :func:`register_family` call from outside the package). The families here are
read without torch (``<name>_family`` modules); each imports its torch hooks when a trial starts. The order matters:
a student is cut from the teacher before its heads are removed, pruning masks are made exact
before int8 quantization replaces the model, and the loss terms are combined in this order.

Example:
    >>> [f.name for f in families()][:3]
    ['distillation', 'structured', 'pruning']
    >>> families_for_task("masked_lm")
    ('distillation', 'structured', 'pruning', 'quantization')
"""

from __future__ import annotations

import re

from fairfront.spaces.distillation_family import DistillationFamily
from fairfront.spaces.fair_distillation_family import FairDistillationFamily
from fairfront.spaces.fairness_family import FairnessFamily
from fairfront.spaces.family import TASKS, CompressionFamily
from fairfront.spaces.imbalance_family import ImbalanceFamily
from fairfront.spaces.pruning_family import PruningFamily
from fairfront.spaces.quantization_family import QuantizationFamily
from fairfront.spaces.structured_family import StructuredFamily

__all__ = ["families", "family_names", "get_family", "register_family", "unregister_family", "families_for_task"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_FAMILIES: list[CompressionFamily] = [
    DistillationFamily(),
    StructuredFamily(),
    PruningFamily(),
    ImbalanceFamily(),
    FairnessFamily(),
    FairDistillationFamily(),
    QuantizationFamily(),
]


def families() -> tuple[CompressionFamily, ...]:
    """Every registered family, in application order."""
    return tuple(_FAMILIES)


def family_names() -> tuple[str, ...]:
    return tuple(f.name for f in _FAMILIES)


def get_family(name: str) -> CompressionFamily:
    for family in _FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no compression family {name!r}; registered: {', '.join(family_names())}")


def families_for_task(task: str) -> tuple[str, ...]:
    """The families a study with ``[model] task = task`` may search."""
    return tuple(f.name for f in _FAMILIES if task in f.tasks)


def register_family(family: CompressionFamily, *, after: str | None = None) -> None:
    """Add ``family``, applied right after the family named ``after`` (default: after all of them).

    Raises:
        ValueError: if the name is taken or not a lowercase identifier, ``after`` is not
            registered, or the family names a task that does not exist.
    """
    if not isinstance(family, CompressionFamily):
        raise TypeError(f"expected a CompressionFamily instance; got {family!r}")
    name = getattr(family, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"family name {name!r} is not allowed: expected a lowercase identifier (a TOML table name)")
    if name in family_names():
        raise ValueError(f"a compression family named {name!r} is already registered")
    unknown = [t for t in family.tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"family {name!r} names unknown tasks {unknown}; allowed: {', '.join(TASKS)}")
    position = len(_FAMILIES)
    if after is not None:
        if after not in family_names():
            raise ValueError(f"after = {after!r} is not a registered family; registered: {', '.join(family_names())}")
        position = family_names().index(after) + 1
    _FAMILIES.insert(position, family)


def unregister_family(name: str) -> CompressionFamily:
    """Remove the family named ``name`` and return it (e.g. at the end of a test that registered it)."""
    family = get_family(name)
    _FAMILIES.remove(family)
    return family
