"""Writing the study directory (laid out by :class:`autopeft.study.layout.StudyLayout`): the tables, the
settings a resume checks, the storage.

Trial user attributes: ``plan``, ``params``, ``params_pct``, ``memory_bytes``, ``seed``, ``status``
(running | complete | stopped | infeasible | failed), ``reason``, ``steps`` (fidelity reached),
``rung_metrics`` ({steps: validation metric}), ``worker`` (host, pid, heartbeat), ``validation``,
``train_loss``, ``duration_s`` and the other training records, ``rung_decisions``,
``interruptions`` and ``resumed_from_step`` (a trial continued from its checkpoint).

Study user attributes: ``settings`` (the whole search definition, for ``autopeft worker``),
``started_at``, ``sampler_seed:<worker>:<trials at start>``, and, because Optuna forbids changing a
finished trial, the final stage's ``retrain:<n>`` = ``{"seeds", "values", "mean", "std", "steps"}``
(also copied into summary.json and front/<n>/metrics.json; see :mod:`autopeft.study.layout`).

CSV and JSON files are rewritten from the storage after each trial (via a temporary file and a
rename), so they are never half-written and never disagree with the storage for long.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import optuna
import pandas as pd
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from autopeft.core.choices import TrialStatus
from autopeft.core.errors import UserError
from autopeft.core.extras import found, require
from autopeft.peft.artifacts import write_json
from autopeft.peft.plan import Plan
from autopeft.study.layout import StudyLayout, retrain_records

COLUMNS = ["number", "state", "status", "baseline", "metric", "params", "params_pct", "memory_bytes", "steps", "rung_metrics",
           "retrain_mean", "retrain_std", "duration_s", "seed", "reason", "summary", "plan", "readout"]
SETTINGS_ATTR = "settings"
SCHEMA_RACE_RETRIES = 5


def normalize_storage_url(url: str) -> str:
    """``postgresql://`` with whichever PostgreSQL driver is installed (SQLAlchemy 2 defaults to psycopg 3;
    ``autopeft[postgres]`` installs psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            require("postgres")
            if not found("psycopg"):
                return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (any SQLAlchemy URL Optuna accepts); a clear error if unreachable."""
    url = normalize_storage_url(url)
    if url.startswith("sqlite"):
        # several worker processes share one SQLite file: wait for the lock instead of failing at once
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            if not lost_schema_race(exc):
                raise_storage_error(url, first_line(exc))
            # Two processes creating the same new database (a search and its second worker, or a search and
            # `autopeft pareto`) both create Optuna's tables and insert its schema version; the loser fails
            # although the schema is then complete. Optuna has no lock around its creation: open again.
            if attempt == SCHEMA_RACE_RETRIES:
                raise_storage_error(url, "another process was creating its tables; re-run the same command")
            time.sleep(0.2 * (attempt + 1))
        except ImportError as exc:
            raise UserError(f"--storage {mask_url(url)}: missing database driver ({exc}); for PostgreSQL "
                            "install autopeft[postgres]") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot use this URL"
            raise_storage_error(url, first_line(exc))
    raise AssertionError("unreachable")


def lost_schema_race(exc: Exception) -> bool:
    """Whether opening failed because another process created the same tables at the same moment."""
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def raise_storage_error(url: str, reason: str) -> NoReturn:
    raise UserError(f"--storage {mask_url(url)}: cannot open the storage ({reason[:200]})") from None


def mask_url(url: str) -> str:
    """The URL without its password (it is written into settings.json and logs)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1@", url)


class StudyFiles(StudyLayout):
    """A study directory's layout plus what a search writes into it."""

    def check_resume(self, identity: dict[str, Any]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create study directory {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise UserError(f"study directory {self.root} is not writable (read-only filesystem or no permission); "
                            "make it writable and re-run the same command to resume")
        if not self.settings_json.is_file():
            return
        previous = json.loads(self.settings_json.read_text()).get("identity", {})
        check_same_identity(previous, identity, str(self.root))

    def write_settings(self, identity: dict[str, Any], extra: dict[str, Any]) -> None:
        write_json(self.settings_json, {"identity": identity, **extra})

    # --- tables ---------------------------------------------------------------------------
    def rows(self, study: optuna.Study, base_params: int) -> list[dict[str, Any]]:
        retrain = retrain_records(study.user_attrs)
        return [trial_row(t, base_params, retrain.get(t.number)) for t in study.get_trials(deepcopy=False)]

    def write_tables(self, study: optuna.Study, base_params: int, front: list[int]) -> list[dict[str, Any]]:
        rows = self.rows(study, base_params)
        on_front = set(front)
        pareto = sorted((r for r in rows if r["number"] in on_front), key=lambda r: (r["params"], r["number"]))
        _write_csv(self.trials_csv, rows)
        _write_csv(self.pareto_csv, pareto)
        return pareto

    @staticmethod
    def machine() -> dict[str, Any]:
        import torch
        import transformers

        return {"platform": platform.platform(), "processor": platform.processor() or _cpu_model(), "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "optuna": optuna.__version__, "cuda": torch.cuda.is_available()}


def _cpu_model() -> str:
    """The CPU's model name and bf16 matrix features (benchmarks depend on them; Linux only)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    features = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(features) or 'no bf16 matrix instructions'})" if name else ""


def check_same_identity(previous: dict[str, Any], identity: dict[str, Any], where: str) -> None:
    now = json.loads(json.dumps(identity, default=str))
    if previous != now:
        raise UserError(f"{where} holds a study with other settings ({_first_difference(previous, now)}); "
                        "re-run with the same settings to resume, or choose another --out")


def trial_row(t: FrozenTrial, base_params: int, retrain: dict[str, Any] | None) -> dict[str, Any]:
    attrs = t.user_attrs
    plan = attrs.get("plan")
    rungs = attrs.get("rung_metrics")
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "status": attrs.get("status", TrialStatus.RUNNING if t.state == TrialState.RUNNING else ""),
        "baseline": attrs.get("baseline", ""),  # the recipe's name for a baseline trial (searching/baselines.py)
        "metric": t.values[0] if t.values else None,
        "params": attrs.get("params"),
        "params_pct": round(100 * attrs["params"] / base_params, 5) if "params" in attrs else None,
        "memory_bytes": attrs.get("memory_bytes"),
        "steps": attrs.get("steps", 0),
        "rung_metrics": json.dumps(rungs, sort_keys=True) if rungs else "",
        "retrain_mean": retrain["mean"] if retrain else None,
        "retrain_std": retrain["std"] if retrain else None,
        "duration_s": attrs.get("duration_s"),
        "seed": attrs.get("seed"),
        "reason": attrs.get("reason", ""),
        "summary": Plan.from_dict(plan).describe() if plan else "",
        "readout": attrs.get("oneshot_readout", ""),  # the one-shot readout's index (searching/oneshot_stage.py)
        "plan": json.dumps(plan, sort_keys=True) if plan else "",
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several workers may write at once
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path}: {a!r} before, {b!r} now"
