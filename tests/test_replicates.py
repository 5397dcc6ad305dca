"""``[study] replicates``: a trial trained with several seeds as separate tasks, combined before it is told."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.measures.report import TrialReport
from fairfront.objectives.training.prepare import prepare
from fairfront.objectives.training.trial import run_trial
from fairfront.search.attrs import stored_record
from fairfront.search.driver import RunOptions, resume_study, run_study
from fairfront.search.faults import FAULTS_ENV
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.replicates import mean_se, t_interval
from fairfront.search.studyfile import parse_study_text, replicate_seed

from conftest import noop_trial, placeholder_prepared, run_cli, tiny_study_text

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def _study_file(tmp_path: Path, name: str, *, replicates: object, n_trials: int = 1, parallel: int = 1,
                steps: int = 15):
    text = tiny_study_text(name, n_trials=n_trials, parallel=parallel, student_steps=steps)
    text = text.replace("bootstrap_resamples = 20", f"bootstrap_resamples = 20\nreplicates = {replicates}")
    return parse_study_text(text, base_dir=tmp_path)


def _run(tmp_path: Path, sf, *, fn=run_trial, prepared=None, capacity: int = 2) -> tuple[optuna.Study, RunOptions]:
    options = RunOptions(storage=f"sqlite:///{tmp_path / 'r.db'}", cache_dir=tmp_path / "cache",
                         artifact_dir=tmp_path / "artifacts", log=lambda m: None, trial_fn=fn,
                         prepared=prepared or placeholder_prepared(),
                         executor=InProcessExecutor(capacity, threads=1))
    run_study(sf, options)
    return optuna.load_study(study_name=sf.study.name, storage=options.storage), options


def test_mean_and_standard_error_arithmetic() -> None:
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3 / 4))
    assert mean_se([0.7]) == (0.7, None)
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0])
    assert (high - mean) == pytest.approx(3.182446305284263 * se)  # t(0.975, df=3)
    assert mean - low == pytest.approx(high - mean)
    assert t_interval([0.7]) == (0.7, None, None)


def test_replicate_seeds_are_distinct_and_replicate_0_is_the_unreplicated_seed(tmp_path) -> None:
    sf = _study_file(tmp_path, "seeds", replicates=3)
    specs = sf.replicate_specs(None, 5)
    assert [s.seed for s in specs] == [replicate_seed(0, 5, r) for r in range(3)]
    assert specs[0].seed == sf.trial_spec(None, 5).seed == 5
    seeds = {replicate_seed(0, n, r) for n in range(1000) for r in range(32)}
    assert len(seeds) == 32_000


def test_a_replicated_trial_reproduces_single_seed_trials_exactly(tmp_path, cache_dir) -> None:
    """Real training: each replicate's values equal a one-seed trial's with that seed; the trial holds the means."""
    sf = _study_file(tmp_path, "replicated", replicates=2)
    prepared = prepare(sf.prepare_spec, cache_dir, log=lambda m: None)
    study, options = _run(tmp_path, sf, prepared=prepared)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    assert options.stats.max_in_flight == 2  # two tasks, in flight together
    record = TrialReport.from_attrs(trial.user_attrs, trial.system_attrs).replicates
    assert record["seeds"] == [replicate_seed(0, 0, 0), replicate_seed(0, 0, 1)]
    config = sf.space.sample(optuna.trial.FixedTrial(trial.params))
    for r, seed in enumerate(record["seeds"]):
        single = run_trial(prepared, replace(sf.trial_spec(config, 0), seed=seed), device=torch.device("cpu"),
                           threads=1)
        assert [record["values"][name][r] for name in sf.objectives.names] == single.values
    for i, name in enumerate(sf.objectives.names):
        values = record["values"][name]
        assert values[0] != values[1] or name == "size"  # two seeds, two models
        assert trial.values[i] == pytest.approx(sum(values) / 2)
        assert record["se"][name] == pytest.approx(abs(values[0] - values[1]) / 2)


def test_a_failed_replicate_is_retried_alone_and_a_replicate_that_fails_fails_the_trial(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "0:oom@1; 1:raise")
    sf = _study_file(tmp_path, "faults", replicates=2, n_trials=2, parallel=2)
    study, _ = _run(tmp_path, sf, fn=noop_trial, capacity=4)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    retried = by_number[0]
    assert retried.state == TrialState.COMPLETE
    assert set(stored_record(retried)["fairfront.replicate_attempts"]) == {"0", "1"}  # each replicate retried once
    assert retried.user_attrs["student_batch_size"] == 16
    per_seed = stored_record(retried)["replicates"]["values"]
    assert retried.values == pytest.approx([sum(v) / 2 for v in per_seed.values()])
    failed = by_number[1]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith("replicate 0 (seed 1): RuntimeError: injected fault")


@pytest.mark.parametrize(("value", "expected"), [("0", "expected a value in [1, 32]"),
                                                 ("33", "expected a value in [1, 32]"),
                                                 ('"2"', "expected an integer"), ("1.5", "expected an integer")])
def test_a_bad_replicates_value_is_refused_in_one_line(tmp_path, value, expected) -> None:
    with pytest.raises(ConfigError, match=r"^study\.replicates = .* is not allowed: " + expected.replace("[", r"\[")):
        _study_file(tmp_path, "bad", replicates=value)


def test_validate_refuses_a_bad_replicates_value_with_one_error_line(tmp_path) -> None:
    text = tiny_study_text("bad").replace("bootstrap_resamples = 20", "bootstrap_resamples = 20\nreplicates = 0")
    (tmp_path / "s.toml").write_text(text)
    result = run_cli(["validate", "s.toml"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: study.replicates = 0 is not allowed: expected a value in [1, 32]"
    assert not (tmp_path / "studies").exists()


def test_resume_after_an_interruption_runs_only_the_missing_replicates(tmp_path) -> None:
    """Replicate 0 finishes, replicate 1 is interrupted: the re-run keeps replicate 0 and its seed, trains 1 and 2."""
    calls: list[int] = []

    def interrupted_at_replicate_1(prepared, spec, *, device=None, threads=None):
        calls.append(spec.seed)
        if spec.seed == replicate_seed(0, 0, 0):
            time.sleep(1.2)  # past the in-process executor's wait: replicate 0 is handed over alone
        if spec.seed == replicate_seed(0, 0, 1):
            raise KeyboardInterrupt  # Ctrl-C a second time: the driver stops at once
        return noop_trial(prepared, spec)

    sf = _study_file(tmp_path, "resumed", replicates=3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, sf, fn=interrupted_at_replicate_1, capacity=3)
    options = RunOptions(storage=f"sqlite:///{tmp_path / 'r.db'}", cache_dir=tmp_path / "cache",
                         artifact_dir=tmp_path / "artifacts", log=lambda m: None, trial_fn=noop_trial,
                         prepared=placeholder_prepared(), executor=InProcessExecutor(3, threads=1))
    calls.clear()
    options.trial_fn = lambda prepared, spec, **kw: (calls.append(spec.seed), noop_trial(prepared, spec))[1]
    resume_study("resumed", options)
    study = optuna.load_study(study_name="resumed", storage=options.storage)
    first, rerun = study.get_trials(deepcopy=False)
    assert first.state == TrialState.FAIL and rerun.state == TrialState.COMPLETE
    seeds = stored_record(rerun)["replicates"]["seeds"]
    assert seeds == [replicate_seed(0, 0, 0), replicate_seed(0, 1, 1), replicate_seed(0, 1, 2)]
    assert sorted(calls) == sorted(seeds[1:])  # replicate 0 was not trained again
    kept = noop_trial(None, SimpleNamespace(seed=0)).values
    assert [values[0] for values in stored_record(rerun)["replicates"]["values"].values()] == kept
    assert rerun.user_attrs["echo_seed"] == 0  # the trial's measures are replicate 0's, kept from the first run
