"""What the driver itself costs: overhead per trial, and parallel efficiency on a local Ray cluster.

The driver's real loop (:func:`fairfront.search.driver.run_study`: lease, capacity, ask, sample
the compression space, submit to Ray, wait, tell, per-trial JSON report as an Optuna artifact)
runs with trivial trial functions swapped in through ``RunOptions.trial_fn``, so what is measured
is the loop, the storage and Ray — not training.

1. **Overhead.** ``--trials`` (1,000) no-op trials, ``--overhead-parallel`` (8) in flight, SQLite
   storage on local disk, random sampler over the smoke study's space. Reported: wall time per
   trial, and the driver's busy time per trial (wall time minus time blocked waiting for Ray),
   split into ask+sample, submit, tell+report, lease+capacity, and the driver process's CPU time
   per trial (what the loop costs with the machine to itself; on a shared machine the wall time
   also holds the time other processes had the CPU). Goal: under 20 ms per trial. The trials
   run on Ray, as in a real study: submitting a task and fetching its result are part of what
   the driver pays per trial. The same trials then run once more on the
   :class:`~fairfront.search.inprocess_executor.InProcessExecutor` (no Ray at all: the loop and
   the storage alone), reported as ``overhead.in_process``; the difference is Ray's share.
2. **Parallel efficiency.** ``ray.init(num_cpus=32)``: 32 logical CPUs, more than the machine
   has, which is fine because sleep trials use no CPU. ``--rounds`` x 32 trials that each sleep
   ``--sleep-s`` seconds, 32 in flight; efficiency = ideal wall time (rounds x sleep) / measured
   wall time. A warm-up study first starts Ray's 32 worker processes, so worker start-up (a
   one-off cost per cluster) is not counted. Goal: at least 95%.

3. **Baseline.** Both measurements again with the driver over Optuna's own (cached) RDB storage
   instead of its in-memory mirror (``RunOptions(mirror=False)``), in the same process, so the
   JSON also holds the ratio mirror / plain for the cost per trial (skip with ``--no-baseline``).
   Each part runs the baseline first, then the mirror.

Results go to ``benchmarks/results/driver_overhead.json`` (written atomically), with the machine
they were measured on; one summary line is printed.

Usage::

    python benchmarks/driver_overhead.py                 # the full measurement (a few minutes)
    python benchmarks/driver_overhead.py --trials 200 --rounds 2 --sleep-s 5   # quicker
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import optuna  # noqa: E402
import ray  # noqa: E402

from fairfront.objectives.training.prepare import Prepared  # noqa: E402
from fairfront.objectives.training.trial import TrialOutcome  # noqa: E402
from fairfront.search.driver import LoopStats, RunOptions, run_study  # noqa: E402
from fairfront.search.inprocess_executor import InProcessExecutor  # noqa: E402
from fairfront.search.studyfile import load_study_file  # noqa: E402

from _common import write_json_atomic  # noqa: E402 - benchmarks/ is on sys.path when a script runs

RESULT = Path(__file__).resolve().parent / "results" / "driver_overhead.json"
IN_FLIGHT = 32

SMOKE = Path(__file__).resolve().parents[1] / "studies" / "smoke.toml"
"""The study whose space is sampled (random sampler, tiny model; the trials themselves are swapped out)."""


def noop_trial(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    """Returns at once with values that vary by trial, so the Pareto front is not trivial."""
    x = (spec.seed * 0.6180339887) % 1.0
    return TrialOutcome([x, 1000.0 * (1.0 - x) + 1.0, abs(0.5 - x)], {"benchmark": "noop"})


class SleepTrial:
    """Sleeps a fixed time (no CPU), then returns like :func:`noop_trial`."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, prepared, spec, *, device=None, threads=None) -> TrialOutcome:
        time.sleep(self.seconds)
        return noop_trial(prepared, spec)


def _placeholder_prepared() -> Prepared:
    return Prepared(fingerprint="benchmark", data_name="none", citation="", label_names=("a", "b"),
                    group_names=(), group_is_proxy=False, splits={}, pad_id=0, model_config={}, teacher_state={},
                    teacher_logits={}, teacher_seconds=0.0)


def _run(folder: Path, name: str, n_trials: int, parallel: int, fn, *, mirror: bool = True,
         in_process: bool = False) -> tuple[float, float, LoopStats, optuna.Study]:
    """Run one study (on Ray, or in this process); returns wall seconds, the driver process's CPU
    seconds, the loop's stats, the study."""
    smoke = load_study_file(SMOKE)
    sf = replace(smoke, study=replace(smoke.study, name=name, n_trials=n_trials),
                 execution=replace(smoke.execution, parallel=parallel, max_retries=0))
    options = RunOptions(storage=f"sqlite:///{folder / 'bench.db'}", artifact_dir=folder / "artifacts",
                         cache_dir=folder / "cache", log=lambda m: None, trial_fn=fn,
                         prepared=_placeholder_prepared(), capacity_refresh_s=5.0, mirror=mirror,
                         executor=InProcessExecutor(parallel) if in_process else None)
    started, cpu = time.perf_counter(), time.process_time()
    study = run_study(sf, options)
    return time.perf_counter() - started, time.process_time() - cpu, options.stats, study


def _overhead(folder: Path, args, mirror: bool, in_process: bool = False) -> dict:
    """Part 1: no-op trials; the driver's cost per trial and where it goes."""
    name = ("overhead" if mirror else "overhead-plain") + ("-in-process" if in_process else "")
    wall, cpu, stats, study = _run(folder, name, args.trials, args.overhead_parallel, noop_trial, mirror=mirror,
                                   in_process=in_process)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    assert complete == args.trials, (complete, args.trials)
    overhead = {
        "executor": "in the driver's process (no Ray)" if in_process else "Ray tasks",
        "storage": "sqlite (local disk, WAL), " + ("the driver's mirror" if mirror else "Optuna's cached RDB storage"),
        "trials": args.trials, "in_flight": args.overhead_parallel, "sampler": "random", "wall_s": round(wall, 3),
        "wall_ms_per_trial": _ms(wall, args.trials),
        "driver_busy_ms_per_trial": _ms(stats.busy_s, args.trials),
        "driver_cpu_ms_per_trial": _ms(cpu, args.trials),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ask_and_sample_ms_per_trial": _ms(stats.ask_s, args.trials),
        "submit_ms_per_trial": _ms(stats.submit_s, args.trials),
        "tell_and_report_ms_per_trial": _ms(stats.tell_s, args.trials),
        "lease_and_capacity_ms_per_trial": _ms(stats.lease_s, args.trials),
        "waiting_for_ray_ms_per_trial": _ms(stats.wait_s, args.trials),
        "goal_ms_per_trial": 20.0,
    }
    overhead["meets_goal"] = overhead["wall_ms_per_trial"] < 20.0
    return overhead


def _efficiency(folder: Path, args, mirror: bool) -> dict:
    """Part 2: rounds of sleep trials, 32 in flight; ideal wall time over measured."""
    n_sleep = IN_FLIGHT * args.rounds
    wall, _, stats, _ = _run(folder, "efficiency" if mirror else "efficiency-plain", n_sleep, IN_FLIGHT,
                             SleepTrial(args.sleep_s), mirror=mirror)
    ideal = args.rounds * args.sleep_s
    efficiency = {
        "trials": n_sleep, "in_flight": IN_FLIGHT, "max_in_flight_seen": stats.max_in_flight,
        "sleep_s": args.sleep_s, "rounds": args.rounds, "ideal_wall_s": ideal, "wall_s": round(wall, 3),
        "efficiency": round(ideal / wall, 4), "goal": 0.95, "ray_logical_cpus": IN_FLIGHT,
    }
    efficiency["meets_goal"] = efficiency["efficiency"] >= 0.95
    return efficiency


def _ms(seconds: float, n: int) -> float:
    return round(1000.0 * seconds / max(1, n), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000, help="no-op trials for the overhead part (1000)")
    p.add_argument("--overhead-parallel", type=int, default=8, help="no-op trials in flight (8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of 32 sleep trials (3)")
    p.add_argument("--sleep-s", type=float, default=10.0, help="seconds each sleep trial sleeps (10)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the baseline (the same runs over Optuna's own storage)")
    p.add_argument("--output", type=Path, default=RESULT)
    args = p.parse_args(argv)

    ray.init(num_cpus=IN_FLIGHT, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            # warm-up: start the 32 worker processes once (imports included)
            _run(folder, "warmup", IN_FLIGHT, IN_FLIGHT, SleepTrial(2.0))

            storages = (True,) if args.no_baseline else (False, True)  # the baseline first, then the mirror
            overheads = {mirror: _overhead(folder, args, mirror) for mirror in storages}
            in_process = _overhead(folder, args, mirror=True, in_process=True)
            efficiencies = {mirror: _efficiency(folder, args, mirror) for mirror in storages}
            overhead, efficiency = overheads[True], efficiencies[True]
            overhead["in_process"] = {k: in_process[k] for k in (
                "executor", "wall_ms_per_trial", "driver_busy_ms_per_trial", "driver_cpu_ms_per_trial",
                "ask_and_sample_ms_per_trial", "submit_ms_per_trial", "tell_and_report_ms_per_trial",
                "lease_and_capacity_ms_per_trial")}
            if not args.no_baseline:
                plain, plain_e = overheads[False], efficiencies[False]
                overhead["baseline_optuna_storage"] = {k: plain[k] for k in (
                    "wall_ms_per_trial", "driver_busy_ms_per_trial", "driver_cpu_ms_per_trial",
                    "ask_and_sample_ms_per_trial", "tell_and_report_ms_per_trial")}
                ratio = overhead["wall_ms_per_trial"] / plain["wall_ms_per_trial"]
                overhead["ratio_wall_vs_baseline"] = round(ratio, 4)
                efficiency["baseline_optuna_storage"] = {k: plain_e[k] for k in ("wall_s", "efficiency")}
    finally:
        ray.shutdown()

    result = {
        "benchmark": "driver_overhead",
        "measured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "ray": ray.__version__, "optuna": optuna.__version__},
        "overhead": overhead,
        "parallel_efficiency": efficiency,
    }
    write_json_atomic(args.output, result)
    print(f"driver overhead: {overhead['wall_ms_per_trial']:.2f} ms/trial wall, "
          f"{overhead['driver_busy_ms_per_trial']:.2f} ms/trial busy over {args.trials} no-op trials (goal < 20 ms), "
          f"{overhead['in_process']['wall_ms_per_trial']:.2f} ms/trial without Ray; "
          f"parallel efficiency {100 * efficiency['efficiency']:.1f}% with {IN_FLIGHT} sleep trials in flight "
          f"(goal >= 95%)"
          + ("" if args.no_baseline else "; over Optuna's own storage "
             f"{overhead['baseline_optuna_storage']['wall_ms_per_trial']:.2f}"
             f" ms/trial (ratio {overhead['ratio_wall_vs_baseline']:.2f}) and "
             f"{100 * efficiency['baseline_optuna_storage']['efficiency']:.1f}%")
          + f" -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
