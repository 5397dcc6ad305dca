"""The driver's storage: every trial read served from an exact in-memory mirror, every write to the database.

Optuna's RDB storage answers each read with SQL: ``study.ask()`` reads all WAITING trials, a
``Trial`` reads itself, ``study.tell()`` reads the trial twice more, and each of those reads
builds the whole trial from six queries. That was most of the driver's cost per trial
(``benchmarks/driver_overhead.py``). :class:`DriverStorage` wraps the
:class:`~optuna.storages.RDBStorage` that :func:`fairfront.search.storage.open_storage` returns:

* **Writes** go straight to the database, one transaction each, exactly as before: a trial the
  driver created, sampled or told is committed before the call returns, so it survives SIGKILL
  of the driver (``resume`` relies on that). The mirror is updated only after the write
  succeeded; a write that raises (for any reason, even after its commit) makes the wrapper
  forget that study's mirror, which is then rebuilt from the database on the next read.
* **Trial reads** (``get_trial``, ``get_all_trials``, trial ids and numbers, params and
  attributes, ``get_best_trial``) are answered from a mirror of the study's trials, built once
  from the database on the first read and then updated by every write that passes through the
  wrapper. What the mirror holds is what the database returns for the same trial: attribute
  values go through the same JSON round trip, parameters through the stored distribution JSON
  and the internal float, values and intermediate values through their stored form, and the
  timestamps the database sets (a trial's start, a WAITING trial becoming RUNNING, a trial
  finishing) are read back from the database in one small query.
* **Parameters sampled together** (:meth:`DriverStorage.grouped_params`, around the driver's
  sampling of one trial, which ends before the trial is submitted) reach the database in one
  transaction instead of one per ``suggest_*`` call.
* **Study-level calls** (names, user and system attributes, where the driver lease lives, the
  list of studies) go to the database unchanged; only what cannot change, a study's directions
  and name, is kept.

Why the mirror is exact: only the driver writes to the study (DESIGN.md, decision 1), and the
lease (:mod:`fairfront.search.lease`) guarantees one driver per study. The driver builds the
mirror after it holds the lease (on its first trial read), so no other process changes the
study's trials while the mirror lives, and every change the driver makes passes through this
wrapper. The mirror also checks the one thing it can see cheaply: a trial the driver creates
must get the next trial number; if it does not, another process created trials, and the mirror
is rebuilt from the database (with a warning).

What would break it: a second writer to the same study while a driver runs, e.g. someone telling
or enqueueing trials from optuna-dashboard or a notebook, or a driver that was paused past the
lease's stale threshold and writes once more before its heartbeat notices it lost the lease. The
database stays correct in those cases (every write still goes there), but this driver would not
see the other writer's changes to trials it already mirrors until it is restarted. Readers
(``fairfront status``/``front``, the dashboard) do not use this class: they keep the plain storage
and always see the database.

Example:
    >>> storage = DriverStorage(open_storage("sqlite:///studies/fairfront.db"))   # doctest: +SKIP
    >>> study = optuna.load_study(study_name="demo", storage=storage)              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
import sqlalchemy
from optuna import distributions as _dists
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["DriverStorage"]

_logger = logging.getLogger(__name__)

try:  # Optuna's own helpers, so the mirror stores values exactly as the database returns them
    from optuna.storages._rdb import models as _models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError:  # pragma: no cover - another Optuna layout: fall back to full reads of the trial
    _models = None
    _create_scoped_session = None


def _json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _stored_value(value: float) -> float:
    if _models is None:  # pragma: no cover
        return float(value)
    return _models.TrialValueModel.stored_repr_to_value(*_models.TrialValueModel.value_to_stored_repr(value))


def _stored_intermediate(value: float) -> float:
    if _models is None:  # pragma: no cover
        return float(value)
    model = _models.TrialIntermediateValueModel
    return model.stored_repr_to_intermediate_value(*model.intermediate_value_to_stored_repr(value))


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
        self._pending: list[tuple[int, str, float, _dists.BaseDistribution]] = []
        self._grouping: tuple[int, int] | None = None  # (thread id, depth) of an open grouped_params block

    @property
    def backend(self) -> RDBStorage:
        """The database storage underneath."""
        return self._backend

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

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
        """Run ``write`` against the database, then ``update(mirror, trial)`` (copy-on-write) on success.

        A trial this wrapper does not mirror (another study, or one created behind its back) is
        written through; every mirror is then dropped, since one of them may hold it.
        """
        with self._lock:
            self._flush_params()  # a trial's parameters reach the database before anything told about it
            found = self._mirrored(trial_id)
            if found is None:
                try:
                    return write(None)
                finally:
                    self._forget_all()
            mirror, trial = found
            study_id = self._trial_index[trial_id][0]
            try:
                result = write(mirror)
                update(mirror, trial, result)
            except BaseException:
                self._forget(study_id)
                raise
            return result

    def _merging(self, field: str, changes: dict[Any, Any]):
        """An ``update`` for :meth:`_write_trial` that merges ``changes`` into one dict field of the trial (copy-on-write)."""

        def update(mirror: _Mirror, trial: FrozenTrial, _result) -> None:
            new = copy.copy(trial)
            setattr(new, field, {**getattr(trial, field), **changes})
            self._store(mirror, new)

        return update

    def _read_back(self, trial_id: int) -> tuple[int, TrialState, Any, Any]:
        """Number, state and the timestamps the database set, in one small query."""
        if _create_scoped_session is None:  # pragma: no cover
            t = self._backend.get_trial(trial_id)
            return t.number, t.state, t.datetime_start, t.datetime_complete
        with _create_scoped_session(self._backend.scoped_session) as session:
            row = session.get(_models.TrialModel, trial_id)
            if row is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            return row.number, row.state, row.datetime_start, row.datetime_complete

    def refresh(self, study_id: int | None = None) -> None:
        """Forget the mirror of ``study_id`` (all studies if None); the next read rebuilds it."""
        with self._lock:
            if study_id is None:
                self._forget_all()
            else:
                self._forget(study_id)

    @contextmanager
    def grouped_params(self) -> Iterator[None]:
        """Within the block, the parameters this thread sets reach the database in one transaction.

        ``trial.suggest_*`` writes one parameter at a time, each its own transaction. Inside this
        block a parameter of a mirrored trial is checked (trial still running, distribution
        compatible with the study's, first value of a name kept, as the database does), put in
        the mirror at once, and written with the others when the block ends, even when it ends
        with an exception, or earlier when any other write comes first. The driver samples a
        trial inside the block before submitting it, so a trial never runs on parameters the
        database does not hold; a driver killed inside the block leaves a RUNNING trial with
        fewer parameters, which recovery enqueues again as it would any interrupted trial.
        """
        me = threading.get_ident()
        with self._lock:
            if self._grouping is not None and self._grouping[0] != me:
                raise RuntimeError("grouped_params is already open in another thread")
            depth = 0 if self._grouping is None else self._grouping[1]
            self._grouping = (me, depth + 1)
        try:
            yield
        finally:
            with self._lock:
                if depth == 0:
                    self._grouping = None
                    self._flush_params()
                else:
                    self._grouping = (me, depth)

    def _groups_params(self) -> bool:
        return (self._grouping is not None and self._grouping[0] == threading.get_ident()
                and _create_scoped_session is not None)

    def _flush_params(self) -> None:
        """Write the grouped parameters in one transaction; on failure the mirror is rebuilt from the database."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            with _create_scoped_session(self._backend.scoped_session) as session:
                # what Optuna's own set_trial_param does per parameter (the trial must still be running,
                # distributions were checked against the study's above), as one multi-row insert
                for trial_id in dict.fromkeys(p[0] for p in pending):
                    trial = _models.TrialModel.find_or_raise_by_id(trial_id, session)
                    self._backend.check_trial_is_updatable(trial_id, trial.state)
                session.execute(sqlalchemy.insert(_models.TrialParamModel), [
                    {"trial_id": trial_id, "param_name": name, "param_value": float(internal),
                     "distribution_json": _dists.distribution_to_json(distribution)}
                    for trial_id, name, internal, distribution in pending])
        except BaseException:
            self._forget_all()
            raise

    # ---- studies: the database, except what never changes -------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        study_id = self._backend.create_new_study(directions=directions, study_name=study_name)
        with self._lock:
            self._directions[study_id] = list(directions)
        return study_id

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self._forget(study_id)
            self._directions.pop(study_id, None)
            self._names.pop(study_id, None)
        self._backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

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

    def get_all_studies(self) -> list[optuna.study.FrozenStudy]:
        return self._backend.get_all_studies()

    # ---- trial writes: the database first, then the mirror ------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        with self._lock:
            self._flush_params()
            mirror = self._mirror(study_id)
            try:
                trial_id = self._backend.create_new_trial(study_id, template_trial)
                if template_trial is None:
                    number, state, start, complete = self._read_back(trial_id)
                    trial = FrozenTrial(number=number, state=state, value=None, values=None, datetime_start=start,
                                        datetime_complete=complete, params={}, distributions={}, user_attrs={},
                                        system_attrs={}, intermediate_values={}, trial_id=trial_id)
                else:  # enqueued or added trials: rare; read back exactly what the database made of the template
                    trial = self._backend.get_trial(trial_id)
            except BaseException:
                self._forget(study_id)
                raise
            if trial.number != len(mirror.trials):
                _logger.warning("trial %d of study %d was not the next trial number (%d): another process writes "
                                "to this study; re-reading its trials from the database", trial.number, study_id,
                                len(mirror.trials))
                self._forget(study_id)
                return trial_id
            self._store(mirror, trial)
            self._trial_index[trial_id] = (study_id, trial.number)
            for name, dist in trial.distributions.items():
                mirror.distributions.setdefault(name, dist)
            return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: _dists.BaseDistribution) -> None:
        with self._lock:
            found = self._mirrored(trial_id) if self._groups_params() else None
            if found is not None:
                mirror, trial = found
                self.check_trial_is_updatable(trial_id, trial.state)
                previous = mirror.distributions.get(param_name)
                if previous is not None:
                    _dists.check_distribution_compatibility(previous, distribution)
                if param_name not in trial.params:  # the database would keep the first value, as here
                    self._pending.append((trial_id, param_name, param_value_internal, distribution))
                    self._set_param_in_mirror(mirror, trial, param_name, param_value_internal, distribution)
                return

        def write(mirror: _Mirror | None) -> None:
            if mirror is None or not hasattr(self._backend, "_set_trial_param"):
                self._backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
                return
            previous = mirror.distributions.get(param_name)
            if previous is not None:
                _dists.check_distribution_compatibility(previous, distribution)
            # the mirror knows every distribution in the study: spare the database its look-up
            self._backend._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                           previous if previous is not None else distribution)

        def update(mirror: _Mirror, trial: FrozenTrial, _result) -> None:
            if param_name not in trial.params:  # else the database kept the first value (unique key, ignored)
                self._set_param_in_mirror(mirror, trial, param_name, param_value_internal, distribution)

        self._write_trial(trial_id, write, update)

    def _set_param_in_mirror(self, mirror: _Mirror, trial: FrozenTrial, name: str, internal: float,
                             distribution: _dists.BaseDistribution) -> None:
        stored = _dists.json_to_distribution(_dists.distribution_to_json(distribution))
        new = copy.copy(trial)
        new.params = {**trial.params, name: stored.to_external_repr(float(internal))}
        new.distributions = {**trial.distributions, name: stored}
        mirror.distributions.setdefault(name, stored)
        self._store(mirror, new)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        def write(_mirror) -> bool:
            return self._backend.set_trial_state_values(trial_id, state=state, values=values)

        def update(mirror: _Mirror, trial: FrozenTrial, changed: bool) -> None:
            if not changed:  # another process took the WAITING trial: the mirror no longer knows the study
                raise _Stale
            new = copy.copy(trial)
            if values is not None and len(values) > 0:
                stored = list(trial.values) if trial.values is not None else []
                for objective, v in enumerate(values):
                    if objective < len(stored):
                        stored[objective] = _stored_value(v)
                    else:
                        stored.append(_stored_value(v))
                new.values = stored
            new.state = state
            if state == TrialState.RUNNING or state.is_finished():
                _, db_state, new.datetime_start, new.datetime_complete = self._read_back(trial_id)
                if db_state != state:
                    raise _Stale
            self._store(mirror, new)

        try:
            return self._write_trial(trial_id, write, update)
        except _Stale:
            return False

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._write_trial(trial_id, lambda _m: self._backend.set_trial_intermediate_value(trial_id, step,
                                                                                          intermediate_value),
                          self._merging("intermediate_values", {step: _stored_intermediate(intermediate_value)}))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write_trial(trial_id, lambda _m: self._backend.set_trial_user_attr(trial_id, key, value),
                          self._merging("user_attrs", {key: _json_round_trip(value)}))

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Set several user attributes of one trial in one transaction (a trial's results: many keys).

        Falls back to one transaction per key where Optuna's per-attribute helper is not there.
        """
        if not attrs:
            return
        if not hasattr(self._backend, "_set_trial_attr_without_commit") or _create_scoped_session is None:
            for key, value in attrs.items():  # pragma: no cover - another Optuna layout
                self.set_trial_user_attr(trial_id, key, value)
            return

        def write(_mirror) -> None:
            with _create_scoped_session(self._backend.scoped_session, True) as session:
                for key, value in attrs.items():
                    self._backend._set_trial_attr_without_commit(session, _models.TrialUserAttributeModel, trial_id,
                                                                 key, value)

        self._write_trial(trial_id, write, self._merging("user_attrs", {k: _json_round_trip(v) for k, v in attrs.items()}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write_trial(trial_id, lambda _m: self._backend.set_trial_system_attr(trial_id, key, value),
                          self._merging("system_attrs", {key: _json_round_trip(value)}))

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
