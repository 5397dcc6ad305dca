"""How ``run`` and ``resume`` run a study, and where the driver's time went (:class:`LoopStats`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fairfront.objectives.training.prepare import Prepared
from fairfront.objectives.training.trial import run_trial
from fairfront.search.executor import Executor, TrialFunction
from fairfront.search.lease import STALE_AFTER_S
from fairfront.search.storage import DEFAULT_STORAGE

if TYPE_CHECKING:
    from fairfront.search.progress import LiveLine

__all__ = ["RunOptions", "LoopStats"]


@dataclass
class LoopStats:
    """Where the driver's time went in one run of the loop (``benchmarks/driver_overhead.py``).

    ``wait_s`` is time blocked waiting for the executor's results; everything else the driver
    spent itself.
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
        executor: what runs the trials; None runs them as Ray tasks on ``ray_address`` (a
            :class:`~fairfront.search.ray_executor.RayExecutor`).
            :class:`~fairfront.search.inprocess_executor.InProcessExecutor` runs them in the
            driver's process, for tests and for measuring the loop without Ray.
        trial_fn: the function the executor runs for each trial, called as
            ``fn(prepared, spec, device=..., threads=...)``; :func:`run_trial` for real studies.
            Benchmarks swap in trivial functions to measure the loop itself.
        prepared: use this prepared study instead of loading or computing one.
        lease_stale_s: heartbeat age after which another driver's lease may be taken over.
        capacity_refresh_s: how often the executor's capacity (the cluster's nodes) is re-counted.
        mirror: run the study over :class:`~fairfront.search.driver_storage.DriverStorage` (the
            default); False reads and writes through Optuna's own storage, as
            ``benchmarks/driver_overhead.py`` does for its baseline.
        live: a terminal's line where the run's progress is rewritten in place (``log`` should then be
            its :meth:`~fairfront.search.progress.LiveLine.log`); None prints the progress at the end of
            each finished trial's line instead.
        stats: filled in by the loop.
    """

    storage: str = DEFAULT_STORAGE
    n_trials: int | None = None
    ray_address: str | None = None
    cache_dir: Path = Path("studies/cache")
    artifact_dir: Path = Path("studies/artifacts")
    log: Callable[[str], None] = print
    executor: Executor | None = None
    trial_fn: TrialFunction = run_trial
    prepared: Prepared | None = None
    lease_stale_s: float = STALE_AFTER_S
    capacity_refresh_s: float = 5.0
    mirror: bool = True
    live: LiveLine | None = None
    stats: LoopStats = field(default_factory=LoopStats)
