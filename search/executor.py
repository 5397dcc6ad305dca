"""What the driver needs from whatever runs its trials: the :class:`Executor` protocol.

The driver's loop (:class:`~fairfront.search.scheduler.Scheduler`) never calls Ray itself: it
asks an executor how many trials fit, submits trial attempts, waits for their results and cancels
the ones it gives up on. :class:`~fairfront.search.ray_executor.RayExecutor` runs attempts as Ray
tasks (every real study); :class:`~fairfront.search.inprocess_executor.InProcessExecutor` runs them
in the driver's own process, so tests and the driver-overhead benchmark exercise the same loop
without a cluster.

Whatever the executor, an attempt ends as a :class:`TrialOutcome` or a :class:`TrialError`: a
trial that raises never crashes the driver, and :func:`run_attempt` turns the exception into the
error every executor reports the same way.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from fairfront.objectives.training.prepare import Prepared, PrepareSpec
    from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
    from fairfront.search.studyfile import Execution

__all__ = ["Executor", "Ticket", "Handle", "Finished", "TrialError", "TrialFunction", "ERROR_KINDS",
           "run_attempt", "trial_error"]

TrialFunction = Callable[..., "TrialOutcome"]
"""``fn(prepared, spec, *, device, threads) -> TrialOutcome``; :func:`run_trial` for real studies."""

Ticket = Any
"""What :meth:`Executor.submit` returns for one attempt (hashable, opaque to the driver, which keys its
in-flight trials by it; each executor chooses its own type, e.g. a Ray object ref)."""

Handle = Any
"""Shared data as an executor holds it (:meth:`Executor.put`), passed back to :meth:`Executor.submit`
(opaque to the driver)."""

ERROR_KINDS = ("exception", "oom", "worker_died", "cancelled", "ray")


@dataclass
class TrialError:
    """A trial attempt that did not produce an outcome.

    Attributes:
        reason: one line for the user (stored in the trial's ``fail_reason`` attribute).
        traceback: the full traceback or Ray error text.
        kind: what went wrong, which decides what the driver does next: ``"exception"`` (the trial
            raised: it fails), ``"oom"`` (CUDA out of memory: retried once with half the batch
            size), ``"worker_died"`` (the worker process or node died: retried up to
            ``max_retries``), ``"cancelled"`` or ``"ray"`` (any other error of the executor).
    """

    reason: str
    traceback: str
    kind: str = "exception"


Finished = tuple[Ticket, "TrialOutcome | TrialError"]
"""One finished attempt, as :meth:`Executor.wait` returns it."""


@runtime_checkable
class Executor(Protocol):
    """Runs trial attempts for the driver; the one interface a new way of running trials implements.

    The contract:

    * ``name`` says where trials run, as the driver's messages name it (``"the Ray cluster"``).
    * :meth:`start` is called once before anything else; it connects to whatever runs the trials
      and raises :class:`~fairfront.errors.ConfigError` when a trial of the study's size can never
      run there (waiting would then wait forever).
    * :meth:`prepare` computes the prepared study (data, teacher, teacher logits) where the
      trials will run; the driver caches it.
    * :meth:`capacity` is asked every few seconds and may change (nodes join and leave); 0 makes
      the driver wait.
    * :meth:`put` is called once per run for the prepared study and once for the trial function;
      the handles it returns are passed to every :meth:`submit`, so shared data travels once.
    * :meth:`submit` starts one attempt and returns at once with a hashable ticket. The attempt
      must not retry on its own: the driver counts and records every attempt.
    * :meth:`wait` blocks up to ``timeout`` seconds until at least one of ``tickets`` finished,
      and returns every finished one with its result (never raising for a failed attempt: a
      failure is a :class:`TrialError`). ``timeout=0`` never blocks.
    * :meth:`cancel` gives up on an attempt (its result is never asked for).
    * :meth:`classify` turns an exception met while running or fetching an attempt into a
      :class:`TrialError` whose ``kind`` is one of :data:`ERROR_KINDS`.
    """

    name: str

    def start(self, execution: Execution, log: Callable[[str], None]) -> None: ...

    def prepare(self, spec: PrepareSpec, execution: Execution, log: Callable[[str], None]) -> Prepared: ...

    def capacity(self, *, cpus: float, gpus: float) -> int: ...

    def put(self, value: object) -> Handle: ...

    def submit(self, prepared: Handle, fn: Handle, spec: TrialSpec, *, cpus: float, gpus: float, number: int,
               attempt: int) -> Ticket: ...

    def wait(self, tickets: Sequence[Ticket], timeout: float) -> list[Finished]: ...

    def cancel(self, ticket: Ticket) -> None: ...

    def classify(self, err: BaseException) -> TrialError: ...


def trial_error(err: BaseException, trace: str) -> TrialError:
    """An exception the trial raised, as its :class:`TrialError` (``"oom"`` for CUDA out of memory)."""
    loaded = sys.modules.get("torch")  # an exception of torch's means torch is loaded; nothing to import otherwise
    if loaded is not None and isinstance(err, loaded.cuda.OutOfMemoryError):
        return TrialError(f"CUDA out of memory: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": "),
                          trace, kind="oom")
    return TrialError(f"{type(err).__name__}: {err}", trace)


def run_attempt(fn: TrialFunction, prepared: Prepared, spec: TrialSpec, *, device: torch.device,
                threads: int | None, worker: Callable[[], dict[str, Any]]) -> TrialOutcome | TrialError:
    """Run one attempt of a trial where it is called; never raises.

    The outcome records ``worker()`` (where it ran) and the batch size it ran with, which differs
    from the study file's after a CUDA out-of-memory retry.
    """
    try:
        outcome = fn(prepared, spec, device=device, threads=threads)
        outcome.attrs["worker"] = worker()
        outcome.attrs["student_batch_size"] = spec.student.batch_size  # halved after a CUDA out-of-memory
        return outcome
    except Exception as err:  # noqa: BLE001 - every failure becomes the trial's reason
        return trial_error(err, traceback.format_exc())
