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

A later search of the same dataset (another commit's default search) goes to its own ``--results`` folder;
``--reference-lrs-from results`` then takes each recipe's learning rate from that earlier folder's grid
instead of searching the grid again, copies its runs at those rates for the seeds the two picks share, and
trains only the missing seeds (the references do not depend on the search; the rate stays chosen on
validation). ``reference-lrs.json`` in the new folder records where each rate came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from sqlib import (
    HEAD_ONLY,
    HERE,
    LORA_R8_QV,
    MAX_LENGTH,
    PARALLEL_ADAPTER,
    append_jsonl,
    chosen_lr,
    full_finetune,
    load,
    machine,
    quiet_logs,
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
# recipes grouped for --reference-jobs 2 by measured cost (2 threads, trec, 800 steps): full fine-tuning
# ~175 s a run; LoRA / parallel adapter ~75 s, head only ~30 s
RECIPE_GROUPS = (("full fine-tuning",), ("lora r8 q,v", "parallel adapter", "head only"))


def search_command(dataset: str, out: Path, time_budget: str) -> list[str]:
    return [str(Path(sys.executable).with_name("autopeft")), "search", "--dataset", dataset,
            "--max-length", str(MAX_LENGTH.get(dataset, 64)), "--budget", "0.5%",
            "--time-budget", time_budget, "--trials", "100000", "--out", str(out)]


def run_search(dataset: str, results: Path, time_budget: str) -> None:
    out = STUDIES / results.parent.name / dataset
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


def adopt_reference_lrs(dataset: str, results: Path, source: str) -> None:
    """Each recipe's lr as chosen in ``source`` (on validation, its first seed's grid), and its runs there at
    that lr for the seeds this pick shares with that one; written once to ``reference-lrs.json``."""
    path = results / "reference-lrs.json"
    if path.exists():
        return
    origin = HERE / source / dataset
    if not (origin / "best-metrics.json").is_file() or not (origin / "references.jsonl").is_file():
        raise SystemExit(f"error: --reference-lrs-from {source}: {origin} holds no finished references "
                         "(best-metrics.json, references.jsonl); name an earlier results folder, e.g. results")
    old_first_seed = json.loads((origin / "best-metrics.json").read_text())["test_retrain"]["seeds"][0]
    seeds = json.loads((results / "best-metrics.json").read_text())["test_retrain"]["seeds"]
    steps = json.loads((results / "summary.json").read_text())["settings"]["train"]["steps"]
    records = read_jsonl(origin / "references.jsonl")
    missing = [name for name in RECIPES if not any(r["recipe"] == name and r["seed"] == old_first_seed for r in records)]
    if missing:
        raise SystemExit(f"error: --reference-lrs-from {source}: {origin} has no lr grid for {', '.join(missing)}; "
                         "finish its references first (run.py --results " + source + ")")
    lrs = {name: chosen_lr(records, name, old_first_seed) for name in RECIPES}
    done = {(r["recipe"], r["lr"], r["seed"]) for r in read_jsonl(results / "references.jsonl")}
    for r in records:
        if (r["lr"] == lrs[r["recipe"]] and r["seed"] in seeds and r["steps"] == steps
                and (r["recipe"], r["lr"], r["seed"]) not in done):
            append_jsonl(results / "references.jsonl", {**r, "copied_from": f"{source}/{dataset}"})
    path.write_text(json.dumps({"from": f"{source}/{dataset}", "chosen_with_seed": old_first_seed,
                                "lrs": lrs}, indent=2) + "\n")


def run_references_parallel(dataset: str, results: Path, jobs: int) -> None:
    """The recipes split over ``jobs`` processes of one torch thread each (CPU throughput: two 1-thread
    trainings of this small model finish sooner than the same two one after another on 2 threads). Each
    recipe stays in one process (its lr is chosen from its own grid first); every run is an appended line
    of ``references.jsonl``, so a restart resumes either way."""
    groups = [RECIPE_GROUPS[i::jobs] for i in range(jobs)]
    processes = [subprocess.Popen([sys.executable, __file__, "--datasets", dataset, "--references-only",
                                   "--results", results.parent.name,
                                   "--recipes", ";".join(";".join(g) for g in group), "--threads", "1"])
                 for group in groups if group]
    codes = [p.wait() for p in processes]
    if any(codes):
        raise SystemExit(f"a reference process failed (exit codes {codes})")


def run_references(dataset: str, results: Path, recipes: tuple[str, ...] = tuple(RECIPES)) -> None:
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

    adopted = results / "reference-lrs.json"
    if adopted.exists():
        lrs = json.loads(adopted.read_text())["lrs"]
        for name in recipes:
            for seed in seeds:
                run(name, lrs[name], seed)
        return
    for name in recipes:
        grid = RECIPES[name][1]
        first = [run(name, lr, seeds[0]) for lr in grid]
        chosen = chosen_lr(first, name, seeds[0])
        for seed in seeds[1:]:
            run(name, chosen, seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="trec,bbc_news,amazon_reviews,rotten_tomatoes,newsgroups")
    parser.add_argument("--time-budget", default="20m")
    parser.add_argument("--results", default="results", help="folder (under this study) for the results")
    parser.add_argument("--reference-lrs-from", default="", metavar="FOLDER",
                        help="take each recipe's lr (and its runs on shared seeds) from this earlier results folder")
    parser.add_argument("--skip-references", action="store_true")
    parser.add_argument("--reference-jobs", type=int, default=2, help="processes for the references (1 thread each)")
    # internal: one reference process of --reference-jobs
    parser.add_argument("--references-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipes", default=";".join(RECIPES), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    if args.threads:
        torch.set_num_threads(args.threads)
    for dataset in args.datasets.split(","):
        results = HERE / args.results / dataset
        results.mkdir(parents=True, exist_ok=True)
        if args.references_only:
            run_references(dataset, results, tuple(args.recipes.split(";")))
            continue
        run_search(dataset, results, args.time_budget)
        if args.skip_references:
            continue
        if args.reference_lrs_from:
            adopt_reference_lrs(dataset, results, args.reference_lrs_from)
        if args.reference_jobs > 1:
            run_references_parallel(dataset, results, args.reference_jobs)
        else:
            run_references(dataset, results)


if __name__ == "__main__":
    main()
