"""Read-only commands answer without the training stack, every command takes the same places, and
``resume`` of a finished study starts nothing.

The study is real (SQLite storage, the driver's loop over the in-process executor) with a trial
function that trains nothing; the commands run as a user runs them, in a fresh interpreter, which
then reports the modules it imported.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fairfront.search.cli_args import build_parser
from fairfront.search.driver import RunOptions
from fairfront.search.inprocess_executor import InProcessExecutor

from conftest import REPO, cli_env, run_noop_study, tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HEAVY = ("torch", "transformers", "ray", "sklearn")

# the CLI's main in a fresh interpreter; prints its exit status and the heavy modules it imported
PROBE = """
import json, sys
from fairfront.search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("places")
    (folder / "tiny.toml").write_text(tiny_study_text("tiny", n_trials=4))
    url = run_noop_study(folder, n_trials=4)
    return folder, url


def _probe(args: list[str], cwd: Path) -> tuple[int, list[str], str, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=cli_env(), capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    err = "\n".join(result.stderr.strip().splitlines()[:-1])
    return report["code"], report["heavy"], result.stdout, err


def _places(folder: Path, url: str) -> list[str]:
    return ["--storage", url, "--cache-dir", str(folder / "my cache"), "--artifact-dir", str(folder / "my artifacts")]


READ_ONLY = [["status", "tiny"], ["front", "tiny"], ["front", "tiny", "--format", "csv"],
             ["report", "tiny", "--out", "tiny.html"]]
ERRORS = [["status", "nope"], ["front", "tiny", "--format", "bogus"], ["run", "tiny.toml", "--n-trials", "0"],
          ["export", "tiny"]]


@pytest.mark.parametrize("command", READ_ONLY + ERRORS)
def test_read_only_commands_and_errors_import_no_training_stack(study, command) -> None:
    folder, url = study
    code, heavy, out, err = _probe([*command, *_places(folder, url)], folder)
    assert heavy == [], f"{command} imported {heavy}"
    if command in ERRORS:
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    else:
        assert code == 0 and ("trial" in out or out.strip().endswith("tiny.html")), err


# every family, a teacher loss and a data file: what validate reads, all in one study file
FILE_STUDY = """
[study]
name = "from-a-file"
n_trials = 2

[model]
name = "tiny-random"

[data]
source = "file"
path = "comments.csv"
text_column = "text"
label_column = "label"
group_column = "group"

[teacher]
loss = "focal"

[space.distillation]
temperature = [1.0, 4.0]
[space.structured]
head_fraction = [0.0, 0.5]
[space.pruning]
sparsity = [0.2, 0.9]
[space.imbalance]
[space.fairness]
method = ["equalized_odds", "group_dro"]
[space.fair_distillation]
[space.quantization]
"""


def _comments(folder: Path) -> None:
    rows = ["text,label,group"] + [f"comment {i} about {g},{'toxic' if i % 3 == 0 else 'fine'},{g}"
                                   for i in range(120) for g in (("women", "men")[i % 2],)]
    (folder / "comments.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize("study_file", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_validate_reads_each_shipped_study_without_the_training_stack(study_file: Path, tmp_path: Path) -> None:
    code, heavy, out, err = _probe(["validate", str(study_file)], tmp_path)
    assert heavy == [], f"validate {study_file.name} imported {heavy}"
    if code == 2:  # a study whose model folder or data is not on this machine
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    else:
        assert code == 0 and out.startswith(f"{study_file}: valid study"), err
        assert "classes:" in out and "train:" in out  # its data was read and summarised


def test_validate_of_a_data_file_reads_the_data_without_the_training_stack(tmp_path: Path) -> None:
    _comments(tmp_path)
    (tmp_path / "study.toml").write_text(FILE_STUDY, encoding="utf-8")
    code, heavy, out, err = _probe(["validate", "study.toml"], tmp_path)
    assert (code, heavy) == (0, []), err
    assert out.startswith("study.toml: valid study 'from-a-file'")
    assert "classes: 'fine', 'toxic'" in out and "women" in out and "men" in out


@pytest.mark.parametrize("given, mistake, key", [
    ("sparsity = [0.2, 0.9]", "sparsity = [0.2, 1.5]", "space.pruning.sparsity"),
    ('method = ["equalized_odds", "group_dro"]', 'method = ["parity"]', "space.fairness.method"),
    ('loss = "focal"', 'loss = "hinge"', "teacher.loss"),
    ('group_column = "group"', 'group_column = "gender"', "data.group_column")], ids=["range", "family choice",
                                                                                       "teacher loss", "data column"])
def test_validate_refuses_a_bad_file_in_one_line_without_the_training_stack(tmp_path: Path, given, mistake,
                                                                             key) -> None:
    _comments(tmp_path)
    (tmp_path / "study.toml").write_text(FILE_STUDY.replace(given, mistake), encoding="utf-8")
    code, heavy, out, err = _probe(["validate", "study.toml"], tmp_path)
    assert (code, heavy, out) == (2, [], ""), err
    assert err.startswith(f"error: {key} = ") and len(err.splitlines()) == 1, err


def test_one_option_string_works_with_every_command() -> None:
    places = ["--storage", "sqlite:///x.db", "--cache-dir", "c", "--artifact-dir", "a"]
    commands = {"run": ["f.toml"], "resume": ["s"], "status": ["s"], "front": ["s"], "report": ["s"],
                "export": ["s", "--trial", "0", "--out", "o"], "validate": ["f.toml"], "dashboard": [],
                "confirm": ["s", "--seeds", "2"], "explain": ["s"]}
    parser = build_parser()
    assert set(commands) == set(parser._subparsers._group_actions[0].choices)  # every command is checked
    for name, rest in commands.items():
        args = parser.parse_args([name, *rest, *places])
        assert (args.storage, str(args.cache_dir), str(args.artifact_dir)) == ("sqlite:///x.db", "c", "a"), name


def test_commands_that_ignore_a_place_create_nothing_there(study) -> None:
    folder, url = study
    places = _places(folder, url)
    for command in (["status", "tiny"], ["front", "tiny"], ["validate", "tiny.toml"], ["resume", "tiny"]):
        result = subprocess.run([sys.executable, "-m", "fairfront.search.cli", *command, *places], cwd=folder,
                                env=cli_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert not (folder / "my cache").exists() and not (folder / "my artifacts").exists()


def test_resume_of_a_complete_study_starts_nothing_and_says_how_to_extend_it(study) -> None:
    folder, url = study
    code, heavy, out, err = _probe(["resume", "tiny", *_places(folder, url)], folder)
    assert code == 0, err
    assert heavy == []  # no Ray, no torch: nothing was started or loaded
    lines = out.splitlines()
    assert lines[0] == "study 'tiny' is complete: 4 of 4 COMPLETE trials; nothing was started."
    extend = shlex.split(lines[1].split(": ", 1)[1])
    assert extend[:5] == ["fairfront", "resume", "tiny", "--n-trials", "8"]
    args = build_parser().parse_args(extend[1:])  # the printed command is one the CLI takes, with every place
    assert (args.storage, args.cache_dir, args.artifact_dir) == (url, folder / "my cache", folder / "my artifacts")
    front = shlex.split(lines[2].split(": ", 1)[1])
    shown = subprocess.run([sys.executable, "-m", "fairfront.search.cli", *front[1:]], cwd=folder, env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "trial" in shown.stdout
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 4  # nothing was asked or written


def test_resume_through_the_api_of_a_complete_study_returns_it(study) -> None:
    from fairfront.search.driver import resume_study

    folder, url = study
    messages: list[str] = []
    resume_study("tiny", RunOptions(storage=url, cache_dir=folder / "none", log=messages.append,
                                    executor=InProcessExecutor(1)))
    assert messages[0].startswith("study 'tiny' is complete: 4 of 4") and not (folder / "none").exists()


