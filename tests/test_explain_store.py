"""``explain`` stores its results in one step at the end: Ctrl-C during that step waits until it is done."""

from __future__ import annotations

import os
import signal

import optuna
import pytest

from fairfront.search.explain.store import EXPLAIN_ATTR, store


def test_ctrl_c_during_the_write_takes_effect_once_everything_is_written(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="held")
    record = {"evaluator": "ped_anova", "importance": {"bias": {"pruning.sparsity": 1.0}},
              "models": {"teacher": {"trial": "teacher", "agreement": {}, "ablation": {
                  "focus": "tpr_gap", "n": 3, "n_resamples": 10, "base": {}, "ranking": [{"component": "c"}] * 12}}}}
    after = tmp_path / "exemplars.csv"

    def interrupted_then_written() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of the writes
        after.write_text("written")

    with pytest.raises(KeyboardInterrupt):
        store(study, record, tmp_path / "artifacts", interrupted_then_written)
    stored = optuna.load_study(study_name="held", storage=f"sqlite:///{tmp_path / 'study.db'}").user_attrs[EXPLAIN_ATTR]
    assert stored["importance"] == record["importance"] and len(stored["models"]["teacher"]["top"]) == 10
    assert (tmp_path / "artifacts" / stored["artifact_id"]).exists() and after.read_text() == "written"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual Ctrl-C is back


def test_model_analyses_accumulate_across_runs(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="acc")
    model = {"trial": "x", "agreement": {}, "ablation": {"focus": "tpr_gap", "n": 1, "n_resamples": 1, "base": {},
                                                          "ranking": []}}
    store(study, {"models": {"trial 1": model}}, tmp_path / "a")
    store(study, {"models": {"teacher": model}}, tmp_path / "a")
    assert set(study.user_attrs[EXPLAIN_ATTR]["models"]) == {"trial 1", "teacher"}
