"""The driver's ask/tell loop over the in-process executor, and the executor contract.

The loop runs for real (``run_study``: SQLite storage, the lease, per-trial reports) with trivial
trial functions run in this process by :class:`InProcessExecutor`, so results, failures, the CUDA
out-of-memory retry and the failure limit are checked in seconds and without Ray. The contract
tests run the same checks against the Ray executor and the in-process one: whatever runs the
trials, the scheduler sees the same results and the same kinds of errors.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from fairfront.objectives.training.trial import TrialOutcome
from fairfront.search.attrs import stored_record
from fairfront.search.driver import RETRY_OF_ATTR, RunOptions, TooManyFailures, run_study
from fairfront.search.executor import Executor, TrialError
from fairfront.search.faults import FAULTS_ENV
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.lease import read_lease
from fairfront.search.ray_executor import RayExecutor, classify_ray_error
from fairfront.search.studyfile import parse_study_text

from conftest import failing_on_odd_seeds, noop_trial, placeholder_prepared, tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")




def out_of_memory_above_batch_16(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    """Trial 1 runs out of memory at any batch size; the others only above 16."""
    if spec.seed == 1 or spec.student.batch_size > 16:
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory with batch size {spec.student.batch_size}")
    return noop_trial(prepared, spec)



def _study_file(tmp_path: Path, name: str, *, n_trials: int, parallel: int = 2, **execution):
    text = tiny_study_text(name, n_trials=n_trials, parallel=parallel)
    text += "".join(f"{key} = {value}\n" for key, value in execution.items())  # [execution] is the last table
    return parse_study_text(text, base_dir=tmp_path)


def _run(tmp_path: Path, sf, fn, messages: list[str] | None = None) -> tuple[optuna.Study, RunOptions]:
    storage = f"sqlite:///{tmp_path / 'scheduler.db'}"
    options = RunOptions(storage=storage, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "artifacts",
                         log=(messages if messages is not None else []).append, trial_fn=fn,
                         prepared=placeholder_prepared(), executor=InProcessExecutor(2))
    run_study(sf, options)
    return optuna.load_study(study_name=sf.study.name, storage=storage), options


def test_a_study_runs_to_its_target_of_complete_trials_without_ray(tmp_path) -> None:
    messages: list[str] = []
    study, options = _run(tmp_path, _study_file(tmp_path, "inprocess", n_trials=5), noop_trial, messages)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    for t in trials:
        assert t.values == noop_trial(None, SimpleNamespace(seed=t.user_attrs["echo_seed"])).values
        assert stored_record(t)["worker"]["pid"] == os.getpid()  # run in the driver's own process
        assert t.user_attrs["student_batch_size"] == 32 and "fairfront.attempts" not in t.user_attrs
        assert "pruning.sparsity" in t.params
    assert "the driver process fits 2 trial(s) at once; up to 2 in flight" in " ".join(messages)
    assert sum(" COMPLETE in " in m for m in messages) == 5 and "5/5 complete" in messages[-1]
    assert options.stats.told == 5 and options.stats.max_in_flight == 2
    assert read_lease(study).released


def test_a_failing_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path) -> None:
    messages: list[str] = []
    study, _ = _run(tmp_path, _study_file(tmp_path, "failing", n_trials=3), failing_on_odd_seeds, messages)
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1, 3]
    assert failed[0].user_attrs["fail_reason"] == "ValueError: odd seed 1"
    assert "ValueError: odd seed 1" in stored_record(failed[0])["traceback"]  # many lines: in the record only
    assert "traceback" not in failed[0].user_attrs
    assert any(m.startswith("trial 1 FAIL: ValueError: odd seed 1 | ") for m in messages)  # then the progress
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3


def test_cuda_out_of_memory_is_retried_once_with_half_the_batch_size(tmp_path) -> None:
    messages: list[str] = []
    study, _ = _run(tmp_path, _study_file(tmp_path, "oom", n_trials=2), out_of_memory_above_batch_16, messages)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    retried = stored_record(trials[0])
    assert trials[0].user_attrs["fairfront.oom_retry.retry_batch_size"] == 16  # and flat, for the dashboard
    assert retried["fairfront.oom_retry"] == {"reason": "CUDA out of memory: CUDA out of memory with batch size 32",
                                              "batch_size": 32, "retry_batch_size": 16}
    assert retried["student_batch_size"] == 16 and retried["fairfront.attempts"] == 2
    assert ("trial 0: CUDA out of memory: CUDA out of memory with batch size 32; running it again with batch size 16"
            in messages)
    reason = trials[1].user_attrs["fail_reason"]  # out of memory twice: FAIL, both batch sizes in the reason
    assert reason == ("CUDA out of memory: CUDA out of memory with batch size 16 (also after retrying with half the "
                      "batch size, 16; it first ran out with 32)")


def test_more_failures_than_max_failed_trials_stop_the_run(tmp_path) -> None:
    def always_fails(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
        raise RuntimeError(f"trial with seed {spec.seed} is broken")

    sf = _study_file(tmp_path, "broken", n_trials=10, max_failed_trials=2)
    with pytest.raises(TooManyFailures, match=r"^3 trials failed in this run \(max_failed_trials = 2\); stopping\. "
                                              r"Last reason: RuntimeError: trial with seed 2 is broken$"):
        _run(tmp_path, sf, always_fails)
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{tmp_path / 'scheduler.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.user_attrs["fail_reason"] for t in trials[:3]] == [
        f"RuntimeError: trial with seed {n} is broken" for n in range(3)]
    # trial 3 was in flight when the run stopped: recorded for resume, not lost
    assert trials[3].state == TrialState.FAIL
    assert trials[3].user_attrs["fail_reason"] == "driver stopped (TooManyFailures): enqueued again for resume"
    assert [t.user_attrs[RETRY_OF_ATTR] for t in trials if t.state == TrialState.WAITING] == [3]
    assert read_lease(study).released


def test_the_fault_hook_works_with_any_executor(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "0:raise@1")
    study, _ = _run(tmp_path, _study_file(tmp_path, "hook", n_trials=2), noop_trial)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == "RuntimeError: injected fault"
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2


def test_an_in_process_executor_needs_room_for_a_trial() -> None:
    with pytest.raises(ValueError, match="capacity = 0 is not allowed"):
        InProcessExecutor(0)


class TestExecutorContract:
    """What the scheduler relies on, checked for every executor."""

    @pytest.fixture(params=["in-process", "ray"])
    def executor(self, request) -> Executor:
        if request.param == "in-process":
            return InProcessExecutor(2)
        request.getfixturevalue("local_ray")  # a 2-CPU cluster in this process, shared with other modules
        return RayExecutor()

    def _finish(self, executor: Executor, fn, number: int = 0) -> TrialOutcome | TrialError:
        spec = _study_file(Path.cwd(), "contract", n_trials=1).trial_spec(None, number)
        ticket = executor.submit(executor.put(placeholder_prepared()), executor.put(fn), spec, cpus=1, gpus=0,
                                 number=number, attempt=1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            finished = executor.wait([ticket], timeout=1.0)
            if finished:
                assert [t for t, _ in finished] == [ticket]
                return finished[0][1]
        raise AssertionError("the attempt never finished")

    def test_it_satisfies_the_protocol(self, executor) -> None:
        assert isinstance(executor, Executor)
        assert executor.capacity(cpus=1, gpus=0) >= 1

    def test_an_outcome_records_where_it_ran_and_its_batch_size(self, executor) -> None:
        outcome = self._finish(executor, noop_trial, number=3)
        assert isinstance(outcome, TrialOutcome)
        assert outcome.values == noop_trial(None, SimpleNamespace(seed=3)).values
        assert outcome.attrs["student_batch_size"] == 32
        assert {"host", "pid", "device"} <= set(outcome.attrs["worker"])

    def test_an_exception_is_an_error_of_kind_exception(self, executor) -> None:
        error = self._finish(executor, failing_on_odd_seeds, number=1)
        assert isinstance(error, TrialError) and error.kind == "exception"
        assert error.reason == "ValueError: odd seed 1" and "Traceback" in error.traceback

    def test_cuda_out_of_memory_is_an_error_of_kind_oom(self, executor) -> None:
        error = self._finish(executor, out_of_memory_above_batch_16)
        assert isinstance(error, TrialError) and error.kind == "oom"
        assert error.reason == "CUDA out of memory: CUDA out of memory with batch size 32"

    def test_classify_names_the_kind(self, executor) -> None:
        assert executor.classify(ValueError("bad")).kind == "exception"
        assert executor.classify(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 2 GiB")).kind == "oom"


def test_ray_errors_are_classified_for_the_retry_policy() -> None:
    assert classify_ray_error(ray.exceptions.WorkerCrashedError()).kind == "worker_died"
    assert classify_ray_error(ray.exceptions.TaskCancelledError()).kind == "cancelled"
    assert classify_ray_error(ray.exceptions.RaySystemError("gone")).kind == "ray"
