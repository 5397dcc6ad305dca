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
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.search import lease as lease_mod
from fairfront.search.attrs import store_record, stored_record
from fairfront.search.driver import RETRY_OF_ATTR, RunOptions, recover_interrupted, resume_study, run_study
from fairfront.search.lease import DriverLease, LeaseHeld, LeaseInfo, LeaseLost, read_lease
from fairfront.search.storage import open_storage, study_names
from fairfront.search.studyfile import parse_study_text

from conftest import failing_on_odd_seeds, noop_trial, placeholder_prepared, tiny_study_text

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("local_ray")]


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
            assert stored_record(t)["worker"]["pid"] != os.getpid()  # computed in a Ray worker, told by the driver
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
            assert "failing_on_odd_seeds" in stored_record(t)["traceback"]

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


def _assert_mirror_agrees(storage, url: str, study_id: int) -> None:
    """Every trial read of the driver's storage equals what a fresh plain storage reads from the database."""
    fresh = open_storage(url)
    expected = fresh.get_all_trials(study_id)
    got = storage.get_all_trials(study_id)
    assert got == expected
    for t in expected:
        assert storage.get_trial(t._trial_id) == t
        assert storage.get_trial_id_from_study_id_trial_number(study_id, t.number) == t._trial_id
        assert storage.get_trial_number_from_id(t._trial_id) == t.number
        assert storage.get_trial_user_attrs(t._trial_id) == t.user_attrs
        assert storage.get_trial_system_attrs(t._trial_id) == t.system_attrs
    for state in TrialState:
        assert storage.get_n_trials(study_id, state) == fresh.get_n_trials(study_id, state)
        assert storage.get_all_trials(study_id, deepcopy=False, states=(state,)) == \
            fresh.get_all_trials(study_id, states=(state,))
    with pytest.raises(KeyError):
        storage.get_trial_id_from_study_id_trial_number(study_id, len(expected))


class TestDriverStorageMirror:
    """The driver's storage (an in-memory mirror of its study's trials) against the database itself."""

    def _sample(self, trial, with_log: bool = True) -> None:
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 1, 9)
        trial.suggest_categorical("kind", ["a", "b", None])
        if with_log:
            trial.suggest_float("lr", 1e-5, 1e-1, log=True)
            trial.suggest_float("stepped", 0.0, 1.0, step=0.25)

    def test_every_operation_leaves_the_mirror_equal_to_the_database(self, storage_url) -> None:
        from fairfront.search.driver_storage import DriverStorage

        storage = DriverStorage(open_storage(storage_url))
        name = f"mirror-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "maximize"],
                                    sampler=optuna.samplers.RandomSampler(seed=1))
        sid = study._study_id
        agree = lambda: _assert_mirror_agrees(storage, storage_url, sid)  # noqa: E731
        agree()  # an empty study
        # a trial asked, sampled in one transaction and in single ones, attributes, intermediate values, COMPLETE
        trial = study.ask()
        agree()
        with storage.grouped_writes():
            self._sample(trial, with_log=False)
            trial.suggest_float("x", 0.0, 1.0)  # again: the first value stays, as in the database
        agree()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.set_user_attr("tuple", (1, 2.5, "three"))
        trial.set_user_attr("nested", {"a": [1, {"b": None}], "1": True})
        trial.set_user_attr("tuple", [4])  # overwritten
        with storage.grouped_writes():  # one transaction
            for key, value in {"many": {"a": 1}, "nan": None, "tuple": [4, 5]}.items():
                trial.set_user_attr(key, value)
        trial.storage.set_trial_system_attr(trial._trial_id, "sys", {"k": 1})
        storage.set_trial_intermediate_value(trial._trial_id, 0, 0.5)
        storage.set_trial_intermediate_value(trial._trial_id, 1, float("inf"))
        storage.set_trial_intermediate_value(trial._trial_id, 0, 0.25)  # overwritten
        agree()
        study.tell(trial, [0.1, float("inf")])
        agree()
        # an enqueued WAITING template, popped by ask (WAITING -> RUNNING), then FAIL
        study.enqueue_trial({"x": 0.5, "n": 3}, user_attrs={"from": "queue"})
        agree()
        queued = study.ask()
        assert queued.params == {} and queued.user_attrs == {"from": "queue"}
        with storage.grouped_writes():
            self._sample(queued)
        assert queued.params["x"] == 0.5 and queued.params["n"] == 3
        agree()
        queued.set_user_attr("fail_reason", "boom")
        study.tell(queued, state=TrialState.FAIL)
        agree()
        # a finished trial cannot be updated; the mirror does not change either
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(queued._trial_id, "late", 1)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            with storage.grouped_writes():
                storage.set_trial_user_attr(queued._trial_id, "later", 2)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            with storage.grouped_writes():
                storage.set_trial_param(queued._trial_id, "late", 0.1, optuna.distributions.FloatDistribution(0, 1))
        with pytest.raises(ValueError):  # incompatible with the study's distribution of "x"
            with storage.grouped_writes():
                storage.set_trial_param(study.ask()._trial_id, "x", 1.0, optuna.distributions.IntDistribution(0, 3))
        agree()
        # PRUNED with its last intermediate value, an added COMPLETE trial, RUNNING trials left behind
        pruned = study.ask()
        self._sample(pruned)
        storage.set_trial_intermediate_value(pruned._trial_id, 3, 0.75)
        study.tell(pruned, state=TrialState.PRUNED)
        study.add_trial(optuna.trial.create_trial(params={"x": 0.3}, distributions={
            "x": optuna.distributions.FloatDistribution(0.0, 1.0)}, values=[0.2, 0.4], user_attrs={"added": 1}))
        for _ in range(2):
            with storage.grouped_writes():
                self._sample(study.ask())
        agree()
        # recovery by this driver (FAIL + enqueued again), then a resumed driver with a mirror read from the database
        assert recover_interrupted(study) == 3  # the two above and the one whose incompatible param was refused
        agree()
        resumed = DriverStorage(open_storage(storage_url))
        again = optuna.load_study(study_name=name, storage=resumed, sampler=optuna.samplers.RandomSampler(seed=2))
        _assert_mirror_agrees(resumed, storage_url, sid)
        assert recover_interrupted(again) == 0
        for _ in range(4):  # the three re-runs (fixed params) and a new trial
            t = again.ask()
            with resumed.grouped_writes():
                self._sample(t)
            again.tell(t, [t.params["x"], 1.0])
        _assert_mirror_agrees(resumed, storage_url, sid)
        reruns = [t for t in again.get_trials(deepcopy=False) if RETRY_OF_ATTR in t.user_attrs]
        assert len(reruns) == 3 and all(t.state == TrialState.COMPLETE for t in reruns)

    def test_writes_reach_the_database_at_once_and_reads_do_not_touch_it(self, storage_url) -> None:
        from sqlalchemy import event

        from fairfront.search.driver_storage import DriverStorage

        backend = open_storage(storage_url)
        storage = DriverStorage(backend)
        study = optuna.create_study(study_name=f"mirror-{uuid.uuid4().hex[:8]}", storage=storage)
        fresh = open_storage(storage_url)
        trial = study.ask()
        with storage.grouped_writes():
            trial.suggest_float("x", 0.0, 1.0)
            trial.suggest_int("n", 0, 5)
        assert fresh.get_trial(trial._trial_id).params == trial.params  # committed when the block ended
        trial.set_user_attr("a", 1)
        assert fresh.get_trial(trial._trial_id).user_attrs == {"a": 1}
        statements: list[str] = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(backend.engine, "before_cursor_execute", listener)
        try:
            for _ in range(3):
                study.get_trials(deepcopy=False)
                storage.get_trial(trial._trial_id)
                storage.get_all_trials(study._study_id, states=(TrialState.WAITING,))
        finally:
            event.remove(backend.engine, "before_cursor_execute", listener)
        assert statements == []
        study.tell(trial, 1.0)
        assert fresh.get_trial(trial._trial_id) == storage.get_trial(trial._trial_id)
        assert storage.get_best_trial(study._study_id) == fresh.get_best_trial(study._study_id)

    def test_a_rerun_killed_before_sampling_is_enqueued_again_with_its_parameters(self, storage_url) -> None:
        study = optuna.create_study(study_name=f"recover-{uuid.uuid4().hex[:8]}", storage=open_storage(storage_url))
        study.enqueue_trial({"x": 0.25, "k": "b"}, user_attrs={RETRY_OF_ATTR: 7})
        study.ask()  # the re-run is taken from the queue; the driver dies before it writes any parameter
        assert recover_interrupted(study) == 1
        waiting = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
        assert len(waiting) == 1 and waiting[0].user_attrs[RETRY_OF_ATTR] == 0
        assert waiting[0].system_attrs["fixed_params"] == {"x": 0.25, "k": "b"}

    def test_a_recovered_trials_reason_and_fail_state_are_one_transaction(self, storage_url) -> None:
        from sqlalchemy import event

        from fairfront.search.driver import REASON_ATTR
        from fairfront.search.driver_storage import DriverStorage

        backend = open_storage(storage_url)
        study = optuna.create_study(study_name=f"recover-{uuid.uuid4().hex[:8]}", storage=DriverStorage(backend))
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF_ATTR: trial.number})  # re-run already there
        commits: list[int] = []
        event.listen(backend.engine, "commit", lambda conn: commits.append(1))
        assert recover_interrupted(study, reason="interrupted: test") == 1
        assert len(commits) == 1
        done = open_storage(storage_url).get_trial(trial._trial_id)
        assert done.state == TrialState.FAIL and done.user_attrs[REASON_ATTR] == "interrupted: test"

    def test_a_trials_results_reach_the_database_in_one_transaction_or_not_at_all(self, storage_url, tmp_path) -> None:
        from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
        from sqlalchemy import event

        from fairfront.search.driver_storage import DriverStorage

        backend = open_storage(storage_url)
        storage = DriverStorage(backend)
        study = optuna.create_study(study_name=f"mirror-{uuid.uuid4().hex[:8]}", storage=storage,
                                    directions=["minimize", "maximize"])
        fresh = open_storage(storage_url)
        study.get_trials(deepcopy=False)  # the mirror is built (a read transaction)
        commits: list[int] = []
        event.listen(backend.engine, "commit", lambda conn: commits.append(1))
        trial = study.ask()
        assert len(commits) == 1  # creating the trial: one transaction
        with storage.grouped_writes():
            self._sample(trial)
        assert len(commits) == 2  # its five parameters: one more
        report = tmp_path / "report.json"
        report.write_text("{}")
        with storage.grouped_writes():
            for key in ("a", "b", "c"):
                trial.set_user_attr(key, {"key": key})
            trial.set_user_attr("a", "again")  # the last write of a key wins, as in the database
            store_record(trial, {"test": {"accuracy": {"accuracy": 0.75}}})  # the record and its flat attributes
            upload_artifact(artifact_store=FileSystemArtifactStore(str(tmp_path)), file_path=str(report),
                            study_or_trial=trial)
            study.tell(trial, [0.5, float("-inf")])
            assert trial.number == 0 and storage.get_trial(trial._trial_id).state == TrialState.COMPLETE
            inside = fresh.get_trial(trial._trial_id)  # nothing written yet
            assert inside.state == TrialState.RUNNING and inside.user_attrs == {} and inside.values is None
        assert len(commits) == 3  # attributes, the record, the artifact's attribute, values and state: one transaction
        done = fresh.get_trial(trial._trial_id)
        assert done.state == TrialState.COMPLETE and done.values == [0.5, float("-inf")]
        assert done.user_attrs == {"a": "again", "b": {"key": "b"}, "c": {"key": "c"}, "test.accuracy": 0.75}
        assert stored_record(done) == {"test": {"accuracy": {"accuracy": 0.75}}}
        assert len(get_all_artifact_meta(done, storage=fresh)) == 1
        _assert_mirror_agrees(storage, storage_url, study._study_id)
        # a failed write (the trial was finished behind the driver's back): nothing of the block is written,
        # the error is Optuna's own, and the mirror is re-read from the database
        other = study.ask()
        fresh.set_trial_state_values(other._trial_id, TrialState.FAIL)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            with storage.grouped_writes():
                other.set_user_attr("late", 1)
                study.tell(other, [1.0, 1.0])
        assert fresh.get_trial(other._trial_id).user_attrs == {} and fresh.get_trial(other._trial_id).values is None
        _assert_mirror_agrees(storage, storage_url, study._study_id)

    def test_another_writer_is_noticed_and_the_mirror_reread(self, storage_url) -> None:
        from fairfront.search.driver_storage import DriverStorage

        storage = DriverStorage(open_storage(storage_url))
        name = f"mirror-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(study_name=name, storage=storage)
        study.enqueue_trial({"x": 0.1})
        study.get_trials(deepcopy=False)  # the mirror is built
        other = optuna.load_study(study_name=name, storage=open_storage(storage_url))
        waiting = other.get_trials(deepcopy=False)[0]
        # another process takes the WAITING trial: the driver's attempt returns False, as Optuna's storages do
        assert other._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
        assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING) is False
        _assert_mirror_agrees(storage, storage_url, study._study_id)
        other.ask()  # a trial created behind the driver's back: the next trial the driver creates notices
        trial = study.ask()
        assert trial.number == 2
        _assert_mirror_agrees(storage, storage_url, study._study_id)

    @pytest.mark.parametrize("mirror", [True, False])
    def test_the_driver_uses_the_mirror_and_readers_do_not(self, storage_url, tmp_path, mirror: bool) -> None:
        """By default the driver runs over the mirror; ``mirror=False`` (the benchmark's baseline) runs the
        same loop over Optuna's own storage."""
        from fairfront.search.driver import load_study
        from fairfront.search.driver_storage import DriverStorage

        sf = parse_study_text(tiny_study_text(f"mirror-{uuid.uuid4().hex[:8]}", n_trials=2, parallel=2),
                              base_dir=tmp_path)
        options = RunOptions(storage=storage_url, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "artifacts",
                             log=lambda m: None, trial_fn=noop_trial, prepared=placeholder_prepared(), mirror=mirror)
        study = run_study(sf, options)
        assert isinstance(study._storage, DriverStorage) == mirror
        if mirror:
            _assert_mirror_agrees(study._storage, storage_url, study._study_id)
        assert not isinstance(load_study(sf.study.name, storage_url)._storage, DriverStorage)
        options.n_trials = 3
        resumed = resume_study(sf.study.name, options)
        assert isinstance(resumed._storage, DriverStorage) == mirror
        if mirror:
            _assert_mirror_agrees(resumed._storage, storage_url, resumed._study_id)
        complete = resumed.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        assert len(complete) == 3 and all(t.user_attrs for t in complete)


def _open_when_told(url: str, start_at: float) -> list[str]:
    """Open ``url`` at wall-clock time ``start_at`` (so that several processes do it at once)."""
    time.sleep(max(0.0, start_at - time.time()))
    return study_names(open_storage(url))


def test_processes_opening_one_new_database_at_once_all_succeed(tmp_path) -> None:
    # a driver starting while `fairfront status` or the dashboard polls the same new file: both
    # create the schema, and the slower one must open it instead of failing on a duplicate
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.starmap(_open_when_told, [(f"sqlite:///{tmp_path / 'warm.db'}", 0.0)] * 6)  # imports done
        for attempt in range(4):  # the race is narrow: new databases, all opened at one instant
            url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
            results = pool.starmap(_open_when_told, [(url, time.time() + 0.5)] * 6)
            assert results == [[]] * 6
