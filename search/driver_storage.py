"""The driver's storage: every trial read served from an exact in-memory mirror, every write to the database.

Optuna's RDB storage answers each read with SQL: ``study.ask()`` reads all WAITING trials, a
``Trial`` reads itself, ``study.tell()`` reads the trial twice more, and each of those reads
builds the whole trial from six queries. That was most of the driver's cost per trial
(``benchmarks/driver_overhead.py``). :class:`DriverStorage` wraps the
:class:`~optuna.storages.RDBStorage` that :func:`fairfront.search.storage.open_storage` returns:

* **Writes** reach the database before the call returns, or, inside
  :meth:`DriverStorage.grouped_writes`, when the block ends: a trial the driver created, sampled
  or told is committed before the driver goes on, so it survives SIGKILL of the driver
  (``resume`` relies on that). Writes to mirrored trials are checked against the mirror as the
  database would check them, applied to the mirror, and written as a few multi-row statements of
  Optuna's own schema in one transaction (creating a trial is one transaction too, as Optuna's
  is). A write that raises (for any reason, even after its commit) makes the wrapper forget the
  mirrors, which are then rebuilt from the database on the next read.
* **Trial reads** (``get_trial``, ``get_all_trials``, trial ids and numbers, params and
  attributes, ``get_best_trial``) are answered from a mirror of the study's trials, built once
  from the database on the first read and then updated by every write that passes through the
  wrapper. What the mirror holds is what the database returns for the same trial: attribute
  values go through the same JSON round trip, parameters through the stored distribution JSON
  and the internal float, values and intermediate values through their stored form, and the
  timestamps the database sets (a trial's start, a WAITING trial becoming RUNNING, a trial
  finishing) are read back from the database in the same transaction.
* **Writes grouped together** (:meth:`DriverStorage.grouped_writes`: around the driver's
  sampling of one trial, which ends before the trial is submitted, and around its recording of
  one result) reach the database in one transaction instead of one per ``suggest_*`` call,
  attribute, value and state change.
* **Study-level calls** (names, user and system attributes, where the driver lease lives, the
  list of studies) go to the database unchanged; only what cannot change, a study's directions
  and name, is kept.

Why the mirror is exact: only the driver writes to the study (README, "Architecture"), and the
lease (:mod:`fairfront.search.lease`) guarantees one driver per study. The driver builds the
mirror after it holds the lease (on its first trial read), so no other process changes the
study's trials while the mirror lives, and every change the driver makes passes through this
wrapper. The mirror also checks the one thing it can see cheaply: a trial the driver creates
must get the next trial number; if it does not, another process created trials, and the mirror
is rebuilt from the database (with a warning). Optuna's own storage contract suite runs against
this class, and after each of its tests every trial read must equal what the database holds
(``tests/test_storage_contract.py``).

**Fencing.** Once the driver holds the lease it calls :meth:`DriverStorage.fence`; from then on
every write transaction of this storage (a trial's creation, its grouped writes, Optuna's own
writes passed through, study attributes) begins with the lease check of
:func:`~fairfront.search.lease.check_holder`, in the same transaction. A driver that was paused
past the lease's stale threshold and taken over therefore writes nothing when it wakes: its first
write raises :class:`~fairfront.search.lease.LeaseLost` and changes nothing, and the driver stops.

**A deleted database file.** SQLite keeps writing into a database file that was deleted while it
was open, and the results vanish with the last handle. The driver's storage notes the file's
identity (device and inode) when it is created and checks it as every transaction begins
(:func:`~fairfront.search.storage_faults.watch_sqlite_file`): a deleted or replaced file stops
the driver with :class:`~fairfront.search.storage_faults.StorageFault`.

What would break it: a second writer to the same study while a driver runs, e.g. someone telling
or enqueueing trials from optuna-dashboard or a notebook. The database stays correct then (every
write still goes there), but this driver would not see the other writer's changes to trials it
already mirrors until it is restarted. Readers
(``fairfront status``/``front``, the dashboard) do not use this class: they keep the plain storage
and always see the database.

Example:
    >>> storage = DriverStorage(open_storage("sqlite:///studies/fairfront.db"))   # doctest: +SKIP
    >>> study = optuna.load_study(study_name="demo", storage=storage)              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from optuna import distributions as _dists
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from fairfront.search.lease import check_holder
from fairfront.search.storage_faults import watch_sqlite_file

__all__ = ["DriverStorage"]

_logger = logging.getLogger(__name__)

# Optuna's own schema and session helper (Optuna 5.x, see pyproject), so the mirror stores values exactly as
# the database returns them and the batched writes touch the same tables Optuna's own writes do
from optuna.storages._rdb import models as _models  # noqa: E402
from optuna.storages._rdb.storage import _create_scoped_session  # noqa: E402


def _stored_value(value: float) -> float:
    """An objective value as the database returns it: a float column, so ``0`` comes back as ``0.0``."""
    model = _models.TrialValueModel
    return float(model.stored_repr_to_value(*model.value_to_stored_repr(value)))


def _stored_intermediate(value: float) -> float:
    """An intermediate value as the database returns it (a float, NaN and infinities included)."""
    model = _models.TrialIntermediateValueModel
    return float(model.stored_repr_to_intermediate_value(*model.intermediate_value_to_stored_repr(value)))


class _Mirror:
    """One study's trials, keyed by number in number order, and the first distribution of each parameter."""

    def __init__(self, trials: list[FrozenTrial]):
        self.trials: dict[int, FrozenTrial] = {t.number: t for t in sorted(trials, key=lambda t: t.number)}
        self.distributions: dict[str, _dists.BaseDistribution] = {}
        for t in self.trials.values():
            for name, dist in t.distributions.items():
                self.distributions.setdefault(name, dist)


class DriverStorage(BaseStorage):
    """An :class:`~optuna.storages.RDBStorage` whose trial reads come from an exact in-memory mirror.

    Only for the process that holds the study's driver lease (see the module docstring).

    Args:
        backend: the database storage every write goes to.
    """

    def __init__(self, backend: RDBStorage) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        self._mirrors: dict[int, _Mirror] = {}
        self._trial_index: dict[int, tuple[int, int]] = {}  # trial id -> (study id, number), mirrored trials only
        self._directions: dict[int, list[StudyDirection]] = {}
        self._names: dict[int, str] = {}
        self._pending: list[tuple[Any, ...]] = []  # (kind, trial_id, ...) writes queued by a grouped block
        self._grouping: tuple[int, int] | None = None  # (thread id, depth) of an open grouped_params block
        self._fence: tuple[int, str, str] | None = None  # (study id, lease id, study name) every write checks
        watch_sqlite_file(backend.engine)

    @property
    def backend(self) -> RDBStorage:
        """The database storage underneath."""
        return self._backend

    def __getstate__(self) -> dict[str, Any]:
        """A copy starts with no mirror and nothing queued: it reads the study from the database when it needs it.

        A copy (another process, or the same one) that carried the mirror and the queued writes
        would write those again and trust a mirror that another writer, the original, keeps changing.
        """
        state = self.__dict__.copy()
        del state["_lock"]
        state.update(_mirrors={}, _trial_index={}, _pending=[], _grouping=None, _fence=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ---- fencing: every write checks the lease in its own transaction --------------------------

    def fence(self, study_id: int, lease_id: str, study_name: str) -> None:
        """From now on every write transaction first checks that lease ``lease_id`` still holds ``study_id``."""
        with self._lock:
            self._fence = (study_id, lease_id, study_name)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A session whose transaction has passed the fencing check (if fenced); committed when the block ends.

        Optuna's own writes called inside the block run in this same transaction: they open the
        same thread-local session, and their commit is the commit of the checked transaction.
        """
        with _create_scoped_session(self._backend.scoped_session) as session:
            if self._fence is not None:
                check_holder(session.connection(), *self._fence)
            yield session

    def _through(self, write: Callable[[], Any]) -> Any:
        """An Optuna storage write, in a fenced transaction once the driver holds the lease."""
        if self._fence is None:
            return write()
        with self._transaction():
            return write()

    # ---- the mirror --------------------------------------------------------------------------

    def _mirror(self, study_id: int) -> _Mirror:
        """The study's mirror, built from the database on first use."""
        mirror = self._mirrors.get(study_id)
        if mirror is None:
            mirror = _Mirror(self._backend.get_all_trials(study_id, deepcopy=False))
            self._mirrors[study_id] = mirror
            for number, t in mirror.trials.items():
                self._trial_index[t._trial_id] = (study_id, number)
        return mirror

    def _forget(self, study_id: int) -> None:
        """Drop a study's mirror; the next read rebuilds it from the database."""
        mirror = self._mirrors.pop(study_id, None)
        if mirror is not None:
            for t in mirror.trials.values():
                self._trial_index.pop(t._trial_id, None)

    def _forget_all(self) -> None:
        for study_id in list(self._mirrors):
            self._forget(study_id)

    def _mirrored(self, trial_id: int) -> tuple[_Mirror, FrozenTrial] | None:
        where = self._trial_index.get(trial_id)
        if where is None:
            return None
        mirror = self._mirrors[where[0]]
        return mirror, mirror.trials[where[1]]

    def _store(self, mirror: _Mirror, trial: FrozenTrial) -> None:
        mirror.trials[trial.number] = trial

    def _write_trial(self, trial_id: int, write, update) -> Any:
        """Run ``write`` against the database, then ``update(mirror, trial, result)`` on success.

        A trial this wrapper does not mirror (another study, or one created behind its back) is
        written through; every mirror is then dropped, since one of them may hold it. ``update``
        None drops the trial's study's mirror after the write.
        """
        with self._lock:
            self._flush()  # what was queued reaches the database before anything written after it
            found = self._mirrored(trial_id)
            if found is None:
                try:
                    return self._through(lambda: write(None))
                finally:
                    self._forget_all()
            mirror, trial = found
            study_id = self._trial_index[trial_id][0]
            try:
                result = self._through(lambda: write(mirror))
                if update is None:
                    self._forget(study_id)
                else:
                    update(mirror, trial, result)
            except BaseException:
                self._forget(study_id)
                raise
            return result

    @staticmethod
    def _merged(trial: FrozenTrial, field: str, changes: dict[Any, Any]) -> FrozenTrial:
        """A copy of ``trial`` with ``changes`` merged into one of its dict fields (the mirror is copy-on-write)."""
        new = copy.copy(trial)
        setattr(new, field, {**getattr(trial, field), **changes})
        return new

    def _read_back(self, trial_id: int) -> tuple[int, TrialState, Any, Any]:
        """Number, state and the timestamps the database set, in one small query."""
        with _create_scoped_session(self._backend.scoped_session) as session:
            row = session.get(_models.TrialModel, trial_id)
            if row is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            return row.number, row.state, row.datetime_start, row.datetime_complete

    def refresh(self, study_id: int | None = None) -> None:
        """Forget the mirror of ``study_id`` (all studies if None); the next read rebuilds it.

        Writes queued in an open :meth:`grouped_writes` block are written first: a mirror re-read
        from the database without them would never see them.
        """
        with self._lock:
            self._flush()
            if study_id is None:
                self._forget_all()
            else:
                self._forget(study_id)

    @contextmanager
    def grouped_writes(self) -> Iterator[None]:
        """Within the block, what this thread writes to mirrored trials reaches the database in one transaction.

        Optuna writes one thing at a time, each its own transaction: every ``suggest_*`` call,
        every attribute, the values and the state at ``tell``. Inside this block a write to a
        mirrored trial is checked against the mirror as the database would check it (trial still
        running, parameter distribution compatible with the study's, first value of a parameter
        kept), put in the mirror at once, and written with the others when the block ends, even
        when it ends with an exception, or earlier when a write that cannot wait comes first
        (creating a trial, a WAITING trial starting, an intermediate value).

        The driver samples a trial inside one block before submitting it, so a trial never runs
        on parameters the database does not hold, and records each result (attributes, report
        artifact, values and state) inside another, so a trial is finished in the database with
        all of its results or not at all. A driver killed inside a block leaves the trial RUNNING,
        which recovery enqueues again as any interrupted trial.
        """
        me = threading.get_ident()
        with self._lock:
            if self._grouping is not None and self._grouping[0] != me:
                raise RuntimeError("grouped_writes is already open in another thread")
            depth = 0 if self._grouping is None else self._grouping[1]
            self._grouping = (me, depth + 1)
        try:
            yield
        finally:
            with self._lock:
                if depth == 0:
                    self._grouping = None
                    self._flush()
                else:
                    self._grouping = (me, depth)

    def _queue(self, trial_id: int, op: tuple, change) -> bool:
        """Queue ``op`` for a mirrored, still running trial and apply ``change(trial)`` to the mirror.

        ``change`` returns the trial's new mirror copy, or None to leave the trial (and the
        database) as they are. Outside :meth:`grouped_writes` the write is flushed at once, as its
        own transaction. Returns False for a trial this wrapper does not mirror (the caller
        writes it through).
        """
        with self._lock:
            found = self._mirrored(trial_id)
            if found is None:
                return False
            mirror, trial = found
            self.check_trial_is_updatable(trial_id, trial.state)
            new = change(mirror, trial)
            if new is not None:
                self._pending.append(op)
                self._store(mirror, new)
            if not (self._grouping is not None and self._grouping[0] == threading.get_ident()):
                self._flush()
            return True

    def _flush(self) -> None:
        """Write the queued writes in one transaction; on failure the mirror is rebuilt from the database.

        What Optuna's own per-call writes do, as a handful of multi-row statements: the trials
        must still be running in the database, an attribute or value replaces the one stored under
        the same key (a parameter is written once: the mirror keeps its first value, as the
        database does), a finished trial gets its completion time, which is then read back so the
        mirror holds exactly what the database stored.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        trials = _models.TrialModel.__table__
        try:
            with self._transaction() as session:
                conn = session.connection()
                touched = list(dict.fromkeys(op[1] for op in pending))
                rows: dict[int, Any] = dict(conn.execute(sqlalchemy.select(trials.c.trial_id, trials.c.state)
                                         .where(trials.c.trial_id.in_(touched)).with_for_update()).all())
                for trial_id in touched:
                    if trial_id not in rows:
                        raise KeyError(f"No trial with trial_id {trial_id} exists.")
                    self._backend.check_trial_is_updatable(trial_id, TrialState(rows[trial_id]))
                params = [op for op in pending if op[0] == "param"]
                if params:
                    conn.execute(sqlalchemy.insert(_models.TrialParamModel.__table__), [
                        {"trial_id": trial_id, "param_name": name, "param_value": float(internal),
                         "distribution_json": _dists.distribution_to_json(distribution)}
                        for _, trial_id, name, internal, distribution in params])
                for model, keyed in ((_models.TrialUserAttributeModel, "user_attr"),
                                     (_models.TrialSystemAttributeModel, "system_attr"),
                                     (_models.TrialValueModel, "value")):
                    self._replace_rows(conn, model, [op[1:] for op in pending if op[0] == keyed])
                finished = {op[1]: op[2] for op in pending if op[0] == "finish"}
                for trial_id, (state, when) in finished.items():
                    conn.execute(sqlalchemy.update(trials).where(trials.c.trial_id == trial_id)
                                 .values(state=state, datetime_complete=when))
                completed = sqlalchemy.select(trials.c.trial_id, trials.c.datetime_complete)
                stored: dict[int, Any] = dict(conn.execute(
                    completed.where(trials.c.trial_id.in_(list(finished)))).all()) if finished else {}
        except BaseException:
            self._forget_all()
            raise
        for trial_id, when in stored.items():  # the completion time as the database stored it (its precision)
            found = self._mirrored(trial_id)
            if found is not None and found[1].datetime_complete != when:
                new = copy.copy(found[1])
                new.datetime_complete = when
                self._store(found[0], new)

    @staticmethod
    def _replace_rows(conn, model, rows: list[tuple]) -> None:
        """Upsert ``(trial_id, key, column values)`` rows of one keyed trial table: the last write of a key wins."""
        if not rows:
            return
        key_column = "objective" if model is _models.TrialValueModel else "key"
        latest = {(trial_id, key): values for trial_id, key, values in rows}
        table = model.__table__
        for trial_id in dict.fromkeys(trial_id for trial_id, _ in latest):
            keys = [key for t, key in latest if t == trial_id]
            conn.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id, table.c[key_column].in_(keys)))
        conn.execute(sqlalchemy.insert(table), [{"trial_id": trial_id, key_column: key, **values}
                                                for (trial_id, key), values in latest.items()])

    # ---- studies: the database, except what never changes -------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        study_id = self._backend.create_new_study(directions=directions, study_name=study_name)
        with self._lock:
            self._directions[study_id] = list(directions)
        return study_id

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self._flush()  # writes queued before the deletion reach the database before it, as they would in Optuna
            self._forget(study_id)
            self._directions.pop(study_id, None)
            self._names.pop(study_id, None)
        self._through(lambda: self._backend.delete_study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._through(lambda: self._backend.set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._through(lambda: self._backend.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def _kept(self, cache: dict[int, Any], study_id: int, read) -> Any:
        """``cache[study_id]``, read once from the database (only for what never changes)."""
        with self._lock:
            value = cache.get(study_id)
        if value is None:
            value = read(study_id)
            with self._lock:
                cache[study_id] = value
        return value

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._kept(self._names, study_id, self._backend.get_study_name_from_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return list(self._kept(self._directions, study_id, self._backend.get_study_directions))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._backend.get_all_studies()

    # ---- trial writes: the database first, then the mirror ------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        with self._lock:
            self._flush()
            mirror = self._mirror(study_id)
            try:
                if template_trial is None:
                    trial = self._insert_running_trial(study_id)
                else:  # enqueued or added trials: rare; read back exactly what the database made of the template
                    trial = self._backend.get_trial(self._through(
                        lambda: self._backend.create_new_trial(study_id, template_trial)))
            except BaseException:
                self._forget(study_id)
                raise
            if trial.number != len(mirror.trials):
                _logger.warning("trial %d of study %d was not the next trial number (%d): another process writes "
                                "to this study; re-reading its trials from the database", trial.number, study_id,
                                len(mirror.trials))
                self._forget(study_id)
                return trial._trial_id
            self._store(mirror, trial)
            self._trial_index[trial._trial_id] = (study_id, trial.number)
            for name, dist in trial.distributions.items():
                mirror.distributions.setdefault(name, dist)
            return trial._trial_id

    def _insert_running_trial(self, study_id: int) -> FrozenTrial:
        """What Optuna's ``create_new_trial`` does for a fresh trial, as a few plain statements in one transaction.

        The study's row is locked while the trial's number (the count of the study's earlier
        trials) is set, as Optuna does; the start time is read back as the database stored it.
        """
        trials, studies = _models.TrialModel.__table__, _models.StudyModel.__table__
        with self._transaction() as session:
            conn = session.connection()
            if conn.execute(sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id)
                            .with_for_update()).first() is None:
                raise KeyError(f"No study with study_id {study_id} exists.")
            trial_id = conn.execute(sqlalchemy.insert(trials).values(
                study_id=study_id, number=None, state=TrialState.RUNNING,
                datetime_start=datetime.datetime.now())).inserted_primary_key[0]  # type: ignore[index]
            number = conn.execute(sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(
                trials.c.study_id == study_id, trials.c.trial_id < trial_id)).scalar_one()
            conn.execute(sqlalchemy.update(trials).where(trials.c.trial_id == trial_id).values(number=number))
            start = conn.execute(sqlalchemy.select(trials.c.datetime_start)
                                 .where(trials.c.trial_id == trial_id)).scalar_one()
        return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None, datetime_start=start,
                           datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                           intermediate_values={}, trial_id=trial_id)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: _dists.BaseDistribution) -> None:
        def change(mirror: _Mirror, trial: FrozenTrial) -> FrozenTrial | None:
            previous = mirror.distributions.get(param_name)
            if previous is not None:
                _dists.check_distribution_compatibility(previous, distribution)
            if param_name in trial.params:  # the database keeps the first value of a name, as the mirror does
                return None
            stored = _dists.json_to_distribution(_dists.distribution_to_json(distribution))
            mirror.distributions.setdefault(param_name, stored)
            new = self._merged(trial, "params", {param_name: stored.to_external_repr(float(param_value_internal))})
            new.distributions = {**trial.distributions, param_name: stored}
            return new

        if not self._queue(trial_id, ("param", trial_id, param_name, param_value_internal, distribution), change):
            self._write_trial(trial_id, lambda _m: self._backend.set_trial_param(
                trial_id, param_name, param_value_internal, distribution), None)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state.is_finished() and self._finish(trial_id, state, values):
            return True

        def write(_mirror) -> bool:
            return self._backend.set_trial_state_values(trial_id, state=state, values=values)

        def update(mirror: _Mirror, trial: FrozenTrial, changed: bool) -> None:
            if not changed:  # another process took the WAITING trial: the mirror no longer knows the study
                raise _Stale
            new = copy.copy(trial)
            for objective, v in enumerate(values or ()):
                new = self._with_value(new, objective, v)
            new.state = state
            if state == TrialState.RUNNING:
                _, db_state, new.datetime_start, new.datetime_complete = self._read_back(trial_id)
                if db_state != state:
                    raise _Stale
            self._store(mirror, new)

        try:
            return self._write_trial(trial_id, write, update)
        except _Stale:
            return False

    def _finish(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        """Queue a mirrored trial's values and final state; False for a trial this wrapper does not mirror."""
        with self._lock, self.grouped_writes():  # values and state: one transaction, even outside a block
            found = self._mirrored(trial_id)
            if found is None:
                return False
            self.check_trial_is_updatable(trial_id, found[1].state)
            for objective, v in enumerate(values or ()):
                stored = _models.TrialValueModel.value_to_stored_repr(v)
                self._queue(trial_id, ("value", trial_id, objective, dict(zip(("value", "value_type"), stored))),
                            lambda _m, trial, i=objective, v=v: self._with_value(trial, i, v))
            when = datetime.datetime.now()

            def change(_mirror: _Mirror, trial: FrozenTrial) -> FrozenTrial:
                new = copy.copy(trial)
                new.state, new.datetime_complete = state, when  # the stored time replaces it when written
                return new

            return self._queue(trial_id, ("finish", trial_id, (state, when)), change)

    @staticmethod
    def _with_value(trial: FrozenTrial, objective: int, value: float) -> FrozenTrial:
        new = copy.copy(trial)
        stored = list(trial.values) if trial.values is not None else []
        stored[objective:objective + 1] = [_stored_value(value)]
        new.values = stored
        return new

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        def update(mirror: _Mirror, trial: FrozenTrial, _result) -> None:
            self._store(mirror, self._merged(trial, "intermediate_values",
                                             {step: _stored_intermediate(intermediate_value)}))

        self._write_trial(trial_id, lambda _m: self._backend.set_trial_intermediate_value(
            trial_id, step, intermediate_value), update)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, "user", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr(trial_id, "system", key, value)

    def _set_attr(self, trial_id: int, kind: str, key: str, value: Any) -> None:
        text = json.dumps(value)
        if self._queue(trial_id, (f"{kind}_attr", trial_id, key, {"value_json": text}),
                       lambda _m, trial: self._merged(trial, f"{kind}_attrs", {key: json.loads(text)})):
            return
        setter = getattr(self._backend, f"set_trial_{kind}_attr")
        self._write_trial(trial_id, lambda _m: setter(trial_id, key, value), None)

    # ---- trial reads: the mirror ---------------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            found = self._mirrored(trial_id)
            if found is not None:
                return found[1]
        return self._backend.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        with self._lock:
            trials = list(self._mirror(study_id).trials.values())
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        """The parameter's internal value as the database's float column returns it (a categorical index too)."""
        trial = self.get_trial(trial_id)
        return float(trial.distributions[param_name].to_internal_repr(trial.params[param_name]))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """The best COMPLETE trial, from the mirror, with the checks in the order Optuna's RDB storage makes them.

        The directions come first (a multi-objective study raises RuntimeError even before any
        trial finished), and only trials with a stored value compete (a COMPLETE trial may have
        been written without one).
        """
        directions = self.get_study_directions(study_id)
        if len(directions) > 1:
            raise RuntimeError("Best trial can be obtained only for single-objective optimization.")
        trials = [t for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
        if not trials:
            raise ValueError("No trials are completed yet.")
        best = max if directions[0] == StudyDirection.MAXIMIZE else min
        return best(trials, key=lambda t: t.values[0])

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            trial = self._mirror(study_id).trials.get(trial_number)
        if trial is None:
            raise KeyError(f"No trial with trial number {trial_number} exists in study with study_id {study_id}.")
        return trial._trial_id

    def get_trial_number_from_id(self, trial_id: int) -> int:
        with self._lock:
            where = self._trial_index.get(trial_id)
        if where is not None:
            return where[1]
        return self._backend.get_trial_number_from_id(trial_id)

    def remove_session(self) -> None:
        self._backend.remove_session()


class _Stale(Exception):
    """The database did not do what the mirror expected: drop the mirror, re-read on the next read."""
