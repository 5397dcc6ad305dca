"""Trials per hour for one study on one GPU at 1, 2, 4 and 8 trials per GPU, then a whole study's wall time.

A small student leaves most of an H100 idle (its step is launch-bound), so several trials can share
the card: ``[execution] parallel = k`` with ``gpus_per_trial = 1/k`` on a local Ray cluster. This
script measures what that buys, through the real driver (:func:`fairfront.search.driver.run_study`,
Ray tasks, SQLite storage), on the study file given (``studies/demo.toml`` by default):

1. **Probe.** One trial runs in this process on the GPU (the in-process executor), and its memory
   is read: the PyTorch caching allocator's peak reserved bytes during the trial, plus the memory
   the process holds beyond what PyTorch reserved (its CUDA context and libraries), as
   ``nvidia-smi --query-compute-apps`` attributes it to this process (a documented
   :data:`ASSUMED_CONTEXT_MIB` where ``nvidia-smi`` cannot see the process, e.g. another PID
   namespace). A packing of ``k`` trials is estimated to need ``k x (peak reserved + context) x
   margin`` (``--margin``, 1.2: trials sample different settings). On the CPU (``--cpu-smoke``)
   the estimate is this process's peak resident memory after the probe, and the free memory is
   ``MemAvailable``.
2. **Memory check, before any packing runs.** The card's free memory (``nvidia-smi``) is read
   once; a packing whose estimate exceeds it is refused and recorded as refused, with both
   numbers, not run.
3. **Warm-up.** A study with the largest allowed packing and two-step trials starts Ray's worker
   processes (imports, CUDA contexts), so no level pays for them.
4. **Levels.** For each allowed ``k``: a fresh study of ``max(--trials, 2k)`` (4, 4, 8, 16) trials with
   ``parallel = k``, ``gpus_per_trial = 1/k``, ``cpus_per_trial = cores / k``. Trials per hour =
   completed trials / (last completion - first start) x 3600, from the trials' own timestamps.
   Trials that ran out of memory and were retried with half the batch size
   (:mod:`fairfront.search.retry`) are counted (``oom_retries``): such a packing is too tight.
5. **Study.** ``--study-trials`` (50) trials of the same study at the packing with the most trials
   per hour; its wall time is that of :func:`run_study` with the prepared study given (the one-off
   preparation is reported separately as ``preparation_s``).

GPU utilisation is sampled by ``nvidia-smi`` every second throughout and summarised per part.
Results go to ``benchmarks/results/gpu_packing.json`` (``--out``), with the card's name, saved
after every part (``finished`` is false until the end), so a run stopped by a time limit keeps
what it measured.

Usage::

    python benchmarks/gpu_packing.py                          # 1, 2, 4, 8 per GPU, then 50 trials
    python benchmarks/gpu_packing.py --packings 1,4 --study-trials 0
    python benchmarks/gpu_packing.py --cpu-smoke              # tiny sizes on the CPU: the code path only

Without a GPU (and without ``--cpu-smoke``) it prints ``no CUDA device: nothing measured`` and exits 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import optuna  # noqa: E402
import torch  # noqa: E402

from fairfront.objectives.training.prepare import Prepared, prepare  # noqa: E402
from fairfront.search.driver import run_study  # noqa: E402
from fairfront.search.inprocess_executor import InProcessExecutor  # noqa: E402
from fairfront.search.options import RunOptions  # noqa: E402
from fairfront.search.ray_executor import start_ray  # noqa: E402
from fairfront.search.studyfile import StudyFile, load_study_file  # noqa: E402

from _common import (  # noqa: E402 - benchmarks/ is on sys.path when a script runs
    NO_CUDA,
    UtilisationSampler,
    cpu_model,
    gpu_memory,
    process_gpu_memory,
    write_json_atomic,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_packing.json"
ASSUMED_CONTEXT_MIB = 600
"""A CUDA context with PyTorch's kernels loaded lazily, where ``nvidia-smi`` cannot see the process."""
GIB = 1024 ** 3


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    """The driver's per-trial lines are not wanted here; its warnings and errors are."""
    if message.startswith(("warning", "error")):
        _log(message)


def _study(sf: StudyFile, name: str, *, n_trials: int, per_gpu: int, gpu: bool, max_steps: int | None = None
           ) -> StudyFile:
    """``sf`` as a fresh study of ``n_trials`` with ``per_gpu`` trials sharing the GPU."""
    cores = os.cpu_count() or 1
    execution = replace(sf.execution, parallel=per_gpu, gpus_per_trial=1.0 / per_gpu if gpu else 0.0,
                        cpus_per_trial=max(1.0, float(cores // per_gpu)))
    student = replace(sf.student, max_steps=max_steps) if max_steps else sf.student
    return replace(sf, study=replace(sf.study, name=name, n_trials=n_trials), execution=execution, student=student)


def _run(sf: StudyFile, folder: Path, prepared: Prepared, cache: Path, **options) -> tuple[optuna.Study, float]:
    started = time.perf_counter()
    study = run_study(sf, RunOptions(storage=f"sqlite:///{folder / (sf.study.name + '.db')}", cache_dir=cache,
                                     artifact_dir=folder / "artifacts", prepared=prepared, log=_quiet, **options))
    return study, time.perf_counter() - started


def probe(sf: StudyFile, prepared: Prepared, folder: Path, cache: Path, gpu: bool) -> dict:
    """One trial in this process; the memory a trial needs, and how that was estimated."""
    one = _study(sf, "probe", n_trials=1, per_gpu=1, gpu=gpu)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    study, seconds = _run(one, folder, prepared, cache, executor=InProcessExecutor(device="cuda" if gpu else "cpu"))
    if not gpu:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"trial_s": seconds, "per_trial_bytes": rss, "method": "peak resident memory of a process that "
                "ran one trial (getrusage ru_maxrss); free memory is MemAvailable"}
    peak = torch.cuda.max_memory_reserved()
    held = process_gpu_memory(os.getpid())
    context = held - torch.cuda.memory_reserved() if held is not None else ASSUMED_CONTEXT_MIB * 1024 ** 2
    return {"trial_s": seconds, "peak_reserved_bytes": peak, "context_bytes": context,
            "context_measured": held is not None, "per_trial_bytes": peak + context,
            "step_mode": study.trials[0].user_attrs.get("train", {}).get("step_mode"),
            "method": "PyTorch's peak reserved bytes during one trial + the process's memory beyond what "
                      "PyTorch reserved (nvidia-smi --query-compute-apps), per trial in flight, times the margin; "
                      "compared with nvidia-smi's free memory before any packing runs"}


def free_memory(gpu: bool) -> tuple[int, str]:
    """Free bytes of the card (or of the machine, on the CPU) and what it is."""
    if gpu:
        info = gpu_memory()
        if info is not None:
            return info["free"], info["name"]
        free, _ = torch.cuda.mem_get_info()
        return free, torch.cuda.get_device_name(0)
    with open("/proc/meminfo", encoding="utf-8") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024, cpu_model()


def measure_level(sf: StudyFile, k: int, n_trials: int, folder: Path, prepared: Prepared, cache: Path, gpu: bool,
                  sampler: UtilisationSampler) -> dict:
    """Trials per hour with ``k`` trials sharing the GPU."""
    t0 = time.monotonic()
    study, wall = _run(_study(sf, f"packing-{k}", n_trials=n_trials, per_gpu=k, gpu=gpu), folder, prepared, cache)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() \
        if done else float("nan")
    train_s = sorted(t.user_attrs.get("timings", {}).get("train_s", float("nan")) for t in done)
    modes = sorted({t.user_attrs.get("train", {}).get("step_mode") or "?" for t in done})
    return {"per_gpu": k, "trials": len(study.trials), "complete": len(done), "wall_s": wall, "span_s": span,
            "trials_per_hour": len(done) / span * 3600 if done and span > 0 else 0.0,
            "median_trial_train_s": train_s[len(train_s) // 2] if train_s else None, "step_modes": modes,
            "oom_retries": sum("fairfront.oom_retry" in t.user_attrs for t in study.trials),
            "utilisation": sampler.summary(t0, time.monotonic())}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu_smoke:
        print(NO_CUDA, file=sys.stderr)
        return 1
    smoke = args.cpu_smoke
    packings = [int(x) for x in (args.packings or ("1,2" if smoke else "1,2,4,8")).split(",")]
    if any(k < 1 for k in packings):
        print("error: --packings: whole numbers of trials per GPU, at least 1 (e.g. 1,2,4,8)", file=sys.stderr)
        return 2
    sf = load_study_file(args.study or ROOT / "studies" / ("smoke.toml" if smoke else "demo.toml"))
    steps = args.max_steps or (4 if smoke else None)
    if steps:
        sf = replace(sf, student=replace(sf.student, max_steps=steps))
    started = time.perf_counter()
    prepared = prepare(sf.prepare_spec, args.cache, log=_log, device=torch.device("cuda" if gpu else "cpu"))
    payload: dict = {"benchmark": "gpu_packing", "created": _dt.datetime.now().isoformat(timespec="seconds"),
                     "cpu_smoke": smoke, "study": str(sf.path), "model": sf.model.name,
                     "student_max_steps": sf.student.max_steps, "preparation_s": time.perf_counter() - started,
                     "torch": torch.__version__, "cpu_count": os.cpu_count(), "margin": args.margin,
                     "finished": False}
    out = args.out or RESULTS
    with tempfile.TemporaryDirectory(prefix="fairfront-packing-") as tmp, UtilisationSampler() as sampler:
        _measure(args, sf, prepared, packings, payload, Path(tmp), sampler,
                 save=lambda: write_json_atomic(out, payload))
    payload["finished"] = True
    write_json_atomic(out, payload)
    _log(f"gpu_packing: -> {out}")
    return 0


def _measure(args: argparse.Namespace, sf: StudyFile, prepared: Prepared, packings: list[int], payload: dict,
             folder: Path, sampler: UtilisationSampler, *, save: Callable[[], None]) -> None:
    """Probe, memory check, warm-up, levels, study: into ``payload``, saved after each (a timeout keeps them)."""
    gpu, smoke = torch.cuda.is_available(), args.cpu_smoke
    payload["probe"] = one = probe(sf, prepared, folder, args.cache, gpu)
    free, payload["device"] = free_memory(gpu)
    payload["free_bytes_before_packing"] = free
    allowed, payload["refused"] = _check(packings, one["per_trial_bytes"], free, args.margin)
    save()
    if allowed:  # start the workers the largest packing needs (imports, contexts): no level pays for them
        start_ray(None, num_cpus=os.cpu_count(), log=_log)
        _run(_study(sf, "warm-up", n_trials=max(allowed), per_gpu=max(allowed), gpu=gpu, max_steps=2), folder,
             prepared, args.cache)
    trials = args.trials or (2 if smoke else 4)
    payload["levels"] = levels = []
    for k in allowed:
        levels.append(measure_level(sf, k, max(trials, 2 * k), folder, prepared, args.cache, gpu, sampler))
        save()
    _report_levels(levels, payload["refused"])
    n = args.study_trials if args.study_trials is not None else (3 if smoke else 50)
    if levels and n > 0:
        best = max(levels, key=lambda x: x["trials_per_hour"])["per_gpu"]
        t0 = time.monotonic()
        study, wall = _run(_study(sf, "study", n_trials=n, per_gpu=best, gpu=gpu), folder, prepared, args.cache)
        payload["study_run"] = {"trials": n, "per_gpu": best, "wall_s": wall,
                                "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
                                "utilisation": sampler.summary(t0, time.monotonic())}
        _log(f"gpu_packing: a {n}-trial study at {best} per GPU took {wall:.1f} s")
    payload["utilisation_whole_run"] = sampler.summary()


def _check(packings: list[int], per_trial: int, free: int, margin: float) -> tuple[list[int], list[dict]]:
    """The packings whose estimated memory fits the free memory, and the refused ones with both numbers."""
    allowed, refused = [], []
    for k in packings:
        estimate = k * per_trial * margin
        if estimate > free:
            refused.append({"per_gpu": k, "estimated_bytes": int(estimate), "free_bytes": free})
            _log(f"gpu_packing: {k} per GPU refused: estimated {estimate / GIB:.1f} GiB > {free / GIB:.1f} GiB free")
        else:
            allowed.append(k)
    return allowed, refused


def _report_levels(levels: list[dict], refused: list[dict]) -> None:
    for level in levels:
        mean = level["utilisation"].get("utilisation_mean_pct")
        busy = f"GPU utilisation {mean:.0f}%" if mean is not None else "utilisation not sampled"
        _log(f"gpu_packing: {level['per_gpu']} per GPU: {level['trials_per_hour']:.0f} trials/hour "
             f"({level['complete']} trials in {level['span_s']:.1f} s; {busy})")
    if refused:
        _log(f"gpu_packing: refused (memory): {', '.join(str(r['per_gpu']) for r in refused)} per GPU")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=None, help="study file (default studies/demo.toml; "
                        "with --cpu-smoke studies/smoke.toml)")
    parser.add_argument("--packings", default=None, help="trials per GPU to measure (default 1,2,4,8; smoke 1,2)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per level, at least 2 x the packing (default 4; smoke 2)")
    parser.add_argument("--study-trials", type=int, default=None,
                        help="trials of the study run at the best packing (default 50; smoke 3; 0 skips it)")
    parser.add_argument("--max-steps", type=int, default=None, help="student optimizer steps (default the "
                        "study file's; smoke 4)")
    parser.add_argument("--margin", type=float, default=1.2, help="memory estimate multiplier (default 1.2)")
    parser.add_argument("--cache", type=Path, default=ROOT / "studies" / "cache", help="prepared-study cache")
    parser.add_argument("--out", type=Path, default=None, help=f"result JSON (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run the whole path on the CPU with tiny sizes (no GPU figure is produced)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
