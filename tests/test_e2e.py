"""A real study through the CLI: tiny BERT, real Ray, real SQLite storage, SIGKILL and resume, dashboard."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fairfront.search.attrs import stored_record
from fairfront.search.hypervolume import hypervolume_share

from conftest import FAIRFRONT, cli_env, free_port, run_cli, tiny_study_text, wait_for

pytestmark = pytest.mark.e2e


def _storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}"


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, cache_dir):
    """One 3-trial study run to the end, shared by the checks below."""
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "tiny.toml").write_text(tiny_study_text("tiny", n_trials=3, parallel=2))
    result = run_cli(["run", "tiny.toml", "--cache-dir", str(cache_dir)], tmp)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, result


def test_run_prints_progress_and_front(finished_study) -> None:
    tmp, result = finished_study
    out = result.stdout
    assert out.count(" COMPLETE in ") == 3
    assert "3/3 complete" in out
    # not a terminal: each finished trial's line ends with the progress, the last one with the final front
    lines = [line for line in out.splitlines() if " COMPLETE in " in line]
    counts = [re.search(r"\| (\d)/3 complete · front \d · hypervolume", line).group(1) for line in lines]
    assert counts == ["1", "2", "3"]
    assert all(re.search(r"ETA \w+ \(\d in parallel\)", line) for line in lines[:2]) and "ETA" not in lines[2]
    study = optuna.load_study(study_name="tiny", storage=_storage(tmp))
    shown = float(re.search(r"hypervolume (\d\.\d+)", lines[2]).group(1))
    values = [t.values for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert shown == pytest.approx(hypervolume_share(values, [True, False, False]), abs=5e-4)
    assert f"front {len(study.best_trials)}" in lines[2]
    assert "Pareto front of 'tiny'" in out
    assert "storage:   sqlite:///studies/fairfront.db" in out
    assert "fairfront dashboard" in out


def test_storage_holds_directions_names_values_and_attributes(finished_study) -> None:
    tmp, _ = finished_study
    study = optuna.load_study(study_name="tiny", storage=_storage(tmp))
    assert study.metric_names == ["accuracy", "size", "bias"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    for t in complete:
        a, flat = stored_record(t), t.user_attrs
        accuracy, size, bias = t.values
        assert accuracy == a["validation"]["accuracy"]["accuracy"] == flat["validation.accuracy"]
        assert size == a["size"]["nonzero_params"]
        assert bias == a["validation"]["bias"]["tpr_gap"] == flat["validation.bias.tpr_gap"]
        assert flat["test.bias.tpr_gap.ci_low"] <= flat["test.bias.tpr_gap"] <= flat["test.bias.tpr_gap.ci_high"]
        assert 0.0 <= accuracy <= 1.0 and bias >= 0.0
        # the sampled sparsity is what the model really has
        assert abs(a["achieved_sparsity"] - t.params["pruning.sparsity"]) < 0.005
        assert size < a["size"]["params"]
        # the test split and per-group numbers are kept too
        assert set(a["test"]["accuracy"]) >= {"accuracy", "balanced_accuracy", "macro_f1"}
        assert "female" in json.dumps(a["validation"]["fairness"]) and "male" in json.dumps(a["validation"]["fairness"])
        assert a["timings"]["train_s"] > 0 and a["train"]["steps"] == 15
    assert study.user_attrs["fairfront.n_trials"] == 3
    assert "[space.pruning]" in study.user_attrs["fairfront.study_file"]


def test_status_and_front_commands(finished_study) -> None:
    tmp, _ = finished_study
    status = run_cli(["status", "tiny"], tmp, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "3 COMPLETE, 0 RUNNING, 0 WAITING, 0 FAIL" in status.stdout
    front = run_cli(["front", "tiny", "--format", "json"], tmp, timeout=120)
    rows = json.loads(front.stdout)
    study = optuna.load_study(study_name="tiny", storage=_storage(tmp))
    assert sorted(r["trial"] for r in rows) == sorted(t.number for t in study.best_trials)
    missing = run_cli(["status", "nope"], tmp, timeout=120)
    assert missing.returncode == 2 and "found: tiny" in missing.stderr


def test_run_refuses_an_existing_study_name(finished_study, cache_dir) -> None:
    tmp, _ = finished_study
    again = run_cli(["run", "tiny.toml", "--cache-dir", str(cache_dir)], tmp, timeout=120)
    assert again.returncode == 2
    assert "fairfront resume tiny" in again.stderr


def test_sigkill_driver_then_resume(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "k.toml").write_text(tiny_study_text("killme", n_trials=4, parallel=1, student_steps=60))
    proc = subprocess.Popen([FAIRFRONT, "run", "k.toml", "--cache-dir", str(cache_dir)], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    storage = _storage(tmp_path)

    def states():
        try:
            study = optuna.load_study(study_name="killme", storage=storage)
        except Exception:  # noqa: BLE001 - not created yet
            return None
        t = study.get_trials(deepcopy=False)
        done = [x for x in t if x.state == TrialState.COMPLETE]
        running = [x for x in t if x.state == TrialState.RUNNING and "pruning.sparsity" in x.params]
        return (done, running) if done and running else None

    try:
        done, running = wait_for(states, 300, "one COMPLETE and one RUNNING trial")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the local Ray processes the dead driver left behind
        except ProcessLookupError:
            pass
    before = {t.number: t.values for t in done}
    interrupted = [t.number for t in running]

    result = run_cli(["resume", "killme", "--cache-dir", str(cache_dir)], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "recovered" in result.stdout
    study = optuna.load_study(study_name="killme", storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    for number, values in before.items():  # nothing completed was lost or changed
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    for number in interrupted:  # interrupted trials failed with a reason and were re-run with their parameters
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["fail_reason"].startswith("interrupted")
        reruns = [t for t in complete if t.user_attrs.get("fairfront.retry_of") == number]
        assert len(reruns) == 1 and reruns[0].params == trials[number].params
    # no parameter set was completed twice
    keys = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(keys) == len(set(keys))


def test_dashboard_serves_the_study(finished_study) -> None:
    tmp, _ = finished_study
    port = free_port()
    proc = subprocess.Popen([FAIRFRONT, "dashboard", "--port", str(port)], cwd=tmp, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def studies():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    try:
        listing = wait_for(studies, 60, "optuna-dashboard to answer")
        summary = next(s for s in listing["study_summaries"] if s["study_name"] == "tiny")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
        assert detail["objective_names"] == ["accuracy", "size", "bias"]
        assert len(detail["trials"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
