"""The driver: one process owns the study and runs the ask/tell loop.

Only the driver writes to storage, so SQLite stays safe with workers on many nodes. The loop:
ask a trial, sample its compression setting from the spaces, submit it to Ray, and tell the study
each result as it arrives (COMPLETE with its values, or FAIL with the reason in the trial's user
attributes). It stops when the study holds the requested number of COMPLETE trials.

Optuna's heartbeat does not cover ask/tell, so recovery is explicit: a trial left RUNNING by a
driver that died (even by SIGKILL) is marked FAIL with the reason "interrupted" and its
parameters are enqueued again, so ``resume`` re-runs exactly the interrupted work. Ctrl-C and
SIGTERM do the same for in-flight trials before the driver exits.
"""

from __future__ import annotations

import json
import math
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from optuna.trial import TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.prepare import Prepared, load_cached, store
from fairfront.objectives.trial import TrialOutcome
from fairfront.search import executor, report
from fairfront.search.samplers import build_sampler
from fairfront.search.studyfile import StudyFile, parse_study_text

__all__ = ["RunOptions", "run_study", "resume_study", "load_study", "recover_interrupted", "STUDY_FILE_ATTR"]

STUDY_FILE_ATTR = "fairfront.study_file"
N_TRIALS_ATTR = "fairfront.n_trials"
REASON_ATTR = "fail_reason"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class RunOptions:
    storage: str = "sqlite:///studies/fairfront.db"
    n_trials: int | None = None
    ray_address: str | None = None
    cache_dir: Path = Path("studies/cache")
    artifact_dir: Path = Path("studies/artifacts")
    log: Callable[[str], None] = print


class TooManyFailures(RuntimeError):
    """More trials failed in one run than ``max_failed_trials`` allows."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the driver; in-flight trials were recorded for resume."""


def _storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite")
                                      else None)


def load_study(name: str, storage_url: str) -> optuna.Study:
    """Open an existing study, or fail with one line listing the studies that exist."""
    storage = _storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        raise ConfigError("study", name, "a study in " + storage_url + " (found: " + (", ".join(names) or "none") + ")")
    return optuna.load_study(study_name=name, storage=storage)


def run_study(sf: StudyFile, options: RunOptions) -> optuna.Study:
    """Create the study named in ``sf`` and run it to ``n_trials`` COMPLETE trials."""
    if options.n_trials is not None:
        sf = sf.with_trials(options.n_trials)
    storage = _storage(options.storage)
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if sf.study.name in existing:
        raise ConfigError("study.name", sf.study.name, f"a new study name (it exists in {options.storage}; "
                          f"continue it with: fairfront resume {sf.study.name})")
    log = options.log
    executor.start_ray(options.ray_address, log=log)
    prepared = _prepare(sf, options)  # before the study exists: a model that fails to load writes nothing
    study = optuna.create_study(study_name=sf.study.name, storage=storage, directions=sf.objectives.directions,
                                sampler=build_sampler(sf.study.sampler, seed=sf.study.seed,
                                                      population_size=sf.study.population_size,
                                                      n_trials=sf.study.n_trials))
    study.set_metric_names(sf.objectives.names)
    study.set_user_attr(STUDY_FILE_ATTR, sf.text)
    study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
    study.set_user_attr("fairfront.data", prepared.data_name)
    study.set_user_attr("fairfront.prepared", prepared.fingerprint)
    log(f"study {sf.study.name!r} created in {options.storage}")
    return _loop(study, sf, prepared, options)


def resume_study(name: str, options: RunOptions) -> optuna.Study:
    """Continue a study after an interruption, from what its storage holds."""
    study = load_study(name, options.storage)
    text = study.user_attrs.get(STUDY_FILE_ATTR)
    if text is None:
        raise ConfigError("study", name, "a study created by fairfront (it has no stored study file)")
    sf = parse_study_text(text, base_dir=Path.cwd())
    sf = sf.with_trials(options.n_trials or study.user_attrs.get(N_TRIALS_ATTR, sf.study.n_trials))
    if options.n_trials is not None:
        study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
    n_recovered = recover_interrupted(study)
    log = options.log
    if n_recovered:
        log(f"recovered {n_recovered} interrupted trial(s): marked FAIL and enqueued again")
    study.sampler = build_sampler(sf.study.sampler, seed=sf.study.seed + len(study.trials),
                                  population_size=sf.study.population_size, n_trials=sf.study.n_trials)
    executor.start_ray(options.ray_address, log=log)
    prepared = _prepare(sf, options)
    return _loop(study, sf, prepared, options)


def recover_interrupted(study: optuna.Study, reason: str = "interrupted: the driver stopped before the trial "
                        "finished; its parameters were enqueued again") -> int:
    """Mark RUNNING trials FAIL and enqueue their parameters again; returns how many."""
    storage = study._storage
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, REASON_ATTR, reason)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"fairfront.retry_of": t.number})
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


def _loop(study: optuna.Study, sf: StudyFile, prepared: Prepared, options: RunOptions) -> optuna.Study:
    log = options.log
    target = sf.study.n_trials
    ex = sf.execution
    max_failed = ex.max_failed_trials if ex.max_failed_trials is not None else max(3, target)
    prepared_ref = ray.put(prepared)
    in_flight: dict = {}  # ray ref -> (trial, started)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    failed_here = 0
    stop = {"signal": None}

    def on_signal(signum, frame):  # noqa: ARG001
        if stop["signal"] is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        stop["signal"] = signal.Signals(signum).name

    def check_stop() -> None:
        if stop["signal"] is not None:
            raise Interrupted(stop["signal"])

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    log(f"running {study.study_name!r}: {complete}/{target} complete, up to {ex.parallel} in parallel "
        f"({ex.cpus_per_trial:g} CPU, {ex.gpus_per_trial:g} GPU per trial)")
    try:
        while True:
            check_stop()
            while len(in_flight) < ex.parallel and complete + len(in_flight) < target:
                trial = study.ask()
                config = sf.space.sample(trial)
                spec = sf.trial_spec(config, trial.number)
                ref = executor.submit_trial(prepared_ref, spec, cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial,
                                            max_retries=ex.max_retries)
                in_flight[ref] = (trial, time.time())
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in done:
                trial, started = in_flight.pop(ref)
                outcome = _fetch(ref)
                if isinstance(outcome, TrialOutcome):
                    _tell_complete(study, trial, outcome, options)
                    complete += 1
                    front = len(study.best_trials)
                    log(f"trial {trial.number} COMPLETE in {time.time() - started:.0f}s: "
                        + report.format_values(sf.objectives.names, outcome.values)
                        + f" | {complete}/{target} complete, front {front}")
                else:
                    trial.set_user_attr(REASON_ATTR, outcome.reason)
                    trial.set_user_attr("traceback", outcome.traceback[-4000:])
                    study.tell(trial, state=TrialState.FAIL)
                    failed_here += 1
                    log(f"trial {trial.number} FAIL: {outcome.reason}")
                    if failed_here > max_failed:
                        raise TooManyFailures(f"{failed_here} trials failed in this run (max_failed_trials = "
                                           f"{max_failed}); stopping. Last reason: {outcome.reason}")
    except BaseException as err:
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
    return study


def _fetch(ref) -> TrialOutcome | executor.TrialError:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # worker died after its retries, task cancelled, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return executor.TrialError(f"{type(err).__name__}: {first}", str(err))


def _tell_complete(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, options: RunOptions) -> None:
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    _upload_report(study, trial, outcome, options)  # artifacts attach only to a trial still running
    study.tell(trial, outcome.values)


def _upload_report(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, options: RunOptions) -> None:
    """A per-trial JSON report as an Optuna artifact (optuna-dashboard shows it beside the trial)."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    options.artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(options.artifact_dir))
    payload = {"trial": trial.number, "params": trial.params,
               "values": dict(zip(study.metric_names or [], outcome.values)), **outcome.attrs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-report.json"
        path.write_text(json.dumps(payload, indent=1, default=lambda o: None if isinstance(o, float)
                                   and not math.isfinite(o) else str(o)))
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                        mimetype="application/json")
