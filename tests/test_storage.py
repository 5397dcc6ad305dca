"""One storage contract, run against SQLite and a real PostgreSQL server.

The driver's loop runs for real (Ray in this process, trivial trial functions swapped in through
``RunOptions.trial_fn``), so what is checked is what a user relies on: values and attributes kept,
one driver per study (the lease), a dead driver's study taken over and its interrupted trials
re-run, recovery that neither loses nor duplicates work.

PostgreSQL needs ``FAIRFRONT_TEST_POSTGRES_URL`` (``.ci/run`` starts a local server and sets it);
without it those cases skip with that reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
from optuna.trial import TrialState

from conftest import tiny_study_text
from fairfront.errors import ConfigError
from fairfront.objectives.prepare import Prepared
from fairfront.objectives.trial import TrialOutcome
from fairfront.search import lease as lease_mod
from fairfront.search.driver import RETRY_OF_ATTR, RunOptions, recover_interrupted, resume_study, run_study
from fairfront.search.lease import DriverLease, LeaseHeld, LeaseInfo, LeaseLost, read_lease
from fairfront.search.storage import open_storage
from fairfront.search.studyfile import parse_study_text

POSTGRES_ENV = "FAIRFRONT_TEST_POSTGRES_URL"


def noop_trial(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    x = (spec.seed * 0.6180339887) % 1.0
    return TrialOutcome([x, 1000.0 * (1.0 - x) + 1.0, abs(0.5 - x)], {"echo_seed": spec.seed})


def failing_on_odd_seeds(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    if spec.seed % 2 == 1:
        raise ValueError(f"odd seed {spec.seed}")
    return noop_trial(prepared, spec)


def placeholder_prepared() -> Prepared:
    return Prepared(fingerprint="contract", data_name="none", citation="", label_names=("a", "b"), group_names=(),
                    group_is_proxy=False, splits={}, pad_id=0, model_config={}, teacher_state={}, teacher_logits={},
                    teacher_seconds=0.0)


pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module", autouse=True)
def local_ray(request):
    """A 2-CPU Ray cluster in this process, shared with other modules that need one."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        request.config.add_cleanup(ray.shutdown)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}"
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a local PostgreSQL server and sets it)")
    storage = open_storage(url)
    before = {s.study_name for s in storage.get_all_studies()}
    yield url
    for s in storage.get_all_studies():  # leave the shared database as it was
        if s.study_name not in before:
            optuna.delete_study(study_name=s.study_name, storage=storage)


class TestStorageContract:
    """The same checks for every storage backend."""

    def _options(self, url: str, tmp_path: Path, messages: list[str], fn=noop_trial, **kw) -> RunOptions:
        return RunOptions(storage=url, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "artifacts",
                          log=messages.append, trial_fn=fn, prepared=placeholder_prepared(), **kw)

    def _study_file(self, tmp_path: Path, n_trials: int = 4, parallel: int = 2, name: str | None = None):
        name = name or f"contract-{uuid.uuid4().hex[:8]}"
        return parse_study_text(tiny_study_text(name, n_trials=n_trials, parallel=parallel), base_dir=tmp_path)

    def test_values_attributes_and_reports_are_kept(self, storage_url, tmp_path) -> None:
        sf = self._study_file(tmp_path)
        messages: list[str] = []
        run_study(sf, self._options(storage_url, tmp_path, messages))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == 4 and len(study.trials) == 4
        assert study.metric_names == ["accuracy", "size", "bias"]
        assert study.user_attrs["fairfront.study_file"] == sf.text
        for t in complete:
            seed = t.user_attrs["echo_seed"]
            assert seed == sf.study.seed + t.number  # the values belong to this trial's own spec
            assert t.values == noop_trial(None, SimpleNamespace(seed=seed)).values
            assert t.user_attrs["worker"]["pid"] != os.getpid()  # computed in a Ray worker, told by the driver
            assert "pruning.sparsity" in t.params
        assert sum(" COMPLETE in " in m for m in messages) == 4
        lease = read_lease(study)
        assert lease is not None and lease.released  # the next driver starts at once

    def test_failures_are_recorded_and_the_study_reaches_its_target(self, storage_url, tmp_path) -> None:
        sf = self._study_file(tmp_path, n_trials=3)
        run_study(sf, self._options(storage_url, tmp_path, [], fn=failing_on_odd_seeds))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        failed = study.get_trials(states=(TrialState.FAIL,))
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
        assert failed and all(t.number % 2 == 1 for t in failed)
        for t in failed:
            assert t.user_attrs["fail_reason"] == f"ValueError: odd seed {t.number}"
            assert "failing_on_odd_seeds" in t.user_attrs["traceback"]

    def test_a_second_driver_is_refused_naming_the_first(self, storage_url, tmp_path) -> None:
        sf = self._study_file(tmp_path, n_trials=1)
        run_study(sf, self._options(storage_url, tmp_path, []))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        first = DriverLease(study, command="resume", ray_address="10.0.0.5:6379")
        first.acquire()  # a live driver: this very process, heartbeat fresh
        with pytest.raises(LeaseHeld) as refused:
            resume_study(sf.study.name, self._options(storage_url, tmp_path, [], n_trials=3))
        message = str(refused.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in message and "10.0.0.5:6379" in message
        with pytest.raises(ConfigError, match="a driver is running it now"):
            run_study(sf, self._options(storage_url, tmp_path, []))
        assert len(study.get_trials(deepcopy=False)) == 1  # the refused drivers wrote nothing
        first.release()
        resume_study(sf.study.name, self._options(storage_url, tmp_path, [], n_trials=2))
        assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 2

    @pytest.mark.parametrize("dead", ["stale heartbeat", "process gone"])
    def test_a_dead_drivers_study_is_taken_over_and_its_trials_rerun(self, storage_url, tmp_path, dead) -> None:
        sf = self._study_file(tmp_path, n_trials=3)
        run_study(sf, self._options(storage_url, tmp_path, [], n_trials=1))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        done = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
        # the dead driver had asked two trials and sampled their parameters
        orphans = []
        for _ in range(2):
            trial = study.ask()
            sf.space.sample(trial)
            orphans.append((trial.number, trial.params))
        if dead == "stale heartbeat":  # a driver on another machine that stopped beating 2 minutes ago
            info = LeaseInfo(id="old", host="node-7", pid=4242, boot_id=None, pid_started=None,
                             started=time.time() - 600, heartbeat=time.time() - 120, command="run")
        else:  # a driver on this machine killed with SIGKILL: its pid no longer exists
            gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True)
            info = LeaseInfo(id="old", host=socket.gethostname(), pid=int(gone.stdout), boot_id=lease_mod._boot_id(),
                             pid_started=None, started=time.time() - 60,
                             heartbeat=time.time() - lease_mod.DEAD_GRACE_S - 1, command="run")
        study._storage.set_study_system_attr(study._study_id, lease_mod.LEASE_ATTR, asdict(info))
        messages: list[str] = []
        resume_study(sf.study.name, self._options(storage_url, tmp_path, messages, n_trials=3))
        assert any("took the study over" in m for m in messages)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 3
        for number, values in done.items():
            assert trials[number].values == values
        for number, params in orphans:
            assert trials[number].state == TrialState.FAIL
            assert trials[number].user_attrs["fail_reason"].startswith("interrupted")
            reruns = [t for t in complete if t.user_attrs.get(RETRY_OF_ATTR) == number]
            assert len(reruns) == 1 and reruns[0].params == params
        assert read_lease(study).id != "old"

    def test_a_live_driver_elsewhere_is_not_taken_over(self, storage_url, tmp_path) -> None:
        sf = self._study_file(tmp_path, n_trials=1)
        run_study(sf, self._options(storage_url, tmp_path, []))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        info = LeaseInfo(id="other", host="node-7", pid=4242, boot_id=None, pid_started=None,
                         started=time.time() - 600, heartbeat=time.time() - 5, command="run")
        study._storage.set_study_system_attr(study._study_id, lease_mod.LEASE_ATTR, asdict(info))
        with pytest.raises(LeaseHeld, match="host node-7, pid 4242"):
            resume_study(sf.study.name, self._options(storage_url, tmp_path, [], n_trials=2))

    def test_a_driver_whose_lease_was_taken_stops_writing(self, storage_url, tmp_path) -> None:
        sf = self._study_file(tmp_path, n_trials=1)
        run_study(sf, self._options(storage_url, tmp_path, []))
        study = optuna.load_study(study_name=sf.study.name, storage=storage_url)
        mine = DriverLease(study, command="resume")
        mine.acquire()
        other = {**asdict(mine.info), "id": "newcomer", "host": "node-9"}
        study._storage.set_study_system_attr(study._study_id, lease_mod.LEASE_ATTR, other)
        with pytest.raises(LeaseLost, match="node-9"):
            mine.heartbeat(force=True)
        mine.release()  # not ours any more: must not overwrite the newcomer's lease
        assert read_lease(study).id == "newcomer"

    def test_recovery_is_idempotent_when_interrupted_itself(self, storage_url, tmp_path) -> None:
        storage = open_storage(storage_url)
        study = optuna.create_study(study_name=f"recover-{uuid.uuid4().hex[:8]}", storage=storage)
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        # a driver killed in the middle of an earlier recovery: the re-run was enqueued, the trial still RUNNING
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})
        assert recover_interrupted(study) == 1
        assert recover_interrupted(study) == 0
        trials = study.get_trials(deepcopy=False)
        assert trials[0].state == TrialState.FAIL
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        assert len(waiting) == 1 and waiting[0].user_attrs[RETRY_OF_ATTR] == 0
        assert json.dumps(waiting[0].system_attrs["fixed_params"]) == json.dumps(trials[0].params)


def test_a_missing_database_driver_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"pip install 'psycopg\[binary\]'") as err:
        open_storage("postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(err.value)
