"""The study file: one TOML document parsed into typed, validated settings.

Everything is checked here, before a study is created: unknown keys, wrong types, out-of-range
values, a missing model folder, a missing data file or column. Each mistake is one
:class:`~fairfront.errors.ConfigError` line naming the key, the value and what is allowed.

The file's text is stored in the study (user attribute ``fairfront.study_file``), so
``fairfront resume NAME`` needs only the study's name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.data.task import DataSpec
from fairfront.objectives.measures.bias_settings import BiasSettings, check_objectives
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.training.model_spec import MINILM, TINY, ModelSpec
from fairfront.objectives.training.settings import CUDA_GRAPH_MODES, TrainSettings
from fairfront.objectives.training.teacher_settings import TeacherSettings
from fairfront.search.constraints import Constraints
from fairfront.search.samplers import SAMPLERS
from fairfront.spaces.registry import families_for_task
from fairfront.spaces.space import CompressionConfig, SearchSpace

if TYPE_CHECKING:  # the study file is read without torch; these are built only to run trials
    from fairfront.objectives.training.prepare import PrepareSpec
    from fairfront.objectives.training.trial import TrialSpec

__all__ = ["StudySettings", "Execution", "StudyFile", "load_study_file", "parse_study_text", "replicate_seed",
           "MAX_REPLICATES"]

MAX_REPLICATES = 32
"""The most seeds ``[study] replicates`` may give a trial."""

SEED_STRIDE = 1_000_003
"""Between a trial's replicate seeds: above the most trials a study may have, so no two (trial, replicate)
pairs of a study share a seed."""


def replicate_seed(study_seed: int, number: int, replicate: int) -> int:
    """The seed of replicate ``replicate`` of trial ``number``; replicate 0 is the seed an unreplicated trial has.

    ``fairfront confirm`` draws its seeds from replicate indices at and above :data:`MAX_REPLICATES`,
    so they never repeat a seed the study trained with.
    """
    return study_seed + number + replicate * SEED_STRIDE


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class StudySettings:
    """``[study]``."""

    name: str
    n_trials: int
    sampler: str = "tpe"
    seed: int = 0
    population_size: int | None = None
    bootstrap_resamples: int = 200
    replicates: int = 1

    @classmethod
    def from_table(cls, t: Table) -> StudySettings:
        name = t.string("name")
        if not _NAME.match(name):
            raise ConfigError(t.key("name"), name, "letters, digits, '_', '.', '-' (at most 128, not starting "
                              "with a symbol)")
        s = cls(name=name, n_trials=t.integer("n_trials", low=1, high=1_000_000),
                sampler=t.string("sampler", "tpe", choices=tuple(SAMPLERS)), seed=t.integer("seed", 0, low=0),
                population_size=t.integer("population_size", None, low=2, high=10_000),
                bootstrap_resamples=t.integer("bootstrap_resamples", 200, low=0, high=100_000),
                replicates=t.integer("replicates", 1, low=1, high=MAX_REPLICATES))
        t.done()
        return s


@dataclass(frozen=True)
class Execution:
    """``[execution]``: resources per trial, how many trials run at once, and how failures are handled.

    ``parallel`` caps the trials in flight; fewer run while the Ray cluster cannot fit that many
    (counted node by node, and again as nodes join or leave). ``max_retries`` is how often a
    trial whose worker process or node died is run again before it fails; a trial that runs out
    of CUDA memory is always retried once with half the student's batch size. A trial running
    longer than ``trial_timeout_s`` (from its submission) is cancelled and fails with that reason.
    ``cuda_graphs`` (``auto``/``off``): whether a trial on a GPU captures its training step in
    CUDA graphs where the step qualifies (:mod:`fairfront.objectives.training.captured_step`).
    """

    parallel: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failed_trials: int | None = None
    max_retries: int = 1
    trial_timeout_s: float | None = None
    cuda_graphs: str = "auto"

    @classmethod
    def from_table(cls, t: Table) -> Execution:
        e = cls(parallel=t.integer("parallel", 1, low=1, high=100_000),
                cpus_per_trial=t.number("cpus_per_trial", 1.0, low=0.0, low_open=True, high=1024),
                gpus_per_trial=t.number("gpus_per_trial", 0.0, low=0.0, high=64),
                max_failed_trials=t.integer("max_failed_trials", None, low=0),
                max_retries=t.integer("max_retries", 1, low=0, high=100),
                trial_timeout_s=t.number("trial_timeout_s", None, low=0.0, low_open=True, high=30 * 86400.0),
                cuda_graphs=t.string("cuda_graphs", "auto", choices=CUDA_GRAPH_MODES))
        for key in ("cpus_per_trial", "gpus_per_trial", "trial_timeout_s"):  # TOML allows nan, which compares false
            value = getattr(e, key)
            if value is not None and value != value:
                raise ConfigError(t.key(key), value, "a number, not nan")
        if e.gpus_per_trial > 1 and e.gpus_per_trial != int(e.gpus_per_trial):
            raise ConfigError(t.key("gpus_per_trial"), e.gpus_per_trial,
                              "a fraction in (0, 1] or a whole number of GPUs")
        t.done()
        return e


@dataclass(frozen=True)
class StudyFile:
    study: StudySettings
    objectives: ObjectiveSpec
    model: ModelSpec
    data: DataSpec | None
    teacher: TrainSettings
    student: TrainSettings
    space: SearchSpace
    execution: Execution
    text: str
    path: str | None = None
    bias: BiasSettings = BiasSettings()
    constraints: Constraints = Constraints()

    @property
    def prepare_spec(self) -> PrepareSpec:
        from fairfront.objectives.training.prepare import PrepareSpec

        return PrepareSpec(self.model, self.data, self.teacher, self.study.seed, self.bias)

    def trial_spec(self, compression: CompressionConfig, number: int, replicate: int = 0) -> TrialSpec:
        """Everything a worker needs to run replicate ``replicate`` of trial ``number`` with ``compression``."""
        from fairfront.objectives.training.trial import TrialSpec

        seed = replicate_seed(self.study.seed, number, replicate)
        spec = TrialSpec(compression, self.student, self.objectives, seed=seed,
                         bootstrap_resamples=self.study.bootstrap_resamples,
                         cuda_graphs=self.execution.cuda_graphs)
        if self.data is None:
            return spec
        columns = self.data.group_column
        return replace(spec, min_group_size=self.data.min_group_size, small_groups=self.data.small_groups,
                       group_objective=self.data.group_objective,
                       group_attributes=columns if isinstance(columns, tuple) else ())

    def replicate_specs(self, compression: CompressionConfig, number: int) -> list[TrialSpec]:
        """One spec per replicate of trial ``number`` (``[study] replicates``), each with its own seed."""
        return [self.trial_spec(compression, number, r) for r in range(self.study.replicates)]

    def with_trials(self, n_trials: int) -> StudyFile:
        return replace(self, study=replace(self.study, n_trials=n_trials))


def load_study_file(path: str | Path) -> StudyFile:
    """Read and validate a study file; relative paths inside it are relative to its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("study file", str(path), "an existing .toml file")
    sf = parse_study_text(p.read_text(encoding="utf-8"), base_dir=p.resolve().parent)
    return replace(sf, path=str(p))


def parse_study_text(text: str, *, base_dir: Path) -> StudyFile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("study file", message=f"not valid TOML: {err}") from None
    root = Table(raw, "")
    study = StudySettings.from_table(root.table("study", required=True))
    model = ModelSpec.from_table(root.table("model", required=True), base_dir=base_dir)
    masked = model.task == "masked_lm"
    objectives = ObjectiveSpec.from_table(root.table("objectives"), task=model.task)
    if masked:
        for section in ("data", "teacher", "student"):
            if section in raw:
                raise ConfigError(section, message=f"a masked_lm study ([model] task = \"masked_lm\") has no "
                                  f"[{section}]: nothing is fine-tuned; the pretrained masked LM is the dense model")
        data = None
    else:
        data = DataSpec.from_table(root.table("data", required=True), base_dir=base_dir)
    teacher = TeacherSettings.from_table(root.table("teacher"), defaults=TrainSettings(epochs=3.0))
    student = TrainSettings.from_table(root.table("student"))
    space = SearchSpace.from_table(root.table("space", required=True))
    execution = Execution.from_table(root.table("execution"))
    bias = BiasSettings.from_table(root.table("bias"), base_dir=base_dir)
    constraints = Constraints.from_table(root.table("constraints"), objectives)
    root.done()
    check_objectives(bias, objectives.bias)
    if data is None:  # a masked_lm study
        _check_masked_lm(model, bias, space, raw.get("space", {}), objectives)
    else:
        _check_intrinsic(model, bias)
        _check_groups(space, data)
    return StudyFile(study, objectives, model, data, teacher, student, space, execution, text, bias=bias,
                     constraints=constraints)


def _check_intrinsic(model: ModelSpec, bias: BiasSettings) -> None:
    """A masked-LM benchmark needs a checkpoint that ships a pretrained masked-LM head."""
    if not bias.intrinsic:
        return
    from fairfront.objectives.measures.intrinsic import INTRINSIC_BENCHMARKS  # torch: only where benchmarks are
    from fairfront.objectives.training.masked_lm import check_masked_lm_head

    needing = [n for n in bias.intrinsic if INTRINSIC_BENCHMARKS[n].needs == "masked_lm"]
    if not needing:
        return
    if model.is_tiny:
        raise ConfigError("bias.intrinsic", needing[0], message=f"bias.intrinsic: {needing[0]!r} needs a pretrained "
                          f"masked-LM head, which '{TINY}' has not; give [model] name = a folder that ships one "
                          "(or use only 'seat', which works on any encoder)")
    check_masked_lm_head(model.source, name=model.name)


def _check_masked_lm(model: ModelSpec, bias: BiasSettings, space: SearchSpace, raw_space: dict,
                     objectives: ObjectiveSpec) -> None:
    """What a masked_lm study can do: nothing is trained and there are no labels or groups."""
    from fairfront.objectives.training.masked_lm import check_masked_lm_head

    if model.is_tiny or model.name in MINILM:
        raise ConfigError("model.name", model.name, "a model folder or hub name with a pretrained masked-LM head "
                          "(e.g. bert-base-uncased) for [model] task = \"masked_lm\"")
    check_masked_lm_head(model.source, name=model.name)
    allowed = families_for_task("masked_lm")
    for family in raw_space:
        if family not in allowed:
            raise ConfigError(f"space.{family}", message=f"[space.{family}] needs [model] task = \"classification\" "
                              "(labelled, trained data); a masked_lm study allows: "
                              + ", ".join(f"[space.{f}]" for f in allowed))
    space.check_task("masked_lm", raw_space)
    if bias.dense_population or bias.counterfactual:
        raise ConfigError("bias.dense_population" if bias.dense_population else "bias.counterfactual",
                          message="needs [model] task = \"classification\" (a fine-tuned classifier's predictions)")
    if not bias.intrinsic:
        raise ConfigError("bias.intrinsic", message="a masked_lm study scores intrinsic benchmarks: set [bias] "
                          "intrinsic = [...] (stereoset, crows_pairs, winobias, seat)")
    if objectives.accuracy.startswith("stereoset_") and "stereoset" not in bias.intrinsic:
        raise ConfigError("objectives.accuracy", message=f"{objectives.accuracy!r} is measured on StereoSet: list "
                          "'stereoset' in [bias] intrinsic")


def _check_groups(space: SearchSpace, data: DataSpec) -> None:
    """A family that needs each example's group (a fairness loss) needs data that has one."""
    if data.group_membership is not None:
        _check_membership_levers(space)
    needing = space.needing_groups()
    if not needing:
        return
    family = needing[0]
    if data.source not in ("file", "hf") and not _has_groups(data):
        raise ConfigError(f"space.{family.name}", message=f"data source {data.source!r} has no group column; "
                          f"{family.needs_groups} needs one")
    if data.source in ("file", "hf") and data.group_column is None and data.group_membership is None:
        raise ConfigError("data.group_column", None, "a column naming each example's group (needed by "
                          f"[space.{family.name}])")


def _group_levers(space: SearchSpace) -> list[tuple[str, str]]:
    """``(study-file key, what it does)`` of each searched training lever that needs one group id per example.

    The group penalties, group DRO and fairness-aware pruning scores read memberships (a group's
    rate or loss over its members); group reweighting (one weight per group) and fair
    distillation's running group-recall deficit read one group id per example.
    """
    levers = []
    fairness = getattr(space, "fairness", None)
    if fairness is not None and "group_reweight" in fairness.methods:
        levers.append(("space.fairness.method", "'group_reweight' (one weight per group)"))
    distill = getattr(space, "fair_distillation", None)
    if distill is not None and any(m != "disagreement" for m in distill.modes):
        levers.append(("space.fair_distillation.mode", "a group-recall weighting"))
    return levers


def _check_membership_levers(space: SearchSpace) -> None:
    """Overlapping groups give no single group per example, which some training levers read."""
    levers = _group_levers(space)
    if levers:
        key, what = levers[0]
        raise ConfigError(key, message=f"{what} needs one group per example, but [data] group_membership gives "
                          "overlapping groups (a row may be in several or none); use group_column, or leave this "
                          "lever out (group measures, bias objectives, the fairness penalties, group_dro and "
                          "fairness-aware pruning work with group_membership)")


def _has_groups(data: DataSpec) -> bool:
    from fairfront.objectives.data import datasets

    info = datasets.DATASETS.get(data.source)
    return info is None or info.provides_groups(**data.options)
