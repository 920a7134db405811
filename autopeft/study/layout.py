"""The study directory's layout, defined once: every path inside it and the names in its Optuna storage.

The writer (:class:`autopeft.study.files.StudyFiles`, a layout that also writes), the reader
(:class:`autopeft.study.view.StudyView`), the lock, the search and the commands that take a study
directory all ask a :class:`StudyLayout` for a path instead of spelling file and folder names::

    study.db          Optuna storage (SQLite) unless --storage points elsewhere; the source of truth
    settings.json     the settings that define the study (a resume with other settings is refused),
                      the storage URL (password removed) and the study name
    trials.csv        every trial: number, state, status, baseline (a baseline recipe's name), metric, params, params_pct, memory_bytes,
                      steps, rung_metrics, retrain_mean, retrain_std, duration_s, seed, reason,
                      summary, plan (JSON)
    pareto.csv        the same columns for the front: non-dominated plans among those trained to
                      full fidelity (the top rung)
    trials/<n>/       each full-fidelity trial's adapter directory; while a trial trains,
                      checkpoint.safetensors (removed when it finishes); seed-<s>/ for final-stage
                      retrainings
    front/<n>/        every front plan's adapter (the retraining seed with the median metric)
    best/             the pick: plan.json, adapter.safetensors, autopeft_config.json, metrics.json
    summary.json      settings, split record, rungs, front with mean ± std, the pick with validation
                      and test metrics, trial counts, compute spent, machine
    logs/             output of local worker processes (--workers N): worker-<i>.log
    ray/              Ray Tune's own records (--backend ray)
    baselines/<name>/ optional single-method reference adapters, drawn on the Pareto plots
    .search.lock      held by the running ``autopeft search`` (:mod:`autopeft.study.lock`)
    report.html       ``autopeft report`` (with pareto.html next to it); pareto.png and pareto.html
                      also from ``autopeft pareto --plot``

``<n>`` is a trial number zero-padded to four digits (``trials/0005/``), ``<s>`` a seed
(``trials/0005/seed-1000006/``).

In the storage the study is named :data:`STUDY_NAME` unless ``--study-name`` says otherwise, and the
final stage records trial ``n``'s retraining as the study user attribute ``retrain:<n>``
(:func:`retrain_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

STUDY_NAME = "autopeft"  # the study's name in the storage unless --study-name is given
RETRAIN_PREFIX = "retrain:"  # study user attribute per retrained trial: "retrain:<number>"
TRIAL_DIGITS = 4  # trial folders are zero-padded: trials/0005
SEED_PREFIX = "seed-"  # a final-stage retraining's folder: trials/0005/seed-1000006


def retrain_key(number: int) -> str:
    """The study user attribute that holds trial ``number``'s final-stage retraining record."""
    return f"{RETRAIN_PREFIX}{number}"


def retrain_records(user_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Final-stage retraining records by trial number, from a study's user attributes."""
    return {int(key[len(RETRAIN_PREFIX):]): value for key, value in user_attrs.items()
            if key.startswith(RETRAIN_PREFIX) and key[len(RETRAIN_PREFIX):].isdigit() and isinstance(value, dict)}


def _numbered(number: int) -> str:
    return f"{number:0{TRIAL_DIGITS}d}"


class _Entry:
    """A name directly under the study directory: ``layout.study_db`` is ``layout.root / "study.db"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, layout: None, owner: type | None = None) -> _Entry: ...

    @overload
    def __get__(self, layout: StudyLayout, owner: type | None = None) -> Path: ...

    def __get__(self, layout: StudyLayout | None, owner: type | None = None) -> Path | _Entry:
        return self if layout is None else layout.root / self.name


@dataclass(frozen=True)
class StudyLayout:
    """Every path inside the study directory ``root`` (nothing is read or written here)."""

    root: Path

    study_db = _Entry("study.db")
    settings_json = _Entry("settings.json")
    summary_json = _Entry("summary.json")
    trials_csv = _Entry("trials.csv")
    pareto_csv = _Entry("pareto.csv")
    lock_file = _Entry(".search.lock")
    report_html = _Entry("report.html")
    pareto_png = _Entry("pareto.png")
    pareto_html = _Entry("pareto.html")
    trials_root = _Entry("trials")
    front_root = _Entry("front")
    best_dir = _Entry("best")
    logs_dir = _Entry("logs")
    ray_dir = _Entry("ray")
    baselines_dir = _Entry("baselines")
    oneshot_dir = _Entry("oneshot")  # the supernet's checkpoint and its readouts (--strategy oneshot)

    @property
    def storage_url(self) -> str:
        """The SQLite URL of :attr:`study_db` (absolute, so it works from any working directory)."""
        return f"sqlite:///{self.study_db.resolve()}"

    def trial_dir(self, number: int) -> Path:
        return self.trials_root / _numbered(number)

    def checkpoint_path(self, number: int) -> Path:
        return self.trial_dir(number) / "checkpoint.safetensors"

    def seed_dir(self, number: int, seed: int) -> Path:
        return self.trial_dir(number) / f"{SEED_PREFIX}{seed}"

    def front_dir(self, number: int) -> Path:
        return self.front_root / _numbered(number)

    def worker_log(self, index: int) -> Path:
        return self.logs_dir / f"worker-{index}.log"

    def retrainings(self) -> list[Path]:
        """Every finished final-stage retraining (front finalists and baselines): its metrics.json."""
        return sorted(self.trials_root.glob(f"*/{SEED_PREFIX}*/metrics.json"))

    # --- questions --------------------------------------------------------------------------------
    def is_study(self) -> bool:
        """Whether ``root`` holds a study: its SQLite storage or its settings (an external storage)."""
        return self.study_db.is_file() or self.settings_json.is_file()

    def adapter_candidates(self, number: int) -> tuple[Path, ...]:
        """Where trial ``number``'s adapter may be, best first: its front copy (retrained at full
        fidelity), then its own; each as written (zero-padded) and unpadded."""
        return (self.front_root / str(number), self.front_dir(number), self.trial_dir(number),
                self.trials_root / str(number))
