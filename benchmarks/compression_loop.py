"""Wall time of one compression trial: fairfront's training loop against a plain Trainer baseline.

Both implementations run the same trial settings in the same process, on the same tokenized data
and the same fine-tuned teacher: the offline all-MiniLM-L6-v2 on the built-in SYNTHETIC occupation
task of ``studies/demo.toml``, global magnitude pruning of the encoder's linear weights to a fixed
sparsity on Zhu & Gupta's gradual schedule, knowledge distillation with a fixed temperature and
mix, and the same number of optimizer steps, batch size, learning rate, weight decay, warm-up,
gradient clipping and maximum length.

- **fairfront**: :func:`fairfront.objectives.training.trial.run_trial` with the equivalent
  :class:`~fairfront.spaces.space.CompressionConfig` (latency measurement off, no fairness family).
  The whole trial is timed, evaluation included; a trial also scores the test split and computes
  the group-fairness report (with the study's bootstrap resamples), which the baseline does not.
- **baseline**, written as a typical user would: ``transformers.Trainer`` with a ``compute_loss``
  override that runs the teacher's forward pass on every batch, ``torch.nn.utils.prune.
  global_unstructured`` with ``L1Unstructured`` applied on the schedule from a ``TrainerCallback``,
  ``DataCollatorWithPadding`` and ``Trainer.predict`` on the validation split. It gets no
  artificial slowdown: no logging, saving or progress bars, dataloader workers 0, and it predicts
  on inputs without labels so that evaluation does not run the teacher.

- **floor** (a lower bound, not a competitor): the same student trained for the same steps with
  the same optimizer, schedule, clipping and batches by :func:`fairfront.objectives.training.loop.train`
  with plain cross-entropy — no teacher term, no masks, no pruning, no evaluation — run between
  the two sides of each repeat. It is the loop's bare training step: ``floor / baseline``
  (training time) is the ratio a trial would reach if distillation, pruning and evaluation cost
  nothing, so the gap between fairfront's training time and the floor is what the trial's own
  terms cost, and the floor itself only falls with a cheaper step (fewer operations, other kernels).

What is not timed, for either side: building the study (tokenization, fine-tuning the dense
teacher and caching its logits — :func:`fairfront.objectives.training.prepare.prepare`, cached under
``studies/cache/``), building the baseline's ``datasets.Dataset`` from the same token ids and
loading its teacher network (once, as a user would), and one two-step warm-up run of each
implementation (lazy imports, thread-pool start-up; skipped with ``--quick``).
Repeats alternate which implementation runs first, so a change of machine load during the run
does not always fall on the same side.

On a machine shared with other jobs the timings are noisy: the load average before and
after the run is recorded, and the ratio (taken per repeat pair, then the median) is steadier
than the absolute seconds. Process CPU seconds are recorded next to wall seconds: with more
runnable processes than cores, wall time mostly measures the neighbours, CPU time much less so.
For the same reason both sides use one torch thread by default (``--threads``): with several
threads on an oversubscribed machine, every operator waits for its slowest thread.

Usage::

    python benchmarks/compression_loop.py                 # 60 steps, 2 settings, 3 repeats
    python benchmarks/compression_loop.py --quick         # smoke check: 6 steps, 1 repeat (temp folder)
    python benchmarks/compression_loop.py --steps 100 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

from fairfront.objectives.training.loop import TrainSettings, train  # noqa: E402
from fairfront.objectives.training.models import load_tokenizer  # noqa: E402
from fairfront.objectives.training.prepare import Prepared, prepare  # noqa: E402
from fairfront.objectives.training.trial import TrialSpec, run_trial  # noqa: E402
from fairfront.search.studyfile import StudyFile, load_study_file  # noqa: E402
from fairfront.spaces.distillation import DistillationConfig  # noqa: E402
from fairfront.spaces.pruning import PruningConfig  # noqa: E402
from fairfront.spaces.schedules import SparsitySchedule  # noqa: E402
from fairfront.spaces.space import CompressionConfig  # noqa: E402

from _common import cpu_model, write_json_atomic  # noqa: E402 - benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compression_loop.json"
STUDY = ROOT / "studies" / "demo.toml"
GOAL_RATIO = 0.5


@dataclass(frozen=True)
class Setting:
    """One trial setting, run by both implementations.

    The gradual schedule makes ``updates`` pruning steps, evenly spaced over the window
    ``[start, end]`` (fractions of training), so the final sparsity is reached, and trained at,
    whatever the number of steps.
    """

    name: str
    sparsity: float
    temperature: float
    alpha: float
    updates: int
    start: float = 0.0
    end: float = 0.75

    def frequency(self, steps: int) -> int:
        window = int(math.floor(self.end * steps)) - int(math.floor(self.start * steps))
        return max(1, window // self.updates)

    def schedule(self, steps: int) -> SparsitySchedule:
        return SparsitySchedule("gradual", self.sparsity, self.start, self.end, self.frequency(steps))

    def compression(self, steps: int) -> CompressionConfig:
        return CompressionConfig(distillation=DistillationConfig(self.temperature, self.alpha),
                                 pruning=PruningConfig(self.sparsity, self.schedule(steps), scope="global"))


SETTINGS = (
    Setting("sparsity0.5_T2_alpha0.5", sparsity=0.5, temperature=2.0, alpha=0.5, updates=9),
    Setting("sparsity0.8_T4_alpha0.9", sparsity=0.8, temperature=4.0, alpha=0.9, updates=4),
)


# --------------------------------------------------------------------------------------------
# The plain baseline: Trainer + compute_loss with a teacher forward + torch.nn.utils.prune
# --------------------------------------------------------------------------------------------


def gradual_sparsity(step: int, *, final: float, total: int, start: float, end: float, frequency: int) -> float:
    """Zhu & Gupta (2017): ``s_f * (1 - (1 - k / n) ** 3)`` after ``k`` of ``n`` updates every ``frequency`` steps."""
    t0 = int(math.floor(start * total))
    t1 = max(t0, int(math.floor(end * total)))
    if step < t0:
        return 0.0
    n = max(1, (t1 - t0) // frequency)
    k = min((step - t0) // frequency, n)
    return final * (1.0 - (1.0 - k / n) ** 3)


class GradualPruningCallback(transformers.TrainerCallback):
    """Global L1 magnitude pruning of ``parameters`` to the scheduled sparsity before each step."""

    def __init__(self, parameters: list[tuple[nn.Module, str]], *, final: float, start: float, end: float,
                 frequency: int):
        self.parameters = parameters
        self.final, self.start, self.end, self.frequency = final, start, end, frequency
        self.n_weights = sum(getattr(m, name).numel() for m, name in parameters)
        self.n_pruned = 0

    def on_step_begin(self, args, state, control, **kwargs):
        target = gradual_sparsity(state.global_step, final=self.final, total=state.max_steps, start=self.start,
                                  end=self.end, frequency=self.frequency)
        extra = int(round(target * self.n_weights)) - self.n_pruned
        if extra > 0:
            # An integer amount prunes that many of the weights still unpruned (masks compose).
            prune.global_unstructured(self.parameters, pruning_method=prune.L1Unstructured, amount=extra)
            self.n_pruned += extra


class DistillationTrainer(transformers.Trainer):
    """Cross-entropy mixed with the KL divergence to a teacher run on every batch."""

    def __init__(self, *args, teacher: nn.Module, temperature: float, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        self.temperature, self.alpha = temperature, alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits
        t = self.temperature
        ce = F.cross_entropy(outputs.logits, labels)
        kl = F.kl_div(F.log_softmax(outputs.logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      log_target=True, reduction="batchmean")
        loss = (1.0 - self.alpha) * ce + self.alpha * t * t * kl
        return (loss, outputs) if return_outputs else loss


def baseline_datasets(prepared: Prepared):
    """The same token ids as ``datasets.Dataset`` objects, as a user's ``tokenizer.map`` would give."""
    import datasets

    def build(split: str, with_labels: bool):
        data = prepared.splits[split]
        columns = {"input_ids": [list(map(int, ids)) for ids in data.input_ids],
                   "attention_mask": [[1] * len(ids) for ids in data.input_ids]}
        if with_labels:
            columns["labels"] = data.labels.astype(int).tolist()
        return datasets.Dataset.from_dict(columns)

    datasets.disable_progress_bars()
    return build("train", True), build("validation", False)


def run_baseline(prepared: Prepared, teacher: nn.Module, tokenizer, train_ds, val_ds, setting: Setting,
                 student: TrainSettings, *, seed: int, workdir: str) -> dict:
    """One trial with the plain baseline; returns wall and CPU seconds, accuracy and sparsity.

    ``teacher`` is the fine-tuned dense model, loaded once for all trials (as the cached teacher
    logits are for fairfront); the student is a fresh copy of it, as in :func:`run_trial`.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    model = prepared.teacher()
    encoder = model.base_model.encoder
    parameters = [(m, "weight") for m in encoder.modules() if isinstance(m, nn.Linear)]
    args = transformers.TrainingArguments(
        output_dir=workdir, max_steps=student.max_steps, per_device_train_batch_size=student.batch_size,
        per_device_eval_batch_size=student.eval_batch_size, learning_rate=student.learning_rate,
        weight_decay=student.weight_decay, warmup_steps=int(student.warmup_fraction * student.max_steps),
        lr_scheduler_type="linear", max_grad_norm=student.max_grad_norm, seed=seed, data_seed=seed,
        dataloader_num_workers=0, report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available())
    callback = GradualPruningCallback(parameters, final=setting.sparsity, start=setting.start, end=setting.end,
                                      frequency=setting.frequency(student.max_steps))
    trainer = DistillationTrainer(model=model, args=args, train_dataset=train_ds,
                                  data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                  callbacks=[callback], teacher=teacher.to(args.device),
                                  temperature=setting.temperature, alpha=setting.alpha)
    trainer.remove_callback(transformers.PrinterCallback)  # it prints the final metrics to stdout
    train_started = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - train_started
    eval_started = time.perf_counter()
    logits = trainer.predict(val_ds).predictions
    eval_s = time.perf_counter() - eval_started
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    accuracy = float((np.asarray(logits).argmax(axis=1) == prepared.splits["validation"].labels).mean())
    with torch.no_grad():
        zeros = sum(int((m.weight_orig * m.weight_mask if prune.is_pruned(m) else m.weight).eq(0).sum())
                    for m, _ in parameters)
    return {"wall_s": wall, "cpu_s": cpu, "train_s": train_s, "eval_s": eval_s, "accuracy": accuracy,
            "sparsity": zeros / callback.n_weights, "steps": int(result.global_step)}


# --------------------------------------------------------------------------------------------
# fairfront's side
# --------------------------------------------------------------------------------------------


def run_ours(prepared: Prepared, study: StudyFile, setting: Setting, student: TrainSettings, *, seed: int,
             threads: int, device: torch.device, cuda_graphs: str = "auto") -> dict:
    """One trial with :func:`run_trial` (the whole trial timed, evaluation included)."""
    spec = TrialSpec(setting.compression(student.max_steps), student, study.objectives, seed=seed,
                     bootstrap_resamples=study.study.bootstrap_resamples, latency=False, cuda_graphs=cuda_graphs)
    started, cpu_started = time.perf_counter(), time.process_time()
    out = run_trial(prepared, spec, device=device, threads=threads)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    report = out.report
    return {"wall_s": wall, "cpu_s": cpu, "train_s": report.timings.train_s, "eval_s": report.timings.eval_s,
            "accuracy": report.validation.accuracy["accuracy"],
            "sparsity": report.compression_notes["achieved_sparsity"], "steps": report.train.steps,
            "step_mode": report.train.step_mode}


def run_floor(prepared: Prepared, student: TrainSettings, *, seed: int, device: torch.device,
              cuda_graphs: str = "auto") -> dict:
    """The student's bare training: cross-entropy only, the same optimizer, schedule, clipping and batches."""
    model = prepared.teacher()
    started = time.perf_counter()
    stats = train(model, prepared.splits["train"], student, seed=seed, pad_id=prepared.pad_id, device=device,
                  loss_fn=lambda logits, batch: F.cross_entropy(logits, batch["labels"]), cuda_graphs=cuda_graphs)
    return {"train_s": time.perf_counter() - started, "steps": stats.steps, "step_mode": stats.step_mode}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _machine(threads: int) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": threads, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "shared_machine": True}
    info["cpu_model"] = cpu_model()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _summarise(setting: Setting, runs: list[dict], n_validation: int, steps: int) -> dict:
    ours = [r["ours"] for r in runs]
    base = [r["baseline"] for r in runs]
    floors = [r["floor"] for r in runs]
    ratios = [r["ours"]["wall_s"] / r["baseline"]["wall_s"] for r in runs]
    acc_ours = statistics.fmean(x["accuracy"] for x in ours)
    acc_base = statistics.fmean(x["accuracy"] for x in base)
    p = (acc_ours + acc_base) / 2
    se = math.sqrt(max(p * (1 - p), 1e-12) / n_validation)
    return {
        "setting": {"name": setting.name, "sparsity": setting.sparsity, "schedule": "gradual",
                    "start": setting.start, "end": setting.end, "frequency": setting.frequency(steps),
                    "temperature": setting.temperature, "alpha": setting.alpha},
        "ours_wall_s": statistics.median(x["wall_s"] for x in ours),
        "baseline_wall_s": statistics.median(x["wall_s"] for x in base),
        "ratio": statistics.median(ratios),
        "ratio_per_repeat": ratios,
        "ours_cpu_s": statistics.median(x["cpu_s"] for x in ours),
        "baseline_cpu_s": statistics.median(x["cpu_s"] for x in base),
        "cpu_ratio": statistics.median(o["cpu_s"] / b["cpu_s"] for o, b in zip(ours, base)),
        "ours_train_s": statistics.median(x["train_s"] for x in ours),
        "baseline_train_s": statistics.median(x["train_s"] for x in base),
        "train_ratio": statistics.median(o["train_s"] / b["train_s"] for o, b in zip(ours, base)),
        "floor_train_s": statistics.median(f["train_s"] for f in floors),
        "floor_train_ratio": statistics.median(f["train_s"] / b["train_s"] for f, b in zip(floors, base)),
        "ours_eval_s": statistics.median(x["eval_s"] for x in ours),
        "baseline_eval_s": statistics.median(x["eval_s"] for x in base),
        "ours_accuracy": acc_ours,
        "baseline_accuracy": acc_base,
        "accuracy_difference": acc_ours - acc_base,
        "accuracy_standard_error": se,
        "ours_sparsity": statistics.fmean(x["sparsity"] for x in ours),
        "baseline_sparsity": statistics.fmean(x["sparsity"] for x in base),
        "runs": runs,
    }


@dataclass
class _Bench:
    """What every run shares: the study, its prepared data, and the baseline's teacher, tokenizer and datasets."""

    study: StudyFile
    prepared: Prepared
    teacher: nn.Module
    tokenizer: object
    train_ds: object
    val_ds: object
    device: torch.device
    threads: int
    cuda_graphs: str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 6 steps, 1 repeat, no warm-up run, output in the temp folder")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per trial (default 60, quick 6)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per setting (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: see the module docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda-graphs", choices=("auto", "off"), default="auto",
                        help="capture fairfront's training step in CUDA graphs where it qualifies (default auto)")
    parser.add_argument("--study", type=Path, default=STUDY, help="study file giving model, data and teacher")
    parser.add_argument("--cache", type=Path, default=ROOT / "studies" / "cache", help="prepared-study cache")
    parser.add_argument("--out", type=Path, default=None, help=f"result JSON (default {RESULTS.relative_to(ROOT)}; "
                        "with --quick a file in the temp folder)")
    return parser


def _prepare_bench(args: argparse.Namespace, study: StudyFile, device: torch.device) -> tuple[_Bench, float]:
    """The shared, untimed part: tokenization, the fine-tuned teacher and its cached logits; and its seconds."""
    prep_started = time.perf_counter()
    prepared = prepare(study.prepare_spec, args.cache, log=lambda m: print(m, file=sys.stderr), device=device)
    tokenizer = load_tokenizer(study.model, [])  # a pretrained tokenizer; the collator needs its pad token
    if tokenizer.pad_token_id != prepared.pad_id:
        raise RuntimeError(f"tokenizer pad id {tokenizer.pad_token_id} differs from the prepared {prepared.pad_id}")
    train_ds, val_ds = baseline_datasets(prepared)
    teacher = prepared.teacher().to(device).eval()
    prep_seconds = time.perf_counter() - prep_started
    return _Bench(study, prepared, teacher, tokenizer, train_ds, val_ds, device, args.threads,
                  args.cuda_graphs), prep_seconds


def _student_settings(study: StudyFile, steps: int) -> TrainSettings:
    """The study's student settings, run for exactly ``steps`` steps."""
    return TrainSettings(epochs=1e6, max_steps=steps, batch_size=study.student.batch_size,
                         learning_rate=study.student.learning_rate, weight_decay=study.student.weight_decay,
                         warmup_fraction=study.student.warmup_fraction, max_grad_norm=study.student.max_grad_norm,
                         eval_batch_size=study.student.eval_batch_size)


def _check_schedules(steps: int) -> None:
    """The baseline's hand-written schedule must be the one the trial follows."""
    for s in SETTINGS:
        for step in range(steps):
            mine = gradual_sparsity(step, final=s.sparsity, total=steps, start=s.start, end=s.end,
                                    frequency=s.frequency(steps))
            if abs(mine - s.schedule(steps).at(step, steps)) > 1e-12:
                raise RuntimeError(f"schedules differ for {s.name} at step {step}")
        if steps > 1 and s.schedule(steps).at(steps - 1, steps) != s.sparsity:
            raise RuntimeError(f"{s.name}: the schedule does not reach {s.sparsity} within {steps} steps")


def _warm_up(bench: _Bench, student: TrainSettings, seed: int, workdir: str) -> None:
    """Untimed warm-up of each side (lazy imports, thread pools, allocator)."""
    warm = TrainSettings(epochs=1e6, max_steps=2, batch_size=student.batch_size,
                         learning_rate=student.learning_rate, eval_batch_size=student.eval_batch_size)
    run_ours(bench.prepared, bench.study, SETTINGS[0], warm, seed=seed, threads=bench.threads, device=bench.device)
    run_baseline(bench.prepared, bench.teacher, bench.tokenizer, bench.train_ds, bench.val_ds, SETTINGS[0], warm,
                 seed=seed, workdir=workdir)
    run_floor(bench.prepared, warm, seed=seed, device=bench.device)


def _repeat(bench: _Bench, setting: Setting, student: TrainSettings, seed: int, order: tuple[str, ...],
            workdir: str) -> dict:
    """One repeat of a setting: the three sides in ``order``, with the machine's load after them."""
    pair: dict = {}
    for side in order:
        torch.set_num_threads(bench.threads)
        if side == "ours":
            pair["ours"] = run_ours(bench.prepared, bench.study, setting, student, seed=seed,
                                    threads=bench.threads, device=bench.device, cuda_graphs=bench.cuda_graphs)
        elif side == "floor":
            pair["floor"] = run_floor(bench.prepared, student, seed=seed, device=bench.device,
                                      cuda_graphs=bench.cuda_graphs)
        else:
            pair["baseline"] = run_baseline(bench.prepared, bench.teacher, bench.tokenizer, bench.train_ds,
                                            bench.val_ds, setting, student, seed=seed, workdir=workdir)
    pair["first"] = order[0]
    pair["load_average"] = _load()
    return pair


def _measure(bench: _Bench, student: TrainSettings, *, repeats: int, seed: int, warm_up: bool) -> list[dict]:
    """Every setting ``repeats`` times, alternating which side goes first; one summary per setting."""
    steps = student.max_steps
    results = []
    with tempfile.TemporaryDirectory(prefix="fairfront-bench-") as workdir:
        if warm_up:
            _warm_up(bench, student, seed, workdir)
        for i, setting in enumerate(SETTINGS):
            runs = []
            for r in range(repeats):
                # the floor runs between the two sides, so all three share the machine's state
                order = ("ours", "floor", "baseline") if (i + r) % 2 == 0 else ("baseline", "floor", "ours")
                pair = _repeat(bench, setting, student, seed + r, order, workdir)
                runs.append(pair)
                print(f"{setting.name} repeat {r + 1}/{repeats}: ours {pair['ours']['wall_s']:.1f}s "
                      f"acc {pair['ours']['accuracy']:.3f} | baseline {pair['baseline']['wall_s']:.1f}s "
                      f"acc {pair['baseline']['accuracy']:.3f} | floor {pair['floor']['train_s']:.1f}s of training",
                      file=sys.stderr, flush=True)
            results.append(_summarise(setting, runs, len(bench.prepared.splits["validation"]), steps))
    return results


def _geometric_mean(results: list[dict], key: str) -> float:
    return math.exp(statistics.fmean(math.log(r[key]) for r in results))


def _payload(args: argparse.Namespace, bench: _Bench, student: TrainSettings, repeats: int, results: list[dict],
             prep_seconds: float, load_before: list[float] | None) -> dict:
    """The result file: the goal's verdict, the ratios over all settings, and what was and was not timed."""
    study, prepared = bench.study, bench.prepared
    overall = _geometric_mean(results, "ratio")
    equal_accuracy = all(r["accuracy_difference"] >= -2 * r["accuracy_standard_error"] for r in results)
    return {
        "benchmark": "compression_loop",
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "goal": f"ours / baseline wall time <= {GOAL_RATIO} at equal validation accuracy",
        "goal_met": overall <= GOAL_RATIO and equal_accuracy,
        "ratio_geometric_mean": overall,
        "cpu_ratio_geometric_mean": _geometric_mean(results, "cpu_ratio"),
        "train_ratio_geometric_mean": _geometric_mean(results, "train_ratio"),
        "floor_train_ratio_geometric_mean": _geometric_mean(results, "floor_train_ratio"),
        "floor": "the student trained with cross-entropy alone by the same loop (same optimizer, schedule, "
                 "clipping, batches, steps): a lower bound on any implementation's training time",
        "equal_accuracy_within_2se": equal_accuracy,
        "model": study.model.name, "max_length": study.model.max_length, "data": prepared.data_name,
        "n_train": len(prepared.splits["train"]), "n_validation": len(prepared.splits["validation"]),
        "steps": student.max_steps, "batch_size": student.batch_size, "learning_rate": student.learning_rate,
        "weight_decay": student.weight_decay, "warmup_fraction": student.warmup_fraction,
        "max_grad_norm": student.max_grad_norm, "eval_batch_size": student.eval_batch_size,
        "repeats": repeats, "seed": args.seed, "cuda_graphs": args.cuda_graphs,
        "bootstrap_resamples_ours": study.study.bootstrap_resamples,
        "untimed": "study preparation (tokenization, teacher fine-tuning, teacher logits), the baseline's "
                   "datasets.Dataset construction and teacher network (loaded once)"
                   + ("" if args.quick else ", one 2-step warm-up run of each side"),
        "ours_also_does": "test-split scoring, fairness report with bootstrap, size measures",
        "preparation_s": prep_seconds,
        "machine": _machine(args.threads), "load_average_before": load_before, "load_average_after": _load(),
        "settings": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    steps = args.steps or (6 if args.quick else 60)
    repeats = args.repeats or (1 if args.quick else 3)
    if steps < 1 or repeats < 1 or args.threads < 1:
        parser.error("--steps, --repeats and --threads must be at least 1")
    out_path = args.out or (Path(tempfile.gettempdir()) / "compression_loop.quick.json" if args.quick else RESULTS)

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = _load()
    study = load_study_file(args.study)
    if study.model.name not in ("minilm", "all-minilm-l6-v2"):
        print(f"note: the study's model is {study.model.name!r}, not the offline MiniLM", file=sys.stderr)
    bench, prep_seconds = _prepare_bench(args, study, device)
    student = _student_settings(study, steps)
    _check_schedules(steps)
    results = _measure(bench, student, repeats=repeats, seed=args.seed, warm_up=not args.quick)
    payload = _payload(args, bench, student, repeats, results, prep_seconds, load_before)
    write_json_atomic(out_path, payload)
    per = ", ".join(f"{r['setting']['name']} {r['ratio']:.2f}" for r in results)
    worst_acc = min(r["accuracy_difference"] for r in results)
    print(f"compression_loop: ours/baseline wall time {payload['ratio_geometric_mean']:.2f} (goal <= {GOAL_RATIO}; "
          f"{per}), CPU time {payload['cpu_ratio_geometric_mean']:.2f}; "
          f"training time {payload['train_ratio_geometric_mean']:.2f}, "
          f"floor {payload['floor_train_ratio_geometric_mean']:.2f}; "
          f"worst accuracy difference {worst_acc:+.3f}; {steps} steps x {repeats} repeats, {args.threads} threads "
          f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
