"""The step a CUDA graph captures, checked on the CPU: padded static shapes train to the same numbers.

The graph capture itself needs a GPU (``benchmarks/gpu_run.sh``); what is checked here is everything
the captured step is made of: length buckets, the padded static-shape step against the ordinary one
(with distillation, a group penalty and a pruning schedule), the tensor learning rate against the
float one, and the one log line that says why a step is not captured.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from fairfront.errors import ConfigError
from fairfront.objectives.data.task import EncodedSplit
from fairfront.objectives.training import captured_step
from fairfront.objectives.training.captured_step import StaticShapeStep, capture_blocker, length_buckets
from fairfront.objectives.training.loop import TrainSettings, make_optimizer, train
from fairfront.search.studyfile import parse_study_text
from fairfront.spaces.fairness_losses import equal_opportunity_penalty
from fairfront.spaces.pruning import MagnitudePruner, MovementScores, ScheduledPruning, prunable_weights
from fairfront.spaces.schedules import SparsitySchedule

from conftest import tiny_study_text

CPU = torch.device("cpu")


def _tiny_bert(seed: int = 0) -> transformers.BertForSequenceClassification:
    """Two layers of width 64, no dropout: its random draws would depend on the padded shape."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=64, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def _split(n: int = 44, seed: int = 1) -> EncodedSplit:
    """Lengths 3 to 39: batches fall in several buckets (16, 32, the longest); 44 examples leave a short batch of 4."""
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 60, size=rng.integers(1, 38)), [3]]).astype(np.int64)
           for _ in range(n)]
    return EncodedSplit(ids, rng.integers(0, 2, size=n).astype(np.int64), rng.integers(0, 2, size=n).astype(np.int64))


def _loss(teacher_logits: torch.Tensor):
    """Cross-entropy, distillation against cached teacher logits (by example index), the equal-opportunity penalty.

    The penalty in its fixed-shape form, as the fairness family builds it (``num_groups`` given).
    """
    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        ce = F.cross_entropy(logits, batch["labels"])
        kd = F.kl_div(F.log_softmax(logits / 2, -1), F.softmax(teacher_logits[batch["index"]] / 2, -1),
                      reduction="batchmean")
        gap = equal_opportunity_penalty(logits, batch["labels"], batch["groups"], num_groups=2)
        return 0.5 * ce + 0.5 * kd + 0.5 * gap
    return loss_fn


def _run(static_shapes: bool, *, movement: bool = False, steps: int = 6
         ) -> tuple[list[float], dict[str, torch.Tensor], str]:
    model = _tiny_bert()
    split = _split()
    teacher = torch.randn(len(split), 2, generator=torch.Generator().manual_seed(3))
    weights = prunable_weights(model)
    scores = MovementScores(weights) if movement else None
    pruner = MagnitudePruner(weights, scores=scores.scores if scores else None)
    hooks: list[object] = [scores] if scores else []
    hooks.append(ScheduledPruning(pruner, SparsitySchedule("gradual", 0.5, start=0.0, end=0.8, frequency=2)))
    losses: list[float] = []
    stats = train(model, split, TrainSettings(epochs=10, max_steps=steps, batch_size=8, learning_rate=1e-3),
                  loss_fn=_loss(teacher), seed=0, pad_id=0, hooks=hooks, device=CPU,
                  progress=lambda s, t, loss: losses.append(loss), static_shapes=static_shapes)
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, stats.step_mode


def test_length_buckets_are_powers_of_two_then_the_longest_and_each_batch_takes_the_smallest_that_fits() -> None:
    assert length_buckets(40) == [16, 32, 40]
    assert length_buckets(16) == [16] and length_buckets(5) == [5] and length_buckets(64) == [16, 32, 64]


@pytest.mark.parametrize("movement", [False, True], ids=["magnitude", "movement"])
def test_the_padded_static_shape_step_trains_to_the_same_losses_and_parameters(one_torch_thread, movement) -> None:
    eager_losses, eager_params, eager_mode = _run(static_shapes=False, movement=movement)
    static_losses, static_params, static_mode = _run(static_shapes=True, movement=movement)
    assert (eager_mode, static_mode) == ("eager", "static shapes, uncaptured")
    assert len(static_losses) == len(eager_losses) == 6
    np.testing.assert_allclose(static_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for name, value in eager_params.items():
        torch.testing.assert_close(static_params[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(eager_params["classifier.weight"], _tiny_bert().state_dict()["classifier.weight"])
    pruned = [v for k, v in static_params.items() if k.endswith("intermediate.dense.weight")]
    assert all((v == 0).any() for v in pruned)  # the pruning schedule ran inside the static step


def test_a_tensor_learning_rate_updated_in_place_gives_the_float_learning_rate_updates() -> None:
    settings = TrainSettings(learning_rate=1e-2, weight_decay=0.01, warmup_fraction=0.3)
    models = []
    for _ in range(2):  # an MLP: BERT's key biases get rounding noise for gradients, which Adam would magnify
        torch.manual_seed(0)
        models.append(torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)))
    runs = [make_optimizer(m, settings, total=10, tensor_lr=t) for m, t in zip(models, (False, True))]
    lr_tensor = runs[1][0].param_groups[0]["lr"]
    assert isinstance(lr_tensor, torch.Tensor) and isinstance(runs[0][0].param_groups[0]["lr"], float)
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    for _ in range(10):
        for model, (optimizer, scheduler) in zip(models, runs):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
            scheduler.step()
        assert runs[1][0].param_groups[0]["lr"] is lr_tensor  # filled in place, never replaced
        assert float(lr_tensor) == pytest.approx(runs[0][0].param_groups[0]["lr"], rel=1e-6)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


class _StepCounter:
    """A hook that counts steps in Python after the backward pass: frozen inside a graph, so not marked safe."""

    def __init__(self):
        self.seen: list[int] = []

    def after_backward(self, step: int, total: int) -> None:
        self.seen.append(step)


def test_why_the_step_is_not_captured_is_logged_once_per_process(monkeypatch, caplog) -> None:
    monkeypatch.setattr(captured_step, "_reported", set())
    caplog.set_level(logging.INFO, logger="fairfront.training")
    for _ in range(2):
        train(_tiny_bert(), _split(), TrainSettings(max_steps=2, batch_size=8), hooks=[_StepCounter()],
              loss_fn=lambda logits, batch: F.cross_entropy(logits, batch["labels"]), seed=0, pad_id=0, device=CPU)
    lines = [r.getMessage() for r in caplog.records if r.name == "fairfront.training"]
    assert lines == ["training without CUDA graphs: no CUDA device; the _StepCounter hook's after_backward "
                     "is not marked cuda_graph_safe"]
    caplog.clear()
    train(_tiny_bert(), _split(), TrainSettings(max_steps=1, batch_size=8), cuda_graphs="off",
          loss_fn=lambda logits, batch: F.cross_entropy(logits, batch["labels"]), seed=0, pad_id=0, device=CPU)
    assert not [r for r in caplog.records if r.name == "fairfront.training"]  # "off" was asked for: nothing to say


def test_capture_blocker_allows_pruning_schedules_and_movement_scores_inside_the_graph() -> None:
    weights = {"w": torch.nn.Parameter(torch.ones(2, 2))}
    pruning = ScheduledPruning(MagnitudePruner(weights), SparsitySchedule("gradual", 0.5))
    assert capture_blocker("auto", CPU, [pruning, MovementScores(weights)], fused_adamw=True) == "no CUDA device"
    assert capture_blocker("off", CPU, [], fused_adamw=True) == 'cuda_graphs = "off"'
    assert "fused AdamW" in capture_blocker("auto", CPU, [], fused_adamw=False)


def test_study_file_cuda_graphs_setting_reaches_the_trial_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    base = tiny_study_text()
    assert parse_study_text(base, base_dir=tmp_path).execution.cuda_graphs == "auto"
    sf = parse_study_text(base + 'cuda_graphs = "off"\n', base_dir=tmp_path)  # [execution] is the last table
    assert sf.trial_spec(None, 0).cuda_graphs == "off"  # type: ignore[arg-type]  # no compression needed here
    with pytest.raises(ConfigError) as info:
        parse_study_text(base + 'cuda_graphs = "always"\n', base_dir=tmp_path)
    assert str(info.value).startswith("execution.cuda_graphs = 'always' is not allowed: expected one of: auto, off")


def test_each_bucket_keeps_one_static_input_buffer_and_short_batches_are_left_to_the_ordinary_step() -> None:
    """What a graph replays from: one fixed buffer per bucket, refilled in place with the padded batch."""
    split = _split()
    seen: list[tuple[int, dict]] = []
    runner = StaticShapeStep(lambda batch: seen.append((batch["input_ids"].data_ptr(), batch)) or torch.zeros(()),
                             batch_size=4, longest=int(split.lengths.max()), pad_id=0, device=CPU, capture=False)
    assert split.lengths.max() > 32 and runner.widths == [16, 32, int(split.lengths.max())]
    by_width: dict[int, set[int]] = {}
    for index in (np.arange(i, i + 4) for i in range(0, 40, 4)):
        runner.run(split, index)
        address, batch = seen[-1]
        longest = int(split.lengths[index].max())
        width = batch["input_ids"].shape[1]
        assert width == min(w for w in runner.widths if w >= longest)
        by_width.setdefault(width, set()).add(address)
        for row, i in enumerate(index):
            n = len(split.input_ids[i])
            assert batch["input_ids"][row, :n].tolist() == split.input_ids[i].tolist()
            assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["index"].tolist() == index.tolist() and batch["labels"].tolist() == split.labels[index].tolist()
    assert len(by_width) >= 2 and all(len(addresses) == 1 for addresses in by_width.values())
    assert runner.run(split, np.arange(40, 43)) is None and len(seen) == 10
