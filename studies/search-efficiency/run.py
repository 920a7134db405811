"""Search efficiency: random vs TPE vs TPE with Pareto-aware rungs, at equal training compute.

Every run is an ``autopeft search`` (Python API, one worker process, one torch thread) with a budget of
training *steps* rather than trials: the search starts no new trial once ``--full-trials x
--max-steps`` steps were spent (the final stage's retrainings are not counted; ``--seeds 1``).

    random       --sampler random, every plan trained to --max-steps (no rungs)
    tpe          --sampler tpe,    every plan trained to --max-steps (no rungs)
    tpe-rungs    --sampler tpe,    rungs --max-steps/eta .. --max-steps, Pareto-aware promotion (eta 3)

Hypervolume of the validation front after each finished trial, against the cumulative training steps
spent so far. Only plans trained to full fidelity form the front (a plan stopped at a lower rung has
no full-fidelity metric). Objectives are normalised so the reference point is fixed:

    x = trainable params / budget params      (minimised; reference x_ref = 1, the budget)
    y = validation accuracy                   (maximised; reference y_ref = REFERENCE_ACCURACY = 0.5)
    HV = area dominated by the front inside [0, 1] x [0.5, 1]

Compute to target: the target is the mean final hypervolume of the random-search repetitions; for
each run, the cumulative steps at which its hypervolume first reaches the target (runs that never
reach it count as not reaching it). The ratio is that number over random search's total compute.

    .venv/bin/python studies/search-efficiency/run.py                      # the study (~60 min, 2 cores)
    .venv/bin/python studies/search-efficiency/run.py --smoke --model M --dataset D --space S ...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REFERENCE_ACCURACY = 0.5
METHODS = {"random": ("random", False), "tpe": ("tpe", False), "tpe-rungs": ("tpe", True)}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One search in a fresh process; returns its hypervolume curve."""
    import optuna
    import torch

    from autopeft.searching.progress import Reporter
    from autopeft.searching.run import SearchSettings, run_search
    from autopeft.training.config import TrainConfig
    from autopeft.training.options import DataOptions

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, rungs = METHODS[job["method"]]
    max_steps = job["max_steps"]
    settings = SearchSettings(
        data=DataOptions(model=job["model"], dataset=job["dataset"]), budget=job["budget"], space=job["space"],
        trials=10 * job["full_trials"], step_budget=job["full_trials"] * max_steps, out=job["out"], seed=job["seed"],
        sampler=sampler, train=replace(TrainConfig(), steps=max_steps, batch_size=job["batch_size"]),
        min_steps=max(1, round(max_steps / job["eta"])) if rungs else max_steps, eta=job["eta"], seeds=1, workers=1,
        threads=1)
    result = run_search(settings, Reporter(quiet=True))
    return {**job, "curve": curve(Path(result.out)), "budget_params": result.summary["budget_params"]}


def curve(out: Path) -> list[dict[str, Any]]:
    """(cumulative steps, hypervolume) after each finished trial, in completion order."""
    import optuna
    from optuna.trial import TrialState

    from autopeft.study.view import hypervolume_2d

    settings = json.loads((out / "settings.json").read_text())
    budget = settings["budget_params"]
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    finished = sorted((t for t in study.get_trials(deepcopy=False) if t.datetime_complete and t.user_attrs.get("steps")),
                      key=lambda t: t.datetime_complete)
    points, steps, rows = [], 0, []
    for t in finished:
        steps += int(t.user_attrs["steps"])
        if t.state == TrialState.COMPLETE:
            points.append((t.user_attrs["params"] / budget, t.values[0]))
        rows.append({"trial": t.number, "status": t.user_attrs.get("status"), "steps": steps,
                     "hypervolume": hypervolume_2d(points, (1.0, REFERENCE_ACCURACY))})
    return rows


def steps_to_reach(rows: list[dict[str, Any]], target: float, limit: int) -> int | None:
    for row in rows:
        if row["steps"] > limit:
            return None
        if row["hypervolume"] >= target - 1e-12:
            return row["steps"]
    return None


def hv_at(rows: list[dict[str, Any]], steps: int) -> float:
    """Hypervolume after the last trial finished within ``steps`` cumulative steps."""
    value = 0.0
    for row in rows:
        if row["steps"] > steps:
            break
        value = row["hypervolume"]
    return value


def summarise(results: list[dict[str, Any]], compute: int) -> dict[str, Any]:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)
    target = statistics.fmean(hv_at(r["curve"], compute) for r in by_method["random"])
    out: dict[str, Any] = {"target_hypervolume": target, "compute_steps": compute, "methods": {}}
    for method, runs in by_method.items():
        finals = [hv_at(r["curve"], compute) for r in runs]
        reached = [steps_to_reach(r["curve"], target, compute) for r in runs]
        hit = [s for s in reached if s is not None]
        out["methods"][method] = {
            "final_hypervolume": {"values": finals, "mean": statistics.fmean(finals),
                                  "std": statistics.stdev(finals) if len(finals) > 1 else 0.0},
            "steps_to_target": reached,
            "reached": f"{len(hit)}/{len(runs)}",
            # the median over repetitions; a repetition that never reaches the target counts as "more than all"
            "median_compute_ratio": (statistics.median([s / compute if s is not None else float("inf")
                                                        for s in reached])),
            "full_fidelity_trials": [sum(1 for row in r["curve"] if row["status"] == "complete") for r in runs],
            "trained_plans": [len(r["curve"]) for r in runs],
        }
    return out


def plot(results: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"random": "tab:gray", "tpe": "tab:blue", "tpe-rungs": "tab:red"}
    for r in results:
        xs = [0] + [row["steps"] for row in r["curve"]]
        ys = [0.0] + [row["hypervolume"] for row in r["curve"]]
        first = r["rep"] == 0
        ax.step(xs, ys, where="post", color=colours[r["method"]], alpha=0.8, label=r["method"] if first else None)
    ax.axhline(summary["target_hypervolume"], color="black", ls="--", lw=0.8, label="random's final HV (mean)")
    ax.axvline(summary["compute_steps"], color="black", ls=":", lw=0.8)
    ax.set_xlabel("cumulative training steps")
    ax.set_ylabel(f"hypervolume (ref: params = budget, accuracy = {REFERENCE_ACCURACY})")
    ax.set_title("validation front hypervolume vs compute")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> dict[str, Any]:
    import os
    import platform

    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--dataset", default="rotten_tomatoes")
    p.add_argument("--space", default="hybrid")
    p.add_argument("--budget", default="0.5%")
    p.add_argument("--max-steps", type=int, default=100, help="full fidelity (default 100)")
    p.add_argument("--full-trials", type=int, default=20,
                   help="compute per run = this many full-fidelity trials (default 20)")
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--procs", type=int, default=None, help="runs in parallel (default: one per core)")
    p.add_argument("--out", default=str(HERE / "runs"), help="study directories of the runs")
    p.add_argument("--results", default=str(HERE), help="where runs.csv, summary.json, hypervolume.png go")
    p.add_argument("--smoke", action="store_true", help="a quick check of the pipeline (results not meaningful)")
    args = p.parse_args(argv)
    jobs = [{"method": m, "rep": rep, "seed": 1000 * rep + i, "model": args.model, "dataset": args.dataset,
             "space": args.space, "budget": args.budget, "max_steps": args.max_steps,
             "full_trials": args.full_trials, "eta": args.eta, "batch_size": args.batch_size,
             "out": str(Path(args.out) / f"{m}-{rep}")}
            for rep in range(args.reps) for i, m in enumerate(METHODS)]
    procs = args.procs or multiprocessing.cpu_count()
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    compute = args.full_trials * args.max_steps
    summary = summarise(results, compute)
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    rows = [{"method": r["method"], "rep": r["rep"], "seed": r["seed"], **row} for r in results for row in r["curve"]]
    pd.DataFrame(rows).to_csv(results_dir / "runs.csv", index=False)
    record = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "results")},
              "reference_point": {"params_over_budget": 1.0, "accuracy": REFERENCE_ACCURACY},
              "summary": summary, "machine": machine()}
    (results_dir / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, summary, results_dir / "hypervolume.png")
    for method, m in summary["methods"].items():
        print(f"{method:10s} final HV {m['final_hypervolume']['mean']:.4f} ± {m['final_hypervolume']['std']:.4f}; "
              f"reached random's final HV in {m['reached']} runs, median compute ratio {m['median_compute_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
