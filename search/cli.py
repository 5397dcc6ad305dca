"""The ``fairfront`` command line.

Commands: ``run FILE``, ``resume NAME``, ``status NAME``, ``front NAME``, ``report NAME``,
``validate FILE`` and ``dashboard``. Bad input prints one ``error:`` line and exits with status 2, before anything is
written to storage. An interrupted run (Ctrl-C, SIGTERM) exits with 130 after recording its
in-flight trials for ``resume``; more failed trials than ``max_failed_trials`` exit with 1; a study
that another live driver is running exits with 3, naming that driver, and so does a driver that
lost its lease while it was stopped; a storage fault (disk full, I/O error, read-only, a deleted
SQLite file) exits with 1 and one line.

``export NAME --trial N --out DIR`` writes one trial's model as a transformers folder
(:mod:`fairfront.search.export`).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fairfront import __version__
from fairfront.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from fairfront.search.front_data import RobustFront
    from fairfront.search.studyfile import StudyFile

DEFAULT_STORAGE = "sqlite:///studies/fairfront.db"


def _log(message: str) -> None:
    print(message, flush=True)


class _Parser(argparse.ArgumentParser):
    """Bad arguments give one ``error:`` line, as bad study files do (no usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("FAIRFRONT_STORAGE", DEFAULT_STORAGE),
                   help=f"Optuna storage URL (default: $FAIRFRONT_STORAGE or {DEFAULT_STORAGE})")


def _execution_args(p: argparse.ArgumentParser) -> None:
    _storage_arg(p)
    p.add_argument("--n-trials", type=_positive_int, default=None,
                   help="number of COMPLETE trials to reach (overrides the study file)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join ('auto' or HOST:PORT); default: $RAY_ADDRESS, else start a local one")
    p.add_argument("--cache-dir", type=Path, default=Path("studies/cache"),
                   help="where prepared studies (teacher, logits, tokenized data) are cached (default: studies/cache)")
    p.add_argument("--artifact-dir", type=Path, default=Path("studies/artifacts"),
                   help="where per-trial reports are stored as Optuna artifacts (default: studies/artifacts)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: expected a whole number >= 1")
    return value


FRONT_FORMATS = ("table", "csv", "json", "parquet")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not allowed: expected a finite number >= 0")
    return value


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the study as one self-contained HTML file of plots",
                       description="Write one HTML file (plotly.js embedded: it opens offline) with the front in "
                       "2-D and 3-D, the hypervolume history, per-group rates and bias against size per "
                       "compression family. Reads the storage; writes nothing to it.")
    p.add_argument("study", help="the study name")
    _storage_arg(p)
    p.add_argument("--out", type=Path, default=None, help="the HTML file (default: studies/reports/NAME.html)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fairfront", description="Trace the accuracy-size-bias Pareto front of "
                                     "compressed NLP models.")
    parser.add_argument("--version", action="version", version=f"fairfront {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="create a study from a study file and run it",
                       description="Validate the study file, prepare the dense teacher once (cached), create the "
                       "study and run trials on Ray until it has n_trials COMPLETE trials; then print the Pareto "
                       "front.")
    p.add_argument("study_file", type=Path, help="the study file (.toml)")
    _execution_args(p)

    p = sub.add_parser("resume", help="continue an interrupted study",
                       description="Mark trials left RUNNING by a dead driver as FAIL, enqueue their parameters "
                       "again, and run until the study has its requested number of COMPLETE trials.")
    p.add_argument("study", help="the study name")
    _execution_args(p)

    p = sub.add_parser("status", help="trials by state and the best trade-offs so far")
    p.add_argument("study", help="the study name")
    _storage_arg(p)

    p = sub.add_parser("front", help="the Pareto front as a table, CSV, JSON or Parquet")
    p.add_argument("study", help="the study name")
    _storage_arg(p)
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
    _report_parser(sub)

    _export_parser(sub)

    p = sub.add_parser("validate", help="check a study file without running it")
    p.add_argument("study_file", type=Path)

    p = sub.add_parser("dashboard", help="open optuna-dashboard on the study storage (127.0.0.1)")
    _storage_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=8080, help="port (default: 8080)")
    p.add_argument("--artifact-dir", type=Path, default=Path("studies/artifacts"),
                   help="per-trial reports (default: studies/artifacts)")
    return parser


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write one trial's compressed model as a transformers folder",
                       description="Make a COMPLETE trial's compressed model again (the teacher from the prepared "
                       "cache, the trial's parameters and seed) and write a folder that transformers' "
                       "AutoModelForSequenceClassification and AutoTokenizer load without fairfront, with a "
                       "model card.")
    p.add_argument("study", help="the study name")
    p.add_argument("--trial", type=_trial_number, required=True, metavar="N", help="the trial's number")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (new, or empty)")
    _storage_arg(p)
    p.add_argument("--cache-dir", type=Path, default=Path("studies/cache"),
                   help="where prepared studies are cached (default: studies/cache)")


def _trial_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: expected a trial number >= 0")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, DataError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr, flush=True)
        return 2


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _one_line(err: Exception) -> str:
    """The error's first line, without terminal colour codes (an error raised in a Ray task may carry both)."""
    text = _ANSI.sub("", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _validate(args: argparse.Namespace) -> int:
    """Check the study file and read its data (in-process, no Ray): the summary, or one ``error:`` line."""
    from fairfront.objectives.data.preflight import preflight
    from fairfront.search.studyfile import load_study_file

    sf = load_study_file(args.study_file)
    found = None if sf.data is None else preflight(sf.data, sf.objectives.bias)
    print(f"{args.study_file}: valid study {sf.study.name!r} ({sf.study.n_trials} trials, "
          f"sampler {sf.study.sampler}, objectives {', '.join(sf.objectives.names)})")
    if found is not None:
        print(found.classes_line)
        print("\n".join(found.lines))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "export":
        return _export(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "front" and args.format == "parquet" and args.out is None:
        raise ConfigError("--out", message="--format parquet writes a binary file: give --out FILE.parquet (the other "
                          "formats print to standard output without it)")
    if args.command in ("resume", "status", "front", "report"):
        from fairfront.search.storage import require_existing

        require_existing(args.storage)  # before anything is opened: a wrong path creates no empty database
    if args.command in ("run", "resume"):
        return _run(args)
    if args.command in ("status", "front"):
        return _show(args)
    if args.command == "report":
        return _report(args)
    if args.command == "dashboard":
        return _dashboard(args)
    raise AssertionError(args.command)


def _checked_data_log(sf: StudyFile) -> Callable[[str], None]:
    """Check the study's data (one ``error:`` line before a study or cache exists); the log to run with.

    The data's ``classes:`` line is printed with the run's first line, so a run refused later (an
    existing study, a held lease) still prints nothing but its error.
    """
    if sf.data is None:
        return _log
    from fairfront.objectives.data.preflight import preflight

    pending = [preflight(sf.data, sf.objectives.bias).classes_line]

    def log(message: str) -> None:
        while pending:
            _log(pending.pop())
        _log(message)

    return log


def _run(args: argparse.Namespace) -> int:
    from fairfront.search import driver, hints, report
    from fairfront.search.lease import LeaseHeld, LeaseLost
    from fairfront.search.studyfile import load_study_file

    options = driver.RunOptions(storage=args.storage, n_trials=args.n_trials, ray_address=args.ray_address,
                                cache_dir=args.cache_dir, artifact_dir=args.artifact_dir, log=_log)
    try:
        if args.command == "run":
            sf = load_study_file(args.study_file)
            options.log = _checked_data_log(sf)
            study = driver.run_study(sf, options)
        else:
            study = driver.resume_study(args.study, options)
    except driver.Interrupted:
        return 130
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    except driver.TooManyFailures as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except (LeaseHeld, LeaseLost) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    except driver.StorageFault as err:  # disk full, I/O error, read-only, a deleted database file
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    _log("")
    _log(f"Pareto front of {study.study_name!r} ({len(study.best_trials)} non-dominated trials):")
    from fairfront.search.attrs import CLASSES_ATTR, classes_line

    header = classes_line(study.user_attrs.get(CLASSES_ATTR))
    if header:
        _log(header)
    _log(report.front_table(study))
    _log("")
    _log(f"storage:   {args.storage}")
    _log(f"dashboard: {hints.command('dashboard', storage=args.storage, artifact_dir=args.artifact_dir)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from fairfront.search import driver, report

    study = driver.load_study(args.study, args.storage)
    if args.command == "status":
        from fairfront.search.lease import read_lease

        print(report.status_text(study, study.user_attrs.get(driver.N_TRIALS_ATTR)))
        holder = read_lease(study)
        if holder is not None and not holder.released:
            gone = holder.stale_reason()
            print(f"driver: {holder.describe()}" + (f" (gone: {gone})" if gone else ""))
        return 0
    return _front(study, args)


def _front(study: optuna.Study, args: argparse.Namespace) -> int:
    """The front in ``--format``, printed, or written to ``--out`` (then the file's path is printed)."""
    from fairfront.search.front_data import front_frame, robust_front_frame

    feasible_only = not args.all
    robust = robust_front_frame(study, z=args.z, feasible_only=feasible_only) if args.robust else None
    text = _front_text(study, args, robust)
    if args.out is None:
        print(text, end="")
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "parquet":
            frame = robust.frame if robust is not None else front_frame(study, feasible_only=feasible_only)
            frame.to_parquet(args.out, index=False)
        else:
            args.out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError("--out", message=f"cannot write {args.out}: {err.strerror or err}") from None
    print(args.out)
    return 0


def _front_text(study: optuna.Study, args: argparse.Namespace, robust: RobustFront | None) -> str:
    """The front as text in ``--format`` (empty for parquet, which is written from the frame)."""
    from fairfront.search import report
    from fairfront.search.front_data import objectives

    if args.format == "parquet":
        return ""
    if robust is None:
        return report.front_text(study, args.format, feasible_only=not args.all)
    if args.format == "table":
        return report.robust_table(robust, [o.name for o in objectives(study)]) + "\n"
    return report.frame_text(robust.frame, args.format)


def _report(args: argparse.Namespace) -> int:
    """Write the study's HTML report; its path is the last line printed."""
    import re

    from fairfront.search import driver
    from fairfront.search.report_html import write_report

    study = driver.load_study(args.study, args.storage)
    out = args.out or Path("studies/reports") / (re.sub(r"[^A-Za-z0-9._-]", "_", args.study) + ".html")
    try:
        write_report(study, out, storage=args.storage)
    except OSError as err:
        raise ConfigError("--out", message=f"cannot write {out}: {err.strerror or err}") from None
    print(out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from fairfront.search.export import export_trial
    from fairfront.search.storage import require_existing

    require_existing(args.storage)  # a wrong path creates no empty database
    export_trial(args.study, args.trial, args.out, storage=args.storage, cache_dir=args.cache_dir, log=_log)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from fairfront.search.storage import open_storage

    if not _is_loopback(args.host):
        print(f"warning: the dashboard on {args.host} has no authentication: anyone who reaches port {args.port} "
              "can read every study and delete it", file=sys.stderr, flush=True)
    storage = open_storage(args.storage)
    args.artifact_dir.mkdir(parents=True, exist_ok=True)
    _log(f"optuna-dashboard on http://{args.host}:{args.port}/ for {args.storage} (Ctrl-C to stop)")
    try:
        run_server(storage, host=args.host, port=args.port,
                   artifact_store=FileSystemArtifactStore(str(args.artifact_dir)))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        if err.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise ConfigError("--host", message=f"cannot listen on {args.host}:{args.port} ({err.strerror}); choose "
                          "another --port, or an --host of this machine") from None
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


if __name__ == "__main__":
    sys.exit(main())
