"""A compression family written outside the package: one class, one registration, and a study searches it.

Label smoothing (Szegedy et al. 2016) is defined here, registered with
:func:`~fairfront.spaces.registry.register_family`, validated by ``fairfront validate`` and run
by ``fairfront run`` on Ray: the stored trials carry its sampled ``epsilon``, and the value its
hook recorded shows that it really changed the training loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState
from transformers import BertConfig, BertForMaskedLM

from fairfront._config import Table
from fairfront.search import cli
from fairfront.search.attrs import stored_record
from fairfront.spaces.family import CompressionFamily, FamilyTrial, TrialContext
from fairfront.spaces.registry import families_for_task, family_names, register_family, unregister_family
from fairfront.spaces.sampling import suggest_float

from conftest import tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@dataclass(frozen=True)
class LabelSmoothingConfig:
    epsilon: float


@dataclass(frozen=True)
class LabelSmoothingSpace:
    epsilon: tuple[float, float] = (0.0, 0.3)

    @classmethod
    def from_table(cls, t: Table) -> LabelSmoothingSpace:
        space = cls(epsilon=t.range("epsilon", cls.epsilon, low=0.0, high=0.5))
        t.done()
        return space

    def sample(self, trial) -> LabelSmoothingConfig:
        return LabelSmoothingConfig(suggest_float(trial, "label_smoothing.epsilon", self.epsilon))


class _Smoothing(FamilyTrial):
    """``(1 - eps) * loss + eps * mean_c(-log p_c)``: the loss against targets mixed with the uniform."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon
        self.steps = 0
        self.largest_change = 0.0

    def transform_loss(self, per_example: torch.Tensor, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        uniform = -F.log_softmax(logits, dim=-1).mean(dim=-1)
        smoothed = (1.0 - self.epsilon) * per_example + self.epsilon * uniform
        self.steps += 1
        self.largest_change = max(self.largest_change, float((smoothed - per_example).abs().max()))
        return smoothed

    def after_training(self, ctx: TrialContext) -> None:
        ctx.record("label_smoothing", {"steps": self.steps, "largest_change": self.largest_change})


class LabelSmoothing(CompressionFamily):
    name = "label_smoothing"
    space_type = LabelSmoothingSpace
    config_type = LabelSmoothingConfig

    def start(self, config: LabelSmoothingConfig, ctx: TrialContext) -> FamilyTrial:
        return _Smoothing(config.epsilon)


@pytest.fixture
def label_smoothing():
    register_family(LabelSmoothing(), after="imbalance")
    yield
    unregister_family("label_smoothing")


SMOOTHING = "\n[space.label_smoothing]\nepsilon = {epsilon}\n"


def _validate(tmp_path: Path, text: str, capsys) -> tuple[int, str]:
    path = tmp_path / "study.toml"
    path.write_text(text)
    capsys.readouterr()  # only what validate prints
    code = cli.main(["validate", str(path)])
    return code, capsys.readouterr().err


def test_registration_places_the_family_in_application_order(label_smoothing) -> None:
    names = family_names()
    assert names.index("label_smoothing") == names.index("imbalance") + 1
    assert "label_smoothing" not in families_for_task("masked_lm")
    with pytest.raises(ValueError, match="already registered"):
        register_family(LabelSmoothing())


def test_unregistered_family_is_unknown_to_a_study(tmp_path, capsys) -> None:
    code, err = _validate(tmp_path, tiny_study_text() + SMOOTHING.format(epsilon="[0.0, 0.2]"), capsys)
    assert code == 2 and err.startswith("error: space.label_smoothing: unknown compression family")


def test_registered_family_is_validated_from_its_table(label_smoothing, tmp_path, capsys) -> None:
    code, err = _validate(tmp_path, tiny_study_text() + SMOOTHING.format(epsilon="[0.0, 0.2]"), capsys)
    assert code == 0 and err == ""
    code, err = _validate(tmp_path, tiny_study_text() + SMOOTHING.format(epsilon="[0.0, 0.9]"), capsys)
    assert code == 2
    assert err == "error: space.label_smoothing.epsilon = 0.9 is not allowed: expected a value in [0.0, 0.5]\n"


def test_masked_lm_study_refuses_a_classification_only_family(label_smoothing, tmp_path, capsys) -> None:
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    text = f"""
[study]
name = "mlm"
n_trials = 1

[model]
name = "{tmp_path / 'mlm'}"
task = "masked_lm"

[objectives]
accuracy = "stereoset_lms"
bias = ["stereoset"]

[space.pruning]
sparsity = [0.2, 0.8]
schedule = ["one_shot"]
""" + SMOOTHING.format(epsilon="[0.0, 0.2]") + f"""
[bias]
intrinsic = ["stereoset"]
intrinsic_data_dir = "{tmp_path}"
"""
    code, err = _validate(tmp_path, text, capsys)
    assert code == 2
    assert err == ('error: space.label_smoothing: [space.label_smoothing] needs [model] task = "classification" '
                   "(labelled, trained data); a masked_lm study allows: [space.distillation], [space.structured], "
                   "[space.pruning], [space.quantization]\n")


def test_registered_family_runs_in_a_study(label_smoothing, local_ray, tmp_path, capsys) -> None:
    text = tiny_study_text("smoothing", n_trials=2, student_steps=6) + SMOOTHING.format(epsilon="[0.05, 0.3]")
    (tmp_path / "study.toml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    code = cli.main(["run", str(tmp_path / "study.toml"), "--storage", storage, "--cache-dir", str(tmp_path / "cache"),
                     "--artifact-dir", str(tmp_path / "artifacts")])
    assert code == 0, capsys.readouterr().err[-3000:]
    trials = optuna.load_study(study_name="smoothing", storage=storage).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for trial in trials:
        epsilon = trial.params["label_smoothing.epsilon"]
        assert 0.05 <= epsilon <= 0.3
        record = stored_record(trial)
        assert record["compression"]["label_smoothing"] == {"epsilon": epsilon}
        recorded = record["label_smoothing"]
        assert recorded["steps"] == record["train"]["steps"] == trial.user_attrs["label_smoothing.steps"] == 6
        assert recorded["largest_change"] > 0  # the smoothed loss is not the plain one


def test_each_family_lists_the_choices_its_hooks_implement() -> None:
    """A family is read without torch, so its choices are listed there; its torch hooks must implement each."""
    from fairfront.spaces import fairness, fairness_family, fairness_losses, pruning, pruning_family

    assert fairness_family.PENALTY_METHODS == tuple(fairness.PENALTIES)
    assert set(fairness_family.METHODS) == set(fairness_losses.FAIRNESS_METHODS)
    assert pruning_family.CRITERIA == tuple(pruning.PRUNING_CRITERIA)


def test_each_built_in_family_starts_its_hooks_in_a_trial() -> None:
    """``start`` imports a family's torch hooks when a trial needs them and hands them the trial."""
    import numpy as np

    from fairfront.spaces.registry import families

    model = BertForMaskedLM(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32))
    labels, groups = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for family in families():
        ctx = TrialContext(model=model, device=torch.device("cpu"), task="classification", seed=0, attrs={},
                           labels=labels, groups=groups, num_classes=2, num_groups=2,
                           teacher_logits=torch.zeros(4, 2))
        space = family.from_table(Table({}, f"space.{family.name}"))
        hooks = family.start(family.sample(space, study.ask()), ctx)
        assert isinstance(hooks, FamilyTrial), family.name
        if family.name in ("distillation", "structured", "pruning"):  # these always act on a trial
            assert type(hooks).__module__ == f"fairfront.spaces.{family.name}", family.name
