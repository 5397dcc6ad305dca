"""``fairfront export``: a trial of a real tiny study, made again and loaded by plain transformers.

The study runs in this process (:class:`InProcessExecutor`, the real ``run_trial``, a few student
steps) with three trials enqueued: pruned and distilled; one layer dropped with narrower
feed-forward layers; attention heads removed (which plain ``from_pretrained`` cannot load). The
export runs through the CLI, and the folder is loaded in a Python process that never imports
fairfront, which scores the study's validation texts itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fairfront.objectives.data.task import load_task
from fairfront.search.attrs import stored_record
from fairfront.search.cli import main
from fairfront.search.driver import RunOptions, resume_study, run_study
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.studyfile import parse_study_text

from conftest import cli_env, copy_in_the_nested_layout, run_cli, tiny_study_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = """
[space.distillation]
temperature = 2.0
alpha = 0.5
student_layers = [1, 2]

[space.structured]
head_fraction = [0.0, 0.5]
ffn_fraction = [0.0, 0.5]
importance = ["magnitude"]
scope = ["layer"]

[space.pruning]
sparsity = [0.3, 0.7]
schedule = ["one_shot"]

"""

TRIALS = {
    "pruned_distilled": {"distillation.student_layers": 2, "structured.head_fraction": 0.0,
                         "structured.ffn_fraction": 0.0, "pruning.sparsity": 0.5},
    "dropped_layer": {"distillation.student_layers": 1, "structured.head_fraction": 0.0,
                      "structured.ffn_fraction": 0.25, "pruning.sparsity": 0.6},
    "heads_removed": {"distillation.student_layers": 2, "structured.head_fraction": 0.5,
                      "structured.ffn_fraction": 0.0, "pruning.sparsity": 0.3},
}

LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

folder, rows = sys.argv[1], json.load(open(sys.argv[2]))
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
correct = 0
with torch.no_grad():
    for row in rows:
        batch = tokenizer(row["text"], truncation=True, return_tensors="pt")
        predicted = model.config.id2label[int(model(**batch).logits.argmax(-1)[0])]
        correct += predicted == row["label"]
linears = [m.weight for name, m in model.named_modules()
           if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}."]
zeros = sum(int((w == 0).sum()) for w in linears)
print(json.dumps({"accuracy": correct / len(rows), "sparsity": zeros / sum(w.numel() for w in linears),
                  "layers": model.config.num_hidden_layers, "intermediate_size": model.config.intermediate_size,
                  "fairfront_imported": any(m == "fairfront" or m.startswith("fairfront.") for m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache_dir):
    """The study's storage, its folder, and the number of each enqueued trial (plus a FAIL one)."""
    folder = tmp_path_factory.mktemp("export")
    text = tiny_study_text("export", n_trials=1, parallel=1, student_steps=4)
    text = text[:text.index("[space.pruning]")] + SPACE + text[text.index("[execution]"):]
    sf = parse_study_text(text, base_dir=folder)
    storage = f"sqlite:///{folder / 'export.db'}"
    options = RunOptions(storage=storage, cache_dir=cache_dir, artifact_dir=folder / "artifacts", log=lambda m: None,
                         executor=InProcessExecutor(1, threads=1))
    run_study(sf, options)  # trial 0: drawn by the sampler
    stored = optuna.load_study(study_name="export", storage=storage)
    for params in TRIALS.values():
        stored.enqueue_trial(params)
    options.n_trials = 1 + len(TRIALS)
    resume_study("export", options)
    stored = optuna.load_study(study_name="export", storage=storage)
    failed = stored.ask()
    stored.tell(failed, state=TrialState.FAIL)
    numbers = {role: next(t.number for t in stored.trials if t.params.items() >= params.items())
               for role, params in TRIALS.items()}
    return {"storage": storage, "folder": folder, "cache_dir": cache_dir, "numbers": numbers,
            "failed": failed.number, "sf": sf, "study": stored}


def _validation_rows(study, path: Path) -> Path:
    frame = load_task(study["sf"].data).frame
    part = frame[frame["split"] == "validation"]
    path.write_text(json.dumps([{"text": str(t), "label": str(y)} for t, y in zip(part["text"], part["label"])]))
    return path


def _export(study, role: str) -> tuple[Path, subprocess.CompletedProcess]:
    out = study["folder"] / f"model-{role}"
    if not out.exists():
        done = run_cli(["export", "export", "--trial", str(study["numbers"][role]), "--out", str(out),
                        "--storage", study["storage"], "--cache-dir", str(study["cache_dir"])], study["folder"])
        assert done.returncode == 0, done.stderr
        study.setdefault("runs", {})[role] = done
    return out, study["runs"][role]


def _load_without_fairfront(folder: Path, rows: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD, str(folder), str(rows)], capture_output=True, text=True,
                          env=cli_env(), cwd=folder.parent, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("role", ["pruned_distilled", "dropped_layer"])
def test_an_exported_trial_loads_without_fairfront_and_scores_as_stored(study, role: str) -> None:
    trial = study["study"].trials[study["numbers"][role]]
    out, run = _export(study, role)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert "as stored" in run.stdout
    loaded = _load_without_fairfront(out, _validation_rows(study, study["folder"] / "validation.json"))
    assert not loaded["fairfront_imported"]
    stored = trial.user_attrs["validation.accuracy"]
    assert loaded["accuracy"] == stored == trial.values[0]
    assert loaded["sparsity"] == trial.user_attrs["achieved_sparsity"]  # the pruned zeros are still zero
    record = stored_record(trial)
    assert loaded["layers"] == trial.params["distillation.student_layers"]
    if role == "dropped_layer":  # narrower feed-forward layers, one width in every layer
        assert loaded["layers"] == 1
        assert loaded["intermediate_size"] == record["structured"]["intermediate_sizes"][0] == 96
    else:
        assert loaded["intermediate_size"] == 128 and "structured" not in record


def test_the_model_card_holds_the_trial_measures_and_parameters(study) -> None:
    trial = study["study"].trials[study["numbers"]["pruned_distilled"]]
    out, _ = _export(study, "pruned_distilled")
    card = (out / "README.md").read_text()
    fairness = stored_record(trial)["validation"]["fairness"]
    low, high = fairness["ci"]["tpr_gap"]
    assert f"| bias | `tpr_gap` | minimize | {trial.values[2]:.4f} | [{low:.4f}, {high:.4f}] |" in card
    assert f"| accuracy | `accuracy` | maximize | {trial.values[0]:.4f} |" in card
    for group, rates in fairness["group_rates"].items():
        assert f"| {group} | {fairness['group_counts'][group]} | {rates['accuracy']:.4f} |" in card
    assert "| `pruning.sparsity` | 0.5000 |" in card
    assert "synthetic-occupations" in card and "tiny-random" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card


def _refused(study, capsys, trial: int, out: Path) -> str:
    before = sorted(p.name for p in study["folder"].iterdir())
    code = main(["export", "export", "--trial", str(trial), "--out", str(out), "--storage", study["storage"],
                 "--cache-dir", str(study["cache_dir"])])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert sorted(p.name for p in study["folder"].iterdir()) == before  # nothing written
    return lines[0]


def test_an_unknown_trial_is_refused(study, capsys) -> None:
    line = _refused(study, capsys, 99, study["folder"] / "unknown")
    assert "--trial = 99" in line and "COMPLETE: 0, 1, 2, 3" in line


def test_a_trial_that_is_not_complete_is_refused(study, capsys) -> None:
    line = _refused(study, capsys, study["failed"], study["folder"] / "failed")
    assert f"trial {study['failed']} is FAIL" in line


def test_a_trial_with_removed_heads_is_refused_before_anything_runs(study, capsys) -> None:
    line = _refused(study, capsys, study["numbers"]["heads_removed"], study["folder"] / "heads")
    assert "removed heads" in line and "from_pretrained cannot load it" in line


def test_a_study_written_in_the_nested_layout_exports_the_same(study, capsys) -> None:
    """A study stored before the record (nested user attributes) is read the same: its refusals and its card."""
    copy_in_the_nested_layout(study["study"], study["storage"], "export_nested")
    number = study["numbers"]["heads_removed"]
    code = main(["export", "export_nested", "--trial", str(number), "--out", str(study["folder"] / "nested-heads"),
                 "--storage", study["storage"], "--cache-dir", str(study["cache_dir"])])
    assert code == 2 and "removed heads" in capsys.readouterr().err
    out = study["folder"] / "nested-model"
    code = main(["export", "export_nested", "--trial", str(study["numbers"]["pruned_distilled"]), "--out", str(out),
                 "--storage", study["storage"], "--cache-dir", str(study["cache_dir"])])
    assert code == 0, capsys.readouterr().err
    card, _ = _export(study, "pruned_distilled")
    assert (out / "README.md").read_text().replace("export_nested", "export").replace(str(out), str(card)) == (
        card / "README.md").read_text()


def test_an_out_folder_with_files_is_refused(study, capsys) -> None:
    taken = study["folder"] / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    _refused(study, capsys, study["numbers"]["pruned_distilled"], taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
