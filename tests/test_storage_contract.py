"""Optuna's own storage contract suite, run against the driver's storage and against Optuna's.

:class:`~fairfront.search.driver_storage.DriverStorage` answers trial reads from a mirror and
batches writes; whatever sequence of ``BaseStorage`` calls a caller makes, it must answer as
Optuna's ``RDBStorage`` does. Optuna ships the checks every storage must pass
(:class:`optuna.testing.pytest_storages.StorageTestCase`); they run here over the same database:

* over plain ``RDBStorage``, the reference, so a failure that appears only for the driver's
  storage is the mirror's;
* over ``DriverStorage``, after which every trial it reads must equal what the database holds,
  number types included (the suite itself reads only through the storage under test);
* over ``DriverStorage`` with every test inside one :meth:`~DriverStorage.grouped_writes` block,
  the way the driver samples and records trials: writes wait for the end of the block, so every
  check the suite makes in between is answered by the mirror alone (SQLite only, see the class).

Each database (a SQLite file, and PostgreSQL where ``FAIRFRONT_TEST_POSTGRES_URL`` names a
server) is created once per module and emptied before every test, since the suite counts the studies it
finds. On PostgreSQL the tables live in a schema of their own, dropped at the end, so
studies that other tests keep in the same database are never touched.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.testing.pytest_storages import StorageTestCase
from optuna.trial import FrozenTrial, TrialState

from fairfront.search.driver_storage import DriverStorage
from fairfront.search.storage import open_storage

from conftest import postgres_url

_KEPT_TABLES = {"version_info", "alembic_version"}
"""The schema's version: emptying it would make the next storage refuse the database."""


def _postgres_url(url: str, schema: str) -> str:
    """``url`` with its tables in ``schema``; commits do not wait for the disk (test data only)."""
    options = quote(f"-csearch_path={schema} -csynchronous_commit=off")
    return f"{url}{'&' if '?' in url else '?'}options={options}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> Iterator[RDBStorage]:
    """One database per module and backend, with Optuna's schema already created (creating it per test is slow)."""
    if request.param == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'contract.db'}")
        yield storage
        storage.engine.dispose()
        return
    url = postgres_url()
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        storage = open_storage(_postgres_url(url, schema))
        yield storage
        storage.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _empty(storage: RDBStorage) -> None:
    """Delete every row but the schema's version (a DELETE of these few rows is far quicker than a TRUNCATE)."""
    tables = [t for t in reversed(models.BaseModel.metadata.sorted_tables) if t.name not in _KEPT_TABLES]
    with storage.engine.begin() as conn:
        for table in tables:  # rows that refer to others first
            conn.execute(table.delete())


@pytest.fixture
def empty_database(database: RDBStorage) -> RDBStorage:
    """The database with no study in it (the module's database, emptied: it is dropped at the end)."""
    _empty(database)
    return database


def _exactly(value: Any) -> Any:
    """``value`` compared by type and repr (``0`` is not ``0.0``, NaN equals NaN); dicts in any order.

    Attribute order is not part of the contract: it is whatever order the database's query plan
    returns rows in (SQLite's key index, PostgreSQL's heap), which even Optuna's storage does not fix.
    """
    if isinstance(value, dict):
        return sorted((repr(k), _exactly(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, *map(_exactly, value)]
    return (type(value).__name__, repr(value))


def _trial_exactly(trial: FrozenTrial) -> Any:
    return _exactly({field: getattr(trial, field) for field in (
        "number", "_trial_id", "state", "values", "datetime_start", "datetime_complete", "params", "distributions",
        "user_attrs", "system_attrs", "intermediate_values")})


def _assert_reads_as_the_database(storage: DriverStorage, database: RDBStorage) -> None:
    """Every trial the driver's storage reads is what Optuna's storage reads from the database."""
    for study in database.get_all_studies():
        expected = database.get_all_trials(study._study_id)
        assert list(map(_trial_exactly, storage.get_all_trials(study._study_id))) == list(map(_trial_exactly, expected))
        for trial in expected:
            assert _trial_exactly(storage.get_trial(trial._trial_id)) == _trial_exactly(trial)


class TestOptunaRDBStorage(StorageTestCase):
    """The reference: Optuna's own storage over the same database passes the suite."""

    @pytest.fixture
    def storage(self, empty_database: RDBStorage) -> RDBStorage:
        return empty_database


class TestDriverStorage(StorageTestCase):
    """The driver's storage, a fresh mirror per test, answers every call as Optuna's storage does."""

    @pytest.fixture
    def storage(self, empty_database: RDBStorage) -> Iterator[DriverStorage]:
        storage = DriverStorage(empty_database)
        yield storage
        _assert_reads_as_the_database(storage, empty_database)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
class TestDriverStorageInsideGroupedWrites(StorageTestCase):
    """The same, with every test inside one ``grouped_writes`` block, written to the database when it ends.

    On SQLite only: what is checked here is the mirror answering while writes wait, which no
    database takes part in; the statements a block ends with are the ones every write outside a
    block ends with too, which the class above runs on every database.
    """

    @pytest.fixture
    def storage(self, empty_database: RDBStorage) -> Iterator[DriverStorage]:
        storage = DriverStorage(empty_database)
        with storage.grouped_writes():
            yield storage
        _assert_reads_as_the_database(storage, empty_database)


class TestBeyondOptunasSuite:
    """Sequences the suite does not make: what the driver's storage adds (grouped writes, refresh) with its calls."""

    def test_values_read_back_as_floats_as_the_database_returns_them(self, empty_database: RDBStorage) -> None:
        storage = DriverStorage(empty_database)
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])
        trial_id = storage.create_new_trial(study_id)
        storage.set_trial_intermediate_value(trial_id, 0, 1)
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0])
        trial = storage.get_trial(trial_id)
        assert repr(trial.values) == "[0.0]" and repr(trial.intermediate_values) == "{0: 1.0}"
        _assert_reads_as_the_database(storage, empty_database)

    def test_a_refresh_inside_a_block_keeps_what_the_block_wrote(self, empty_database: RDBStorage) -> None:
        storage = DriverStorage(empty_database)
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])
        trial_id = storage.create_new_trial(study_id)
        with storage.grouped_writes():
            storage.set_trial_user_attr(trial_id, "before", 1)
            storage.refresh(study_id)
            assert storage.get_trial(trial_id).user_attrs == {"before": 1}
            storage.set_trial_user_attr(trial_id, "after", 2)
        assert empty_database.get_trial(trial_id).user_attrs == {"before": 1, "after": 2}
        _assert_reads_as_the_database(storage, empty_database)

    def test_deleting_a_study_inside_a_block_deletes_what_the_block_wrote_to_it(
            self, empty_database: RDBStorage) -> None:
        storage = DriverStorage(empty_database)
        kept, deleted = (storage.create_new_study([optuna.study.StudyDirection.MINIMIZE]) for _ in range(2))
        kept_trial, deleted_trial = storage.create_new_trial(kept), storage.create_new_trial(deleted)
        with storage.grouped_writes():
            storage.set_trial_user_attr(kept_trial, "a", 1)
            storage.set_trial_user_attr(deleted_trial, "a", 1)
            storage.delete_study(deleted)
        assert [s._study_id for s in empty_database.get_all_studies()] == [kept]
        assert empty_database.get_trial(kept_trial).user_attrs == {"a": 1}
        with pytest.raises(KeyError):
            storage.get_trial(deleted_trial)
        _assert_reads_as_the_database(storage, empty_database)


class TestAnswersAsOptunasStorage:
    """Calls the suite does not make, answered alike by Optuna's storage and the driver's (the reference runs too)."""

    @pytest.fixture(params=["optuna", "driver"])
    def storage(self, request, empty_database: RDBStorage) -> RDBStorage | DriverStorage:
        return empty_database if request.param == "optuna" else DriverStorage(empty_database)

    def test_a_categorical_parameter_reads_back_as_a_float_index(self, storage) -> None:
        trial_id = storage.create_new_trial(storage.create_new_study([optuna.study.StudyDirection.MINIMIZE]))
        storage.set_trial_param(trial_id, "kind", 2, optuna.distributions.CategoricalDistribution(["a", "b", "c"]))
        assert repr(storage.get_trial_param(trial_id, "kind")) == "2.0"
        assert storage.get_trial(trial_id).params == {"kind": "c"}

    def test_the_best_trial_of_a_multi_objective_study_is_refused_before_any_trial_finished(self, storage) -> None:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE] * 2)
        storage.create_new_trial(study_id)
        with pytest.raises(RuntimeError):
            storage.get_best_trial(study_id)

    def test_a_complete_trial_without_a_value_is_not_the_best(self, storage) -> None:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE])
        valued, empty = storage.create_new_trial(study_id), storage.create_new_trial(study_id)
        storage.set_trial_state_values(empty, TrialState.COMPLETE)
        with pytest.raises(ValueError):
            storage.get_best_trial(study_id)
        storage.set_trial_state_values(valued, TrialState.COMPLETE, [-1.0])
        assert storage.get_best_trial(study_id)._trial_id == valued

    def test_a_copy_reads_the_study_from_the_database(self, storage, empty_database: RDBStorage) -> None:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])
        trial_id = storage.create_new_trial(study_id)
        copied = pickle.loads(pickle.dumps(storage))
        empty_database.set_trial_user_attr(trial_id, "written", "after the copy")  # e.g. the original, later
        assert copied.get_trial(trial_id).user_attrs == {"written": "after the copy"}
