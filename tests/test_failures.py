"""Every failure a long study meets, injected, and what the study looks like afterwards.

Real tiny trials (``run_trial`` on the tiny BERT) run on a Ray cluster in this process. Faults that
cannot be produced reliably by hand (a worker killed at a known moment, CUDA out of memory on a
CPU machine, a slow trial) come from the ``FAIRFRONT_FAULTS`` testing hook of
:mod:`fairfront.search.faults`; a NaN loss is produced by the real training loop (the hook
makes the learning rate infinite). SIGINT and SIGTERM go to the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.training.prepare import prepare
from fairfront.search import faults as fault_hook
from fairfront.search.attrs import stored_record
from fairfront.search.driver import RETRY_OF_ATTR, Interrupted, RunOptions, resume_study, run_study
from fairfront.search.lease import read_lease
from fairfront.search.storage import open_storage
from fairfront.search.studyfile import parse_study_text

from conftest import FAIRFRONT, cli_env, noop_trial, tiny_study_text

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("local_ray")]



@pytest.fixture(scope="module")
def prepared(cache_dir, tmp_path_factory):
    """The tiny study's teacher, trained once per session (shared with the CLI tests' cache)."""
    sf = parse_study_text(tiny_study_text(), base_dir=tmp_path_factory.mktemp("prep"))
    return prepare(sf.prepare_spec, cache_dir, log=lambda m: None)


def _study(tmp_path: Path, name: str, *, n_trials: int, parallel: int = 2, **execution) -> object:
    text = tiny_study_text(name, n_trials=n_trials, parallel=parallel)
    text += "".join(f"{key} = {value}\n" for key, value in execution.items())  # [execution] is the last table
    return parse_study_text(text, base_dir=tmp_path)


def _run(sf, tmp_path: Path, prepared, monkeypatch, faults: str, fn=None) -> tuple[optuna.Study, list[str]]:
    monkeypatch.setenv(fault_hook.FAULTS_ENV, faults)
    messages: list[str] = []
    options = RunOptions(storage=f"sqlite:///{tmp_path / 'f.db'}", cache_dir=tmp_path / "cache",
                         artifact_dir=tmp_path / "artifacts", log=messages.append, prepared=prepared)
    if fn is not None:
        options.trial_fn = fn
    run_study(sf, options)  # returns normally: no failure below crashes the study
    return optuna.load_study(study_name=sf.study.name, storage=options.storage), messages


def test_a_killed_worker_is_retried_up_to_max_retries_then_fails(tmp_path, prepared, monkeypatch) -> None:
    sf = _study(tmp_path, "killed", n_trials=2, max_retries=1)
    # every worker that runs trial 0 is killed with SIGKILL 0.3 s into the trial
    study, messages = _run(sf, tmp_path, prepared, monkeypatch, "0:kill=0.3")
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("worker died (WorkerCrashedError") and "after 2 attempt(s) (max_retries = 1)" in reason
    assert trials[0].user_attrs["fairfront.attempts"] == 2
    assert stored_record(trials[0])["fairfront.retries"][0].startswith("worker died (WorkerCrashedError")
    assert any(m.startswith("trial 0: worker died") and m.endswith("(retry 1 of 1)") for m in messages)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2  # the study went on


def test_exceptions_nan_loss_and_cuda_oom_fail_with_their_reason(tmp_path, prepared, monkeypatch) -> None:
    sf = _study(tmp_path, "faults", n_trials=3)
    study, _ = _run(sf, tmp_path, prepared, monkeypatch, "0:raise; 1:nan; 2:oom@1; 3:oom")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials[:4]] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: injected fault"
    assert "RuntimeError: injected fault" in stored_record(trials[0])["traceback"]
    # the real training loop met the non-finite loss and said so
    assert trials[1].user_attrs["fail_reason"].startswith("NonFiniteLoss: non-finite training loss")
    # out of memory once: retried with half the batch size, and that is recorded
    oom = stored_record(trials[2])
    assert oom["fairfront.oom_retry"]["batch_size"] == 32 and oom["fairfront.oom_retry"]["retry_batch_size"] == 16
    assert oom["student_batch_size"] == 16 and oom["fairfront.attempts"] == 2
    assert trials[4].user_attrs["student_batch_size"] == 32  # other trials keep the study file's batch size
    # out of memory twice: FAIL, with both batch sizes in the reason
    reason = trials[3].user_attrs["fail_reason"]
    assert reason.startswith("CUDA out of memory") and "half the batch size, 16" in reason and "with 32" in reason


def test_a_trial_over_its_timeout_is_cancelled_and_fails(tmp_path, prepared, monkeypatch) -> None:
    sf = _study(tmp_path, "slow", n_trials=2, trial_timeout_s=10)
    started = time.monotonic()
    study, _ = _run(sf, tmp_path, prepared, monkeypatch, "0:sleep=600", fn=noop_trial)
    assert time.monotonic() - started < 120
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == ("timeout: the trial ran longer than execution.trial_timeout_s "
                                                  "= 10 s and was cancelled")
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2


def test_the_oom_hook_raises_the_type_a_gpu_raises() -> None:
    spec = parse_study_text(tiny_study_text(), base_dir=Path.cwd()).trial_spec(None, 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        fault_hook._inject(fault_hook.Fault(0, "oom"), spec)
    assert fault_hook.fault_for(0, 2, "0:oom@1") is None and fault_hook.fault_for(0, 1, "0:oom@1").kind == "oom"
    with pytest.raises(ValueError, match="not a fault kind"):
        fault_hook.parse_faults("0:explode")


def _one_complete_two_running(storage: str, name: str):
    """(COMPLETE values, RUNNING params) once the study has one COMPLETE and two RUNNING trials being sampled."""
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return None
    running = {t.number: t.params for t in trials if t.state == TrialState.RUNNING and "pruning.sparsity" in t.params}
    done = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
    return (done, running) if done and len(running) == 2 else None


def _check_recorded(study: optuna.Study, done: dict, in_flight: dict, signame: str) -> None:
    trials = study.get_trials(deepcopy=False)
    for number, values in done.items():  # nothing written is lost
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    for number in in_flight:  # cancelled, failed with the reason, and enqueued again once
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["fail_reason"].startswith(f"interrupted by {signame}")
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[RETRY_OF_ATTR] for t in waiting) == sorted(in_flight)
    for t in waiting:  # the re-run carries the interrupted trial's parameters
        assert json.dumps(t.system_attrs["fixed_params"], sort_keys=True) == json.dumps(
            trials[t.user_attrs[RETRY_OF_ATTR]].params, sort_keys=True)
    assert read_lease(study).released


def test_sigint_records_in_flight_trials_for_resume(tmp_path, prepared, monkeypatch) -> None:
    sf = _study(tmp_path, "sigint", n_trials=3)
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    open_storage(storage)  # create the tables before two threads open the file
    seen: dict = {}

    def press_ctrl_c() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not seen:
            state = _one_complete_two_running(storage, "sigint")
            if state:
                seen["state"] = state
            time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)  # the driver's handler turns it into Interrupted

    watcher = threading.Thread(target=press_ctrl_c, daemon=True)
    watcher.start()
    with pytest.raises(Interrupted):
        _run(sf, tmp_path, prepared, monkeypatch, "1:sleep=600; 2:sleep=600")
    watcher.join()
    assert "state" in seen, "the driver never had one COMPLETE and two RUNNING trials"
    done, in_flight = seen["state"]
    _check_recorded(optuna.load_study(study_name="sigint", storage=storage), done, in_flight, "SIGINT")

    monkeypatch.delenv(fault_hook.FAULTS_ENV)
    resume_study("sigint", RunOptions(storage=storage, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "a",
                                      log=lambda m: None, prepared=prepared))
    trials = optuna.load_study(study_name="sigint", storage=storage).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    for number in in_flight:  # re-run with their own parameters, once
        reruns = [t for t in complete if t.user_attrs.get(RETRY_OF_ATTR) == number]
        assert len(reruns) == 1 and reruns[0].params == trials[number].params
    keys = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(keys) == len(set(keys))


def test_sigterm_to_the_cli_records_in_flight_trials_for_resume(tmp_path, cache_dir) -> None:
    name = "sigterm"
    (tmp_path / "s.toml").write_text(tiny_study_text(name, n_trials=3, parallel=2))
    address = ray.get_runtime_context().gcs_address  # join this module's cluster: no Ray start-up per driver
    storage = f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}"
    env = {**cli_env(), fault_hook.FAULTS_ENV: "1:sleep=600; 2:sleep=600"}
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([FAIRFRONT, "run", "s.toml", "--cache-dir", str(cache_dir), "--ray-address", address],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (state := _one_complete_two_running(storage, name)):
            assert time.time() < deadline, "the driver never had one COMPLETE and two RUNNING trials"
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 130, out[-3000:]
    # the hint works as printed: it names the storage and the cache folder this run used
    assert ("interrupted by SIGTERM: 2 in-flight trial(s) recorded for resume (fairfront resume sigterm "
            f"--storage sqlite:///studies/fairfront.db --cache-dir {cache_dir})") in out
    done, in_flight = state
    _check_recorded(optuna.load_study(study_name=name, storage=storage), done, in_flight, "SIGTERM")


@pytest.mark.parametrize(("value", "expected"), [("0", "expected a value in (0.0, "),
                                                 ("nan", "expected a number, not nan"),
                                                 ('"10"', "expected a number")])
def test_a_bad_trial_timeout_is_one_line(tmp_path, value, expected) -> None:
    with pytest.raises(ConfigError, match=r"^execution\.trial_timeout_s = .* is not allowed: " + re.escape(expected)):
        _study(tmp_path, "bad", n_trials=1, trial_timeout_s=value)
