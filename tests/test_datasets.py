"""Dataset loaders: the real files in their original layouts, user tables, and the splits."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.datasets import (
    DATASETS,
    ENV_VAR,
    SPLITS,
    TextDataset,
    default_data_dir,
    load_builtin,
    load_hf,
    load_table,
    stratified_split,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    try:
        return default_data_dir()
    except DataError:
        return None


DATA = _data_root()
needs_data = pytest.mark.skipif(DATA is None, reason=f"no real data: set {ENV_VAR} or provide ../shared/data")

_cache: dict[tuple, TextDataset] = {}


def require(name: str) -> None:
    """Skip unless the data root holds this dataset's folder (a partial copy is fine)."""
    if DATA is None or not (DATA / DATASETS[name].folder).is_dir():
        pytest.skip(f"no {DATASETS[name].folder}/ in the data root (set {ENV_VAR})")


def builtin(name: str, **options) -> TextDataset:
    """Load a built-in once per test session (the loaders are pure functions of files + options)."""
    require(name)
    key = (name, tuple(sorted((k, json.dumps(v)) for k, v in options.items())))
    if key not in _cache:
        _cache[key] = load_builtin(name, data_dir=DATA, **options)
    return _cache[key]


def counts(data: TextDataset, *by: str) -> dict:
    return data.frame.groupby(list(by), dropna=False).size().to_dict() if len(by) > 1 \
        else data.frame[by[0]].value_counts(dropna=False).to_dict()


# --------------------------------------------------------------------------- data root


def test_env_var_wins_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=ENV_VAR):
        default_data_dir()


def test_default_data_dir_prefers_cwd_sibling_then_repository(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    beside_repo = (REPO_ROOT / ".." / "shared" / "data").resolve()
    assert default_data_dir() == (beside_repo if beside_repo.is_dir() else None)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_missing_dataset_folder_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as err:
        load_builtin("sst2", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "sst2") in message and ENV_VAR in message


def test_unknown_builtin_lists_the_allowed_names():
    with pytest.raises(ConfigError) as err:
        load_builtin("redit_bias")
    for name in DATASETS:
        assert name in str(err.value)


def test_unknown_and_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="group_by"):
        load_builtin("redditbias", data_dir=tmp_path, group_by="term")
    with pytest.raises(ConfigError, match="fractions"):
        load_builtin("redditbias", data_dir=tmp_path, fractions=[0.5, 0.6, 0.1])


def test_registry_describes_every_builtin():
    for name, info in DATASETS.items():
        assert info.name == name and info.description and info.citation
        assert "seed" not in info.options and "folder" not in info.options
    assert DATASETS["sst2"].official_splits and DATASETS["gap"].official_splits
    assert not DATASETS["redditbias"].official_splits


# --------------------------------------------------------------------------- RedditBias

REDDIT = {  # SOURCE.md: group -> (bias_sent = 1, bias_sent = 0)
    "women": (2033, 943), "LGBTQ": (1119, 864), "Black": (1182, 1438), "Jews": (1099, 1012), "Muslims": (1159, 643)}
REDDIT_PHRASE = {"women": (2028, 948), "LGBTQ": (1200, 818), "Black": (1273, 1347), "Jews": (1200, 790),
                 "Muslims": (1200, 601)}


@pytest.mark.realdata
@needs_data
@pytest.mark.parametrize("unit, expected", [("comment", REDDIT), ("phrase", REDDIT_PHRASE)])
def test_redditbias_counts_match_source(unit, expected):
    data = builtin("redditbias", unit=unit)
    assert data.label_names == ("not biased", "biased")
    assert data.group_names == tuple(REDDIT)
    got = counts(data, "group", "label")
    for group, (biased, unbiased) in expected.items():
        assert got[(group, "biased")] == biased
        assert got[(group, "not biased")] == unbiased
    if unit == "comment":
        assert len(data.frame) == 11_492
        assert counts(data, "label") == {"biased": 6_592, "not biased": 4_900}



@pytest.mark.realdata
@needs_data
def test_redditbias_reads_the_mac_roman_byte_as_an_apostrophe():
    data = builtin("redditbias")
    assert not data.frame["text"].str.contains("\ufffd").any()
    raw = (DATA / "redditbias/religion1/reddit_comments_religion1_jews_processed_phrase_annotated.csv").read_bytes()
    line = next(line for line in raw.split(b"\r\n") if line.startswith(b"f4bqxgk,"))
    comment = next(csv.reader([line.decode("mac_roman")]))[2]
    assert "that\u2019s" in comment
    assert (data.frame["text"] == comment).sum() >= 1


@pytest.mark.realdata
@needs_data
def test_redditbias_group_subset():
    require("redditbias")
    data = load_builtin("redditbias", data_dir=DATA, groups=["muslims", "Women"])
    assert data.group_names == ("women", "Muslims")
    assert len(data.frame) == sum(REDDIT["women"]) + sum(REDDIT["Muslims"])
    with pytest.raises(ConfigError, match="LGBTQ"):
        load_builtin("redditbias", data_dir=DATA, groups=["men"])


# --------------------------------------------------------------------------- Jigsaw templates


@pytest.mark.realdata
@needs_data
def test_jigsaw_templates_terms_match_source():
    data = builtin("jigsaw_templates")
    frame = data.frame
    assert len(frame) == 76_564
    assert counts(data, "label") == {"toxic": 38_282, "nontoxic": 38_282}
    assert len(data.group_names) == 50 and "cis" not in data.group_names
    per_term = frame.dropna(subset=["group"]).groupby(["group", "label"]).size()
    assert set(per_term.to_numpy()) == {757}
    no_identity = frame[frame["group"].isna()]
    assert len(no_identity) == 864 and no_identity["text"].str.startswith("You are a").all()
    # Longest match: "african american" rows are not counted as "american".
    assert frame.loc[frame["group"] == "american", "text"].str.contains("african american", case=False).sum() == 0
    assert frame.loc[frame["group"] == "african american", "text"].str.contains("african american",
                                                                                  case=False).all()


@pytest.mark.realdata
@needs_data
def test_jigsaw_templates_categories_match_source():
    data = builtin("jigsaw_templates", group_by="category")
    expected = {"ethnicity": 12_869, "sexuality": 6_813, "religion": 6_056, "age": 6_056, "gender": 3_785,
                "disability": 2_271}
    assert set(data.group_names) == set(expected)
    got = counts(data, "group", "label")
    for category, n in expected.items():
        assert got[(category, "toxic")] == n and got[(category, "nontoxic")] == n


# --------------------------------------------------------------------------- SST-2


@pytest.mark.realdata
@needs_data
def test_sst2_keeps_official_splits_and_counts():
    data = builtin("sst2")
    assert data.group_names == () and data.frame["group"].isna().all()
    got = counts(data, "split", "label")
    expected = {"train": (3610, 3310), "validation": (444, 428), "test": (909, 912)}
    for split, (pos, neg) in expected.items():
        assert got[(split, "positive")] == pos and got[(split, "negative")] == neg
    first = (DATA / "sst2" / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()[0]
    assert data.part("validation")["text"].iloc[0] == first.split(" ", 1)[1]
    assert load_builtin("sst2", data_dir=DATA, seed=5).frame["split"].equals(data.frame["split"])


# --------------------------------------------------------------------------- Davidson


@pytest.mark.realdata
@needs_data
def test_davidson_counts_and_html():
    data = builtin("davidson")
    assert len(data.frame) == 24_783
    assert data.label_names == ("hate speech", "offensive language", "neither")
    assert counts(data, "label") == {"hate speech": 1_430, "offensive language": 19_190, "neither": 4_163}
    assert data.group_names == () and not data.group_is_proxy
    assert not data.frame["text"].str.contains("&amp;").any()
    raw = builtin("davidson", unescape_html=False)
    assert raw.frame["text"].str.contains("&amp;").any()


@pytest.mark.realdata
@needs_data
def test_davidson_identity_proxy_flags_identity_words():
    require("jigsaw_templates")
    data = builtin("davidson", identity_proxy=True)
    assert data.group_is_proxy
    assert data.group_names == ("mentions identity term", "no identity term")
    words = pd.read_csv(DATA / "jigsaw_sentence_templates" / "words.csv")
    neutral = words[(words["type"] == "identity") & (words["connotation"] == "neutral")]["word"].str.lower()
    single = {w for w in neutral if " " not in w}
    multi = [w for w in neutral if " " in w]
    for text, group in zip(data.frame["text"], data.frame["group"], strict=True):
        lowered = text.lower()
        tokens = set(re.findall(r"\w+", lowered))
        if group == "no identity term":
            assert not tokens & single, text
        else:
            assert tokens & single or any(m in lowered for m in multi), text
    flagged = (data.frame["group"] == "mentions identity term").sum()
    assert 0 < flagged < len(data.frame)


# --------------------------------------------------------------------------- GAP

GAP = {  # SOURCE.md: split -> {(gender, label): rows}
    "train": {("feminine", "A"): 436, ("feminine", "B"): 466, ("feminine", "NEITHER"): 98,
              ("masculine", "A"): 438, ("masculine", "B"): 459, ("masculine", "NEITHER"): 103},
    "test": {("feminine", "A"): 465, ("feminine", "B"): 419, ("feminine", "NEITHER"): 116,
             ("masculine", "A"): 453, ("masculine", "B"): 436, ("masculine", "NEITHER"): 111},
    "validation": {("feminine", "A"): 98, ("feminine", "B"): 106, ("feminine", "NEITHER"): 23,
                   ("masculine", "A"): 89, ("masculine", "B"): 99, ("masculine", "NEITHER"): 39},
}
_MARK = re.compile(r"</?[ABP]>")


@pytest.mark.realdata
@needs_data
def test_gap_counts_match_source():
    data = builtin("gap")
    assert data.label_names == ("A", "B", "NEITHER") and data.group_names == ("feminine", "masculine")
    got = counts(data, "split", "group", "label")
    for split, table in GAP.items():
        for (group, label), n in table.items():
            assert got[(split, group, label)] == n


@pytest.mark.realdata
@needs_data
def test_gap_marks_the_spans_at_their_offsets():
    data = builtin("gap")
    with (DATA / "gap_coreference" / "gap-development.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    train = data.part("train")["text"].tolist()
    assert len(rows) == len(train) == 2000
    for row, text in zip(rows, train, strict=True):
        assert _MARK.sub("", text) == row["Text"]
        assert re.search(r"<P>(.*?)</P>", text).group(1) == row["Pronoun"]
        assert re.search(r"<A>(.*?)</A>", text).group(1) == row["A"]
        assert re.search(r"<B>(.*?)</B>", text).group(1) == row["B"]
    short = builtin("gap", context="sentences")
    full_len = data.frame["text"].str.len()
    short_len = short.frame["text"].str.len()
    assert (short_len <= full_len).all() and short_len.mean() < 0.8 * full_len.mean()
    for text, whole in zip(short.frame["text"], data.frame["text"], strict=True):
        assert all(m in text for m in ("<A>", "</A>", "<B>", "</B>", "<P>", "</P>"))
        assert _MARK.sub("", text) in _MARK.sub("", whole)


# --------------------------------------------------------------------------- splits


@pytest.mark.realdata
@needs_data
@pytest.mark.parametrize("name, options", [("redditbias", {}), ("davidson", {"identity_proxy": True}),
                                           ("jigsaw_templates", {})])
def test_made_splits_are_disjoint_complete_and_stratified(name, options):
    data = builtin(name, **options)
    frame = data.frame
    assert set(frame["split"]) == set(SPLITS)
    assert frame["split"].notna().all()
    # No text on two sides of a split, even where the data repeats a text.
    assert frame.groupby("text")["split"].nunique().max() == 1
    for (label, group), part in frame.groupby(["label", "group"], dropna=False):
        n = len(part)
        share = part["split"].value_counts()
        for split, target in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
            assert abs(share.get(split, 0) - n * target) <= max(2.0, 0.01 * n), (label, group, split)


@pytest.mark.realdata
@needs_data
def test_made_splits_are_deterministic_and_seeded():
    require("redditbias")
    again = load_builtin("redditbias", data_dir=DATA)
    assert again.frame["split"].equals(builtin("redditbias").frame["split"])
    other = load_builtin("redditbias", data_dir=DATA, seed=1)
    assert (other.frame["split"] != again.frame["split"]).mean() > 0.1
    assert other.frame["text"].equals(again.frame["text"])


def test_stratified_split_ignores_row_order_and_keeps_duplicates_together():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"text": [f"text {i % 700}" for i in range(1000)],
                          "label": rng.choice(["a", "b", "c"], 1000),
                          "group": rng.choice(["g", "h"], 1000)})
    first = stratified_split(frame, seed=3)
    shuffled = stratified_split(frame.sample(frac=1.0, random_state=1), seed=3)
    assert shuffled["split"].sort_index().equals(first["split"])
    assert first.groupby("text")["split"].nunique().max() == 1
    assert first.index.equals(frame.index) and first["text"].equals(frame["text"])


def test_stratified_split_proportions_and_small_strata():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(1005)],
                          "label": ["x"] * 500 + ["y"] * 500 + ["z"] * 5,
                          "group": [pd.NA] * 1005})
    out = stratified_split(frame, fractions=(0.6, 0.3, 0.1), seed=0)
    table = pd.crosstab(out["label"], out["split"])
    for label in ("x", "y"):
        assert table.loc[label, "train"] == 300
        assert table.loc[label, "validation"] == 150
        assert table.loc[label, "test"] == 50
    assert table.loc["z", "train"] == 5 and table.loc["z"].sum() == 5


def test_stratified_split_rejects_bad_arguments():
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(frame, fractions=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        stratified_split(frame, fractions=(1.1, -0.1, 0.0))
    with pytest.raises(ValueError, match="'group'"):
        stratified_split(frame)


# --------------------------------------------------------------------------- user tables


def _table(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame({
        "review": [f"review number {i}, \"quoted\"" for i in range(n)],
        "stars": [(2, 10, 1)[i % 3] for i in range(n)],
        "who": [("NA", "b", None)[i % 3] for i in range(n)],
        "part": [("train", "dev", "test", "train")[i % 4] for i in range(n)],
    })


@pytest.mark.parametrize("ending", ["csv", "jsonl", "parquet", "json", "tsv"])
def test_load_table_reads_each_format(tmp_path, ending):
    raw = _table()
    path = tmp_path / f"data.{ending}"
    if ending == "csv":
        raw.to_csv(path, index=False)
    elif ending == "tsv":
        with path.open("w", encoding="utf-8", newline="") as handle:  # unquoted, as TSV corpora are
            handle.write("review\tstars\twho\tpart\n")
            for row in raw.itertuples(index=False):
                handle.write(f"{row.review}\t{row.stars}\t{'' if pd.isna(row.who) else row.who}\t{row.part}\n")
    elif ending == "jsonl":
        raw.to_json(path, orient="records", lines=True)
    elif ending == "json":
        raw.to_json(path, orient="records")
    else:
        raw.to_parquet(path)
    data = load_table(path, text_column="review", label_column="stars", group_column="who", split_column="part")
    frame = data.frame
    assert frame["text"].tolist() == raw["review"].tolist()  # quotes kept as text
    assert data.label_names == ("1", "2", "10")  # numeric order, not string order
    assert frame["label"].tolist() == [str(s) for s in raw["stars"]]
    assert data.group_names == ("NA", "b")  # the string "NA" is a group, an empty cell is not
    assert frame["group"].isna().sum() == (raw["who"].isna()).sum()
    assert frame["split"].tolist() == [{"dev": "validation"}.get(p, p) for p in raw["part"]]
    assert data.name == "data"


def test_load_table_without_split_column_is_stratified(tmp_path):
    path = tmp_path / "plain.csv"
    _table(500).drop(columns=["part"]).to_csv(path, index=False)
    data = load_table(path, text_column="review", label_column="stars", group_column="who", seed=4)
    assert set(data.frame["split"]) == set(SPLITS)
    again = load_table(path, text_column="review", label_column="stars", group_column="who", seed=4)
    assert again.frame["split"].equals(data.frame["split"])
    assert abs((data.frame["split"] == "train").mean() - 0.8) < 0.02


def test_load_table_missing_column_names_it_and_the_columns(tmp_path):
    path = tmp_path / "data.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_table(path, text_column="review", label_column="rating")
    message = str(err.value)
    assert "'rating'" in message and "review, stars, who, part" in message
    with pytest.raises(DataError, match="group_column"):
        load_table(path, text_column="review", label_column="stars", group_column="gender")


def test_load_table_refuses_missing_files_values_and_splits(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "absent.csv", text_column="t", label_column="l")
    path = tmp_path / "holes.csv"
    pd.DataFrame({"t": ["a", "b", "c"], "l": ["x", None, "y"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="1 row.*empty label.*line 3"):
        load_table(path, text_column="t", label_column="l")
    path = tmp_path / "splits.csv"
    pd.DataFrame({"t": ["a", "b"], "l": ["x", "y"], "s": ["train", "holdout"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="holdout"):
        load_table(path, text_column="t", label_column="l", split_column="s")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        load_table(odd, text_column="t", label_column="l")


def test_text_dataset_checks_its_frame():
    frame = pd.DataFrame({"text": ["a"], "label": ["x"], "group": [pd.NA], "split": ["train"]})
    with pytest.raises(DataError, match="'y'|'x'"):
        TextDataset("t", frame, ("y",), (), "")
    with pytest.raises(DataError, match="holdout"):
        TextDataset("t", frame.assign(split="holdout"), ("x",), (), "")
    data = TextDataset("t", frame, ("x",), (), "")
    assert data.group_ids().tolist() == [-1] and data.label_ids().tolist() == [0]


# --------------------------------------------------------------------------- datasets (hf)


def test_load_hf_local_folder_maps_splits_and_carves_validation(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    train = pd.DataFrame({"sentence": [f"s{i}" for i in range(90)], "lab": [i % 2 for i in range(90)],
                          "g": ["u", "v", "w"] * 30})
    train.to_csv(folder / "train.csv", index=False)
    train.assign(sentence=[f"q{i}" for i in range(90)]).head(30).to_csv(folder / "test.csv", index=False)
    data = load_hf(folder, text_column="sentence", label_column="lab", group_column="g", seed=2)
    frame = data.frame
    assert counts(data, "split") == {"train": 78, "validation": 12, "test": 30}
    assert frame.loc[frame["split"] == "test", "text"].str.startswith("q").all()
    assert data.label_names == ("0", "1") and data.group_names == ("u", "v", "w")
    with pytest.raises(DataError, match="'nope'"):
        load_hf(folder, text_column="nope", label_column="lab")


def test_load_hf_keeps_class_label_names_in_their_order(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["positive", "negative"])})
    table = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(50)], "label": [0, 1] * 25},
                                       features=features)
    table.to_parquet(str(tmp_path / "labelled.parquet"))
    data = load_hf(tmp_path / "labelled.parquet", text_column="text", label_column="label")
    assert data.label_names == ("positive", "negative")
    assert data.frame["label"].iloc[0] == "positive"
    assert set(data.frame["split"]) == set(SPLITS)


@pytest.mark.realdata
@pytest.mark.parametrize("name, options", [("redditbias", {}), ("sst2", {}), ("davidson", {}),
                                           ("davidson", {"identity_proxy": True}), ("gap", {})])
def test_provides_groups_matches_what_loading_gives(name, options):
    data = builtin(name, **options)
    assert DATASETS[name].provides_groups(**options) == data.has_groups


def test_the_prepared_study_cache_follows_the_bytes_of_a_users_data_file(tmp_path):
    from fairfront.objectives.data.task import DataSpec

    path = tmp_path / "data.csv"
    path.write_text("text,label\nfine,0\nbad,1\n")
    spec = DataSpec(source="file", path=str(path))
    before = spec.identity()
    path.write_text("text,label\nfine,0\nbad,0\n")  # one label edited: a stale cache would train on the old one
    edited = spec.identity()
    path.write_text("text,label\nfine,0\nbad,1\n")
    assert before != edited and spec.identity() == before


@needs_data
def test_the_prepared_study_cache_follows_a_builtin_datasets_and_a_benchmarks_files(tmp_path, monkeypatch):
    import shutil

    from fairfront.objectives.data.task import DataSpec
    from fairfront.objectives.measures.bias_settings import BiasSettings

    require("sst2")
    if not (DATA / "crows_pairs").is_dir():
        pytest.skip(f"no crows_pairs/ in the data root (set {ENV_VAR})")
    for folder in ("sst2", "crows_pairs"):
        shutil.copytree(DATA / folder, tmp_path / folder)
    data, bias = DataSpec(source="sst2"), BiasSettings(intrinsic=("crows_pairs", "seat"))
    original = (data.identity(), bias.identity())
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert (data.identity(), bias.identity()) == original  # the same bytes elsewhere: the same cache
    first = next(f for f in sorted((tmp_path / "sst2").iterdir()) if f.is_file())
    first.write_bytes(first.read_bytes() + b"\n")
    crows = next(f for f in sorted((tmp_path / "crows_pairs").rglob("*")) if f.is_file())
    crows.write_bytes(crows.read_bytes()[:-1])
    assert data.identity() != original[0] and bias.identity() != original[1]
    shutil.rmtree(tmp_path / "sst2")  # missing data: no digest here; preparing it fails with the loader's message
    assert data.identity()["content"] is None
