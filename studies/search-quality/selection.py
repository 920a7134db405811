"""When may a search keep its own plan over the best baseline? (issue #18, tuning dataset trec only)

Three times a search kept a searched plan because its validation uplift over LoRA r8 q,v was "beyond
noise" on 3 paired seeds, and three times it tied or lost on test (search-quality bbc_news: validation
+0.8, test -0.9; oneshot rotten_tomatoes +1.2 / +0.0; oneshot bbc_news +0.6 / -0.6). The rule tests
seed noise only: both plans are scored on the *same* validation examples, the ones the pick was chosen
on, so the luck of those examples (s.e. ~1 pt on a few hundred) is never counted.

This measures candidate keep-the-pick rules on real trainings with per-example predictions:

- **plans**: the distinct non-empty plans a real default search on trec trained at full fidelity
  (``space-choice/trec-compact/trials.csv``) and LoRA r8 q,v, every one at lr 1e-3, ``--steps`` steps,
  4 seeds each; validation and test predictions of every run are kept (``selection-<dataset>.jsonl``).
- **a simulated search**: a random subset of ``--subset`` candidate plans and a random one of the 4 seeds;
  the pick is the best on validation at that seed (one run per plan, as a search's trials); the other
  three seeds are the final stage's retraining, where the pick meets the baseline seed by seed.
- **rules** deciding on validation, on the final stage's three seeds:
  ``seeds`` (today's): one-sided paired t-test over the seeds, 5%;
  ``seeds+examples``: the uplift must clear both noises at once, seed and example, combined
  (lower bound = mean - sqrt((t_K-1 se_seed)^2 + (z se_examples)^2));
  ``confirm``: the pick is chosen on one half of validation (seed 0) and judged by ``seeds+examples``
  on the other half, which the choice never saw.
- **outcome**: the test accuracy of what the rule keeps minus the baseline's (means over the final
  seeds): its mean over simulated searches, how often the rule keeps a plan that is worse on test,
  better on test. The per-plan table (no selection) uses seed 0 as the search's run, seeds 1-3 as final.

Test data decides nothing here except the scoring of the rules, and trec informs no number reported in
``results.md``'s held-out comparison.

    .venv/bin/python studies/search-quality/selection.py --dataset trec --shard 0/2 &
    .venv/bin/python studies/search-quality/selection.py --dataset trec --shard 1/2
    .venv/bin/python studies/search-quality/selection.py --dataset trec --summarize   # -> selection.md
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqlib import (  # noqa: E402
    LORA_R8_QV,
    append_jsonl,
    load,
    machine,
    quiet_logs,
    read_jsonl,
    train_with_predictions,
)

from autopeft.peft.plan import Plan  # noqa: E402
from autopeft.searching.final_stage import mean_std  # noqa: E402
from autopeft.searching.uplift import paired_difference, paired_difference_over_examples  # noqa: E402
from autopeft.training.config import TrainConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2, 3)  # 0: the search's run; 1-3: the final stage's retraining
LR = 1e-3
BASELINE = "lora-r8-qv"
TUNING = ("trec", "rotten_tomatoes")


def candidate_plans() -> dict[str, Plan]:
    """LoRA r8 q,v and the distinct non-empty plans of the trec compact search, keyed by their summary."""
    trials = pd.read_csv(HERE / "space-choice" / "trec-compact" / "trials.csv")
    plans = {BASELINE: LORA_R8_QV}
    for row in trials[(trials.steps == trials.steps.max()) & trials.baseline.isna()].itertuples():
        plan = Plan.from_json(row.plan)
        if plan.entries and plan != LORA_R8_QV:
            plans.setdefault(row.summary, plan)
    return plans


def run(dataset: str, steps: int, shard: int, shards: int, baseline_lrs: tuple[float, ...] = ()) -> None:
    """Train every candidate at ``LR`` with every seed, or with ``baseline_lrs`` only the baseline at those
    learning rates (what one sampled lr costs the in-search baseline)."""
    path = HERE / f"selection-{dataset}.jsonl"
    done = {(r["plan"], r["seed"], r["lr"]) for r in read_jsonl(path) if r["steps"] == steps}
    if baseline_lrs:
        jobs = [(BASELINE, LORA_R8_QV, seed, lr) for lr in baseline_lrs for seed in SEEDS]
    else:
        jobs = [(name, plan, seed, LR) for name, plan in candidate_plans().items() for seed in SEEDS]
    mine = [job for i, job in enumerate(jobs) if i % shards == shard and (job[0], job[2], job[3]) not in done]
    print(f"{dataset}: {len(mine)} of {len(jobs)} runs in shard {shard}/{shards}", flush=True)
    if not mine:
        return
    prepared = load(dataset)
    session = prepared.session
    for name, plan, seed, lr in mine:
        result = train_with_predictions(session, plan, TrainConfig(steps=steps, lr=lr, seed=seed))
        append_jsonl(path, {"dataset": dataset, "plan": name, "seed": seed, "steps": steps, "lr": lr, **result,
                            "machine": machine()})
        print(f"{name} lr {lr:g} seed {seed}: validation {result['validation']:.4f} test {result['test']:.4f} "
              f"({result['seconds']:.0f} s)", flush=True)


# --- the simulation ----------------------------------------------------------------------------------
Correct = dict[str, dict[int, list[int]]]  # plan -> seed -> per-example correctness (1/0)
FINAL = SEEDS[1:]


def correctness(records: list[dict]) -> tuple[Correct, Correct]:
    validation: Correct = {}
    test: Correct = {}
    for r in records:
        validation.setdefault(r["plan"], {})[r["seed"]] = [int(c) for c in r["validation_correct"]]
        test.setdefault(r["plan"], {})[r["seed"]] = [int(c) for c in r["test_correct"]]
    return validation, test


def accuracy(correct: list[int], index: tuple[int, ...] | None = None) -> float:
    return statistics.fmean(correct if index is None else [correct[i] for i in index])


class Judge:
    """The keep-the-pick rules on seeds 1-3 of validation, over all examples or a subset (``index``);
    cached, since simulated searches often draw the same pick."""

    def __init__(self, validation: Correct) -> None:
        self.validation = validation
        self.cache: dict[tuple, bool] = {}

    def keeps(self, rule: str, pick: str, index: tuple[int, ...] | None = None, final: tuple[int, ...] = FINAL) -> bool:
        key = (rule, pick, index, final)
        if key not in self.cache:
            ours = [self.subset(pick, s, index) for s in final]
            theirs = [self.subset(BASELINE, s, index) for s in final]
            if rule == "seeds":
                verdict = paired_difference([statistics.fmean(o) for o in ours],
                                            [statistics.fmean(t) for t in theirs]).beyond_noise
            else:
                verdict = paired_difference_over_examples(ours, theirs).beyond_noise
            self.cache[key] = verdict
        return self.cache[key]

    def subset(self, plan: str, seed: int, index: tuple[int, ...] | None) -> list[int]:
        values = self.validation[plan][seed]
        return values if index is None else [values[i] for i in index]


def complete_candidates(validation: Correct) -> list[str]:
    return sorted(p for p in validation if p != BASELINE and set(validation[p]) >= set(SEEDS))


def simulate(validation: Correct, test: Correct, subset: int, searches: int, seed: int = 0) -> dict:
    judge = Judge(validation)
    candidates = complete_candidates(validation)
    n = len(validation[BASELINE][0])
    halves = random.Random(seed).sample(range(n), n)
    choose_on, judge_on = tuple(sorted(halves[: n // 2])), tuple(sorted(halves[n // 2:]))
    rng = random.Random(seed)
    outcomes: dict[str, list[tuple[bool, float]]] = {rule: [] for rule in RULES}
    for _ in range(searches):
        # which of the 4 seeds plays the search's run varies; the other three are the final stage's
        searched = rng.choice(SEEDS)
        final = tuple(s for s in SEEDS if s != searched)

        def test_uplift(plan: str, final: tuple[int, ...] = final) -> float:
            return statistics.fmean(accuracy(test[plan][s]) - accuracy(test[BASELINE][s]) for s in final)

        drawn = rng.sample(candidates, min(subset, len(candidates)))
        pick = max(drawn, key=lambda p: (accuracy(validation[p][searched]), p))
        outcomes["always keep"].append((True, test_uplift(pick)))
        for rule in ("seeds", "seeds+examples"):
            keep = judge.keeps(rule, pick, None, final)
            outcomes[rule].append((keep, test_uplift(pick) if keep else 0.0))
        confirm_pick = max(drawn, key=lambda p: (accuracy(validation[p][searched], choose_on), p))
        keep = judge.keeps("seeds+examples", confirm_pick, judge_on, final)
        outcomes["confirm"].append((keep, test_uplift(confirm_pick) if keep else 0.0))
    summary = {}
    for rule, pairs in outcomes.items():
        kept = [u for k, u in pairs if k]
        summary[rule] = {"keep_rate": len(kept) / len(pairs),
                         "mean_test_uplift": statistics.fmean(u for _, u in pairs),
                         "kept_worse_on_test": sum(u < 0 for u in kept) / len(pairs),
                         "kept_better_on_test": sum(u > 0 for u in kept) / len(pairs),
                         "mean_test_uplift_when_kept": statistics.fmean(kept) if kept else None}
    return summary


RULES = ("always keep", "seeds", "seeds+examples", "confirm")


def per_plan(validation: Correct, test: Correct) -> list[dict]:
    """Each candidate against the baseline without selection: both rules on validation, and test."""
    judge = Judge(validation)
    rows = []
    for plan in complete_candidates(validation):
        ours_test = [accuracy(test[plan][s]) for s in FINAL]
        theirs_test = [accuracy(test[BASELINE][s]) for s in FINAL]
        rows.append({"plan": plan,
                     "validation_seed0": accuracy(validation[plan][0]),
                     "validation": statistics.fmean(accuracy(validation[plan][s]) for s in FINAL),
                     "keep_seeds": judge.keeps("seeds", plan),
                     "keep_seeds+examples": judge.keeps("seeds+examples", plan),
                     "test_uplift": paired_difference_over_examples(
                         [test[plan][s] for s in FINAL], [test[BASELINE][s] for s in FINAL]).to_record(),
                     "test_uplift_seeds_only": paired_difference(ours_test, theirs_test).to_record()})
    return rows


def summarize(dataset: str, steps: int, subset: int, searches: int) -> str:
    everything = [r for r in read_jsonl(HERE / f"selection-{dataset}.jsonl") if r["steps"] == steps]
    records = [r for r in everything if r["lr"] == LR]
    validation, test = correctness(records)
    result = {"dataset": dataset, "runs": len(records), "plans": len(validation), "subset": subset,
              "searches": searches, "simulation": simulate(validation, test, subset, searches),
              "per_plan": per_plan(validation, test), "baseline_by_lr": baseline_by_lr(everything),
              "machine": records[0]["machine"] if records else None}
    (HERE / f"selection-{dataset}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"## Keep-the-pick rules on {dataset} ({len(validation) - 1} candidate plans + {BASELINE}, "
             f"lr {LR}, {len(SEEDS)} seeds each, {len(validation[BASELINE][0])} validation / "
             f"{len(test[BASELINE][0])} test examples)", "",
             f"{searches} simulated searches, each over {subset} random candidates: the pick is the best at one "
             "random seed, judged against the baseline on the other three.", "",
             "| rule | keeps the pick | kept, worse on test | kept, better on test | mean test uplift of what is kept (pt) |",
             "|---|---|---|---|---|"]
    for rule, s in result["simulation"].items():
        lines.append(f"| {rule} | {100 * s['keep_rate']:.0f}% | {100 * s['kept_worse_on_test']:.0f}% | "
                     f"{100 * s['kept_better_on_test']:.0f}% | {100 * s['mean_test_uplift']:+.2f} |")
    lines += ["", "Each candidate against the baseline, no selection (validation mean of seeds 1-3; test uplift "
              "with the seeds+examples 95% interval):", "",
              "| plan | validation (seed 0) | validation (seeds 1-3) | kept by seeds | kept by seeds+examples | test uplift (pt) |",
              "|---|---|---|---|---|---|"]
    base = statistics.fmean(accuracy(validation[BASELINE][s]) for s in FINAL)
    lines.append(f"| {BASELINE} (baseline) | {100 * accuracy(validation[BASELINE][0]):.1f} | "
                 f"{100 * base:.1f} | | | |")
    for row in sorted(result["per_plan"], key=lambda r: -r["validation"]):
        u = row["test_uplift"]
        lines.append(f"| {row['plan']} | {100 * row['validation_seed0']:.1f} | {100 * row['validation']:.1f} | "
                     f"{'yes' if row['keep_seeds'] else 'no'} | {'yes' if row['keep_seeds+examples'] else 'no'} | "
                     f"{100 * u['mean']:+.1f} [{100 * u['low']:+.1f}, {100 * u['high']:+.1f}] |")
    if len(result["baseline_by_lr"]) > 1:
        lines += ["", f"{BASELINE} by learning rate (the in-search baseline gets one lr drawn from the space's "
                  "range), mean ± std over its seeds:", "", "| lr | seeds | validation | test |", "|---|---|---|---|"]
        for row in result["baseline_by_lr"]:
            lines.append(f"| {row['lr']:g} | {row['seeds']} | {100 * row['validation'][0]:.1f} ± "
                         f"{100 * row['validation'][1]:.1f} | {100 * row['test'][0]:.1f} ± {100 * row['test'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def baseline_by_lr(records: list[dict]) -> list[dict]:
    """LoRA r8 q,v's validation and test accuracy (mean, std over seeds) at each lr it was trained with."""
    rows = []
    for lr in sorted({r["lr"] for r in records if r["plan"] == BASELINE}):
        runs = [r for r in records if r["plan"] == BASELINE and r["lr"] == lr]
        rows.append({"lr": lr, "seeds": len(runs), "validation": mean_std([r["validation"] for r in runs]),
                     "test": mean_std([r["test"] for r in runs])})
    return rows


def learning_rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="trec", choices=TUNING)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--shard", default="0/1", help="k/n: run every n-th job starting at k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subset", type=int, default=8, help="candidates per simulated search")
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--baseline-lrs", default=(), type=learning_rates,
                        help="comma-separated: train only LoRA r8 q,v at these lrs (4 seeds each)")
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args()
    if args.summarize:
        text = summarize(args.dataset, args.steps, args.subset, args.searches)
        (HERE / f"selection-{args.dataset}.md").write_text(text)
        print(text)
        return
    torch.set_num_threads(args.threads)
    quiet_logs()
    shard, shards = (int(x) for x in args.shard.split("/"))
    run(args.dataset, args.steps, shard, shards, args.baseline_lrs)


if __name__ == "__main__":
    main()
