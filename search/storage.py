"""Opening the study storage: SQLite by default, any SQLAlchemy URL (PostgreSQL, MySQL) otherwise.

Only the driver writes (README, Architecture: "the driver owns the study"), so SQLite is safe even
when the trials run on many nodes: the database file lives beside the driver. SQLite is opened in
write-ahead-log mode with ``synchronous=NORMAL``: a commit no longer waits for the disk twice,
which is what keeps the driver's overhead per trial small (``benchmarks/driver_overhead.py``), and
readers such as optuna-dashboard or ``fairfront status`` never block the driver. A committed trial
survives the driver being killed; only a power cut can lose the last few commits, which ``resume``
then treats as trials that never finished.

Other databases are used as Optuna uses them, with ``pool_pre_ping`` so a driver that ran for
days survives the server closing idle connections. A URL whose driver package is missing fails
with one line naming the package to install.

Example:
    >>> storage = open_storage("sqlite:///studies/fairfront.db")  # doctest: +SKIP
    >>> study_names(storage)                                      # doctest: +SKIP
    ['demo']
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import optuna

from fairfront.errors import ConfigError

__all__ = ["DEFAULT_STORAGE", "open_storage", "require_existing", "study_names", "load_study", "grouped_writes",
           "redact_url"]

DEFAULT_STORAGE = "sqlite:///studies/fairfront.db"

_DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
            "MySQLdb": "mysqlclient", "asyncpg": "asyncpg"}


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:  # noqa: ARG001 - SQLAlchemy's signature
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``; creates the folder and file of a new SQLite database.

    ``create=False`` (reading or continuing a study) refuses a SQLite file that does not exist
    rather than leaving an empty database behind (:func:`require_existing`).

    Raises:
        ConfigError: the URL is malformed, its database driver is not installed, the server
            cannot be reached, or (``create=False``) the SQLite file does not exist.
    """
    if "://" not in url:
        raise ConfigError("--storage", url, "a SQLAlchemy URL such as sqlite:///studies/fairfront.db or "
                          "postgresql://user:password@host/db")
    path = _sqlite_path(url)
    if not create:
        require_existing(url)
    elif path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    try:
        storage = _create_rdb_storage(url, kwargs)
    except ImportError as err:  # Optuna wraps the missing driver module's ModuleNotFoundError
        missing = err if isinstance(err, ModuleNotFoundError) else err.__cause__
        name = (getattr(missing, "name", None) or "").split(".")[0]
        package = _DRIVERS.get(name, name or "the database driver")
        raise ConfigError("--storage", redact_url(url), f"a URL whose database driver is installed (pip install "
                          f"{package})") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's many connection errors: one line for the user
        if type(err).__module__.startswith(("sqlalchemy", "optuna")) or isinstance(err, (OSError, ValueError)):
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError("--storage", message=f"cannot open {redact_url(url)}: {first[:300]}") from None
        raise
    if sqlite:
        from sqlalchemy import event

        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened before the listener get the pragmas too
    return storage


def require_existing(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist, creating nothing.

    Opening one would create the folder and an empty database: a mistyped path would then look
    like a storage without the study. A path after ``sqlite:///`` is relative to the current
    folder; an absolute one takes four slashes, the usual slip the message points out.

    Raises:
        ConfigError: the SQLite database does not exist.
    """
    path = _sqlite_path(url)
    if path is None or path.is_file():
        return
    hint = ""
    if not path.is_absolute():  # three slashes
        hint = (f" (a path after sqlite:/// is relative to the current folder, here {path.absolute()}; an absolute "
                f"path takes four slashes: sqlite:////{path.as_posix()})")
    raise ConfigError("--storage", message=f"the SQLite database {path} does not exist{hint}; give the storage that "
                      "holds the study, or create a study with fairfront run")


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, in memory, or not a URL SQLAlchemy reads)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except (ArgumentError, ValueError):
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


_SCHEMA_RACE = ("alembic_version", "already exists", "UNIQUE constraint failed", "duplicate key")
"""What a process sees when another one creates the same new database's tables at the same moment."""


def _create_rdb_storage(url: str, engine_kwargs: dict, *, attempts: int = 5) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried when another process was creating the same new database's schema.

    Two processes opening a database that does not exist yet (a driver starting while
    ``fairfront status`` or the dashboard polls the same file) both create its tables and both
    insert its schema version; the slower one fails on a duplicate. By the time it retries, the
    schema is complete and it simply opens it.
    """
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as err:  # noqa: BLE001 - SQLAlchemy wraps the driver's error types
            if attempt == attempts - 1 or not any(marker in str(err) for marker in _SCHEMA_RACE):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies in ``storage``, oldest first."""
    return [s.study_name for s in storage.get_all_studies()]


def load_study(name: str, storage_url: str, *, driver: bool = False) -> optuna.Study:
    """Open an existing study, or fail with one line listing the studies that exist.

    ``driver=True`` opens it over :class:`~fairfront.search.driver_storage.DriverStorage` (trial
    reads from an in-memory mirror): only for the driver, which holds the study's lease; readers
    keep the plain storage. Lives here, apart from the driver, so that read-only commands open a
    study without importing what runs trials (torch, Ray).
    """
    storage = open_storage(storage_url)
    names = study_names(storage)
    if name not in names:
        raise ConfigError("study", name, "a study in " + storage_url + " (found: " + (", ".join(names) or "none") + ")")
    if not driver:
        return optuna.load_study(study_name=name, storage=storage)
    from fairfront.search.driver_storage import DriverStorage

    return optuna.load_study(study_name=name, storage=DriverStorage(storage))


def redact_url(url: str) -> str:
    """The URL with its password hidden (error messages end up in logs)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return url


def grouped_writes(study: optuna.Study):
    """The study storage's ``grouped_writes`` (one transaction per block), or a block that groups nothing.

    Only the driver's storage (:class:`~fairfront.search.driver_storage.DriverStorage`) groups
    writes; over Optuna's own storage each write stays its own transaction.
    """
    return getattr(study._storage, "grouped_writes", contextlib.nullcontext)
