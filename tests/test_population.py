"""The dense population (Hooker et al. CIEs): prepared once, cached, and scored in every trial."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.measures.forgetting import cie_report, disparate_impact
from fairfront.objectives.training import trial as trial_module
from fairfront.objectives.training.population import forgetting_measures, member_seeds, train_population
from fairfront.objectives.training.prepare import CACHE_FORMAT, compute, load_cached, prepare, store
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.pruning import PruningConfig
from fairfront.spaces.schedules import SparsitySchedule
from fairfront.spaces.space import CompressionConfig

from conftest import tiny_study_text

N_EXTRA = 2


def _study_text(n_extra: int = N_EXTRA, bias: str = '["tpr_gap", "cie_fraction"]') -> str:
    text = tiny_study_text("population").replace("[model]", f"[objectives]\nbias = {bias}\n\n[model]")
    return text + f"\n[bias]\ndense_population = {n_extra}\n"


@pytest.fixture(scope="module")
def study_file():
    return parse_study_text(_study_text(), base_dir=Path("."))


@pytest.fixture(scope="module")
def logged_prepare(study_file):
    torch.set_num_threads(1)
    lines: list[str] = []
    prepared = compute(study_file.prepare_spec, log=lines.append, device=torch.device("cpu"))
    return prepared, lines


@pytest.fixture(scope="module")
def prepared(logged_prepare):
    return logged_prepare[0]


def test_population_has_the_teacher_and_n_distinct_members(prepared) -> None:
    pop = prepared.population
    assert pop is not None and len(pop) == N_EXTRA + 1
    assert pop.seeds == member_seeds(0, N_EXTRA) == (0, 1, 2)
    for split in ("validation", "test"):
        predictions = prepared.population_predictions(split)
        assert predictions.shape == (N_EXTRA + 1, len(prepared.splits[split]))
        np.testing.assert_array_equal(predictions[0], prepared.dense_predictions(split))  # the teacher is member 0
        # every extra member is a different model: its predictions differ from every other member's somewhere
        for k in range(1, N_EXTRA + 1):
            others = np.delete(predictions, k, axis=0)
            assert all((predictions[k] != other).any() for other in others)
    labels = prepared.splits["validation"].labels
    assert pop.accuracies["validation"] == pytest.approx(
        [float((row == labels).mean()) for row in prepared.population_predictions("validation")])


def test_preparation_logs_each_member(logged_prepare) -> None:
    lines = logged_prepare[1]
    for k in range(1, N_EXTRA + 1):
        assert any(line.startswith(f"dense population member {k}/{N_EXTRA} (seed {k})") for line in lines)


def test_cache_round_trip_is_identical_and_pickles(prepared, study_file, tmp_path: Path) -> None:
    folder = tmp_path / prepared.fingerprint
    store(prepared, folder)
    assert json.loads((folder / "meta.json").read_text())["format"] == CACHE_FORMAT
    loaded = load_cached(folder)
    for p in (loaded, pickle.loads(pickle.dumps(prepared))):  # Ray ships a Prepared by pickling it
        assert p.population.seeds == prepared.population.seeds
        assert p.population.accuracies == prepared.population.accuracies
        for split in ("validation", "test"):
            np.testing.assert_array_equal(p.population_predictions(split), prepared.population_predictions(split))
        np.testing.assert_array_equal(p.teacher_logits["test"], prepared.teacher_logits["test"])
    messages: list[str] = []
    again = prepare(study_file.prepare_spec, tmp_path, log=messages.append)  # found, not retrained
    assert messages and "found in cache" in messages[0]
    np.testing.assert_array_equal(again.population_predictions("test"), prepared.population_predictions("test"))


def test_old_cache_layout_is_refused(prepared, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    store(replace(prepared, population=None), folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["format"] = 1
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="layout 1"):
        load_cached(folder)


def test_fingerprint_covers_the_population_size(study_file) -> None:
    spec = study_file.prepare_spec
    sizes = {replace(spec, bias=replace(spec.bias, dense_population=n)).fingerprint() for n in (0, 2, 3)}
    assert len(sizes) == 3


def test_trial_reports_cie_and_disparate_impact_as_computed_directly(prepared, study_file, monkeypatch) -> None:
    seen: dict[int, np.ndarray] = {}
    real = trial_module.predict_logits

    def spy(model, split, **kw):
        out = real(model, split, **kw)
        seen[id(split)] = out
        return out

    monkeypatch.setattr(trial_module, "predict_logits", spy)
    config = CompressionConfig(pruning=PruningConfig(0.8, SparsitySchedule("one_shot", 0.8)))
    out = run_trial(prepared, study_file.trial_spec(config, 0), device=torch.device("cpu"), threads=1)
    for split in ("validation", "test"):
        data = prepared.splits[split]
        compressed = seen[id(data)].argmax(axis=1)
        got = out.attrs[split]["forgetting"]
        direct = cie_report(data.labels, prepared.population_predictions(split), compressed,
                            sensitive_features=data.groups, class_names=list(prepared.label_names),
                            group_names=dict(enumerate(prepared.group_names)))
        assert got["cie"]["n_dense_models"] == N_EXTRA + 1
        assert got["cie"] == direct  # same numbers: CIE fraction, accuracies, class and group make-up
        assert out.attrs[split]["bias"]["cie_fraction"] == direct["cie_fraction"]
        by_class = disparate_impact(data.labels, prepared.dense_predictions(split), compressed, by=data.labels,
                                    level_names=list(prepared.label_names))
        assert got["disparate_impact"]["class"] == by_class
        assert set(got["disparate_impact"]["group"]["levels"]) == set(prepared.group_names)
    assert out.values[3] == out.attrs["validation"]["bias"]["cie_fraction"]  # objectives: accuracy, size, tpr, cie
    assert 0.0 < out.values[3] <= 1.0  # an 80% pruned tiny model changes some predictions


def test_cie_objective_needs_a_population() -> None:
    with pytest.raises(ConfigError, match=r"objectives.bias: 'cie_fraction' needs a dense population") as err:
        parse_study_text(_study_text(n_extra=0), base_dir=Path("."))
    assert "\n" not in str(err.value)
    for bad, allowed in ((-1, r"\[0, 100\]"), (101, r"\[0, 100\]"), ('"3"', "an integer")):
        with pytest.raises(ConfigError, match=rf"bias.dense_population = .* expected .*{allowed}"):
            parse_study_text(_study_text(n_extra=bad), base_dir=Path("."))


def test_train_population_seeds_and_refusals() -> None:
    labels = {"validation": np.array([0, 1, 1]), "test": np.array([1, 0])}
    teacher = {"validation": np.eye(2)[[0, 1, 0]], "test": np.eye(2)[[1, 1]]}
    seeds_used: list[int] = []

    def fit(seed: int) -> dict[str, np.ndarray]:
        seeds_used.append(seed)
        return {"validation": np.eye(2)[[seed % 2] * 3], "test": np.eye(2)[[1, seed % 2]]}

    pop = train_population(3, seed=10, teacher_logits=teacher, labels=labels, fit=fit, log=lambda m: None)
    assert seeds_used == [11, 12, 13] and pop.seeds == (10, 11, 12, 13)
    np.testing.assert_array_equal(pop.predictions["validation"], [[0, 1, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]])
    assert pop.accuracies["validation"] == pytest.approx([2 / 3, 2 / 3, 1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="at least 1"):
        train_population(0, seed=0, teacher_logits=teacher, labels=labels, fit=fit)


def test_forgetting_measures_keep_ungrouped_examples_out_of_group_impact() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    dense = np.array([0, 0, 1, 1, 1, 1])
    compressed = np.array([0, 1, 1, 0, 0, 1])
    groups = np.array([0, 0, 1, 1, -1, -1])
    out = forgetting_measures(y, compressed, dense=dense, population=np.stack([dense, y]), groups=groups,
                              class_names=["no", "yes"], group_names=["a", "b"])
    assert set(out["disparate_impact"]["group"]["levels"]) == {"a", "b"}
    assert out["disparate_impact"]["group"]["overall"]["n"] == 4
    assert set(out["cie"]["group_makeup"]) == {"a", "b", "(none)"}
    # modal dense prediction (ties to the smaller id): [0, 0, 1, 1, 1, 0]; compressed differs at 1, 3, 4, 5
    assert out["cie"]["n_cie"] == 4
    assert "cie" not in forgetting_measures(y, compressed, dense=dense)
