"""Counterfactual fairness: term swapping, swap-list files and the flip report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fairfront.errors import DataError
from fairfront.objectives.measures.counterfactual import (
    builtin_swap_lists,
    counterfactual_report,
    counterfactual_texts,
    load_swap_pairs,
    swap_terms,
)

GENDER = [("he", "she"), ("his", "her"), ("him", "her"), ("man", "woman"), ("men", "women"), ("mr.", "mrs."),
          ("women are", "men are"), ("his daughter is", "his son is"), ("ma'am", "sir")]


def _data_dir() -> Path | None:
    try:
        from fairfront.objectives.data.datasets import default_data_dir
    except ImportError:
        try:
            from fairfront.objectives.data.datasets._paths import default_data_dir
        except ImportError:
            default_data_dir = None
    if default_data_dir is not None:
        try:
            return default_data_dir()
        except DataError:  # FAIRFRONT_DATA_DIR points nowhere
            return None
    env = os.environ.get("FAIRFRONT_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return path if path.is_dir() else None


def _real_lists() -> dict[str, Path]:
    root = _data_dir()
    if root is None or not (root / "winobias").is_dir() or not (root / "redditbias").is_dir():
        pytest.skip("real data not found: set FAIRFRONT_DATA_DIR to the folder holding winobias/ and redditbias/")
    return builtin_swap_lists(root)


# ------------------------------------------------------------------------------------ swapping


@pytest.mark.parametrize(("text", "expected"), [
    ("he said", "she said"),
    ("He said", "She said"),
    ("HE SAID", "SHE SAID"),
    ("she said he was right", "he said she was right"),  # both directions at once, no swapping back
    ("The theme of the other man", "The theme of the other woman"),  # 'he' inside words is left alone
    ("(he), he. he! he? he's he-goat", "(she), she. she! she? she's she-goat"),
    ("he-man", "she-woman"),  # a hyphen separates words
    ("Women are tall; women  are kind", "Men are tall; men are kind"),  # phrase across a double space
    ("his daughter is here, his dog", "his son is here, her dog"),  # longest phrase first
    ("Mr. Smith and mr.Jones", "Mrs. Smith and mr.Jones"),  # a term must end at a word boundary
    ("Yes, ma'am!", "Yes, sir!"),
    ("hE", "she"),  # mixed case gets the counterpart as listed
    ("Women Are", "Men Are"),
    ("no terms here", "no terms here"),
    ("", ""),
])
def test_swap_terms_on_tricky_strings(text, expected):
    assert swap_terms(text, GENDER) == expected


def test_swapping_twice_restores_symmetric_pairs():
    pairs = [("he", "she"), ("man", "woman"), ("king", "queen")]
    text = "The King told the woman that HE and she were men, not a man."
    assert swap_terms(swap_terms(text, pairs), pairs) == text


def test_explicit_direction_and_earlier_pairs_win():
    # 'her' only appears on the right: its first reversed pair, (him, her), decides it.
    assert swap_terms("her", [("him", "her"), ("his", "her")]) == "him"
    # an explicit pair beats a reversed one regardless of order
    assert swap_terms("lady", [("lord", "lady"), ("lady", "gentleman")]) == "gentleman"
    assert swap_terms("lord", [("lord", "lady"), ("lady", "gentleman")]) == "lady"


def test_bad_pairs_are_rejected():
    with pytest.raises(ValueError, match="each swap pair must be two non-empty strings"):
        swap_terms("he", [("he", "she", "they")])
    with pytest.raises(ValueError, match="each swap pair must be two non-empty strings"):
        swap_terms("he", ["he"])
    with pytest.raises(ValueError, match="each swap pair must be two non-empty strings"):
        swap_terms("he", [("he", " ")])


def test_counterfactual_texts_only_returns_changed_texts():
    texts = ["he left", "it rained", "She came", "the theme"]
    indices, new = counterfactual_texts(texts, GENDER)
    assert indices == [0, 2]
    assert new == ["she left", "He came"]
    with pytest.raises(ValueError, match=r"texts\[1\] is int, expected str"):
        counterfactual_texts(["he", 3], GENDER)


# ---------------------------------------------------------------------------------- list files


def test_load_swap_pairs_accepts_every_documented_layout(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(
        "# my own list\n"
        "actor \t actress \n"
        '"women are","men are"\n'
        "Gay people are,Straight people are\n"
        '"gay is",""\n'
        "\n"
        "king queen\n",
        encoding="utf-8")
    assert load_swap_pairs(path) == [("actor", "actress"), ("women are", "men are"),
                                     ("Gay people are", "Straight people are"), ("king", "queen")]


@pytest.mark.parametrize("line", ["alone", "a\tb\tc", "one two three", '"a","b","c"'])
def test_load_swap_pairs_names_the_bad_line(tmp_path, line):
    path = tmp_path / "bad.txt"
    path.write_text(f"he\tshe\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: expected two terms"):
        load_swap_pairs(path)


def test_load_swap_pairs_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_swap_pairs(tmp_path / "nope.txt")


def test_builtin_swap_lists_of_an_empty_folder(tmp_path):
    assert builtin_swap_lists(tmp_path) == {}


@pytest.mark.realdata
def test_real_swap_lists_parse_with_their_counts():
    lists = _real_lists()
    counts = {name: len(load_swap_pairs(path)) for name, path in lists.items()}
    # WinoBias: 104 and 92 tab-separated lines; RedditBias: one quoted pair per line, of which
    # 12 orientation terms have no counterpart ("gay is","").
    assert counts == {"winobias_generalized": 104, "winobias_extra": 92, "redditbias_gender": 25,
                      "redditbias_orientation": 7, "redditbias_race": 18, "redditbias_religion1": 22,
                      "redditbias_religion2": 26}
    generalized = load_swap_pairs(lists["winobias_generalized"])
    assert generalized[0] == ("actor", "actress")  # stray spaces around the tab are stripped
    assert ("tailors", "seamstress'") in load_swap_pairs(lists["winobias_extra"])
    assert load_swap_pairs(lists["redditbias_gender"])[-1] == ("girlfriends are", "boyfriends are")


@pytest.mark.realdata
def test_winobias_swaps_turn_pro_sentences_into_anti_sentences():
    # Line i of a pro-stereotyped file and of the matching anti file differ only in the
    # pronoun's gender; swapping the male pronouns of every male-pronoun line gives the anti line.
    lists = _real_lists()
    pairs = load_swap_pairs(lists["winobias_generalized"])
    folder = lists["winobias_generalized"].parent
    pro = (folder / "pro_stereotyped_type1.txt.dev").read_text(encoding="utf-8").splitlines()
    anti = (folder / "anti_stereotyped_type1.txt.dev").read_text(encoding="utf-8").splitlines()
    male = [(p.split(" ", 1)[1], a.split(" ", 1)[1]) for p, a in zip(pro, anti)
            if {"he", "his", "him"} & set(re.findall(r"\w+", p.lower()))]
    assert len(male) == 198
    assert all(swap_terms(p, pairs) == a for p, a in male)


# -------------------------------------------------------------------------------------- report


def _toy_predict_proba(calls: list[int] | None = None):
    """Positive probability 0.7, minus 0.4 when 'she' occurs, plus 0.1 when 'her' occurs."""
    def predict_proba(batch: list[str]) -> np.ndarray:
        if calls is not None:
            calls.append(len(batch))
        words = [set(t.lower().split()) for t in batch]
        positive = np.array([0.7 - 0.4 * ("she" in w) + 0.1 * ("her" in w) for w in words])
        return np.stack([1 - positive, positive], axis=1)
    return predict_proba


def test_counterfactual_report_on_a_known_model():
    texts = ["he is kind", "she is kind", "it is kind", "his work", "he saw him"]
    calls: list[int] = []
    report = counterfactual_report(_toy_predict_proba(calls), texts, GENDER, batch_size=2)
    json.dumps(report, allow_nan=False)
    # changed: 0 (0.7 -> 0.3, flip), 1 (0.3 -> 0.7, flip), 3 (0.7 -> 0.8), 4 (0.7 -> 'she saw her' 0.4, flip)
    assert report["n_texts"] == 5 and report["n_changed"] == 4
    assert report["changed_share"] == pytest.approx(0.8)
    assert report["n_flipped"] == 3 and report["flip_rate"] == pytest.approx(0.75)
    changes = [0.4, 0.4, 0.1, 0.3]
    assert report["mean_abs_prob_change"] == pytest.approx(np.mean(changes))
    assert report["mean_tv_distance"] == pytest.approx(np.mean(changes))  # two classes: the same
    assert report["max_tv_distance"] == pytest.approx(0.4)
    assert calls == [2, 2, 2, 2]  # originals then counterfactuals, two per call


def test_report_tv_distance_differs_from_top_class_change_for_three_classes():
    def predict_proba(batch):
        return np.array([[0.5, 0.3, 0.2] if "he" in t.split() else [0.5, 0.1, 0.4] for t in batch])

    report = counterfactual_report(predict_proba, ["he runs"], [("he", "she")])
    assert report["flip_rate"] == 0.0
    assert report["mean_abs_prob_change"] == pytest.approx(0.0)
    assert report["mean_tv_distance"] == pytest.approx(0.2)


def test_report_accepts_a_positive_class_probability_vector():
    def predict_proba(batch):
        return np.array([0.9 if "he" in t.split() else 0.2 for t in batch])

    report = counterfactual_report(predict_proba, ["he runs"], [("he", "she")])
    assert report["flip_rate"] == 1.0 and report["mean_tv_distance"] == pytest.approx(0.7)


def test_report_with_nothing_to_swap_has_no_rates():
    report = counterfactual_report(_toy_predict_proba(), ["it rained", "a film"], GENDER)
    json.dumps(report, allow_nan=False)
    assert report["n_changed"] == 0 and report["flip_rate"] is None and report["mean_tv_distance"] is None


def test_report_rejects_a_wrong_shape_and_a_bad_batch_size():
    with pytest.raises(ValueError, match=r"predict_proba must return an array \[n_texts, n_classes\]"):
        counterfactual_report(lambda batch: np.zeros((len(batch) + 1, 2)), ["he ran"], GENDER)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        counterfactual_report(_toy_predict_proba(), ["he ran"], GENDER, batch_size=0)
