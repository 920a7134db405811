"""Tables of the search-quality study from ``results/<dataset>/`` and ``fidelity.jsonl``.

Writes ``results.json`` (every number below) and ``results.md`` (the tables the README quotes).

Per dataset, each recipe's learning rate was picked on validation with the first seed; its numbers are
mean ± sample std over the pick's 3 seeds at that rate. The *best baseline* is the PEFT recipe (LoRA r8
q,v or parallel adapter) with the higher mean validation accuracy: chosen on validation, reported on
test. Differences are paired by seed (same seeds, same data order and head initialisation) with a 95%
t-interval (autopeft.searching.uplift); across datasets, the average of the per-dataset mean differences
with a t-interval over datasets (df = datasets - 1).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd
from scipy import stats
from sqlib import HERE, chosen_lr, read_jsonl

from autopeft.searching.final_stage import mean_std
from autopeft.searching.uplift import accuracy_standard_error, paired_difference

PEFT_BASELINES = ("lora r8 q,v", "parallel adapter")


def recipe_rows(records: list[dict], seeds: list[int], adopted: dict[str, float] | None = None) -> dict[str, dict]:
    """Per recipe, its runs at the lr chosen on validation with the first seed (or ``adopted``: the rates
    an earlier results folder chose, see run.py's ``--reference-lrs-from``)."""
    by_recipe: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_recipe[r["recipe"]].append(r)
    rows = {}
    for name, runs in by_recipe.items():
        first = [r for r in runs if r["seed"] == seeds[0]]
        chosen = adopted[name] if adopted else chosen_lr(runs, name, seeds[0])
        at = {r["seed"]: r for r in runs if r["lr"] == chosen}
        if not all(s in at for s in seeds):
            continue  # not finished
        val = [at[s]["validation"] for s in seeds]
        test = [at[s]["test"] for s in seeds]
        rows[name] = {"lr": chosen, "grid": {str(r["lr"]): r["validation"] for r in first},
                      "params": at[seeds[0]]["params"], "steps": at[seeds[0]]["steps"],
                      "validation": val, "test": test, "validation_mean_std": mean_std(val),
                      "test_mean_std": mean_std(test), "seconds": [at[s]["seconds"] for s in seeds]}
    return rows


def dataset_summary(folder: Path) -> dict | None:
    dataset = folder.name
    if not (folder / "best-metrics.json").exists():
        return None
    best = json.loads((folder / "best-metrics.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    search = json.loads((folder / "search.json").read_text())
    seeds = best["test_retrain"]["seeds"]
    comparison = summary.get("baseline_comparison") or {}
    val = best["retrain"]["values"]
    test = best["test_retrain"]["values"]
    adopted = json.loads((folder / "reference-lrs.json").read_text()) if (folder / "reference-lrs.json").exists() else None
    rows = recipe_rows(read_jsonl(folder / "references.jsonl"), seeds, adopted["lrs"] if adopted else None)
    sizes = summary.get("splits") or {}
    out = {"dataset": dataset, "seeds": seeds, "steps": summary["settings"]["train"]["steps"],
           "search": {"plan": best.get("plan") or summary.get("best", {}).get("plan"),
                      "baseline_kept": best.get("baseline"), "params": best["adapter_params"],
                      "validation": val, "test": test, "validation_mean_std": mean_std(val),
                      "test_mean_std": mean_std(test), "wall_seconds": search["wall_seconds"],
                      "trials": summary.get("trials", {}), "in_search_comparison": comparison},
           "recipes": rows, "machine": search["machine"]}
    if adopted:
        out["reference_lrs_from"] = adopted["from"]
    out["selection_optimism"] = selection_optimism(folder / "trials.csv")
    if "test" in sizes:
        out["test_standard_error"] = accuracy_standard_error(statistics.fmean(test), sizes["test"])
    peft = [name for name in PEFT_BASELINES if name in rows]
    if peft:
        best_name = max(peft, key=lambda n: rows[n]["validation_mean_std"][0])
        out["best_baseline"] = best_name
        out["differences"] = {}
        for other in sorted({best_name, "lora r8 q,v", "full fine-tuning", "head only"} & set(rows)):
            out["differences"][other] = {
                "test": paired_difference(test, rows[other]["test"]).to_record(),
                "validation": paired_difference(val, rows[other]["validation"]).to_record()}
    return out


def selection_optimism(trials_csv) -> dict | None:
    """The winner's curse, measured: for each plan retrained in the final stage, its own search run's
    validation metric minus the mean of its retraining seeds. Positive = the search run was luckier than
    the plan is; it is why a pick made on single runs regresses when retrained."""
    trials = pd.read_csv(trials_csv)
    retrained = trials[trials.retrain_mean.notna() & trials.metric.notna()]
    if retrained.empty:
        return None
    gaps = (retrained.metric - retrained.retrain_mean).tolist()
    return {"n": len(gaps), "mean": statistics.fmean(gaps), "max": max(gaps), "min": min(gaps)}


def across(datasets: list[dict], key: str) -> dict | None:
    means = [d["differences"][d["best_baseline"] if key == "best baseline" else key]["test"]["mean"]
             for d in datasets if "differences" in d
             and (key == "best baseline" or key in d["differences"])]
    if not means:
        return None
    mean = statistics.fmean(means)
    if len(means) < 2:
        return {"mean": mean, "n": 1}
    half = float(stats.t.ppf(0.975, len(means) - 1)) * statistics.stdev(means) / math.sqrt(len(means))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(means)}


def pct(pair: tuple[float, float] | list[float]) -> str:
    return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"


def diff(record: dict) -> str:
    return f"{100 * record['mean']:+.1f} [{100 * record['low']:+.1f}, {100 * record['high']:+.1f}]"


def markdown(datasets: list[dict], overall: dict) -> str:
    lines = ["| dataset | steps | search (best/) | searched pick | LoRA r8 q,v | parallel adapter | full FT | head only |"
             " best baseline | search − best baseline | search − full FT |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in datasets:
        r = d["recipes"]

        def cell(name: str, rows: dict = r) -> str:
            return f"{pct(rows[name]['test_mean_std'])} (lr {rows[name]['lr']:g})" if name in rows else "–"

        dif = d.get("differences", {})
        searched = d["search"]["in_search_comparison"].get("test", {}).get("pick")
        kept = f" ({d['search']['baseline_kept']} kept)" if d["search"]["baseline_kept"] else ""
        lines.append(f"| {d['dataset']} | {d['steps']} | {pct(d['search']['test_mean_std'])}{kept} | "
                     f"{pct(mean_std(searched)) if searched else '–'} | {cell('lora r8 q,v')} | "
                     f"{cell('parallel adapter')} | {cell('full fine-tuning')} | {cell('head only')} | "
                     f"{d.get('best_baseline', '–')} | "
                     f"{diff(dif[d['best_baseline']]['test']) if 'best_baseline' in d else '–'} | "
                     f"{diff(dif['full fine-tuning']['test']) if 'full fine-tuning' in dif else '–'} |")
    lines += ["", "Test accuracy (%), mean ± std over 3 seeds; differences in points, paired by seed, 95% interval.", "",
              "Selection optimism (the winner's curse): per plan retrained in the final stage, its own search "
              "run's validation accuracy minus its retraining seeds' mean, in points:", ""]
    for d in datasets:
        o = d.get("selection_optimism")
        if o:
            lines.append(f"- {d['dataset']}: {100 * o['mean']:+.2f} on average over {o['n']} plans "
                         f"(from {100 * o['min']:+.2f} to {100 * o['max']:+.2f})")
    lines.append("")
    for key, record in overall.items():
        if record and record.get("n", 0) >= 2:
            lines.append(f"- average over {record['n']} datasets, search − {key}: {100 * record['mean']:+.2f} pt "
                         f"(95% interval over datasets {100 * record['low']:+.2f} to {100 * record['high']:+.2f})")
        elif record:
            lines.append(f"- one dataset so far, search − {key}: {100 * record['mean']:+.2f} pt")
    return "\n".join(lines) + "\n"


def fidelity_table(records: list[dict]) -> str:
    """Validation accuracy of LoRA r8 q,v by training length (lr 1e-3) and by lr (one epoch), mean over seeds."""
    cells: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    steps: dict[tuple[str, str], int] = {}
    for r in records:
        cells[(r["dataset"], r["length"], r["lr"])].append(r["validation"])
        steps[(r["dataset"], r["length"])] = r["steps"]
    lines = ["| dataset | seeds | 150 steps | 0.5 epoch | 1 epoch | 2 epochs | 3 epochs | 1 epoch, lr 5e-4 / 1e-3 / 2e-3 / 4e-3 |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset in sorted({r["dataset"] for r in records}):
        def cell(length: str, lr: float = 1e-3, ds: str = dataset) -> str:
            values = cells.get((ds, length, lr))
            return f"{100 * statistics.fmean(values):.1f}" if values else "–"
        seeds = len(cells.get((dataset, "1", 1e-3), []))
        lengths = [f"{cell(n)} ({steps.get((dataset, n), '?')} st.)" for n in ("150", "0.5", "1", "2", "3")]
        lrs = " / ".join(cell("1", lr) for lr in (5e-4, 1e-3, 2e-3, 4e-3))
        lines.append(f"| {dataset} | {seeds} | " + " | ".join(lengths) + f" | {lrs} |")
    return "\n".join(lines) + "\n\nValidation accuracy (%) of LoRA r8 q,v, mean over seeds; lr 1e-3 unless stated.\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default="results", help="results folder; writes <folder>.json and .md")
    args = parser.parse_args()
    if not (HERE / args.results).is_dir():
        parser.error(f"--results {args.results}: no such folder in {HERE}")
    folders = sorted(p for p in (HERE / args.results).iterdir() if p.is_dir())
    datasets = [d for d in (dataset_summary(f) for f in folders) if d is not None]
    overall = {key: across(datasets, key) for key in ("best baseline", "lora r8 q,v", "full fine-tuning")}
    fidelity = read_jsonl(HERE / "fidelity.jsonl")
    (HERE / f"{args.results}.json").write_text(json.dumps({"datasets": datasets, "across_datasets": overall,
                                                           "fidelity": fidelity}, indent=1) + "\n")
    (HERE / f"{args.results}.md").write_text("## Comparison\n\n" + markdown(datasets, overall)
                                             + "\n## Fidelity (tuning datasets)\n\n" + fidelity_table(fidelity))
    print((HERE / f"{args.results}.md").read_text())


if __name__ == "__main__":
    main()
