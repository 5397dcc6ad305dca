"""A driver stopped past the lease's stale age and taken over writes nothing when it wakes.

The stale driver is the real CLI (``fairfront run`` in a subprocess, on the tiny study of
``conftest.py``, joined to this module's Ray cluster). It is frozen with SIGSTOP while it has one
COMPLETE trial and two trials in flight (the ``FAIRFRONT_FAULTS`` hook keeps trial 1 sleeping; trial
2 finishes while the driver is frozen, so a result is waiting when it wakes); with a trial timeout
it is frozen as soon as two trials are in flight, so that only the time it spent frozen overruns it. A second driver
(``resume_study`` in this process, with a short stale age and the in-process executor) takes the
study over, recovers the frozen driver's trials and starts its own, which stay in flight until the
frozen driver has woken and exited. The frozen driver is then woken with SIGCONT, with or
without a SIGTERM waiting for it, with or without ``trial_timeout_s`` overrunning while it was
frozen: whichever write it tries first (telling the waiting result, timing its trials out,
recording them after SIGTERM) must change nothing, and it must exit with status 3 and one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import optuna
import pytest
import ray
from optuna.trial import TrialState

from fairfront.objectives.training.trial import TrialOutcome
from fairfront.search import faults as fault_hook
from fairfront.search.driver import RETRY_OF_ATTR, RunOptions, resume_study
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.lease import DEAD_GRACE_S, read_lease
from fairfront.search.storage import open_storage

from conftest import FAIRFRONT, cli_env, noop_trial, tiny_study_text

STALE_S = DEAD_GRACE_S + 1.0  # the shortest stale age a lease allows, plus a margin
TIMEOUT_S = 4  # shorter than the stale driver stays frozen

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("local_ray")]


GATE = threading.Event()


def gated_trial(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    GATE.wait(timeout=300)  # the newcomer's trials stay in flight until the stale driver has woken and exited
    return noop_trial(prepared, spec)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return []


def _row(t: optuna.trial.FrozenTrial) -> str:
    return json.dumps([t.state.name, t.values, t.params, t.user_attrs, t.system_attrs, str(t.datetime_complete)],
                      sort_keys=True, default=str)


@pytest.mark.parametrize(("sigterm", "timeout"), [(False, False), (True, False), (False, True), (True, True)],
                         ids=["wake", "wake+sigterm", "wake+timeout", "wake+sigterm+timeout"])
def test_a_stale_driver_writes_nothing_when_it_wakes(storage_url, tmp_path, cache_dir, sigterm, timeout) -> None:
    name = f"fence-{uuid.uuid4().hex[:8]}"
    text = tiny_study_text(name, n_trials=4, parallel=2) + (f"trial_timeout_s = {TIMEOUT_S}\n" if timeout else "")
    (tmp_path / "s.toml").write_text(text)
    open_storage(storage_url)  # the tables exist before two processes open the database
    env = {**cli_env(), fault_hook.FAULTS_ENV: "1:sleep=600; 2:sleep=1"}
    log = tmp_path / "stale.log"
    with open(log, "w") as out:
        stale = subprocess.Popen([FAIRFRONT, "run", "s.toml", "--storage", storage_url, "--cache-dir", str(cache_dir),
                                  "--ray-address", ray.get_runtime_context().gcs_address], cwd=tmp_path, env=env,
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    newcomer: dict = {}
    GATE.clear()
    try:
        deadline = time.time() + 300
        while True:  # two trials sampled and in flight, and (without a timeout to beat) one COMPLETE
            trials = _trials(storage_url, name)
            running = [t for t in trials if t.state == TrialState.RUNNING and "pruning.sparsity" in t.params]
            if len(running) == 2 and (timeout or any(t.state == TrialState.COMPLETE for t in trials)):
                break
            assert time.time() < deadline and stale.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        stale.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        time.sleep(STALE_S + 0.5)  # its last heartbeat is now older than the stale age

        def take_over() -> None:
            try:
                resume_study(name, RunOptions(storage=storage_url, cache_dir=cache_dir, artifact_dir=tmp_path / "a",
                                              log=newcomer.setdefault("log", []).append, trial_fn=gated_trial,
                                              executor=InProcessExecutor(capacity=2), lease_stale_s=STALE_S))
            except BaseException as err:  # noqa: BLE001 - reported by the test below
                newcomer["error"] = err

        thread = threading.Thread(target=take_over, daemon=True)
        thread.start()
        n_old = len(trials)
        while True:  # the newcomer holds the lease, recovered the frozen driver's trials, and runs its own
            now = _trials(storage_url, name)
            old_done = len(now) >= n_old and all(t.state.is_finished() for t in now[:n_old])
            if old_done and len([t for t in now[n_old:] if t.state == TrialState.RUNNING]) == 2:
                break
            assert time.time() < deadline and "error" not in newcomer, newcomer
            time.sleep(0.1)
        before = {t.number: _row(t) for t in now[:n_old]}  # what the frozen driver's trials are after the takeover
        newcomer_lease = read_lease(optuna.load_study(study_name=name, storage=storage_url)).id
        time.sleep(max(0.0, (TIMEOUT_S + 1.0 if timeout else 0.0) - (time.monotonic() - frozen)))
        if sigterm:
            stale.send_signal(signal.SIGTERM)  # waits for it: delivered when it wakes
        stale.send_signal(signal.SIGCONT)
        stale.wait(timeout=120)
        GATE.set()
        thread.join(timeout=300)
    finally:
        GATE.set()
        if stale.poll() is None:
            os.killpg(stale.pid, signal.SIGKILL)
            stale.wait()
    out = log.read_text()
    assert stale.returncode == 3, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert "lost the study's lease to fairfront resume" in errors[0] and "; nothing was written" in errors[0]
    assert "error" not in newcomer and not thread.is_alive(), "\n".join(newcomer.get("log", [])) + out[-3000:]

    trials = _trials(storage_url, name)
    assert {t.number: _row(t) for t in trials[:n_old]} == before  # the stale driver wrote nothing to its trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and not [t for t in trials if not t.state.is_finished()]
    keys = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(keys) == len(set(keys))  # no trial ran twice
    retries = [t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs]
    assert len(retries) == len(set(retries))  # each interrupted trial enqueued once, by the newcomer
    assert not [t for t in trials if "SIGTERM" in t.user_attrs.get("fail_reason", "")]
    lease = read_lease(optuna.load_study(study_name=name, storage=storage_url))
    assert lease.id == newcomer_lease and lease.released  # the newcomer's lease, released by the newcomer
