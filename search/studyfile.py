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

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.bias_settings import BiasSettings, check_objectives
from fairfront.objectives.data import DataSpec
from fairfront.objectives.measures import ObjectiveSpec
from fairfront.objectives.models import ModelSpec
from fairfront.objectives.prepare import PrepareSpec
from fairfront.objectives.training import TrainSettings
from fairfront.search.samplers import SAMPLERS
from fairfront.objectives.trial import TrialSpec
from fairfront.spaces.space import CompressionConfig, SearchSpace

__all__ = ["StudySettings", "Execution", "StudyFile", "load_study_file", "parse_study_text"]

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

    @classmethod
    def from_table(cls, t: Table) -> StudySettings:
        name = t.string("name")
        if not _NAME.match(name):
            raise ConfigError(t.key("name"), name, "letters, digits, '_', '.', '-' (at most 128, not starting "
                              "with a symbol)")
        s = cls(name=name, n_trials=t.integer("n_trials", low=1, high=1_000_000),
                sampler=t.string("sampler", "tpe", choices=tuple(SAMPLERS)), seed=t.integer("seed", 0, low=0),
                population_size=t.integer("population_size", None, low=2, high=10_000),
                bootstrap_resamples=t.integer("bootstrap_resamples", 200, low=0, high=100_000))
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
    """

    parallel: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failed_trials: int | None = None
    max_retries: int = 1
    trial_timeout_s: float | None = None

    @classmethod
    def from_table(cls, t: Table) -> Execution:
        e = cls(parallel=t.integer("parallel", 1, low=1, high=100_000),
                cpus_per_trial=t.number("cpus_per_trial", 1.0, low=0.0, low_open=True, high=1024),
                gpus_per_trial=t.number("gpus_per_trial", 0.0, low=0.0, high=64),
                max_failed_trials=t.integer("max_failed_trials", None, low=0),
                max_retries=t.integer("max_retries", 1, low=0, high=100),
                trial_timeout_s=t.number("trial_timeout_s", None, low=0.0, low_open=True, high=30 * 86400.0))
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
    data: DataSpec
    teacher: TrainSettings
    student: TrainSettings
    space: SearchSpace
    execution: Execution
    text: str
    path: str | None = None
    bias: BiasSettings = BiasSettings()

    @property
    def prepare_spec(self) -> PrepareSpec:
        return PrepareSpec(self.model, self.data, self.teacher, self.study.seed, self.bias)

    def trial_spec(self, compression: CompressionConfig, number: int) -> TrialSpec:
        """Everything a worker needs to run trial ``number`` with the sampled ``compression``."""
        return TrialSpec(compression, self.student, self.objectives, seed=self.study.seed + number,
                         bootstrap_resamples=self.study.bootstrap_resamples)

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
    objectives = ObjectiveSpec.from_table(root.table("objectives"))
    model = ModelSpec.from_table(root.table("model", required=True), base_dir=base_dir)
    data = DataSpec.from_table(root.table("data", required=True), base_dir=base_dir)
    teacher = TrainSettings.from_table(root.table("teacher"), defaults=TrainSettings(epochs=3.0))
    student = TrainSettings.from_table(root.table("student"))
    space = SearchSpace.from_table(root.table("space", required=True))
    execution = Execution.from_table(root.table("execution"))
    bias = BiasSettings.from_table(root.table("bias"), base_dir=base_dir)
    root.done()
    check_objectives(bias, objectives.bias)
    if space.fairness is not None and data.source not in ("file", "hf") and not _has_groups(data):
        raise ConfigError("space.fairness", message=f"data source {data.source!r} has no group column; "
                          "a fairness loss needs one")
    if data.source in ("file", "hf") and data.group_column is None and (space.fairness is not None):
        raise ConfigError("data.group_column", None, "a column naming each example's group (needed by "
                          "[space.fairness])")
    return StudyFile(study, objectives, model, data, teacher, student, space, execution, text, bias=bias)


def _has_groups(data: DataSpec) -> bool:
    from fairfront.objectives import datasets

    info = datasets.DATASETS.get(data.source)
    return info is None or info.provides_groups(**data.options)
