"""The GPU benchmark scripts refuse to invent figures: without a GPU they measure nothing and say so.

Their GPU runs need a card (``benchmarks/gpu_run.py``); what is checked here is that a machine
without one gets the one clear line and exit status 1, and that a packing whose estimated memory
exceeds the free memory is refused and recorded, not run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=cli_env())


@no_gpu
@pytest.mark.parametrize("script", ["gpu_run.py", "gpu_packing.py"])
def test_without_a_gpu_nothing_is_measured_and_the_script_says_so(script: str, tmp_path: Path) -> None:
    results = sorted((BENCHMARKS / "results").iterdir())
    done = _run(script, "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "no CUDA device: nothing measured"
    assert sorted((BENCHMARKS / "results").iterdir()) == results and not (tmp_path / "cache").exists()


@no_gpu
def test_a_packing_whose_memory_estimate_exceeds_the_free_memory_is_refused_not_run(tmp_path: Path) -> None:
    out = tmp_path / "packing.json"
    done = _run("gpu_packing.py", "--cpu-smoke", "--packings", "1,2", "--margin", "1e9", "--study-trials", "0",
                "--cache", str(tmp_path / "cache"), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["levels"] == [] and [r["per_gpu"] for r in result["refused"]] == [1, 2]
    per_trial = result["probe"]["per_trial_bytes"]
    assert per_trial > 0
    assert all(r["estimated_bytes"] == int(r["per_gpu"] * per_trial * 1e9) > r["free_bytes"] for r in result["refused"])
    assert "1 per GPU refused: estimated" in done.stderr
