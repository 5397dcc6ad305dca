"""Every GPU figure in one go, on one GPU, each part under its own time limit, into one JSON file.

Made for a GPU machine lent for a few minutes: start it, run this once, read the JSON. The parts:

1. ``compression`` — ``compression_loop.py`` (300 steps, 2 repeats, ``--cuda-graphs auto``):
   fairfront's trial against the Trainer baseline (the GPU goal is at most 0.4x its wall time) and
   the floor (the bare step), with the step mode each trial ran in (``cuda graphs (N bucket(s)
   captured)`` when the capture worked).
2. ``packing`` — ``gpu_packing.py``: trials per hour at 1, 2, 4 and 8 trials per GPU (memory
   checked before packing), then the wall time of a 50-trial demo study (MiniLM) at the best packing.
3. ``compression_eager`` — part 1 again with ``--cuda-graphs off`` (1 repeat, no warm-up run):
   what the graphs themselves change. It runs last, only with the time left.

Each part is a subprocess; its limit is the smaller of its share and what is left of ``--budget-s``
(a part that overruns is stopped and recorded as ``timed out``, with the headline of what it saved
so far; the parts after it still run while time is left). ``nvidia-smi`` is sampled every second
throughout and summarised per part. The result, named after the card
(``benchmarks/results/gpu_run_<card>.json``), holds each part's exit status, seconds, headline
figures read from its own JSON file (also kept in ``benchmarks/results/``), and the last lines of
its output.

Without a GPU it prints ``no CUDA device: nothing measured`` and exits 1. ``--cpu-smoke`` runs the
same parts with tiny sizes on the CPU to check the path end to end; it writes to the temp folder,
never to ``benchmarks/results/``, and produces no GPU figure.

Usage::

    python benchmarks/gpu_run.py                       # about 9 minutes at most (--budget-s 540)
    python benchmarks/gpu_run.py --budget-s 300 --cache studies/cache
    python benchmarks/gpu_run.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import NO_CUDA, UtilisationSampler, cpu_model, gpu_memory, write_json_atomic  # noqa: I001 - benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
GOAL_RATIO = 0.4
"""On the GPU: fairfront's trial at most 0.4x the Trainer baseline's wall time."""


def parts(smoke: bool, cache: Path, results: Path) -> list[dict]:
    """The parts in order: name, command, share of the budget, and the JSON file it writes."""
    loop = [sys.executable, str(HERE / "compression_loop.py"), "--cache", str(cache)]
    loop_args = ["--quick", "--steps", "3"] if smoke else ["--steps", "300", "--repeats", "2"]
    packing = [sys.executable, str(HERE / "gpu_packing.py"), "--cache", str(cache)]
    packing_args = ["--cpu-smoke"] if smoke else ["--packings", "1,2,4,8", "--study-trials", "50"]
    # no warm-up run here (--quick with explicit sizes): the first part already warmed the card and the cache
    eager_args = ["--quick", "--steps", "3"] if smoke else ["--quick", "--steps", "300", "--repeats", "1"]
    return [
        {"name": "compression", "share": 0.42, "out": results / "compression_loop_cuda_graphs.json",
         "command": [*loop, *loop_args, "--cuda-graphs", "auto"]},
        {"name": "packing", "share": 0.42, "out": results / "gpu_packing.json", "command": [*packing, *packing_args]},
        {"name": "compression_eager", "share": 0.16, "out": results / "compression_loop_cuda_eager.json",
         "command": [*loop, *eager_args, "--cuda-graphs", "off"]},
    ]


def run_part(part: dict, limit_s: float, sampler: UtilisationSampler) -> dict:
    """Run one part as a subprocess under ``limit_s``; what it did, and its result file's headline."""
    command = [*part["command"], "--out", str(part["out"])]
    t0, started = time.monotonic(), time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, cwd=HERE.parent)
        rc, output, status = done.returncode, done.stdout + done.stderr, "ok" if done.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as err:
        rc, status = None, "timed out"
        output = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                         for x in (err.stdout, err.stderr))
    seconds = time.monotonic() - t0
    record = {"name": part["name"], "status": status, "returncode": rc, "seconds": seconds, "limit_s": limit_s,
              "command": " ".join(command), "utilisation": sampler.summary(t0, time.monotonic()),
              "output_tail": output.splitlines()[-15:]}
    if part["out"].is_file() and part["out"].stat().st_mtime >= started:  # this run's file, maybe partial
        record["headline"] = headline(json.loads(part["out"].read_text(encoding="utf-8")))
    print(f"gpu_run: {part['name']}: {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return record


def headline(result: dict) -> dict:
    """The figures a reader looks for first in a part's result file."""
    if result.get("benchmark") == "compression_loop":
        modes = sorted({run["ours"].get("step_mode") or "?" for s in result["settings"] for run in s["runs"]})
        return {"ratio_vs_trainer": result["ratio_geometric_mean"], "goal_ratio": GOAL_RATIO,
                "goal_met": result["ratio_geometric_mean"] <= GOAL_RATIO and result["equal_accuracy_within_2se"],
                "train_ratio": result["train_ratio_geometric_mean"],
                "floor_train_ratio": result["floor_train_ratio_geometric_mean"],
                "equal_accuracy_within_2se": result["equal_accuracy_within_2se"], "cuda_graphs": result["cuda_graphs"],
                "step_modes": modes, "steps": result["steps"], "repeats": result["repeats"]}
    levels = {str(x["per_gpu"]): round(x["trials_per_hour"], 1) for x in result.get("levels", [])}
    return {"finished": result.get("finished"), "trials_per_hour_by_trials_per_gpu": levels,
            "refused_trials_per_gpu": [x["per_gpu"] for x in result.get("refused", [])],
            "study": result.get("study_run"), "probe": result.get("probe")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall time for all parts (default 540)")
    parser.add_argument("--cache", type=Path, default=HERE.parent / "studies" / "cache", help="prepared-study cache")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU; output in the temp folder")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 1
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {cpu_model()}"
    results = Path(tempfile.mkdtemp(prefix="fairfront-gpu-run-")) if args.cpu_smoke else HERE / "results"
    deadline = time.monotonic() + args.budget_s
    payload = {"benchmark": "gpu_run", "created": _dt.datetime.now().isoformat(timespec="seconds"), "card": card,
               "cpu_smoke": args.cpu_smoke, "torch": torch.__version__, "cuda": torch.version.cuda,
               "memory": gpu_memory(), "budget_s": args.budget_s, "parts": []}
    with UtilisationSampler() as sampler:
        for part in parts(args.cpu_smoke, args.cache, results):
            left = deadline - time.monotonic()
            if left < 30:
                payload["parts"].append({"name": part["name"], "status": "skipped: no time left"})
                continue
            payload["parts"].append(run_part(part, min(left, max(60.0, part["share"] * args.budget_s)), sampler))
        payload["utilisation_whole_run"] = sampler.summary()
    slug = re.sub(r"[^a-z0-9]+", "_", card.lower()).strip("_")
    out = results / f"gpu_run_{slug}.json"
    write_json_atomic(out, payload)
    print(f"gpu_run: {card}: " + "; ".join(f"{p['name']} {p['status']}" for p in payload["parts"]) + f" -> {out}",
          file=sys.stderr)
    return 0 if all(p["status"] == "ok" for p in payload["parts"]) else 3


if __name__ == "__main__":
    sys.exit(main())
