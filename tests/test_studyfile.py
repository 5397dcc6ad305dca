"""Every bad study file is refused with one line naming the key, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairfront.errors import ConfigError
from fairfront.search.studyfile import parse_study_text

from conftest import run_cli, tiny_study_text


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


BASE = tiny_study_text()

BAD = [
    ("unknown key", _edit(BASE, "seed = 0", "seed = 0\nsead = 1"), "study.sead: unknown key"),
    ("wrong type", _edit(BASE, 'n_trials = 3', 'n_trials = "three"'),
     "study.n_trials = 'three' is not allowed: expected an integer"),
    ("out of range", _edit(BASE, "sparsity = [0.2, 0.9]", "sparsity = [0.2, 1.5]"), "space.pruning.sparsity = 1.5"),
    ("reversed range", _edit(BASE, "alpha = [0.0, 0.9]", "alpha = [0.9, 0.1]"), "low <= high"),
    ("unknown sampler", _edit(BASE, 'sampler = "random"', 'sampler = "cmaes"'), "one of: tpe, nsga2, gp, random"),
    ("unknown schedule", _edit(BASE, '"iterative"]', '"cubic"]'), "space.pruning.schedule = 'cubic'"),
    ("unknown family", BASE + "\n[space.magic]\nx = 1\n", "space.magic: unknown compression family"),
    ("missing model folder", _edit(BASE, 'name = "tiny-random"', 'name = "./no/such/model"'),
     "model.name = './no/such/model' is not allowed"),
    ("missing section", BASE.replace("[data]", "[dta]"), "data: missing required key"),
    ("fractional gpus above one", _edit(BASE, "cpus_per_trial = 1", "cpus_per_trial = 1\ngpus_per_trial = 1.5"),
     "execution.gpus_per_trial = 1.5"),
    ("bad bias measure", _edit(BASE, "[model]", '[objectives]\nbias = "tpr-gap"\n\n[model]'),
     "objectives.bias = 'tpr-gap'"),
    ("movement without training", _edit(BASE, 'schedule = ["one_shot", "gradual", "iterative"]',
                                        'schedule = ["one_shot"]\ncriterion = ["movement"]'),
     "space.pruning.criterion = ['movement'] is not allowed: expected 'magnitude' with schedule = ['one_shot']"),
    ("unknown criterion", _edit(BASE, 'schedule = ["one_shot", "gradual", "iterative"]',
                                'schedule = ["gradual"]\ncriterion = ["snip"]'), "space.pruning.criterion = 'snip'"),
    ("not toml", "[study\nname=", "not valid TOML"),
]


@pytest.mark.parametrize("text,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_study_file_is_refused_with_the_key(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_study_text(text, base_dir=tmp_path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_data_column_names_the_columns_that_exist(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("sentence,label,gender\nhello,0,f\nworld,1,m\n")
    text = _edit(BASE, 'source = "synthetic-occupations"\nn_examples = 500',
                 'source = "file"\npath = "d.csv"\ntext_column = "text"\nlabel_column = "label"\n'
                 'group_column = "gender"')
    with pytest.raises(ConfigError) as info:
        parse_study_text(text, base_dir=tmp_path)
    assert str(info.value) == ("data.text_column = 'text' is not allowed: expected a column of d.csv: "
                               "sentence, label, gender")


def test_valid_file_parses_to_typed_settings(tmp_path: Path) -> None:
    sf = parse_study_text(BASE, base_dir=tmp_path)
    assert sf.study.n_trials == 3 and sf.execution.parallel == 2
    assert sf.space.pruning.sparsity == (0.2, 0.9)
    assert sf.objectives.names == ["accuracy", "size", "bias"]
    assert sf.objectives.directions == ["maximize", "minimize", "minimize"]


def test_cli_refuses_bad_file_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    study = tmp_path / "bad.toml"
    study.write_text(_edit(BASE, "seed = 0", "seed = -4"))
    result = run_cli(["run", str(study)], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: study.seed = -4 is not allowed: expected a value in [0, inf]"
    assert not (tmp_path / "studies").exists()


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    result = run_cli(["run", str(tmp_path / "missing.toml")], tmp_path, timeout=120)
    assert result.returncode == 2 and "missing.toml" in result.stderr
    result = run_cli(["resume", "nope", "--n-trials", "0"], tmp_path, timeout=120)
    assert result.returncode == 2 and "expected a whole number >= 1" in result.stderr
