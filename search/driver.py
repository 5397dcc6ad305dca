"""The driver: one process owns the study and runs the ask/tell loop.

Only the driver writes to storage, so SQLite stays safe with workers on many nodes. It creates
(``run``) or loads (``resume``) the study, takes the study's lease, starts the executor that runs
the trials (Ray tasks by default, :mod:`fairfront.search.ray_executor`), loads or computes the
prepared study, scores the dense teacher once as the study's reference (study attribute
``fairfront.teacher``, :mod:`fairfront.objectives.measures.dense_reference`; ``[constraints]``
compare trials with it), and hands over to the ask/tell loop (:class:`~fairfront.search.scheduler.Scheduler`):
ask a trial, sample its compression setting from the spaces, submit it, and tell the study each
result as it arrives. It stops when the study holds the requested number of COMPLETE trials.

How many trials are in flight follows the cluster: at most ``[execution] parallel``, and at most
as many as the alive nodes fit (re-counted every few seconds, so a node that joins mid-study is
used). While no node fits a trial the driver waits for one to join.

One driver per study: the driver holds a lease with a heartbeat in the study's system attributes
(:mod:`fairfront.search.lease`); a second driver refuses, naming the first, unless the first is
dead, in which case it takes over.

Failures never crash the study. A trial that raises, meets a NaN or infinite loss, or runs out
of CUDA memory twice (the second attempt with half the batch size) fails with its reason; a trial
whose worker process or node died is run again up to ``max_retries`` times; a trial running
longer than ``trial_timeout_s`` is cancelled (:mod:`fairfront.search.retry`). Only more than
``max_failed_trials`` failures in one run stop the driver (exit status 1).

The driver's study runs over :class:`~fairfront.search.driver_storage.DriverStorage`: every trial
read is served from an exact in-memory mirror, which only the lease makes safe (one writer per
study), and a trial costs three transactions: its creation, its sampled parameters (committed
before it is submitted), and its result (attributes, report artifact, values and state together).

Every write of the driver checks, in its own transaction, that it still holds the lease
(fencing): a driver stopped past the lease's stale age and taken over writes nothing when it
wakes, and stops with ``LeaseLost`` (exit status 3). A full disk, an I/O error or a database that
refuses writes ends the run with one :class:`~fairfront.search.storage_faults.StorageFault` line;
what was committed is kept, and so is a deleted SQLite database file noticed (results written
into it are gone).

Trials a driver left RUNNING (even when it was killed with SIGKILL) are marked FAIL and their
parameters enqueued again when the next driver takes the study over
(:func:`~fairfront.search.recovery.recover_interrupted`), so ``resume`` re-runs exactly the
interrupted work. Ctrl-C and SIGTERM record the results that already arrived, cancel the
in-flight trials and recover them the same way before the driver exits.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from fairfront import jsonsafe
from fairfront.errors import ConfigError, DataError
from fairfront.objectives.training.prepare import Prepared, cached, store
from fairfront.objectives.training.trial import TrialOutcome
from fairfront.search import faults
from fairfront.search.attrs import (
    CLASSES_ATTR,
    N_TRIALS_ATTR,
    REASON_ATTR,
    RETRY_OF_ATTR,
    STUDY_FILE_ATTR,
    TEACHER_ATTR,
)
from fairfront.search.completion import complete_text, completed
from fairfront.search.constraints import check_reference, constraint_function
from fairfront.search.driver_storage import DriverStorage
from fairfront.search.executor import Executor
from fairfront.search.hints import resume_command
from fairfront.search.lease import DriverLease, LeaseHeld, LeaseLost, check_free, read_lease
from fairfront.search.notes import write_study_note
from fairfront.search.options import LoopStats, RunOptions
from fairfront.search.ray_executor import RayExecutor
from fairfront.search.recovery import recover_interrupted
from fairfront.search.samplers import build_sampler
from fairfront.search.scheduler import Interrupted, Scheduler, TooManyFailures
from fairfront.search.storage import load_study, open_storage, study_names
from fairfront.search.storage_faults import StorageFault, storage_fault
from fairfront.search.studyfile import StudyFile, parse_study_text

__all__ = ["RunOptions", "LoopStats", "run_study", "resume_study", "load_study", "recover_interrupted",
           "TooManyFailures", "Interrupted", "StorageFault", "STUDY_FILE_ATTR", "N_TRIALS_ATTR", "REASON_ATTR",
           "RETRY_OF_ATTR", "resolved_ray_address", "run_executor", "cached_or_prepared"]

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def resolved_ray_address(options: RunOptions) -> str | None:
    """The Ray cluster the options or ``RAY_ADDRESS`` name, or None for a local one."""
    return options.ray_address or os.environ.get("RAY_ADDRESS") or None


def run_executor(options: RunOptions) -> Executor:
    """The run's executor (Ray unless the options name one), with the ``FAIRFRONT_FAULTS`` testing hook if set."""
    executor = options.executor if options.executor is not None else RayExecutor(options.ray_address)
    return faults.inject_from_env(executor, options.trial_fn)


@contextmanager
def _storage_faults(options: RunOptions, study_name: str) -> Iterator[None]:
    """A full disk, an I/O error or a read-only database leaves as one :class:`StorageFault` line."""
    try:
        yield
    except (ConfigError, DataError, LeaseHeld, LeaseLost, Interrupted, TooManyFailures, StorageFault):
        raise
    except Exception as err:
        fault = storage_fault(err, url=options.storage, resume=resume_command(study_name, options))
        if fault is None:
            raise
        raise fault from err


def run_study(sf: StudyFile, options: RunOptions) -> optuna.Study:
    """Create the study named in ``sf`` and run it to ``n_trials`` COMPLETE trials.

    Raises:
        StorageFault: the storage is full, failing or read-only (one line; what was committed is kept).
        LeaseLost: another driver took the study over while this one was stopped; nothing was written.
    """
    with _storage_faults(options, sf.study.name):
        return _run_study(sf, options)


def _run_study(sf: StudyFile, options: RunOptions) -> optuna.Study:
    if options.n_trials is not None:
        sf = sf.with_trials(options.n_trials)
    storage = open_storage(options.storage)
    log = options.log
    _check_new(sf, storage, options)
    executor = run_executor(options)
    executor.start(sf.execution, log)
    # before the study exists: a bad model writes nothing
    prepared = options.prepared or cached_or_prepared(sf, options, executor)
    teacher = _teacher_record(sf, prepared, options)
    check_reference(sf, teacher)
    try:
        study = optuna.create_study(study_name=sf.study.name,
                                    storage=DriverStorage(storage) if options.mirror else storage,
                                    directions=sf.objectives.directions,
                                    sampler=build_sampler(sf.study.sampler, seed=sf.study.seed,
                                                          population_size=sf.study.population_size,
                                                          n_trials=sf.study.n_trials))
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError("study.name", sf.study.name,
                          "a new study name (another driver created it meanwhile)") from None
    study.set_user_attr(STUDY_FILE_ATTR, sf.text)  # first: from here on the study can be resumed
    study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
    study.set_metric_names(sf.objectives.names)
    write_study_note(study, sf)
    study.set_user_attr("fairfront.data", prepared.data_name)
    study.set_user_attr("fairfront.prepared", prepared.fingerprint)
    positive = prepared.positive_index
    study.set_user_attr(CLASSES_ATTR, {"names": list(prepared.label_names),
                                       "positive": None if positive is None else prepared.label_names[positive]})
    if teacher is not None:
        study.set_user_attr(TEACHER_ATTR, teacher)
    lease = DriverLease(study, command="run", ray_address=resolved_ray_address(options),
                        stale_after_s=options.lease_stale_s)
    lease.acquire()
    _hold(study, lease)
    log(f"study {sf.study.name!r} created in {options.storage}")
    try:
        return _schedule(study, sf, executor, prepared, options, lease)
    finally:
        _release(lease)


def _check_new(sf: StudyFile, storage: optuna.storages.BaseStorage, options: RunOptions) -> None:
    """Refuse a study name that exists, unless it is the empty study a killed ``run`` left behind."""
    if sf.study.name not in study_names(storage):
        return
    old = optuna.load_study(study_name=sf.study.name, storage=storage)
    if STUDY_FILE_ATTR not in old.user_attrs and not old.get_trials(deepcopy=False):
        # a driver killed between creating the study and storing its study file: nothing to keep
        options.log(f"removing the empty study {sf.study.name!r} an interrupted run left behind")
        optuna.delete_study(study_name=sf.study.name, storage=storage)
        return
    holder = read_lease(old)
    running = (f"; a driver is running it now ({holder.describe()})" if holder is not None
               and holder.stale_reason(options.lease_stale_s) is None else "")
    raise ConfigError("study.name", sf.study.name, f"a new study name (it exists in {options.storage}"
                      f"{running}; continue it with: {resume_command(sf.study.name, options)})")


def resume_study(name: str, options: RunOptions) -> optuna.Study:
    """Continue a study after an interruption, from what its storage holds (raises as :func:`run_study`)."""
    with _storage_faults(options, name):
        return _resume_study(name, options)


def _resume_study(name: str, options: RunOptions) -> optuna.Study:
    study = load_study(name, options.storage, driver=options.mirror)
    text = study.user_attrs.get(STUDY_FILE_ATTR)
    if text is None:
        raise ConfigError("study", name, "a study created by fairfront (it has no stored study file)")
    sf = parse_study_text(text, base_dir=Path.cwd())
    sf = sf.with_trials(options.n_trials or study.user_attrs.get(N_TRIALS_ATTR, sf.study.n_trials))
    log = options.log
    done = completed(study, sf.study.n_trials)
    if done is not None:  # nothing to run: no executor, no prepared study
        log(complete_text(name, *done, storage=options.storage, artifact_dir=options.artifact_dir,
                          cache_dir=options.cache_dir))
        return study
    check_free(study, stale_after_s=options.lease_stale_s)  # refuse before the costly start
    executor = run_executor(options)
    executor.start(sf.execution, log)
    prepared = options.prepared or cached_or_prepared(sf, options, executor)
    lease = DriverLease(study, command="resume", ray_address=resolved_ray_address(options),
                        stale_after_s=options.lease_stale_s)
    previous = lease.acquire()
    _hold(study, lease)
    try:
        if previous is not None:
            log(f"took the study over from a driver that is gone ({previous.stale_reason(options.lease_stale_s)}): "
                f"{previous.describe()}")
        if options.n_trials is not None:
            study.set_user_attr(N_TRIALS_ATTR, sf.study.n_trials)
        if not study.metric_names:
            study.set_metric_names(sf.objectives.names)
        if TEACHER_ATTR not in study.user_attrs:  # a study made before the teacher was scored
            teacher = _teacher_record(sf, prepared, options)
            if teacher is not None:
                study.set_user_attr(TEACHER_ATTR, teacher)
        check_reference(sf, study.user_attrs.get(TEACHER_ATTR))
        write_study_note(study, sf)  # a study written before notes gets one
        n_recovered = recover_interrupted(study)
        if n_recovered:
            log(f"recovered {n_recovered} interrupted trial(s): marked FAIL and enqueued again")
        study.sampler = build_sampler(sf.study.sampler, seed=sf.study.seed + len(study.trials),
                                      population_size=sf.study.population_size, n_trials=sf.study.n_trials)
        return _schedule(study, sf, executor, prepared, options, lease)
    finally:
        _release(lease)


def _schedule(study: optuna.Study, sf: StudyFile, executor: Executor, prepared: Prepared, options: RunOptions,
              lease: DriverLease) -> optuna.Study:
    def write_report(trial: optuna.Trial, outcome: TrialOutcome, names: list[str]) -> None:
        _upload_report(trial, outcome, options, names)

    constraints = constraint_function(sf, study.user_attrs.get(TEACHER_ATTR))
    return Scheduler(study, sf, executor, options, lease, prepared=prepared, write_report=write_report,
                     constraints=constraints).run()


def _teacher_record(sf: StudyFile, prepared: Prepared, options: RunOptions) -> dict | None:
    """The dense teacher scored as a trial is (``TEACHER_ATTR``); None for a prepared study without a model."""
    from fairfront.objectives.measures.dense_reference import has_dense_model, score_dense

    if not has_dense_model(prepared):
        return None
    from fairfront.spaces.space import CompressionConfig

    # the trials' group and bootstrap settings; the study's own seed for the resamples
    scoring = {**sf.trial_spec(CompressionConfig(), 0).scoring_options(), "seed": sf.study.seed}
    report = score_dense(prepared, scoring=scoring)
    values = ", ".join(f"{k} {v:.4g}" for k, v in (report.validation.accuracy or {}).items()
                       if isinstance(v, float)) if "validation" in report.splits else ""
    options.log("dense teacher scored as the reference" + (f" (validation {values})" if values else ""))
    return report.to_record()


def _hold(study: optuna.Study, lease: DriverLease) -> None:
    """Under the lease: every write of the driver's storage checks it (fencing), and the mirror is re-read."""
    if isinstance(study._storage, DriverStorage):
        study._storage.fence(study._study_id, lease.info.id, study.study_name)
        study._storage.refresh(study._study_id)


def _release(lease: DriverLease) -> None:
    try:
        lease.release()
    except Exception:  # noqa: BLE001 - the storage is gone; the lease goes stale on its own
        pass


def cached_or_prepared(sf: StudyFile, options: RunOptions, executor: Executor) -> Prepared:
    """The study's prepared data and teacher from the cache, or prepared by the executor (and cached)."""
    spec = sf.prepare_spec
    folder = options.cache_dir / spec.fingerprint()
    found = cached(folder, log=options.log)  # None when absent, or corrupt (then prepared again)
    if found is not None:
        return found
    prepared = executor.prepare(spec, sf.execution, options.log)
    store(prepared, folder)
    options.log(f"prepared study cached in {folder}")
    return prepared


def _upload_report(trial: optuna.Trial, outcome: TrialOutcome, options: RunOptions, names: list[str]) -> None:
    """A per-trial JSON report as an Optuna artifact (optuna-dashboard shows it beside the trial)."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    options.artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(options.artifact_dir))
    payload = {"trial": trial.number, "params": trial.params, "values": dict(zip(names, outcome.values)),
               **outcome.attrs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-report.json"
        path.write_text(jsonsafe.dumps(payload, indent=1))
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                        mimetype="application/json")
