"""How many trials the driver keeps in flight: what the executor fits, re-counted as it changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairfront.search.executor import Executor
    from fairfront.search.studyfile import Execution

__all__ = ["CapacityWatch"]


class CapacityWatch:
    """How many trials the executor fits, re-counted every ``refresh_s`` seconds.

    Counting a Ray cluster's nodes costs a round trip, so it is not done on every turn of the
    loop; often enough, though, that a node joining mid-study is used within seconds. Every change
    is logged, so the user sees why fewer trials than ``parallel`` run.
    """

    def __init__(self, executor: Executor, execution: Execution, refresh_s: float, log: Callable[[str], None]):
        self.executor, self.ex, self.refresh_s, self.log = executor, execution, refresh_s, log
        self.value: int | None = None
        self.checked = 0.0

    def get(self) -> int:
        now = time.monotonic()
        if self.value is not None and now - self.checked < self.refresh_s:
            return self.value
        ex = self.ex
        n = self.executor.capacity(cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial)
        self.checked = now
        if n != self.value:
            self._log_change(n)
            self.value = n
        return n

    def _log_change(self, n: int) -> None:
        ex, where = self.ex, self.executor.name
        need = f"{ex.cpus_per_trial:g} CPU, {ex.gpus_per_trial:g} GPU per trial"
        if n == 0:
            self.log(f"no node of {where} fits a trial ({need}); waiting for one to join")
        else:
            was = "" if self.value is None else f" (was {self.value})"
            self.log(f"{where} fits {n} trial(s) at once{was}; up to {min(n, ex.parallel)} in flight "
                     f"(parallel = {ex.parallel}, {need})")
