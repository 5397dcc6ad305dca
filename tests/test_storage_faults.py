"""Storage faults end in one line naming the real cause, and keep what was committed.

A read-only database is made real with SQLite's URI ``mode=ro`` (the tests run as root, so file
permissions would not stop a write). A disk cannot be filled here, so the mapping of a full disk
is checked on the real error SQLite raises when a database reaches its ``max_page_count`` (the
same SQLITE_FULL a full disk gives), and PostgreSQL's read-only error on a real ``READ ONLY``
transaction; an I/O error and PostgreSQL's disk-full error are built as the driver packages
build them.
"""

from __future__ import annotations

import sqlite3
import uuid

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from fairfront.objectives.training.prepare import Prepared
from fairfront.objectives.training.trial import TrialOutcome
from fairfront.search.driver import RunOptions, resume_study, run_study
from fairfront.search.inprocess_executor import InProcessExecutor
from fairfront.search.storage_faults import StorageFault, storage_fault
from fairfront.search.studyfile import parse_study_text

from conftest import postgres_url, tiny_study_text

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def noop_trial(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
    x = (spec.seed * 0.6180339887) % 1.0
    return TrialOutcome([x, 1000.0 * (1.0 - x) + 1.0, abs(0.5 - x)], {})


def placeholder_prepared() -> Prepared:
    return Prepared(fingerprint="faults", data_name="none", citation="", label_names=("a", "b"), group_names=(),
                    group_is_proxy=False, splits={}, pad_id=0, model_config={}, teacher_state={}, teacher_logits={},
                    teacher_seconds=0.0)


def _options(url: str, tmp_path, fn=noop_trial, **kw) -> RunOptions:
    return RunOptions(storage=url, cache_dir=tmp_path / "cache", artifact_dir=tmp_path / "artifacts",
                      log=lambda m: None, trial_fn=fn, prepared=placeholder_prepared(),
                      executor=InProcessExecutor(capacity=1), **kw)


def _optuna_wrapped(err: BaseException) -> BaseException:
    """``err`` as Optuna raises it from a failed commit (the message that used to be the last line)."""
    try:
        try:
            raise err
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise optuna.exceptions.StorageInternalError("invalid data in the commit, e.g. exceeding max length") \
                from e
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


def _one_line(fault: StorageFault | None, cause: str, detail: str) -> str:
    assert fault is not None
    text = str(fault)
    assert "\n" not in text and cause in text and detail in text and "max length" not in text, text
    assert "what was committed is kept" in text and "fairfront resume demo" in text
    return text


def test_sqlite_full_io_and_read_only_errors_name_their_cause(tmp_path) -> None:
    path = tmp_path / "full.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
    with pytest.raises(sqlalchemy.exc.OperationalError) as full:  # SQLite's own SQLITE_FULL
        with engine.begin() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
            conn.exec_driver_sql("INSERT INTO t VALUES (zeroblob(1000000))")
    assert full.value.orig.sqlite_errorname == "SQLITE_FULL"
    _one_line(storage_fault(_optuna_wrapped(full.value), url=f"sqlite:///{path}", study_name="demo"),
              "the study's storage is full", "database or disk is full")

    read_only = sqlalchemy.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
        with read_only.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    _one_line(storage_fault(_optuna_wrapped(refused.value), url="sqlite:///x.db", study_name="demo"),
              "refuses writes", "readonly database")

    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorcode, io.sqlite_errorname = 10 | (4 << 8), "SQLITE_IOERR_WRITE"
    wrapped = sqlalchemy.exc.OperationalError("COMMIT", {}, io)
    _one_line(storage_fault(_optuna_wrapped(wrapped), url="sqlite:///x.db", study_name="demo"),
              "I/O error", "disk I/O error")
    disk = OSError(28, "No space left on device")
    _one_line(storage_fault(disk, url="sqlite:///x.db", study_name="demo"), "is full", "No space left")

    assert storage_fault(ValueError("bad value"), url="sqlite:///x.db") is None
    assert storage_fault(_optuna_wrapped(sqlalchemy.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError(
        "UNIQUE constraint failed"))), url="sqlite:///x.db") is None


def test_postgresql_read_only_and_disk_full_name_their_cause() -> None:
    url = postgres_url()
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with pytest.raises(sqlalchemy.exc.InternalError) as refused:  # the server's own read-only error
        with engine.begin() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql("CREATE TEMP TABLE t (x int)")
    text = _one_line(storage_fault(_optuna_wrapped(refused.value), url=url, study_name="demo"),
                     "refuses writes", "read-only transaction")
    assert ":***@" in text or "@" not in url.split("://", 1)[1].split("/", 1)[0].split("@")[0]  # no password
    full = sqlalchemy.exc.OperationalError("INSERT", {}, psycopg.errors.DiskFull(
        'could not extend file "base/16384/2619": No space left on device'))
    _one_line(storage_fault(_optuna_wrapped(full), url=url, study_name="demo"), "is full", "could not extend")


def test_a_read_only_database_is_one_line_and_nothing_is_written(tmp_path) -> None:
    """``mode=ro`` in a SQLite URI: the database really refuses every write, whoever runs the driver."""
    path = tmp_path / "studies" / "fairfront.db"
    name = f"ro-{uuid.uuid4().hex[:8]}"
    sf = parse_study_text(tiny_study_text(name, n_trials=2, parallel=1), base_dir=tmp_path)
    run_study(sf, _options(f"sqlite:///{path}", tmp_path))
    before = path.read_bytes()
    with pytest.raises(StorageFault) as fault:
        resume_study(name, _options(f"sqlite:///file:{path}?mode=ro&uri=true", tmp_path, n_trials=4))
    assert "\n" not in str(fault.value) and "refuses writes" in str(fault.value)
    assert f"fairfront resume {name}" in str(fault.value)
    assert path.read_bytes() == before  # nothing half-written
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_a_database_file_deleted_mid_run_stops_the_driver(tmp_path) -> None:
    path = tmp_path / "studies" / "fairfront.db"

    def deletes_the_database(prepared, spec, *, device=None, threads=None) -> TrialOutcome:
        if spec.seed == 1:  # trial 1 runs after trial 0 was told: someone deletes the database meanwhile
            for suffix in ("", "-wal", "-shm"):
                (path.parent / (path.name + suffix)).unlink(missing_ok=True)
        return noop_trial(prepared, spec)

    sf = parse_study_text(tiny_study_text("deleted", n_trials=4, parallel=1), base_dir=tmp_path)
    with pytest.raises(StorageFault) as fault:
        run_study(sf, _options(f"sqlite:///{path}", tmp_path, fn=deletes_the_database))
    text = str(fault.value)
    assert "\n" not in text and "was deleted or replaced while the study ran" in text
    assert "the results written so far are gone with the file" in text
    assert not path.exists()  # nothing recreated it behind the user's back
