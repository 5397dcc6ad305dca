"""Storage faults the user must act on, in one line: disk full, I/O error, read-only database, deleted SQLite file.

Optuna wraps every failed commit in ``StorageInternalError`` ("invalid data in the commit, e.g.
exceeding max length"), so a full disk or a read-only database used to end in a long traceback
that blamed the data. :func:`storage_fault` finds the database's own error in the exception's
chain (SQLite's result code, PostgreSQL's SQLSTATE, the operating system's errno) and names the
real cause, what to do, and that what was committed is kept.

SQLite keeps writing into a database file that was deleted while it was open: every commit
succeeds and the results vanish with the last handle. :func:`watch_sqlite_file` notes the file's
identity (device and inode) and checks it as each transaction begins, so a deleted or replaced
file stops the driver instead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import sqlalchemy

from fairfront.search.storage import redact_url

__all__ = ["StorageFault", "storage_fault", "watch_sqlite_file"]

FULL, IO, READ_ONLY = "full", "io", "read-only"

_SQLITE_CODES = {13: FULL, 10: IO, 8: READ_ONLY, 3: READ_ONLY, 23: READ_ONLY}
"""SQLite primary result codes: SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_PERM, SQLITE_AUTH."""

_SQLSTATES = {"53100": FULL, "58030": IO, "25006": READ_ONLY, "42501": READ_ONLY}
"""PostgreSQL SQLSTATEs: disk_full, io_error, read_only_sql_transaction, insufficient_privilege."""

_ERRNOS = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EIO: IO, errno.EROFS: READ_ONLY, errno.EACCES: READ_ONLY,
           errno.EPERM: READ_ONLY}

_MESSAGES = (("database or disk is full", FULL), ("no space left on device", FULL), ("disk quota exceeded", FULL),
             ("disk i/o error", IO), ("input/output error", IO), ("readonly database", READ_ONLY),
             ("read-only", READ_ONLY), ("permission denied", READ_ONLY))
"""What the drivers say when they carry no code (the last resort)."""

_DRIVERS = ("sqlite3", "psycopg", "psycopg2", "pymysql", "MySQLdb")

_CAUSES = {FULL: ("the study's storage is full", "free space on its disk (or the database server's)"),
           IO: ("the study's storage reported an I/O error", "check its disk (or the database server)"),
           READ_ONLY: ("the study's storage refuses writes (read-only, or no permission)",
                       "make the database writable for this user (the file's and its folder's permissions, a "
                       "read-only mount, mode=ro in a SQLite URI, a read-only database role or transaction)")}


class StorageFault(RuntimeError):
    """The study's storage failed in a way the user must fix; the message is one line saying what and how."""


def _chain(err: BaseException) -> list[BaseException]:
    """``err``, its causes and contexts (unless suppressed), and the driver errors SQLAlchemy wraps."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo.append(getattr(e, "orig", None) if isinstance(getattr(e, "orig", None), BaseException) else None)
        todo.append(e.__cause__)
        if not e.__suppress_context__:
            todo.append(e.__context__)
    return seen


def _kind(e: BaseException) -> str | None:
    code: Any = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _SQLITE_CODES:
        return _SQLITE_CODES[code & 0xFF]
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    if isinstance(state, str) and state in _SQLSTATES:
        return _SQLSTATES[state]
    if isinstance(e, OSError) and e.errno in _ERRNOS:
        return _ERRNOS[e.errno]
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def storage_fault(err: BaseException, *, url: str, study_name: str | None = None,
                  resume: str | None = None) -> StorageFault | None:
    """The one-line :class:`StorageFault` behind ``err``, or None when ``err`` is not a storage fault.

    ``url`` (its password hidden) and ``resume`` (the command that continues the study, with the
    user's options; else ``fairfront resume study_name``) go into the message; a :class:`StorageFault`
    already raised (a deleted database file) is returned as it is.
    """
    chain = _chain(err)
    for e in chain:
        if isinstance(e, StorageFault):
            return e
    found = next(((kind, e) for e in chain if (kind := _kind(e)) is not None), None)
    if found is None:  # no code anywhere: a database error whose text names the cause
        for e in chain:
            if isinstance(e, sqlalchemy.exc.DBAPIError | OSError) or type(e).__module__.split(".")[0] in _DRIVERS:
                kind = next((k for marker, k in _MESSAGES if marker in str(e).lower()), None)
                if kind is not None:
                    found = (kind, e)
                    break
    if found is None:
        return None
    kind, e = found
    cause, action = _CAUSES[kind]
    then = resume or (f"fairfront resume {study_name}" if study_name else "the same command again")
    return StorageFault(f"{cause} ({redact_url(url)}: {_first_line(e)}); what was committed is kept: {action}, "
                        f"then continue with: {then}")


def _sqlite_path(url: sqlalchemy.engine.URL) -> Path | None:
    """The database file of a SQLite URL (URI filenames included), or None for an in-memory database."""
    if not url.get_backend_name() == "sqlite" or not url.database or url.database == ":memory:":
        return None
    name = url.database
    if name.startswith("file:"):
        if "mode=memory" in name:
            return None
        name = name[len("file:"):].split("?", 1)[0]
    return Path(name).absolute()


def watch_sqlite_file(engine: sqlalchemy.engine.Engine) -> None:
    """Check, as each transaction of ``engine`` begins, that its SQLite file is still the one it opened.

    A no-op for other databases, in-memory SQLite, or a file that does not exist yet.

    Raises (from the transaction's start):
        StorageFault: the file was deleted or replaced; the results written so far went with it.
    """
    path = _sqlite_path(engine.url)
    if path is None:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    identity = (st.st_dev, st.st_ino)

    def check(_conn: Any) -> None:
        try:
            now = os.stat(path)
            same = (now.st_dev, now.st_ino) == identity
        except FileNotFoundError:
            same = False
        if not same:
            raise StorageFault(f"the SQLite database file {path} was deleted or replaced while the study ran; "
                               "the results written so far are gone with the file and nothing more was written "
                               "(restore it from a backup, or start the study again with fairfront run)")

    sqlalchemy.event.listen(engine, "begin", check)
