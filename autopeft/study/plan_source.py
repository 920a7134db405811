"""Where a plan comes from: ``plan.json``, an adapter directory, or a study directory (``STUDY[:trial]``).

Besides the plan, an adapter or a study also records the model and data options and the training
config it was trained with, so ``autopeft train --plan STUDY:7`` can retrain trial 7 with the same
model, dataset and learning rate unless told otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan
from autopeft.study.layout import StudyLayout

_TRIAL_SUFFIX = re.compile(r"^(?P<path>.+):(?P<trial>\d+)$")


@dataclass
class PlanSource:
    plan: Plan
    where: str
    data: dict[str, Any] | None = None  # DataOptions record (model, dataset, columns, ...)
    train: dict[str, Any] | None = None  # TrainConfig record

    @property
    def model(self) -> str | None:
        return self.data.get("model") if self.data else None


def is_study_dir(path: Path) -> bool:
    return path.is_dir() and StudyLayout(path).is_study() and not (path / "autopeft_config.json").is_file()


def resolve_plan_source(text: str | Path, trial: int | None = None) -> PlanSource:
    path = Path(text)
    match = _TRIAL_SUFFIX.match(str(text))
    if not path.exists() and match and is_study_dir(Path(match["path"])):
        path, trial = Path(match["path"]), int(match["trial"])
    if is_study_dir(path):
        return _from_study(path, trial)
    if trial is not None:
        raise UserError(f"a trial number needs a study directory; {path} is not one (no study.db)")
    plan = Plan.load(path)
    config_path = (path if path.is_dir() else path.parent) / "autopeft_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        return PlanSource(plan, str(path), config.get("data"), config.get("train"))
    return PlanSource(plan, str(path))


def _from_study(root: Path, trial: int | None) -> PlanSource:
    from autopeft.study.view import load_study_view

    view = load_study_view(root)
    identity = view.settings.get("identity", {}) if isinstance(view.settings.get("identity"), dict) else {}
    chosen = view.trial(trial) if trial is not None else view.best()
    if chosen is None:
        raise UserError(f"{root} has no completed trial yet; pass STUDY_DIR:N to pick a trial")
    if chosen.plan is None:
        raise UserError(f"trial {chosen.number} of {root} has no plan recorded (state {chosen.state})")
    train = chosen.attrs.get("train_config") or identity.get("train")
    return PlanSource(chosen.plan, f"trial {chosen.number} of {root}", identity.get("data"), train)
