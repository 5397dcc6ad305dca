"""Whether a study already holds its target of COMPLETE trials, and what to tell the person who resumes it.

``fairfront resume`` of a finished study has nothing to run: starting Ray and loading the prepared
study would cost a minute for no trial. Both the CLI (before it imports anything that runs trials)
and :func:`~fairfront.search.driver.resume_study` ask :func:`completed` first.

Example:
    >>> print(complete_text("demo", 6, 6, storage="sqlite:///x.db"))
    study 'demo' is complete: 6 of 6 COMPLETE trials; nothing was started.
    to go on to 12 COMPLETE trials: fairfront resume demo --n-trials 12 --storage sqlite:///x.db
    its Pareto front: fairfront front demo --storage sqlite:///x.db
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fairfront.search.attrs import N_TRIALS_ATTR
from fairfront.search.hints import command

if TYPE_CHECKING:
    import optuna

__all__ = ["completed", "complete_text"]


def completed(study: optuna.Study, n_trials: int | None) -> tuple[int, int] | None:
    """``(COMPLETE trials, target)`` where the study holds its target already, else None.

    The target is ``n_trials`` (``resume --n-trials``) or the one stored with the study; a study
    with neither (not made by fairfront) is None, and the driver says what is wrong with it.
    """
    from optuna.trial import TrialState

    target = n_trials if n_trials is not None else study.user_attrs.get(N_TRIALS_ATTR)
    if not isinstance(target, int) or isinstance(target, bool):
        return None
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return (complete, target) if complete >= target else None


def complete_text(name: str, complete: int, target: int, *, storage: str, artifact_dir: Path | None = None,
                  cache_dir: Path | None = None) -> str:
    """What ``resume`` prints for a complete study: the count, and the commands that extend it or show it."""
    more = max(complete, target) * 2
    extend = command("resume", name, "--n-trials", str(more), storage=storage, artifact_dir=artifact_dir,
                     cache_dir=cache_dir)
    return (f"study {name!r} is complete: {complete} of {target} COMPLETE trials; nothing was started.\n"
            f"to go on to {more} COMPLETE trials: {extend}\n"
            f"its Pareto front: {command('front', name, storage=storage)}")
