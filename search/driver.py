"""The driver: one process owns the study and runs the ask/tell loop.

Only the driver writes to storage, so SQLite stays safe with workers on many nodes. The loop:
ask a trial, sample its compression setting from the spaces, submit it to Ray, and tell the study
each result as it arrives (COMPLETE with its values, or FAIL with the reason in the trial's user
attributes). It stops when the study holds the requested number of COMPLETE trials.

How many trials are in flight follows the cluster: at most ``[execution] parallel``, and at most
as many as the alive nodes fit (re-counted every few seconds, so a node that joins mid-study is
used). While no node fits a trial the driver waits for one to join.

One driver per study: the driver holds a lease with a heartbeat in the study's system attributes
(:mod:`fairfront.search.lease`); a second driver refuses, naming the first, unless the first is
dead, in which case it takes over.

Failures never crash the study. A trial that raises, meets a NaN or infinite loss, or runs out
of CUDA memory twice (the second attempt with half the batch size) fails with its reason; a trial
whose worker process or node died is run again up to ``max_retries`` times; a trial running
longer than ``trial_timeout_s`` is cancelled. Only more than ``max_failed_trials`` failures in one
run stop the driver (exit status 1).

The driver's study runs over :class:`~fairfront.search.driver_storage.DriverStorage`: every trial
read is served from an exact in-memory mirror, which only the lease makes safe (one writer per
study), and a trial costs three transactions: its creation, its sampled parameters (committed
before it is submitted), and its result (attributes, report artifact, values and state together).

Optuna's heartbeat does not cover ask/tell, so recovery is explicit: a trial left RUNNING by a
driver that died (even by SIGKILL) is marked FAIL with the reason "interrupted" and its
parameters are enqueued again, so ``resume`` re-runs exactly the interrupted work. Recovery is
idempotent: the parameters are enqueued before the trial is marked FAIL, and a trial that already
has a re-run enqueued is not enqueued twice, so a driver killed during recovery loses nothing and
duplicates nothing. Ctrl-C and SIGTERM record the results that already arrived, cancel the
in-flight trials and recover them the same way before the driver exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import ray
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.training.prepare import Prepared, load_cached, store
from fairfront.objectives.training.trial import TrialOutcome, run_trial
from fairfront.search import executor, report
from fairfront.search.lease import STALE_AFTER_S, DriverLease, LeaseLost, check_free, read_lease
from fairfront.search.driver_storage import DriverStorage
from fairfront.search.samplers import build_sampler
from fairfront.search.storage import DEFAULT_STORAGE, open_storage, study_names
from fairfront.search.studyfile import StudyFile, parse_study_text

__all__ = ["RunOptions", "LoopStats", "run_study", "resume_study", "load_study", "recover_interrupted",
           "TooManyFailures", "Interrupted", "STUDY_FILE_ATTR", "N_TRIALS_ATTR", "REASON_ATTR", "RETRY_OF_ATTR"]

STUDY_FILE_ATTR = "fairfront.study_file"
N_TRIALS_ATTR = "fairfront.n_trials"
REASON_ATTR = "fail_reason"
RETRY_OF_ATTR = "fairfront.retry_of"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class LoopStats:
    """Where the driver's time went in one run of the loop (``benchmarks/driver_overhead.py``).

    ``wait_s`` is time blocked waiting for Ray results; everything else the driver spent itself.
    """

    told: int = 0
    wall_s: float = 0.0
    ask_s: float = 0.0
    submit_s: float = 0.0
    wait_s: float = 0.0
    tell_s: float = 0.0
    lease_s: float = 0.0
    max_in_flight: int = 0

    @property
    def busy_s(self) -> float:
        return self.wall_s - self.wait_s


@dataclass
class RunOptions:
    """How ``run`` and ``resume`` run a study (the CLI's options, plus hooks for benchmarks and tests).

    Attributes:
        trial_fn: the function a Ray task runs for each trial, called as
            ``fn(prepared, spec, device=..., threads=...)``; :func:`run_trial` for real studies.
            Benchmarks swap in trivial functions to measure the loop itself.
        prepared: use this prepared study instead of loading or computing one.
        lease_stale_s: heartbeat age after which another driver's lease may be taken over.
        capacity_refresh_s: how often the cluster's nodes are re-counted.
        mirror: run the study over :class:`DriverStorage` (the default); False reads and writes
            through Optuna's own storage, as ``benchmarks/driver_overhead.py`` does for its baseline.
        stats: filled in by the loop.
    """

    storage: str = DEFAULT_STORAGE
    n_trials: int | None = None
    ray_address: str | None = None
    cache_dir: Path = Path("studies/cache")
    artifact_dir: Path = Path("studies/artifacts")
    log: Callable[[str], None] = print
    trial_fn: executor.TrialFunction = run_trial
    prepared: Prepared | None = None
    lease_stale_s: float = STALE_AFTER_S
    capacity_refresh_s: float = 5.0
    mirror: bool = True
    stats: LoopStats = field(default_factory=LoopStats)


class TooManyFailures(RuntimeError):
    """More trials failed in one run than ``max_failed_trials`` allows."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the driver; in-flight trials were recorded for resume."""


def _storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url)


def load_study(name: str, storage_url: str, *, driver: bool = False) -> optuna.Study:
    """Open an existing study, or fail with one line listing the studies that exist.

    ``driver=True`` opens it over :class:`DriverStorage` (trial reads from an in-memory mirror):
    only for the driver, which holds the study's lease; readers keep the plain storage.
    """
    storage = open_storage(storage_url)
    names = study_names(storage)
    if name not in names:
        raise ConfigError("study", name, "a study in " + storage_url + " (found: " + (", ".join(names) or "none") + ")")
    return optuna.load_study(study_name=name, storage=DriverStorage(storage) if driver else storage)


def _ray_address(options: RunOptions) -> str | None:
    import os

    return options.ray_address or os.environ.get("RAY_ADDRESS") or None


def _check_fits(sf: StudyFile, options: RunOptions) -> None:
    """On a local cluster nothing will join: a trial larger than this machine is a configuration error."""
    if _ray_address(options) is not None:
        return
    ex = sf.execution
    if executor.trial_capacity(cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial) == 0:
        res = ray.cluster_resources()
        key, have = (("gpus_per_trial", res.get("GPU", 0.0)) if ex.gpus_per_trial > res.get("GPU", 0.0)
                     else ("cpus_per_trial", res.get("CPU", 0.0)))
        raise ConfigError(f"execution.{key}", getattr(ex, key), f"at most the {have:g} the local Ray cluster has "
                          "(join a larger cluster with --ray-address)")


def run_study(sf: StudyFile, options: RunOptions) -> optuna.Study:
    """Create the study named in ``sf`` and run it to ``n_trials`` COMPLETE trials."""
    if options.n_trials is not None:
        sf = sf.with_trials(options.n_trials)
    storage = open_storage(options.storage)
    log = options.log
    if sf.study.name in study_names(storage):
        old = optuna.load_study(study_name=sf.study.name, storage=storage)
        if STUDY_FILE_ATTR not in old.user_attrs and not old.get_trials(deepcopy=False):
            # a driver killed between creating the study and storing its study file: nothing to keep
            log(f"removing the empty study {sf.study.name!r} an interrupted run left behind")
            optuna.delete_study(study_name=sf.study.name, storage=storage)
        else:
            holder = read_lease(old)
            running = (f"; a driver is running it now ({holder.describe()})" if holder is not None
                       and holder.stale_reason(options.lease_stale_s) is None else "")
            raise ConfigError("study.name", sf.study.name, f"a new study name (it exists in {options.storage}"
                              f"{running}; continue it with: fairfront resume {sf.study.name})")
    executor.start_ray(options.ray_address, log=log)
    _check_fits(sf, options)
    prepared = options.prepared or _prepare(sf, options)  # before the study exists: a bad model writes nothing
    try:
        study = optuna.create_study(study_name=sf.study.name,
                                    storage=DriverStorage(storage) if options.mirror else storage,
                                    directions=sf.objectives.directions,
                                    sampler=build_sampler(sf.study.sampler, seed=sf.study.seed,
                                                          population_size=sf.study.population_size,
                                                          n_trials=sf.study.n_trials))
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError("study.name", sf.study.name, "a new study name (another driver created it meanwhile)") from None
    study.set_user_attr(STUDY_FILE_ATTR, sf.text)  # first: from here on the study can be resumed
    study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
    study.set_metric_names(sf.objectives.names)
    study.set_user_attr("fairfront.data", prepared.data_name)
    study.set_user_attr("fairfront.prepared", prepared.fingerprint)
    lease = DriverLease(study, command="run", ray_address=_ray_address(options), stale_after_s=options.lease_stale_s)
    lease.acquire()
    _refresh_mirror(study)
    log(f"study {sf.study.name!r} created in {options.storage}")
    try:
        return _loop(study, sf, prepared, options, lease)
    finally:
        _release(lease)


def resume_study(name: str, options: RunOptions) -> optuna.Study:
    """Continue a study after an interruption, from what its storage holds."""
    study = load_study(name, options.storage, driver=options.mirror)
    text = study.user_attrs.get(STUDY_FILE_ATTR)
    if text is None:
        raise ConfigError("study", name, "a study created by fairfront (it has no stored study file)")
    sf = parse_study_text(text, base_dir=Path.cwd())
    sf = sf.with_trials(options.n_trials or study.user_attrs.get(N_TRIALS_ATTR, sf.study.n_trials))
    log = options.log
    check_free(study, stale_after_s=options.lease_stale_s)  # refuse before the costly start
    executor.start_ray(options.ray_address, log=log)
    _check_fits(sf, options)
    prepared = options.prepared or _prepare(sf, options)
    lease = DriverLease(study, command="resume", ray_address=_ray_address(options),
                        stale_after_s=options.lease_stale_s)
    previous = lease.acquire()
    _refresh_mirror(study)
    try:
        if previous is not None:
            log(f"took the study over from a driver that is gone ({previous.stale_reason(options.lease_stale_s)}): "
                f"{previous.describe()}")
        if options.n_trials is not None:
            study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
        if not study.metric_names:
            study.set_metric_names(sf.objectives.names)
        n_recovered = recover_interrupted(study)
        if n_recovered:
            log(f"recovered {n_recovered} interrupted trial(s): marked FAIL and enqueued again")
        study.sampler = build_sampler(sf.study.sampler, seed=sf.study.seed + len(study.trials),
                                      population_size=sf.study.population_size, n_trials=sf.study.n_trials)
        return _loop(study, sf, prepared, options, lease)
    finally:
        _release(lease)


def _refresh_mirror(study: optuna.Study) -> None:
    """Under the lease, the driver's mirror of the trials is (re)read from the database from here on."""
    if isinstance(study._storage, DriverStorage):
        study._storage.refresh(study._study_id)


def _release(lease: DriverLease) -> None:
    try:
        lease.release()
    except Exception:  # noqa: BLE001 - the storage is gone; the lease goes stale on its own
        pass


def recover_interrupted(study: optuna.Study, reason: str = "interrupted: the driver stopped before the trial "
                        "finished; its parameters were enqueued again") -> int:
    """Mark RUNNING trials FAIL and enqueue their parameters again; returns how many.

    Idempotent: a RUNNING trial whose re-run is already enqueued (a driver killed during an earlier
    recovery) is only marked FAIL.
    """
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    count = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if t.number not in retried:
            # a re-run killed before its parameters were written still carries them as its fixed params
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            study.enqueue_trial(params, user_attrs={RETRY_OF_ATTR: t.number})
        with _grouped_writes(study)():  # the reason and the FAIL state together, or neither
            storage.set_trial_user_attr(t._trial_id, REASON_ATTR, reason)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        count += 1
    return count


def _prepare(sf: StudyFile, options: RunOptions) -> Prepared:
    spec = sf.prepare_spec
    folder = options.cache_dir / spec.fingerprint()
    if (folder / "meta.json").is_file():
        options.log(f"prepared study found in cache {folder}")
        return load_cached(folder)
    ex = sf.execution
    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    cpus = max(1.0, min(cluster_cpus, ex.cpus_per_trial * ex.parallel))
    gpus = 1.0 if ex.gpus_per_trial > 0 else 0.0
    options.log(f"preparing the study once (data, dense teacher, teacher logits) with {cpus:g} CPUs, {gpus:g} GPUs")
    prepared = executor.prepare_remote(spec, cpus=cpus, gpus=gpus)
    store(prepared, folder)
    options.log(f"prepared study cached in {folder}")
    return prepared


@dataclass
class _Flight:
    """One trial in flight: its Optuna trial, what it runs, and its attempts so far."""

    trial: optuna.Trial
    spec: object
    attempt: int = 1
    worker_retries: int = 0
    submitted: float = 0.0
    first_submitted: float = 0.0
    notes: dict = field(default_factory=dict)


class _Capacity:
    """How many trials the cluster fits, re-counted every ``refresh_s`` seconds."""

    def __init__(self, sf: StudyFile, refresh_s: float, log: Callable[[str], None]):
        self.ex, self.refresh_s, self.log = sf.execution, refresh_s, log
        self.value: int | None = None
        self.checked = 0.0

    def get(self) -> int:
        now = time.monotonic()
        if self.value is not None and now - self.checked < self.refresh_s:
            return self.value
        ex = self.ex
        n = executor.trial_capacity(cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial)
        self.checked = now
        if n != self.value:
            need = f"{ex.cpus_per_trial:g} CPU, {ex.gpus_per_trial:g} GPU per trial"
            if n == 0:
                self.log(f"no node of the Ray cluster fits a trial ({need}); waiting for one to join")
            else:
                was = "" if self.value is None else f" (was {self.value})"
                self.log(f"the Ray cluster fits {n} trial(s) at once{was}; up to {min(n, ex.parallel)} in flight "
                         f"(parallel = {ex.parallel}, {need})")
            self.value = n
        return n


class _Front:
    """The Pareto front's values, kept up to date in O(front size) per trial.

    ``study.best_trials`` re-reads and copies every trial, which would make the driver's cost per
    trial grow with the study; the progress line only needs the front's size.
    """

    def __init__(self, directions, values: list[list[float]]):
        self.signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]
        self.points: list[tuple[float, ...]] = []
        for v in values:
            self.add(v)

    def _dominates(self, a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    def add(self, values) -> None:
        p = tuple(s * v for s, v in zip(self.signs, values))
        if any(self._dominates(q, p) for q in self.points):
            return
        self.points = [q for q in self.points if not self._dominates(p, q)] + [p]

    def __len__(self) -> int:
        return len(self.points)


def _loop(study: optuna.Study, sf: StudyFile, prepared: Prepared, options: RunOptions,
          lease: DriverLease) -> optuna.Study:
    log = options.log
    target = sf.study.n_trials
    ex = sf.execution
    max_failed = ex.max_failed_trials if ex.max_failed_trials is not None else max(3, target)
    stats = options.stats
    wall_start = time.perf_counter()
    prepared_ref = ray.put(prepared)  # once: every worker, on any node, reads it from the object store
    fn_ref = ray.put(options.trial_fn)
    in_flight: dict = {}  # ray ref -> _Flight
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    failed_here = 0
    capacity = _Capacity(sf, options.capacity_refresh_s, log)
    front = _Front(study.directions, [t.values for t in study.best_trials])
    stop: dict = {"signal": None}
    grouped = _grouped_writes(study)

    def on_signal(signum, frame):  # noqa: ARG001
        if stop["signal"] is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        stop["signal"] = signal.Signals(signum).name

    def submit(flight: _Flight) -> None:
        t = time.perf_counter()
        ref = executor.submit_trial(prepared_ref, flight.spec, cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial,
                                    number=flight.trial.number, attempt=flight.attempt, fn=fn_ref)
        flight.submitted = time.monotonic()
        flight.first_submitted = flight.first_submitted or flight.submitted
        in_flight[ref] = flight
        stats.submit_s += time.perf_counter() - t

    def fail(flight: _Flight, reason: str, trace: str) -> None:
        nonlocal failed_here
        trial = flight.trial
        with grouped():  # the reason and the state in one transaction
            trial.set_user_attr(REASON_ATTR, reason)
            trial.set_user_attr("traceback", trace[-4000:])
            _note_attempts(flight)
            study.tell(trial, state=TrialState.FAIL)
        stats.told += 1
        failed_here += 1
        log(f"trial {trial.number} FAIL: {reason}")
        if failed_here > max_failed:
            raise TooManyFailures(f"{failed_here} trials failed in this run (max_failed_trials = "
                                  f"{max_failed}); stopping. Last reason: {reason}")

    def handle(flight: _Flight, outcome: TrialOutcome | executor.TrialError) -> None:
        nonlocal complete
        trial = flight.trial
        if isinstance(outcome, TrialOutcome):
            _tell_complete(study, flight, outcome, options, sf.objectives.names)
            stats.told += 1
            complete += 1
            front.add(outcome.values)
            log(f"trial {trial.number} COMPLETE in {time.monotonic() - flight.first_submitted:.0f}s: "
                + report.format_values(sf.objectives.names, outcome.values)
                + f" | {complete}/{target} complete, front {len(front)}")
            return
        batch = flight.spec.student.batch_size
        if outcome.kind == "worker_died" and flight.worker_retries < ex.max_retries:
            flight.worker_retries += 1
            flight.notes.setdefault("retries", []).append(outcome.reason)
            log(f"trial {trial.number}: {outcome.reason}; running it again (retry {flight.worker_retries} of "
                f"{ex.max_retries})")
            flight.attempt += 1
            submit(flight)
            return
        if outcome.kind == "oom" and "oom_retry" not in flight.notes and batch > 1:
            half = batch // 2
            flight.notes["oom_retry"] = {"reason": outcome.reason, "batch_size": batch, "retry_batch_size": half}
            flight.spec = dataclasses.replace(flight.spec, student=dataclasses.replace(flight.spec.student,
                                                                                      batch_size=half))
            log(f"trial {trial.number}: {outcome.reason}; running it again with batch size {half}")
            flight.attempt += 1
            submit(flight)
            return
        reason = outcome.reason
        if outcome.kind == "oom" and "oom_retry" in flight.notes:
            reason += (f" (also after retrying with half the batch size, {batch}; it first ran out with "
                       f"{flight.notes['oom_retry']['batch_size']})")
        if outcome.kind == "worker_died":
            reason += f" after {flight.worker_retries + 1} attempt(s) (max_retries = {ex.max_retries})"
        fail(flight, reason, outcome.traceback)

    def check_timeouts() -> None:
        if ex.trial_timeout_s is None:
            return
        now = time.monotonic()
        for ref, flight in list(in_flight.items()):
            if now - flight.submitted > ex.trial_timeout_s:
                ray.cancel(ref, force=True)
                del in_flight[ref]
                fail(flight, f"timeout: the trial ran longer than execution.trial_timeout_s = "
                     f"{ex.trial_timeout_s:g} s and was cancelled", "")

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    log(f"running {study.study_name!r}: {complete}/{target} complete, up to {ex.parallel} in parallel "
        f"({ex.cpus_per_trial:g} CPU, {ex.gpus_per_trial:g} GPU per trial"
        + (f", timeout {ex.trial_timeout_s:g} s" if ex.trial_timeout_s else "") + ")")
    try:
        while True:
            if stop["signal"] is not None:
                raise Interrupted(stop["signal"])
            t = time.perf_counter()
            lease.heartbeat()
            limit = min(ex.parallel, capacity.get())
            stats.lease_s += time.perf_counter() - t
            while len(in_flight) < limit and complete + len(in_flight) < target:
                t = time.perf_counter()
                trial = study.ask()
                with grouped():  # the trial's parameters in one transaction, before it is submitted
                    config = sf.space.sample(trial)
                spec = sf.trial_spec(config, trial.number)
                stats.ask_s += time.perf_counter() - t
                submit(_Flight(trial, spec))
            stats.max_in_flight = max(stats.max_in_flight, len(in_flight))
            if not in_flight:
                if complete >= target:
                    break
                time.sleep(0.5)  # no node fits a trial yet
                continue
            t = time.perf_counter()
            refs = list(in_flight)
            done, rest = ray.wait(refs, num_returns=1, timeout=1.0)
            if done and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            stats.wait_s += time.perf_counter() - t
            t = time.perf_counter()
            for ref in done:
                handle(in_flight.pop(ref), _fetch(ref))
            check_timeouts()
            stats.tell_s += time.perf_counter() - t
    except LeaseLost:
        for ref in in_flight:  # another driver owns the study now: cancel, write nothing
            ray.cancel(ref, force=True)
        raise
    except BaseException as err:
        if isinstance(err, Interrupted):
            _record_arrived(study, in_flight, options)
        for ref in in_flight:
            ray.cancel(ref, force=True)
        why = f"interrupted by {err}" if isinstance(err, Interrupted) else f"driver stopped ({type(err).__name__})"
        n = recover_interrupted(study, reason=f"{why}: enqueued again for resume")
        if n:
            log(f"{why}: {n} in-flight trial(s) recorded for resume (fairfront resume {study.study_name})")
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stats.wall_s += time.perf_counter() - wall_start
    return study


def _record_arrived(study: optuna.Study, in_flight: dict, options: RunOptions) -> None:
    """On Ctrl-C/SIGTERM, keep the COMPLETE results that already arrived instead of re-running them."""
    try:
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
        for ref in ready:
            outcome = _fetch(ref)
            if isinstance(outcome, TrialOutcome):
                flight = in_flight.pop(ref)
                _tell_complete(study, flight, outcome, options, study.metric_names or [])
                options.log(f"trial {flight.trial.number} COMPLETE (arrived while stopping)")
    except Exception:  # noqa: BLE001 - best effort; whatever is left is recovered for resume
        pass


def _note_attempts(flight: _Flight) -> None:
    if flight.attempt > 1:
        flight.trial.set_user_attr("fairfront.attempts", flight.attempt)
    for key, value in flight.notes.items():
        flight.trial.set_user_attr(f"fairfront.{key}", value)


def _fetch(ref) -> TrialOutcome | executor.TrialError:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # worker or node died, task cancelled, ...
        return executor.classify_ray_error(err)


def _grouped_writes(study: optuna.Study):
    """The storage's ``grouped_writes`` (one transaction per block), or a block that groups nothing."""
    return getattr(study._storage, "grouped_writes", contextlib.nullcontext)


def _tell_complete(study: optuna.Study, flight: _Flight, outcome: TrialOutcome, options: RunOptions,
                   names: list[str]) -> None:
    trial = flight.trial
    with _grouped_writes(study)():  # a trial's results, report and state: all in one transaction, or none
        _note_attempts(flight)
        for key, value in outcome.attrs.items():
            trial.set_user_attr(key, value)
        _upload_report(trial, outcome, options, names)  # artifacts attach only to a trial still running
        study.tell(trial, outcome.values)


def _upload_report(trial: optuna.Trial, outcome: TrialOutcome, options: RunOptions, names: list[str]) -> None:
    """A per-trial JSON report as an Optuna artifact (optuna-dashboard shows it beside the trial)."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    options.artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(options.artifact_dir))
    payload = {"trial": trial.number, "params": trial.params, "values": dict(zip(names, outcome.values)),
               **outcome.attrs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-report.json"
        path.write_text(json.dumps(payload, indent=1, default=lambda o: None if isinstance(o, float)
                                   and not math.isfinite(o) else str(o)))
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                        mimetype="application/json")
