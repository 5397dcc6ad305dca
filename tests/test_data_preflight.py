"""Data a user can trust, found before anything runs: ``validate`` reads the data and refuses what a
study could not use, binary tasks name their positive class, and max_train/max_eval are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.data.task import DataSpec, load_task
from fairfront.objectives.measures.group_fairness import BIAS_MEASURES, fairness_report
from fairfront.search.attrs import stored_record
from fairfront.search.cli import main

STUDY = """
[study]
name = "trust"
n_trials = 1
sampler = "random"
bootstrap_resamples = 0

[model]
name = "tiny-random"
max_length = 16

[data]
source = "file"
path = "{path}"
text_column = "text"
label_column = "label"
{data}

[objectives]
bias = "{bias}"

[teacher]
epochs = 1.0
batch_size = 32
learning_rate = 3e-3

[student]
epochs = 1.0
max_steps = 3
batch_size = 32

[space.pruning]
sparsity = [0.2, 0.9]
"""


def _study(folder: Path, path: str, data: str = 'group_column = "target"', bias: str = "tpr_gap") -> Path:
    study = folder / "study.toml"
    study.write_text(STUDY.format(path=path, data=data, bias=bias))
    return study


def _rows(n: int = 120, *, positive_groups_only: bool = False) -> list[tuple[str, str, str]]:
    """Texts labelled ``hate`` / ``not_hate``; groups on every row, or only on the hateful ones."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = "hate" if i % 3 == 0 else "not_hate"
        group = str(rng.choice(["women", "muslims"]))
        if positive_groups_only and label != "hate":
            group = ""
        out.append((f"comment {i} says {label.replace('_', ' ')} {rng.integers(1000)}", label, group))
    return out


def _csv(folder: Path, rows: list[tuple[str, str, str]], name: str = "data.csv") -> str:
    pd.DataFrame(rows, columns=["text", "label", "target"]).to_csv(folder / name, index=False)
    return name


def _refused(folder: Path, study: Path, capsys, monkeypatch) -> str:
    """Run ``validate``; assert exit 2, exactly one ``error:`` line, and nothing written; return the line."""
    monkeypatch.chdir(folder)
    before = set(folder.rglob("*"))
    code = main(["validate", str(study)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "\x1b[" not in captured.err and "Traceback" not in captured.err
    assert set(folder.rglob("*")) == before  # no study DB, no cache dir
    return lines[0]


def _with(rows, index: int, **change) -> list[tuple[str, str, str]]:
    out = list(rows)
    text, label, group = out[index]
    out[index] = (change.get("text", text), change.get("label", label), change.get("group", group))
    return out


@pytest.mark.parametrize(("case", "expected"), [
    ("blank label", ["data.csv", "'label'", "2 row(s)", "empty label", "line 7"]),
    ("empty text", ["data.csv", "'text'", "1 row(s)", "empty text", "line 4"]),
    ("single class", ["data.csv", "'label'", "one class ('hate')"]),
    ("no group column", ["data.csv", "'tpr_gap'", "no group column"]),
    ("empty group column", ["data.csv", "'tpr_gap'", "'target' is empty in all 120 rows"]),
    ("fractional labels", ["data.csv", "'label'", "fractions", "line 3", "43 classes", "label_bins"]),
    ("positive without groups", ["data.csv", "'tpr_gap' is undefined", "'not_hate'", "'target'"]),
    ("positive not a class", ["data.csv", "positive_label = 'hateful'", "'hate', 'not_hate'"]),
])
def test_validate_refuses_each_data_mistake_with_one_line(tmp_path, capsys, monkeypatch, case, expected) -> None:
    rows, data = _rows(), 'group_column = "target"'
    if case == "blank label":
        rows = _with(_with(rows, 5, label="  "), 9, label="")
    elif case == "empty text":
        rows = _with(rows, 2, text="")
    elif case == "single class":
        rows = [(t, "hate", g) for t, _, g in rows]
    elif case == "no group column":
        data = ""
    elif case == "empty group column":
        rows = [(t, y, "") for t, y, _ in rows]
    elif case == "fractional labels":
        rows = [(t, f"{(i % 43) / 42:.4f}", g) for i, (t, _, g) in enumerate(rows)]
    elif case == "positive without groups":
        rows, data = _rows(positive_groups_only=True), 'group_column = "target"\npositive_label = "not_hate"'
    elif case == "positive not a class":
        data = 'group_column = "target"\npositive_label = "hateful"'
    line = _refused(tmp_path, _study(tmp_path, _csv(tmp_path, rows), data), capsys, monkeypatch)
    for part in expected:
        assert part in line, line


def test_semicolon_file_read_as_csv_gets_a_sep_hint(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "data.csv").write_text("text;label;target\n" + "".join(f"t{i};{i % 2};g{i % 2}\n" for i in range(40)))
    line = _refused(tmp_path, _study(tmp_path, "data.csv"), capsys, monkeypatch)
    assert "sep = \";\"" in line and "text;label;target" in line


@pytest.mark.parametrize(("data", "key"), [
    ('sep = ";;"', "data.sep"), ('quote = "<<"', "data.quote"), ('encoding = "klingon-8"', "data.encoding"),
    ("label_bins = [0.7, 0.2]", "data.label_bins"),
])
def test_reader_options_are_validated(tmp_path, capsys, monkeypatch, data, key) -> None:
    study = _study(tmp_path, _csv(tmp_path, _rows()), 'group_column = "target"\n' + data)
    assert _refused(tmp_path, study, capsys, monkeypatch).startswith(f"error: {key} = ")


def test_validate_prints_the_data_summary(tmp_path, capsys, monkeypatch) -> None:
    rows = _rows(240, positive_groups_only=True)
    study = _study(tmp_path, _csv(tmp_path, rows))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 0
    out = capsys.readouterr().out
    assert "classes: 'hate', 'not_hate'; positive class: 'hate'" in out  # the minority class, not sorted-second
    assert "rows without a group: 160 (kept for training and accuracy; left out of group measures)" in out
    assert "bias objective tpr_gap: true-positive rate of 'hate' across groups" in out
    for split in ("train", "validation", "test"):
        assert f"  {split}: " in out
    assert "(no group)" in out and "missing" not in out
    assert not (tmp_path / "studies").exists()


def test_positive_label_changes_the_tpr_gap_as_defined() -> None:
    # class 0 = hate, class 1 = not_hate (sorted); group a misses half its hateful rows
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 2)
    pred = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1])
    g = np.array(["a"] * 8 + ["b"] * 8)
    tpr_gap = BIAS_MEASURES["tpr_gap"]
    # positive hate: TPR a = 2/4, b = 4/4 -> 0.5; positive not_hate: TPR a = 4/4, b = 3/4 -> 0.25
    assert tpr_gap(y, pred, sensitive_features=g, pos_label=0) == pytest.approx(0.5)
    assert tpr_gap(y, pred, sensitive_features=g, pos_label=1) == pytest.approx(0.25)
    assert tpr_gap(y, pred, sensitive_features=g) == pytest.approx(0.25)  # default: class 1, as before
    report = fairness_report(y, pred, sensitive_features=g, class_names=["hate", "not_hate"], n_resamples=20,
                             pos_label=0)
    assert report["positive_class"] == "hate"
    assert report["measures"]["tpr_gap"] == pytest.approx(0.5)
    assert report["group_rates"]["a"]["tpr"] == pytest.approx(0.5)


def test_default_positive_prefers_named_classes_then_the_minority(tmp_path) -> None:
    def positive(labels: list[str], **kw) -> str | None:
        path = tmp_path / "p.csv"
        pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
        return load_task(DataSpec(source="file", path=str(path), **kw)).positive_label

    assert positive(["hateful"] * 30 + ["non-hateful"] * 70) == "hateful"  # minority, though sorted first
    assert positive(["no"] * 30 + ["yes"] * 70) == "yes"
    assert positive(["0"] * 30 + ["1"] * 70) == "1"
    assert positive(["hateful"] * 30 + ["non-hateful"] * 70, positive_label="non-hateful") == "non-hateful"
    assert positive(["a"] * 30 + ["b"] * 30 + ["c"] * 40) is None  # multi-class: one-vs-rest


def test_max_train_gives_exact_counts_and_keeps_rows_without_a_group(tmp_path) -> None:
    rows = _rows(600, positive_groups_only=True)
    path = tmp_path / _csv(tmp_path, rows)
    full = load_task(DataSpec(source="file", path=str(path), group_column="target")).frame
    for cap in (37, 100, 211):
        frame = load_task(DataSpec(source="file", path=str(path), group_column="target", max_train=cap,
                                   max_eval=23)).frame
        train = frame[frame["split"] == "train"]
        assert len(train) == cap
        assert (frame["split"] != "train").sum() == 2 * 23
        share = full.loc[full["split"] == "train", "group"].isna().mean()
        assert abs(train["group"].isna().mean() - share) <= 2 / cap  # group-less rows kept, in proportion


def test_sep_encoding_and_quote_are_read_as_given(tmp_path) -> None:
    text = "text|label|target\n" + "".join(f"'café, {i} | quoted'|{i % 2}|g{i % 2}\n" for i in range(30))
    (tmp_path / "d.csv").write_bytes(text.encode("latin-1"))
    spec = DataSpec(source="file", path=str(tmp_path / "d.csv"), group_column="target", sep="|",
                    encoding="latin-1", quote="'")
    frame = load_task(spec).frame.sort_index()
    assert frame["text"].iloc[3] == "café, 3 | quoted"
    assert set(frame["label"]) == {"0", "1"}
    with pytest.raises(DataError, match="encoding"):
        load_task(DataSpec(source="file", path=str(tmp_path / "d.csv"), group_column="target", sep="|", quote="'"))


def test_label_bins_turn_scores_into_classes(tmp_path) -> None:
    scores = [i / 99 for i in range(100)]
    pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": scores}).to_json(tmp_path / "s.jsonl",
                                                                                  orient="records", lines=True)
    with pytest.raises(DataError, match=r"fractions .*first: line 2.* 100 classes"):
        load_task(DataSpec(source="file", path=str(tmp_path / "s.jsonl")))
    data = load_task(DataSpec(source="file", path=str(tmp_path / "s.jsonl"), label_bins=(0.5,)))
    assert data.label_names == ("0", "1") and data.positive_label == "1"
    labels = data.frame.sort_index()["label"].tolist()
    assert labels == ["0" if s < 0.5 else "1" for s in scores]
    three = load_task(DataSpec(source="file", path=str(tmp_path / "s.jsonl"), label_bins=(0.25, 0.75)))
    assert three.label_names == ("0", "1", "2") and three.positive_label is None


def test_study_file_refuses_bad_label_bins_without_reading_data(tmp_path) -> None:
    from fairfront.search.studyfile import parse_study_text

    _csv(tmp_path, _rows())
    with pytest.raises(ConfigError, match="data.label_bins"):
        parse_study_text(STUDY.format(path="data.csv", data="label_bins = []", bias="tpr_gap"), base_dir=tmp_path)


def test_run_refuses_bad_data_before_a_study_or_cache_exists(tmp_path) -> None:
    from conftest import run_cli

    rows = _with(_rows(), 4, label=" ")
    study = _study(tmp_path, _csv(tmp_path, rows))
    result = run_cli(["run", str(study)], tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == ["error: data.csv: 1 row(s) have an empty label in column 'label' (first: line 6); "
                     "remove or fill them"]
    assert not (tmp_path / "studies").exists()


def test_data_error_inside_a_ray_task_reaches_the_user_as_its_own_line(tmp_path, local_ray) -> None:
    from fairfront.search.ray_executor import prepare_remote
    from fairfront.search.studyfile import load_study_file

    study = _study(tmp_path, _csv(tmp_path, _rows()))
    sf = load_study_file(study)
    _csv(tmp_path, _with(_rows(), 2, text=""))  # the file changes after the study file was read
    with pytest.raises(DataError) as info:
        prepare_remote(sf.prepare_spec, cpus=1, gpus=0)
    assert type(info.value) is DataError
    assert str(info.value) == ("data.csv: 1 row(s) have an empty text in column 'text' (first: line 4); "
                               "remove or fill them")


def test_a_real_run_measures_the_named_positive_class(tmp_path, cache_dir) -> None:
    """Same data, seeds and model; only positive_label differs: TPR under 'not_hate' is 1 - FPR under 'hate'."""
    import optuna

    from fairfront.search.driver import RunOptions, run_study
    from fairfront.search.inprocess_executor import InProcessExecutor
    from fairfront.search.studyfile import load_study_file

    path = _csv(tmp_path, _rows(240))
    rates, classes = {}, {}
    for positive in ("hate", "not_hate"):
        folder = tmp_path / positive
        folder.mkdir()
        study = _study(folder, str(tmp_path / path), f'group_column = "target"\npositive_label = "{positive}"')
        storage = f"sqlite:///{folder / 's.db'}"
        options = RunOptions(storage=storage, cache_dir=cache_dir, log=lambda m: None, artifact_dir=folder / "a",
                             executor=InProcessExecutor(1, threads=1))
        run_study(load_study_file(study), options)
        stored = optuna.load_study(study_name="trust", storage=storage)
        fairness = stored_record(stored.trials[0])["validation"]["fairness"]
        assert fairness["positive_class"] == positive
        rates[positive], classes[positive] = fairness["group_rates"], stored.user_attrs["fairfront.classes"]
    assert classes["not_hate"] == {"names": ["hate", "not_hate"], "positive": "not_hate"}
    assert classes["hate"]["positive"] == "hate"
    for group in ("women", "muslims"):
        assert rates["not_hate"][group]["tpr"] == pytest.approx(1.0 - rates["hate"][group]["fpr"])
        assert rates["not_hate"][group]["fpr"] == pytest.approx(1.0 - rates["hate"][group]["tpr"])


def test_whole_number_labels_written_as_floats_are_one_class_each(tmp_path) -> None:
    (tmp_path / "f.csv").write_text("text,label\n" + "".join(f"t{i},{float(i % 2)}\n" for i in range(40)))
    data = load_task(DataSpec(source="file", path=str(tmp_path / "f.csv")))
    assert data.label_names == ("0", "1") and data.positive_label == "1"
