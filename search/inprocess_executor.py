"""Running trials in the driver's own process: the driver's loop with no cluster at all.

For tests and for measuring the driver's own cost: the same scheduler code paths run (results,
failures, CUDA out-of-memory retries, the failure limit), but without Ray's start-up, worker
processes or object store. A trial cannot be interrupted here, so it suits short trials only.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from fairfront.objectives.training.prepare import Prepared, PrepareSpec, compute
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search.executor import Finished, TrialError, TrialFunction, run_attempt, trial_error

if TYPE_CHECKING:
    from fairfront.search.studyfile import Execution

__all__ = ["InProcessExecutor"]


class InProcessExecutor:
    """Trial attempts run one after another in the driver's process, when the driver waits for them.

    :meth:`submit` only queues an attempt; :meth:`wait` runs queued attempts in the order they
    were submitted, each to its end, until all have run or ``timeout`` has passed (after at least
    one), so the time a trial takes counts as the driver waiting, as it does with Ray.
    ``wait(..., timeout=0)`` runs nothing. :meth:`cancel` drops an attempt that has not run.

    Args:
        capacity: how many trials the driver may keep in flight (whatever CPUs and GPUs a trial
            asks for: they all share this process).
        device: the torch device trials run on.
        threads: the torch threads a trial may use; None leaves the process's setting alone.
    """

    name = "the driver process"

    def __init__(self, capacity: int = 1, *, device: str = "cpu", threads: int | None = None):
        if capacity < 1:
            raise ValueError(f"capacity = {capacity} is not allowed: expected at least 1 trial at a time")
        self._capacity, self.device, self.threads = capacity, device, threads
        self._queued: dict[int, tuple[Prepared, TrialFunction, TrialSpec]] = {}
        self._tickets = itertools.count()

    def start(self, execution: Execution, log: Callable[[str], None]) -> None:
        """Nothing to connect to, and any trial fits (the capacity line says how many run at once)."""

    def prepare(self, spec: PrepareSpec, execution: Execution, log: Callable[[str], None]) -> Prepared:
        log("preparing the study once (data, dense teacher, teacher logits) in the driver process")
        return compute(spec, device=torch.device(self.device), log=log)

    def capacity(self, *, cpus: float, gpus: float) -> int:
        return self._capacity

    def put(self, value: object) -> object:
        """The value itself: the trials run in this process."""
        return value

    def submit(self, prepared: Prepared, fn: TrialFunction, spec: TrialSpec, *, cpus: float, gpus: float,
               number: int, attempt: int) -> int:
        ticket = next(self._tickets)
        self._queued[ticket] = (prepared, fn, spec)
        return ticket

    def wait(self, tickets: Sequence[int], timeout: float) -> list[Finished]:
        finished: list[Finished] = []
        if timeout <= 0:
            return finished
        deadline = time.monotonic() + timeout
        for ticket in sorted(t for t in tickets if t in self._queued):
            if finished and time.monotonic() >= deadline:
                break
            finished.append((ticket, self._run(*self._queued.pop(ticket))))
        return finished

    def cancel(self, ticket: int) -> None:
        self._queued.pop(ticket, None)

    def classify(self, err: BaseException) -> TrialError:
        return trial_error(err, "".join(traceback.format_exception(err)))

    def _run(self, prepared: Prepared, fn: TrialFunction, spec: TrialSpec) -> TrialOutcome | TrialError:
        device = torch.device(self.device)
        return run_attempt(fn, prepared, spec, device=device, threads=self.threads,
                           worker=lambda: {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device),
                                           "node_id": None})
