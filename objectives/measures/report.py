"""What a trial measured, as a typed record, and how a trial stores it.

A trial returns its measures as a :class:`TrialReport`. The driver stores each trial twice:

* the full nested record (:meth:`TrialReport.to_record`, plus the driver's bookkeeping) in the
  trial's system attribute :data:`RECORD_ATTR` (``fairfront:report``), which optuna-dashboard does
  not display, and as the trial's ``trial-<n>-report.json`` artifact;
* flat scalar user attributes (:meth:`TrialReport.to_attrs`), one number or short text each, which
  optuna-dashboard shows as table columns and can sort, filter and plot.

:meth:`TrialReport.from_attrs` reads a stored trial back, from the record where the trial has one
and otherwise from user attributes in the nested layout studies were written in before. Every
reader (``fairfront front``, ``status``, ``report``, ``export``) goes through it, so the record is
the contract and the classes here document it::

    compression          the sampled compression config (CompressionConfig as JSON)
    task                 "masked_lm" for a masked-LM trial (absent for classification)
    <compression notes>  what the compression families recorded (student_layers, structured, ...)
    train                TrainSummary: steps, final_loss, examples_per_second (classification)
    size                 every size measure of the compressed model, plus params
    latency_ms           {batch size: median CPU ms} (absent when the trial did not measure it)
    validation, test     SplitScores: accuracy, n, agreement_with_dense, bias, fairness,
                         forgetting, counterfactual, gap_test, vs_dense, degenerate
    intrinsic            {benchmark: {"validation", "test", "dense"}} with [bias] intrinsic
    intrinsic_s          seconds spent on the intrinsic benchmarks
    timings              Timings: train_s or compress_s, eval_s, total_s, device, torch_threads, pid
    replicates           with ``[study] replicates`` > 1: {"seeds": [...], "values": {objective: [per seed]},
                         "mean": {objective: x}, "se": {objective: x}}; the objective values are the means,
                         every other measure is the first seed's

The flat attributes are derived from the record by one rule, so a field added later appears in
both: a scalar is kept under its dotted path, a dict is walked (two levels below a top-level key),
a key that repeats its parent is said once (``test.accuracy``, not ``test.accuracy.accuracy``),
text is kept when it is one line (cut at :data:`MAX_TEXT`), lists and undefined (``None``) values
stay in the record only, and so do the parts named in :data:`RECORD_ONLY` and the split fields
marked ``record_only``. Sizes and latencies are ``size.<measure>``; each bias objective with a
bootstrap interval also gets ``<split>.bias.<measure>.ci_low`` and ``.ci_high`` (the other bias
measures' intervals stay in the record, so the dashboard's table stays narrow).

Every value is JSON: an undefined measure is ``None``, never NaN (:mod:`fairfront.jsonsafe`).

Example:
    >>> report = TrialReport(compression={}, size={"nonzero_params": 10.0},
    ...                      splits={"validation": SplitScores(accuracy={"accuracy": 0.75},
    ...                                                        bias={"tpr_gap": float("nan")})})
    >>> report.to_record()["validation"]
    {'accuracy': {'accuracy': 0.75}, 'bias': {'tpr_gap': None}}
    >>> report.to_attrs()
    {'size.nonzero_params': 10.0, 'validation.accuracy': 0.75}
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any

from fairfront.jsonsafe import json_safe

__all__ = ["TrialReport", "SplitScores", "TrainSummary", "Timings", "COMPRESSION_NOTES", "RECORD_ATTR",
           "RECORD_ONLY", "MAX_TEXT", "flat_attrs"]

RECORD_ATTR = "fairfront:report"
"""Trial system attribute: the trial's full nested record (what :meth:`TrialReport.to_record` gives, with the
driver's bookkeeping). optuna-dashboard does not display trial system attributes."""

RECORD_ONLY: tuple[str, ...] = ("compression", "latency_ms", "traceback", "worker", "timings.pid")
"""Parts of the record with no flat attributes (dotted paths): the compression config is the trial's
parameters, the latencies are ``size.latency_b<k>_ms``, a traceback is many lines, and where the trial
ran (worker, process) is bookkeeping."""

MAX_TEXT = 200
"""Longest text kept in a flat attribute (longer one-line text is cut and ends with an ellipsis)."""

Scalar = int | float | str | bool

COMPRESSION_NOTES: dict[str, str] = {
    "student_layers": "teacher layers the student kept (layer dropping)",
    "structured": "what structured pruning removed (heads, neurons, parameters before and after)",
    "achieved_sparsity": "the unstructured sparsity reached",
    "group_dro_weights": "group DRO's final group weights",
}
"""The attributes compression families record today. A family may record others: a trial's
notes are whatever it recorded; this list only tells :meth:`TrialReport.from_attrs` which keys
of a stored trial are notes rather than other attributes."""


def _json_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as stored in a trial's record (see :func:`~fairfront.jsonsafe.json_safe`)."""
    safe: dict[str, Any] = json_safe(record)
    return safe


def _without_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


def _scalar(value: Any) -> Scalar | None:
    """``value`` as a flat attribute: a number, a bool, or one line of text (cut at :data:`MAX_TEXT`); else None."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and "\n" not in value.strip():
        text = value.strip()
        return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"
    return None


def _leaves(prefix: str, value: Any, depth: int = 2) -> dict[str, Scalar]:
    """The scalars of ``value`` by dotted path under ``prefix``, walking dicts ``depth`` levels down.

    A key equal to the last part of its parent's path is not repeated; a path in :data:`RECORD_ONLY` is left out.
    """
    if prefix in RECORD_ONLY:
        return {}
    if not isinstance(value, dict):
        scalar = _scalar(value)
        return {} if scalar is None else {prefix: scalar}
    if depth == 0:
        return {}
    flat: dict[str, Scalar] = {}
    for key, item in value.items():
        path = prefix if str(key) == prefix.rsplit(".", 1)[-1] else f"{prefix}.{key}"
        flat.update(_leaves(path, item, depth - 1))
    return flat


def flat_attrs(record: dict[str, Any], *, intervals: Collection[str] | None = None) -> dict[str, Scalar]:
    """The flat user attributes of a stored ``record`` (a trial's, or the driver's record of a failed one).

    ``intervals`` as in :meth:`TrialReport.to_attrs`. A record that does not follow
    :class:`TrialReport`'s layout is flattened by the generic rule alone.
    """
    try:
        return TrialReport.from_record(record).to_attrs(intervals=intervals)
    except (TypeError, ValueError):
        flat: dict[str, Scalar] = {}
        for key, value in record.items():
            flat.update(_leaves(key, value))
        return flat


@dataclass
class SplitScores:
    """Every measure of one split (or one benchmark half); a field that is None is not recorded.

    Fields marked ``record_only`` are kept in the trial's record only (the split's size; reports whose
    headline numbers are ``bias`` measures and intervals already); every other field is also a flat
    attribute.

    Attributes:
        accuracy: Accuracy measures by name (classification; with ``stereoset`` scored, also
            ``stereoset_lms`` and ``stereoset_icat``).
        n: Examples in the split.
        agreement_with_dense: Share of predictions equal to the dense teacher's.
        bias: Bias measures by name: the group measures (None without a group column), and the
            measures whose ``[bias]`` setting the study prepared.
        fairness: The group-fairness report (per-group rates, bootstrap intervals); only where
            some example has a group.
        forgetting: Compression identified exemplars (with a dense population) and disparate
            impact against the dense teacher.
        counterfactual: Counterfactual term-swap measures, per list and pooled (``all``).
        gap_test: Is each group bias measure larger than chance? A permutation test of the group
            labels within each true class: ``{"test", "n_permutations", "seed", "p_value": {name: p}}``
            (:func:`~fairfront.objectives.measures.significance.permutation_gap_test`); only where
            some example has a group. Stored trials from before it have none.
        vs_dense: Compressed minus dense teacher on the same examples, signed: accuracy (all
            examples) and each group bias measure (grouped examples), each ``{"a", "b",
            "difference", "ci", "p_value"}`` under ``measures``, with a paired bootstrap interval
            and a randomization p-value
            (:func:`~fairfront.objectives.measures.significance.paired_differences`).
        degenerate: Whether the model is useless on the split (see
            :func:`~fairfront.objectives.measures.scoring.degeneracy`): ``one_class``,
            ``balanced_accuracy``, ``chance``, ``near_chance``, ``predicted_classes``, ``flagged``.
    """

    accuracy: dict[str, float | None] | None = None
    n: int | None = field(default=None, metadata={"record_only": True})
    agreement_with_dense: float | None = None
    bias: dict[str, float | None] | None = None
    fairness: dict[str, Any] | None = field(default=None, metadata={"record_only": True})
    forgetting: dict[str, Any] | None = field(default=None, metadata={"record_only": True})
    counterfactual: dict[str, Any] | None = field(default=None, metadata={"record_only": True})
    gap_test: dict[str, Any] | None = field(default=None, metadata={"record_only": True})
    vs_dense: dict[str, Any] | None = field(default=None, metadata={"record_only": True})
    degenerate: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        return _json_record(_without_none({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SplitScores:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"a split's scores hold {unknown[0]!r}; expected only: {', '.join(sorted(known))}")
        return cls(**record)

    def to_attrs(self, split: str, *, intervals: Collection[str] | None = None) -> dict[str, Scalar]:
        """The split's flat attributes, under ``split``: its measures, and the intervals of the bias
        measures in ``intervals`` (all that have one where None)."""
        record = self.to_record()
        flat: dict[str, Scalar] = {}
        for f in fields(self):
            if f.name in record and not f.metadata.get("record_only"):
                flat.update(_leaves(f"{split}.{f.name}", record[f.name], depth=1))
        for measure, ci in ((self.fairness or {}).get("ci") or {}).items():
            if (intervals is None or measure in intervals) and isinstance(ci, (list, tuple)) and len(ci) == 2:
                flat.update(_leaves(f"{split}.bias.{measure}", {"ci_low": ci[0], "ci_high": ci[1]}, depth=1))
        return flat


@dataclass
class TrainSummary:
    """The student's training: optimizer steps, the last loss, throughput, and how the step ran.

    ``step_mode`` is ``eager``, ``static shapes, uncaptured`` (with `` (capture failed)`` when a
    CUDA graph capture failed) or ``cuda graphs (N bucket(s) captured)``
    (:mod:`fairfront.objectives.training.captured_step`); None for trials stored before it.
    """

    steps: int
    final_loss: float | None
    examples_per_second: float | None
    step_mode: str | None = None

    def to_record(self) -> dict[str, Any]:
        return _json_record(_without_none({"steps": self.steps, "final_loss": self.final_loss,
                                           "examples_per_second": self.examples_per_second,
                                           "step_mode": self.step_mode}))


@dataclass
class Timings:
    """Where a trial's time went, and where it ran.

    Attributes:
        eval_s: Seconds measuring the compressed model (sizes excluded).
        total_s: Seconds for the whole trial.
        device: The torch device type the trial ran on.
        torch_threads: ``torch.get_num_threads()`` at the end of the trial.
        pid: The worker process.
        train_s: Seconds up to the end of training (classification trials).
        compress_s: Seconds compressing (masked-LM trials, which train nothing).
    """

    eval_s: float
    total_s: float
    device: str
    torch_threads: int
    pid: int
    train_s: float | None = None
    compress_s: float | None = None

    def to_record(self) -> dict[str, Any]:
        return _json_record(_without_none({"train_s": self.train_s, "compress_s": self.compress_s,
                                           "eval_s": self.eval_s, "total_s": self.total_s, "device": self.device,
                                           "torch_threads": self.torch_threads, "pid": self.pid}))


@dataclass
class TrialReport:
    """Everything one trial measured (see the module documentation for the stored layout).

    Attributes:
        compression: The sampled compression config, as JSON.
        task: ``"masked_lm"`` for a masked-LM trial; None for classification.
        compression_notes: What the compression families recorded, by attribute name; open, since
            a new family may record its own (:data:`COMPRESSION_NOTES` lists today's).
        train: The student's training (None for a masked-LM trial).
        size: Size measures by name (:mod:`fairfront.objectives.measures.registry`), plus ``params``.
        latency_ms: Median CPU latency per batch size (None when not measured).
        splits: ``{"validation": ..., "test": ...}``.
        intrinsic: Intrinsic benchmark results, with the dense model's, per benchmark.
        intrinsic_s: Seconds spent on the intrinsic benchmarks.
        timings: Where the trial's time went.
        replicates: A replicated trial's seeds, each objective's value per seed, their mean and
            standard error (None for a trial trained with one seed).
        extra: Other keys of a stored record (the worker, the driver's bookkeeping), kept so
            that :meth:`to_record` gives back what :meth:`from_record` read.
    """

    compression: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    compression_notes: dict[str, Any] = field(default_factory=dict)
    train: TrainSummary | None = None
    size: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[int, float] | None = None
    splits: dict[str, SplitScores] = field(default_factory=dict)
    intrinsic: dict[str, Any] | None = None
    intrinsic_s: float | None = None
    timings: Timings | None = None
    replicates: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def validation(self) -> SplitScores:
        """The validation split's scores (what the objective values are read from)."""
        return self.splits["validation"]

    @property
    def test(self) -> SplitScores:
        return self.splits["test"]

    @property
    def sizes(self) -> dict[str, float | None]:
        """Every size measure by its objective name, latency included (``latency_b1_ms``, ...)."""
        latency = {f"latency_b{k}_ms": ms for k, ms in (self.latency_ms or {}).items()}
        return {**self.size, **latency}

    def split(self, name: str) -> SplitScores:
        """The scores of ``name``, created empty where nothing was recorded for it yet."""
        return self.splits.setdefault(name, SplitScores())

    def to_record(self) -> dict[str, Any]:
        """The trial's full record: nested plain JSON, one key per part (see the module documentation)."""
        record: dict[str, Any] = {"compression": json_safe(self.compression)}
        if self.task is not None:
            record["task"] = self.task
        record.update(json_safe(self.compression_notes))
        if self.train is not None:
            record["train"] = self.train.to_record()
        record["size"] = json_safe(self.size)
        if self.latency_ms is not None:
            record["latency_ms"] = {int(k): json_safe(ms) for k, ms in self.latency_ms.items()}
        for name, scores in self.splits.items():
            record[name] = scores.to_record()
        if self.intrinsic is not None:
            record["intrinsic"] = json_safe(self.intrinsic)
        if self.intrinsic_s is not None:
            record["intrinsic_s"] = json_safe(self.intrinsic_s)
        if self.timings is not None:
            record["timings"] = self.timings.to_record()
        if self.replicates is not None:
            record["replicates"] = json_safe(self.replicates)
        record.update(json_safe(self.extra))
        return record

    def to_attrs(self, *, intervals: Collection[str] | None = None) -> dict[str, Scalar]:
        """The trial's flat user attributes: numbers and one-line text by dotted name (module documentation).

        ``intervals``: the bias measures whose bootstrap interval becomes ``<split>.bias.<measure>.ci_low``
        and ``.ci_high`` (the driver passes the study's bias objectives); None: every one that has one.
        """
        record = self.to_record()
        record["size"] = json_safe(self.sizes)
        flat: dict[str, Scalar] = {}
        for key, value in record.items():
            if key in self.splits:
                flat.update(self.splits[key].to_attrs(key, intervals=intervals))
            else:
                flat.update(_leaves(key, value))
        return flat

    @classmethod
    def from_compression(cls, record: dict[str, Any]) -> TrialReport:
        """A trial's report before measuring: what its compression half recorded.

        ``record`` holds ``compression``, ``task`` and ``train`` where they apply; every other key
        is a compression note.
        """
        report = cls.from_record(record)
        report.compression_notes.update(report.extra)
        report.extra = {}
        return report

    @classmethod
    def from_attrs(cls, user_attrs: dict[str, Any], system_attrs: dict[str, Any] | None = None) -> TrialReport:
        """Read a stored trial: its record (:data:`RECORD_ATTR`) where it has one, else its nested user attributes.

        Studies written before the record existed kept the nested layout in the user attributes.
        """
        record = (system_attrs or {}).get(RECORD_ATTR)
        return cls.from_record(record if isinstance(record, dict) else user_attrs)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrialReport:
        """Read a nested record (:meth:`to_record`'s layout)."""
        record = dict(record)
        train = record.pop("train", None)
        timings = record.pop("timings", None)
        latency = record.pop("latency_ms", None)
        report = cls(
            compression=record.pop("compression", {}),
            task=record.pop("task", None),
            train=TrainSummary(**train) if train is not None else None,
            size=record.pop("size", {}),
            latency_ms={int(k): ms for k, ms in latency.items()} if latency is not None else None,
            splits={name: SplitScores.from_record(record.pop(name))
                    for name in ("validation", "test") if name in record},
            intrinsic=record.pop("intrinsic", None),
            intrinsic_s=record.pop("intrinsic_s", None),
            timings=Timings(**timings) if timings is not None else None,
            replicates=record.pop("replicates", None),
        )
        report.compression_notes = {k: record.pop(k) for k in list(record) if k in COMPRESSION_NOTES}
        report.extra = record
        return report
