"""Every compression family applied for real in one trial, on a tiny BERT trained in the test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from fairfront.objectives.training.prepare import compute
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.distillation import DistillationConfig
from fairfront.spaces.fair_compression import FairDistillationConfig
from fairfront.spaces.fairness import FairnessConfig
from fairfront.spaces.imbalance import ImbalanceConfig
from fairfront.spaces.pruning import PruningConfig
from fairfront.spaces.quantization import QuantizationConfig
from fairfront.spaces.schedules import SparsitySchedule
from fairfront.spaces.space import CompressionConfig
from fairfront.spaces.structured import StructuredConfig

from conftest import tiny_study_text

FOUR_LAYERS = tiny_study_text("trial").replace('max_length = 32', 'max_length = 32\ntiny_layers = 4')


@pytest.fixture(scope="module")
def study_file():
    return parse_study_text(FOUR_LAYERS, base_dir=Path("."))


@pytest.fixture(scope="module")
def prepared(study_file):
    torch.set_num_threads(1)
    return compute(study_file.prepare_spec, log=lambda m: None, device=torch.device("cpu"))


def _run(prepared, study_file, compression: CompressionConfig, **kw):
    spec = study_file.trial_spec(compression, 0)
    return run_trial(prepared, spec, device=torch.device("cpu"), threads=1, **kw)


def test_teacher_learns_the_task(prepared) -> None:
    val = prepared.splits["validation"]
    accuracy = float((prepared.dense_predictions("validation") == val.labels).mean())
    majority = float(np.bincount(val.labels).max() / len(val))
    assert accuracy > majority + 0.05


def test_plain_trial_reports_consistent_values(prepared, study_file) -> None:
    out = _run(prepared, study_file, CompressionConfig(pruning=PruningConfig(0.5, SparsitySchedule("one_shot", 0.5))))
    accuracy, size, bias = out.values
    assert accuracy == out.attrs["validation"]["accuracy"]["accuracy"]
    assert abs(out.attrs["achieved_sparsity"] - 0.5) < 0.005
    assert size == out.attrs["size"]["nonzero_params"] < out.attrs["size"]["params"]
    assert out.attrs["size"]["sparse_bytes"] < out.attrs["size"]["dense_bytes"]
    assert set(out.attrs["latency_ms"]) == {1, 32} and all(v > 0 for v in out.attrs["latency_ms"].values())
    assert out.attrs["test"]["n"] == len(prepared.splits["test"])
    assert bias == out.attrs["validation"]["bias"]["tpr_gap"]


def test_movement_pruning_trial_reaches_its_sparsity(prepared, study_file) -> None:
    pruning = PruningConfig(0.7, SparsitySchedule("iterative", 0.7, 0.1, 0.6, iterations=3), criterion="movement")
    out = _run(prepared, study_file, CompressionConfig(pruning=pruning))
    assert abs(out.attrs["achieved_sparsity"] - 0.7) < 0.005
    assert out.attrs["compression"]["pruning"]["criterion"] == "movement"


def test_every_family_together(prepared, study_file) -> None:
    compression = CompressionConfig(
        distillation=DistillationConfig(2.0, 0.5, student_layers=2, hidden_weight=0.5, attention_weight=0.5),
        structured=StructuredConfig(0.5, 0.25, fairness_mix=0.5),
        pruning=PruningConfig(0.6, SparsitySchedule("gradual", 0.6, 0.0, 0.5, 2), fairness_mix=0.5),
        imbalance=ImbalanceConfig("focal", 2.0),
        fairness=FairnessConfig("equal_opportunity", 1.0),
        fair_distillation=FairDistillationConfig(2.0, "both"),
        quantization=QuantizationConfig(True),
    )
    out = _run(prepared, study_file, compression)
    a = out.attrs
    assert a["student_layers"] == [0, 2]
    assert a["structured"]["params_after"] < a["structured"]["params_before"]
    assert abs(a["achieved_sparsity"] - 0.6) < 0.005
    assert a["size"]["int8_bytes"] < a["size"]["dense_bytes"]
    assert all(math.isfinite(v) for v in out.values)


@pytest.mark.parametrize("method", ["group_dro", "group_reweight", "equalized_odds", "demographic_parity"])
def test_group_methods_train(prepared, study_file, method: str) -> None:
    weight = 0.05 if method == "group_dro" else 0.5
    out = _run(prepared, study_file, CompressionConfig(fairness=FairnessConfig(method, weight)))
    assert all(math.isfinite(v) for v in out.values)
    if method == "group_dro":
        assert abs(sum(out.attrs["group_dro_weights"]) - 1) < 1e-6


def test_space_samples_every_family(study_file) -> None:
    text = FOUR_LAYERS + """
[space.structured]
head_fraction = [0.0, 0.5]
[space.imbalance]
[space.fair_distillation]
[space.quantization]
"""
    text = text.replace("alpha = [0.0, 0.9]", "alpha = [0.0, 0.9]\nstudent_layers = [1, 4]")
    sf = parse_study_text(text, base_dir=Path("."))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(5):
        config = sf.space.sample(study.ask())
        assert config.structured is not None and config.quantization is not None
        assert 1 <= config.distillation.student_layers <= 4
    with pytest.raises(Exception, match="at most the teacher's 3 layers"):
        sf.space.distillation.check_model(3)
