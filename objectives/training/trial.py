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

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from fairfront.objectives.measures import group_fairness
from fairfront.objectives.measures.bias_settings import COUNTERFACTUAL_MEASURES
from fairfront.objectives.measures.counterfactual_sets import counterfactual_measures
from fairfront.objectives.measures.objectives import ObjectiveSpec, accuracy_scores, bias_score, latency_scores, size_scores
from fairfront.objectives.training.population import forgetting_measures
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
    values: list[float]
    attrs: dict = field(default_factory=dict)


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
    attrs: dict = {"compression": _plain(asdict(c))}
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
        attrs["structured"] = _plain(summary)

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

    _measure_size(attrs, model, prepared, spec, threads)
    eval_started = time.perf_counter()
    for split in ("validation", "test"):
        data = prepared.splits[split]
        logits = predict_logits(model, data, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                device=eval_device)
        swapped = [predict_logits(model, s.encoded, batch_size=spec.student.eval_batch_size, pad_id=prepared.pad_id,
                                  device=eval_device) for s in prepared.counterfactuals.get(split, [])]
        attrs[split] = _scores(prepared, spec, data.labels, logits.argmax(axis=1), data.groups, split,
                               logits=logits, swapped_logits=swapped)
    if prepared.intrinsic:
        _add_intrinsic(attrs, prepared, model, device=eval_device)
    attrs["timings"] = {"train_s": train_seconds, "eval_s": time.perf_counter() - eval_started,
                        "total_s": time.perf_counter() - started, "device": device.type,
                        "torch_threads": torch.get_num_threads(), "pid": os.getpid()}
    return _outcome(attrs, spec, hint=" (is every group present with positive examples?)")


def _add_intrinsic(attrs: dict, prepared: Prepared, model: torch.nn.Module, *, device: torch.device) -> None:
    """Score ``model`` on both halves of every ``[bias] intrinsic`` benchmark.

    ``attrs["intrinsic"][name]`` holds ``{"validation", "test", "dense"}`` results;
    ``attrs[half]["bias"][name]`` the headline bias (what the objective reads from the validation half).
    """
    from fairfront.objectives.measures.intrinsic.halves import HALVES, headline_biases, score_halves

    started = time.perf_counter()
    cache: dict = {}

    def model_for(needs: str) -> torch.nn.Module:
        if needs != "masked_lm":
            return model
        if "mlm" not in cache:
            cache["mlm"] = prepared.masked_lm(model)
        return cache["mlm"]

    settings = prepared.intrinsic
    scores = score_halves(model_for, prepared.tokenizer, prepared.intrinsic_halves, limit=settings.get("limit"),
                          batch_size=settings.get("batch_size", 64), device=device)
    attrs["intrinsic"] = {name: _plain({**parts, "dense": prepared.intrinsic_dense.get(name)})
                          for name, parts in scores.items()}
    for half in HALVES:
        attrs.setdefault(half, {}).setdefault("bias", {}).update(
            {name: _nan_if_none(v) for name, v in headline_biases(scores, half).items()})
        if "stereoset" in scores:
            overall = scores["stereoset"][half]["overall"]
            attrs[half].setdefault("accuracy", {}).update(
                {"stereoset_lms": _nan_if_none(overall.get("lms")), "stereoset_icat": _nan_if_none(overall.get("icat"))})
    attrs["intrinsic_s"] = time.perf_counter() - started


def _run_masked_lm_trial(prepared: Prepared, spec: TrialSpec, *, device: torch.device, threads: int | None,
                         started: float) -> TrialOutcome:
    """A ``masked_lm`` trial: compress the pretrained masked LM (no training) and score it on the benchmarks."""
    c = spec.compression
    attrs: dict = {"compression": _plain(asdict(c)), "task": "masked_lm"}
    d = c.distillation
    model, _ = _student(prepared, d, attrs)
    model.to(device)
    if c.structured is not None and (c.structured.head_fraction > 0 or c.structured.ffn_fraction > 0):
        if c.structured.importance != "magnitude":
            raise ValueError("a masked_lm study prunes structures by magnitude only (no labelled batches)")
        summary = structured_prune(model, head_fraction=c.structured.head_fraction,
                                   ffn_fraction=c.structured.ffn_fraction, importance="magnitude", batches=None,
                                   scope=c.structured.scope)
        attrs["structured"] = _plain(summary)
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
    _measure_size(attrs, model, prepared, spec, threads)
    eval_started = time.perf_counter()
    _add_intrinsic(attrs, prepared, model, device=eval_device)
    attrs["timings"] = {"compress_s": compress_seconds, "eval_s": time.perf_counter() - eval_started,
                        "total_s": time.perf_counter() - started, "device": device.type,
                        "torch_threads": torch.get_num_threads(), "pid": os.getpid()}
    return _outcome(attrs, spec, hint=" (on the benchmarks' validation half)")


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


def _measure_size(attrs: dict, model: torch.nn.Module, prepared: Prepared, spec: TrialSpec,
                  threads: int | None) -> None:
    """Every size measure, and CPU latency unless the spec turns it off."""
    attrs["size"] = size_scores(model)
    if spec.latency:
        attrs["latency_ms"] = latency_scores(model, seq_len=min(64, prepared.model_config.get(
            "max_position_embeddings", 64)), threads=threads)


def _outcome(attrs: dict, spec: TrialSpec, *, hint: str) -> TrialOutcome:
    """The objective values, read from the validation measures and the size measures in ``attrs``."""
    v = attrs["validation"]
    sizes = {**attrs["size"], **{f"latency_b{k}_ms": ms for k, ms in attrs.get("latency_ms", {}).items()}}
    values = [v["accuracy"][spec.objectives.accuracy], sizes.get(spec.objectives.size)]
    values += [v["bias"][b] for b in spec.objectives.bias]
    if any(x is None or not math.isfinite(x) for x in values):
        raise ValueError(f"a measure is undefined on the validation split: {dict(zip(spec.objectives.names, values))}"
                         + hint)
    return TrialOutcome(values=[float(x) for x in values], attrs=attrs)


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


def _scores(prepared: Prepared, spec: TrialSpec, y: np.ndarray, pred: np.ndarray, groups: np.ndarray,
            split: str, *, logits: np.ndarray | None = None, swapped_logits: list[np.ndarray] | None = None) -> dict:
    """Every measure of one split; ``logits`` and ``swapped_logits`` (the model's logits on the split and on
    each prepared counterfactual set) are needed only when the study has counterfactual sets."""
    has_group = groups >= 0
    out: dict = {"accuracy": accuracy_scores(y, pred), "n": int(len(y))}
    out["agreement_with_dense"] = float((prepared.dense_predictions(split) == pred).mean())
    if has_group.any():
        g = np.asarray(prepared.group_names, dtype=object)[groups[has_group]]
        out["bias"] = {name: bias_score(name, y[has_group], pred[has_group], g)
                       for name in group_fairness.BIAS_MEASURES}
        out["fairness"] = group_fairness.fairness_report(
            y[has_group], pred[has_group], sensitive_features=g, class_names=list(prepared.label_names),
            n_resamples=spec.bootstrap_resamples, seed=spec.seed)
    else:
        out["bias"] = {name: float("nan") for name in group_fairness.BIAS_MEASURES}
    population = prepared.population_predictions(split)
    out["forgetting"] = forgetting_measures(y, pred, dense=prepared.dense_predictions(split), population=population,
                                            groups=groups, class_names=list(prepared.label_names),
                                            group_names=list(prepared.group_names))
    if population is not None:
        out["bias"]["cie_fraction"] = out["forgetting"]["cie"]["cie_fraction"]
    sets = prepared.counterfactuals.get(split, [])
    if sets:
        if logits is None or swapped_logits is None:
            raise ValueError("the study has counterfactual sets: pass the model's logits on the split and on each set")
        cf = counterfactual_measures(sets, logits, swapped_logits, dense_logits=prepared.teacher_logits[split])
        out["counterfactual"] = cf
        pooled = cf["all"]
        out["bias"]["counterfactual_flip_rate"] = _nan_if_none(pooled["flip_rate"])
        out["bias"]["counterfactual_prob_change"] = _nan_if_none(pooled["mean_abs_prob_change"])
        wanted = [b for b in spec.objectives.bias if b in COUNTERFACTUAL_MEASURES]
        if split == "validation" and wanted and pooled["n_changed"] == 0:
            raise ValueError(f"{wanted[0]} is undefined: no validation text contains a term of the swap lists "
                             f"{', '.join(s.list_name for s in sets)}")
    return _plain(out)


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _plain(obj):
    """JSON-safe copy (Optuna user attributes are stored as JSON): nan/inf become None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    return obj
