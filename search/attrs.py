"""The attributes the driver stores on a study and its trials, read back by ``resume`` and the reports.

A trial's measures are stored twice (:mod:`fairfront.objectives.measures.report`): the full nested
record in the trial system attribute :data:`RECORD_ATTR`, which optuna-dashboard does not display,
and flat scalar user attributes, which it shows, sorts, filters and plots.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from fairfront.jsonsafe import json_safe
from fairfront.objectives.measures.report import RECORD_ATTR, flat_attrs

__all__ = ["STUDY_FILE_ATTR", "N_TRIALS_ATTR", "REASON_ATTR", "RETRY_OF_ATTR", "CLASSES_ATTR", "classes_line",
           "TEACHER_ATTR", "FEASIBLE_ATTR", "CONFIRM_PREFIX", "REPLICATE_ATTR", "RECORD_ATTR", "store_record",
           "stored_record"]

STUDY_FILE_ATTR = "fairfront.study_file"
"""Study attribute: the study file's text, so ``resume`` needs nothing but the study's name."""

N_TRIALS_ATTR = "fairfront.n_trials"
"""Study attribute: how many COMPLETE trials the study should reach."""

REASON_ATTR = "fail_reason"
"""Trial attribute: why a FAIL trial failed, in one line."""

RETRY_OF_ATTR = "fairfront.retry_of"
"""Trial attribute of an enqueued re-run: the number of the interrupted trial it runs again."""

CONFIRM_PREFIX = "confirm."
"""Study attributes ``fairfront confirm`` writes: ``confirm.<trial>`` (the record), ``confirm.<trial>.seed.<seed>``
and ``confirm.<trial>.test.<objective>.<mean|ci_low|ci_high|n>`` (:mod:`fairfront.search.confirm`)."""

REPLICATE_ATTR = "fairfront:replicate"
"""Trial system attributes ``fairfront:replicate.<r>`` (out of the dashboard's columns): replicate *r* of a
replicated trial that finished before the trial did (``{"seed", "values"}``, and replicate 0's ``attrs``),
carried over to its re-run by recovery so ``resume`` runs only the replicates that are missing."""

TEACHER_ATTR = "fairfront.teacher"
"""Study attribute: the dense teacher scored as a trial is (``TrialReport.to_record()``: ``size``,
``validation``, ``test``, ...), the reference row of the front and of ``[constraints]``."""

FEASIBLE_ATTR = "feasible"
"""Trial attribute of a study with ``[constraints]``: whether the trial meets every constraint (its
constraint values, Optuna's ``constraints:<name>`` system attributes, are all <= 0)."""

CLASSES_ATTR = "fairfront.classes"
"""Study attribute: ``{"names": [class names by id], "positive": the positive class of a binary task, or None}``.
Studies made before it lack it; their binary measures are about class id 1."""


def classes_line(classes: object) -> str | None:
    """One line naming a study's classes and positive class, from :data:`CLASSES_ATTR` (None when absent)."""
    if not isinstance(classes, dict) or not isinstance(classes.get("names"), list):
        return None
    names = ", ".join(repr(str(n)) for n in classes["names"])
    positive = classes.get("positive")
    return f"classes: {names}" + (f"; positive class: {positive!r}" if positive is not None else "")


def store_record(trial: optuna.Trial, record: dict[str, Any], *, intervals: Collection[str] = ()) -> None:
    """Store ``record`` whole as the trial's :data:`RECORD_ATTR` system attribute, and flat as its user attributes.

    ``intervals``: the bias measures whose bootstrap intervals become flat attributes (the study's bias
    objectives). Both go through the study's storage, so inside ``grouped_writes`` they share the
    trial's transaction.
    """
    record = json_safe(record)
    trial.storage.set_trial_system_attr(trial._trial_id, RECORD_ATTR, record)
    for key, value in flat_attrs(record, intervals=intervals).items():
        trial.set_user_attr(key, value)


def stored_record(trial: FrozenTrial) -> dict[str, Any]:
    """A stored trial's nested record: :data:`RECORD_ATTR`, or the user attributes of a study written before it."""
    record = trial.system_attrs.get(RECORD_ATTR)
    return record if isinstance(record, dict) else dict(trial.user_attrs)
