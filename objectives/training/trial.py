"""One trial: compress a copy of the teacher as sampled, train it for real, and score it.

The families a trial sampled are applied in a fixed order: the student's depth (layers kept from
the teacher), structured pruning (heads and neurons removed once, before fine-tuning),
unstructured pruning (masks on a schedule during fine-tuning), the training objective (task loss,
distillation, fairness method, forgetting weights), then post-training int8 quantization. The one
training loop runs them all; each family contributes a loss term, example weights or a hook.

A ``masked_lm`` study (:attr:`Prepared.task`) goes through the same entry point: nothing is
trained, the families allowed there (layer dropping, magnitude structured pruning, one-shot
magnitude pruning, int8) are applied to the pretrained masked LM, and the objective values are the
intrinsic benchmarks' validation-half numbers. With ``[bias] intrinsic`` a classification trial
also scores the compressed model on the benchmarks, with the checkpoint's masked-LM head on its
encoder (:mod:`fairfront.objectives.training.masked_lm`).

This runs inside a Ray task (or in-process in tests). It never touches the study storage: it
returns a :class:`TrialOutcome` (objective values plus every other measure) that the driver writes.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from fairfront.jsonsafe import json_safe
from fairfront.objectives.measures.objectives import ObjectiveSpec
from fairfront.objectives.measures.report import Timings, TrialReport
from fairfront.objectives.measures.scoring import add_intrinsic, measure_size, objective_values, score_split
from fairfront.objectives.training.prepare import Prepared
from fairfront.objectives.training.loop import TrainSettings, iterate_batches, make_batch, predict_logits, train
from fairfront.spaces import fair_compression, fairness_losses, imbalance, students
from fairfront.spaces.distillation import distillation_loss
from fairfront.spaces.fairness import penalty_function
from fairfront.spaces.pruning import MagnitudePruner, MovementScores, ScheduledPruning, prunable_weights
from fairfront.spaces.quantization import quantize_dynamic_int8
from fairfront.spaces.space import CompressionConfig
from fairfront.spaces.structured import structured_prune

__all__ = ["TrialSpec", "TrialOutcome", "run_trial"]


@dataclass(frozen=True)
class TrialSpec:
    compression: CompressionConfig
    student: TrainSettings
    objectives: ObjectiveSpec
    seed: int = 0
    bootstrap_resamples: int = 200
    latency: bool = True


@dataclass
class TrialOutcome:
    """What a trial returns: its objective values and the user attributes the driver stores.

    Attributes:
        values: The objective values, in the order of the study's objectives.
        attrs: The user attributes (``report.to_attrs()`` for a real trial; the executor adds
            ``worker`` and ``student_batch_size``).
        report: The typed record of what the trial measured; None for an outcome built by hand
            (:meth:`TrialReport.from_attrs` reads one from ``attrs``).
    """

    values: list[float]
    attrs: dict = field(default_factory=dict)
    report: TrialReport | None = None


def run_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device | None = None,
              threads: int | None = None) -> TrialOutcome:
    """Compress, train and measure; raises on failure (the driver records the reason)."""
    started = time.perf_counter()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    if prepared.task == "masked_lm":
        return _run_masked_lm_trial(prepared, spec, device=device, threads=threads, started=started)
    c = spec.compression
    attrs: dict = {"compression": json_safe(asdict(c))}
    train_split = prepared.splits["train"]
    n_classes, n_groups = len(prepared.label_names), max(1, len(prepared.group_names))
    teacher_train = torch.tensor(prepared.teacher_logits["train"], device=device)
    calibration_rng = np.random.default_rng(spec.seed)
    calibration = [make_batch(train_split, idx, pad_id=prepared.pad_id, device=device)
                   for _, idx in zip(range(8), iterate_batches(train_split, spec.student.batch_size,
                                                               rng=calibration_rng))]

    # 1. the student's depth, and the teacher network when transfer terms need its internal states
    d = c.distillation
    model, keep = _student(prepared, d, attrs)
    teacher_net, forward_kwargs = None, {}
    if d is not None and (d.hidden_weight > 0 or d.attention_weight > 0):
        teacher_net = prepared.teacher().to(device).eval()
        forward_kwargs["output_hidden_states"] = d.hidden_weight > 0
        if d.attention_weight > 0:
            forward_kwargs["output_attentions"] = True
            for net in (model, teacher_net):
                net.set_attn_implementation("eager")
    model.to(device)

    # 2. structured pruning, once, before fine-tuning
    if c.structured is not None and (c.structured.head_fraction > 0 or c.structured.ffn_fraction > 0):
        summary = structured_prune(model, head_fraction=c.structured.head_fraction,
                                   ffn_fraction=c.structured.ffn_fraction, importance=c.structured.importance,
                                   batches=calibration, scope=c.structured.scope,
                                   fairness_mix=c.structured.fairness_mix, gap=_equal_opportunity_gap)
        attrs["structured"] = json_safe(summary)

    # 3. unstructured pruning on a schedule (fairness-aware when fairness_mix > 0)
    hooks, pruner = [], None
    if c.pruning is not None:
        weights = prunable_weights(model, include_embeddings=c.pruning.include_embeddings,
                                   include_classifier=c.pruning.include_classifier)
        scores = None
        if c.pruning.criterion == "movement":
            movement = MovementScores(weights)
            hooks.append(movement)
            scores = movement.scores
        elif c.pruning.fairness_mix > 0:
            scores = _fairness_aware_scores(model, weights, calibration, c.pruning.fairness_mix)
        pruner = MagnitudePruner(weights, scope=c.pruning.scope, scores=scores)
        hooks.append(ScheduledPruning(pruner, c.pruning.schedule))

    # 4. the training objective
    class_counts = np.bincount(train_split.labels, minlength=n_classes).tolist()
    task_loss = c.imbalance.build(class_counts) if c.imbalance is not None else imbalance.cross_entropy
    f = c.fairness if c.fairness is not None and c.fairness.weight > 0 else None
    penalty = penalty_function(f.method) if f is not None and f.is_penalty else None
    dro = fairness_losses.GroupDRO(n_groups, f.weight) if f is not None and f.method == "group_dro" else None
    example_weights = None
    if f is not None and f.method == "group_reweight":
        balanced = fairness_losses.group_balanced_weights(torch.tensor(train_split.groups), n_groups,
                                                          labels=torch.tensor(train_split.labels))
        example_weights = (1.0 + f.weight * (balanced - 1.0)).to(device)
    fd = c.fair_distillation if c.fair_distillation is not None and c.fair_distillation.strength > 0 else None
    deficit = {"table": torch.zeros(n_groups, n_classes, device=device)}
    mapping = students.layer_mapping(keep)

    def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels, groups = batch["labels"], batch["groups"]
        teacher_logits = teacher_train[batch["index"]]
        per_example = task_loss(logits, labels)
        if d is not None:
            per_example = distillation_loss(logits, teacher_logits, labels, temperature=d.temperature,
                                            alpha=d.alpha, task_loss=per_example)
        weights = example_weights[batch["index"]] if example_weights is not None else None
        if fd is not None:
            if fd.mode != "disagreement":
                step = fair_compression.recall_deficit(logits.argmax(-1), teacher_logits.argmax(-1), labels, groups,
                                                       num_groups=n_groups, num_classes=n_classes)
                deficit["table"] = 0.9 * deficit["table"] + 0.1 * torch.nan_to_num(step.to(device))
            fw = fair_compression.forgetting_weights(logits, teacher_logits, labels, groups, strength=fd.strength,
                                                     mode=fd.mode, group_recall_deficit=deficit["table"])
            weights = fw if weights is None else weights * fw
        if weights is not None:
            per_example = per_example * weights
        loss = dro(per_example, groups) if dro is not None else per_example.mean()
        if penalty is not None:
            loss = loss + f.weight * penalty(logits, labels, groups)
        if teacher_net is not None:
            with torch.no_grad():
                t_out = teacher_net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    **forward_kwargs)
            s_out = batch["outputs"]
            if d.hidden_weight > 0:
                loss = loss + d.hidden_weight * students.hidden_state_transfer_loss(
                    s_out.hidden_states, t_out.hidden_states, mapping, attention_mask=batch["attention_mask"])
            if d.attention_weight > 0:
                att_mapping = {s - 1: t - 1 for s, t in mapping.items() if s > 0}
                loss = loss + d.attention_weight * students.attention_transfer_loss(
                    s_out.attentions, t_out.attentions, att_mapping, attention_mask=batch["attention_mask"],
                    average_heads=c.structured is not None)
        return loss

    stats = train(model, train_split, spec.student, loss_fn=loss_fn, seed=spec.seed, pad_id=prepared.pad_id,
                  hooks=hooks, device=device, forward_kwargs=forward_kwargs)
    if pruner is not None:
        pruner.prune_to(c.pruning.sparsity)  # the schedule has reached it; make it exact for scoring
        attrs["achieved_sparsity"] = pruner.sparsity()
    attrs["train"] = {"steps": stats.steps, "final_loss": stats.final_loss,
                      "examples_per_second": stats.examples_per_second}
    if dro is not None:
        attrs["group_dro_weights"] = [float(x) for x in dro.q]
    train_seconds = time.perf_counter() - started

    # 5. post-training quantization (runs on CPU)
    model, eval_device = _quantized(model, c, device)

    report = TrialReport.from_compression(attrs)
    report.size, report.latency_ms = measure_size(model, prepared, latency=spec.latency, threads=threads)
    eval_started = time.perf_counter()
    for split in ("validation", "test"):
        data = prepared.splits[split]
        logits = predict_logits(model, data, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                device=eval_device)
        swapped = [predict_logits(model, s.encoded, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                  device=eval_device) for s in prepared.counterfactuals.get(split, [])]
        report.splits[split] = score_split(prepared, split, data.labels, logits.argmax(axis=1), data.groups,
                                           bias_objectives=spec.objectives.bias,
                                           bootstrap_resamples=spec.bootstrap_resamples, seed=spec.seed,
                                           logits=logits, swapped_logits=swapped)
    if prepared.intrinsic:
        add_intrinsic(report, prepared, model, device=eval_device)
    report.timings = Timings(train_s=train_seconds, eval_s=time.perf_counter() - eval_started,
                             total_s=time.perf_counter() - started, device=device.type,
                             torch_threads=torch.get_num_threads(), pid=os.getpid())
    return _outcome(report, spec, hint=" (is every group present with positive examples?)")


def _run_masked_lm_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device, threads: int | None,
                         started: float) -> TrialOutcome:
    """A ``masked_lm`` trial: compress the pretrained masked LM (no training) and score it on the benchmarks."""
    c = spec.compression
    attrs: dict = {"compression": json_safe(asdict(c)), "task": "masked_lm"}
    d = c.distillation
    model, _ = _student(prepared, d, attrs)
    model.to(device)
    if c.structured is not None and (c.structured.head_fraction > 0 or c.structured.ffn_fraction > 0):
        if c.structured.importance != "magnitude":
            raise ValueError("a masked_lm study prunes structures by magnitude only (no labelled batches)")
        summary = structured_prune(model, head_fraction=c.structured.head_fraction,
                                   ffn_fraction=c.structured.ffn_fraction, importance="magnitude", batches=None,
                                   scope=c.structured.scope)
        attrs["structured"] = json_safe(summary)
    if c.pruning is not None:
        if c.pruning.schedule.kind != "one_shot" or c.pruning.fairness_mix > 0:
            raise ValueError("a masked_lm study prunes one-shot by magnitude only (nothing is trained)")
        weights = prunable_weights(model, include_embeddings=c.pruning.include_embeddings,
                                   include_classifier=c.pruning.include_classifier)
        pruner = MagnitudePruner(weights, scope=c.pruning.scope)
        pruner.prune_to(c.pruning.sparsity)
        attrs["achieved_sparsity"] = pruner.sparsity()
    compress_seconds = time.perf_counter() - started
    model, eval_device = _quantized(model, c, device)
    model.eval()
    report = TrialReport.from_compression(attrs)
    report.size, report.latency_ms = measure_size(model, prepared, latency=spec.latency, threads=threads)
    eval_started = time.perf_counter()
    add_intrinsic(report, prepared, model, device=eval_device)
    report.timings = Timings(compress_s=compress_seconds, eval_s=time.perf_counter() - eval_started,
                             total_s=time.perf_counter() - started, device=device.type,
                             torch_threads=torch.get_num_threads(), pid=os.getpid())
    return _outcome(report, spec, hint=" (on the benchmarks' validation half)")


def _quantized(model: torch.nn.Module, c, device: torch.device) -> tuple[torch.nn.Module, torch.device]:
    """The model after post-training dynamic int8 quantization where the setting asks for it, and
    the device to evaluate it on (int8 kernels run on CPU)."""
    if c.quantization is not None and c.quantization.int8:
        return quantize_dynamic_int8(model.cpu()), torch.device("cpu")
    return model, device


def _student(prepared: Prepared, d, attrs: dict) -> tuple[torch.nn.Module, list[int]]:
    """A fresh copy of the dense model, with only the teacher layers ``d.student_layers`` asks to keep."""
    model = prepared.teacher()
    n_layers = model.config.num_hidden_layers
    keep = list(range(n_layers))
    if d is not None and d.student_layers is not None and d.student_layers < n_layers:
        keep = students.layer_indices(n_layers, d.student_layers, strategy=d.layer_strategy)
        model = students.make_student(model, keep)
        attrs["student_layers"] = keep
    return model, keep


def _outcome(report: TrialReport, spec: TrialSpec, *, hint: str) -> TrialOutcome:
    """The trial's outcome: the objective values read from ``report``, and its user attributes."""
    return TrialOutcome(values=objective_values(report, spec.objectives, hint=hint), attrs=report.to_attrs(),
                        report=report)


def _equal_opportunity_gap(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The group gap fairness-aware pruning protects: the soft equal-opportunity penalty."""
    return fairness_losses.equal_opportunity_penalty(logits, batch["labels"], batch["groups"])


def _fairness_aware_scores(model, weights: dict, calibration: list[dict], mix: float):
    """Importance = mix of |w| and |w * dP/dw| (P = equal-opportunity gap on a few training batches).

    The gradient of the gap is taken once, on the dense weights; at each pruning step the fair
    score is ``|w_now| * |dP/dw|``, so weights that shrink during training lose importance in both.
    """

    def gap(net, batch):
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        return _equal_opportunity_gap(logits, batch)

    names = {id(p): n for n, p in model.named_parameters()}
    params = {names[id(w)]: w for w in weights.values()}
    fair = fair_compression.fairness_gradient_scores(model, calibration, gap, params)
    grad_abs = {}
    for key, w in weights.items():
        w_abs = w.detach().abs().float()
        score = fair[names[id(w)]].float()
        grad_abs[key] = torch.where(w_abs > 0, score / w_abs.clamp_min(1e-12), torch.zeros_like(w_abs))

    def scores(magnitudes: dict) -> dict:
        fair_now = {k: magnitudes[k] * grad_abs[k] for k in magnitudes}
        return fair_compression.fairness_aware_importance(magnitudes, fair_now, mix=mix)

    return scores
