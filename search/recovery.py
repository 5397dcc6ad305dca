"""Recovering the trials a driver left RUNNING: marked FAIL with the reason, their parameters enqueued again.

Optuna's heartbeat does not cover ask/tell, so recovery is explicit: a trial left RUNNING by a
driver that died (even by SIGKILL) is marked FAIL with the reason "interrupted" and its
parameters are enqueued again, so ``resume`` re-runs exactly the interrupted work (of a replicated
trial, the replicates that had not finished: the finished ones go with the re-run). Recovery is
idempotent: the parameters are enqueued before the trial is marked FAIL, and a trial that already
has a re-run enqueued is not enqueued twice, so a driver killed during recovery loses nothing and
duplicates nothing.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from fairfront.search.attrs import REASON_ATTR, REPLICATE_ATTR, RETRY_OF_ATTR
from fairfront.search.storage import grouped_writes

__all__ = ["recover_interrupted"]


def recover_interrupted(study: optuna.Study, reason: str = "interrupted: the driver stopped before the trial "
                        "finished; its parameters were enqueued again") -> int:
    """Mark RUNNING trials FAIL and enqueue their parameters again; returns how many.

    Idempotent: a RUNNING trial whose re-run is already enqueued (a driver killed during an earlier
    recovery) is only marked FAIL.
    """
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    count = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if t.number not in retried:
            # a re-run killed before its parameters were written still carries them as its fixed params
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            kept = {k: v for k, v in t.system_attrs.items() if k.startswith(REPLICATE_ATTR + ".")}
            study.add_trial(optuna.trial.create_trial(  # as enqueue_trial does, keeping finished replicates
                state=TrialState.WAITING, system_attrs={"fixed_params": params, **kept},
                user_attrs={RETRY_OF_ATTR: t.number}))
        with grouped_writes(study)():  # the reason and the FAIL state together, or neither
            storage.set_trial_user_attr(t._trial_id, REASON_ATTR, reason)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        count += 1
    return count
