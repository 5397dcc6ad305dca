"""The ``fairfront`` command line.

Commands: ``run FILE``, ``resume NAME``, ``status NAME``, ``front NAME``, ``report NAME``, ``confirm NAME``,
``explain NAME``, ``export NAME``, ``validate FILE`` and ``dashboard``. Bad input prints one ``error:`` line
and exits with status 2, before anything is written to storage. An interrupted run (Ctrl-C, SIGTERM) exits
with 130 after recording its in-flight trials for ``resume``; more failed trials than ``max_failed_trials``
exit with 1; a study that another live driver is running exits with 3, naming that driver, and so does a
driver that lost its lease while it was stopped; a storage fault (disk full, I/O error, read-only, a deleted
SQLite file) exits with 1 and one line.

``export NAME --trial N --out DIR`` writes one trial's model as a transformers folder
(:mod:`fairfront.search.export`). Every command takes ``--storage``, ``--cache-dir`` and
``--artifact-dir`` (:mod:`fairfront.search.cli_args`). The read-only commands and every error
import nothing that runs trials (torch, transformers, Ray): each command imports what it needs
when it runs. ``explain NAME`` says where the study's bias comes from (:mod:`fairfront.search.explain`).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fairfront.errors import ConfigError, DataError
from fairfront.search.cli_args import DEFAULT_STORAGE, build_parser

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from fairfront.search.front_data import RobustFront
    from fairfront.search.options import RunOptions
    from fairfront.search.progress import LiveLine
    from fairfront.search.studyfile import StudyFile

__all__ = ["DEFAULT_STORAGE", "build_parser", "main"]


def _log(message: str) -> None:
    print(message, flush=True)


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
    if args.command == "explain":
        return _explain(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "front" and args.format == "parquet" and args.out is None:
        raise ConfigError("--out", message="--format parquet writes a binary file: give --out FILE.parquet (the other "
                          "formats print to standard output without it)")
    if args.command in ("resume", "status", "front", "report", "confirm"):
        from fairfront.search.storage import require_existing

        require_existing(args.storage)  # before anything is opened: a wrong path creates no empty database
    if args.command in ("run", "resume"):
        return _run(args)
    if args.command in ("status", "front"):
        return _show(args)
    if args.command == "report":
        return _report(args)
    if args.command == "confirm":
        return _confirm(args)
    if args.command == "dashboard":
        return _dashboard(args)
    raise AssertionError(args.command)


def _checked_data_log(sf: StudyFile, base: Callable[[str], None]) -> Callable[[str], None]:
    """Check the study's data (one ``error:`` line before a study or cache exists); the log to run with.

    The data's ``classes:`` line is printed with the run's first line, so a run refused later (an
    existing study, a held lease) still prints nothing but its error.
    """
    if sf.data is None:
        return base
    from fairfront.objectives.data.preflight import preflight

    pending = [preflight(sf.data, sf.objectives.bias).classes_line]

    def log(message: str) -> None:
        while pending:
            base(pending.pop())
        base(message)

    return log


def _already_complete(args: argparse.Namespace) -> bool:
    """``resume`` of a study that holds its target: say so and how to extend it, starting nothing."""
    from fairfront.search.completion import complete_text, completed
    from fairfront.search.storage import load_study

    done = completed(load_study(args.study, args.storage), args.n_trials)
    if done is not None:
        _log(complete_text(args.study, *done, storage=args.storage, artifact_dir=args.artifact_dir,
                           cache_dir=args.cache_dir))
    return done is not None


def _run(args: argparse.Namespace) -> int:
    if args.command == "resume" and _already_complete(args):
        return 0
    from fairfront.search import driver, hints, report
    from fairfront.search.lease import LeaseHeld, LeaseLost
    live = _live_line()
    options = driver.RunOptions(storage=args.storage, n_trials=args.n_trials, ray_address=args.ray_address,
                                cache_dir=args.cache_dir, artifact_dir=args.artifact_dir,
                                log=live.log if live is not None else _log, live=live)
    try:
        study = _drive(args, options, live)
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


def _live_line() -> LiveLine | None:
    """The progress line rewritten in place on a terminal; elsewhere (None) the progress ends each finished line."""
    from fairfront.search.progress import LiveLine

    return LiveLine(sys.stdout) if sys.stdout.isatty() else None


def _drive(args: argparse.Namespace, options: RunOptions, live: LiveLine | None) -> optuna.Study:
    """``run`` or ``resume`` itself; the live progress line is closed before anything else is printed."""
    from fairfront.search import driver
    from fairfront.search.studyfile import load_study_file

    try:
        if args.command == "run":
            sf = load_study_file(args.study_file)
            options.log = _checked_data_log(sf, options.log)
            return driver.run_study(sf, options)
        return driver.resume_study(args.study, options)
    finally:
        if live is not None:
            live.close()


def _show(args: argparse.Namespace) -> int:
    from fairfront.search import report
    from fairfront.search.attrs import N_TRIALS_ATTR
    from fairfront.search.storage import load_study

    study = load_study(args.study, args.storage)
    if args.command == "status":
        from fairfront.search.lease import read_lease

        print(report.status_text(study, study.user_attrs.get(N_TRIALS_ATTR)))
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

    from fairfront.search.report_html import write_report
    from fairfront.search.storage import load_study

    study = load_study(args.study, args.storage)
    out = args.out or Path("studies/reports") / (re.sub(r"[^A-Za-z0-9._-]", "_", args.study) + ".html")
    try:
        write_report(study, out, storage=args.storage)
    except OSError as err:
        raise ConfigError("--out", message=f"cannot write {out}: {err.strerror or err}") from None
    print(out)
    return 0


def _confirm(args: argparse.Namespace) -> int:
    from fairfront.search import report
    from fairfront.search.confirm import ConfirmFailed, confirm_study
    from fairfront.search.driver import RunOptions, load_study
    from fairfront.search.lease import LeaseHeld, LeaseLost

    live = _live_line()
    options = RunOptions(storage=args.storage, ray_address=args.ray_address, cache_dir=args.cache_dir,
                         log=live.log if live is not None else _log, live=live)
    try:
        try:
            confirm_study(args.study, options, seeds=args.seeds, top=args.top)
        finally:
            if live is not None:
                live.close()
    except KeyboardInterrupt:
        _log("interrupted: the finished results are stored; run the same command again for the rest")
        return 130
    except ConfirmFailed as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except (LeaseHeld, LeaseLost) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    _log("")
    _log(report.front_table(load_study(args.study, args.storage)))
    return 0


def _export(args: argparse.Namespace) -> int:
    from fairfront.search.export import export_trial
    from fairfront.search.storage import require_existing

    require_existing(args.storage)  # a wrong path creates no empty database
    export_trial(args.study, args.trial, args.out, storage=args.storage, cache_dir=args.cache_dir, log=_log)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from fairfront.search.explain.command import ExplainOptions, explain
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
