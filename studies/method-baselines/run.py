"""Every registered method alone, at its default settings, trained the same way on Rotten Tomatoes.

For each method in ``autopeft.methods.REGISTRY`` (read at run time, so methods added later are
included) one single-method plan: all layers, the method's default options, on the sites the
method's paper uses by default (``DEFAULT_SITES``; a method not listed there goes on the sites it
declares, or q,v). Plus a head-only row for reference.

Training, identical for every method: MiniLM-L6 (minilm), rotten_tomatoes (split seed 0), 150 AdamW
steps, batch 16, max length 64, bf16 autocast, one fixed learning rate for all methods (3e-3, the
geometric middle of the hybrid space's lr range; 6% linear warm-up then linear decay), seed 0. The
metric is validation accuracy; the step time is the median wall-clock time of an optimizer step.

    .venv/bin/python studies/method-baselines/run.py            # writes results.csv and machine.json
    .venv/bin/python studies/method-baselines/run.py --steps 3 --methods lora,ia3 --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import datasets
import torch
import transformers

from autopeft.methods import REGISTRY
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.training.config import TrainConfig
from autopeft.training.options import DataOptions
from autopeft.training.pipeline import prepare
from autopeft.training.trial_run import train_plan

LR = 3e-3
DEFAULT_SITES: dict[str, tuple[str, ...]] = {
    "lora": ("q", "v"), "dora": ("q", "v"), "lora_fa": ("q", "v"), "vera": ("q", "v"), "adalora": ("q", "v"),
    "ia3": ("k", "v", "down"),  # the paper: keys, values and the FFN intermediate
    "bitfit": ("q", "k", "v", "o", "up", "down"),  # every bias of the block's projections
    "adapter": ("o", "down"),  # Houlsby: after attention and after the MLP
}
FIELDS = ["method", "sites", "params", "pct_of_base", "val_accuracy", "val_macro_f1", "train_loss", "step_ms",
          "seconds", "seed", "steps", "lr"]


def method_plan(name: str, num_layers: int) -> Plan:
    if name == "head-only":
        return Plan(())
    method = REGISTRY[name]
    sites = DEFAULT_SITES.get(name) or method.sites or ("q", "v")
    return Plan((PlanEntry(name, tuple(range(num_layers)), tuple(sites), {}),))


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--methods", help="comma-separated subset (default: every registered method + head-only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    names = args.methods.split(",") if args.methods else ["head-only", *sorted(REGISTRY)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start_machine = machine()
    prepared = prepare(DataOptions(model="minilm", dataset="rotten_tomatoes", max_length=64))
    arch, base = prepared.loaded.arch, prepared.loaded.base_params
    rows = []
    for name in names:
        plan = method_plan(name, arch.num_layers)
        config = TrainConfig(steps=args.steps, batch_size=16, lr=LR, precision="bf16", seed=args.seed)
        t0 = time.perf_counter()
        outcome = train_plan(prepared.session, plan, config)
        sites = ",".join(plan.entries[0].sites) if plan.entries else "-"
        row = {"method": name, "sites": sites, "params": outcome.adapter_params,
               "pct_of_base": round(100 * outcome.adapter_params / base, 4),
               "val_accuracy": round(outcome.validation.values["accuracy"], 4),
               "val_macro_f1": round(outcome.validation.values["macro_f1"], 4),
               "train_loss": round(outcome.train_loss, 4), "step_ms": round(1000 * outcome.step_time_s, 1),
               "seconds": round(time.perf_counter() - t0, 1), "seed": args.seed, "steps": args.steps, "lr": LR}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(out / "results.csv", "w", newline="") as f:  # rewritten after each method: partial runs keep rows
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    record = {"start": start_machine, "end": machine(), "base_params": base,
              "settings": {"model": "minilm", "dataset": "rotten_tomatoes", "split_seed": 0, "steps": args.steps,
                           "batch_size": 16, "max_length": 64, "precision": "bf16", "lr": LR,
                           "optimizer": "AdamW, 6% linear warm-up, linear decay", "seed": args.seed}}
    (out / "machine.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'results.csv'} and {out / 'machine.json'}")


if __name__ == "__main__":
    main()
