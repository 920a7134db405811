"""One-shot vs Bayesian search, side by side in one run (issue #19).

Per dataset (MiniLM, 0.5% budget, the default full fidelity, 2 CPU workers), three searches one after
another on the same machine:

  (a) ``--strategy oneshot``        the supernet once, its 8 readouts trained as the trials (no time budget:
                                    it ends when the readouts and the final stage are done);
  (b) ``--strategy oneshot+bayes``  the readouts first, then TPE, 20 minutes in all;
  (c) the default search            TPE, 20 minutes in all.

Recorded per search (``results/<dataset>/<arm>.json``): wall time, training steps (supernet + search + final
stage), the front's hypervolume (params normalised by the budget, as the report draws it) and its curve over
steps (``results.md`` adds the steps at which it first reached (c)'s final value), best/'s test accuracy over
its seeds, and for (a)/(b) the rank
correlation between the supernet's prediction for each readout (its validation accuracy with only that
readout's candidates open) and the verified accuracy of the readout trained for real (Spearman over the
readouts at the first rung, which every readout reaches, and over those trained to full fidelity).
``--summarize`` writes ``results.md``.

    .venv/bin/python studies/oneshot/run.py --datasets rotten_tomatoes,bbc_news
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from autopeft.study.view import load_study_view

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUNS = REPO / "runs" / "oneshot"
MAX_LENGTH = {"newsgroups": 128}
ARMS = {"oneshot": ["--strategy", "oneshot"],
        "oneshot+bayes": ["--strategy", "oneshot+bayes", "--time-budget", "20m"],
        "bayes": ["--time-budget", "20m"]}


def search(dataset: str, arm: str) -> dict:
    out = RUNS / dataset / arm
    command = [str(Path(sys.executable).with_name("autopeft")), "search", "--dataset", dataset, "--max-length",
               str(MAX_LENGTH.get(dataset, 64)), "--budget", "0.5%", "--trials", "100000", "--quiet",
               "--out", str(out), *ARMS[arm]]
    start = time.time()
    subprocess.run(command, check=True)
    wall = time.time() - start
    summary = json.loads((out / "summary.json").read_text())
    best = json.loads((out / "best" / "metrics.json").read_text())
    view = load_study_view(out)
    curve = view.efficiency_curve()
    supernet_steps = summary["compute"].get("supernet_steps", 0)
    record = {"arm": arm, "command": " ".join(command[1:]), "wall_seconds": round(wall, 1),
              "steps": {"supernet": supernet_steps, "search": summary["compute"]["search_steps"],
                        "final_stage": summary["compute"]["final_stage_steps"]},
              "hypervolume": curve[-1]["hypervolume"] if curve else None,
              # the curve counts trial steps only: the supernet's come first
              "curve": [{"steps": supernet_steps + p["steps"], "hypervolume": p["hypervolume"]} for p in curve],
              "best_test": best.get("test_retrain") or best.get("test"), "machine": summary.get("machine"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=REPO).stdout.strip()}
    if summary.get("oneshot"):
        record["rank_correlation"] = rank_correlation(out, summary["oneshot"]["readouts"])
    return record


def rank_correlation(out: Path, readouts: list[dict]) -> dict:
    trials = pd.read_csv(out / "trials.csv")
    trials = trials[trials.readout.notna()]
    first_rung, full = [], []
    for row in trials.itertuples():
        predicted = readouts[int(row.readout)]["supernet_metric"]
        rungs = json.loads(row.rung_metrics) if isinstance(row.rung_metrics, str) and row.rung_metrics else {}
        if rungs:
            first_rung.append((predicted, rungs[min(rungs, key=int)]))
        if row.status == "complete":
            full.append((predicted, row.metric))

    def rho(pairs: list[tuple[float, float]]) -> dict:
        if len(pairs) < 3:
            return {"n": len(pairs), "spearman": None}
        return {"n": len(pairs), "spearman": float(spearmanr([p for p, _ in pairs], [v for _, v in pairs]).statistic)}
    return {"first_rung": rho(first_rung), "full_fidelity": rho(full)}


def steps_to(curve: list[dict], target: float) -> int | None:
    """Training steps (supernet included) at which a front's hypervolume first reached ``target``."""
    return next((p["steps"] for p in curve if p["hypervolume"] >= target - 1e-12), None)


def summarize() -> str:
    """results.md: one row per dataset and arm; compute to reach the default search's (bayes') final
    hypervolume, as a ratio of the default search's own supernet + search steps (final stage excluded:
    every arm's final stage retrains its front the same way)."""
    lines = ["| dataset | arm | wall (min) | supernet + search + final-stage steps | hypervolume | steps to bayes' "
             "final hypervolume (ratio) | best/ test accuracy | Spearman (first rung / full fidelity) |",
             "|---|---|---|---|---|---|---|---|"]
    for results in sorted(p for p in (HERE / "results").iterdir() if p.is_dir()):
        arms = {arm: json.loads((results / f"{arm}.json").read_text()) for arm in ARMS
                if (results / f"{arm}.json").exists()}
        reference = arms.get("bayes")
        for name, r in arms.items():
            steps = r["steps"]
            test = r["best_test"] or {}
            accuracy = f'{100 * test["mean"]:.1f} ± {100 * test["std"]:.1f}' if "mean" in test else "-"
            corr = r.get("rank_correlation")
            spearman = "-" if not corr else " / ".join(
                "-" if c["spearman"] is None else f'{c["spearman"]:+.2f} (n={c["n"]})'
                for c in (corr["first_rung"], corr["full_fidelity"]))
            reach = "-"
            if reference and reference["hypervolume"]:
                hit = steps_to(r["curve"], reference["hypervolume"])
                own = reference["steps"]["supernet"] + reference["steps"]["search"]
                reach = "never" if hit is None else f"{hit} ({hit / own:.2f}×)"
            lines.append(f'| {results.name} | {name} | {r["wall_seconds"] / 60:.1f} | {steps["supernet"]} + '
                         f'{steps["search"]} + {steps["final_stage"]} | {r["hypervolume"] or 0:.4f} | {reach} | '
                         f"{accuracy} | {spearman} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="rotten_tomatoes,bbc_news")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--summarize", action="store_true", help="only write results.md from results/")
    args = parser.parse_args()
    if args.summarize:
        (HERE / "results.md").write_text(summarize())
        return
    for dataset in args.datasets.split(","):
        results = HERE / "results" / dataset
        results.mkdir(parents=True, exist_ok=True)
        for arm in args.arms.split(","):
            path = results / f"{arm}.json"
            if path.exists():
                continue
            shutil.rmtree(RUNS / dataset / arm, ignore_errors=True)  # a half-run arm starts over: clean timing
            path.write_text(json.dumps(search(dataset, arm), indent=2) + "\n")


if __name__ == "__main__":
    main()
