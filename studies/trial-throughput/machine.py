"""Trials per hour on the whole machine: each side laid out on all cores as a user would run it.

``bench.py`` pins both sides to one thread and interleaves their trials (a per-core comparison). A user
of the naive loop, though, runs it with torch's default threads (every core) and trials one after
another; autopeft's search runs ``--workers auto`` (``autopeft.searching.threads.resolve_workers("auto")``: one
single-threaded worker per core, each with its own model and tokenised data). This script measures
both layouts on the same plans as ``bench.py`` (same sampler, seeds, learning rates, 200 steps,
validation accuracy):

- **naive**: ``bench.Naive`` (Optuna + peft + HF Trainer, model reloaded per trial, fp32, padded to 64)
  in this process with ``torch.set_num_threads(cpus)``, the trials one after another;
- **autopeft**: W worker processes (spawned) × T threads, as ``--workers auto`` resolves them; worker i
  prepares its session (model load + tokenisation, counted) and trains plans i, i + W, ...

trials/hour = trials / wall time of the phase (setup included). The phases run one after the other,
so, unlike ``bench.py``, load from other processes is not shared fairly: run it on an idle machine (the
load averages are recorded, and so are this machine's 1024² matmul rates on one thread, bf16 and fp32).

``--pack-multiples 32,1`` runs the autopeft phase once per value of ``autopeft.training.step.PACK_MULTIPLE["cpu"]``
(fresh workers each time): the first is the result, the others an ablation in the same run.

    .venv/bin/python studies/trial-throughput/machine.py      # machine.json / machine.csv (~20 min on 2 cores)
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import Naive, autopeft_plan, sample_plans

from autopeft.benchmarking import (
    machine_record,
    matmul_peak,
    positive_ints,
    prepare_minilm,
    study_arguments,
    write_results,
)

HERE = Path(__file__).parent


def autopeft_worker(plans: list[dict], steps: int, threads: int, pack_multiple: int) -> list[dict]:
    """One worker of the autopeft layout: its own session, then its share of the plans."""
    import argparse

    from autopeft.training import step
    from autopeft.training.config import TrainConfig
    from autopeft.training.trial_run import train_plan

    step.PACK_MULTIPLE["cpu"] = pack_multiple

    prepared = prepare_minilm(argparse.Namespace(threads=threads))
    rows = []
    for plan in plans:
        t = time.perf_counter()
        config = TrainConfig(steps=steps, batch_size=16, lr=plan["lr"], seed=plan["seed"])
        outcome = train_plan(prepared.session, autopeft_plan(plan["ranks"]), config)
        rows.append({"seed": plan["seed"], "autopeft_accuracy": outcome.validation.value,
                     "autopeft_s": time.perf_counter() - t})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run_autopeft(plans: list[dict], steps: int, pack_multiple: int) -> tuple[float, list[dict], tuple[int, int]]:
    from autopeft.searching.threads import resolve_workers

    workers, threads = resolve_workers("auto")
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        shares = [pool.submit(autopeft_worker, plans[i::workers], steps, threads, pack_multiple) for i in range(workers)]
        rows = [row for share in shares for row in share.result()]
    return time.perf_counter() - start, rows, (workers, threads)


def run_naive(plans: list[dict], steps: int, threads: int) -> tuple[float, list[dict]]:
    import argparse

    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    prepared = prepare_minilm(argparse.Namespace(threads=threads))  # the dataset, as the naive loop loads it
    naive = Naive(prepared.loaded.source, prepared.data, steps)
    rows = []
    for plan in plans:
        t = time.perf_counter()
        rows.append({"seed": plan["seed"], "naive_accuracy": naive.trial(plan), "naive_s": time.perf_counter() - t})
        print(json.dumps(rows[-1]), flush=True)
    return time.perf_counter() - start, rows


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "machine.json")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--pack-multiples", type=positive_ints, default=None,
                        help="comma-separated autopeft.training.step.PACK_MULTIPLE['cpu'] values; default: the library's")
    args = parser.parse_args()
    import torch

    from autopeft.searching.threads import available_cpus
    from autopeft.training import step

    cpus = available_cpus()
    plans = sample_plans(args.plans)
    multiples = args.pack_multiples or [step.PACK_MULTIPLE["cpu"]]
    torch.set_num_threads(1)
    peaks = {"bf16_matmul_1024_gflops_1_thread": matmul_peak(torch.bfloat16),
             "fp32_matmul_1024_gflops_1_thread": matmul_peak(torch.float32)}
    record = {"machine": {**machine_record(), **peaks}, "settings": vars(args)}
    naive_s, naive_rows = run_naive(plans, args.steps, cpus)
    autopeft_s, autopeft_rows, (workers, threads) = run_autopeft(plans, args.steps, multiples[0])
    ablation = {}
    for multiple in multiples[1:]:
        seconds, _, _ = run_autopeft(plans, args.steps, multiple)
        ablation[f"pack_multiple_{multiple}"] = {"total_s": seconds, "trials_per_hour": 3600 * len(plans) / seconds,
                                                 "throughput_ratio": naive_s / seconds}
    by_seed = {r["seed"]: r for r in autopeft_rows}
    rows = [{**r, **by_seed[r["seed"]]} for r in naive_rows]
    n = len(rows)
    differences = [r["autopeft_accuracy"] - r["naive_accuracy"] for r in rows]
    record["summary"] = {
        "layout": {"naive": f"1 process x {cpus} threads", "autopeft": f"{workers} workers x {threads} thread(s)"},
        "total_s": {"naive": naive_s, "autopeft": autopeft_s},
        "trials_per_hour": {"naive": 3600 * n / naive_s, "autopeft": 3600 * n / autopeft_s},
        "throughput_ratio": naive_s / autopeft_s,
        "mean_accuracy": {"naive": statistics.mean(r["naive_accuracy"] for r in rows),
                          "autopeft": statistics.mean(r["autopeft_accuracy"] for r in rows)},
        "mean_accuracy_difference": statistics.mean(differences),
        "stdev_accuracy_difference": statistics.stdev(differences) if n > 1 else None,
        "pack_multiple": multiples[0],
        "ablation": ablation,
    }
    record["trials"] = rows
    write_results(args.out, record, rows)
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
