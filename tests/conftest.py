"""Shared helpers: a tiny study file, and the CLI run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairfront.search.tiny_study import tiny_study_text as tiny_study_text  # the test modules import it from here

REPO = Path(__file__).resolve().parents[1]
FAIRFRONT = str(Path(sys.executable).parent / "fairfront")


def noop_trial(prepared, spec, *, device=None, threads=None):
    """A trial that trains nothing: three values from the trial's seed (what the driver's tests need)."""
    from fairfront.objectives.training.trial import TrialOutcome

    x = (spec.seed * 0.6180339887) % 1.0
    return TrialOutcome([x, 1000.0 * (1.0 - x) + 1.0, abs(0.5 - x)], {"echo_seed": spec.seed})


def failing_on_odd_seeds(prepared, spec, *, device=None, threads=None):
    """:func:`noop_trial`, except that trials with an odd seed raise."""
    if spec.seed % 2 == 1:
        raise ValueError(f"odd seed {spec.seed}")
    return noop_trial(prepared, spec)


def copy_in_the_nested_layout(study, storage: str, name: str):
    """A copy of ``study`` stored as fairfront stored trials before the record: each trial's nested record
    as its user attributes, no record system attribute, no flat attributes."""
    import optuna

    from fairfront.search.attrs import stored_record

    copy = optuna.create_study(study_name=name, storage=storage, directions=study.directions)
    copy.set_metric_names(study.metric_names)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    for t in study.get_trials(deepcopy=False):
        copy.add_trial(optuna.trial.create_trial(state=t.state, values=t.values, params=t.params,
                                                 distributions=t.distributions, user_attrs=stored_record(t)))
    return copy


def placeholder_prepared():
    """A prepared study with nothing in it, for trials that read nothing from it."""
    from fairfront.objectives.training.prepare import Prepared

    return Prepared(fingerprint="contract", data_name="none", citation="", label_names=("a", "b"), group_names=(),
                    group_is_proxy=False, splits={}, pad_id=0, model_config={}, teacher_state={}, teacher_logits={},
                    teacher_seconds=0.0)


def run_noop_study(folder: Path, name: str = "tiny", *, n_trials: int = 4) -> str:
    """A real study (SQLite in ``folder``, the driver's loop in this process) of :func:`noop_trial`s; its URL."""
    from fairfront.search.driver import RunOptions, run_study
    from fairfront.search.inprocess_executor import InProcessExecutor
    from fairfront.search.studyfile import parse_study_text

    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(parse_study_text(tiny_study_text(name, n_trials=n_trials), base_dir=folder),
              RunOptions(storage=url, cache_dir=folder / "cache", artifact_dir=folder / "artifacts",
                         log=lambda m: None, trial_fn=noop_trial, prepared=placeholder_prepared(),
                         executor=InProcessExecutor(2)))
    return url


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false"})
    return env


def run_cli(args: list[str], cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([FAIRFRONT, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for(predicate, timeout: float, what: str):
    """``predicate()``'s first truthy value, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One prepared-study cache for the whole session: the tiny teacher is trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run faster on one thread, above all on a shared machine (``pytestmark`` it in)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray(request):
    """A 2-CPU Ray cluster in this process, shared with later modules that need one (``pytestmark`` it in).

    The test module and this one are pickled by value: Ray workers cannot import test modules.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        request.config.add_cleanup(ray.shutdown)
    ray.cloudpickle.register_pickle_by_value(request.module)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


POSTGRES_ENV = "FAIRFRONT_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips the test where none is set up (a fresh clone)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a local PostgreSQL server and sets it)")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A storage URL per backend: a new SQLite file, or the shared PostgreSQL database left as it was found."""
    import optuna

    from fairfront.search.storage import open_storage

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'studies' / 'fairfront.db'}"
        return
    url = postgres_url()
    storage = open_storage(url)
    before = {s.study_name for s in storage.get_all_studies()}
    yield url
    for s in storage.get_all_studies():
        if s.study_name not in before:
            optuna.delete_study(study_name=s.study_name, storage=storage)
