"""Running trials on Ray: the driver submits, workers compute, only the driver writes.

Each trial attempt is one Ray task with the study file's CPUs and GPUs (fractional GPUs let
several small trials share one device). The prepared study (tokenized data, teacher weights and
logits) is put into Ray's object store once and passed to every task by reference, so workers on
other nodes fetch it from the object store, never from the driver's disk.

A task never raises: it returns the trial's :class:`~fairfront.objectives.training.trial.TrialOutcome`, or
a :class:`~fairfront.search.executor.TrialError` whose ``kind`` tells the driver what to do next.
A worker process or node that dies surfaces as a Ray error when the driver fetches the result;
:func:`classify_ray_error` names it, and the driver retries the trial up to ``max_retries`` times.
Ray's own task retries are off, so the driver counts every attempt and records it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import ray

from fairfront.errors import ConfigError, DataError
from fairfront.objectives.training.prepare import Prepared, PrepareSpec, compute
from fairfront.objectives.training.trial import TrialOutcome, TrialSpec
from fairfront.search.executor import Finished, Handle, TrialError, TrialFunction, run_attempt, trial_error

if TYPE_CHECKING:
    from fairfront.search.studyfile import Execution

__all__ = ["RayExecutor", "start_ray", "trial_capacity", "classify_ray_error", "prepare_remote"]


class RayExecutor:
    """Trial attempts as Ray tasks on a cluster that nodes may join and leave.

    Args:
        address: the cluster to join; None joins ``RAY_ADDRESS`` if set, or starts a local cluster
            (on which a trial larger than this machine is a configuration error, since no node
            will join).
    """

    name = "the Ray cluster"

    def __init__(self, address: str | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def start(self, execution: Execution, log: Callable[[str], None]) -> None:
        start_ray(self.address, log=log)
        if self.address is None:
            _check_fits_locally(execution)

    def prepare(self, spec: PrepareSpec, execution: Execution, log: Callable[[str], None]) -> Prepared:
        """On a GPU node when the trials use GPUs, with the CPUs the trials in flight would have."""
        cluster_cpus = ray.cluster_resources().get("CPU", 1)
        cpus = max(1.0, min(cluster_cpus, execution.cpus_per_trial * execution.parallel))
        gpus = 1.0 if execution.gpus_per_trial > 0 else 0.0
        log(f"preparing the study once (data, dense teacher, teacher logits) with {cpus:g} CPUs, {gpus:g} GPUs")
        return prepare_remote(spec, cpus=cpus, gpus=gpus)

    def capacity(self, *, cpus: float, gpus: float) -> int:
        return trial_capacity(cpus=cpus, gpus=gpus)

    def put(self, value: object) -> ray.ObjectRef:
        """Into the object store: every worker, on any node, reads it from there."""
        return ray.put(value)

    def submit(self, prepared: Handle, fn: Handle, spec: TrialSpec, *, cpus: float, gpus: float, number: int,
               attempt: int) -> ray.ObjectRef:
        """One task; ``number`` and ``attempt`` are not needed here (the driver records attempts)."""
        del number, attempt
        return _trial_task.options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                   retry_exceptions=False).remote(prepared, spec, fn)

    def wait(self, tickets: Sequence[ray.ObjectRef], timeout: float) -> list[Finished]:
        refs = list(tickets)
        if not refs:
            return []
        done, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if done and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        return [(ref, self._fetch(ref)) for ref in done]

    def cancel(self, ticket: ray.ObjectRef) -> None:
        ray.cancel(ticket, force=True)

    def classify(self, err: BaseException) -> TrialError:
        if isinstance(err, ray.exceptions.RayError):
            return classify_ray_error(err)
        return trial_error(err, "".join(traceback.format_exception(err)))

    def _fetch(self, ref: ray.ObjectRef) -> TrialOutcome | TrialError:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:  # worker or node died, task cancelled, ...
            return self.classify(err)


def start_ray(address: str | None, *, num_cpus: int | None = None, log=print) -> str:
    """Join ``address`` (or ``RAY_ADDRESS``) or start a local cluster; returns a description.

    A local cluster is one machine that no node will join, so all its processes (driver, GCS,
    raylet, agents, workers) listen on 127.0.0.1 only, and Ray's dashboard is not started. Its
    token authentication is off unless ``RAY_AUTH_MODE`` says otherwise; joining a cluster leaves
    ``RAY_AUTH_MODE`` and the token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``) to the user.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "already connected"
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        where = f"joined Ray cluster at {address}"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        with _loopback_node():
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
        where = "started a local Ray cluster"
        node_ip = ray.util.get_node_ip_address()
        if not ipaddress.ip_address(node_ip).is_loopback:
            log(f"warning: the local Ray cluster listens on {node_ip}, not only on 127.0.0.1 (this Ray version "
                "cannot be bound to loopback)")
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log(f"{where}: {nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return where


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """A new local Ray node whose address is 127.0.0.1, so each of its servers listens on loopback only.

    Ray replaces a node address of 127.0.0.1 given to ``ray.init`` with the machine's network
    address unless it runs single-machine clusters only (its ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    setting, the default on macOS and Windows). That setting is read when Ray is imported, so it is
    switched on Ray's constants while the node starts, and back afterwards (a later ``ray.init``
    joining a remote cluster must advertise a reachable address).
    """
    from ray._private import ray_constants

    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


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


def _check_fits_locally(execution: Execution) -> None:
    """On a local cluster nothing will join: a trial larger than this machine is a configuration error."""
    ex = execution
    if trial_capacity(cpus=ex.cpus_per_trial, gpus=ex.gpus_per_trial) == 0:
        res = ray.cluster_resources()
        key, have = (("gpus_per_trial", res.get("GPU", 0.0)) if ex.gpus_per_trial > res.get("GPU", 0.0)
                     else ("cpus_per_trial", res.get("CPU", 0.0)))
        raise ConfigError(f"execution.{key}", getattr(ex, key), f"at most the {have:g} the local Ray cluster has "
                          "(join a larger cluster with --ray-address)")


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
    """Compute the prepared study in a Ray task (on a GPU node when the trials use GPUs).

    A bad study file or bad data found in the task is raised here as the user's own error (one
    line), not as Ray's wrapper, whose text is the remote traceback with terminal colour codes.
    """
    try:
        return ray.get(_prepare_task.options(num_cpus=cpus, num_gpus=gpus).remote(spec))
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, (ConfigError, DataError)):
            raise cause.with_traceback(None) from None
        raise


def _device_and_threads():
    import torch

    ids = ray.get_gpu_ids() if ray.is_initialized() else []
    device = torch.device("cuda") if ids and torch.cuda.is_available() else torch.device("cpu")
    threads = max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return device, threads


@ray.remote(max_retries=0)
def _trial_task(prepared: Prepared, spec: TrialSpec, fn: TrialFunction) -> TrialOutcome | TrialError:
    try:
        device, threads = _device_and_threads()
    except Exception as err:  # noqa: BLE001 - the trial fails with the reason
        return trial_error(err, traceback.format_exc())

    def worker() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device),
                "node_id": ray.get_runtime_context().get_node_id()}

    return run_attempt(fn, prepared, spec, device=device, threads=threads, worker=worker)


@ray.remote
def _prepare_task(spec: PrepareSpec) -> Prepared:
    import torch

    device, threads = _device_and_threads()
    torch.set_num_threads(threads)
    return compute(spec, device=device, log=lambda m: print(m, flush=True))
