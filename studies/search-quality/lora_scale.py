"""Is `compact`'s fixed LoRA alpha 16 what makes small ranks collapse at the top of its lr range? (#18)

`compact` builds every LoRA with alpha 16, so the LoRA scale alpha/r is 8 at r 2, 4 at r 4 and 2 at r 8
(the LoRA r8 q,v recipe's). In the rotten_tomatoes search of session 25 (results-2lr), trial 11, LoRA
r2 on k, v, up at lr 2.7e-3, scored 78.7% on validation with its own seed, and two of its three
final-stage seeds collapsed to the majority class (57.8%). A scale of 8 multiplies the adapter's
effective step by 4 against the recipe at the same lr. This measures, for two plans of the kind
`compact` samples, alpha 16 (today) against alpha 2r (scale 2, as the recipe and the in-search LoRA
baseline), at compact's top lr (3e-3) and near the middle of its log range (1.2e-3), 800 steps (the
search's full fidelity on both sets), seeds 0-2, on the tuning sets trec and rotten_tomatoes only.

A run counts as **collapsed** when its validation accuracy is within 1 point of the majority class's
share of the validation split (it predicts one class). Reported per cell: validation / test accuracy
mean ± std over seeds and collapsed seeds; per plan and dataset, the paired test difference of
alpha 2r against alpha 16, each at its own best validation lr (95% interval over seeds and examples).

    .venv/bin/python studies/search-quality/lora_scale.py --shard 0/2 &   # resumable
    .venv/bin/python studies/search-quality/lora_scale.py --shard 1/2
    .venv/bin/python studies/search-quality/lora_scale.py --summarize     # -> lora_scale.md/.json

The top of `compact`'s lr range at scale 2 (session 28, `lr_top.*`, one host, bf16): the plan that collapsed,
at three lrs, alpha 2r only, both tuning sets, seeds 0-2:

    .venv/bin/python studies/search-quality/lora_scale.py --results lr_top --alphas 2r \
        --structures "lora r2 k,v,up" --lrs 1.2e-3,2e-3,3e-3 --threads 2
    .venv/bin/python studies/search-quality/lora_scale.py --results lr_top --alphas 2r \
        --structures "lora r2 k,v,up" --lrs 1.2e-3,2e-3,3e-3 --summarize      # -> lr_top.md/.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqlib import (  # noqa: E402
    LAYERS,
    append_jsonl,
    best_validation_lr,
    load,
    machine,
    quiet_logs,
    read_jsonl,
    train_with_predictions,
)

from autopeft.peft.plan import Plan, PlanEntry  # noqa: E402
from autopeft.searching.final_stage import mean_std  # noqa: E402
from autopeft.searching.uplift import paired_difference_over_examples  # noqa: E402
from autopeft.training.config import TrainConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "lora_scale.jsonl"
SEEDS = (0, 1, 2)
LRS = (1.2e-3, 3e-3)
DATASETS = ("trec", "rotten_tomatoes")
STEPS = 800
#: plan name -> (sites, rank): LoRA on every layer, as `compact` places it (one choice per site)
STRUCTURES = {"lora r2 k,v,up": (("k", "v", "up"), 2), "lora r4 q,k,v,o": (("q", "k", "v", "o"), 4)}
ALPHAS = ("16", "2r")  # "16": compact today; "2r": scale 2 whatever the rank
COLLAPSE_MARGIN = 0.01


def plan_of(structure: str, alpha_rule: str) -> Plan:
    sites, r = STRUCTURES[structure]
    alpha = 16 if alpha_rule == "16" else 2 * r
    return Plan((PlanEntry("lora", LAYERS, sites, {"r": r, "alpha": alpha}),))


def majority_share(session, split: str) -> float:
    labels = session.splits[split].labels
    return max(collections.Counter(labels).values()) / len(labels)


def run(shard: int, shards: int) -> None:
    done = {(r["dataset"], r["structure"], r["alpha"], r["lr"], r["seed"]) for r in read_jsonl(RESULTS)}
    print(f"runs of {sorted(STRUCTURES)}, alpha {', '.join(ALPHAS)}, lrs {', '.join(map(str, LRS))} -> {RESULTS.name}")
    # rotten_tomatoes first (where the collapse was seen), seed-major within a dataset: an interrupted run
    # still holds every cell at the first seeds
    jobs = [(d, s, a, lr, seed) for d in reversed(DATASETS) for seed in SEEDS for s in STRUCTURES for a in ALPHAS
            for lr in LRS]
    mine = [job for i, job in enumerate(jobs) if i % shards == shard and job not in done]
    print(f"{len(mine)} of {len(jobs)} runs in shard {shard}/{shards}", flush=True)
    sessions = {}
    for dataset, structure, alpha, lr, seed in mine:
        if dataset not in sessions:
            sessions.clear()
            sessions[dataset] = load(dataset).session
        session = sessions[dataset]
        config = TrainConfig(steps=STEPS, lr=lr, seed=seed)
        result = train_with_predictions(session, plan_of(structure, alpha), config)
        majority = majority_share(session, "validation")
        append_jsonl(RESULTS, {"dataset": dataset, "structure": structure, "alpha": alpha, "seed": seed,
                               "steps": STEPS, "lr": lr, "bf16": session.recipe(config).autocast_bf16,
                               "validation_majority_share": round(majority, 5),
                               "collapsed": result["validation"] <= majority + COLLAPSE_MARGIN,
                               **result, "machine": machine()})
        print(f"{dataset} {structure} alpha {alpha} lr {lr:g} seed {seed}: validation {result['validation']:.4f}"
              f" test {result['test']:.4f} ({result['seconds']:.0f} s)", flush=True)


def summarize() -> str:
    records = read_jsonl(RESULTS)
    result: dict = {"steps": STEPS, "seeds": list(SEEDS), "lrs": list(LRS), "datasets": {}}
    seeds_run = sorted({r["seed"] for r in records})
    title = ("LoRA alpha in `compact`: 16 (before) vs 2r" if len(ALPHAS) > 1 else
             f"LoRA at alpha {ALPHAS[0]} across `compact`'s lr range")
    lines = [f"## {title} (tuning sets; {STEPS} steps, seeds "
             f"{', '.join(map(str, seeds_run))} of {', '.join(map(str, SEEDS))})", "",
             "Validation / test accuracy (%), mean ± std over the seeds run (n; one seed: its value); collapsed = seeds whose "
             "validation accuracy is within 1 pt of the majority class's share. * marks the plan's best lr "
             "on validation" + ("; the last column is alpha 2r − alpha 16 on test, each at its own best lr "
                                "(paired by seed, 95% interval over seeds and examples)." if len(ALPHAS) > 1 else
                                " (no alpha 16 runs here: the last column is empty)."), ""]
    for dataset in DATASETS:
        runs = [r for r in records if r["dataset"] == dataset]
        if not runs:
            continue
        cells: dict[tuple[str, str, float], list[dict]] = {}
        for r in runs:
            cells.setdefault((r["structure"], r["alpha"], r["lr"]), []).append(r)
        lines += [f"### {dataset} (validation majority share {100 * runs[0]['validation_majority_share']:.1f}%, "
                  f"{len(runs[0]['validation_correct'])} validation examples)", "",
                  "| plan | alpha | params | " + " | ".join(f"lr {lr:g}" for lr in LRS)
                  + " | 2r − 16 on test at best lrs (pt) |", "|---|---|---|" + "---|" * len(LRS) + "---|"]
        rows = []
        for structure in STRUCTURES:
            best_lr: dict[str, float] = {}
            for alpha in ALPHAS:
                best = best_validation_lr({lr: cells.get((structure, alpha, lr), []) for lr in LRS})
                if best is not None:
                    best_lr[alpha] = best
            for alpha in ALPHAS:
                if alpha not in best_lr:
                    continue
                row = {"structure": structure, "alpha": alpha, "best_lr": best_lr[alpha], "by_lr": {},
                       "params": next(r["params"] for r in runs if (r["structure"], r["alpha"]) == (structure, alpha))}
                texts = []
                for lr in LRS:
                    group = sorted(cells.get((structure, alpha, lr), []), key=lambda r: r["seed"])
                    if not group:
                        texts.append("–")
                        continue
                    v, t = mean_std([r["validation"] for r in group]), mean_std([r["test"] for r in group])
                    collapsed = sum(r["collapsed"] for r in group)
                    row["by_lr"][str(lr)] = {"validation": v, "test": t, "n": len(group), "collapsed": collapsed}
                    mark = "*" if lr == best_lr[alpha] else ""
                    spread = (lambda m: f" ± {100 * m[1]:.1f}") if len(group) > 1 else (lambda m: "")
                    texts.append(f"{100 * v[0]:.1f}{spread(v)} / {100 * t[0]:.1f}{spread(t)}{mark}"
                                 f" (n={len(group)}, collapsed {collapsed})")
                uplift = ""
                if alpha == "2r" and "16" in best_lr:
                    ours = {r["seed"]: r for r in cells[(structure, "2r", best_lr["2r"])]}
                    theirs = {r["seed"]: r for r in cells[(structure, "16", best_lr["16"])]}
                    shared = sorted(set(ours) & set(theirs))
                    if len(shared) > 1:  # one seed: no interval
                        difference = paired_difference_over_examples(
                            [[int(c) for c in ours[s]["test_correct"]] for s in shared],
                            [[int(c) for c in theirs[s]["test_correct"]] for s in shared])
                        row["test_difference_vs_alpha16"] = {**difference.to_record(), "seeds": shared}
                        uplift = (f"{100 * difference.mean:+.1f} [{100 * difference.low:+.1f}, "
                                  f"{100 * difference.high:+.1f}] (seeds {len(shared)})")
                rows.append(row)
                lines.append(f"| {structure} | {alpha} | {row['params']:,} | " + " | ".join(texts) + f" | {uplift} |")
        result["datasets"][dataset] = {"rows": rows, "machine": runs[0]["machine"], "bf16": runs[0]["bf16"]}
        lines.append("")
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return "\n".join(lines)


def configure(results: str, lrs: str, alphas: str, structures: str) -> None:
    """The runs (and their file) this invocation is about; the defaults are the alpha study's."""
    global RESULTS, LRS, ALPHAS, STRUCTURES  # noqa: PLW0603 - a study script's settings, set once from its arguments
    chosen = [s for s in structures.split(";") if s]
    unknown = sorted(set(chosen) - set(STRUCTURES)) + sorted(set(alphas.split(",")) - set(ALPHAS))
    if unknown:
        sys.exit(f"unknown plans or alphas: {unknown}; choose from {sorted(STRUCTURES)} and {ALPHAS}")
    RESULTS = HERE / f"{results}.jsonl"
    LRS = tuple(float(x) for x in lrs.split(","))
    ALPHAS = tuple(a for a in ALPHAS if a in alphas.split(","))
    STRUCTURES = {name: STRUCTURES[name] for name in chosen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shard", default="0/1", help="k/n: run every n-th job starting at k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summarize", action="store_true")
    parser.add_argument("--results", default="lora_scale", help="NAME: runs in NAME.jsonl, tables in NAME.md/.json")
    parser.add_argument("--lrs", default=",".join(map(str, LRS)))
    parser.add_argument("--alphas", default=",".join(ALPHAS), help=f"some of {', '.join(ALPHAS)}")
    parser.add_argument("--structures", default=";".join(STRUCTURES), help="';'-separated, some of the plans above")
    args = parser.parse_args()
    configure(args.results, args.lrs, args.alphas, args.structures)
    if args.summarize:
        text = summarize()
        RESULTS.with_suffix(".md").write_text(text)
        print(text)
        return
    torch.set_num_threads(args.threads)
    quiet_logs()
    shard, shards = (int(x) for x in args.shard.split("/"))
    run(shard, shards)


if __name__ == "__main__":
    main()
