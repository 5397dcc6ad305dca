"""What a trial measured, as a typed record: the schema of a trial's user attributes.

A trial returns its measures as a :class:`TrialReport`; the driver stores
:meth:`TrialReport.to_attrs` as the Optuna trial's user attributes (one key each), and
:meth:`TrialReport.from_attrs` reads a stored trial back. The dashboard, ``fairfront front`` and
``status`` and every stored study read those attributes, so the dict is the contract and the
classes here document it::

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

Every value is JSON: an undefined measure is ``None``, never NaN (:mod:`fairfront.jsonsafe`).

Example:
    >>> report = TrialReport(compression={}, size={"nonzero_params": 10.0},
    ...                      splits={"validation": SplitScores(bias={"tpr_gap": float("nan")})})
    >>> report.to_attrs()["validation"]
    {'bias': {'tpr_gap': None}}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fairfront.jsonsafe import json_safe

__all__ = ["TrialReport", "SplitScores", "TrainSummary", "Timings", "COMPRESSION_NOTES"]

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
    """``record`` as stored in a trial's user attributes (see :func:`~fairfront.jsonsafe.json_safe`)."""
    safe: dict[str, Any] = json_safe(record)
    return safe


def _without_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


@dataclass
class SplitScores:
    """Every measure of one split (or one benchmark half); a field that is None is not recorded.

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
    n: int | None = None
    agreement_with_dense: float | None = None
    bias: dict[str, float | None] | None = None
    fairness: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = None
    counterfactual: dict[str, Any] | None = None
    gap_test: dict[str, Any] | None = None
    vs_dense: dict[str, Any] | None = None
    degenerate: dict[str, Any] | None = None

    def to_attrs(self) -> dict[str, Any]:
        return _json_record(_without_none({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SplitScores:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise ValueError(f"a split's scores hold {unknown[0]!r}; expected only: {', '.join(sorted(known))}")
        return cls(**attrs)


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

    def to_attrs(self) -> dict[str, Any]:
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

    def to_attrs(self) -> dict[str, Any]:
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
        extra: Other attributes of a stored trial (the worker, the driver's bookkeeping), kept so
            that :meth:`to_attrs` gives back what :meth:`from_attrs` read.
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

    def to_attrs(self) -> dict[str, Any]:
        """The trial's user attributes: plain JSON values, one key per attribute."""
        attrs: dict[str, Any] = {"compression": json_safe(self.compression)}
        if self.task is not None:
            attrs["task"] = self.task
        attrs.update(json_safe(self.compression_notes))
        if self.train is not None:
            attrs["train"] = self.train.to_attrs()
        attrs["size"] = json_safe(self.size)
        if self.latency_ms is not None:
            attrs["latency_ms"] = {int(k): json_safe(ms) for k, ms in self.latency_ms.items()}
        for name, scores in self.splits.items():
            attrs[name] = scores.to_attrs()
        if self.intrinsic is not None:
            attrs["intrinsic"] = json_safe(self.intrinsic)
        if self.intrinsic_s is not None:
            attrs["intrinsic_s"] = json_safe(self.intrinsic_s)
        if self.timings is not None:
            attrs["timings"] = self.timings.to_attrs()
        attrs.update(json_safe(self.extra))
        return attrs

    @classmethod
    def from_compression(cls, record: dict[str, Any]) -> TrialReport:
        """A trial's report before measuring: what its compression half recorded.

        ``record`` holds ``compression``, ``task`` and ``train`` where they apply; every other key
        is a compression note.
        """
        report = cls.from_attrs(record)
        report.compression_notes.update(report.extra)
        report.extra = {}
        return report

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialReport:
        """Read a stored trial's user attributes."""
        attrs = dict(attrs)
        train = attrs.pop("train", None)
        timings = attrs.pop("timings", None)
        latency = attrs.pop("latency_ms", None)
        report = cls(
            compression=attrs.pop("compression", {}),
            task=attrs.pop("task", None),
            train=TrainSummary(**train) if train is not None else None,
            size=attrs.pop("size", {}),
            latency_ms={int(k): ms for k, ms in latency.items()} if latency is not None else None,
            splits={name: SplitScores.from_attrs(attrs.pop(name)) for name in ("validation", "test") if name in attrs},
            intrinsic=attrs.pop("intrinsic", None),
            intrinsic_s=attrs.pop("intrinsic_s", None),
            timings=Timings(**timings) if timings is not None else None,
        )
        report.compression_notes = {k: attrs.pop(k) for k in list(attrs) if k in COMPRESSION_NOTES}
        report.extra = attrs
        return report
