"""``fairfront front`` and ``status`` as text: measure names and units, and the dense teacher's reference row.

The study is real (SQLite, the driver's loop in process) with a trial function that trains
nothing; the teacher's measures are set as the study attribute the preparation stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution

from fairfront.objectives.measures.report import SplitScores, TrialReport
from fairfront.search import cli
from fairfront.search.attrs import TEACHER_ATTR
from fairfront.search.front_table import TEACHER_LABEL
from fairfront.search.report import front_trials

from conftest import run_noop_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

TEACHER = TrialReport(
    size={"nonzero_params": 123456.0, "params": 123456.0},
    splits={"validation": SplitScores(accuracy={"accuracy": 0.9125}, bias={"tpr_gap": 0.0625},
                                      fairness={"ci": {"tpr_gap": [0.0125, 0.1375]}}),
            "test": SplitScores(accuracy={"accuracy": 0.8875}, bias={"tpr_gap": 0.075},
                                fairness={"ci": {"tpr_gap": [0.025, 0.15]}})})


@pytest.fixture
def study(tmp_path) -> tuple[Path, str]:
    url = run_noop_study(tmp_path, n_trials=5)
    return tmp_path, url


def _cli(args: list[str], capsys) -> str:
    assert cli.main(args) == 0
    return capsys.readouterr().out


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_columns_name_each_objectives_measure_and_unit(study, capsys) -> None:
    _, url = study
    header = next(line for line in _cli(["front", "tiny", "--storage", url], capsys).splitlines()
                  if line.startswith("trial "))
    assert header.startswith("trial  accuracy  size (nonzero_params, parameters)  bias (tpr_gap)  test accuracy")
    assert header.rstrip().endswith("parameters")


def test_integer_parameters_print_as_integers(study, capsys) -> None:
    _, url = study
    text = _cli(["front", "tiny", "--storage", url], capsys)
    ints = 0
    for trial in front_trials(optuna.load_study(study_name="tiny", storage=url)):
        for name, dist in trial.distributions.items():
            if isinstance(dist, IntDistribution):
                ints += 1
                assert f"{name}={int(trial.params[name])} " in text + " "
    assert ints > 0


def test_without_a_stored_teacher_there_is_no_reference_row(study, capsys) -> None:
    _, url = study
    stored = optuna.load_study(study_name="tiny", storage=url)
    text = _cli(["front", "tiny", "--storage", url], capsys)
    assert TEACHER_LABEL not in text
    numbers = [line.split()[0].rstrip("!") for line in text.splitlines() if line[:1].isdigit()]
    assert numbers == [str(t.number) for t in front_trials(stored)]


def test_a_stored_teacher_is_the_first_row_marked_as_a_reference(study, capsys) -> None:
    _, url = study
    stored = optuna.load_study(study_name="tiny", storage=url)
    stored.set_user_attr(TEACHER_ATTR, TEACHER.to_record())
    for command in (["front", "tiny"], ["status", "tiny"]):
        text = _cli([*command, "--storage", url], capsys)
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("trial "))
        assert lines[at + 1].startswith(TEACHER_LABEL), text
        teacher = lines[at + 1][len(TEACHER_LABEL):].split()
        assert teacher[:3] == ["0.9125", "123.456k", "0.0625"] and teacher[3:5] == ["[0.0125,", "0.1375]"]
        if command[0] == "front":  # the test split and its interval too
            assert teacher[5:8] == ["0.8875", "0.0750", "[0.0250,"]
        numbers = [line.split()[0].rstrip("!") for line in lines[at + 2:] if line[:1].isdigit()]
        assert numbers == [str(t.number) for t in front_trials(stored)]  # the front itself is unchanged
        note = next(line for line in lines if line.startswith("* the dense teacher"))
        assert "not part of the front" in note
    records = json.loads(_cli(["front", "tiny", "--storage", url, "--format", "json"], capsys))
    assert [r["trial"] for r in records] == [t.number for t in front_trials(stored)]  # data formats: the front only


def test_a_teacher_attribute_of_another_shape_is_ignored(study, capsys) -> None:
    _, url = study
    optuna.load_study(study_name="tiny", storage=url).set_user_attr(TEACHER_ATTR, {"validation": {"nope": 1}})
    assert TEACHER_LABEL not in _cli(["front", "tiny", "--storage", url], capsys)
