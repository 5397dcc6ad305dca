"""Running trials on Ray: the driver submits, workers compute, only the driver writes.

Each trial is one Ray task with the study file's CPUs and GPUs (fractional GPUs let several small
trials share one device). The prepared study (tokenized data, teacher weights and logits) is put
into Ray's object store once, so workers on other nodes get it without reading the driver's disk.
A task catches its own exceptions and returns them as a short reason plus traceback; a worker that
dies is retried by Ray up to ``max_retries`` times before the trial fails.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import ray

from fairfront.objectives.prepare import Prepared, PrepareSpec, compute
from fairfront.objectives.trial import TrialOutcome, TrialSpec, run_trial

__all__ = ["start_ray", "TrialTask", "TrialError", "submit_trial", "prepare_remote"]


@dataclass
class TrialError:
    """A trial that raised: what the user sees (``reason``) and the full traceback."""

    reason: str
    traceback: str


def start_ray(address: str | None, *, num_cpus: int | None = None, log=print) -> str:
    """Join ``address`` (or ``RAY_ADDRESS``) or start a local cluster; returns a description."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "already connected"
    if address:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
        where = f"joined Ray cluster at {address}"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
        where = "started a local Ray cluster"
    res = ray.cluster_resources()
    log(f"{where}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return where


def _device_and_threads():
    import torch

    ids = ray.get_gpu_ids() if ray.is_initialized() else []
    device = torch.device("cuda") if ids and torch.cuda.is_available() else torch.device("cpu")
    threads = max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return device, threads


@ray.remote
def _trial_task(prepared: Prepared, spec: TrialSpec) -> TrialOutcome | TrialError:
    try:
        device, threads = _device_and_threads()
        return run_trial(prepared, spec, device=device, threads=threads)
    except Exception as err:  # noqa: BLE001 - every failure becomes the trial's reason
        return TrialError(f"{type(err).__name__}: {err}", traceback.format_exc())


@ray.remote
def _prepare_task(spec: PrepareSpec) -> Prepared:
    import torch

    device, threads = _device_and_threads()
    torch.set_num_threads(threads)
    return compute(spec, device=device, log=lambda m: print(m, flush=True))


def submit_trial(prepared_ref, spec: TrialSpec, *, cpus: float, gpus: float, max_retries: int):
    """Submit one trial; returns the Ray object ref of its outcome."""
    return _trial_task.options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                               retry_exceptions=False).remote(prepared_ref, spec)


def prepare_remote(spec: PrepareSpec, *, cpus: float, gpus: float) -> Prepared:
    """Compute the prepared study in a Ray task (on a GPU node when the trials use GPUs)."""
    return ray.get(_prepare_task.options(num_cpus=cpus, num_gpus=gpus).remote(spec))


TrialTask = _trial_task
