"""What the driver does when a trial attempt fails: run it again, or fail the trial with its reason.

A worker process or node that died says nothing about the trial, so the trial runs again, up to
``[execution] max_retries`` times. CUDA out of memory often goes away with a smaller batch, so the
trial runs once more with half the student's batch size. Anything else (an exception, a NaN
loss, a second out-of-memory) fails the trial, and so does running longer than
``trial_timeout_s``. The reasons stored with a FAIL trial say which attempts were made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fairfront.objectives.training.trial import TrialSpec
from fairfront.search.executor import TrialError

__all__ = ["Attempts", "Retry", "Fail", "RetryPolicy"]


@dataclass
class Attempts:
    """A trial's attempts so far, as they are stored on the trial.

    Attributes:
        count: attempts submitted (1-based: 1 until the first retry).
        worker_retries: retries after a dead worker.
        notes: stored as ``fairfront.<key>`` trial attributes (``retries``: the reason of each
            dead worker; ``oom_retry``: the first out-of-memory and both batch sizes).
    """

    count: int = 1
    worker_retries: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def user_attrs(self) -> dict[str, Any]:
        """The trial attributes that record these attempts (none for a trial that ran once)."""
        attrs: dict[str, Any] = {"fairfront.attempts": self.count} if self.count > 1 else {}
        attrs.update({f"fairfront.{key}": value for key, value in self.notes.items()})
        return attrs


@dataclass(frozen=True)
class Retry:
    """Run the trial again with ``spec``; ``message`` says why (logged after ``trial N: ``)."""

    spec: TrialSpec
    message: str


@dataclass(frozen=True)
class Fail:
    """Fail the trial; ``reason`` is stored in its ``fail_reason`` attribute."""

    reason: str


class RetryPolicy:
    """Decides, after a failed attempt or when an attempt overruns its time, what happens to the trial.

    Args:
        max_retries: how often a trial whose worker died runs again.
        timeout_s: how long one attempt may run (from its submission); None for no limit.
    """

    def __init__(self, *, max_retries: int, timeout_s: float | None = None):
        self.max_retries, self.timeout_s = max_retries, timeout_s

    def after_failure(self, error: TrialError, attempts: Attempts, spec: TrialSpec) -> Retry | Fail:
        """What follows ``error``; a retry is recorded in ``attempts`` (the caller counts the new attempt)."""
        batch = spec.student.batch_size
        if error.kind == "worker_died" and attempts.worker_retries < self.max_retries:
            attempts.worker_retries += 1
            attempts.notes.setdefault("retries", []).append(error.reason)
            return Retry(spec, f"{error.reason}; running it again (retry {attempts.worker_retries} of "
                               f"{self.max_retries})")
        if error.kind == "oom" and "oom_retry" not in attempts.notes and batch > 1:
            half = batch // 2
            attempts.notes["oom_retry"] = {"reason": error.reason, "batch_size": batch, "retry_batch_size": half}
            spec = dataclasses.replace(spec, student=dataclasses.replace(spec.student, batch_size=half))
            return Retry(spec, f"{error.reason}; running it again with batch size {half}")
        return Fail(self._reason(error, attempts, batch))

    def overdue(self, running_s: float) -> Fail | None:
        """A FAIL when an attempt that has run ``running_s`` seconds is past the timeout (the caller cancels it)."""
        if self.timeout_s is None or running_s <= self.timeout_s:
            return None
        return Fail(f"timeout: the trial ran longer than execution.trial_timeout_s = {self.timeout_s:g} s "
                    "and was cancelled")

    def _reason(self, error: TrialError, attempts: Attempts, batch: int) -> str:
        reason = error.reason
        if error.kind == "oom" and "oom_retry" in attempts.notes:
            reason += (f" (also after retrying with half the batch size, {batch}; it first ran out with "
                       f"{attempts.notes['oom_retry']['batch_size']})")
        if error.kind == "worker_died":
            reason += f" after {attempts.worker_retries + 1} attempt(s) (max_retries = {self.max_retries})"
        return reason
