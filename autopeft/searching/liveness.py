"""Who is running which trial, and what happens to trials whose worker died.

A worker that trains a trial stamps it with the user attribute ``worker`` =
``{"host", "pid", "claimed", "beat"}`` and refreshes ``beat`` every :data:`HEARTBEAT_S` seconds from a
background thread. A RUNNING trial is *stale* when

- its worker ran on this host and that process no longer exists (a killed search, found at once), or
- its last beat is older than :data:`GRACE_S` (a worker on another machine that died or lost the network).

Only stamps written after the trial was (re)claimed count: the claim sets Optuna's ``datetime_start``,
so a stamp older than that belongs to a previous owner and a freshly claimed trial is never stale.

A stale trial that had started training (``status`` in :data:`~autopeft.core.choices.TRAINED_OR_TRAINING`: ``running``, or ``complete``
/ ``stopped`` when the worker died between recording the outcome and telling Optuna) goes back to
WAITING: the next
worker claims it atomically (Optuna's WAITING -> RUNNING transition, which every storage performs as
a compare-and-set) and continues it from its last checkpoint under the same trial number, so nothing
is lost or counted twice. A stale trial that never started training (killed while sampling) is
marked FAIL with reason "interrupted".
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autopeft.core.choices import TRAINED_OR_TRAINING, TrialStatus

HEARTBEAT_S = 15.0
GRACE_S = 120.0
WORKER_ATTR = "worker"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(trial: FrozenTrial, now: float | None = None, grace_s: float = GRACE_S) -> bool:
    if trial.state != TrialState.RUNNING:
        return False
    now = time.time() if now is None else now
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    stamp: dict[str, Any] = trial.user_attrs.get(WORKER_ATTR) or {}
    current = stamp.get("claimed", 0.0) >= started - 1.0  # the stamp belongs to the present claim
    if current and stamp.get("host") == socket.gethostname() and not _pid_alive(int(stamp.get("pid", -1))):
        return True
    last = max(started, stamp.get("beat", 0.0) if current else 0.0)
    return now - last > grace_s


def recover_stale(study: optuna.Study, grace_s: float = GRACE_S) -> list[int]:
    """Put stale trials back in the queue (or fail them); returns their numbers."""
    storage = study._storage
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, grace_s=grace_s):
            continue
        try:
            if trial.user_attrs.get("status") in TRAINED_OR_TRAINING:
                requeue(study, trial)
            else:
                storage.set_trial_user_attr(trial._trial_id, "status", TrialStatus.FAILED)
                storage.set_trial_user_attr(trial._trial_id, "reason", "interrupted before training started")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # someone else dealt with it
        recovered.append(trial.number)
    return recovered


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> None:
    """Put an interrupted trial back in the queue (WAITING), counting the interruption; the next worker
    claims it (:func:`claim_interrupted`) and continues it from its checkpoint."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "interruptions", int(trial.user_attrs.get("interruptions", 0)) + 1)
    storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)


def claim_interrupted(study: optuna.Study) -> optuna.Trial | None:
    """Atomically claim a WAITING trial that was interrupted mid-training (to continue it), if any."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if trial.user_attrs.get("status") not in TRAINED_OR_TRAINING:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, trial._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def stamp_claim(study: optuna.Study, trial_id: int) -> None:
    """Stamp a just-claimed trial with this worker at once: a worker killed while it samples the plan
    (before the :class:`Heartbeat` starts) is then found dead by its pid, not after ``GRACE_S``."""
    now = time.time()
    study._storage.set_trial_user_attr(trial_id, WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid(),
                                                               "claimed": now, "beat": now})


class Heartbeat:
    """Stamp a trial with this worker and refresh the stamp until :meth:`stop`."""

    def __init__(self, study: optuna.Study, trial_id: int, interval_s: float = HEARTBEAT_S) -> None:
        self.storage = study._storage
        self.trial_id = trial_id
        self.interval_s = interval_s
        self.stamp = {"host": socket.gethostname(), "pid": os.getpid(), "claimed": time.time(), "beat": time.time()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.storage.set_trial_user_attr(self.trial_id, WORKER_ATTR, self.stamp)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.stamp["beat"] = time.time()
            # a missed beat is harmless (the trial may just have finished)
            with contextlib.suppress(Exception):
                self.storage.set_trial_user_attr(self.trial_id, WORKER_ATTR, dict(self.stamp))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def exit_when_orphaned(parent_pid: int, interval_s: float = 1.0) -> None:
    """In a worker started by ``autopeft search --workers N``: exit as soon as the parent dies, so a
    killed search never leaves workers training on (their trials become stale and are resumed)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
