"""A results file of the fairness benchmark stays resumable when the study file gains a setting.

``fairness_compression.py --resume`` keeps earlier runs only if they were made with the same
teacher, data and student settings. A key added to the study file since (unset: the runs were made
without it) must not make the earlier runs look foreign; a key that is set must.
"""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling _common
    try:
        return importlib.import_module("fairness_compression")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_an_added_unset_setting_keeps_earlier_runs_and_a_set_one_does_not() -> None:
    fc = _benchmark()
    before = {"data": {"source": "redditbias", "max_train": 2000, "group_column": None}, "student": {"max_steps": 80}}
    grown = {"data": {**before["data"], "group_membership": None, "group_membership_prefix": None},
             "student": {"max_steps": 80}}
    assert fc.same_settings(before, grown)
    assert not fc.same_settings(before, {**grown, "data": {**grown["data"], "group_membership": ["target_women"]}})
    assert not fc.same_settings(before, {**grown, "student": {"max_steps": 100}})
    assert not fc.same_settings({**before, "removed": 1}, grown)  # a setting that no longer exists
    assert not fc.same_settings(None, grown)
    assert doctest.testmod(fc).failed == 0
