"""Overlapping groups read from a study file: one 0/1 column per group (``[data] group_membership``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_preflight import STUDY

from fairfront.errors import ConfigError
from fairfront.objectives.data.task import DataSpec, load_task
from fairfront.objectives.measures import group_fairness as gf
from fairfront.objectives.measures.registry import MEASURES, MeasureInputs
from fairfront.objectives.measures.significance import permutation_gap_test
from fairfront.objectives.training.prepare import PrepareSpec
from fairfront.search.attrs import stored_record
from fairfront.search.cli import main
from fairfront.search.studyfile import parse_study_text

MEMBERSHIP = 'group_membership = ["target_women", "target_black"]\ngroup_membership_prefix = "target_"'
SPLITS = 'split_column = "split"\npositive_label = "hate"\n'


def _targets(n: int = 90) -> pd.DataFrame:
    """Comments with flags for two target groups: every third row targets women, every fourth black
    people (so every twelfth row both), the rest none; 0/1 in one column and true/false in the other.
    The text names the label, except in hateful comments that target women only (a model reading
    the text misses them: women's TPR is lower)."""
    rows = []
    for i in range(n):
        women, black = i % 3 == 0, i % 4 == 0
        label = "hate" if i % 2 == 0 else "clean"
        split = "train" if i % 10 < 6 else ("validation" if i % 10 < 8 else "test")
        words = " ".join(w for w, on in (("women", women), ("black", black)) if on)
        said = "clean" if women and not black and label == "hate" else label
        rows.append({"text": f"comment {i} {said} {words}", "label": label, "target_women": int(women),
                     "target_black": "true" if black else "false", "split": split})
    return pd.DataFrame(rows)


def _study(folder: Path, *, space: str = "", frame: pd.DataFrame | None = None) -> Path:
    """The preflight tests' study (named ``trust``, one trial) on ``targets.csv``, with bootstrap resamples."""
    (frame if frame is not None else _targets()).to_csv(folder / "targets.csv", index=False)
    path = folder / "study.toml"
    text = STUDY.format(path="targets.csv", data=SPLITS + MEMBERSHIP, bias="tpr_gap") + space
    text = text.replace("bootstrap_resamples = 0", "bootstrap_resamples = 20")
    path.write_text(text.replace("[teacher]\nepochs = 1.0", "[teacher]\nepochs = 30.0"))
    return path


def test_validate_summarises_overlapping_groups_per_split(tmp_path, capsys, monkeypatch) -> None:
    study = _study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 0
    out = capsys.readouterr().out
    frame = _targets()
    for split in ("train", "validation", "test"):
        part = frame[frame["split"] == split]
        women, black = part["target_women"] == 1, part["target_black"] == "true"
        assert (f"  {split}: {len(part)} rows, 2 classes; members: women {int(women.sum())}, black {int(black.sum())}; "
                f"{int((~women & ~black).sum())} in no group, {int((women & black).sum())} in several groups") in out
    validation = frame[frame["split"] == "validation"]
    women_hate = int(((validation["target_women"] == 1) & (validation["label"] == "hate")).sum())
    table = out.split("  validation: ")[1].split("  test: ")[0].splitlines()
    women_clean = int(((validation["target_women"] == 1) & (validation["label"] == "clean")).sum())
    assert table[1].split() == ["clean", "hate"]
    assert table[2].split() == ["women", str(women_clean), str(women_hate)]
    assert "overlapping groups (a row counts in every group it belongs to)" in out
    assert "each group's members among the validation and test rows" in out
    assert not (tmp_path / "studies").exists()


def test_the_key_is_parsed_exclusive_and_leaves_old_fingerprints_alone(tmp_path) -> None:
    _study(tmp_path)
    text = (tmp_path / "study.toml").read_text()
    sf = parse_study_text(text, base_dir=tmp_path)
    assert sf.data.group_membership == ("target_women", "target_black")
    assert sf.data.group_names == ("women", "black")
    plain = DataSpec(source="file", path=str(tmp_path / "targets.csv"), split_column="split")
    assert "group_membership" not in plain.identity() and "group_membership_prefix" not in plain.identity()
    with_key = parse_study_text(text, base_dir=tmp_path).prepare_spec
    without = parse_study_text(text.replace(MEMBERSHIP, ""), base_dir=tmp_path).prepare_spec
    assert isinstance(with_key, PrepareSpec) and with_key.fingerprint() != without.fingerprint()
    both = text.replace(MEMBERSHIP, MEMBERSHIP + '\ngroup_column = "target_women"')
    with pytest.raises(ConfigError, match="give group_column .* or group_membership .*, not both"):
        parse_study_text(both, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.group_membership = 'target_asian'"):
        parse_study_text(text.replace('"target_black"]', '"target_asian"]'), base_dir=tmp_path)


def test_bad_flags_are_one_error_line_and_nothing_is_written(tmp_path, capsys, monkeypatch) -> None:
    frame = _targets()
    frame["target_women"] = frame["target_women"].astype(object)
    frame.loc[[7, 11], "target_women"] = ["yes", "2"]
    study = _study(tmp_path, frame=frame)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: targets.csv: group membership column 'target_women' has 2 value(s) that are not 0/1 or "
                   "true/false (first: line 9, 'yes'); allowed: 0, 1, true, false\n")
    assert main(["run", str(study)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "studies").exists()


def test_a_bias_objective_no_two_groups_define_is_refused(tmp_path, capsys, monkeypatch) -> None:
    study = _study(tmp_path)
    study.write_text(study.read_text().replace('positive_label = "hate"', 'positive_label = "clean"'))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "group_membership 'target_women', 'target_black' gives 10 validation " \
        "membership(s) (black: clean 0, hate 4; women: clean 3, hate 3)" in err


def test_splits_and_subsamples_keep_each_set_of_groups_in_proportion(tmp_path) -> None:
    _targets(600).drop(columns=["split"]).to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(source="file", path=str(tmp_path / "t.csv"), group_membership=("target_women", "target_black"))
    data = load_task(spec)
    member = data.membership()
    pattern = pd.Series([f"{w}{b}" for w, b in member.astype(int)], index=data.frame.index) + data.frame["label"]
    for _, rows in data.frame.groupby(pattern):
        assert abs((rows["split"] == "validation").sum() - 0.1 * len(rows)) <= 1
    small = load_task(DataSpec(**{**spec.__dict__, "max_train": 100}))
    train = small.part("train")
    assert len(train) == 100
    full_share = member[(data.frame["split"] == "train").to_numpy()].mean(axis=0)
    assert np.abs(small.membership("train").mean(axis=0) - full_share).max() <= 4 / 100


def test_jsonl_booleans_are_read(tmp_path) -> None:
    frame = _targets()
    frame["target_black"] = frame["target_black"] == "true"
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    data = load_task(DataSpec(source="file", path=str(tmp_path / "t.jsonl"), split_column="split",
                              group_membership=("target_women", "target_black")))
    member = data.membership()
    order = data.frame.index.to_numpy()
    assert data.multi_hot and data.frame["group"].isna().all()
    assert member[:, 0].tolist() == (frame["target_women"].to_numpy()[order] == 1).tolist()
    assert member[:, 1].tolist() == frame["target_black"].to_numpy()[order].tolist()


def test_the_membership_gap_equals_the_hand_computed_one() -> None:
    # rows:         0  1  2  3  4  5  6  7  8  9     (rows 1 and 2 in both groups, rows 8 and 9 in none)
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0])
    pred = np.array([0, 1, 0, 1, 0, 0, 0, 1, 1, 0])
    women = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    black = np.array([0, 1, 1, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    # women's positives: rows 0, 1, 2, 5, hit: row 1 -> TPR 1/4; black's positives: rows 1, 2, 3, 4, hit: 1, 3 -> 2/4
    inputs = MeasureInputs(y_true=y, y_pred=pred, group_names=("women", "black"),
                           group_ids=np.full(len(y), -1), membership=np.column_stack([women, black]))
    assert MEASURES["tpr_gap"].compute(inputs) == pytest.approx(0.25)
    # rows 8 and 9 are in no group: changing them changes accuracy but no group measure
    flipped = pred.copy()
    flipped[8] = 0
    moved = MeasureInputs(y_true=y, y_pred=flipped, group_names=("women", "black"),
                          group_ids=np.full(len(y), -1), membership=inputs.membership)
    assert MEASURES["tpr_gap"].compute(moved) == pytest.approx(0.25)
    report = gf.membership_report(y, pred, membership={"women": women, "black": black}, n_resamples=0)
    assert report["measures"]["tpr_gap"] == pytest.approx(0.25)
    assert report["group_counts"] == {"women": 5, "black": 5} and report["n"] == 8 and report["n_memberships"] == 10


def test_the_permutation_test_moves_whole_rows() -> None:
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    women, black = rng.random(n) < 0.4, rng.random(n) < 0.4
    pred = np.where(women & (y == 1), 0, y)  # women's positives are all missed: a real gap
    rows, groups = gf.membership_rows(np.column_stack([women, black]))
    names = np.array(["women", "black"], dtype=object)[groups]
    found = permutation_gap_test(y[rows], pred[rows], sensitive_features=names, measures=["tpr_gap"],
                                 n_permutations=200, seed=0, rows=rows)
    assert found["test"] == "permutation_within_class_rows" and found["p_value"]["tpr_gap"] < 0.01
    fair = np.where(rng.random(n) < 0.2, 1 - y, y)  # errors independent of the groups
    null = [permutation_gap_test(y[rows], fair[rows], sensitive_features=names, measures=["tpr_gap"],
                                 n_permutations=50, seed=s, rows=rows)["p_value"]["tpr_gap"] for s in range(3)]
    assert min(null) > 0.01


@pytest.mark.parametrize("space, key", [
    ("[space.fairness]\nmethod = [\"group_dro\", \"group_reweight\"]\n", "space.fairness.method"),
    ("[space.fair_distillation]\nstrength = [0.1, 1.0]\nmode = [\"group_recall\"]\n", "space.fair_distillation.mode"),
])
def test_a_lever_that_needs_one_group_per_row_is_refused(space, key, tmp_path, capsys, monkeypatch) -> None:
    study = _study(tmp_path, space=space)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}: ") and err.count("\n") == 1
    assert "[data] group_membership gives overlapping groups" in err
    assert not (tmp_path / "studies").exists()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_study_measures_each_overlapping_group_over_its_members(tmp_path, local_ray, capsys) -> None:
    import optuna

    study = _study(tmp_path, space='schedule = ["gradual"]\nfairness_mix = [0.3, 0.6]\n\n[space.fairness]\n'
                                    'method = ["group_dro"]\ndro_step_size = [0.5, 1.0]\nallow_zero = false\n')
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code = main(["run", str(study), "--storage", storage, "--cache-dir", str(tmp_path / "cache"),
                 "--artifact-dir", str(tmp_path / "artifacts")])
    assert code == 0, capsys.readouterr().err[-3000:]
    trials = optuna.load_study(study_name="trust", storage=storage).get_trials(deepcopy=False)
    frame = _targets()
    validation = frame[frame["split"] == "validation"]
    women, black = validation["target_women"] == 1, validation["target_black"] == "true"
    assert len(trials) == 1
    for trial in trials:
        fairness = stored_record(trial)["validation"]["fairness"]
        assert fairness["group_counts"] == {"women": int(women.sum()), "black": int(black.sum())}
        assert fairness["n"] == int((women | black).sum())
        assert fairness["n_memberships"] == int(women.sum() + black.sum())
        rates = fairness["group_rates"]
        assert set(rates) == {"women", "black"} and all(r["tpr"] is not None for r in rates.values())
        assert fairness["measures"]["tpr_gap"] == pytest.approx(abs(rates["women"]["tpr"] - rates["black"]["tpr"]))
        assert rates["women"]["tpr"] < rates["black"]["tpr"]  # the comments whose text hides the label
        assert "class 'hate': groups with fewer than 1 negative examples are left out of its FPR: 'black' (0)" \
            in fairness["warnings"]  # every comment targeting black people is hateful
        assert trial.values[2] == pytest.approx(fairness["measures"]["tpr_gap"])
        assert stored_record(trial)["validation"]["gap_test"]["test"] == "permutation_within_class_rows"
        weights = stored_record(trial)["group_dro_weights"]
        assert len(weights) == 2 and weights[0] != pytest.approx(0.5)  # the members' losses reached group DRO
        assert 0.3 <= trial.params["pruning.fairness_mix"] <= 0.6
    _the_pruning_scores_see_memberships(study, tmp_path / "cache")


def _the_pruning_scores_see_memberships(study: Path, cache: Path) -> None:
    """The calibration batches of fairness-aware pruning carry each row's memberships, and the gap they
    give the pruning scores is the soft gap over the members."""
    import torch

    from fairfront.objectives.training.prepare import load_cached
    from fairfront.objectives.training.trial import _calibration
    from fairfront.search.studyfile import load_study_file
    from fairfront.spaces.fair_compression import equal_opportunity_gap
    from fairfront.spaces.space import CompressionConfig

    sf = load_study_file(study)
    prepared = load_cached(cache / sf.prepare_spec.fingerprint())
    batches = _calibration(prepared, sf.trial_spec(CompressionConfig(), 0), torch.device("cpu"))
    member = prepared.splits["train"].membership
    assert member is not None and member.any(axis=1).any() and (member.sum(axis=1) > 1).any()
    for batch in batches:
        assert batch["groups"].tolist() == member[batch["index"].numpy()].astype(float).tolist()
    logits = torch.as_tensor(prepared.teacher_logits["train"])
    for batch in batches:  # class 1 ("hate") is the penalty's positive class
        index = batch["index"].numpy()
        p_hate = torch.softmax(logits[index], dim=1)[:, 1].numpy()
        positive = prepared.splits["train"].labels[index] == 1
        tpr = [p_hate[member[index, g] & positive].mean() for g in range(2)]
        assert float(equal_opportunity_gap(logits[index], batch)) == pytest.approx(abs(tpr[0] - tpr[1]), abs=1e-6)


def test_the_penalties_and_group_dro_read_memberships() -> None:
    import torch

    from fairfront.spaces import fairness_losses as fl

    logits = torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.5], [0.0, 3.0]])
    labels = torch.tensor([1, 1, 1, 1, 0])
    ids = torch.tensor([0, 0, 1, 1, -1])
    one_hot = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]])
    for name in ("equal_opportunity", "equalized_odds", "demographic_parity"):
        penalty = getattr(fl, f"{name}_penalty")
        assert float(penalty(logits, labels, one_hot, num_groups=2)) == pytest.approx(
            float(penalty(logits, labels, ids, num_groups=2)))
    # row 1 in both groups: soft TPRs are the means of p(1|x) over each group's positive members
    overlap = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0]])
    p = torch.sigmoid(logits[:, 1] - logits[:, 0])
    expected = abs(float((p[0] + p[1]) / 2 - (p[1] + p[2] + p[3]) / 3))
    # two groups: the RMS over ordered pairs of the spread is the absolute difference
    assert float(fl.equal_opportunity_penalty(logits, labels, overlap, num_groups=2)) == pytest.approx(expected)
    losses = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0])
    dro = fl.GroupDRO(num_groups=2, step_size=0.0)
    assert float(dro(losses, overlap)) == pytest.approx(0.5 * (1 + 2 + 7) / 3 + 0.5 * (2 + 3 + 5) / 3)


def test_small_overlapping_groups_merge_into_other_once_per_row() -> None:
    y = np.array([1, 1, 1, 1, 0, 1, 1, 0])
    pred = np.array([1, 0, 1, 1, 0, 0, 1, 1])
    member = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]],
                      dtype=bool)
    names = ("women", "black", "muslims")  # black and muslims have 2 members each, row 5 in both
    options = {"min_group_size": 3, "small_groups": "merge"}
    report = gf.membership_report(y, pred, membership=dict(zip(names, member.T)), n_resamples=0,
                                  all_groups=list(names), **options)
    assert report["merged_groups"] == {"black": 2, "muslims": 2}
    assert report["group_counts"] == {"women": 6, "other": 3}  # rows 0, 1, 5: row 5 once
    assert report["warnings"][0] == "groups below min_group_size 3 merged into 'other': 'black' (2), 'muslims' (2)"
    other_tpr = (pred[[0, 1, 5]] == 1).mean()
    women_tpr = (pred[[0, 1, 2, 3]] == 1).mean()
    assert report["group_rates"]["other"]["tpr"] == pytest.approx(other_tpr)
    inputs = MeasureInputs(y_true=y, y_pred=pred, group_ids=np.full(len(y), -1), group_names=names,
                           membership=member, **options)
    assert MEASURES["tpr_gap"].compute(inputs) == pytest.approx(abs(women_tpr - other_tpr))
    assert report["measures"]["tpr_gap"] == pytest.approx(abs(women_tpr - other_tpr))
