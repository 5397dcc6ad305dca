"""Testing hook: faults injected into chosen trial attempts, whatever executor runs them.

Never active unless set: the environment variable ``FAIRFRONT_FAULTS``, read by the driver when a
run starts, injects faults that cannot be produced reliably by hand — a worker killed at a known
moment, CUDA out of memory on a machine without a GPU, a slow trial. It is a ``;``-separated list
of ``TRIAL:KIND[=ARG][@N]``: the fault hits trial number ``TRIAL`` on its first ``N`` attempts
(every attempt without ``@N``). Kinds:

========== ================================================================================
``raise``  the trial raises ``RuntimeError("injected fault")``
``nan``    the student's learning rate becomes infinite, so the real training loop meets a
           non-finite loss and raises its own error
``oom``    the trial raises ``torch.cuda.OutOfMemoryError`` (the type a real GPU raises)
``kill``   the worker process kills itself with SIGKILL ``ARG`` seconds (default 0.5) into
           the trial, while the trial runs (with Ray only: in the driver's process it would
           kill the driver)
``sleep``  the trial sleeps ``ARG`` seconds before it starts (a slow trial, for timeouts)
========== ================================================================================

Example: ``FAIRFRONT_FAULTS="0:kill@1;3:oom"`` kills trial 0's first worker (its retry runs
normally) and makes trial 3 run out of memory on every attempt.

The production executors know nothing of this: :func:`inject_from_env` wraps the run's executor
in :class:`FaultInjectingExecutor`, which submits a hit attempt with its trial function wrapped in
:class:`FaultyTrial`; every other attempt goes through untouched.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search.executor import Executor, Finished, Handle, Ticket, TrialError, TrialFunction

if TYPE_CHECKING:
    import torch

    from fairfront.objectives.training.prepare import Prepared, PrepareSpec
    from fairfront.search.studyfile import Execution

__all__ = ["FAULTS_ENV", "FAULT_KINDS", "Fault", "parse_faults", "fault_for", "FaultyTrial", "FaultInjectingExecutor",
           "inject_from_env"]

FAULTS_ENV = "FAIRFRONT_FAULTS"
FAULT_KINDS = ("raise", "nan", "oom", "kill", "sleep")


@dataclass(frozen=True)
class Fault:
    """One injected fault of the ``FAIRFRONT_FAULTS`` testing hook."""

    trial: int
    kind: str
    arg: float | None = None
    attempts: int | None = None

    def hits(self, number: int, attempt: int) -> bool:
        return number == self.trial and (self.attempts is None or attempt <= self.attempts)


def parse_faults(text: str) -> list[Fault]:
    """Parse ``TRIAL:KIND[=ARG][@N]`` entries separated by ``;``.

    Example:
        >>> parse_faults("0:kill=1@1; 3:oom")
        [Fault(trial=0, kind='kill', arg=1.0, attempts=1), Fault(trial=3, kind='oom', arg=None, attempts=None)]
    """
    faults = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        try:
            number, rest = entry.split(":", 1)
            rest, _, attempts = rest.partition("@")
            kind, _, arg = rest.partition("=")
            fault = Fault(int(number), kind.strip(), float(arg) if arg else None, int(attempts) if attempts else None)
        except ValueError:
            raise ValueError(f"{FAULTS_ENV}: {entry!r} is not TRIAL:KIND[=ARG][@N]") from None
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"{FAULTS_ENV}: {fault.kind!r} is not a fault kind; expected one of "
                             + ", ".join(FAULT_KINDS))
        faults.append(fault)
    return faults


def fault_for(number: int, attempt: int, text: str | None = None) -> Fault | None:
    """The fault injected into attempt ``attempt`` (1-based) of trial ``number``, if any."""
    text = os.environ.get(FAULTS_ENV, "") if text is None else text
    if not text:
        return None
    return next((f for f in parse_faults(text) if f.hits(number, attempt)), None)


def _inject(fault: Fault, spec: TrialSpec) -> TrialSpec:
    """Apply ``fault`` at the start of an attempt; returns the spec the trial runs with."""
    import torch

    if fault.kind == "raise":
        raise RuntimeError("injected fault")
    if fault.kind == "oom":
        raise torch.cuda.OutOfMemoryError(f"injected: CUDA out of memory with batch size {spec.student.batch_size}")
    if fault.kind == "sleep":
        time.sleep(fault.arg or 0.0)
    if fault.kind == "kill":
        pid = os.getpid()
        threading.Timer(0.5 if fault.arg is None else fault.arg, lambda: os.kill(pid, signal.SIGKILL)).start()
    if fault.kind == "nan":
        return dataclasses.replace(spec, student=dataclasses.replace(spec.student, learning_rate=math.inf))
    return spec


@dataclass(frozen=True)
class FaultyTrial:
    """A trial function with ``fault`` applied at the start of the attempt (sent by value, not put)."""

    fn: TrialFunction
    fault: Fault

    def __call__(self, prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
                 threads: int | None = None) -> TrialOutcome:
        spec = _inject(self.fault, spec)
        outcome = self.fn(prepared, spec, device=device, threads=threads)
        if self.fault.kind == "kill":
            time.sleep(3600)  # the trial finished before its injected kill: wait for it
        return outcome


class FaultInjectingExecutor:
    """An executor whose attempts named by ``faults`` run their trial function as a :class:`FaultyTrial`.

    Args:
        inner: the executor that runs every attempt.
        fn: the run's trial function (the one the driver puts once; a hit attempt gets it wrapped).
        faults: the faults to inject.
    """

    def __init__(self, inner: Executor, fn: TrialFunction, faults: list[Fault]):
        self.inner, self.fn, self.faults = inner, fn, faults
        self.name = inner.name

    def start(self, execution: Execution, log: Callable[[str], None]) -> None:
        self.inner.start(execution, log)

    def prepare(self, spec: PrepareSpec, execution: Execution, log: Callable[[str], None]) -> Prepared:
        return self.inner.prepare(spec, execution, log)

    def capacity(self, *, cpus: float, gpus: float) -> int:
        return self.inner.capacity(cpus=cpus, gpus=gpus)

    def put(self, value: object) -> Handle:
        return self.inner.put(value)

    def submit(self, prepared: Handle, fn: Handle, spec: TrialSpec, *, cpus: float, gpus: float, number: int,
               attempt: int) -> Ticket:
        fault = next((f for f in self.faults if f.hits(number, attempt)), None)
        if fault is not None:
            fn = FaultyTrial(self.fn, fault)
        return self.inner.submit(prepared, fn, spec, cpus=cpus, gpus=gpus, number=number, attempt=attempt)

    def wait(self, tickets: Sequence[Ticket], timeout: float) -> list[Finished]:
        return self.inner.wait(tickets, timeout)

    def cancel(self, ticket: Ticket) -> None:
        self.inner.cancel(ticket)

    def classify(self, err: BaseException) -> TrialError:
        return self.inner.classify(err)


def inject_from_env(executor: Executor, fn: TrialFunction) -> Executor:
    """``executor`` itself, or wrapped in a :class:`FaultInjectingExecutor` when ``FAIRFRONT_FAULTS`` is set."""
    text = os.environ.get(FAULTS_ENV, "")
    if not text:
        return executor
    return FaultInjectingExecutor(executor, fn, parse_faults(text))
