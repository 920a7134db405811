"""The study directory: the files a search leaves behind, and what a resume checks.

    study.db        Optuna storage (SQLite); the source of truth, resumable
    settings.json   the settings that define the study (a resume with other settings is refused)
    trials.csv      every trial: number, state, status, metric, params, params_pct, duration_s, seed,
                    reason, plan (JSON), summary
    pareto.csv      the same columns for the non-dominated completed trials
    trials/<n>/     each completed trial's adapter directory
    best/           the pick: plan.json, adapter.safetensors, autopeft_config.json, metrics.json
    summary.json    settings, split record, front, pick with validation and test metrics, machine

CSV and JSON files are rewritten from the storage after each trial (via a temporary file and a
rename), so they are never half-written and never disagree with ``study.db`` for long.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft.artifacts import write_json
from autopeft.errors import UserError
from autopeft.plan import Plan

COLUMNS = ["number", "state", "status", "metric", "params", "params_pct", "duration_s", "seed", "reason",
           "summary", "plan"]


class StudyFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.root / 'study.db').resolve()}"

    def trial_dir(self, number: int) -> Path:
        return self.root / "trials" / f"{number:04d}"

    def check_resume(self, identity: dict[str, Any]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create study directory {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise UserError(f"study directory {self.root} is not writable")
        path = self.root / "settings.json"
        if not path.is_file():
            return
        previous = json.loads(path.read_text()).get("identity", {})
        if previous != json.loads(json.dumps(identity, default=str)):
            changed = _first_difference(previous, json.loads(json.dumps(identity, default=str)))
            raise UserError(f"{self.root} holds a study with other settings ({changed}); "
                            "re-run with the same settings to resume, or choose another --out")

    def write_settings(self, identity: dict[str, Any], extra: dict[str, Any]) -> None:
        write_json(self.root / "settings.json", {"identity": identity, **extra})

    # --- tables ---------------------------------------------------------------------------
    def rows(self, study: optuna.Study, base_params: int) -> list[dict[str, Any]]:
        rows = []
        for t in study.get_trials(deepcopy=False):
            attrs = t.user_attrs
            plan = attrs.get("plan")
            rows.append({
                "number": t.number,
                "state": t.state.name.lower(),
                "status": attrs.get("status", "running" if t.state == TrialState.RUNNING else ""),
                "metric": t.values[0] if t.values else None,
                "params": attrs.get("params"),
                "params_pct": round(100 * attrs["params"] / base_params, 5) if "params" in attrs else None,
                "duration_s": attrs.get("duration_s"),
                "seed": attrs.get("seed"),
                "reason": attrs.get("reason", ""),
                "summary": Plan.from_dict(plan).describe() if plan else "",
                "plan": json.dumps(plan, sort_keys=True) if plan else "",
            })
        return rows

    def pareto_rows(self, study: optuna.Study, base_params: int) -> list[dict[str, Any]]:
        front = {t.number for t in study.best_trials} if any(
            t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) else set()
        rows = [r for r in self.rows(study, base_params) if r["number"] in front]
        return sorted(rows, key=lambda r: r["params"])

    def write_tables(self, study: optuna.Study, base_params: int) -> None:
        _write_csv(self.root / "trials.csv", self.rows(study, base_params))
        _write_csv(self.root / "pareto.csv", self.pareto_rows(study, base_params))

    @staticmethod
    def machine() -> dict[str, Any]:
        import torch
        import transformers

        return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "optuna": optuna.__version__, "cuda": torch.cuda.is_available()}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: {a!r} before, {b!r} now"


def load_study_rows(root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pareto rows and settings of a finished or running study directory (for ``autopeft pareto``)."""
    if not (root / "study.db").is_file():
        raise UserError(f"{root} is not a study directory (no study.db)")
    settings = json.loads((root / "settings.json").read_text()) if (root / "settings.json").is_file() else {}
    from autopeft.search import STUDY_NAME

    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=StudyFiles(root).storage_url)
    except KeyError:
        raise UserError(f"{root}/study.db holds no autopeft study") from None
    return StudyFiles(root).pareto_rows(study, settings.get("base_params", 1)), settings
