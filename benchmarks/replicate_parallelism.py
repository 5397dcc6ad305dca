"""Do a trial's replicates run in parallel? Wall time of a 2-replicate trial against a 1-replicate trial.

A study with ``[study] replicates = 2`` submits each trial's two seeds as two Ray tasks. On a
local Ray cluster of 2 CPUs (``cpus_per_trial = 1``, ``parallel = 1``) they should run side by
side, so the replicated trial should take about as long as one replicate: goal at most 1.2x.

What runs: the real driver (``run_study``: SQLite storage, lease, Ray tasks, reports) on the tiny
study of the tests (2-layer hidden-64 BERT, the built-in synthetic occupation task), one trial
per study, its student trained ``--steps`` steps with real ``run_trial``. Replicate 0 of the
2-replicate trial has the same seed and parameters as the 1-replicate trial, so each task does the
same work. A warm-up study first starts Ray's two worker processes. Then ``--repeats`` pairs of
studies, the order of the pair alternating; a trial's wall time is its Optuna start-to-complete
time (from ask to tell). Reported: each time, the medians, their ratio, the machine's load
average before and after, and the CPUs left idle over 5 s before and after (``/proc/stat``): on a
shared machine with fewer than two idle CPUs the two tasks share what is left, and the ratio
measures that machine, not the driver.

Usage::

    .venv/bin/python benchmarks/replicate_parallelism.py             # about two minutes
    .venv/bin/python benchmarks/replicate_parallelism.py --steps 100 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairfront.search.tiny_study import tiny_study_text  # noqa: E402

from _common import cpu_model, write_json_atomic  # noqa: E402


def _study_text(name: str, replicates: int, steps: int) -> str:
    """The tests' tiny study, one trial at a time, its student trained ``steps`` steps on a gradual schedule."""
    return tiny_study_text(name, n_trials=1, parallel=1, student_steps=steps, student_epochs=100.0,
                           replicates=replicates, schedules=["gradual"], fairness_space=False)


def _trial_seconds(folder: Path, name: str, replicates: int, steps: int, prepared) -> float:
    import optuna

    from fairfront.search.driver import RunOptions, run_study
    from fairfront.search.studyfile import parse_study_text

    sf = parse_study_text(_study_text(name, replicates, steps), base_dir=folder)
    storage = f"sqlite:///{folder / 'bench.db'}"
    run_study(sf, RunOptions(storage=storage, cache_dir=folder / "cache", artifact_dir=folder / "artifacts",
                             log=lambda m: None, prepared=prepared))
    (trial,) = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def free_cpus(seconds: float = 5.0) -> float | None:
    """CPUs left idle over ``seconds`` (``/proc/stat``): on a shared machine, what the two tasks can really have."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total (guest time is inside user)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return None
    return (idle1 - idle0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="student training steps per replicate")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of studies (1 and 2 replicates)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "replicate_parallelism.json")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from fairfront.objectives.training.prepare import prepare
    from fairfront.search.studyfile import parse_study_text

    load_before, free_before = os.getloadavg(), free_cpus()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sf = parse_study_text(_study_text("prep", 1, args.steps), base_dir=folder)
        prepared = prepare(sf.prepare_spec, folder / "cache", log=lambda m: None)
        _trial_seconds(folder, "warmup", 2, args.steps, prepared)  # starts both Ray workers
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for k in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                times[k].append(_trial_seconds(folder, f"k{k}-{repeat}", k, args.steps, prepared))
        elapsed = time.perf_counter() - started
    ray.shutdown()
    free_after = free_cpus()
    medians = {k: statistics.median(v) for k, v in times.items()}
    payload = {"question": "wall time of a 2-replicate trial / a 1-replicate trial, 2 CPUs, 1 CPU per task",
               "goal": "<= 1.2", "ratio": medians[2] / medians[1], "median_s": medians, "times_s": times,
               "steps": args.steps, "repeats": args.repeats, "elapsed_s": elapsed,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "free_cpus_before": free_before, "free_cpus_after": free_after,
               "machine": {"cpu": cpu_model(), "cpus": os.cpu_count()}}
    write_json_atomic(args.out, payload)
    print(f"2 replicates / 1 replicate: {payload['ratio']:.2f}x (medians {medians[1]:.1f} s, {medians[2]:.1f} s; "
          f"load {load_before[0]:.1f} -> {payload['load_average_after'][0]:.1f}, idle CPUs {free_before} -> "
          f"{free_after}) -> {args.out}")


if __name__ == "__main__":
    main()
