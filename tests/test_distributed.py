"""A Ray cluster started the way users start one (``ray start --head``, nodes joining), and drivers
that join it with ``--ray-address``: a driver killed with SIGKILL over and over, a second driver on
a running study, and a node that joins mid-study.

One head serves the whole module, so a driver start does not pay Ray's start-up. Every process
started here is stopped at the end, even on failure: the Ray processes are found by the module's
own temporary folder (and their children), never by name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from fairfront.search.attrs import stored_record
from fairfront.search.driver import RETRY_OF_ATTR
from fairfront.search.faults import FAULTS_ENV
from fairfront.search.lease import read_lease

from conftest import FAIRFRONT, cli_env, run_cli, tiny_study_text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """Ray processes started with ``ray start --block`` under one temporary folder."""

    def __init__(self, num_cpus: int):
        self.temp_dir = tempfile.mkdtemp(prefix="ffray", dir="/tmp")  # short: Ray's socket paths must fit
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"],
                    num_cpus)
        deadline = time.time() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.time() > deadline or self.procs[0].poll() is not None:
                self.stop()
                raise RuntimeError("the Ray head did not start: " + self._log(0))
            time.sleep(0.5)

    def _start(self, args: list[str], num_cpus: int) -> subprocess.Popen:
        log = open(Path(self.temp_dir) / f"start-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", f"--num-cpus={num_cpus}",
                                 "--node-ip-address=127.0.0.1", "--object-store-memory=100000000", *args],
                                env=cli_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _log(self, i: int) -> str:
        return (Path(self.temp_dir) / f"start-{i}.log").read_text()[-2000:]

    def add_node(self, num_cpus: int) -> subprocess.Popen:
        return self._start([f"--address={self.address}"], num_cpus)

    def remove_node(self, proc: subprocess.Popen) -> None:
        _stop_processes(_tree(proc.pid))
        proc.wait(timeout=10)

    def _ours(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        started = {p.pid for p in self.procs}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.temp_dir in " ".join(proc.info["cmdline"] or []) or proc.pid in started:
                    found.update({p.pid: p for p in _tree(proc.pid)})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())

    def stop(self) -> None:
        _stop_processes(self._ours())
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (Ray workers rename themselves, so names cannot find them)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop_processes(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster(num_cpus=2)
    try:
        yield c
    finally:
        c.stop()


def _driver(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """A driver whose output goes to ``log`` (a pipe nobody reads could fill up and block it)."""
    with open(log, "w") as out:
        return subprocess.Popen([FAIRFRONT, *args], cwd=cwd, env=env or cli_env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _load(storage: str, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - not created yet
        return None


def test_driver_killed_with_sigkill_ten_times_then_resumed(cluster, tmp_path, cache_dir) -> None:
    rng = random.Random(20240611)
    name, target = "sigkill", 6
    (tmp_path / "k.toml").write_text(tiny_study_text(name, n_trials=target, parallel=2, student_steps=5))
    storage = f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}"
    common = ["--cache-dir", str(cache_dir), "--ray-address", cluster.address]
    ever_complete: dict[int, list[float]] = {}
    kills, refused_checked, command = 0, False, ["run", "k.toml"]
    log = tmp_path / "driver.log"
    while kills < 10:
        # the first driver's trials sleep, so it is surely alive while a second driver is refused
        env = {**cli_env(), FAULTS_ENV: "0:sleep=600; 1:sleep=600"} if kills == 0 else None
        proc = _driver(command + common, tmp_path, log, env)
        try:
            deadline = time.time() + 180
            while True:  # this driver is in its loop once the lease names it
                assert time.time() < deadline, "the driver never took the lease"
                study = _load(storage, name)
                holder = read_lease(study) if study is not None else None
                if (holder is not None and holder.pid == proc.pid and not holder.released) or proc.poll() is not None:
                    break
                time.sleep(0.2)
            if kills == 0:
                # a second driver on the running study refuses, naming the first
                second = run_cli(["resume", name, *common], tmp_path, timeout=180)
                assert second.returncode == 3, second.stdout[-2000:] + second.stderr[-2000:]
                assert f"pid {proc.pid}" in second.stderr and "is being run by another driver" in second.stderr
                refused_checked = True
            time.sleep(rng.uniform(0.0, 6.0))  # a random point of the loop: ask, sample, submit, wait, tell
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        finally:
            _kill_group(proc)
        assert proc.returncode in (0, -signal.SIGKILL), log.read_text()[-3000:]
        trials = _load(storage, name).get_trials(deepcopy=False)
        for number, values in ever_complete.items():  # nothing COMPLETE is ever lost or changed
            assert trials[number].state == TrialState.COMPLETE and trials[number].values == values, number
        ever_complete.update({t.number: t.values for t in trials if t.state == TrialState.COMPLETE})
        if proc.returncode == 0:  # finished before the kill: ask for two more trials and go on killing
            target += 2
        command = ["resume", name, "--n-trials", str(target)]
    assert refused_checked

    result = run_cli(["resume", name, "--n-trials", str(target), *common], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = _load(storage, name).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == target  # exactly the requested number
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number, values in ever_complete.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    keys = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(keys) == len(set(keys)), "a parameter set was completed twice"
    by_retry = {}
    for t in trials:
        if RETRY_OF_ATTR in t.user_attrs:
            assert t.user_attrs[RETRY_OF_ATTR] not in by_retry, "an interrupted trial was enqueued twice"
            by_retry[t.user_attrs[RETRY_OF_ATTR]] = t
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, "no kill interrupted a trial"
    for t in failed:  # every interrupted trial was re-run, with its parameters, until one run completed
        assert t.user_attrs["fail_reason"].startswith("interrupted")
        rerun = by_retry[t.number]
        while True:  # every link is enqueued with them, even one killed before it wrote any parameter
            assert set(t.params.items()) <= set(rerun.system_attrs["fixed_params"].items())
            if rerun.state == TrialState.COMPLETE:
                break
            rerun = by_retry[rerun.number]
        assert set(t.params.items()) <= set(rerun.params.items())


def test_a_node_that_joins_mid_study_is_used(cluster, tmp_path, cache_dir) -> None:
    name, n_trials = "grow", 12
    (tmp_path / "g.toml").write_text(tiny_study_text(name, n_trials=n_trials, parallel=4, student_steps=5))
    # the driver reads the prepared study from a cache that is deleted once the loop runs: trials on
    # every node get it from Ray's object store
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    env = {**cli_env(), FAULTS_ENV: ";".join(f"{i}:sleep=3" for i in range(n_trials))}
    log = tmp_path / "driver.log"
    proc = _driver(["run", "g.toml", "--cache-dir", str(cache), "--ray-address", cluster.address], tmp_path, log, env)
    node = None
    try:
        deadline = time.time() + 180
        while "fits 2 trial(s) at once" not in log.read_text():
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        shutil.rmtree(cache)
        node = cluster.add_node(num_cpus=2)
        proc.wait(timeout=300)
    finally:
        _kill_group(proc)
        if node is not None:
            cluster.remove_node(node)  # the head keeps its 2 CPUs for any later test
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "fits 4 trial(s) at once (was 2); up to 4 in flight" in out
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials
    assert len({stored_record(t)["worker"]["node_id"] for t in complete}) == 2  # both nodes ran trials
    # after the join more than two trials ran at once
    spans = [(t.datetime_start, t.datetime_complete) for t in complete]
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most > 2
