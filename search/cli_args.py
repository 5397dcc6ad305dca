"""The ``fairfront`` command line's arguments: every command, its options and their help.

Every command takes the same three places, ``--storage``, ``--cache-dir`` and ``--artifact-dir``,
so one option string works with all of them (a shell alias, a copied line); a command that does
not read one of them accepts it and says in its ``--help`` that it ignores it. Nothing here
imports more than the standard library: ``--help`` and a bad argument answer at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from fairfront import __version__

__all__ = ["DEFAULT_STORAGE", "FRONT_FORMATS", "PLACES", "OneLineErrorParser", "build_parser"]

DEFAULT_STORAGE = "sqlite:///studies/fairfront.db"

FRONT_FORMATS = ("table", "csv", "json", "parquet")

PLACES = ("storage", "cache_dir", "artifact_dir")
"""The options every command accepts (as argparse names them)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments give one ``error:`` line, as bad study files do (no usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _places(p: argparse.ArgumentParser, *, ignores: tuple[str, ...] = ()) -> None:
    """``--storage``, ``--cache-dir``, ``--artifact-dir``; those in ``ignores`` are accepted and ignored."""
    def note(place: str) -> str:
        return " (accepted and ignored by this command, so one option string works with every command)" \
            if place in ignores else ""

    p.add_argument("--storage", default=os.environ.get("FAIRFRONT_STORAGE", DEFAULT_STORAGE),
                   help=f"Optuna storage URL (default: $FAIRFRONT_STORAGE or {DEFAULT_STORAGE})" + note("storage"))
    p.add_argument("--cache-dir", type=Path, default=Path("studies/cache"),
                   help="where prepared studies (teacher, logits, tokenized data) are cached (default: studies/cache)"
                   + note("cache_dir"))
    p.add_argument("--artifact-dir", type=Path, default=Path("studies/artifacts"),
                   help="where per-trial reports are stored as Optuna artifacts (default: studies/artifacts)"
                   + note("artifact_dir"))


def _ray_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto' or HOST:PORT); default: $RAY_ADDRESS, else start a local one")


def _execution_args(p: argparse.ArgumentParser) -> None:
    _places(p)
    p.add_argument("--n-trials", type=_positive_int, default=None,
                   help="number of COMPLETE trials to reach (overrides the study file)")
    _ray_address(p)


def _whole_number(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (``expected`` says so in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: expected {expected} >= {minimum}")
        return value

    return parse


_positive_int = _whole_number(1, "a whole number")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not allowed: expected a finite number >= 0")
    return value
_trial_number = _whole_number(0, "a trial number")


def _run_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="create a study from a study file and run it",
                       description="Validate the study file, prepare the dense teacher once (cached), create the "
                       "study and run trials on Ray until it has n_trials COMPLETE trials; then print the Pareto "
                       "front.")
    p.add_argument("study_file", type=Path, help="the study file (.toml)")
    _execution_args(p)
    p = sub.add_parser("resume", help="continue an interrupted study",
                       description="Mark trials left RUNNING by a dead driver as FAIL, enqueue their parameters "
                       "again, and run until the study has its requested number of COMPLETE trials. A study that "
                       "already has them is left as it is (nothing starts); --n-trials M asks for more.")
    p.add_argument("study", help="the study name")
    _execution_args(p)


def _read_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="trials by state and the best trade-offs so far")
    p.add_argument("study", help="the study name")
    _places(p, ignores=("cache_dir", "artifact_dir"))
    p = sub.add_parser("front", help="the Pareto front as a table, CSV, JSON or Parquet")
    p.add_argument("study", help="the study name")
    _places(p, ignores=("cache_dir", "artifact_dir"))
    p.add_argument("--format", choices=FRONT_FORMATS, default="table",
                   help="output format: table (text), or every column (test-split values, intervals, parameters) "
                   "as csv, json or parquet (parquet needs --out)")
    p.add_argument("--out", type=Path, default=None, help="write to this file instead of standard output")
    p.add_argument("--robust", action="store_true", help="the noise-aware front: trials no other trial beats by "
                   "more than the measurement uncertainty, each with its probability of being non-dominated")
    p.add_argument("--z", type=_non_negative, default=1.96, help="with --robust: the margin, in combined standard "
                   "errors, a difference must exceed (default: 1.96)")
    p.add_argument("--all", action="store_true", help="in a study with [constraints], every COMPLETE trial "
                   "competes (default: the feasible front)")
    p = sub.add_parser("report", help="the study as one self-contained HTML file of plots",
                       description="Write one HTML file (plotly.js embedded: it opens offline) with the front in "
                       "2-D and 3-D, the hypervolume history, per-group rates and bias against size per "
                       "compression family. Reads the storage; writes nothing to it.")
    p.add_argument("study", help="the study name")
    _places(p, ignores=("cache_dir", "artifact_dir"))
    p.add_argument("--out", type=Path, default=None, help="the HTML file (default: studies/reports/NAME.html)")
    p = sub.add_parser("validate", help="check a study file without running it")
    p.add_argument("study_file", type=Path)
    _places(p, ignores=PLACES)


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write one trial's compressed model as a transformers folder",
                       description="Make a COMPLETE trial's compressed model again (the teacher from the prepared "
                       "cache, the trial's parameters and seed) and write a folder that transformers' "
                       "AutoModelForSequenceClassification and AutoTokenizer load without fairfront, with a "
                       "model card.")
    p.add_argument("study", help="the study name")
    p.add_argument("--trial", type=_trial_number, required=True, metavar="N", help="the trial's number")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (new, or empty)")
    _places(p, ignores=("artifact_dir",))


def _confirm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("confirm", help="train the front's trials again on fresh seeds, scored on the test split",
                       description="Make each front trial's compressed model again with K seeds the study never "
                       "trained with, score it on the test split, and store each result in the study as it "
                       "finishes (a rerun runs only what is missing). front and status then show each objective's "
                       "mean and t-based 95% CI across the seeds.")
    p.add_argument("study", help="the study name")
    p.add_argument("--seeds", type=_positive_int, required=True, metavar="K", help="fresh seeds per trial")
    p.add_argument("--top", type=_positive_int, default=None, metavar="N",
                   help="only the N front trials of largest crowding distance (default: the whole front)")
    _places(p, ignores=("artifact_dir",))
    _ray_address(p)


def _explain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="where the bias of the study's compressed models comes from",
                       description="Rank the parameters by importance for every objective, show how the bias "
                       "objectives move with the strongest ones and which classes and groups lose against the "
                       "teacher as size shrinks; with --trial, ablate every attention head and feed-forward block "
                       "of the trial's model and of the teacher; with --exemplars, write the compression-identified "
                       "exemplars. The results are stored with the study.")
    p.add_argument("study", help="the study name")
    p.add_argument("--trial", type=_trial_number, default=None, metavar="N",
                   help="also ablate this COMPLETE trial's model (made again as export makes it) and the teacher")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--evaluator", choices=("ped_anova", "fanova"), default="ped_anova",
                   help="Optuna importance evaluator (default: ped_anova)")
    p.add_argument("--exemplars", type=Path, default=None, metavar="FILE",
                   help="write the CIEs of --trial (or of the front) to FILE (.csv or .jsonl)")
    p.add_argument("--resamples", type=_positive_int, default=200,
                   help="paired bootstrap resamples per ablated component (default: 200)")
    _places(p)


def _dashboard_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open optuna-dashboard on the study storage (127.0.0.1)")
    _places(p, ignores=("cache_dir",))
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=8080, help="port (default: 8080)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="fairfront", description="Trace the accuracy-size-bias Pareto front of "
                                     "compressed NLP models.")
    parser.add_argument("--version", action="version", version=f"fairfront {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_parsers(sub)
    _read_parsers(sub)
    _export_parser(sub)
    _confirm_parser(sub)
    _explain_parser(sub)
    _dashboard_parser(sub)
    return parser
