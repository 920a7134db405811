"""``autopeft export``: copy a study's (or an adapter's) result out as an autopeft or a peft adapter."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from autopeft.core.errors import UserError
from autopeft.core.extras import require
from autopeft.study.layout import StudyLayout

ADAPTER_FILES = ("plan.json", "adapter.safetensors", "autopeft_config.json", "metrics.json")


def register(sub) -> None:
    e = sub.add_parser("export", help="export a study's best (or --trial N) adapter in autopeft or peft format")
    e.add_argument("source", help="study directory or adapter directory")
    e.add_argument("--trial", type=int, help="with a study directory: export this trial instead of best/")
    e.add_argument("--format", choices=["autopeft", "peft"], default="autopeft",
                   help="autopeft (any plan) or peft (plans peft can represent; loads with PeftModel.from_pretrained)")
    e.add_argument("--out", required=True, help="directory to write (must not exist or be empty)")
    e.set_defaults(handler=run)


def adapter_dir_of(source: str | Path, trial: int | None = None) -> Path:
    """The adapter directory a study/adapter path and optional trial number designate."""
    path = Path(source)
    if (path / "autopeft_config.json").is_file() and trial is None:
        return path
    layout = StudyLayout(path)
    if not layout.is_study():
        if trial is not None:
            raise UserError(f"--trial needs a study directory; {path} is not one (no study.db)")
        raise UserError(f"{path} is neither a study directory (study.db) nor an adapter directory "
                        "(autopeft_config.json)")
    if trial is None:
        if not (layout.best_dir / "autopeft_config.json").is_file():
            raise UserError(f"{path} has no best/ adapter yet (the search has not finished); pass --trial N")
        return layout.best_dir
    # a front plan retrained at full fidelity (front/<n>) is preferred to its search-fidelity adapter
    for candidate in layout.adapter_candidates(trial):
        if (candidate / "autopeft_config.json").is_file():
            return candidate
    raise UserError(f"{path} has no adapter for trial {trial} (only completed trials have one; "
                    "see `autopeft pareto --all`)")


def _fresh_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; choose another directory")
    return out


def run(args: argparse.Namespace) -> int:
    from autopeft.peft.artifacts import load_adapter
    from autopeft.report.model_card import write_card

    if args.format == "peft":
        require("peft")  # before anything is written
    source = adapter_dir_of(args.source, args.trial)
    plan, _, config = load_adapter(source)  # validates the directory before anything is written
    metrics_path = source / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.setdefault("adapter_params", metrics.get("params"))
    out = _fresh_out(Path(args.out))
    if args.format == "peft":
        from autopeft.report.export_peft import export_peft

        result = export_peft(source, out)
        shutil.copy2(source / "plan.json", out / "autopeft_plan.json")
        write_card(out, "peft", plan, config, metrics, peft_method=result.method)
        print(f"wrote peft {result.method} adapter to {out} (from {source}; max |logit difference| vs autopeft "
              f"{result.max_logit_diff:.1e})")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    write_card(out, "autopeft", plan, config, metrics)
    print(f"wrote autopeft adapter to {out} (from {source})")
    return 0
