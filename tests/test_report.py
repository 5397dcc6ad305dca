"""A trial's typed report is exactly what the study stores, and the registry names every measure a user can pick."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fairfront._config import Table
from fairfront.objectives.measures import group_fairness
from fairfront.objectives.measures.intrinsic import INTRINSIC_BENCHMARKS
from fairfront.objectives.measures.objectives import TASKS, ObjectiveSpec
from fairfront.objectives.measures.registry import MEASURES, names
from fairfront.objectives.measures.report import MAX_TEXT, RECORD_ATTR, SplitScores, TrialReport, flat_attrs
from fairfront.objectives.measures.scoring import objective_values, score_split
from fairfront.objectives.training.prepare import compute
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.distillation import DistillationConfig
from fairfront.spaces.fairness import FairnessConfig
from fairfront.spaces.pruning import PruningConfig
from fairfront.spaces.schedules import SparsitySchedule
from fairfront.spaces.space import CompressionConfig

from conftest import REPO, tiny_study_text

README = (REPO / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def study_file():
    return parse_study_text(tiny_study_text("report"), base_dir=Path("."))


@pytest.fixture(scope="module")
def prepared(study_file):
    torch.set_num_threads(1)
    return compute(study_file.prepare_spec, log=lambda m: None, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def outcome(prepared, study_file):
    compression = CompressionConfig(pruning=PruningConfig(0.5, SparsitySchedule("one_shot", 0.5)),
                                    distillation=DistillationConfig(2.0, 0.5, student_layers=1),
                                    fairness=FairnessConfig("group_dro", 0.05))
    return run_trial(prepared, study_file.trial_spec(compression, 0), device=torch.device("cpu"), threads=1)


def test_a_trial_report_is_its_record(outcome) -> None:
    report = outcome.report
    assert report.to_record() == outcome.attrs
    assert TrialReport.from_record(outcome.attrs) == report
    assert TrialReport.from_attrs(outcome.attrs) == report  # a study written before the record: nested user attrs
    assert pickle.loads(pickle.dumps(outcome)).report == report  # it travels back from a Ray worker
    # what each attribute holds, read through the schema
    assert outcome.values[0] == report.validation.accuracy["accuracy"]
    assert outcome.values[1] == report.size["nonzero_params"] == report.sizes["nonzero_params"]
    assert outcome.values[2] == report.validation.bias["tpr_gap"]
    assert report.test.n == outcome.attrs["test"]["n"]
    assert report.train.steps == outcome.attrs["train"]["steps"] > 0
    assert report.timings.train_s <= report.timings.total_s
    assert report.sizes["latency_b1_ms"] == outcome.attrs["latency_ms"][1] > 0
    assert set(report.compression_notes) == {"student_layers", "achieved_sparsity", "group_dro_weights"}


def test_the_stored_record_reads_back_into_the_same_report(outcome) -> None:
    # Optuna stores every attribute as JSON; reading the study gives back what json.loads does
    stored = json.loads(json.dumps(outcome.attrs, allow_nan=False))
    flat = json.loads(json.dumps(outcome.report.to_attrs(), allow_nan=False))
    assert TrialReport.from_attrs(flat, {RECORD_ATTR: stored}) == outcome.report  # the record wins over flat attrs
    assert json.loads(json.dumps(outcome.report.to_record(), allow_nan=False)) == stored


def test_keys_added_after_the_trial_survive_a_read(outcome) -> None:
    stored = json.loads(json.dumps({**outcome.attrs, "worker": {"host": "node-1", "pid": 7},
                                    "student_batch_size": 16}))
    report = TrialReport.from_record(stored)
    assert report.extra == {"worker": {"host": "node-1", "pid": 7}, "student_batch_size": 16}
    assert json.loads(json.dumps(report.to_record())) == stored
    flat = report.to_attrs()
    assert flat["student_batch_size"] == 16 and not any(k.startswith("worker") for k in flat)  # bookkeeping


def test_the_user_attributes_are_flat_numbers_named_by_their_place_in_the_record(outcome) -> None:
    report, flat = outcome.report, outcome.report.to_attrs()
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())
    assert all(len(v) <= MAX_TEXT and "\n" not in v for v in flat.values() if isinstance(v, str))
    for split in ("validation", "test"):
        scores = report.splits[split]
        assert flat[f"{split}.accuracy"] == scores.accuracy["accuracy"]  # said once, not accuracy.accuracy
        assert flat[f"{split}.accuracy.macro_f1"] == scores.accuracy["macro_f1"]
        assert flat[f"{split}.agreement_with_dense"] == scores.agreement_with_dense
        assert {k for k in flat if k.startswith(f"{split}.bias.") and "ci_" not in k} == {
            f"{split}.bias.{m}" for m, v in scores.bias.items() if v is not None}
        low, high = scores.fairness["ci"]["tpr_gap"]
        assert flat[f"{split}.bias.tpr_gap.ci_low"] == low <= flat[f"{split}.bias.tpr_gap"] <= high
        assert flat[f"{split}.bias.tpr_gap.ci_high"] == high
    assert flat["size.nonzero_params"] == report.size["nonzero_params"] == outcome.values[1]
    assert flat["size.latency_b1_ms"] == report.latency_ms[1]
    assert flat["achieved_sparsity"] == report.compression_notes["achieved_sparsity"]
    assert flat["timings.total_s"] == report.timings.total_s and flat["train.steps"] == report.train.steps
    # the nested parts (config, per-group reports, intervals of other measures) stay in the record only
    assert not any(k.startswith(("compression", "latency_ms", "validation.fairness", "test.fairness")) for k in flat)
    only_objective = report.to_attrs(intervals=["tpr_gap"])
    assert {k for k in only_objective if k.endswith(".ci_low")} == {"validation.bias.tpr_gap.ci_low",
                                                                    "test.bias.tpr_gap.ci_low"}
    assert {k for k in flat if k.endswith(".ci_low")} > {k for k in only_objective if k.endswith(".ci_low")}


def test_a_field_added_to_the_report_becomes_a_flat_attribute_without_more_code() -> None:
    report = TrialReport(size={"nonzero_params": 3.0}, extra={"energy": {"joules": 2.5, "per_step": [1, 2]},
                                                              "note": "line one\nline two", "label": "x" * 500})
    flat = report.to_attrs()
    assert flat["energy.joules"] == 2.5 and "energy.per_step" not in flat  # lists stay in the record
    assert "note" not in flat and flat["label"] == "x" * (MAX_TEXT - 1) + "\u2026"
    assert flat_attrs({"fail_reason": "ValueError: bad", "traceback": "Traceback\n  ...", "fairfront.attempts": 2}) \
        == {"fail_reason": "ValueError: bad", "fairfront.attempts": 2}


def test_a_split_without_groups_stores_undefined_bias_as_none(prepared, study_file) -> None:
    data = prepared.splits["validation"]
    no_groups = np.full(len(data), -1)
    scores = score_split(prepared, "validation", data.labels, prepared.dense_predictions("validation"), no_groups)
    attrs = scores.to_record()
    assert not any(k.startswith("validation.bias.") for k in scores.to_attrs("validation"))  # undefined: no attribute
    assert set(attrs["bias"]) == set(group_fairness.BIAS_MEASURES)
    assert all(v is None for v in attrs["bias"].values())
    assert "fairness" not in attrs
    json.dumps(attrs, allow_nan=False)
    report = TrialReport(size={"nonzero_params": 1.0}, splits={"validation": scores})
    with pytest.raises(ValueError, match=r"a measure is undefined on the validation split: .*'bias': None"):
        objective_values(report, study_file.objectives)


def test_nan_is_stored_as_none_everywhere() -> None:
    report = TrialReport(compression={"pruning": {"sparsity": float("nan")}}, size={"int8_bytes": float("inf")},
                         splits={"validation": SplitScores(bias={"tpr_gap": float("nan")},
                                                           accuracy={"accuracy": np.float32(0.5)})},
                         compression_notes={"achieved_sparsity": np.float64("nan")})
    attrs = report.to_record()
    json.dumps(attrs, allow_nan=False)
    assert report.to_attrs() == {"validation.accuracy": 0.5}
    assert attrs["validation"] == {"accuracy": {"accuracy": 0.5}, "bias": {"tpr_gap": None}}
    assert attrs["size"]["int8_bytes"] is None and attrs["achieved_sparsity"] is None
    assert attrs["compression"]["pruning"]["sparsity"] is None


def _readme_section(title: str) -> str:
    start = README.index(title)
    end = README.index("\n#", start + len(title))
    return README[start:end]


def _table_names(section: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_registry_covers_every_bias_measure_the_readme_lists() -> None:
    listed = (_table_names(_readme_section("## Bias measures"))
              | _table_names(_readme_section("### Intrinsic benchmarks")))
    assert listed == set(names(kind="bias", objective=True))
    assert all(MEASURES[name].kind == "bias" for name in listed)


def test_registry_covers_every_name_objectives_accept() -> None:
    rows = {key: row for key, row in re.findall(r"^\| `(accuracy|size|bias)` \| (.*)$",
                                                  _readme_section("### `[objectives]`"), flags=re.MULTILINE)}
    documented = {kind: {n for n in re.findall(r"`([a-z0-9_]+)`", row) if n not in TASKS} for kind, row in rows.items()}
    assert set().union(*documented.values()) <= set(MEASURES)
    assert set(names(kind="accuracy", objective=True)) <= documented["accuracy"]
    assert set(names(kind="size", objective=True)) == documented["size"]
    assert documented["bias"] <= set(names(kind="bias", objective=True))  # the rest: the bias measures' tables
    # and each name the registry offers is accepted by a study of its task
    for measure in MEASURES.values():
        if not measure.objective:
            continue
        task = measure.task or "classification"
        spec = ObjectiveSpec.from_table(Table({measure.kind: measure.name}, "objectives"), task=task)
        assert getattr(spec, measure.kind) in (measure.name, (measure.name,))


def test_registry_agrees_with_the_measure_modules() -> None:
    assert set(names(kind="bias", needs="groups")) == set(group_fairness.BIAS_MEASURES)
    assert set(names(kind="bias", needs="intrinsic")) == set(INTRINSIC_BENCHMARKS)
    assert all(m.paper for m in MEASURES.values() if m.kind == "bias")
