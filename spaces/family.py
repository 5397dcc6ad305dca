"""What a compression family is, and what it may do to one trial.

A family (pruning, distillation, a fairness loss, ...) is one ``[space.<name>]`` table of a study
file. :class:`CompressionFamily` describes it: its name (the table's name and the prefix of its
Optuna parameter names), its typed space and config, the tasks it supports and the checks a study
makes of it. :meth:`CompressionFamily.start` turns one trial's config into a
:class:`FamilyTrial`, the family's hooks into that trial:

==============================  ===============================================================
``prepare``                     model surgery before anything is trained (a student cut from the
                                teacher, heads removed)
``step_hooks``                  objects the training loop calls (``before_step``,
                                ``after_backward``, ``after_step``)
``task_loss``                   the per-example task loss (at most one family gives it)
``transform_loss``              a new per-example loss from the current one (distillation)
``example_weights``             per-example weights; several multiply
``reduce``                      the per-example loss to a scalar (group DRO; at most one family)
``penalties``                   terms added on the student's predictions (fairness penalties)
``representation_penalties``    terms added after those, on internal states (hidden-state transfer)
``after_training``              results made exact and recorded (pruning reaches its sparsity)
``without_training``            what the family does when nothing is trained (a ``masked_lm`` study)
``convert``                     the trained model replaced by what is measured (int8)
==============================  ===============================================================

Every hook does nothing by default, so a family overrides only what it does. The trial runs each
hook for every sampled family in the registry's order (:mod:`fairfront.spaces.registry`).

The hooks see a :class:`TrialContext`. It is built by the trial from the prepared study and holds
plain data and callables, so this package never needs the training code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from fairfront._config import Table

if TYPE_CHECKING:  # annotations only: the study file is read without torch
    import numpy as np
    import torch
    from torch import Tensor, nn

__all__ = ["TASKS", "TrialContext", "CompressionFamily", "FamilyTrial"]

TASKS = ("classification", "masked_lm")


def _unchanged(value: Any) -> Any:
    return value


def _no_batches() -> list[dict[str, Any]]:
    raise ValueError("this trial has no labelled training batches (a masked_lm study trains nothing)")


@dataclass
class TrialContext:
    """What a family's hooks see of one trial.

    A hook may replace :attr:`model` (surgery, quantization) and :attr:`eval_device`, add to
    :attr:`forward_kwargs` (passed to the model at every training step, its full outputs then
    reach the loss hooks as ``batch["outputs"]``) and :meth:`record` results. The training data
    fields are ``None`` in a ``masked_lm`` trial, which has none.
    """

    model: nn.Module
    device: torch.device
    task: str
    seed: int
    attrs: dict[str, Any]
    families: tuple[str, ...] = ()
    """Names of the families this trial sampled (some settings depend on another family's presence)."""
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    membership: np.ndarray | None = None
    """``[examples, groups]`` booleans of the training split where groups overlap (``[data] group_membership``;
    every id in :attr:`groups` is then -1); the loss hooks then see each batch's rows of it as ``batch["groups"]``."""
    num_classes: int = 0
    num_groups: int = 1
    teacher_logits: Tensor | None = None
    """The dense teacher's logits on the training split, on :attr:`device` (row = example index)."""
    teacher: Callable[[], nn.Module] | None = None
    """Builds a fresh dense teacher network (for terms that need its internal states)."""
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_device: torch.device | None = None
    make_calibration: Callable[[], list[dict[str, Any]]] = _no_batches
    json_safe: Callable[[Any], Any] = _unchanged
    _calibration: list[dict[str, Any]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.eval_device is None:
            self.eval_device = self.device

    @property
    def calibration(self) -> list[dict[str, Any]]:
        """A few training batches on :attr:`device`, built on first use (the same ones for every family)."""
        if self._calibration is None:
            self._calibration = self.make_calibration()
        return self._calibration

    def record(self, key: str, value: Any) -> None:
        """Store ``value`` in the trial's attributes, as JSON (Optuna stores user attributes as JSON)."""
        self.attrs[key] = self.json_safe(value)


class FamilyTrial:
    """One family's part in one trial; every hook does nothing unless the family overrides it."""

    def prepare(self, ctx: TrialContext) -> None:
        """Change ``ctx.model`` before anything is trained (it is already on ``ctx.device``)."""

    def step_hooks(self) -> Sequence[object]:
        """Objects with any of ``before_step``, ``after_backward``, ``after_step`` ``(step, total)``."""
        return ()

    def task_loss(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """``(logits, labels) -> [B]`` per-example loss replacing cross-entropy, or ``None`` (at most one
        family of a trial may give one)."""
        return None

    def transform_loss(self, per_example: Tensor, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """A new per-example loss from ``per_example`` (e.g. mixed with a soft-target term)."""
        return per_example

    def example_weights(self, logits: Tensor, batch: dict[str, Any]) -> Tensor | None:
        """``[B]`` weights the per-example loss is multiplied by, or ``None``."""
        return None

    def reduce(self, per_example: Tensor, groups: Tensor) -> Tensor | None:
        """The scalar loss from the weighted per-example loss, or ``None`` (the first family that reduces
        wins; if none does, the loss is the mean)."""
        return None

    def penalties(self, logits: Tensor, batch: dict[str, Any]) -> Sequence[Tensor]:
        """Weighted scalar terms on the student's predictions, added to the loss in order."""
        return ()

    def representation_penalties(self, batch: dict[str, Any]) -> Sequence[Tensor]:
        """Weighted scalar terms on internal states (``batch["outputs"]``), added after :meth:`penalties`."""
        return ()

    def after_training(self, ctx: TrialContext) -> None:
        """Make what training left exact, and record it."""

    def without_training(self, ctx: TrialContext) -> None:
        """What the family does when nothing is trained (a ``masked_lm`` trial)."""

    def convert(self, ctx: TrialContext) -> None:
        """Replace ``ctx.model`` by the model that is measured (and ``ctx.eval_device`` if it must run elsewhere)."""


class CompressionFamily:
    """One searchable compression family: its table, its sampled config, and how a trial applies it.

    Subclasses set :attr:`name`, :attr:`space_type` (a frozen dataclass with ``from_table(Table)``
    and ``sample(trial)``) and :attr:`config_type` (a dataclass: what one trial applies, stored in
    the trial's ``compression`` attribute), and override :meth:`start` to act on a trial.
    """

    name: ClassVar[str]
    space_type: ClassVar[Any]
    config_type: ClassVar[Any]
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    """The ``[model] task`` values it supports."""
    needs_groups: ClassVar[str | None] = None
    """What needs each example's group (e.g. ``"a fairness loss"``), named in the error when data has none."""

    def from_table(self, t: Table) -> Any:
        """The family's space, read from its ``[space.<name>]`` table."""
        return self.space_type.from_table(t)

    def sample(self, space: Any, trial: Any) -> Any:
        """One trial's config, drawn from ``space`` (parameter names start with ``<name>.``)."""
        return space.sample(trial)

    def check_task(self, space: Any, table: Mapping[str, Any], task: str) -> None:
        """Refuse what ``task`` cannot do with this space; ``table`` is the raw ``[space.<name>]`` table."""

    def check_model(self, space: Any, num_layers: int) -> None:
        """Checks that need the loaded model (run before the study is created)."""

    def start(self, config: Any, ctx: TrialContext) -> FamilyTrial:
        """The family's hooks into one trial that applies ``config``."""
        return FamilyTrial()

    def __repr__(self) -> str:
        return f"<compression family {self.name!r}>"
