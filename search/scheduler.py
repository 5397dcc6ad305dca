"""The ask/tell loop: keep the executor busy until the study holds its target of COMPLETE trials.

Each turn of the loop refreshes the lease, asks as many new trials as the executor fits (at most
``[execution] parallel``), samples each one's compression setting from the spaces and submits it,
then waits up to a second for results and tells the study each one as it arrives: COMPLETE with
its values, attributes and report, or FAIL with the reason in the trial's user attributes. A
failed attempt goes to the :class:`~fairfront.search.retry.RetryPolicy` (run again, or fail).

With ``[study] replicates = k`` a trial is ``k`` attempts with their own seeds, submitted together
as separate tasks (:mod:`fairfront.search.replicates`); each is retried on its own, the trial is
told once all ``k`` arrived (the mean values), and it fails when one of them fails for good (the
others are cancelled). ``[execution] parallel`` then caps the trials in flight, ``k`` tasks each.
A replicate that finishes before its trial is kept on the trial at once, so ``resume`` after an
interruption runs only the replicates still missing.

Failures never crash the study; only more than ``max_failed_trials`` of them in one run stop it
(:class:`TooManyFailures`). Ctrl-C and SIGTERM record the results that already arrived, cancel
the in-flight trials and recover them for ``resume`` before the loop stops (:class:`Interrupted`);
a second Ctrl-C stops at once. A driver whose lease was taken over cancels its trials and writes
nothing more: every write checks the lease in its own transaction (:mod:`fairfront.search.lease`,
fencing), so whichever write comes first after a takeover — a result, a timeout, the recording
of in-flight trials after SIGTERM — changes nothing and stops the loop with ``LeaseLost``. When the
storage itself fails (disk full, I/O error, read-only), the in-flight trials are recorded for
``resume`` if the storage still takes that write; otherwise they stay RUNNING and ``resume``
recovers them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import optuna
from optuna.trial import TrialState

from fairfront.objectives.training.prepare import Prepared
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search import report
from fairfront.search.attrs import FEASIBLE_ATTR, REASON_ATTR, store_record
from fairfront.search.capacity import CapacityWatch
from fairfront.search.constraints import ConstraintFunction
from fairfront.search.executor import Executor, Ticket, TrialError
from fairfront.search.hints import resume_command
from fairfront.search.lease import DriverLease, LeaseLost
from fairfront.search.options import RunOptions
from fairfront.search.progress import Progress, show_finished
from fairfront.search.recovery import recover_interrupted
from fairfront.search.replicates import ReplicateGroup, keep_finished
from fairfront.search.retry import Attempts, Retry, RetryPolicy
from fairfront.search.storage import grouped_writes
from fairfront.search.storage_faults import storage_fault
from fairfront.search.studyfile import StudyFile

__all__ = ["Scheduler", "Flight", "TooManyFailures", "Interrupted", "ReportWriter"]

ReportWriter = Callable[[optuna.Trial, TrialOutcome, list[str]], None]
"""``write(trial, outcome, objective_names)``: stores a COMPLETE trial's report, before it is told."""


class TooManyFailures(RuntimeError):
    """More trials failed in one run than ``max_failed_trials`` allows."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the driver; in-flight trials were recorded for resume."""


@dataclass
class Flight:
    """One replicate of a trial in flight: what it runs, its attempts so far and when they started.

    ``group`` holds the trial and its replicates' results; an unreplicated trial is one flight.
    """

    group: ReplicateGroup
    replicate: int
    spec: TrialSpec
    attempts: Attempts = field(default_factory=Attempts)
    submitted: float = 0.0
    first_submitted: float = 0.0

    @property
    def trial(self) -> optuna.Trial:
        return self.group.trial


class Scheduler:
    """Runs ``study`` to ``sf``'s target of COMPLETE trials on ``executor``, under ``lease``.

    Args:
        study: the study, created or loaded by the driver.
        sf: the study file (space, trial settings, ``[execution]``).
        executor: what runs the trials, already started.
        options: the run's options (``log``, ``trial_fn``, ``capacity_refresh_s``; ``stats`` is filled in).
        lease: the driver's lease on the study, refreshed every turn.
        prepared: the prepared study every trial reads.
        write_report: stores each COMPLETE trial's report, in the transaction that tells it.
        constraints: the ``[constraints]`` values of a COMPLETE trial's objective values, stored
            with the trial (``Trial.set_constraint``) before it is told, so the samplers see them.
    """

    def __init__(self, study: optuna.Study, sf: StudyFile, executor: Executor, options: RunOptions,
                 lease: DriverLease, *, prepared: Prepared, write_report: ReportWriter,
                 constraints: ConstraintFunction | None = None):
        self.study, self.sf, self.executor, self.lease = study, sf, executor, lease
        self.constraints = constraints
        self.prepared, self.trial_fn, self.write_report = prepared, options.trial_fn, write_report
        self.log, self.stats, self.live = options.log, options.stats, options.live
        self.resume_hint = resume_command(study.study_name, options)
        self.ex = ex = sf.execution
        self.target = sf.study.n_trials
        self.replicates = sf.study.replicates
        self.max_failed = ex.max_failed_trials if ex.max_failed_trials is not None else max(3, self.target)
        self.retry = RetryPolicy(max_retries=ex.max_retries, timeout_s=ex.trial_timeout_s)
        self.capacity = CapacityWatch(executor, ex, options.capacity_refresh_s, options.log)
        self.in_flight: dict[Ticket, Flight] = {}
        self.complete = 0  # counted from the study when the run starts
        self.maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
        self.progress = Progress(self.target, self.maximize)
        self.failed_here = 0
        self._signal: str | None = None
        self._warned: set[str] = set()  # each measurement warning is printed once per run

    def run(self) -> optuna.Study:
        """Run until the target is reached; raises :class:`Interrupted`, :class:`TooManyFailures` or ``LeaseLost``."""
        wall_start = time.perf_counter()
        self._prepared_handle = self.executor.put(self.prepared)  # once: every attempt reads it from there
        self._fn_handle = self.executor.put(self.trial_fn)
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.complete = len(done)
        self.progress = Progress(self.target, self.maximize, parallel=self.ex.parallel, complete=len(done),
                                 values=[t.values for t in done if t.user_attrs.get(FEASIBLE_ATTR, True)])
        previous = self._catch_signals()
        ex = self.ex
        self.log(f"running {self.study.study_name!r}: {self.complete}/{self.target} complete, up to {ex.parallel} "
                 f"in parallel ({ex.cpus_per_trial:g} CPU, {ex.gpus_per_trial:g} GPU per trial"
                 + (f", timeout {ex.trial_timeout_s:g} s" if ex.trial_timeout_s else "") + ")")
        try:
            while self._turn():
                pass
        except LeaseLost:
            self._cancel_in_flight()  # another driver owns the study now: cancel, write nothing
            raise
        except BaseException as err:
            self._stop(err)
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stats.wall_s += time.perf_counter() - wall_start
        return self.study

    def _turn(self) -> bool:
        """One turn of the loop: refill, wait, tell. False once the study holds its target."""
        if self._signal is not None:
            raise Interrupted(self._signal)
        stats = self.stats
        t = time.perf_counter()
        self.lease.heartbeat()
        limit = min(self.ex.parallel * self.replicates, self.capacity.get())
        self.progress.parallel = max(1, limit // self.replicates)  # trials in flight, each of `replicates` tasks
        stats.lease_s += time.perf_counter() - t
        self._refill(limit)
        stats.max_in_flight = max(stats.max_in_flight, len(self.in_flight))
        if not self.in_flight:
            if self.complete >= self.target:
                return False
            time.sleep(0.5)  # nothing fits a trial yet
            return True
        t = time.perf_counter()
        finished = self.executor.wait(list(self.in_flight), timeout=1.0)
        stats.wait_s += time.perf_counter() - t
        t = time.perf_counter()
        for ticket, result in finished:
            flight = self.in_flight.pop(ticket, None)
            if flight is not None:  # None: a replicate whose trial failed with a sibling in this batch
                self._handle(flight, result)
        self._check_timeouts()
        stats.tell_s += time.perf_counter() - t
        return True

    def _refill(self, limit: int) -> None:
        """Ask, sample and submit new trials up to ``limit`` tasks in flight, and no more than the target needs.

        A trial's replicates go together; one more than ``limit`` fits runs when nothing else is in flight.
        """
        while (limit > 0 and (not self.in_flight or len(self.in_flight) + self.replicates <= limit)
               and self.complete + self._trials_in_flight() < self.target):
            t = time.perf_counter()
            trial = self.study.ask()
            with grouped_writes(self.study)():  # the trial's parameters in one transaction, before it is submitted
                config = self.sf.space.sample(trial)
            group = ReplicateGroup(trial, self.sf.replicate_specs(config, trial.number))
            if self.replicates > 1:
                # what an interrupted run of these parameters finished
                group.restore(self.study._storage.get_trial_system_attrs(trial._trial_id))
            self.stats.ask_s += time.perf_counter() - t
            for replicate, spec in enumerate(group.specs):
                if replicate not in group.results:
                    self._submit(Flight(group, replicate, spec))

    def _trials_in_flight(self) -> int:
        return len({id(flight.group) for flight in self.in_flight.values()})

    def _submit(self, flight: Flight) -> None:
        t = time.perf_counter()
        ticket = self.executor.submit(self._prepared_handle, self._fn_handle, flight.spec,
                                      cpus=self.ex.cpus_per_trial, gpus=self.ex.gpus_per_trial,
                                      number=flight.trial.number, attempt=flight.attempts.count)
        flight.submitted = time.monotonic()
        flight.first_submitted = flight.first_submitted or flight.submitted
        self.in_flight[ticket] = flight
        self.stats.submit_s += time.perf_counter() - t

    def _handle(self, flight: Flight, result: TrialOutcome | TrialError) -> None:
        if isinstance(result, TrialOutcome):
            flight.group.results[flight.replicate] = result
            flight.group.attempts[flight.replicate] = flight.attempts.user_attrs()
            if flight.group.done:
                self._complete(flight, flight.group.outcome(self.sf.objectives.names))
            else:  # kept at once: a resume after an interruption runs only the replicates still missing
                keep_finished(flight.trial, flight.replicate, flight.spec, result)
            return
        decision = self.retry.after_failure(result, flight.attempts, flight.spec)
        if isinstance(decision, Retry):
            self.log(f"trial {flight.trial.number}: {decision.message}")
            flight.spec = decision.spec
            flight.attempts.count += 1
            self._submit(flight)
            return
        self._fail(flight, decision.reason, result.traceback)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for ticket, flight in list(self.in_flight.items()):
            overdue = self.retry.overdue(now - flight.submitted)
            if overdue is not None and ticket in self.in_flight:  # a sibling replicate may have failed it already
                self.executor.cancel(ticket)
                del self.in_flight[ticket]
                self._fail(flight, overdue.reason, "")

    def _complete(self, flight: Flight, outcome: TrialOutcome) -> None:
        feasible = self._tell_complete(flight, outcome, self.sf.objectives.names)
        self.stats.told += 1
        self.complete += 1
        seconds = time.monotonic() - flight.first_submitted
        self.progress.add(seconds, outcome.values, feasible=feasible)
        self._show(f"trial {flight.trial.number} COMPLETE in {seconds:.0f}s: "
                   + report.format_values(self.sf.objectives.names, outcome.values)
                   + ("" if feasible else " (infeasible)"))
        for line in report.trial_warnings(outcome.attrs):
            if line not in self._warned:
                self._warned.add(line)
                self.log(f"warning: {line} (first seen in trial {flight.trial.number})")

    def _show(self, line: str) -> None:
        """A finished trial's line; the progress follows it, or (on a terminal) is rewritten below it."""
        show_finished(line, self.progress, self.log, self.live)

    def _tell_complete(self, flight: Flight, outcome: TrialOutcome, names: list[str]) -> bool:
        """Tell the study a COMPLETE trial; whether it meets the ``[constraints]`` (True without any)."""
        trial = flight.trial
        outcome.attrs = {**self._attempt_notes(flight), **outcome.attrs}
        with grouped_writes(self.study)():  # a trial's results, report and state: all in one transaction, or none
            store_record(trial, outcome.attrs, intervals=self.sf.objectives.bias)
            feasible = self._mark_constraints(trial, outcome.values)
            self.write_report(trial, outcome, names)  # artifacts attach only to a trial still running
            self.study.tell(trial, outcome.values)
        return feasible

    def _mark_constraints(self, trial: optuna.Trial, values: list[float]) -> bool:
        if self.constraints is None:
            return True
        marks = self.constraints(values)
        for name, value in marks.items():
            trial.set_constraint(name, value)
        feasible = all(v <= 0.0 for v in marks.values())
        trial.set_user_attr(FEASIBLE_ATTR, feasible)
        return feasible

    def _fail(self, flight: Flight, reason: str, trace: str) -> None:
        trial = flight.trial
        self._cancel_siblings(flight)
        if self.replicates > 1:
            reason = f"replicate {flight.replicate} (seed {flight.spec.seed}): {reason}"
        with grouped_writes(self.study)():  # the reason and the state in one transaction
            store_record(trial, {REASON_ATTR: reason, "traceback": trace[-4000:], **flight.attempts.user_attrs()})
            self.study.tell(trial, state=TrialState.FAIL)
        self.stats.told += 1
        self.failed_here += 1
        self.progress.add(time.monotonic() - flight.first_submitted, None)
        self._show(f"trial {trial.number} FAIL: {reason}")
        if self.failed_here > self.max_failed:
            raise TooManyFailures(f"{self.failed_here} trials failed in this run (max_failed_trials = "
                                  f"{self.max_failed}); stopping. Last reason: {reason}")

    def _cancel_siblings(self, flight: Flight) -> None:
        """A trial fails with its first replicate that fails for good: its other replicates are given up."""
        for ticket, other in list(self.in_flight.items()):
            if other.group is flight.group:
                self.executor.cancel(ticket)
                del self.in_flight[ticket]

    def _attempt_notes(self, flight: Flight) -> dict[str, Any]:
        """The trial's attempts; with replicates, those of each replicate that needed more than one."""
        attrs = flight.attempts.user_attrs()
        if self.replicates > 1:
            flight.group.attempts[flight.replicate] = attrs
            notes = {str(r): a for r, a in sorted(flight.group.attempts.items()) if a}
            attrs = {"fairfront.replicate_attempts": notes} if notes else {}
        return attrs

    def _catch_signals(self) -> dict[int, Any]:
        """Ctrl-C and SIGTERM stop the loop at its next turn (signals reach only the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self._signal is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._signal = signal.Signals(signum).name

    def _stop(self, err: BaseException) -> None:
        """Leave the study resumable: keep what arrived (on a signal), cancel the rest and recover it.

        Raises ``LeaseLost`` when the study was taken over meanwhile (nothing is written then).
        """
        try:
            if isinstance(err, Interrupted):
                self._record_arrived()
        finally:
            self._cancel_in_flight()
        why = f"interrupted by {err}" if isinstance(err, Interrupted) else f"driver stopped ({type(err).__name__})"
        try:
            n = recover_interrupted(self.study, reason=f"{why}: enqueued again for resume")
        except Exception as failed:
            if isinstance(failed, LeaseLost) or storage_fault(err, url="") is None:
                raise
            return  # the storage refuses writes: the trials stay RUNNING, and resume recovers them
        if n:
            self.log(f"{why}: {n} in-flight trial(s) recorded for resume ({self.resume_hint})")

    def _record_arrived(self) -> None:
        """On Ctrl-C/SIGTERM, keep the COMPLETE results that already arrived instead of re-running them."""
        try:
            for ticket, result in self.executor.wait(list(self.in_flight), timeout=0):
                if isinstance(result, TrialOutcome):
                    flight = self.in_flight.pop(ticket)
                    flight.group.results[flight.replicate] = result
                    if flight.group.done:
                        names = self.study.metric_names or []
                        self._tell_complete(flight, flight.group.outcome(names), names)
                        self.log(f"trial {flight.trial.number} COMPLETE (arrived while stopping)")
                    else:
                        keep_finished(flight.trial, flight.replicate, flight.spec, result)
        except LeaseLost:  # taken over: this driver writes nothing more
            raise
        except Exception:  # noqa: BLE001 - best effort; whatever is left is recovered for resume
            pass

    def _cancel_in_flight(self) -> None:
        for ticket in self.in_flight:
            self.executor.cancel(ticket)
