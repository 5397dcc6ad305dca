"""Small groups, groups and classes that drop out of a measure, group-aware splits, degenerate models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairfront.errors import ConfigError
from fairfront.objectives.data.datasets import load_table
from fairfront.objectives.data.datasets._split import group_stratified_split
from fairfront.objectives.measures import group_fairness as gf
from fairfront.objectives.measures.registry import MEASURES, MeasureInputs
from fairfront.objectives.measures.scoring import degeneracy
from fairfront.search import report
from fairfront.search.attrs import stored_record
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.space import CompressionConfig

from conftest import noop_trial, placeholder_prepared, tiny_study_text


def _two_big_groups_and_a_tiny_one():
    """Groups a and b (40 each, TPR 0.8 and 0.7) and c: 2 positives, both missed (TPR 0)."""
    y, pred, g = [], [], []
    for name, hits in (("a", 16), ("b", 14)):
        y += [1] * 20 + [0] * 20
        pred += [1] * hits + [0] * (20 - hits) + [0] * 20
        g += [name] * 40
    y += [1, 1, 0, 0, 0]
    pred += [0, 0, 0, 0, 0]
    g += ["c"] * 5
    return np.array(y), np.array(pred), np.array(g, dtype=object)


def test_a_tiny_group_no_longer_decides_the_tpr_gap() -> None:
    y, pred, g = _two_big_groups_and_a_tiny_one()
    today = gf.fairness_report(y, pred, sensitive_features=g, n_resamples=50)
    assert today["measures"]["tpr_gap"] == pytest.approx(0.8)  # group c's two positives decide it
    guarded = gf.fairness_report(y, pred, sensitive_features=g, n_resamples=50, min_group_size=10)
    assert guarded["measures"]["tpr_gap"] == pytest.approx(0.1)
    assert guarded["excluded_groups"] == {"c": 5}
    assert guarded["group_rates"]["c"]["tpr"] is None
    assert any("'c' (5)" in line and "left out" in line for line in guarded["warnings"])
    assert guarded["ci"]["tpr_gap"][1] < 0.5  # the interval no longer reaches c's TPR of 0


def test_small_groups_can_be_merged_into_other() -> None:
    y, pred, g = _two_big_groups_and_a_tiny_one()
    g = np.concatenate([g, ["d"] * 6])
    y, pred = np.concatenate([y, [1] * 3 + [0] * 3]), np.concatenate([pred, [1] * 3 + [0] * 3])
    out = gf.fairness_report(y, pred, sensitive_features=g, n_resamples=0, min_group_size=10, small_groups="merge")
    assert out["groups"] == ["a", "b", "other"]
    assert out["merged_groups"] == {"c": 5, "d": 6}
    assert out["group_counts"]["other"] == 11
    # other has 5 positives (< 10): its TPR is still left out, so the gap is a vs b
    assert out["measures"]["tpr_gap"] == pytest.approx(0.1)
    assert out["group_rates"]["other"]["accuracy"] == pytest.approx(9 / 11)


def test_the_registry_measure_uses_the_same_rule() -> None:
    y, pred, g = _two_big_groups_and_a_tiny_one()
    names = ("a", "b", "c")
    ids = np.array([names.index(x) for x in g])
    for size, expected in ((1, 0.8), (10, 0.1)):
        inputs = MeasureInputs(y_true=y, y_pred=pred, group_ids=ids, group_names=names, min_group_size=size)
        assert MEASURES["tpr_gap"].compute(inputs) == pytest.approx(expected)


def test_a_group_or_class_that_drops_out_is_named() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])
    pred = np.array([1, 0, 0, 0, 1, 0])
    g = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
    out = gf.fairness_report(y, pred, sensitive_features=g, n_resamples=0, all_groups=["a", "b", "c", "d"])
    lines = "\n".join(out["warnings"])
    assert "group 'd' has no example in this split" in lines
    assert "'c' (0)" in lines and "TPR" in lines  # c has no positives: out of the TPR gap
    three = gf.fairness_report([0, 1, 2, 0, 1], [0, 1, 2, 0, 0], sensitive_features=list("aaabb"), n_resamples=0)
    assert any("class '2'" in line and "'b' (0)" in line for line in three["warnings"])


def test_bad_group_options_are_refused() -> None:
    with pytest.raises(ValueError, match="min_group_size"):
        gf.fairness_report([0, 1], [0, 1], sensitive_features=["a", "b"], min_group_size=0)
    with pytest.raises(ValueError, match="small_groups"):
        gf.fairness_report([0, 1], [0, 1], sensitive_features=["a", "b"], small_groups="drop")


@pytest.mark.parametrize("line,message", [
    ("min_group_size = 0", "data.min_group_size = 0"),
    ('min_group_size = "ten"', "data.min_group_size = 'ten'"),
    ('small_groups = "drop"', "data.small_groups = 'drop'"),
])
def test_bad_data_keys_are_one_error_line(line: str, message: str, tmp_path: Path) -> None:
    text = tiny_study_text().replace("n_examples = 500", "n_examples = 500\n" + line)
    with pytest.raises(ConfigError) as info:
        parse_study_text(text, base_dir=tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_group_keys_reach_the_trial_but_not_the_fingerprint(tmp_path: Path) -> None:
    base = parse_study_text(tiny_study_text(), base_dir=tmp_path)
    extra = 'n_examples = 500\nmin_group_size = 25\nsmall_groups = "merge"'
    text = tiny_study_text().replace("n_examples = 500", extra)
    sf = parse_study_text(text, base_dir=tmp_path)
    spec = sf.trial_spec(CompressionConfig(), 0)
    assert (spec.min_group_size, spec.small_groups) == (25, "merge")
    assert sf.prepare_spec.fingerprint() == base.prepare_spec.fingerprint()


# ----------------------------------------------------------------------------------------------
# group-aware splits


def _units_frame(rng: np.random.Generator, n_units: int) -> pd.DataFrame:
    sizes = rng.integers(1, 12, size=n_units)
    unit = np.repeat(np.arange(n_units), sizes)
    label = np.where(rng.random(len(unit)) < rng.uniform(0.1, 0.5), "pos", "neg")
    return pd.DataFrame({"text": [f"text {i}" for i in range(len(unit))], "label": label,
                         "author": [f"u{u}" for u in unit]})


def test_a_group_aware_split_never_splits_a_group_and_keeps_labels_stratified() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        frame = _units_frame(rng, int(rng.integers(20, 120)))
        out = group_stratified_split(frame, "author", seed=trial)
        assert out.groupby("author")["split"].nunique().max() == 1
        assert set(out["split"]) <= {"train", "validation", "test"}
        assert (out["split"] == "train").mean() > 0.6
    big = _units_frame(np.random.default_rng(1), 600)
    out = group_stratified_split(big, "author", seed=3)
    shares = out.groupby("split")["label"].apply(lambda s: (s == "pos").mean())
    overall = (big["label"] == "pos").mean()
    assert (shares - overall).abs().max() < 0.03
    sizes = out["split"].value_counts(normalize=True)
    assert sizes["validation"] == pytest.approx(0.1, abs=0.02) and sizes["test"] == pytest.approx(0.1, abs=0.02)


def test_a_group_aware_split_does_not_depend_on_row_order() -> None:
    frame = _units_frame(np.random.default_rng(5), 80)
    a = group_stratified_split(frame, "author", seed=1)["split"]
    shuffled = frame.sample(frac=1.0, random_state=0)
    b = group_stratified_split(shuffled, "author", seed=1)["split"].reindex(frame.index)
    assert (a == b).all()


def test_split_group_column_from_a_study_file(tmp_path: Path) -> None:
    frame = _units_frame(np.random.default_rng(2), 150)
    frame["gender"] = np.where(np.arange(len(frame)) % 2 == 0, "f", "m")
    frame.to_csv(tmp_path / "posts.csv", index=False)
    data = load_table(tmp_path / "posts.csv", text_column="text", label_column="label", group_column="gender",
                      split_group_column="author")
    joined = data.frame.assign(author=frame["author"].to_numpy())
    assert joined.groupby("author")["split"].nunique().max() == 1
    text = tiny_study_text().replace('source = "synthetic-occupations"\nn_examples = 500',
                                     'source = "file"\npath = "posts.csv"\ntext_column = "text"\n'
                                     'label_column = "label"\ngroup_column = "gender"\nsplit_group_column = "writer"')
    with pytest.raises(ConfigError, match="data.split_group_column = 'writer'"):
        parse_study_text(text, base_dir=tmp_path)
    sf = parse_study_text(text.replace('"writer"', '"author"'), base_dir=tmp_path)
    plain = parse_study_text(text.replace('split_group_column = "writer"', ""), base_dir=tmp_path)
    assert sf.prepare_spec.fingerprint() != plain.prepare_spec.fingerprint()


def test_jigsaw_templates_split_by_template_keep_every_template_whole() -> None:
    from fairfront.errors import DataError
    from fairfront.objectives.data.datasets import default_data_dir

    try:
        path = default_data_dir() / "jigsaw_sentence_templates" / "en_sentence_templates.csv"
    except DataError:
        pytest.skip("no real data: set FAIRFRONT_DATA_DIR or provide ../shared/data")
    if not path.is_file():
        pytest.skip(f"no {path}")
    data = load_table(path, text_column="phrase", label_column="toxicity", split_group_column="template")
    raw = pd.read_csv(path, usecols=["template"])
    per_template = data.frame.assign(template=raw["template"].to_numpy()).groupby("template")["split"].nunique()
    assert per_template.max() == 1 and len(per_template) == 6
    assert set(data.frame["split"]) == {"train", "validation", "test"}
    shares = data.frame.groupby("split")["label"].apply(lambda s: (s == "toxic").mean())
    assert shares.between(0.3, 0.7).all()  # the templates are balanced, so whole templates keep the balance


# ----------------------------------------------------------------------------------------------
# degenerate models


def test_a_one_class_model_is_flagged_and_a_real_one_is_not() -> None:
    y = np.array([0] * 95 + [1] * 5)
    majority = degeneracy(y, np.zeros(100, dtype=int))
    assert majority["one_class"] and majority["flagged"]
    assert majority["balanced_accuracy"] == pytest.approx(0.5)
    good = degeneracy(y, y.copy())
    assert not good["flagged"] and good["balanced_accuracy"] == 1.0
    rng = np.random.default_rng(0)
    coin = degeneracy(np.array([0, 1, 2] * 100), rng.integers(0, 3, size=300))
    assert coin["near_chance"] and not coin["one_class"] and coin["chance"] == pytest.approx(1 / 3)


def test_front_and_status_mark_a_degenerate_trial() -> None:
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "size"])
    flags = [{"flagged": True, "one_class": True, "balanced_accuracy": 0.5, "chance": 0.5},
             {"flagged": False, "one_class": False, "balanced_accuracy": 0.9, "chance": 0.5}]
    for values, flag in zip(([0.95, 10.0], [0.9, 5.0]), flags):
        trial = study.ask()
        trial.set_user_attr("validation", {"degenerate": flag})
        study.tell(trial, values)
    table = report.front_table(study)
    assert "0!" in table and "1!" not in table and "degenerate" in table
    warnings = report.trial_warnings({"validation": {"degenerate": flags[0]}})
    assert len(warnings) == 1 and "predicts one class" in warnings[0]


# ----------------------------------------------------------------------------------------------
# the teacher on a skewed dataset


def _skewed_study(tmp_path: Path, *, signal: bool, teacher: str = "") -> str:
    """A 95/5 dataset; with ``signal`` the rare class is marked by a word, else labels are noise."""
    rng = np.random.default_rng(0)
    words = np.array(["red", "blue", "green", "tall", "short", "old", "new", "big", "small", "warm"])
    rows = []
    for i in range(600):
        rare = i % 20 == 0
        text = " ".join(rng.choice(words, size=6)) + (" zebra" if rare and signal else "")
        rows.append({"text": text, "label": "rare" if rare else "common", "group": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "skewed.csv", index=False)
    return tiny_study_text().replace(
        'source = "synthetic-occupations"\nn_examples = 500',
        'source = "file"\npath = "skewed.csv"\ntext_column = "text"\nlabel_column = "label"\ngroup_column = "group"',
    ).replace("epochs = 3.0\n", "epochs = 3.0\n" + teacher, 1).replace("epochs = 3.0\nepochs", "epochs", 1)


def test_a_one_class_teacher_is_warned_about(tmp_path: Path) -> None:
    import torch

    from fairfront.objectives.training.prepare import compute

    sf = parse_study_text(_skewed_study(tmp_path, signal=False), base_dir=tmp_path)
    lines: list[str] = []
    prepared = compute(sf.prepare_spec, log=lines.append, device=torch.device("cpu"))
    assert len(np.unique(prepared.dense_predictions("validation"))) == 1
    assert any(line.startswith("warning: the dense teacher predicts only class 'common'") for line in lines), lines
    # the teacher's predictions scored as a trial's: flagged, and the rare class's TPR gap is no evidence of fairness
    from fairfront.objectives.measures.scoring import score_split

    split = prepared.splits["validation"]
    scores = score_split(prepared, "validation", split.labels, prepared.dense_predictions("validation"), split.groups,
                         bootstrap_resamples=20, min_group_size=30)
    assert scores.degenerate["one_class"] and scores.degenerate["flagged"]
    assert scores.fairness["min_group_size"] == 30
    shown = report.trial_warnings({"validation": scores.to_record()})
    assert any("predicts one class" in line for line in shown)
    assert any("fewer than 30 positive examples" in line for line in shown)  # 'rare' has ~3 per group


def test_the_teacher_loss_is_validated_fingerprinted_and_trains(tmp_path: Path) -> None:
    import torch

    from fairfront.objectives.training.prepare import compute

    plain = parse_study_text(_skewed_study(tmp_path, signal=True), base_dir=tmp_path)
    balanced = parse_study_text(_skewed_study(tmp_path, signal=True, teacher='epochs = 8\nloss = "class_balanced"\n'
                                              "loss_parameter = 0.9999\n"), base_dir=tmp_path)
    assert balanced.teacher.loss == "class_balanced" and balanced.teacher.loss_parameter == 0.9999
    assert plain.prepare_spec.fingerprint() != balanced.prepare_spec.fingerprint()
    for bad, message in (('loss = "hinge"', "teacher.loss = 'hinge'"),
                         ('loss = "focal"\nloss_parameter = 9.0', "teacher.loss_parameter = 9.0"),
                         ("loss_parameter = 0.5", "teacher.loss_parameter")):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            parse_study_text(_skewed_study(tmp_path, signal=True, teacher=bad + "\n"), base_dir=tmp_path)
    lines: list[str] = []
    prepared = compute(balanced.prepare_spec, log=lines.append, device=torch.device("cpu"))
    flags = degeneracy(prepared.splits["validation"].labels, prepared.dense_predictions("validation"))
    assert not flags["flagged"], (flags, lines)
    assert not any("warning: the dense teacher" in line for line in lines)


# ----------------------------------------------------------------------------------------------
# several sensitive attributes, overlapping groups


def _two_attributes(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 800
    gender = rng.choice(["female", "male"], size=n)
    race = rng.choice(["black", "white", "asian"], size=n)
    y = rng.integers(0, 2, size=n)
    miss = rng.random(n) < np.where((gender == "female") & (race == "black"), 0.5, 0.15)
    pred = np.where(miss, 1 - y, y)
    return y, pred, gender, race


def test_measures_per_attribute_and_over_the_intersection_match_fairlearn() -> None:
    from fairlearn.metrics import equal_opportunity_difference as fl_eod

    y, pred, gender, race = _two_attributes()
    names = gf.intersection_labels([gender, race])
    assert "female&black" in set(names)
    per = gf.attribute_reports(y, pred, groups=names, attributes=["gender", "race"], n_resamples=0)
    joint = gf.fairness_report(y, pred, sensitive_features=names, n_resamples=0)
    for report_, features in ((per["gender"], gender), (per["race"], race),
                              (joint, pd.DataFrame({"g": gender, "r": race}))):
        assert report_["measures"]["tpr_gap"] == pytest.approx(fl_eod(y, pred, sensitive_features=features))
    worst = gf.objective_measures(joint, per, "max")
    assert worst["tpr_gap"] == max(per["gender"]["measures"]["tpr_gap"], per["race"]["measures"]["tpr_gap"])
    assert gf.objective_measures(joint, per, "intersection")["tpr_gap"] == joint["measures"]["tpr_gap"]
    assert joint["measures"]["tpr_gap"] > worst["tpr_gap"]  # the intersection finds the group the margins hide


def test_overlapping_groups_are_each_measured_over_their_members() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 1, 1])
    pred = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    women = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    black = np.array([0, 1, 1, 1, 1, 0, 0, 1])
    out = gf.membership_report(y, pred, membership={"target_women": women, "target_black": black}, n_resamples=20)
    tpr = {g: (pred[(m == 1) & (y == 1)] == 1).mean() for g, m in (("target_women", women), ("target_black", black))}
    assert out["group_rates"]["target_women"]["tpr"] == pytest.approx(tpr["target_women"])
    assert out["group_rates"]["target_black"]["tpr"] == pytest.approx(tpr["target_black"])
    assert out["measures"]["tpr_gap"] == pytest.approx(abs(tpr["target_women"] - tpr["target_black"]))
    assert out["group_counts"] == {"target_black": 5, "target_women": 4}
    assert out["n"] == 7 and out["n_memberships"] == 9  # row 5 is in no group; rows 1, 2 in both


def test_a_list_of_group_columns_gives_intersectional_groups(tmp_path: Path) -> None:
    y, pred, gender, race = _two_attributes(1)
    frame = pd.DataFrame({"text": [f"post number {i}" for i in range(len(y))], "label": y,
                          "gender": gender, "race": race})
    frame.loc[3, "race"] = None
    frame.to_csv(tmp_path / "people.csv", index=False)
    text = tiny_study_text().replace('source = "synthetic-occupations"\nn_examples = 500',
                                     'source = "file"\npath = "people.csv"\ntext_column = "text"\n'
                                     'label_column = "label"\ngroup_column = ["gender", "race"]\n'
                                     'group_objective = "max"')
    sf = parse_study_text(text, base_dir=tmp_path)
    assert sf.data.group_column == ("gender", "race")
    spec = sf.trial_spec(CompressionConfig(), 0)
    assert spec.group_attributes == ("gender", "race") and spec.group_objective == "max"
    from fairfront.objectives.data.task import load_task

    data = load_task(sf.data)
    assert set(data.group_names) == {f"{g}&{r}" for g in ("female", "male") for r in ("asian", "black", "white")}
    assert pd.isna(data.frame.loc[3, "group"])  # a row missing one attribute has no group
    for bad, message in (('group_objective = "min"', "data.group_objective = 'min'"),
                         ('group_column = ["gender", "religion"]', "data.group_column = 'religion'")):
        edited = text.replace('group_objective = "max"', bad) if "objective" in bad else \
            text.replace('group_column = ["gender", "race"]', bad)
        with pytest.raises(ConfigError, match=message):
            parse_study_text(edited, base_dir=tmp_path)


def _trial_with_a_small_group(prepared, spec, *, device=None, threads=None):
    """A trial whose validation split left a small group out and whose model predicts one class."""
    from fairfront.objectives.training.trial import TrialOutcome

    outcome = noop_trial(prepared, spec)
    fairness = {"warnings": ["groups below min_group_size 10 left out of the group measures: 'c' (5)"]}
    flags = {"flagged": spec.seed % 2 == 0, "one_class": True, "balanced_accuracy": 0.5, "chance": 0.5}
    return TrialOutcome(outcome.values, {**outcome.attrs, "validation": {"fairness": fairness, "degenerate": flags}})


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_driver_prints_each_measurement_warning_once_per_run(tmp_path: Path) -> None:
    import optuna

    from fairfront.search.driver import RunOptions, run_study
    from fairfront.search.inprocess_executor import InProcessExecutor

    sf = parse_study_text(tiny_study_text("warned", n_trials=4), base_dir=tmp_path)
    messages: list[str] = []
    storage = f"sqlite:///{tmp_path / 'warned.db'}"
    run_study(sf, RunOptions(storage=storage, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "artifacts",
                             log=messages.append, trial_fn=_trial_with_a_small_group,
                             prepared=placeholder_prepared(), executor=InProcessExecutor(2)))
    left_out = [m for m in messages if "left out of the group measures: 'c' (5)" in m]
    assert len(left_out) == 1 and left_out[0].startswith("warning: validation: groups below min_group_size 10")
    assert sum("predicts one class" in m for m in messages) == 1
    study = optuna.load_study(study_name="warned", storage=storage)
    assert [report.is_degenerate(stored_record(t)) for t in study.trials] == [n % 2 == 0 for n in range(4)]
    for line in report.front_table(study).splitlines()[1:]:
        if line[:1].isdigit():
            number = line.split()[0]
            assert number.endswith("!") == (int(number.rstrip("!")) % 2 == 0)
