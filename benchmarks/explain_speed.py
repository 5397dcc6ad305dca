"""How long ``fairfront explain`` takes at the demo's size, part by part, on this machine's CPUs.

``explain --trial N`` on the demo study (MiniLM, 6 layers x 12 heads, 200 validation examples of the
synthetic task at ``max_length`` 40) spends its time in three places, each measured here through the
code the command runs:

1. **One model's analysis** (done twice: the trial's model and the teacher): every head and
   feed-forward block ablated (78 components, one batched pass per layer's heads and one for the
   feed-forward blocks, 200 paired resamples) and the gradient estimate, on MiniLM as a classifier
   of the demo task's 8 classes (its head untrained: the cost does not depend on the weights).
2. **The study-level analyses**: importance per objective (PED-ANOVA) and partial dependence on a
   20-trial study with the demo's search space (built with Optuna, objectives computed from its
   parameters: the cost depends on the trials and parameters, not on where the values came from).
3. **Making the trial's model again**: one demo trial's training (60 student steps), which the README
   gives as 13-16 s on 2 idle cores; not re-measured here.

The estimate for a 20-trial demo study with one trial's ablations is 2 x (1) + (2) + (3). The load
average before and after is recorded: on a shared machine the times include other processes' share.

Usage::

    python benchmarks/explain_speed.py [--threads 2] [--resamples 200]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from _common import cpu_model, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).parent / "results" / "explain_speed.json"


def _model_analysis(resamples: int) -> dict:
    from fairfront.objectives.analysis import ablate_components, gap_gradients, rank_agreement
    from fairfront.objectives.data.task import encode_splits, load_task
    from fairfront.objectives.training.models import load_tokenizer, new_classifier
    from fairfront.search.studyfile import parse_study_text

    sf = parse_study_text((REPO / "studies" / "demo.toml").read_text(), base_dir=REPO / "studies")
    data = load_task(sf.data)
    tokenizer = load_tokenizer(sf.model, [])
    split = encode_splits(data, tokenizer, max_length=sf.model.max_length)["validation"]
    model = new_classifier(sf.model, num_labels=len(data.label_names), vocab_size=len(tokenizer), seed=0).eval()
    started = time.perf_counter()
    ablation = ablate_components(model, split, pad_id=tokenizer.pad_token_id, focus="tpr_gap", n_resamples=resamples,
                                 batch_size=sf.student.eval_batch_size, log=print)
    ablate_s = time.perf_counter() - started
    started = time.perf_counter()
    estimate = gap_gradients(model, split, pad_id=tokenizer.pad_token_id, batch_size=sf.student.eval_batch_size)
    gradient_s = time.perf_counter() - started
    return {"examples": len(split), "components": len(ablation["components"]), "resamples": resamples,
            "ablation_s": round(ablate_s, 1), "gradient_s": round(gradient_s, 1),
            "spearman": rank_agreement(estimate, ablation)["spearman"]}


def _study_level() -> dict:
    from fairfront.search.explain.dependence import partial_dependence
    from fairfront.search.explain.importance import objective_importances
    from fairfront.search.front_data import objectives

    rng = np.random.default_rng(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=6, seed=0))
    study.set_metric_names(["accuracy", "size", "bias"])

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        sparsity = trial.suggest_float("pruning.sparsity", 0.3, 0.85)
        schedule = trial.suggest_categorical("pruning.schedule", ["one_shot", "gradual"])
        end = trial.suggest_float("pruning.end", 0.5, 0.8)
        t = trial.suggest_float("distillation.temperature", 1.0, 6.0)
        alpha = trial.suggest_float("distillation.alpha", 0.0, 0.9)
        weight = trial.suggest_float("fairness.weight", 0.1, 10.0)
        return (0.9 - 0.2 * sparsity + 0.01 * alpha + 0.01 * rng.normal(), 2.2e7 * (1 - sparsity),
                0.1 + 0.2 * sparsity - 0.01 * weight + 0.01 * (schedule == "one_shot") + 0.001 * (t + end))

    study.optimize(objective, n_trials=20)
    started = time.perf_counter()
    objs = objectives(study)
    found = objective_importances(study, objs)
    partial_dependence(study.trials, objs, found)
    return {"trials": 20, "params": 6, "importance_and_dependence_s": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model = _model_analysis(args.resamples)
    study = _study_level()
    remake_s = 16.0  # the README's demo trial, upper end (13-16 s on 2 idle cores)
    estimate = 2 * (model["ablation_s"] + model["gradient_s"]) + study["importance_and_dependence_s"] + remake_s
    result = {"cpu": cpu_model(), "cpus": os.cpu_count(), "torch_threads": args.threads, "load_before": load_before,
              "load_after": os.getloadavg(), "model_analysis": model, "study_level": study,
              "remake_trial_s_from_readme": remake_s, "estimated_explain_with_trial_s": round(estimate, 1)}
    write_json_atomic(RESULT, result)
    print(f"one model: {model['ablation_s']}s ablation + {model['gradient_s']}s gradient; study level "
          f"{study['importance_and_dependence_s']}s; explain --trial estimate {estimate:.0f}s "
          f"(load average {load_before[0]:.1f} -> {result['load_after'][0]:.1f})")


if __name__ == "__main__":
    main()
