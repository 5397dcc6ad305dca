"""The dense teacher scored exactly as a trial is: the reference every compressed trial is compared with.

A trial's numbers mean little without the dense model's beside them ("1.2 points less accurate,
a third of the size, bias halved"). The prepared study already holds everything a trial's
measures read for the teacher: its logits on the validation and test splits (and on the
counterfactual texts), the dense population, and its intrinsic-benchmark results. So the teacher
goes through the same :func:`~fairfront.objectives.measures.scoring.score_split`,
:func:`~fairfront.objectives.measures.scoring.measure_size` and
:func:`~fairfront.objectives.measures.scoring.record_intrinsic` a trial does, with the study's
scoring settings (bootstrap, ``min_group_size``, group attributes), and nothing is run through
the model but the size and latency measures.

The result is a :class:`~fairfront.objectives.measures.report.TrialReport` with an empty
``compression``; the driver stores its ``to_record()`` once per study.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fairfront.objectives.measures.report import TrialReport
from fairfront.objectives.measures.scoring import measure_size, record_intrinsic, score_split

if TYPE_CHECKING:
    from fairfront.objectives.training.prepare import Prepared

__all__ = ["score_dense", "has_dense_model"]


def has_dense_model(prepared: Prepared) -> bool:
    """Whether ``prepared`` holds a dense model to score (a placeholder built for the loop's tests holds none)."""
    return bool(prepared.teacher_state) and bool(prepared.model_config)


def score_dense(prepared: Prepared, *, scoring: Mapping[str, Any] | None = None, latency: bool = True,
                threads: int | None = None) -> TrialReport:
    """Every measure of the dense teacher, from its prepared predictions, as a trial's report.

    Args:
        prepared: The prepared study (teacher weights and logits, population, counterfactual sets).
        scoring: The study's scoring settings (:meth:`TrialSpec.scoring_options
            <fairfront.objectives.training.trial.TrialSpec.scoring_options>`: bootstrap resamples and
            seed, ``min_group_size``, ``small_groups``, group attributes and objective), so the
            teacher's groups and intervals are the trials'. None: :func:`score_split`'s defaults.
        latency: Measure CPU latency, as trials do.
        threads: Torch threads for the latency measure.
    """
    model = prepared.teacher().eval()
    report = TrialReport(compression={}, task="masked_lm" if prepared.task == "masked_lm" else None)
    report.size, report.latency_ms = measure_size(model, prepared, latency=latency, threads=threads)
    del model
    if prepared.task != "masked_lm":
        for split in ("validation", "test"):
            data = prepared.splits[split]
            logits = prepared.teacher_logits[split]
            swapped = [s.dense_logits for s in prepared.counterfactuals.get(split, [])]
            report.splits[split] = score_split(prepared, split, data.labels, logits.argmax(axis=1), data.groups,
                                               logits=logits, swapped_logits=swapped, membership=data.membership,
                                               compare_with_dense=False, **dict(scoring or {}))
    if prepared.intrinsic:
        record_intrinsic(report, prepared.intrinsic_dense, dense=prepared.intrinsic_dense)
    return report
