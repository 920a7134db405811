"""Packed row counts rounded to a multiple: trial time, page faults and memory per multiple.

On CPU, bf16 matmuls run through oneDNN, which compiles a kernel per matmul shape and caches ~1,000 of
them. Padding-free blocks (``autopeft/peft/unpad.py``) make the token count M of ~50 matmuls per step the
batch's real-token count, new almost every step. This script runs, for each ``--multiples`` value of
``autopeft.training.step.PACK_MULTIPLE["cpu"]`` (1 = the exact count), a fresh process (oneDNN's cache is per
process, as it is per search worker) that trains ``--trials`` trials one after another (plans 0, 1, ...
of ``studies/trial-throughput/bench.py``: LoRA hybrids, their seeds and learning rates, ``--steps``
steps then validation), and records each trial's training and validation seconds, median step, minor
page faults per step and the process's peak resident memory. The multiples alternate over ``--repeats``.

    .venv/bin/python studies/step-speed/pack_multiple.py --threads 1     # pack_multiple.json / .csv
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "trial-throughput"))

from bench import autopeft_plan, sample_plans  # noqa: E402

from autopeft.benchmarking import (  # noqa: E402
    machine_record,
    positive_ints,
    prepare_minilm,
    study_arguments,
    write_results,
)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_process(args, multiple: int, repeat: int) -> list[dict]:
    """One fresh process: load, then the trials one after another with this pack multiple."""
    from autopeft.training import step
    from autopeft.training.config import TrainConfig
    from autopeft.training.trial_run import start_run

    step.PACK_MULTIPLE["cpu"] = multiple
    session = prepare_minilm(args).session
    rows = []
    for index, plan in enumerate(sample_plans(args.trials)):
        config = TrainConfig(steps=args.steps, batch_size=16, lr=plan["lr"], seed=plan["seed"])
        with start_run(session, autopeft_plan(plan["ranks"]), config) as run:
            faults, t = _faults(), time.perf_counter()
            run.advance(config.steps)
            trained, train_faults = time.perf_counter(), _faults() - faults
            metrics = run.evaluate("validation")
            rows.append({"multiple": multiple, "repeat": repeat, "trial": index, "train_s": trained - t,
                         "median_step_s": run.median_step_time, "eval_s": time.perf_counter() - trained,
                         "faults_per_step": train_faults / config.steps,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "accuracy": metrics.value})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "pack_multiple.json")
    parser.add_argument("--multiples", type=positive_ints, default=[1, 16, 32, 64])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    multiples = args.multiples
    record = {"machine": machine_record(), "settings": vars(args)}
    rows: list[dict] = []
    context = multiprocessing.get_context("spawn")
    for repeat in range(args.repeats):
        order = multiples if repeat % 2 == 0 else multiples[::-1]
        for multiple in order:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                rows += pool.submit(run_process, args, multiple, repeat).result()
    summary = {}
    for multiple in multiples:
        mine = [r for r in rows if r["multiple"] == multiple]
        summary[str(multiple)] = {
            key: {f"trial_{t}": statistics.mean(r[key] for r in mine if r["trial"] == t) for t in range(args.trials)}
            for key in ("train_s", "median_step_s", "eval_s", "faults_per_step", "peak_rss_mb", "accuracy")}
    base = summary[str(multiples[0])]["train_s"]
    for multiple in multiples:
        summary[str(multiple)]["train_s_ratio_to_first"] = {
            t: summary[str(multiple)]["train_s"][t] / base[t] for t in base}
    record["summary"], record["runs"] = summary, rows
    write_results(args.out, record, rows)
    print(summary)


if __name__ == "__main__":
    main()
