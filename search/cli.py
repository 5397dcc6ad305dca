"""The ``fairfront`` command line.

Commands: ``run FILE``, ``resume NAME``, ``status NAME``, ``front NAME``, ``report NAME``,
``validate FILE`` and ``dashboard``. Bad input prints one ``error:`` line and exits with status 2, before anything is
written to storage. An interrupted run (Ctrl-C, SIGTERM) exits with 130 after recording its
in-flight trials for ``resume``; more failed trials than ``max_failed_trials`` exit with 1; a study
that another live driver is running exits with 3, naming that driver, and so does a driver that
lost its lease while it was stopped; a storage fault (disk full, I/O error, read-only, a deleted
SQLite file) exits with 1 and one line.

``export NAME --trial N --out DIR`` writes one trial's model as a transformers folder
(:mod:`fairfront.search.export`); ``explain NAME`` says where the study's bias comes from
(:mod:`fairfront.search.explain`).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from fairfront import __version__
from fairfront.errors import ConfigError, DataError

if TYPE_CHECKING:
    import optuna

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
    _report_parser(sub)

    _export_parser(sub)
    _explain_parser(sub)

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
    _storage_arg(p)
    p.add_argument("--cache-dir", type=Path, default=Path("studies/cache"),
                   help="where prepared studies are cached (default: studies/cache)")
    p.add_argument("--artifact-dir", type=Path, default=Path("studies/artifacts"),
                   help="where the full results are stored as an Optuna artifact (default: studies/artifacts)")


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
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "export":
        return _export(args)
    if args.command == "explain":
        return _explain(args)
    if args.command == "validate":
        from fairfront.search.studyfile import load_study_file

        sf = load_study_file(args.study_file)
        print(f"{args.study_file}: valid study {sf.study.name!r} ({sf.study.n_trials} trials, "
              f"sampler {sf.study.sampler}, objectives {', '.join(sf.objectives.names)})")
        return 0
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


def _run(args: argparse.Namespace) -> int:
    from fairfront.search import driver, hints, report
    from fairfront.search.lease import LeaseHeld, LeaseLost
    from fairfront.search.studyfile import load_study_file

    options = driver.RunOptions(storage=args.storage, n_trials=args.n_trials, ray_address=args.ray_address,
                                cache_dir=args.cache_dir, artifact_dir=args.artifact_dir, log=_log)
    try:
        if args.command == "run":
            sf = load_study_file(args.study_file)
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
    from fairfront.search import report

    if args.out is None:
        print(report.front_text(study, args.format), end="")
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "parquet":
            from fairfront.search.front_data import front_frame

            front_frame(study).to_parquet(args.out, index=False)
        else:
            args.out.write_text(report.front_text(study, args.format), encoding="utf-8")
    except OSError as err:
        raise ConfigError("--out", message=f"cannot write {args.out}: {err.strerror or err}") from None
    print(args.out)
    return 0


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


def _explain(args: argparse.Namespace) -> int:
    from fairfront.search.explain import ExplainOptions, explain
    from fairfront.search.explain.text import render
    from fairfront.search.storage import require_existing

    require_existing(args.storage)
    options = ExplainOptions(storage=args.storage, cache_dir=args.cache_dir, artifact_dir=args.artifact_dir,
                             trial=args.trial, evaluator=args.evaluator, exemplars=args.exemplars,
                             resamples=args.resamples, log=_progress)
    try:
        record = explain(args.study, options)
    except KeyboardInterrupt:
        print("interrupted: nothing was stored", file=sys.stderr, flush=True)
        return 130
    print(render(record, args.format), end="", flush=True)
    return 0


def _progress(message: str) -> None:
    """Progress goes to standard error, so ``--format json`` output stays one document."""
    print(message, file=sys.stderr, flush=True)


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
