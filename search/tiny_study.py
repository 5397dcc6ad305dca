"""A tiny study file: a 2-layer hidden-64 BERT on the built-in synthetic occupation task.

Its trials take seconds on one CPU, yet run the real driver end to end (storage, Ray, training,
measures), so the tests and the benchmarks that time the driver itself share this one text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["tiny_study_text"]

_TEMPLATE = """
[study]
name = "{name}"
n_trials = {n_trials}
sampler = "{sampler}"
seed = 0
bootstrap_resamples = 20{replicates}

[model]
name = "tiny-random"
max_length = 32

[data]
source = "synthetic-occupations"
n_examples = 500

[teacher]
epochs = 3.0
batch_size = 32
learning_rate = 3e-3

[student]
epochs = {student_epochs!r}
max_steps = {student_steps}
batch_size = 32
learning_rate = 1e-3

[space.pruning]
sparsity = [0.2, 0.9]
schedule = {schedules}

[space.distillation]
temperature = [1.0, 4.0]
alpha = [0.0, 0.9]
{fairness}
[execution]
parallel = {parallel}
cpus_per_trial = 1
"""

_FAIRNESS_SPACE = """
[space.fairness]
weight = [0.1, 10.0]
"""


def tiny_study_text(name: str = "tiny", *, n_trials: int = 3, sampler: str = "random", parallel: int = 2,
                    student_steps: int = 15, student_epochs: float = 20.0, replicates: int | None = None,
                    schedules: Sequence[str] = ("one_shot", "gradual", "iterative"),
                    fairness_space: bool = True) -> str:
    """The tiny study's TOML text; ``replicates`` None leaves ``[study] replicates`` unset."""
    return _TEMPLATE.format(name=name, n_trials=n_trials, sampler=sampler, parallel=parallel,
                            student_steps=student_steps, student_epochs=float(student_epochs),
                            replicates="" if replicates is None else f"\nreplicates = {replicates}",
                            schedules=json.dumps(list(schedules)),
                            fairness=_FAIRNESS_SPACE if fairness_space else "")
