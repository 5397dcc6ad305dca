"""Counterfactual sets prepared once per study, and the new bias objectives chosen in a study file."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fairfront._config import Table
from fairfront.errors import ConfigError
from fairfront.objectives.data.task import load_task
from fairfront.objectives.measures.bias_settings import COUNTERFACTUAL_MEASURES, POPULATION_MEASURES, BiasSettings
from fairfront.objectives.measures.counterfactual import (
    builtin_swap_lists,
    counterfactual_report,
    counterfactual_texts,
    load_swap_pairs,
)
from fairfront.objectives.measures.counterfactual_sets import SwappedTexts, softmax
from fairfront.objectives.measures.objectives import OBJECTIVE_BIAS_MEASURES, PREPARED_BIAS_MEASURES
from fairfront.objectives.training import trial as trial_module
from fairfront.objectives.training.models import load_tokenizer
from fairfront.objectives.training.prepare import compute, load_cached, store
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import load_study_file, parse_study_text
from fairfront.spaces.pruning import PruningConfig
from fairfront.spaces.schedules import SparsitySchedule
from fairfront.spaces.space import CompressionConfig

from conftest import REPO, tiny_study_text

PRONOUNS = "he\tshe\nhis\ther\nhim\ther\n"
POSSESSIVES = "his,her\n"
OBJECTIVES = '["counterfactual_flip_rate", "counterfactual_prob_change", "tpr_gap"]'


def _data_dir() -> Path | None:
    from fairfront.objectives.data.datasets import default_data_dir

    return default_data_dir()


def _study_text(objectives: str = OBJECTIVES, bias: str = 'counterfactual = ["pronouns.txt", "possessives.csv"]'):
    text = tiny_study_text("counterfactual").replace("[model]", f"[objectives]\nbias = {objectives}\n\n[model]")
    text = text.replace("epochs = 3.0", "epochs = 10.0")  # a teacher that learns the pronoun shortcut
    return text + f"\n[bias]\n{bias}\n"


@pytest.fixture(scope="module")
def lists_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lists")
    (folder / "pronouns.txt").write_text(PRONOUNS)
    (folder / "possessives.csv").write_text(POSSESSIVES)
    return folder


@pytest.fixture(scope="module")
def study_file(lists_dir):
    return parse_study_text(_study_text(), base_dir=lists_dir)


@pytest.fixture(scope="module")
def prepared(study_file):
    torch.set_num_threads(1)
    return compute(study_file.prepare_spec, log=lambda m: None, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def texts_and_tokenizer(study_file):
    data = load_task(study_file.data)
    frame = data.frame
    texts = {s: frame.loc[frame["split"] == s, "text"].astype(str).tolist() for s in ("train", "validation", "test")}
    return texts, load_tokenizer(study_file.model, texts["train"])


def test_study_file_reads_user_lists_relative_to_its_folder(study_file, lists_dir) -> None:
    lists = study_file.bias.counterfactual
    assert [s.name for s in lists] == ["pronouns", "possessives"]
    assert lists[0].source == str(lists_dir / "pronouns.txt")
    assert lists[0].pairs == (("he", "she"), ("his", "her"), ("him", "her"))
    assert study_file.prepare_spec.bias == study_file.bias
    assert study_file.objectives.names == ["accuracy", "size", "bias_counterfactual_flip_rate",
                                           "bias_counterfactual_prob_change", "bias_tpr_gap"]


def test_prepared_sets_hold_the_changed_texts_tokenized(prepared, study_file, texts_and_tokenizer) -> None:
    texts, tokenizer = texts_and_tokenizer
    for split in ("validation", "test"):
        sets = prepared.counterfactuals[split]
        assert [s.list_name for s in sets] == ["pronouns", "possessives"]
        for swapped, swap_list in zip(sets, study_file.bias.counterfactual):
            index, new_texts = counterfactual_texts(texts[split], swap_list.pairs)
            assert 0 < len(index) < len(texts[split])  # only the texts a swap changes
            np.testing.assert_array_equal(swapped.index, index)
            expected = tokenizer(new_texts, truncation=True, max_length=32)["input_ids"]
            assert [ids.tolist() for ids in swapped.encoded.input_ids] == expected
            np.testing.assert_array_equal(swapped.encoded.labels, prepared.splits[split].labels[index])
            assert swapped.dense_logits.shape == (len(index), len(prepared.label_names))


def test_counterfactual_sets_survive_the_cache_and_pickling(prepared, tmp_path: Path) -> None:
    store(prepared, tmp_path / "c")
    for p in (load_cached(tmp_path / "c"), pickle.loads(pickle.dumps(prepared))):
        for split in ("validation", "test"):
            for a, b in zip(p.counterfactuals[split], prepared.counterfactuals[split], strict=True):
                assert a.list_name == b.list_name
                np.testing.assert_array_equal(a.index, b.index)
                np.testing.assert_array_equal(a.dense_logits, b.dense_logits)
                assert [x.tolist() for x in a.encoded.input_ids] == [x.tolist() for x in b.encoded.input_ids]


def test_flip_rate_equals_a_direct_computation_with_the_model(prepared, study_file, texts_and_tokenizer,
                                                              monkeypatch) -> None:
    texts, tokenizer = texts_and_tokenizer
    models = []
    real = trial_module.predict_logits

    def spy(model, split, **kw):
        models.append(model)
        return real(model, split, **kw)

    monkeypatch.setattr(trial_module, "predict_logits", spy)
    config = CompressionConfig(pruning=PruningConfig(0.5, SparsitySchedule("one_shot", 0.5)))
    out = run_trial(prepared, study_file.trial_spec(config, 0), device=torch.device("cpu"), threads=1)
    model = models[-1].eval()

    @torch.inference_mode()
    def predict_proba(batch: list[str]) -> np.ndarray:
        enc = tokenizer(batch, truncation=True, max_length=32, padding=True, return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        return softmax(logits.float().numpy())

    v = out.attrs["validation"]
    pooled_changed = pooled_flipped = 0
    for swap_list in study_file.bias.counterfactual:
        direct = counterfactual_report(predict_proba, texts["validation"], swap_list.pairs)
        got = v["counterfactual"]["lists"][swap_list.name]
        assert got["n_changed"] == direct["n_changed"] and got["n_flipped"] == direct["n_flipped"]
        assert got["flip_rate"] == pytest.approx(direct["flip_rate"])
        assert got["mean_abs_prob_change"] == pytest.approx(direct["mean_abs_prob_change"], rel=1e-4, abs=1e-7)
        pooled_changed += direct["n_changed"]
        pooled_flipped += direct["n_flipped"]
    assert v["counterfactual"]["all"]["n_changed"] == pooled_changed
    assert v["counterfactual"]["all"]["n_flipped"] == pooled_flipped
    assert v["bias"]["counterfactual_flip_rate"] == pytest.approx(pooled_flipped / pooled_changed)
    # the objective values are the pooled measures, in the order the study file names them
    assert out.values[2:] == [v["bias"]["counterfactual_flip_rate"], v["bias"]["counterfactual_prob_change"],
                              v["bias"]["tpr_gap"]]
    assert v["bias"]["counterfactual_prob_change"] > 0  # a pruned model's confidence moves when "he" becomes "she"
    assert set(v["counterfactual"]["dense"]["lists"]) == {"pronouns", "possessives"}
    assert "counterfactual" in out.attrs["test"]


def test_a_list_that_changes_no_validation_text_fails_the_trial_clearly(prepared, study_file) -> None:
    empty = {split: [SwappedTexts(s.list_name, s.index[:0], replace(s.encoded, input_ids=[],
                                                                      labels=s.encoded.labels[:0],
                                                                      groups=s.encoded.groups[:0]),
                                  s.dense_logits[:0]) for s in sets]
             for split, sets in prepared.counterfactuals.items()}
    config = CompressionConfig(pruning=PruningConfig(0.5, SparsitySchedule("one_shot", 0.5)))
    with pytest.raises(ValueError, match="counterfactual_flip_rate is undefined: no validation text contains"):
        run_trial(replace(prepared, counterfactuals=empty), study_file.trial_spec(config, 0),
                  device=torch.device("cpu"), threads=1)


def test_registry_names_every_prepared_measure() -> None:
    assert set(PREPARED_BIAS_MEASURES) == set(POPULATION_MEASURES) | set(COUNTERFACTUAL_MEASURES)
    assert set(PREPARED_BIAS_MEASURES) <= set(OBJECTIVE_BIAS_MEASURES)


@pytest.mark.parametrize(("objectives", "bias", "message"), [
    ('"counterfactual_flip_rate"', "dense_population = 0",
     "objectives.bias: 'counterfactual_flip_rate' needs counterfactual swap lists: set [bias] counterfactual"),
    ('["tpr_gap", "counterfactual_prob_change"]', "",
     "objectives.bias: 'counterfactual_prob_change' needs counterfactual swap lists"),
    ('["cie_fraction"]', 'counterfactual = ["pronouns.txt"]',
     "objectives.bias: 'cie_fraction' needs a dense population: set [bias] dense_population = N"),
    ('"cie_gap"', "", "objectives.bias = 'cie_gap' is not allowed: expected one of: tpr_gap"),
    ('"tpr_gap"', 'counterfactual = ["pronouns.txt", "pronouns.txt"]',
     "bias.counterfactual = 'pronouns.txt' is not allowed: expected distinct swap lists"),
    ('"tpr_gap"', 'counterfactual = "missing.txt"',
     "bias.counterfactual = 'missing.txt' is not allowed: expected a built-in swap list ("),
    ('"tpr_gap"', 'counterfactual = ["empty.txt"]', "bias.counterfactual: swap list "),
    ('"tpr_gap"', 'counterfactual = ["bad.txt"]', "bias.counterfactual: unreadable swap list: "),
    ('"tpr_gap"', "counterfactual = [1]", "bias.counterfactual = [1] is not allowed: expected a list of strings"),
    ('"tpr_gap"', "population = 3", "bias.population: unknown key; allowed keys: counterfactual, dense_population"),
])
def test_bad_combinations_are_refused_in_one_line(lists_dir, objectives: str, bias: str, message: str) -> None:
    (lists_dir / "empty.txt").write_text("# nothing\n")
    (lists_dir / "bad.txt").write_text("one two three\n")
    with pytest.raises(ConfigError) as err:
        parse_study_text(_study_text(objectives, bias), base_dir=lists_dir)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_good_combinations_are_accepted(lists_dir) -> None:
    sf = parse_study_text(_study_text('["cie_fraction", "counterfactual_prob_change"]',
                                      'dense_population = 3\ncounterfactual = "pronouns.txt"'), base_dir=lists_dir)
    assert sf.bias.dense_population == 3 and sf.bias.population_size == 4
    assert sf.objectives.bias == ("cie_fraction", "counterfactual_prob_change")
    plain = parse_study_text(tiny_study_text("plain"), base_dir=lists_dir)
    assert plain.bias == BiasSettings() and plain.bias.population_size == 0


def test_fingerprint_follows_the_lists_contents(lists_dir, tmp_path: Path) -> None:
    (tmp_path / "pronouns.txt").write_text(PRONOUNS + "himself\therself\n")
    (tmp_path / "possessives.csv").write_text(POSSESSIVES)
    a = parse_study_text(_study_text(), base_dir=lists_dir).prepare_spec.fingerprint()
    b = parse_study_text(_study_text(), base_dir=tmp_path).prepare_spec.fingerprint()
    assert a != b


def test_unknown_list_names_the_lists_that_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a built-in swap list \(none found: no data folder"):
        BiasSettings.from_table(Table({"counterfactual": ["redditbias_gender"]}, "bias"), base_dir=tmp_path,
                                data_dir=tmp_path)


@pytest.mark.realdata
def test_builtin_lists_resolve_in_the_data_folder(tmp_path: Path) -> None:
    root = _data_dir()
    if root is None:
        pytest.skip("the real data folder is absent (set FAIRFRONT_DATA_DIR)")
    found = builtin_swap_lists(root)
    settings = BiasSettings.from_table(Table({"counterfactual": ["redditbias_gender", "winobias_generalized"]}, "bias"),
                                       base_dir=tmp_path)
    assert [s.name for s in settings.counterfactual] == ["redditbias_gender", "winobias_generalized"]
    assert settings.counterfactual[0].pairs == tuple(load_swap_pairs(found["redditbias_gender"]))
    with pytest.raises(ConfigError, match="redditbias_gender, redditbias_orientation") as err:
        BiasSettings.from_table(Table({"counterfactual": ["redditbias_genders"]}, "bias"), base_dir=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.realdata
def test_redditbias_study_file_uses_the_opposites_lists() -> None:
    root = _data_dir()
    if root is None:
        pytest.skip("the real data folder is absent (set FAIRFRONT_DATA_DIR)")
    sf = load_study_file(REPO / "studies" / "redditbias.toml")
    assert sf.data.source == "redditbias" and sf.model.name == "minilm"
    assert all(s.name.startswith("redditbias_") and s.source.endswith("_opposites.txt")
               for s in sf.bias.counterfactual)
    assert sf.objectives.bias[0] in ("tpr_gap", "tpr_gap_rms", "equalized_odds_gap", "demographic_parity_gap",
                                     "accuracy_gap", "worst_group_error")
    assert sf.space.pruning is not None and sf.space.distillation is not None and sf.space.fairness is not None
    assert json.loads(json.dumps(sf.bias.identity()))  # the fingerprint payload is plain JSON
