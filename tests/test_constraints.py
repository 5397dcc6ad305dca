"""The dense teacher's reference record, ``[constraints]`` and the fronts they give, on a real tiny study.

The study runs in this process (:class:`InProcessExecutor`, the real ``run_trial``, a few student
steps) with TPE, so its last trial is sampled by TPE with the stored constraint values. Two trials
are enqueued with a fixed sparsity, one above and one below ``max_size_ratio`` (the nonzero
parameter count of a pruned model is exact), so both a feasible and an infeasible trial exist.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import TrialReport
from fairfront.objectives.training.prepare import cached
from fairfront.search.attrs import N_TRIALS_ATTR, STUDY_FILE_ATTR, TEACHER_ATTR, stored_record
from fairfront.search.cli import main
from fairfront.search.constraints import Constraints
from fairfront.search.driver import RunOptions, resume_study, run_study
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.studyfile import parse_study_text

from conftest import run_cli, tiny_study_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_SIZE_RATIO = 0.7
MAX_BIAS = 0.5
CONSTRAINTS = f"\n[constraints]\nmax_size_ratio = {MAX_SIZE_RATIO}\nmax_bias = {MAX_BIAS}\n"
MIN_GROUP_SIZE = 3  # excludes no group of the tiny data; the teacher's record must be scored with it too
BIG, SMALL = 0.2, 0.9  # sparsities: about 0.86 and 0.35 of the teacher's nonzero parameters


def _text(name: str, constraints: str = CONSTRAINTS) -> str:
    text = tiny_study_text(name, n_trials=1, parallel=1, student_steps=4, sampler="tpe")
    text = text.replace("n_examples = 500", f"n_examples = 500\nmin_group_size = {MIN_GROUP_SIZE}")
    return text.replace('schedule = ["one_shot", "gradual", "iterative"]', 'schedule = ["one_shot"]') + constraints


def _options(folder: Path, cache_dir: Path, storage: str) -> RunOptions:
    return RunOptions(storage=storage, cache_dir=cache_dir, artifact_dir=folder / "artifacts", log=lambda m: None,
                      executor=InProcessExecutor(1, threads=1))


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("constraints")
    storage = f"sqlite:///{folder / 'c.db'}"
    sf = parse_study_text(_text("c"), base_dir=folder)
    options = _options(folder, cache_dir, storage)
    run_study(sf, options)
    stored = optuna.load_study(study_name="c", storage=storage)
    for sparsity in (BIG, SMALL):
        stored.enqueue_trial({"pruning.sparsity": sparsity})
    options.n_trials = 4  # the last one sampled by TPE (3 startup trials) over constrained trials
    driven = resume_study("c", options)
    return {"storage": storage, "folder": folder, "sf": sf, "cache_dir": cache_dir, "driven": driven,
            "study": optuna.load_study(study_name="c", storage=storage)}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    """The CLI in this process (as ``fairfront ARGS``): exit status, standard output, standard error."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:  # argparse refusals
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _cli_front(study, capsys, *extra: str) -> str:
    code, out, err = _cli(["front", "c", "--storage", study["storage"], *extra], capsys)
    assert code == 0, err
    return out


def test_the_teacher_record_is_the_dense_model_scored_as_a_trial(study):
    record = study["study"].user_attrs[TEACHER_ATTR]
    assert {"size", "validation", "test"} <= set(record)
    teacher = TrialReport.from_attrs(record)
    prepared = cached(study["cache_dir"] / study["sf"].prepare_spec.fingerprint())
    for split in ("validation", "test"):
        labels = prepared.splits[split].labels
        expected = float((prepared.teacher_logits[split].argmax(axis=1) == labels).mean())
        assert teacher.splits[split].accuracy["accuracy"] == pytest.approx(expected)
        assert teacher.splits[split].n == len(labels)
        assert teacher.splits[split].agreement_with_dense == 1.0
        assert set(teacher.splits[split].bias) >= {"tpr_gap", "demographic_parity_gap"}
        assert teacher.splits[split].fairness["ci"]["tpr_gap"] is not None  # the study's bootstrap
        assert teacher.splits[split].fairness["min_group_size"] == MIN_GROUP_SIZE  # the study's group settings
        assert teacher.splits[split].vs_dense is None  # no comparison of the teacher with itself
    nonzero = sum(int((p != 0).sum()) for p in prepared.teacher().parameters())
    assert teacher.sizes["nonzero_params"] == nonzero
    trial = study["study"].trials[0]
    # the same measures as a trial's, but the comparison with itself
    assert set(record["validation"]) == set(stored_record(trial)["validation"]) - {"vs_dense"}


def test_resume_scores_the_teacher_of_a_study_that_has_no_record(study, tmp_path):
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    sf = parse_study_text(_text("old", constraints=""), base_dir=tmp_path)
    old = optuna.create_study(study_name="old", storage=storage, directions=sf.objectives.directions)
    old.set_user_attr(STUDY_FILE_ATTR, sf.text)
    old.set_user_attr(N_TRIALS_ATTR, 1)
    resume_study("old", _options(tmp_path, study["cache_dir"], storage))
    again = optuna.load_study(study_name="old", storage=storage)
    assert again.user_attrs[TEACHER_ATTR]["size"] == study["study"].user_attrs[TEACHER_ATTR]["size"]
    assert len(again.get_trials(states=(TrialState.COMPLETE,))) == 1


def test_every_complete_trial_carries_its_constraint_values_and_feasibility(study):
    teacher_size = study["study"].user_attrs[TEACHER_ATTR]["size"]["nonzero_params"]
    complete = study["study"].get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    for trial in complete:
        accuracy, size, bias = trial.values
        assert trial.constraints == pytest.approx({"max_size_ratio": size / teacher_size - MAX_SIZE_RATIO,
                                                   "max_bias.tpr_gap": abs(bias) - MAX_BIAS})
        assert trial.user_attrs["feasible"] == (size / teacher_size <= MAX_SIZE_RATIO and abs(bias) <= MAX_BIAS)
    # what the driver's sampler read: its in-memory mirror of the storage holds the same values
    driven = study["driven"].get_trials(states=(TrialState.COMPLETE,))
    assert [t.constraints for t in driven] == [t.constraints for t in complete]
    by_sparsity = {t.params["pruning.sparsity"]: t for t in complete}
    assert by_sparsity[BIG].user_attrs["feasible"] is False
    assert by_sparsity[SMALL].user_attrs["feasible"] is True


def test_front_shows_the_feasible_front_and_all_shows_the_plain_one(study, capsys):
    stored = study["study"]
    complete = stored.get_trials(states=(TrialState.COMPLETE,))
    values = np.array([t.values for t in complete])
    plain = {t.number for t, v in zip(complete, values)
             if not any((w[0] >= v[0]) and (w[1:] <= v[1:]).all() and (w != v).any() for w in values)}
    feasible = [t for t in complete if t.user_attrs["feasible"]]
    fvalues = np.array([t.values for t in feasible])
    feasible_front = {t.number for t, v in zip(feasible, fvalues)
                      if not any((w[0] >= v[0]) and (w[1:] <= v[1:]).all() and (w != v).any() for w in fvalues)}
    shown = pd.read_csv(io.StringIO(_cli_front(study, capsys, "--format", "csv")))
    assert set(shown["trial"]) == feasible_front and shown["feasible"].all()
    everything = pd.read_csv(io.StringIO(_cli_front(study, capsys, "--format", "csv", "--all")))
    assert set(everything["trial"]) == plain
    table = _cli_front(study, capsys, "--all")
    infeasible = sorted(t.number for t in complete if t.number in plain and not t.user_attrs["feasible"])
    assert set(everything.loc[~everything["feasible"], "trial"]) == set(infeasible)
    if infeasible:
        assert f"infeasible (outside [constraints]): trial {', '.join(map(str, infeasible))}" in table
    assert "infeasible" not in _cli_front(study, capsys)


def test_robust_front_holds_the_plain_front_with_each_trials_uncertainty(study, capsys):
    stored = study["study"]
    frame = pd.read_csv(io.StringIO(_cli_front(study, capsys, "--robust", "--format", "csv", "--all")))
    plain = set(pd.read_csv(io.StringIO(_cli_front(study, capsys, "--format", "csv", "--all")))["trial"])
    assert plain <= set(frame["trial"])
    assert frame["p_nondominated"].between(0, 1).all()
    assert set(frame.loc[frame["pareto"], "trial"]) == plain
    for row in frame.to_dict("records"):
        trial = stored.trials[row["trial"]]
        n = stored_record(trial)["validation"]["n"]
        assert row["accuracy_se"] == pytest.approx(math.sqrt(row["accuracy"] * (1 - row["accuracy"]) / n))
        assert row["size_se"] == 0.0
        low, high = stored_record(trial)["validation"]["fairness"]["ci"]["tpr_gap"]
        assert row["bias_se"] == pytest.approx((high - low) / (2 * 1.96))
    infeasible = sorted(set(frame.loc[~frame["feasible"], "trial"]))
    assert infeasible == sorted(t.number for t in stored.trials if t.number in set(frame["trial"])
                                and t.user_attrs.get("feasible") is False)
    if infeasible:
        assert f"infeasible (outside [constraints]): trial {', '.join(map(str, infeasible))}" in _cli_front(
            study, capsys, "--robust", "--all")
    table = _cli_front(study, capsys, "--robust", "--z", "0")
    assert "p_nondominated" in table and "than 0 * sqrt(se_a^2 + se_b^2)" in table


@pytest.mark.parametrize("constraints,message", [
    ("max_acuracy_drop = 0.01", "constraints.max_acuracy_drop: unknown key; allowed keys: max_accuracy_drop"),
    ("max_bias = {fpr_gap = 0.1}", "constraints.max_bias.fpr_gap: 'fpr_gap' is not a bias objective of this "
                                   "study ([objectives] bias: tpr_gap)"),
    ("max_size_ratio = 0", "constraints.max_size_ratio = 0.0 is not allowed: expected a value in (0.0, inf]"),
    ("max_accuracy_drop = nan", "constraints.max_accuracy_drop = nan is not allowed: expected a finite number"),
    ("max_bias = -0.1", "constraints.max_bias = -0.1 is not allowed"),
])
def test_a_bad_constraint_is_refused_with_one_line_and_nothing_written(constraints, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(_text("bad", constraints=f"\n[constraints]\n{constraints}\n"))
    code, out, err = _cli(["run", str(path), "--storage", f"sqlite:///{tmp_path / 'bad.db'}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "bad.db").exists()


def test_front_refuses_a_negative_margin(study):
    done = run_cli(["front", "c", "--storage", study["storage"], "--robust", "--z", "-1"], study["folder"])
    assert done.returncode == 2 and done.stderr.startswith("error: argument --z") and done.stdout == ""
    assert done.stderr.count("\n") == 1


def test_constraint_values_follow_the_documented_formulas():
    objectives = ObjectiveSpec(bias=("tpr_gap", "fpr_gap"))
    c = Constraints(max_accuracy_drop=0.01, max_size_ratio=0.5, max_bias=(("fpr_gap", 0.05),))
    values = c.values([0.88, 400.0, 0.3, -0.07], objectives, teacher_accuracy=0.90, teacher_size=1000.0)
    assert values == pytest.approx({"max_accuracy_drop": 0.01, "max_size_ratio": -0.1, "max_bias.fpr_gap": 0.02})
    with pytest.raises(ValueError):
        c.values([0.88, 400.0, 0.3, 0.0], objectives)


def test_a_relative_constraint_needs_the_teacher_record(tmp_path):
    from fairfront.search.constraints import check_reference

    sf = parse_study_text(_text("r", constraints="\n[constraints]\nmax_accuracy_drop = 0.02\n"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="constraints.max_accuracy_drop: needs the dense teacher's validation"):
        check_reference(sf, None)
