"""What every benchmark script shares: writing its result file, and naming the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["write_json_atomic", "cpu_model", "gpu_memory", "process_gpu_memory", "UtilisationSampler", "NO_CUDA"]

NO_CUDA = "no CUDA device: nothing measured"
"""What a GPU benchmark says, and exits 1 with, on a machine without one."""


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` atomically: a temporary file in the same folder, then
    ``os.replace``, so an interrupted run never leaves half a result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi(query: str, flag: str = "--query-gpu") -> list[list[str]]:
    """Rows of ``nvidia-smi`` CSV output for ``query`` (GPU 0 first); empty where it cannot run."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"{flag}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_memory() -> dict | None:
    """GPU 0's name and memory (bytes) as ``nvidia-smi`` reports it; None without a GPU."""
    rows = _nvidia_smi("name,memory.total,memory.used,memory.free")
    if not rows:
        return None
    name, total, used, free = rows[0][:4]
    mib = 1024 ** 2
    return {"name": name, "total": int(float(total)) * mib, "used": int(float(used)) * mib,
            "free": int(float(free)) * mib}


def process_gpu_memory(pid: int) -> int | None:
    """Bytes of GPU memory ``nvidia-smi`` attributes to process ``pid`` (its CUDA context included)."""
    for row in _nvidia_smi("pid,used_memory", "--query-compute-apps"):
        if len(row) >= 2 and row[0] == str(pid):
            return int(float(row[1])) * 1024 ** 2
    return None


class UtilisationSampler:
    """GPU 0's utilisation (%) and memory used, sampled by ``nvidia-smi`` every ``interval_s`` in a thread.

    ``summary(t0, t1)`` describes the samples taken between two ``time.monotonic()`` readings, so
    one sampler running for a whole script can say how busy the GPU was in each of its parts.
    """

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []  # (monotonic time, utilisation %, MiB used)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = _nvidia_smi("utilization.gpu,memory.used")
            if rows:
                try:
                    self.samples.append((time.monotonic(), float(rows[0][0]), float(rows[0][1])))
                except ValueError:  # "[N/A]" on a GPU that does not report it
                    pass
            self._stop.wait(self.interval_s)

    def summary(self, t0: float = float("-inf"), t1: float = float("inf")) -> dict:
        window = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not window:
            return {"samples": 0, "note": "not sampled (no nvidia-smi reading in this interval)"}
        util = [u for u, _ in window]
        return {"samples": len(window), "interval_s": self.interval_s, "utilisation_mean_pct": statistics.fmean(util),
                "utilisation_median_pct": statistics.median(util), "utilisation_max_pct": max(util),
                "memory_used_max_mib": max(m for _, m in window)}
