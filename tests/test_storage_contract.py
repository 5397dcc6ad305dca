"""Optuna's own storage contract suite, run against the driver's storage and against Optuna's.

:class:`~fairfront.search.driver_storage.DriverStorage` answers trial reads from a mirror and
batches writes; whatever sequence of ``BaseStorage`` calls a caller makes, it must answer as
Optuna's ``RDBStorage`` does. Optuna ships the checks every storage must pass
(:class:`optuna.testing.pytest_storages.StorageTestCase`); they run here twice over the same
database: over plain ``RDBStorage`` (the reference, so a failure that appears only for the
driver's storage is the mirror's) and over ``DriverStorage``.

Each database (a SQLite file, and PostgreSQL where ``FAIRFRONT_TEST_POSTGRES_URL`` names a
server) is created once and emptied before and after every test, since the suite counts the
studies it finds. On PostgreSQL the tables live in a schema of their own, dropped at the end, so
studies other tests keep in the same database are never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.testing.pytest_storages import StorageTestCase

from fairfront.search.driver_storage import DriverStorage
from fairfront.search.storage import open_storage

POSTGRES_ENV = "FAIRFRONT_TEST_POSTGRES_URL"

_KEPT_TABLES = {"version_info", "alembic_version"}
"""The schema's version: emptying it would make the next storage refuse the database."""


def _postgres_schema_url(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> Iterator[RDBStorage]:
    """One database per module and backend, with Optuna's schema already created (creating it per test is slow)."""
    if request.param == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'contract.db'}")
        yield storage
        storage.engine.dispose()
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a local PostgreSQL server and sets it)")
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        storage = open_storage(_postgres_schema_url(url, schema))
        yield storage
        storage.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _empty(storage: RDBStorage) -> None:
    tables = [t for t in reversed(models.BaseModel.metadata.sorted_tables) if t.name not in _KEPT_TABLES]
    with storage.engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # ids restart too, as in a new database
            conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(t.name for t in tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture
def empty_database(database: RDBStorage) -> Iterator[RDBStorage]:
    _empty(database)
    yield database
    _empty(database)


class TestOptunaRDBStorage(StorageTestCase):
    """The reference: Optuna's own storage over the same database passes the suite."""

    @pytest.fixture
    def storage(self, empty_database: RDBStorage) -> RDBStorage:
        return empty_database


class TestDriverStorage(StorageTestCase):
    """The driver's storage, a fresh mirror per test, answers every call as Optuna's storage does."""

    @pytest.fixture
    def storage(self, empty_database: RDBStorage) -> DriverStorage:
        return DriverStorage(empty_database)
