"""Commands the tool prints for copying work as printed: they carry the user's storage and folders.

Each hint is followed here the way a person would follow it: the printed ``fairfront resume ...``
is split like a shell would and parsed by the real CLI parser, and it must name the storage that
holds the study (else it would open the default database, where the study does not exist).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fairfront.errors import ConfigError
from fairfront.search.cli import build_parser
from fairfront.search.driver import RunOptions, TooManyFailures, run_study
from fairfront.search.hints import command
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.studyfile import parse_study_text

from conftest import noop_trial, placeholder_prepared, tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _options(tmp_path: Path, fn, messages: list[str]) -> RunOptions:
    return RunOptions(storage=f"sqlite:///{tmp_path / 'my runs' / 'x.db'}", cache_dir=tmp_path / "my cache",
                      artifact_dir=tmp_path / "my artifacts", log=messages.append, trial_fn=fn,
                      prepared=placeholder_prepared(), executor=InProcessExecutor(2))


def _printed_resume(text: str) -> list[str]:
    """The ``fairfront resume ...`` command in ``text``, split as a POSIX shell splits it."""
    start = text.index("fairfront resume ")
    words = shlex.split(text[start:].rstrip(")"))
    return words[1:]


def _follows(words: list[str], options: RunOptions, name: str) -> None:
    args = build_parser().parse_args(words)
    assert (args.command, args.study) == ("resume", name)
    assert args.storage == options.storage
    assert Path(args.cache_dir) == options.cache_dir and Path(args.artifact_dir) == options.artifact_dir


def test_command_names_the_storage_and_only_the_folders_that_are_not_defaults() -> None:
    assert command("status", "s", storage="sqlite:///a.db") == "fairfront status s --storage sqlite:///a.db"
    assert command("resume", "s", storage="sqlite:///a.db", artifact_dir=Path("studies/artifacts"),
                   cache_dir=Path("studies/cache")) == "fairfront resume s --storage sqlite:///a.db"
    assert shlex.split(command("resume", "s", storage="u", cache_dir=Path("a b"))) == \
        ["fairfront", "resume", "s", "--storage", "u", "--cache-dir", "a b"]


def test_the_existing_study_hint_resumes_the_study_where_it_is(tmp_path) -> None:
    sf = parse_study_text(tiny_study_text("hinted", n_trials=2), base_dir=tmp_path)
    options = _options(tmp_path, noop_trial, [])
    run_study(sf, options)
    with pytest.raises(ConfigError) as refused:
        run_study(sf, _options(tmp_path, noop_trial, []))
    _follows(_printed_resume(str(refused.value)), options, "hinted")


def _always_fails(prepared, spec, *, device=None, threads=None):
    raise RuntimeError(f"trial with seed {spec.seed} is broken")


def test_the_stopped_driver_hint_resumes_the_study_where_it_is(tmp_path) -> None:
    text = tiny_study_text("stopped", n_trials=10) + "max_failed_trials = 2\n"  # [execution] is the last table
    messages: list[str] = []
    options = _options(tmp_path, _always_fails, messages)
    with pytest.raises(TooManyFailures):
        run_study(parse_study_text(text, base_dir=tmp_path), options)
    recorded = [m for m in messages if "recorded for resume" in m]
    assert recorded, messages
    _follows(_printed_resume(recorded[-1]), options, "stopped")
