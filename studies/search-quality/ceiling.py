"""Does the search space hold plans that beat LoRA r8 q,v at all? (issue #18, tuning datasets only)

A search can only be as good as the best plan of its space. Before changing samplers, this measures a
handful of structured plans at the study's budget (0.5% of MiniLM = 113.6k params) and full fidelity
(800 steps, the search's default top rung on both datasets), trained exactly like the references
(autopeft's trainer, ``sqlib.train_recipe``), each at lr 1e-3 and 2e-3, on the two tuning datasets
``trec`` and ``rotten_tomatoes`` (validation accuracy decides; test is recorded, never used to choose).
Two processes of one torch thread each share the jobs; ``ceiling.jsonl`` holds every run (resumable).

    .venv/bin/python studies/search-quality/ceiling.py [--seeds 0] [--lrs 1e-3,2e-3] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from sqlib import HERE, LAYERS, LORA_R8_QV, append_jsonl, load, machine, quiet_logs, read_jsonl, train_recipe

from autopeft.peft.plan import Plan, PlanEntry

OUT = HERE / "ceiling.jsonl"
DATASETS = ("trec", "rotten_tomatoes")
STEPS = 800


def lora(r: int, sites: tuple[str, ...], layers: tuple[int, ...] = LAYERS, method: str = "lora") -> PlanEntry:
    return PlanEntry(method, layers, sites, {"r": r, "alpha": 2 * r})


CANDIDATES: dict[str, Plan] = {
    "lora r8 q,v": LORA_R8_QV,  # the reference (alpha 16 = 2r, as in every plan here)
    "lora r4 q,k,v,o": Plan((lora(4, ("q", "k", "v", "o")),)),
    "lora r2 all linear": Plan((lora(2, ("q", "k", "v", "o", "up", "down")),)),
    "lora r8 q,k,v": Plan((lora(8, ("q", "k", "v")),)),
    "lora r4 q,v + parallel adapter 4 o,down": Plan((lora(4, ("q", "v")), PlanEntry(
        "parallel_adapter", LAYERS, ("o", "down"), {"size": 4}))),
    "dora r8 q,v": Plan((lora(8, ("q", "v"), method="dora"),)),
    "lora r16 q,v upper half": Plan((lora(16, ("q", "v"), layers=(3, 4, 5)),)),
}


def jobs(seeds: list[int], lrs: list[float], only: list[str]) -> list[tuple[str, str, float, int]]:
    names = only or list(CANDIDATES)
    return [(d, n, lr, s) for d in DATASETS for s in seeds for lr in lrs for n in names]


def run_share(share: list[tuple[str, str, float, int]]) -> None:
    done = {(r["dataset"], r["recipe"], r["lr"], r["seed"]) for r in read_jsonl(OUT)}
    prepared: dict[str, object] = {}
    for dataset, name, lr, seed in share:
        if (dataset, name, lr, seed) in done:
            continue
        if dataset not in prepared:
            prepared.clear()
            prepared[dataset] = load(dataset)
        result = train_recipe(prepared[dataset], name, CANDIDATES[name], STEPS, lr, seed)  # type: ignore[arg-type]
        record = {"dataset": dataset, **result.record(), "machine": machine()}
        append_jsonl(OUT, record)
        print(json.dumps({k: record[k] for k in ("dataset", "recipe", "lr", "seed", "params", "validation",
                                                  "test", "seconds")}), flush=True)


def table() -> str:
    """Markdown: validation accuracy per candidate, dataset and lr (mean over the seeds run), best lr."""
    runs = read_jsonl(OUT)
    lrs = sorted({r["lr"] for r in runs})
    lines = ["| plan | params | " + " | ".join(f"{d} val @ lr {lr:g}" for d in DATASETS for lr in lrs) + " |",
             "|---|---|" + "---|" * (len(DATASETS) * len(lrs))]
    for name in CANDIDATES:
        cells = []
        params = next((r["params"] for r in runs if r["recipe"] == name), None)
        for dataset in DATASETS:
            for lr in lrs:
                values = [r["validation"] for r in runs if (r["recipe"], r["dataset"], r["lr"]) == (name, dataset, lr)]
                cells.append(f"{100 * sum(values) / len(values):.1f} (n={len(values)})" if values else "-")
        lines.append(f"| {name} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", action="store_true", help="print the validation table and exit")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--lrs", default="1e-3,2e-3")
    parser.add_argument("--only", default="")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--share", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    quiet_logs()
    todo = jobs([int(s) for s in args.seeds.split(",")], [float(x) for x in args.lrs.split(",")],
                [n for n in args.only.split(",") if n])
    if args.share >= 0:
        torch.set_num_threads(1)
        run_share(todo[args.share::args.jobs])
        return
    processes = [subprocess.Popen([sys.executable, __file__, "--seeds", args.seeds, "--lrs", args.lrs,
                                   "--only", args.only, "--jobs", str(args.jobs), "--share", str(i)])
                 for i in range(args.jobs)]
    if any(p.wait() for p in processes):
        raise SystemExit("a share failed")


if __name__ == "__main__":
    main()
