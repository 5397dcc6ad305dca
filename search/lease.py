"""The driver lease: at most one driver runs a study at a time.

Only the driver writes to storage (README, Architecture: "the driver owns the study"), and two
drivers on one study would each ask and tell trials and each treat the other's RUNNING trials as
interrupted. So a driver holds a *lease* in the study's system attributes (key :data:`LEASE_ATTR`):
who it is (host, pid, process start time, Ray address, command) and a heartbeat it refreshes from
its loop, which wakes at least once a second (:data:`HEARTBEAT_S`).

A second driver (``run`` or ``resume``) refuses with a message naming the holder, unless the
lease is *stale*:

* its heartbeat is older than :data:`STALE_AFTER_S` seconds (60 s: the holder crashed, lost its
  network, or its machine died), or
* it names a process on this same machine (same host name and boot) that no longer exists (a
  driver killed with SIGKILL), and its heartbeat is older than :data:`DEAD_GRACE_S` seconds
  (a live driver refreshes it every second, so a fresh heartbeat is never taken over on a pid
  check alone).

A stale lease is taken over: the new driver writes its own lease, waits :data:`SETTLE_S`, reads
the lease back and refuses if another driver's write landed meanwhile (two drivers starting in
the same instant: exactly one wins). It then recovers the old driver's RUNNING trials.

**Fencing.** A driver paused past the stale threshold (SIGSTOP, a hung machine, a long network
cut) and taken over must not write when it wakes, whatever it was doing: telling a result,
timing a trial out, recording its trials after SIGTERM. So every write transaction of a driver
that holds the lease begins by locking the lease's row and comparing the stored lease id with its
own (:func:`check_holder`, the fencing token): SQLite takes its write lock there, PostgreSQL
locks the row, so no takeover can commit between the check and the write. A stale driver's
write changes nothing and raises :class:`LeaseLost`; the driver then stops (exit status 3). The
heartbeat and the release are such compare-and-set writes too, so a woken driver never
overwrites its successor's lease.

Heartbeats compare wall-clock times across machines, so the hosts' clocks should agree to within
a few seconds (NTP); the 60 s threshold leaves room for that.

Example:
    >>> lease = DriverLease(study, command="resume")   # doctest: +SKIP
    >>> lease.acquire()          # raises LeaseHeld naming the running driver, if any
    >>> lease.heartbeat()        # from the loop; raises LeaseLost if taken over
    >>> lease.release()
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models as _models
from optuna.storages._rdb.storage import _create_scoped_session

__all__ = ["LEASE_ATTR", "HEARTBEAT_S", "STALE_AFTER_S", "DEAD_GRACE_S", "SETTLE_S", "LeaseInfo", "LeaseHeld",
           "LeaseLost", "DriverLease", "read_lease", "check_free", "check_holder"]

LEASE_ATTR = "fairfront.driver_lease"
HEARTBEAT_S = 1.0
STALE_AFTER_S = 60.0
DEAD_GRACE_S = 3.0
SETTLE_S = 0.5


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission
        return None


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a study, as stored in its system attributes."""

    id: str
    host: str
    pid: int
    boot_id: str | None
    pid_started: float | None
    started: float
    heartbeat: float
    command: str
    ray_address: str | None = None
    released: bool = False

    @classmethod
    def from_attr(cls, value: object) -> LeaseInfo | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})
        except TypeError:  # an attribute written by something else: treat as no lease
            return None

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return (time.time() if now is None else now) - self.heartbeat

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()

    def process_gone(self) -> bool:
        """True only when the holder is on this machine and its process no longer exists."""
        if not self.on_this_machine():
            return False
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            pass
        started = _process_start(self.pid)
        # the pid was reused by another process: the holder is gone
        return self.pid_started is not None and started is not None and abs(started - self.pid_started) > 1.0

    def stale_reason(self, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> str | None:
        """Why this lease may be taken over, or None while its holder looks alive."""
        age = self.age(now)
        if self.released:
            return "released"
        if age > stale_after_s:
            return f"no heartbeat for {age:.0f} s (stale after {stale_after_s:g} s)"
        if age > DEAD_GRACE_S and self.process_gone():
            return f"process {self.pid} on {self.host} no longer exists"
        return None

    def describe(self, now: float | None = None) -> str:
        since = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        where = f" (Ray {self.ray_address})" if self.ray_address else ""
        return (f"fairfront {self.command} on host {self.host}, pid {self.pid}{where}, since {since}, "
                f"last heartbeat {max(0.0, self.age(now)):.0f} s ago")


class LeaseHeld(RuntimeError):
    """Another driver holds the study and its heartbeat is fresh."""

    def __init__(self, study_name: str, holder: LeaseInfo, stale_after_s: float = STALE_AFTER_S):
        self.study_name = study_name
        self.holder = holder
        super().__init__(f"study {study_name!r} is being run by another driver: {holder.describe()}. "
                         f"Stop that driver, or wait until its heartbeat is older than {stale_after_s:g} s")


class LeaseLost(RuntimeError):
    """This driver's lease was taken over by another driver; the write that found out changed nothing."""

    def __init__(self, study_name: str, holder: LeaseInfo | None):
        self.study_name = study_name
        self.holder = holder
        who = holder.describe() if holder is not None and not holder.released else (
            "nobody (the lease was released or removed)")
        super().__init__(f"this driver lost the study's lease to {who}; nothing was written after the takeover "
                         f"(study {study_name!r}: this driver was stopped or cut off from the storage for longer "
                         "than the lease's stale age, and the other driver carries on)")


def _locked_lease(conn: sqlalchemy.Connection, study_id: int) -> LeaseInfo | None:
    """The stored lease, its row locked until the transaction ends."""
    attrs = _models.StudySystemAttributeModel.__table__
    where = sqlalchemy.and_(attrs.c.study_id == study_id, attrs.c.key == LEASE_ATTR)
    select = sqlalchemy.select(attrs.c.value_json).where(where)
    if conn.dialect.name == "sqlite":
        # pysqlite begins a transaction at the first write, and SQLite locks the database, not rows:
        # a write that changes nothing takes the write lock before the lease is read
        conn.execute(sqlalchemy.update(attrs).where(where).values(value_json=attrs.c.value_json))
    else:
        select = select.with_for_update()
    text = conn.execute(select).scalar_one_or_none()
    return LeaseInfo.from_attr(json.loads(text)) if text is not None else None


def check_holder(conn: sqlalchemy.Connection, study_id: int, lease_id: str, study_name: str) -> LeaseInfo:
    """The fencing check, first in a write transaction: the stored lease is still ``lease_id``'s.

    The lease's row stays locked until the transaction ends, so no other driver can take the study
    over between this check and the transaction's commit.

    Raises:
        LeaseLost: another driver holds the study (or the lease was released or removed); the
            caller's transaction must write nothing.
    """
    holder = _locked_lease(conn, study_id)
    if holder is None or holder.id != lease_id or holder.released:
        raise LeaseLost(study_name, holder)
    return holder


def read_lease(study: optuna.Study) -> LeaseInfo | None:
    """The lease stored in ``study``, or None (never held, or written by an older fairfront)."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return LeaseInfo.from_attr(attrs.get(LEASE_ATTR))


def check_free(study: optuna.Study, *, stale_after_s: float = STALE_AFTER_S) -> LeaseInfo | None:
    """Raise :class:`LeaseHeld` if a live driver holds ``study``; returns a stale lease, if any.

    A cheap early check (``resume`` calls it before preparing the study): it writes nothing. A
    holder on this machine whose process is gone but whose last heartbeat is younger than
    :data:`DEAD_GRACE_S` is waited for (at most that long), not refused.
    """
    holder = read_lease(study)
    if holder is None or holder.released:
        return None
    if holder.stale_reason(stale_after_s) is None and holder.process_gone():
        # killed a moment ago on this machine: wait out the grace period instead of refusing
        time.sleep(max(0.0, DEAD_GRACE_S - holder.age()) + 0.1)
    if holder.stale_reason(stale_after_s) is None:
        raise LeaseHeld(study.study_name, holder, stale_after_s)
    return holder


class DriverLease:
    """This driver's lease on one study.

    Args:
        study: the study to hold.
        command: what this driver is (``run`` or ``resume``), shown to a refused second driver.
        ray_address: the Ray cluster this driver uses, shown likewise.
        stale_after_s: heartbeat age after which another driver may take the study over.
    """

    def __init__(self, study: optuna.Study, *, command: str, ray_address: str | None = None,
                 stale_after_s: float = STALE_AFTER_S):
        if stale_after_s <= DEAD_GRACE_S:
            raise ValueError(f"stale_after_s must be more than {DEAD_GRACE_S} s, got {stale_after_s}")
        self.study = study
        self.stale_after_s = stale_after_s
        now = time.time()
        self.info = LeaseInfo(id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), boot_id=_boot_id(),
                              pid_started=_process_start(os.getpid()), started=now, heartbeat=now,
                              command=command, ray_address=ray_address)
        self.held = False
        self._last_beat = 0.0

    def _write(self, info: LeaseInfo) -> None:
        self.study._storage.set_study_system_attr(self.study._study_id, LEASE_ATTR, asdict(info))

    def acquire(self) -> LeaseInfo | None:
        """Take the lease; returns the stale lease taken over (None if the study was free).

        Raises:
            LeaseHeld: a live driver holds the study, or another driver won a simultaneous start.
        """
        previous = check_free(self.study, stale_after_s=self.stale_after_s)
        self.info = _beat(self.info)
        try:
            self._write(self.info)
        except Exception as err:
            if type(err).__name__ != "IntegrityError":  # not a simultaneous first insert of the attribute
                raise
        time.sleep(SETTLE_S)
        current = read_lease(self.study)
        if current is None or current.id != self.info.id:
            raise LeaseHeld(self.study.study_name, current if current is not None else self.info,
                            self.stale_after_s)
        self.held = True
        self._last_beat = time.monotonic()
        return previous

    def heartbeat(self, *, force: bool = False) -> None:
        """Refresh the heartbeat (at most once per :data:`HEARTBEAT_S` unless ``force``).

        Raises:
            LeaseLost: another driver took the study over; this one must stop writing.
        """
        if not self.held or (not force and time.monotonic() - self._last_beat < HEARTBEAT_S):
            return
        try:
            self.info = self._write_if_held(_beat(self.info))
        except LeaseLost:
            self.held = False
            raise
        self._last_beat = time.monotonic()

    def release(self) -> None:
        """Mark the lease released so the next driver starts at once (no-op if not held)."""
        if not self.held:
            return
        self.held = False
        try:
            self._write_if_held(LeaseInfo(**{**asdict(self.info), "heartbeat": time.time(), "released": True}))
        except LeaseLost:  # not ours any more: the newcomer's lease stays as it is
            pass

    def _write_if_held(self, info: LeaseInfo) -> LeaseInfo:
        """Write ``info`` as the lease only while the stored lease is still this driver's (compare and set)."""
        storage = getattr(self.study._storage, "backend", self.study._storage)
        if not isinstance(storage, RDBStorage):  # no transactions to fence with (in-memory storage: one process)
            current = read_lease(self.study)
            if current is None or current.id != self.info.id:
                raise LeaseLost(self.study.study_name, current)
            self._write(info)
            return info
        attrs = _models.StudySystemAttributeModel.__table__
        with _create_scoped_session(storage.scoped_session) as session:
            conn = session.connection()
            check_holder(conn, self.study._study_id, self.info.id, self.study.study_name)
            conn.execute(sqlalchemy.update(attrs).where(attrs.c.study_id == self.study._study_id,
                                                        attrs.c.key == LEASE_ATTR)
                         .values(value_json=json.dumps(asdict(info))))
        return info


def _beat(info: LeaseInfo) -> LeaseInfo:
    return LeaseInfo(**{**asdict(info), "heartbeat": time.time(), "released": False})
