"""``fairfront explain`` on a real tiny study: results stored with the study, exemplars as stored, refusals.

The study (tiny BERT, a dense population of two, a few student steps per trial) runs in this process
with the real ``run_trial``; a copy of its database taken after three trials is the "too few trials"
case, and one trial is told FAIL afterwards.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from fairfront.objectives.data.task import load_task
from fairfront.objectives.measures.forgetting import compression_identified_exemplars
from fairfront.objectives.training.prepare import cached
from fairfront.search.attrs import stored_record
from fairfront.search.cli import main
from fairfront.search.driver import RunOptions, resume_study, run_study
from fairfront.search.explain.exemplars import stored_predictions
from fairfront.search.explain.importance import MIN_TRIALS
from fairfront.search.explain.store import EXPLAIN_ATTR
from fairfront.search.explain.who_pays import TEACHER_ATTR, who_pays
from fairfront.search.front_data import objectives
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.report_html import per_group_rates
from fairfront.search.studyfile import parse_study_text

from conftest import tiny_study_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("explain")
    text = tiny_study_text("explain", n_trials=3, parallel=1, student_steps=4)
    text = text.replace("[space.pruning]", "[bias]\ndense_population = 1\n\n[space.pruning]")
    sf = parse_study_text(text, base_dir=folder)
    storage = f"sqlite:///{folder / 'explain.db'}"
    options = RunOptions(storage=storage, cache_dir=cache_dir, artifact_dir=folder / "artifacts", log=lambda m: None,
                         executor=InProcessExecutor(1, threads=1))
    run_study(sf, options)
    with sqlite3.connect(folder / "explain.db") as source, sqlite3.connect(folder / "few.db") as copy:
        source.backup(copy)  # the database as it is after three trials (its write-ahead log included)
    options.n_trials = MIN_TRIALS
    resume_study("explain", options)
    stored = optuna.load_study(study_name="explain", storage=storage)
    failed = stored.ask()
    stored.tell(failed, state=TrialState.FAIL)
    return {"storage": storage, "folder": folder, "cache_dir": cache_dir, "sf": sf, "failed": failed.number,
            "artifacts": folder / "explain-artifacts"}


def _args(study, *more: str) -> list[str]:
    return ["explain", "explain", "--storage", study["storage"], "--cache-dir", str(study["cache_dir"]),
            "--artifact-dir", str(study["artifacts"]), *more]


def _validation(study) -> tuple[list[str], list[str]]:
    frame = load_task(study["sf"].data).frame
    part = frame[frame["split"] == "validation"]
    return part["text"].astype(str).tolist(), part["label"].astype(str).tolist()


def _stored_cie(trial) -> list[int]:
    return stored_record(trial)["validation"]["forgetting"]["cie"]["examples"]["index"]


def test_a_trial_explained_ranks_its_components_and_writes_its_stored_exemplars(study, capsys) -> None:
    loaded = optuna.load_study(study_name="explain", storage=study["storage"])
    trial = max((t for t in loaded.trials if t.state == TrialState.COMPLETE),
                key=lambda t: stored_record(t)["validation"]["forgetting"]["cie"]["n_cie"])
    out = study["folder"] / "cie.csv"
    code = main(_args(study, "--trial", str(trial.number), "--exemplars", str(out), "--resamples", "50"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Which knob" in captured.out and f"trial {trial.number}:" in captured.out
    assert captured.err.count("ablated layer") == 4 and captured.err.count("feed-forward blocks") == 2  # trial, teacher
    rows = list(csv.DictReader(out.open()))
    cie = _stored_cie(trial)
    n_cie = stored_record(trial)["validation"]["forgetting"]["cie"]["n_cie"]
    assert [int(r["index"]) for r in rows] == cie and len(cie) == n_cie > 0
    texts, labels = _validation(study)
    assert all(r["text"] == texts[int(r["index"])] and r["label"] == labels[int(r["index"])] for r in rows)
    assert all(sum(json.loads(r["dense_votes"]).values()) == 2 for r in rows)  # teacher + one population member
    stored = optuna.load_study(study_name="explain", storage=study["storage"]).user_attrs[EXPLAIN_ATTR]
    assert set(stored["models"]) == {f"trial {trial.number}", "teacher"}
    model = stored["models"][f"trial {trial.number}"]
    assert model["focus"] == "tpr_gap" and len(model["top"]) == 6  # 2 layers x 2 heads + 2 feed-forward blocks
    assert abs(model["top"][0]["delta"]) >= abs(model["top"][-1]["delta"])
    assert set(model["agreement"]) == {"all", "head", "ffn"}
    assert set(stored["importance"]) == {"accuracy", "size", "bias"}
    assert stored["exemplars"]["n_cie"] == len(cie)
    assert (study["artifacts"] / stored["artifact_id"]).exists()


def test_the_front_exemplars_and_json_output_and_the_report_section(study, capsys) -> None:
    out = study["folder"] / "front.jsonl"
    code = main(_args(study, "--format", "json", "--exemplars", str(out)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    loaded = optuna.load_study(study_name="explain", storage=study["storage"])
    front = sorted(t.number for t in loaded.best_trials)
    assert record["exemplars"]["trials"] == front
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == record["exemplars"]["n_cie"]
    if len(front) == 1:  # the front's CIEs are its one trial's
        assert [r["index"] for r in rows] == _stored_cie(loaded.trials[front[0]])
    every = set().union(*(_stored_cie(loaded.trials[n]) for n in front))
    assert {r["index"] for r in rows} <= every  # a modal change is a change of some front trial
    report = study["folder"] / "report.html"
    assert main(["report", "explain", "--storage", study["storage"], "--out", str(report)]) == 0
    page = report.read_text()
    assert "Origins of bias: which knob" in page and "Origins of bias: who pays" in page


def _files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but SQLite's own WAL index files, which opening a database for reading creates."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def _refused(study, capsys, args: list[str], storage: str | None = None) -> str:
    folder = study["folder"]
    before = _files(folder)
    artifacts_before = sorted(study["artifacts"].iterdir()) if study["artifacts"].exists() else None
    full = _args(study, *args)
    if storage is not None:
        full[full.index("--storage") + 1] = storage
    code = main(full)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert _files(folder) == before  # nothing written
    assert (sorted(study["artifacts"].iterdir()) if study["artifacts"].exists() else None) == artifacts_before
    return lines[0]


def test_bad_input_is_one_line_exit_2_and_nothing_written(study, capsys) -> None:
    line = _refused(study, capsys, ["--trial", str(study["failed"]), "--exemplars", str(study["folder"] / "x.csv")])
    assert f"trial {study['failed']} is FAIL" in line
    line = _refused(study, capsys, ["--trial", "999"])
    assert "--trial = 999" in line
    line = _refused(study, capsys, ["--exemplars", str(study["folder"] / "x.txt")])
    assert ".csv or .jsonl" in line
    few = f"sqlite:///{study['folder'] / 'few.db'}"
    line = _refused(study, capsys, [], storage=few)
    assert f"at least {MIN_TRIALS} COMPLETE trials" in line and "it has 3" in line
    full = _args(study)
    full[1] = "no-such-study"
    assert main(full) == 2
    assert "no-such-study" in capsys.readouterr().err


def test_exemplars_match_the_stored_mask_of_every_trial(study) -> None:
    """The stored CIE indices are the exemplars of the trial's rebuilt predictions against the population."""
    loaded = optuna.load_study(study_name="explain", storage=study["storage"])
    prepared = cached(Path(study["cache_dir"]) / study["sf"].prepare_spec.fingerprint(), log=lambda m: None)
    population = prepared.population_predictions("validation")
    for trial in (t for t in loaded.trials if t.state == TrialState.COMPLETE):
        pred = stored_predictions(trial, population)
        mask = compression_identified_exemplars(population, pred)
        assert np.flatnonzero(mask).tolist() == _stored_cie(trial)
        accuracy = float((pred == prepared.splits["validation"].labels).mean())
        assert accuracy == pytest.approx(trial.values[0])  # the rebuilt predictions are the trial's own


def test_who_pays_reads_the_teachers_rates_from_the_study_attribute(study) -> None:
    """A ``fairfront.teacher`` attribute (a trial report's attributes) is the TPR reference: given a trial's own
    attributes as the teacher's, that trial pays nothing."""
    loaded = optuna.load_study(study_name="explain", storage=study["storage"])
    complete = [t for t in loaded.trials if t.state == TrialState.COMPLETE]
    objs = objectives(loaded)
    asked: list[str] = []
    pays = who_pays(complete, objs, stored_record(complete[0]), lambda: asked.append("cache") or None)
    assert pays["teacher_tpr_source"] == TEACHER_ATTR and not asked
    own = next(r for r in pays["trials"] if r["trial"] == complete[0].number)
    assert own["group_tpr"] and all(v == 0.0 for v in own["group_tpr"].values())
    fallback = who_pays(complete, objs, None, lambda: {g: {"tpr": 0.5} for g in own["group_tpr"]})
    assert fallback["teacher_tpr_source"] == "prepared cache"
    first = next(r for r in fallback["trials"] if r["trial"] == complete[0].number)
    rates = per_group_rates(stored_record(complete[0])["validation"]["fairness"])  # multi-class: mean TPR over classes
    assert first["group_tpr"] == {g: pytest.approx(rates[g]["tpr"] - 0.5) for g in own["group_tpr"]}
