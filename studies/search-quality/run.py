"""Does the default 20-minute search beat the recipes a user would pick by hand? (issue #18)

For each dataset:
1. ``autopeft search --dataset D --budget 0.5% --time-budget 20m --trials 100000`` with every other option
   at its default (study in ``runs/search-quality/D``; its summary files are copied to ``results/D/``).
   The final stage retrains the pick with 3 seeds at full fidelity; those are the searched plan's numbers.
2. The reference recipes, trained for the same number of steps as the search's full fidelity, with the
   pick's 3 seeds (so every recipe pairs with the pick seed by seed): LoRA r8 on q,v of every layer;
   the parallel adapter (o, down, size 16; the best single method of ``studies/method-baselines``);
   full fine-tuning; the classification head alone. Each recipe's learning rate is picked on validation
   from its grid with the first seed, then the other seeds train at that rate.
3. ``results/D/references.jsonl`` holds every run; ``summarize.py`` builds the tables.

    .venv/bin/python studies/search-quality/run.py --datasets trec,bbc_news,amazon_reviews,rotten_tomatoes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import transformers
from sqlib import (
    HEAD_ONLY,
    HERE,
    LORA_R8_QV,
    MAX_LENGTH,
    PARALLEL_ADAPTER,
    append_jsonl,
    full_finetune,
    load,
    machine,
    read_jsonl,
    train_recipe,
)

REPO = HERE.parent.parent
STUDIES = REPO / "runs" / "search-quality"
# learning-rate grids, picked on validation with the pick's first seed
ADAPTER_LRS = (5e-4, 1e-3, 2e-3)
HEAD_LRS = (1e-3, 3e-3, 1e-2)
FULL_LRS = (2e-5, 5e-5, 1e-4)
RECIPES = {"lora r8 q,v": (LORA_R8_QV, ADAPTER_LRS), "parallel adapter": (PARALLEL_ADAPTER, ADAPTER_LRS),
           "head only": (HEAD_ONLY, HEAD_LRS), "full fine-tuning": (None, FULL_LRS)}


def search_command(dataset: str, out: Path, time_budget: str) -> list[str]:
    return [str(Path(sys.executable).with_name("autopeft")), "search", "--dataset", dataset,
            "--max-length", str(MAX_LENGTH.get(dataset, 64)), "--budget", "0.5%",
            "--time-budget", time_budget, "--trials", "100000", "--out", str(out)]


def run_search(dataset: str, results: Path, time_budget: str) -> None:
    out = STUDIES / dataset
    record_path = results / "search.json"
    if record_path.exists():
        return
    command = search_command(dataset, out, time_budget)
    if (out / "best" / "metrics.json").exists():  # finished before this script recorded it (restarted)
        wall, measured = json.loads((out / "summary.json").read_text())["elapsed_s"], "summary.json elapsed_s"
    else:
        print("$", " ".join(command), flush=True)
        start = time.time()
        subprocess.run(command, check=True)
        wall, measured = time.time() - start, "wall clock of the command"
    for name in ("summary.json", "trials.csv", "pareto.csv"):
        if (out / name).exists():
            shutil.copy(out / name, results / name)
    shutil.copy(out / "best" / "metrics.json", results / "best-metrics.json")
    shutil.copy(out / "best" / "plan.json", results / "best-plan.json")
    record = {"command": " ".join(command[1:]), "wall_seconds": round(wall, 1), "measured": measured,
              "machine": machine()}
    (record_path).write_text(json.dumps(record, indent=2) + "\n")


def run_references(dataset: str, results: Path) -> None:
    best = json.loads((results / "best-metrics.json").read_text())
    summary = json.loads((results / "summary.json").read_text())
    seeds = best["test_retrain"]["seeds"]
    steps = summary["settings"]["train"]["steps"]
    path = results / "references.jsonl"
    done = {(r["recipe"], r["lr"], r["seed"]): r for r in read_jsonl(path)}
    prepared = load(dataset)

    def run(name: str, lr: float, seed: int) -> dict:
        if (name, lr, seed) in done:
            return done[(name, lr, seed)]
        plan = RECIPES[name][0]
        if plan is None:
            result = full_finetune(prepared, steps, lr, seed)
        else:
            result = train_recipe(prepared, name, plan, steps, lr, seed)
        record = {**result.record(), "machine": machine()}
        append_jsonl(path, record)
        done[(name, lr, seed)] = record
        print(json.dumps({k: record[k] for k in ("recipe", "lr", "seed", "steps", "validation", "test",
                                                  "seconds")}), flush=True)
        return record

    for name, (_, grid) in RECIPES.items():
        first = [run(name, lr, seeds[0]) for lr in grid]
        chosen = max(first, key=lambda r: (r["validation"], -r["lr"]))["lr"]
        for seed in seeds[1:]:
            run(name, chosen, seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="trec,bbc_news,amazon_reviews,rotten_tomatoes,newsgroups")
    parser.add_argument("--time-budget", default="20m")
    parser.add_argument("--skip-references", action="store_true")
    args = parser.parse_args()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    for dataset in args.datasets.split(","):
        results = HERE / "results" / dataset
        results.mkdir(parents=True, exist_ok=True)
        run_search(dataset, results, args.time_budget)
        if not args.skip_references:
            run_references(dataset, results)


if __name__ == "__main__":
    main()
