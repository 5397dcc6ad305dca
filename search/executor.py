"""Running trials on Ray: the driver submits, workers compute, only the driver writes.

Each trial attempt is one Ray task with the study file's CPUs and GPUs (fractional GPUs let
several small trials share one device). The prepared study (tokenized data, teacher weights and
logits) is put into Ray's object store once and passed to every task by reference, so workers on
other nodes fetch it from the object store, never from the driver's disk.

A task never raises: it returns the trial's :class:`~fairfront.objectives.training.trial.TrialOutcome`, or
a :class:`TrialError` whose ``kind`` tells the driver what to do next — ``"oom"`` (CUDA out of
memory: retried once with half the batch size), ``"exception"`` (the trial fails with the reason).
A worker process or node that dies surfaces as a Ray error when the driver fetches the result;
:func:`classify_ray_error` names it, and the driver retries the trial up to ``max_retries`` times.
Ray's own task retries are off, so the driver counts every attempt and records it.

Testing hook (never active unless set): the environment variable ``FAIRFRONT_FAULTS``, read by
the driver when it submits a task and applied by the task wrapper, injects faults that cannot be
produced reliably by hand — a worker killed at a known moment, CUDA out of memory on a machine
without a GPU, a slow trial. It is a ``;``-separated list of ``TRIAL:KIND[=ARG][@N]``: the fault
hits trial number ``TRIAL`` on its first ``N`` attempts (every attempt without ``@N``). Kinds:

========== ================================================================================
``raise``  the trial raises ``RuntimeError("injected fault")``
``nan``    the student's learning rate becomes infinite, so the real training loop meets a
           non-finite loss and raises its own error
``oom``    the trial raises ``torch.cuda.OutOfMemoryError`` (the type a real GPU raises)
``kill``   the worker process kills itself with SIGKILL ``ARG`` seconds (default 0.5) into
           the trial, while the trial runs
``sleep``  the trial sleeps ``ARG`` seconds before it starts (a slow trial, for timeouts)
========== ================================================================================

Example: ``FAIRFRONT_FAULTS="0:kill@1;3:oom"`` kills trial 0's first worker (its retry runs
normally) and makes trial 3 run out of memory on every attempt.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import ray

from fairfront.objectives.training.prepare import Prepared, PrepareSpec, compute
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec, run_trial

__all__ = ["start_ray", "TrialError", "TrialFunction", "Fault", "FAULTS_ENV", "parse_faults", "fault_for",
           "submit_trial", "prepare_remote", "trial_capacity", "classify_ray_error", "TrialTask"]

FAULTS_ENV = "FAIRFRONT_FAULTS"
FAULT_KINDS = ("raise", "nan", "oom", "kill", "sleep")

TrialFunction = Callable[..., TrialOutcome]
"""``fn(prepared, spec, *, device, threads) -> TrialOutcome``; :func:`run_trial` for real studies."""


@dataclass
class TrialError:
    """A trial attempt that did not produce an outcome.

    Attributes:
        reason: one line for the user (stored in the trial's ``fail_reason`` attribute).
        traceback: the full traceback or Ray error text.
        kind: ``"exception"``, ``"oom"``, ``"worker_died"``, ``"cancelled"`` or ``"ray"``.
    """

    reason: str
    traceback: str
    kind: str = "exception"


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
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log(f"{where}: {nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return where


def trial_capacity(*, cpus: float, gpus: float) -> int:
    """How many trials of ``cpus`` CPUs and ``gpus`` GPUs fit on the cluster's alive nodes at once.

    Counted node by node (a trial runs on one node), so a 4-CPU trial does not fit two 2-CPU
    nodes. Nodes that join later are counted on the next call.
    """
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        fits = math.floor(res.get("CPU", 0.0) / cpus + 1e-9) if cpus > 0 else 10**9
        if gpus > 0:
            fits = min(fits, math.floor(res.get("GPU", 0.0) / gpus + 1e-9))
        total += max(0, fits)
    return total


@dataclass(frozen=True)
class Fault:
    """One injected fault of the ``FAIRFRONT_FAULTS`` testing hook."""

    trial: int
    kind: str
    arg: float | None = None
    attempts: int | None = None

    def hits(self, number: int, attempt: int) -> bool:
        return number == self.trial and (self.attempts is None or attempt <= self.attempts)


def parse_faults(text: str) -> list[Fault]:
    """Parse ``TRIAL:KIND[=ARG][@N]`` entries separated by ``;``.

    Example:
        >>> parse_faults("0:kill=1@1; 3:oom")
        [Fault(trial=0, kind='kill', arg=1.0, attempts=1), Fault(trial=3, kind='oom', arg=None, attempts=None)]
    """
    faults = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        try:
            number, rest = entry.split(":", 1)
            rest, _, attempts = rest.partition("@")
            kind, _, arg = rest.partition("=")
            fault = Fault(int(number), kind.strip(), float(arg) if arg else None, int(attempts) if attempts else None)
        except ValueError:
            raise ValueError(f"{FAULTS_ENV}: {entry!r} is not TRIAL:KIND[=ARG][@N]") from None
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"{FAULTS_ENV}: {fault.kind!r} is not a fault kind; expected one of "
                             + ", ".join(FAULT_KINDS))
        faults.append(fault)
    return faults


def fault_for(number: int, attempt: int, text: str | None = None) -> Fault | None:
    """The fault injected into attempt ``attempt`` (1-based) of trial ``number``, if any."""
    text = os.environ.get(FAULTS_ENV, "") if text is None else text
    if not text:
        return None
    return next((f for f in parse_faults(text) if f.hits(number, attempt)), None)


def _device_and_threads():
    import torch

    ids = ray.get_gpu_ids() if ray.is_initialized() else []
    device = torch.device("cuda") if ids and torch.cuda.is_available() else torch.device("cpu")
    threads = max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return device, threads


def _inject(fault: Fault, spec: TrialSpec) -> TrialSpec:
    """Apply ``fault`` at the start of an attempt; returns the spec the trial runs with."""
    import torch

    if fault.kind == "raise":
        raise RuntimeError("injected fault")
    if fault.kind == "oom":
        raise torch.cuda.OutOfMemoryError(f"injected: CUDA out of memory with batch size {spec.student.batch_size}")
    if fault.kind == "sleep":
        time.sleep(fault.arg or 0.0)
    if fault.kind == "kill":
        pid = os.getpid()
        threading.Timer(0.5 if fault.arg is None else fault.arg, lambda: os.kill(pid, signal.SIGKILL)).start()
    if fault.kind == "nan":
        return dataclasses.replace(spec, student=dataclasses.replace(spec.student, learning_rate=math.inf))
    return spec


@ray.remote(max_retries=0)
def _trial_task(prepared: Prepared, spec: TrialSpec, fn: TrialFunction, fault: Fault | None) -> TrialOutcome | TrialError:
    import torch

    try:
        device, threads = _device_and_threads()
        if fault is not None:
            spec = _inject(fault, spec)
        outcome = fn(prepared, spec, device=device, threads=threads)
        if fault is not None and fault.kind == "kill":
            time.sleep(3600)  # the trial finished before its injected kill: wait for it
        outcome.attrs["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device),
                                   "node_id": ray.get_runtime_context().get_node_id()}
        outcome.attrs["student_batch_size"] = spec.student.batch_size  # halved after a CUDA out-of-memory
        return outcome
    except torch.cuda.OutOfMemoryError as err:
        return TrialError(f"CUDA out of memory: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": "),
                          traceback.format_exc(), kind="oom")
    except Exception as err:  # noqa: BLE001 - every failure becomes the trial's reason
        return TrialError(f"{type(err).__name__}: {err}", traceback.format_exc())


@ray.remote
def _prepare_task(spec: PrepareSpec) -> Prepared:
    import torch

    device, threads = _device_and_threads()
    torch.set_num_threads(threads)
    return compute(spec, device=device, log=lambda m: print(m, flush=True))


def submit_trial(prepared_ref, spec: TrialSpec, *, cpus: float, gpus: float, number: int | None = None,
                 attempt: int = 1, fn: TrialFunction | ray.ObjectRef = run_trial, max_retries: int = 0):
    """Submit one attempt of a trial; returns the Ray object ref of its outcome.

    Args:
        prepared_ref: the prepared study, put into the object store once by the driver.
        spec: what this trial runs.
        cpus, gpus: Ray resources of the task (fractional GPUs share a device).
        number, attempt: the trial's number and 1-based attempt (used only by the testing hook).
        fn: the trial function, or an object ref of one (:func:`run_trial` for real studies).
        max_retries: Ray-level retries of a dead worker; the driver keeps this 0 and retries itself.
    """
    fault = fault_for(number, attempt) if number is not None else None
    return _trial_task.options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                               retry_exceptions=False).remote(prepared_ref, spec, fn, fault)


def classify_ray_error(err: BaseException) -> TrialError:
    """A Ray error from fetching a trial's result, as a :class:`TrialError` with its ``kind``."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    name = type(err).__name__
    died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)
    if isinstance(err, ray.exceptions.TaskCancelledError):
        return TrialError(f"{name}: the task was cancelled", text, kind="cancelled")
    if isinstance(err, died):
        return TrialError(f"worker died ({name}: {first[:300]})", text, kind="worker_died")
    return TrialError(f"{name}: {first[:300]}", text, kind="ray")


def prepare_remote(spec: PrepareSpec, *, cpus: float, gpus: float) -> Prepared:
    """Compute the prepared study in a Ray task (on a GPU node when the trials use GPUs)."""
    return ray.get(_prepare_task.options(num_cpus=cpus, num_gpus=gpus).remote(spec))


TrialTask = _trial_task
