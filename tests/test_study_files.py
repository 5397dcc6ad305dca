"""The study files shipped in studies/ are valid, and the demo's MiniLM really trains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fairfront.objectives.training.prepare import compute
from fairfront.objectives.training.trial import run_trial
from fairfront.search.studyfile import load_study_file

from conftest import REPO

STUDY_FILES = sorted((REPO / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.name for p in STUDY_FILES])
def test_shipped_study_file_is_valid(path: Path) -> None:
    import tomllib

    from fairfront.objectives.data.datasets import default_data_dir

    raw = tomllib.loads(path.read_text())
    model = raw.get("model", {})
    if model.get("task") == "masked_lm":
        from fairfront.errors import ConfigError

        if not (path.parent / model["name"]).is_dir():  # a checkpoint folder the user supplies
            with pytest.raises(ConfigError, match="model.name .*no such folder"):
                load_study_file(path)
            return
        if default_data_dir() is None:
            pytest.skip("the real data folder is absent (set FAIRFRONT_DATA_DIR)")
        assert load_study_file(path).model.task == "masked_lm"
        return
    source = raw["data"]["source"]
    if source not in ("synthetic-occupations", "file", "hf") and default_data_dir() is None:
        pytest.skip("the real data folder is absent (set FAIRFRONT_DATA_DIR)")
    sf = load_study_file(path)
    assert sf.study.n_trials >= 1 and sf.objectives.names[0] == "accuracy"


@pytest.mark.slow
def test_demo_minilm_teacher_and_one_trial() -> None:
    """The demo's settings on a smaller synthetic set: the MiniLM teacher learns, a pruned student is scored."""
    sf = load_study_file(REPO / "studies" / "demo.toml")
    sf = replace(sf, data=replace(sf.data, n_examples=600), student=replace(sf.student, max_steps=10))
    torch.set_num_threads(2)
    prepared = compute(sf.prepare_spec, log=lambda m: None, device=torch.device("cpu"))
    val = prepared.splits["validation"]
    teacher_accuracy = float((prepared.dense_predictions("validation") == val.labels).mean())
    assert teacher_accuracy > float(np.bincount(val.labels).max() / len(val)) + 0.1
    import optuna

    config = sf.space.sample(optuna.trial.FixedTrial({
        "pruning.sparsity": 0.5, "pruning.schedule": "one_shot", "distillation.temperature": 2.0,
        "distillation.alpha": 0.5, "fairness.method": "equal_opportunity", "fairness.weight_zero": True}))
    out = run_trial(prepared, sf.trial_spec(config, 0), device=torch.device("cpu"), threads=2)
    assert abs(out.attrs["achieved_sparsity"] - 0.5) < 0.005
    assert out.values[1] < out.attrs["size"]["params"]
