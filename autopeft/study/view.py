"""A read-only view of a study directory, for ``pareto``, ``show``, ``report`` and ``export``.

It reads the Optuna storage (the source of truth) plus ``settings.json`` / ``summary.json`` and turns
every trial into a :class:`TrialView`. Trial user attributes that newer searches record are used when
present and never required: ``steps`` (fidelity reached), ``rung_metrics``, ``memory_bytes`` (estimated
peak training memory), ``retrain`` (``{"seeds", "values", "mean", "std"}`` of a front plan retrained at
full fidelity) and ``baseline`` (the name of a single-method baseline trial).

Search efficiency: the hypervolume of the (validation metric, trainable parameters) front after each
trained trial, against the cumulative number of training steps spent so far. Objectives are
normalised so the reference point is fixed and stated:

    x = params / budget_params            reference x_ref = 1   (the budget itself)
    y = metric (accuracy, maximised)      reference y_ref = 0
    y = -loss  (LM loss, minimised)       reference y_ref = -(worst validation loss of any completed trial)

    HV = area dominated by the front inside [0, x_ref] x [y_ref, best]

so a front that reaches the same metric with fewer parameters has a larger hypervolume.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autopeft.core.choices import TrialStatus
from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan
from autopeft.study.layout import STUDY_NAME, StudyLayout, retrain_records


@dataclass
class TrialView:
    number: int
    state: str  # complete | pruned | fail | running | waiting
    status: str  # autopeft's own status: complete | infeasible | failed | interrupted | ...
    metric: float | None
    params: int | None
    params_pct: float | None
    plan: Plan | None
    attrs: dict[str, Any]
    completed_at: datetime | None
    on_front: bool = False

    @property
    def summary(self) -> str:
        return self.plan.describe() if self.plan is not None else ""

    @property
    def retrain(self) -> dict[str, Any] | None:
        value = self.attrs.get("retrain")
        return value if isinstance(value, dict) and "mean" in value else None

    @property
    def metric_mean(self) -> float | None:
        """The retrained mean when the plan was retrained at full fidelity, else the search metric."""
        return float(self.retrain["mean"]) if self.retrain else self.metric

    @property
    def metric_std(self) -> float | None:
        """Sample standard deviation over the retraining seeds; None with fewer than two (undefined)."""
        r = self.retrain
        if not r or r.get("std") is None or len(r.get("values") or r.get("seeds") or ()) < 2:
            return None
        return float(r["std"])

    @property
    def collapsed_seeds(self) -> list[int]:
        """Retraining seeds whose adapter predicted one class for all of validation (the final stage's record)."""
        return [int(s) for s in (self.retrain or {}).get("collapsed_seeds") or ()]

    @property
    def steps(self) -> int:
        """Training steps this trial spent (0 for plans never trained, e.g. over budget)."""
        if "steps" in self.attrs:
            return int(self.attrs["steps"])
        if self.status == TrialStatus.INFEASIBLE or self.metric is None and "train_config" not in self.attrs:
            return 0
        return int(self.attrs.get("train_config", {}).get("steps", 0))

    @property
    def memory_bytes(self) -> int | None:
        value = self.attrs.get("memory_bytes")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def baseline(self) -> str | None:
        value = self.attrs.get("baseline")
        return str(value) if value else None

    def row(self) -> dict[str, Any]:
        """Plain JSON-able record (what ``pareto --json`` prints)."""
        return {"number": self.number, "state": self.state, "status": self.status, "metric": self.metric,
                "metric_mean": self.metric_mean, "metric_std": self.metric_std,
                "collapsed_seeds": self.collapsed_seeds, "params": self.params,
                "params_pct": self.params_pct, "memory_bytes": self.memory_bytes, "steps": self.steps,
                "duration_s": self.attrs.get("duration_s"), "seed": self.attrs.get("seed"),
                "on_front": self.on_front, "baseline": self.baseline, "summary": self.summary,
                "plan": self.plan.to_dict() if self.plan is not None else None}


@dataclass
class Baseline:
    """A single-method reference point: a baseline trial, or an adapter dir under ``baselines/``."""

    name: str
    metric: float
    params: int


@dataclass
class StudyView:
    root: Path
    settings: dict[str, Any]
    summary: dict[str, Any]
    trials: list[TrialView]
    metric: str
    greater_is_better: bool
    base_params: int
    budget_params: int | None
    baselines: list[Baseline] = field(default_factory=list)

    @property
    def layout(self) -> StudyLayout:
        return StudyLayout(self.root)

    # --- selections --------------------------------------------------------------------------
    @property
    def completed(self) -> list[TrialView]:
        return [t for t in self.trials if t.state == "complete" and t.metric is not None and t.params is not None]

    @property
    def front(self) -> list[TrialView]:
        return sorted((t for t in self.trials if t.on_front), key=lambda t: (t.params or 0, t.number))

    def trial(self, number: int) -> TrialView:
        for t in self.trials:
            if t.number == number:
                return t
        raise UserError(f"{self.root} has no trial {number}; trials: 0-{len(self.trials) - 1}")

    def best(self) -> TrialView | None:
        """The pick recorded in summary.json, else the front's best (retrained) metric."""
        recorded = self.summary.get("best", {}).get("trial") if isinstance(self.summary.get("best"), dict) else None
        if recorded is not None:
            try:
                return self.trial(int(recorded))
            except UserError:
                pass
        sign = 1 if self.greater_is_better else -1
        front = self.front
        return max(front, key=lambda t: (sign * (t.metric_mean or 0.0), -(t.params or 0))) if front else None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            key = TrialStatus.INFEASIBLE.value if t.status == TrialStatus.INFEASIBLE else t.state
            out[key] = out.get(key, 0) + 1
        return out

    # --- search efficiency -------------------------------------------------------------------
    def reference_point(self) -> tuple[float, float]:
        """(x_ref, y_ref) in normalised space; see the module docstring."""
        if self.greater_is_better:
            return 1.0, 0.0
        worst = max((t.metric for t in self.completed if t.metric is not None), default=0.0)
        return 1.0, -float(worst)

    def efficiency_curve(self) -> list[dict[str, float]]:
        """Hypervolume of the front after each trained trial, against cumulative training steps."""
        budget = self.budget_params or max((t.params or 0 for t in self.completed), default=1) or 1
        ref = self.reference_point()
        order = sorted(self.trials, key=lambda t: (t.completed_at or datetime.max, t.number))
        points: list[tuple[float, float]] = []
        steps = 0
        curve = []
        for t in order:
            if t.steps == 0 and t.state != "complete":
                continue
            steps += t.steps
            if t.state == "complete" and t.metric is not None and t.params is not None:
                y = t.metric if self.greater_is_better else -t.metric
                points.append((t.params / budget, y))
            curve.append({"trial": t.number, "steps": steps, "hypervolume": hypervolume_2d(points, ref)})
        return curve


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (x minimised, y maximised) and bounded by ``ref`` = (x_ref, y_ref)."""
    inside = sorted((x, y) for x, y in points if x <= ref[0] and y >= ref[1])
    area, best_y = 0.0, ref[1]
    # sweep by increasing x: each point adds the strip between the best y so far and its own y
    for x, y in inside:
        if y > best_y:
            area += (ref[0] - x) * (y - best_y)
            best_y = y
    return area


# --- loading --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    return data if isinstance(data, dict) else {}


def storage_of(root: Path, settings: dict[str, Any]) -> tuple[str, str]:
    """(storage URL, study name) of a study directory.

    A local ``study.db`` wins (the directory may have been moved since); otherwise the storage URL that
    settings.json records (``--storage``, e.g. PostgreSQL; its password is not recorded, so it must be
    reachable without one, e.g. through ``~/.pgpass``).
    """
    name = settings.get("study_name") or STUDY_NAME
    layout = StudyLayout(root)
    if layout.study_db.is_file():
        return layout.storage_url, str(name)
    url = settings.get("storage")
    if not url:
        raise UserError(f"{root} is not a study directory (no study.db)")
    return str(url), str(name)


def load_optuna_study(root: Path, settings: dict[str, Any] | None = None):
    import optuna  # optuna, pandas and the storage only when a command reads the trials: a fast --help

    from autopeft.study.files import open_storage

    settings = settings if settings is not None else _read_json(StudyLayout(root).settings_json)
    url, name = storage_of(root, settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise UserError(f"{root}: the storage holds no study named '{name}'") from None


def load_study_view(root: str | Path) -> StudyView:
    import optuna
    from optuna.trial import TrialState

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a study directory (no such directory)")
    layout = StudyLayout(root)
    settings = _read_json(layout.settings_json)
    summary = _read_json(layout.summary_json)
    study = load_optuna_study(root, settings)
    base = int(settings.get("base_params") or summary.get("base_params") or 0)
    budget = settings.get("budget_params") or summary.get("budget_params")
    greater = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    task = settings.get("data", {}).get("task") if isinstance(settings.get("data"), dict) else None
    metric = summary.get("metric") or ("loss" if task == "causal-lm" or not greater else "accuracy")
    frozen = study.get_trials(deepcopy=False)
    front_numbers = _front_numbers(study, summary, frozen)
    retrains = _retrain_records(study, summary)
    trials = []
    for t in frozen:
        attrs = dict(t.user_attrs)
        if "retrain" not in attrs and t.number in retrains:
            attrs["retrain"] = retrains[t.number]
        plan = Plan.from_dict(attrs["plan"], f"trial {t.number}") if isinstance(attrs.get("plan"), dict) else None
        params = attrs.get("params")
        if params is None and t.values is not None and len(t.values) > 1:
            params = int(t.values[1])
        state = t.state.name.lower()
        status = attrs.get("status") or (TrialStatus.RUNNING if t.state == TrialState.RUNNING else state)
        trials.append(TrialView(
            number=t.number, state=state, status=str(status),
            metric=float(t.values[0]) if t.values else None,
            params=int(params) if params is not None else None,
            params_pct=(100 * params / base) if params is not None and base else attrs.get("params_pct"),
            plan=plan, attrs=attrs, completed_at=t.datetime_complete, on_front=t.number in front_numbers,
        ))
    view = StudyView(root, settings, summary, trials, str(metric), greater, base,
                     int(budget) if budget else None)
    view.baselines = _baselines(view)
    return view


def _retrain_records(study, summary: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Final-stage retrain records, from the study's user attributes or summary.json's front."""
    records = retrain_records(study.user_attrs)
    for entry in summary.get("front") or []:
        if isinstance(entry, dict) and isinstance(entry.get("retrain"), dict) and "trial" in entry:
            records.setdefault(int(entry["trial"]), entry["retrain"])
    return records


def _front_numbers(study, summary: dict[str, Any], frozen) -> set[int]:
    from optuna.trial import TrialState

    recorded = summary.get("front")
    if isinstance(recorded, list) and recorded:
        numbers = {int(r["trial"]) if isinstance(r, dict) else int(r) for r in recorded}
        if numbers <= {t.number for t in frozen}:
            return numbers
    if not any(t.state == TrialState.COMPLETE for t in frozen):
        return set()
    return {t.number for t in study.best_trials}


def _baselines(view: StudyView) -> list[Baseline]:
    out = [Baseline(t.baseline, t.metric_mean, t.params) for t in view.completed  # type: ignore[arg-type]
           if t.baseline]
    folder = view.layout.baselines_dir
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file()):
            metrics = _read_json(sub / "metrics.json")
            value = metrics.get("validation", {}).get(view.metric) if isinstance(metrics.get("validation"), dict) \
                else None
            if isinstance(value, (int, float)) and math.isfinite(value) and "adapter_params" in metrics:
                out.append(Baseline(sub.name, float(value), int(metrics["adapter_params"])))
    return out
