"""Progress a person reads at a glance: trials done of the target, time left, the front's size and hypervolume.

:class:`Progress` keeps the numbers (fed one finished trial at a time, by whatever runs trials:
the driver's loop today); :class:`LiveLine` shows its line on a terminal, rewritten in place,
with other messages printed above it. Where the output is not a terminal (a log file, a CI job),
the driver prints the line once per finished trial instead.

Time left (ETA) is the remaining COMPLETE trials, run ``parallel`` at a time, each taking the mean
duration of the trials that completed in this run: ``ceil(remaining / parallel) * mean``. Trials
that failed count in neither the mean nor the remaining work (the loop asks new ones in their
place), so many failures make the estimate optimistic. Runs that are not trials (``confirm``'s
runs of a trial on one seed: ``unit="run"``) have no objective values to make a front of, and a
run that failed for good is finished work (``failures_replaced=False``): the line then reads
``3/8 runs done · 1 failed · ETA 40s (2 in parallel)``.

Example:
    >>> p = Progress(target=4, maximize=[True, False], parallel=2)
    >>> p.add(10.0, [0.9, 100.0]); p.add(20.0, [0.5, 10.0])
    >>> p.eta_s()  # 2 left, 2 at a time, 15 s each
    15.0
    >>> p.text()
    '2/4 complete · front 2 · hypervolume 0.174 · ETA 15s (2 in parallel)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TextIO

from fairfront.search.front import ParetoFront
from fairfront.search.hypervolume import hypervolume_share

__all__ = ["Progress", "LiveLine", "format_duration", "show_finished"]


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: as short as a glance needs."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """A run's progress toward its target of COMPLETE trials.

    Args:
        target: the COMPLETE trials the run goes to.
        maximize: whether each objective is maximised (the study's directions).
        parallel: how many trials run at once (the ETA divides the remaining work by it).
        complete: COMPLETE trials the study held before this run.
        values: their objective values (they seed the front and the hypervolume's reference point).
        unit: what one of ``target`` is called; other than ``"trial"`` the line reads ``N/M <unit>s done``.
        failures_replaced: whether a failure is replaced by new work (the driver's loop) or is finished work.
        With no objectives (``maximize`` empty) the line has no front and no hypervolume.
    """

    def __init__(self, target: int, maximize: Sequence[bool], *, parallel: int = 1, complete: int = 0,
                 values: Sequence[Sequence[float]] = (), unit: str = "trial", failures_replaced: bool = True):
        import optuna

        self.target, self.maximize, self.parallel, self.complete = target, list(maximize), parallel, complete
        self.unit, self.failures_replaced = unit, failures_replaced
        directions = [optuna.study.StudyDirection.MAXIMIZE if m else optuna.study.StudyDirection.MINIMIZE
                      for m in self.maximize]
        self.front = ParetoFront(directions, [])
        self.durations: list[float] = []
        self.failed = 0
        self._worst: list[float] | None = None
        for v in values:
            self._add_values(v)

    def _add_values(self, values: Sequence[float]) -> None:
        self.front.add(values)
        worse = [min if m else max for m in self.maximize]
        self._worst = list(values) if self._worst is None else [w(a, b) for w, a, b in zip(worse, self._worst, values)]

    def add(self, seconds: float, values: Sequence[float] | None, *, feasible: bool = True) -> None:
        """One finished trial: its duration and, if it completed, its objective values (None: it failed).

        An infeasible trial (outside ``[constraints]``) counts as done but does not compete for the front.
        """
        if values is None:
            self.failed += 1
            return
        self.complete += 1
        self.durations.append(seconds)
        if feasible and self.maximize:
            self._add_values(values)

    def eta_s(self) -> float | None:
        """Seconds until the target, ``ceil(remaining / parallel) * mean duration``; None before a duration."""
        remaining = max(0, self.target - self.finished())
        if remaining == 0:
            return 0.0
        if not self.durations:
            return None
        return math.ceil(remaining / max(1, self.parallel)) * (sum(self.durations) / len(self.durations))

    def finished(self) -> int:
        """The work done toward the target: COMPLETE ones, and failed ones where nothing replaces them."""
        return self.complete + (0 if self.failures_replaced else self.failed)

    def hypervolume(self) -> float | None:
        """The front's hypervolume as a share of the ideal-to-reference box (:mod:`~fairfront.search.hypervolume`)."""
        if self._worst is None:
            return None
        signs = [-1.0 if m else 1.0 for m in self.maximize]
        front = [[s * v for s, v in zip(signs, p)] for p in self.front.points]  # back from minimisation form
        return hypervolume_share(front, self.maximize, worst=self._worst)

    def text(self) -> str:
        """``12/40 complete · front 5 · hypervolume 0.412 · ETA 3m05s (4 in parallel)``."""
        done = "complete" if self.unit == "trial" else f"{self.unit}s done"
        parts = [f"{self.complete}/{self.target} {done}"] + ([f"{self.failed} failed"] if self.failed else [])
        if self.maximize:
            parts.append(f"front {len(self.front)}")
        hv = self.hypervolume()
        if hv is not None:
            parts.append(f"hypervolume {hv:.3f}")
        eta = self.eta_s()
        if self.finished() < self.target:
            parts.append(("ETA " + format_duration(eta) if eta is not None else f"ETA after the first {self.unit}")
                         + f" ({self.parallel} in parallel)")
        return " · ".join(parts)


class LiveLine:
    """One line on a terminal, rewritten in place; :meth:`log` prints a message above it.

    Carriage return and erase-to-end-of-line (``ESC [K``) are all it uses, which every terminal
    emulator and Windows' console since 10 understand.
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.shown = ""

    def show(self, text: str) -> None:
        self.shown = text
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def log(self, message: str) -> None:
        self.stream.write("\r\x1b[K" + message + "\n" + self.shown)
        self.stream.flush()

    def close(self) -> None:
        """Leave the last line as it is and move below it."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = ""


def show_finished(line: str, progress: Progress, log: Callable[[str], None], live: LiveLine | None) -> None:
    """A finished trial's (or run's) line: the progress follows it, or on a terminal is rewritten below it."""
    if live is None:
        log(f"{line} | {progress.text()}")
        return
    log(line)
    live.show(progress.text())
