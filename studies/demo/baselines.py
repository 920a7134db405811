"""Single-method baselines for the demo search, trained exactly as the demo trains its trials.

Same model (minilm), data (rotten_tomatoes, split seed 0), trainer (150 steps, batch 16, max length 64,
bf16 autocast) as `make demo`. For each baseline the learning rate is picked on validation from a small
grid; the test accuracy of that pick is reported, like the demo's final pick.

    .venv/bin/python studies/demo/baselines.py   # writes studies/demo/baselines.json
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import datasets
import torch
import transformers

from autopeft.peft.plan import Plan, PlanEntry
from autopeft.training.config import TrainConfig
from autopeft.training.options import DataOptions
from autopeft.training.pipeline import prepare
from autopeft.training.trial_run import train_plan

LR_GRID = (1e-3, 3e-3, 1e-2)
BASELINES = {
    "head only": Plan(()),
    "lora r8 q,v (all layers)": Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),)),
}


def main() -> None:
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    prepared = prepare(DataOptions())
    results = []
    for name, plan in BASELINES.items():
        runs = []
        for lr in LR_GRID:
            outcome = train_plan(prepared.session, plan, TrainConfig(steps=150, lr=lr, seed=0))
            runs.append((outcome.validation.value, lr, outcome))
            print(f"{name} lr={lr}: validation {outcome.validation.value:.4f}", flush=True)
        best_val, best_lr, best = max(runs, key=lambda r: r[0])
        test = prepared.session.evaluate_adapter(plan, best.state, "test", best.config)
        results.append({"baseline": name, "params": best.adapter_params, "head_params": best.head_params,
                        "params_pct": 100 * best.adapter_params / prepared.loaded.base_params,
                        "lr": best_lr, "validation_accuracy": best_val, "test_accuracy": test.value,
                        "validation_by_lr": {str(lr): v for v, lr, _ in runs},
                        "step_time_s": best.step_time_s})
    out = Path(__file__).with_name("baselines.json")
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads()},
        "settings": {"model": "minilm", "dataset": "rotten_tomatoes", "steps": 150, "batch_size": 16,
                     "max_length": 64, "precision": "bf16", "seed": 0, "lr_grid": LR_GRID},
        "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
