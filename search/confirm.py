"""``fairfront confirm``: train the front's trials again on fresh seeds and score them on the test split.

A trade-off that holds for one seed may not hold for another. ``confirm`` makes each chosen
trial's compressed model again from its stored parameters with ``K`` seeds the study never
trained with (replicate indices from :data:`~fairfront.search.studyfile.MAX_REPLICATES` on, see
:func:`~fairfront.search.studyfile.replicate_seed`), on the study's executor (Ray tasks), and
stores each objective's test-split measure per seed, with the mean and a Student-t 95% interval
across the seeds. The chosen trials are the front's, or with ``--top N`` the N front trials of
largest crowding distance (the extremes of each objective first, then the most isolated ones).

Everything is stored in the study's user attributes (a finished Optuna trial takes no new
attributes), written by the one process that holds the study's lease:

* ``confirm.<trial>.seed.<seed>``: ``{objective: test value}``, written as soon as that run finished,
  so a killed ``confirm`` loses nothing finished and a rerun runs only what is missing;
* ``confirm.<trial>.test.<objective>.mean`` / ``.ci_low`` / ``.ci_high`` / ``.n``: flat numbers;
* ``confirm.<trial>``: the same as one record, ``{"seeds": [...], "test": {objective: {"values",
  "mean", "ci_low", "ci_high", "n"}}}``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from fairfront.errors import ConfigError
from fairfront.objectives.measures.report import TrialReport
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search import driver
from fairfront.search.attrs import CONFIRM_PREFIX
from fairfront.search.executor import Executor, Ticket, TrialError
from fairfront.search.export import stored_study_file
from fairfront.search.front_data import Objective, objectives, split_value
from fairfront.search.lease import DriverLease
from fairfront.search.options import RunOptions
from fairfront.search.progress import Progress, show_finished
from fairfront.search.replicates import t_interval
from fairfront.search.report import format_value, front_trials
from fairfront.search.retry import Attempts, Retry, RetryPolicy
from fairfront.search.studyfile import MAX_REPLICATES, StudyFile, replicate_seed

__all__ = ["confirm_study", "confirm_seeds", "chosen_trials", "crowding_distances", "summary", "stored_results",
           "ConfirmFailed", "PREFIX"]

PREFIX = CONFIRM_PREFIX


def confirm_seeds(sf: StudyFile, number: int, k: int) -> list[int]:
    """The ``k`` confirmation seeds of trial ``number``: none is a seed any trial of the study trained with."""
    return [replicate_seed(sf.study.seed, number, MAX_REPLICATES + j) for j in range(k)]


def crowding_distances(values: list[list[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of a front (infinite at each objective's extremes)."""
    n = len(values)
    distance = [0.0] * n
    for i in range(len(values[0]) if values else 0):
        order = sorted(range(n), key=lambda j: values[j][i])
        span = values[order[-1]][i] - values[order[0]][i]
        distance[order[0]] = distance[order[-1]] = float("inf")
        for a, b, c in zip(order, order[1:], order[2:]):
            if span > 0:
                distance[b] += (values[c][i] - values[a][i]) / span
    return distance


def chosen_trials(study: optuna.Study, top: int | None) -> list[FrozenTrial]:
    """The front's trials, or the ``top`` of largest crowding distance (ties: lower trial number first)."""
    front = front_trials(study)
    if not front:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        raise ConfigError("study", study.study_name, f"a study with COMPLETE trials (it has {len(complete)} COMPLETE, "
                          f"{len(study.trials)} in all)")
    if top is None or top >= len(front):
        return front
    distance = crowding_distances([list(t.values) for t in front])
    ranked = sorted(range(len(front)), key=lambda i: (-distance[i], front[i].number))
    return sorted((front[i] for i in ranked[:top]), key=lambda t: t.number)


def summary(results: dict[int, dict[str, float | None]], objs: list[Objective]) -> dict[str, Any]:
    """The nested record of one trial's confirmation: per objective, values by seed, mean, t-based 95% CI, n."""
    seeds = sorted(results)
    test: dict[str, Any] = {}
    for o in objs:
        values = [v for s in seeds if (v := results[s].get(o.name)) is not None]
        if not values:
            continue
        mean, low, high = t_interval(values)
        test[o.name] = {"values": values, "mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
    return {"seeds": seeds, "test": test}


def stored_results(study: optuna.Study, number: int) -> dict[int, dict[str, float | None]]:
    """The finished confirmation runs of trial ``number``, by seed."""
    head = f"{PREFIX}{number}.seed."
    return {int(k[len(head):]): v for k, v in study.user_attrs.items() if k.startswith(head)}


@dataclass
class _Job:
    trial: FrozenTrial
    spec: TrialSpec
    attempts: Attempts = field(default_factory=Attempts)
    submitted: float | None = None  # when its first attempt went out (monotonic): its duration counts from there


@dataclass
class _Confirmation:
    """One ``confirm`` run: the study, what runs the jobs, and how results are stored."""

    study: optuna.Study
    sf: StudyFile
    objs: list[Objective]
    options: RunOptions
    executor: Executor | None = None
    in_flight: dict[Ticket, _Job] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    progress: Progress = field(default_factory=lambda: Progress(0, []))

    def jobs(self, trials: list[FrozenTrial], k: int) -> list[_Job]:
        """One job per (trial, seed) whose result the study does not hold yet."""
        jobs = []
        for trial in trials:
            done = stored_results(self.study, trial.number)
            config = self.sf.space.sample(optuna.trial.FixedTrial(trial.params))
            spec = self.sf.trial_spec(config, trial.number)
            batch = trial.user_attrs.get("student_batch_size")
            if isinstance(batch, int) and batch != spec.student.batch_size:  # halved after a CUDA out-of-memory
                spec = dataclasses.replace(spec, student=dataclasses.replace(spec.student, batch_size=batch))
            jobs += [_Job(trial, dataclasses.replace(spec, seed=seed))
                     for seed in confirm_seeds(self.sf, trial.number, k) if seed not in done]
        return jobs

    def run(self, jobs: list[_Job], lease: Any) -> None:
        """Run every job on the executor, storing each result as it arrives; a failed job is retried as a trial is."""
        assert self.executor is not None
        ex = self.sf.execution
        prepared_handle, fn_handle = self.executor.put(self.options.prepared), self.executor.put(self.options.trial_fn)
        pending, retry = deque(jobs), RetryPolicy(max_retries=ex.max_retries)
        self.progress = Progress(len(jobs), [], parallel=ex.parallel, unit="run", failures_replaced=False)
        try:
            while pending or self.in_flight:
                lease.heartbeat()
                limit = min(ex.parallel, self.executor.capacity(cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial))
                self.progress.parallel = max(1, limit)
                while pending and len(self.in_flight) < limit:
                    self._submit(pending.popleft(), prepared_handle, fn_handle)
                if not self.in_flight:
                    time.sleep(0.5)  # nothing fits a run yet
                    continue
                for ticket, result in self.executor.wait(list(self.in_flight), timeout=1.0):
                    job = self.in_flight.pop(ticket)
                    again = self._handle(job, result, retry)
                    if again is not None:
                        self._submit(again, prepared_handle, fn_handle)
        finally:
            for ticket in self.in_flight:
                self.executor.cancel(ticket)

    def _submit(self, job: _Job, prepared: Any, fn: Any) -> None:
        assert self.executor is not None
        ex = self.sf.execution
        ticket = self.executor.submit(prepared, fn, job.spec, cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial,
                                      number=job.trial.number, attempt=job.attempts.count)
        job.submitted = job.submitted if job.submitted is not None else time.monotonic()
        self.in_flight[ticket] = job

    def _handle(self, job: _Job, result: TrialOutcome | TrialError, retry: RetryPolicy) -> _Job | None:
        """Store a result; after a failure, the job to run again (None when it failed for good)."""
        where = f"trial {job.trial.number}, seed {job.spec.seed}"
        seconds = time.monotonic() - (job.submitted or time.monotonic())
        if isinstance(result, TrialOutcome):
            self._store(job, result)
            values = stored_results(self.study, job.trial.number)[job.spec.seed]
            self.progress.add(seconds, [])
            self._show(f"confirm {where} (test split) in {seconds:.0f}s: "
                       + "  ".join(f"{k} {format_value(k, v)}" for k, v in values.items() if v is not None))
            return None
        decision = retry.after_failure(result, job.attempts, job.spec)
        if isinstance(decision, Retry):
            self.options.log(f"confirm {where}: {decision.message}")
            job.attempts.count += 1
            return dataclasses.replace(job, spec=decision.spec)
        self.failed.append(f"{where}: {decision.reason}")
        self.progress.add(seconds, None)
        self._show(f"confirm {where} FAIL: {decision.reason}")
        return None

    def _show(self, line: str) -> None:
        show_finished(line, self.progress, self.options.log, self.options.live)

    def _store(self, job: _Job, outcome: TrialOutcome) -> None:
        """The run's test values first (what a rerun skips on), then the trial's summary recomputed from all stored."""
        report = outcome.report or TrialReport.from_attrs(outcome.attrs)
        number = job.trial.number
        self.study.set_user_attr(f"{PREFIX}{number}.seed.{job.spec.seed}",
                                 {o.name: split_value(report, o, "test") for o in self.objs})
        record = summary(stored_results(self.study, number), self.objs)
        for name, stats in record["test"].items():
            for key in ("mean", "ci_low", "ci_high", "n"):
                self.study.set_user_attr(f"{PREFIX}{number}.test.{name}.{key}", stats[key])
        self.study.set_user_attr(f"{PREFIX}{number}", record)


def confirm_study(name: str, options: RunOptions, *, seeds: int, top: int | None = None) -> dict[int, dict[str, Any]]:
    """Confirm study ``name``'s front on ``seeds`` fresh seeds; returns each chosen trial's record.

    Raises:
        ConfigError: an unknown study, one without a study file or COMPLETE trials, or ``seeds``/``top`` < 1
            (before anything is written).
    """
    for key, value in (("--seeds", seeds), ("--top", top)):
        if value is not None and value < 1:
            raise ConfigError(key, value, "a whole number >= 1")
    study = driver.load_study(name, options.storage)
    sf = stored_study_file(study)
    trials = chosen_trials(study, top)
    work = _Confirmation(study, sf, objectives(study), options)
    jobs = work.jobs(trials, seeds)
    options.log(f"confirming {len(trials)} trial(s) of {name!r} on {seeds} seed(s): "
                f"{len(trials) * seeds - len(jobs)} result(s) stored already, {len(jobs)} to run")
    if jobs:
        _run_jobs(work, jobs, sf)
    if work.failed:
        raise ConfirmFailed(f"{len(work.failed)} confirmation run(s) failed (run confirm again to retry them); "
                            f"first: {work.failed[0]}")
    return {t.number: study.user_attrs.get(f"{PREFIX}{t.number}", {}) for t in trials}


def _run_jobs(work: _Confirmation, jobs: list[_Job], sf: StudyFile) -> None:
    options = work.options
    executor = driver.run_executor(options)
    executor.start(sf.execution, options.log)
    options.prepared = options.prepared or driver.cached_or_prepared(sf, options, executor)
    work.executor = executor
    lease = DriverLease(work.study, command="confirm", ray_address=driver.resolved_ray_address(options),
                        stale_after_s=options.lease_stale_s)
    lease.acquire()
    try:
        work.run(jobs, lease)
    finally:
        lease.release()


class ConfirmFailed(RuntimeError):
    """Some confirmation runs failed for good (the others were stored)."""
