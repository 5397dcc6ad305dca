"""``fairfront confirm``: the front's trials trained again on fresh seeds, scored on the test split, resumably."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from fairfront.objectives.training.prepare import prepare
from fairfront.objectives.training.trial import run_trial
from fairfront.search.attrs import STUDY_FILE_ATTR
from fairfront.search.confirm import (
    ConfirmFailed,
    chosen_trials,
    confirm_seeds,
    confirm_study,
    crowding_distances,
    stored_results,
)
from fairfront.search.driver import RunOptions, run_study
from fairfront.search.faults import FAULTS_ENV
from fairfront.search.front_data import front_frame, objectives, split_value
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.replicates import t_interval
from fairfront.search.report import front_table, front_trials, status_text
from fairfront.search.studyfile import parse_study_text

from conftest import FAIRFRONT, cli_env, run_cli, tiny_study_text

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def made(cache_dir, tmp_path_factory):
    """A real tiny study of 4 COMPLETE trials (in-process), in a storage the tests copy before writing."""
    folder = tmp_path_factory.mktemp("made")
    sf = parse_study_text(tiny_study_text("conf", n_trials=4, parallel=1), base_dir=folder)
    prepared = prepare(sf.prepare_spec, cache_dir, log=lambda m: None)
    storage = f"sqlite:///{folder / 'made.db'}"
    run_study(sf, RunOptions(storage=storage, cache_dir=cache_dir, artifact_dir=folder / "artifacts",
                             log=lambda m: None, prepared=prepared, executor=InProcessExecutor(1, threads=1)))
    return sf, prepared, folder / "made.db"


def _copy(made, tmp_path: Path) -> str:
    db = tmp_path / "studies" / "fairfront.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(made[2]) as source, sqlite3.connect(db) as copy:  # the database's WAL included
        source.backup(copy)
    return f"sqlite:///{db}"


def _options(storage: str, made, messages: list[str]) -> RunOptions:
    return RunOptions(storage=storage, log=messages.append, prepared=made[1], executor=InProcessExecutor(1, threads=1))


def test_crowding_distance_ranks_the_extremes_then_the_isolated() -> None:
    distance = crowding_distances([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [2.0, 2.5]])
    assert distance[0] == distance[3] == float("inf")
    assert distance[2] == pytest.approx((4 - 2) / 4 + (2.5 - 0) / 4)
    assert distance[1] == pytest.approx((2 - 0) / 4 + (4 - 2.5) / 4)


def test_confirm_stores_each_seeds_test_values_the_mean_and_a_t_interval(tmp_path, made) -> None:
    sf, prepared = made[0], made[1]
    storage, messages = _copy(made, tmp_path), []
    records = confirm_study("conf", _options(storage, made, messages), seeds=2)
    study = optuna.load_study(study_name="conf", storage=storage)
    front = front_trials(study)
    assert sorted(records) == sorted(t.number for t in front)
    objs = objectives(study)
    trial = front[0]
    seeds = confirm_seeds(sf, trial.number, 2)
    own = {sf.trial_spec(None, t.number, r).seed for t in study.trials for r in range(32)}
    assert not own & {s for t in front for s in confirm_seeds(sf, t.number, 2)}  # fresh seeds
    config = sf.space.sample(optuna.trial.FixedTrial(trial.params))
    for seed in seeds:  # each stored result is that seed's model, scored on the test split
        report = run_trial(prepared, replace(sf.trial_spec(config, trial.number), seed=seed),
                           device=torch.device("cpu"), threads=1).report
        assert stored_results(study, trial.number)[seed] == {o.name: split_value(report, o, "test") for o in objs}
    for o in objs:
        values = [stored_results(study, trial.number)[s][o.name] for s in seeds]
        mean, low, high = t_interval(values)
        flat = {k: study.user_attrs[f"confirm.{trial.number}.test.{o.name}.{k}"] for k in ("mean", "ci_low", "ci_high")}
        assert flat == {"mean": mean, "ci_low": low, "ci_high": high}
        assert study.user_attrs[f"confirm.{trial.number}.test.{o.name}.n"] == 2
        assert records[trial.number]["test"][o.name]["values"] == values
    frame = front_frame(study)
    assert frame.loc[frame.trial == trial.number, f"confirmed_{objs[0].name}_mean"].item() == pytest.approx(
        records[trial.number]["test"][objs[0].name]["mean"])
    assert "confirmed test mean±95% CI" in front_table(study) and "(n=2)" in front_table(study)
    assert "(n=2)" in status_text(study, None)
    _assert_progress_follows_each_run(messages, runs=2 * len(front))
    messages.clear()
    confirm_study("conf", _options(storage, made, messages), seeds=2)  # all stored: nothing runs again
    assert messages == [f"confirming {len(front)} trial(s) of 'conf' on 2 seed(s): {2 * len(front)} result(s) "
                        "stored already, 0 to run"]


def _seconds(text: str) -> int:
    """``42s`` or ``3m05s`` back to seconds."""
    minutes, _, seconds = text.rstrip("s").rpartition("m")
    return int(minutes or 0) * 60 + int(seconds)


def _assert_progress_follows_each_run(messages: list[str], runs: int) -> None:
    """Off a terminal each finished run's line ends with the runs done of those to do and the time left."""
    lines = [m for m in messages if m.startswith("confirm trial ")]
    assert len(lines) == runs, messages
    took = []
    for done, line in enumerate(lines, start=1):
        head, progress = line.split(" | ")
        took.append(int(re.search(r" in (\d+)s: ", head).group(1)))
        assert "front" not in progress and "hypervolume" not in progress
        if done == runs:
            assert progress == f"{runs}/{runs} runs done"
            continue
        eta = re.fullmatch(rf"{done}/{runs} runs done · ETA (\w+) \(1 in parallel\)", progress)
        assert eta, progress
        left = runs - done  # one at a time, each the mean of those done (shown rounded to seconds)
        assert abs(_seconds(eta.group(1)) - left * sum(took) / done) <= left * 0.5 + 1


def test_top_n_confirms_the_front_trials_of_largest_crowding_distance(tmp_path, made) -> None:
    storage = _copy(made, tmp_path)
    records = confirm_study("conf", _options(storage, made, []), seeds=1, top=1)
    study = optuna.load_study(study_name="conf", storage=storage)
    front = front_trials(study)
    distance = crowding_distances([list(t.values) for t in front])
    best = min(range(len(front)), key=lambda i: (-distance[i], front[i].number))
    assert list(records) == [front[best].number]
    assert records[front[best].number]["test"][objectives(study)[0].name]["ci_low"] is None  # one seed: no interval


def test_runs_that_fail_for_good_count_as_done_in_the_progress(tmp_path, made, monkeypatch) -> None:
    storage, messages = _copy(made, tmp_path), []
    study = optuna.load_study(study_name="conf", storage=storage)
    trial = chosen_trials(study, 1)[0].number
    monkeypatch.setenv(FAULTS_ENV, f"{trial}:raise")  # every attempt of this trial's runs fails
    with pytest.raises(ConfirmFailed, match="2 confirmation run"):
        confirm_study("conf", _options(storage, made, messages), seeds=2, top=1)
    failed = [m for m in messages if m.startswith(f"confirm trial {trial}") and " FAIL: " in m]
    assert [m.split(" | ")[1] for m in failed] == ["0/2 runs done · 1 failed · ETA after the first run (1 in parallel)",
                                                   "0/2 runs done · 2 failed"]


def _attrs(storage: str) -> tuple:
    summaries = optuna.get_all_study_summaries(storage)
    return tuple((s.study_name, sorted(s.user_attrs.items()), s.n_trials) for s in summaries)


@pytest.mark.parametrize(("args", "expected"), [
    (["nope", "--seeds", "2"], "error: study = 'nope' is not allowed: expected a study in "),
    (["empty", "--seeds", "2"], "error: study = 'empty' is not allowed: expected a study with COMPLETE trials "
                                "(it has 0 COMPLETE, 0 in all)"),
    (["conf", "--seeds", "0"], "error: argument --seeds: 0 is not allowed: expected a whole number >= 1"),
    (["conf", "--seeds", "2", "--top", "0"], "error: argument --top: 0 is not allowed: expected a whole number >= 1"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, made, args, expected) -> None:
    storage = _copy(made, tmp_path)
    empty = optuna.create_study(study_name="empty", storage=storage, directions=["maximize", "minimize", "minimize"])
    empty.set_user_attr(STUDY_FILE_ATTR, tiny_study_text("empty"))
    before = _attrs(storage)
    result = run_cli(["confirm", *args, "--storage", storage], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected), result.stderr
    assert _attrs(storage) == before


@pytest.mark.usefixtures("local_ray")
def test_a_sigkilled_confirm_keeps_its_finished_results_and_a_rerun_runs_only_the_rest(tmp_path, made, cache_dir):
    storage = _copy(made, tmp_path)
    study = optuna.load_study(study_name="conf", storage=storage)
    front = front_trials(study)
    assert len(front) >= 2, "the test needs a front of two trials at least"
    slow, fast = front[-1].number, [t.number for t in front[:-1]]
    args = [FAIRFRONT, "confirm", "conf", "--seeds", "2", "--storage", storage, "--cache-dir", str(cache_dir),
            "--ray-address", ray.get_runtime_context().gcs_address]
    env = {**cli_env(), FAULTS_ENV: f"{slow}:sleep=600"}  # the last front trial's runs never finish
    log = tmp_path / "confirm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while sum(len(stored_results(optuna.load_study(study_name="conf", storage=storage), n)) for n in fast) < \
                2 * len(fast):
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = optuna.load_study(study_name="conf", storage=storage)
    kept = {n: stored_results(killed, n) for n in fast}
    assert not stored_results(killed, slow)
    rerun = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert (f"confirming {len(front)} trial(s) of 'conf' on 2 seed(s): {2 * len(fast)} result(s) stored already, "
            "2 to run") in rerun.stdout
    done = optuna.load_study(study_name="conf", storage=storage)
    assert {n: stored_results(done, n) for n in fast} == kept  # nothing finished was run again
    assert len(stored_results(done, slow)) == 2
    assert all(t.state == TrialState.COMPLETE for t in done.trials)
