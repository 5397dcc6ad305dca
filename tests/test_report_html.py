"""``fairfront report`` and ``fairfront front --format``: what a user opens and exports, from a real study.

The study runs for real but small: ``run_study`` with the in-process executor, the real
``run_trial`` on the tiny-random study (a few student steps), SQLite storage. The commands run
through ``cli.main`` as the ``fairfront`` command runs them, and the HTML they write is read back:
the figures are the JSON plotly.js draws, so the checks are on the numbers each plot shows.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from fairfront.objectives.training.trial import TrialOutcome
from fairfront.search import cli
from fairfront.search.attrs import stored_record
from fairfront.search.confirm import confirm_study
from fairfront.search.driver import RunOptions, TooManyFailures, run_study
from fairfront.search.front_data import objectives
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.report_html import hypervolume_reference
from fairfront.search.studyfile import parse_study_text

from conftest import copy_in_the_nested_layout, failing_on_odd_seeds, placeholder_prepared, tiny_study_text

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

N_TRIALS = 5


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _run(folder: Path, text: str, **options) -> str:
    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(parse_study_text(text, base_dir=folder),
              RunOptions(storage=url, cache_dir=folder / "cache", artifact_dir=folder / "artifacts",
                         log=lambda m: None, executor=InProcessExecutor(1, threads=1), **options))
    return url


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str, optuna.Study]:
    """Five real trials of the tiny study (real training, real measures, bootstrap intervals)."""
    folder = tmp_path_factory.mktemp("report")
    url = _run(folder, tiny_study_text("tiny", n_trials=N_TRIALS, parallel=1, student_steps=3))
    return folder, url, optuna.load_study(study_name="tiny", storage=url)


def _cli(args: list[str], folder: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.chdir(folder)
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _array(value) -> list:
    """A plotly array as JSON holds it: a list, or typed binary data."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value)


def _figures(page: str) -> dict[str, tuple[list[dict], dict]]:
    """Every figure of the page, by its title: the traces and the layout plotly.js draws."""
    figures = {}
    decoder = json.JSONDecoder()
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, re.compile(r",\s*").match(page, end).end())
        figures[layout["title"]["text"]] = (data, layout)
    return figures


def _numbers(trace: dict) -> list[int]:
    return [int(re.match(r"trial (\d+)", text).group(1)) for text in trace["text"]]


def test_the_report_is_one_offline_html_file_with_every_plot(study, monkeypatch, capsys) -> None:
    folder, url, s = study
    code, out, err = _cli(["report", "tiny", "--storage", url], folder, monkeypatch, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == "studies/reports/tiny.html"
    page = (folder / "studies" / "reports" / "tiny.html").read_text(encoding="utf-8")
    assert get_plotlyjs()[:2000] in page and page.count("plotly.js v") >= 1  # the bundle itself: opens offline
    assert not re.search(r"<script[^>]+src=", page)
    figures = _figures(page)
    for title in ("accuracy against size", "accuracy against bias", "bias against size"):
        data, layout = figures[title]
        front = [t for t in data if t["name"] == "Pareto front"]
        assert len(front) == 1  # one front trace per projection, the dominated trials in their own (grey) trace
        assert sorted(_numbers(front[0])) == sorted(t.number for t in s.best_trials)
        shown = sum(len(t["x"]) for t in data if t["name"] in ("Pareto front", "dominated"))  # the teacher aside
        assert shown == N_TRIALS
        x_name, y_name = title.split(" against ")[1], title.split(" against ")[0]
        assert layout["xaxis"]["title"]["text"].startswith(x_name)
        assert layout["yaxis"]["title"]["text"].startswith(y_name)
    assert "pruning.sparsity = " in figures["accuracy against size"][0][0]["text"][0]  # parameters on hover
    assert any(t["type"] == "scatter3d" for t in figures["accuracy, size and bias"][0])
    assert "Confirmed on fresh seeds" not in page  # nothing confirmed: no section


def test_each_bias_point_carries_its_bootstrap_interval(study, monkeypatch, capsys) -> None:
    folder, url, s = study
    _cli(["report", "tiny", "--storage", url, "--out", "r.html"], folder, monkeypatch, capsys)
    data, _ = _figures((folder / "r.html").read_text(encoding="utf-8"))["accuracy against bias"]
    trials = {t.number: t for t in s.trials}
    checked = 0
    for trace in (t for t in data if t["name"] in ("Pareto front", "dominated")):  # the teacher has no interval
        ups, downs = _array(trace["error_x"]["array"]), _array(trace["error_x"]["arrayminus"])
        for number, x, up, down in zip(_numbers(trace), _array(trace["x"]), ups, downs):
            attrs = trials[number].user_attrs  # the interval the dashboard shows is the one drawn
            low, high = attrs["validation.bias.tpr_gap.ci_low"], attrs["validation.bias.tpr_gap.ci_high"]
            assert x == trials[number].values[2]
            assert x + up == pytest.approx(max(high, x)) and x - down == pytest.approx(min(low, x))
            checked += 1
    assert checked == N_TRIALS


def test_the_teacher_hypervolume_and_per_group_rates_are_drawn(study, monkeypatch, capsys) -> None:
    folder, url, s = study
    _cli(["report", "tiny", "--storage", url], folder, monkeypatch, capsys)
    page = (folder / "studies" / "reports" / "tiny.html").read_text(encoding="utf-8")
    figures = _figures(page)
    complete = s.get_trials(states=(TrialState.COMPLETE,))
    # the dense teacher, as the study stores it, is a star at its validation values in every projection
    overall = stored_record(complete[0])["validation"]["forgetting"]["disparate_impact"]["class"]["overall"]
    stored = s.user_attrs["fairfront.teacher"]
    for title, (x, y) in {"accuracy against size": (stored["size"]["nonzero_params"], overall["dense_accuracy"]),
                          "bias against size": (stored["size"]["nonzero_params"],
                                                stored["validation"]["bias"]["tpr_gap"])}.items():
        (star,) = [t for t in figures[title][0] if t.get("name") == "dense teacher (reference)"]
        assert _array(star["x"]) == [pytest.approx(x)] and _array(star["y"]) == [pytest.approx(y)]
    assert "Red star: the dense teacher" in page
    # the hypervolume grows (never falls) over the trials, as a share of the box it is measured in
    data, _ = figures["Hypervolume history"]
    assert _array(data[0]["x"]) == [t.number for t in complete]
    history = _array(data[0]["y"])
    assert all(0 < v <= 1 for v in history) and history == sorted(history)
    assert "reference point accuracy " in page
    # per-group bars: one bar trace per group and rate, one bar per front trial, the stored numbers
    data, _ = figures["Per-group accuracy, TPR and FPR of the front's trials"]
    assert {t["name"] for t in data if t["type"] == "bar"} == {"female", "male"} and len(data) == 6
    first = sorted(s.best_trials, key=lambda t: (-t.values[0], t.number))[0]
    female_accuracy = next(t for t in data if t["name"] == "female" and t["yaxis"] == "y")
    assert female_accuracy["x"][0] == f"trial {first.number}"
    assert len(female_accuracy["x"]) == len(s.best_trials)
    rates = stored_record(first)["validation"]["fairness"]["group_rates"]
    assert female_accuracy["y"][0] == rates["female"]["accuracy"]
    families, _ = figures["Bias against size, per compression family"]
    assert {t["name"] for t in families} == {"distillation", "pruning", "fairness"}


def test_confirmed_trials_show_their_search_value_and_test_mean_with_its_interval(study, tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    folder, url, _ = study
    db = tmp_path / "confirmed.db"
    with sqlite3.connect(folder / "studies.db") as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    storage = f"sqlite:///{db}"
    records = confirm_study("tiny", RunOptions(storage=storage, cache_dir=folder / "cache", log=lambda m: None,
                                               executor=InProcessExecutor(1, threads=1)), seeds=2, top=2)
    code, _, err = _cli(["report", "tiny", "--storage", storage, "--out", "r.html"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "across the seeds of that one trial" in page and "not whether one trial differs from another" in page
    data, layout = _figures(page)["Confirmed on fresh seeds"]
    s = optuna.load_study(study_name="tiny", storage=storage)
    numbers = sorted(records)
    for index, o in enumerate(objectives(s)):
        axis = "y" if index == 0 else f"y{index + 1}"
        search, confirmed = (t for t in data if t.get("yaxis", "y") == axis)
        assert search["x"] == confirmed["x"] == [str(n) for n in numbers]  # trial numbers on the x axis
        assert _array(search["y"]) == [s.trials[n].values[index] for n in numbers]  # the search's validation value
        means, up, down = (_array(confirmed["y"]), _array(confirmed["error_y"]["array"]),
                           _array(confirmed["error_y"]["arrayminus"]))
        for n, mean, plus, minus in zip(numbers, means, up, down):
            stored = {k: s.user_attrs[f"confirm.{n}.test.{o.name}.{k}"] for k in ("mean", "ci_low", "ci_high", "n")}
            assert stored["n"] == 2
            assert mean == pytest.approx(stored["mean"])
            assert (mean + plus, mean - minus) == (pytest.approx(stored["ci_high"]), pytest.approx(stored["ci_low"]))
        assert layout[f"xaxis{'' if index == 0 else index + 1}"]["title"]["text"] == "trial"


def test_the_hypervolume_reference_point_is_past_the_worst_value() -> None:
    values = np.array([[0.9, 100.0, 0.1], [0.5, 50.0, 0.3], [0.7, 80.0, 0.3]])
    reference, ideal = hypervolume_reference(values, [True, False, False])
    assert reference.tolist() == pytest.approx([0.46, 105.0, 0.32])
    assert ideal.tolist() == pytest.approx([0.9, 50.0, 0.1])
    same, _ = hypervolume_reference(np.array([[0.5, 0.0, 2.0]]), [True, False, False])
    assert same.tolist() == pytest.approx([0.4, 0.1, 2.2])  # no range: 10% of the value, at least 0.1


def _always_fails(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    raise ValueError("the loss was NaN at step 2")


def test_a_study_without_a_complete_trial_renders_with_a_message(tmp_path, monkeypatch, capsys) -> None:
    text = tiny_study_text("broken", n_trials=2, parallel=1) + "max_failed_trials = 1\n"
    with pytest.raises(TooManyFailures):
        _run(tmp_path, text, trial_fn=_always_fails, prepared=placeholder_prepared())
    code, out, err = _cli(["report", "broken", "--storage", f"sqlite:///{tmp_path / 'studies.db'}"], tmp_path,
                          monkeypatch, capsys)
    assert code == 0, err
    page = (tmp_path / out.splitlines()[-1]).read_text(encoding="utf-8")
    assert "No COMPLETE trial yet: there is no front to plot" in page
    assert "0 COMPLETE" in page and "2 FAIL" in page and "the loss was NaN at step 2" in page


def test_one_complete_trial_after_a_failure_renders(tmp_path, monkeypatch, capsys) -> None:
    text = tiny_study_text("single", n_trials=1, parallel=1).replace("seed = 0", "seed = 1")  # trial 0 fails
    _run(tmp_path, text, trial_fn=failing_on_odd_seeds, prepared=placeholder_prepared())
    code, out, err = _cli(["report", "single", "--storage", f"sqlite:///{tmp_path / 'studies.db'}"], tmp_path,
                          monkeypatch, capsys)
    assert code == 0, err
    page = (tmp_path / "studies" / "reports" / "single.html").read_text(encoding="utf-8")
    assert "Only one COMPLETE trial" in page and "odd seed 1" in page
    assert "No per-group rates were stored" in page  # these trials measured nothing but their values
    assert len(_array(_figures(page)["Hypervolume history"][0][0]["y"])) == 1


def test_front_exports_agree_on_rows_columns_and_types(study, monkeypatch, capsys) -> None:
    folder, url, s = study
    code, out, err = _cli(["front", "tiny", "--storage", url, "--format", "parquet", "--out", "out/front.parquet"],
                          folder, monkeypatch, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == "out/front.parquet"
    frame = pd.read_parquet(folder / "out" / "front.parquet")
    objectives = ["accuracy", "size", "bias", "test_accuracy", "test_bias", "bias_ci_low", "bias_ci_high",
                  "test_bias_ci_low", "test_bias_ci_high", "degenerate"]
    params = sorted({p for t in s.best_trials for p in t.params})
    assert list(frame.columns) == ["trial", *objectives, *params]
    order = [t.number for t in sorted(s.best_trials, key=lambda t: (-t.values[0], t.number))]
    assert frame["trial"].tolist() == order
    for number in order:
        trial, values = s.trials[number], frame.set_index("trial").loc[number]
        assert [values["accuracy"], values["size"], values["bias"]] == trial.values
        attrs = trial.user_attrs  # the same numbers as the dashboard's attributes
        assert values["test_accuracy"] == attrs["test.accuracy"]
        assert values["test_bias"] == attrs["test.bias.tpr_gap"]
        assert [values["test_bias_ci_low"], values["test_bias_ci_high"]] == [attrs["test.bias.tpr_gap.ci_low"],
                                                                             attrs["test.bias.tpr_gap.ci_high"]]
    integers = {p for t in s.best_trials for p, d in t.distributions.items() if isinstance(d, IntDistribution)}
    assert all(pd.api.types.is_integer_dtype(frame[p]) for p in integers)
    # every format lists the same rows in the same order
    for fmt in ("csv", "json", "table"):
        code, out, _ = _cli(["front", "tiny", "--storage", url, "--format", fmt], folder, monkeypatch, capsys)
        assert code == 0
        if fmt == "csv":
            assert pd.read_csv(io.StringIO(out))["trial"].tolist() == order
        elif fmt == "json":
            rows = json.loads(out)
            assert [r["trial"] for r in rows] == order and list(rows[0]) == list(frame.columns)
            assert all(isinstance(r[p], int) for r in rows for p in integers if r[p] is not None)
        else:
            lines = out.splitlines()  # the classes, the table's header, the teacher's reference row, the front
            assert lines[0].startswith("classes: ") and "positive class" not in lines[0]  # synthetic bios: multi-class
            assert re.split(r"\s{2,}", lines[1])[:4] == ["trial", "accuracy", "size (nonzero_params, parameters)",
                                                       "bias (tpr_gap)"]
            assert lines[2].startswith("dense teacher*")
            table = [line for line in lines[2:] if line[:1].isdigit()]
            assert [int(line.split()[0].rstrip("!")) for line in table] == order
            for line, number in zip(table, order):  # the test split and both intervals, as stored
                row = frame.set_index("trial").loc[number]
                assert f"{row['test_accuracy']:.4f}" in line
                assert f"{row['bias']:.4f} [{row['bias_ci_low']:.4f}, {row['bias_ci_high']:.4f}]" in line
                assert f"{row['test_bias']:.4f} [{row['test_bias_ci_low']:.4f}, {row['test_bias_ci_high']:.4f}]" in line


def test_parquet_needs_an_out_file_and_writes_nothing_without_one(study, tmp_path, monkeypatch, capsys) -> None:
    _, url, _ = study
    code, out, err = _cli(["front", "tiny", "--storage", url, "--format", "parquet"], tmp_path, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: --out: --format parquet writes a binary file: give --out FILE.parquet (the "
                                "other formats print to standard output without it)"]
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("extra", [[], ["--out", "r/report.html"]])
def test_report_on_a_missing_database_creates_nothing(extra: list[str], tmp_path, monkeypatch, capsys) -> None:
    code, out, err = _cli(["report", "tiny", *extra], tmp_path, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("error: --storage: the SQLite database studies/fairfront.db does not exist")
    assert _tree(tmp_path) == []


def test_a_study_written_in_the_nested_layout_reads_the_same(study, monkeypatch, capsys) -> None:
    """Studies stored before the record (every measure nested in the user attributes) still report the same."""
    folder, url, s = study
    copy_in_the_nested_layout(s, url, "nested")
    outputs = {}
    for name in ("tiny", "nested"):
        _cli(["report", name, "--storage", url, "--out", f"{name}.html"], folder, monkeypatch, capsys)
        figures = _figures((folder / f"{name}.html").read_text(encoding="utf-8"))
        code, front, err = _cli(["front", name, "--storage", url, "--format", "json"], folder, monkeypatch, capsys)
        assert code == 0, err
        code, status, err = _cli(["status", name, "--storage", url], folder, monkeypatch, capsys)
        assert code == 0, err
        outputs[name] = (figures, json.loads(front), status.replace(name, "NAME"))
    assert outputs["nested"] == outputs["tiny"]
    figures, front, _ = outputs["tiny"]
    assert all(row["test_bias_ci_high"] is not None for row in front)  # read from the record, not left empty
    assert figures["Per-group accuracy, TPR and FPR of the front's trials"][0]
