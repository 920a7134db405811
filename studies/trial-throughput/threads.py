"""Thread layout: one trial with all cores' threads vs one single-threaded trial per core, side by side.

Each worker is a separate process (as ``autopeft search --workers N`` runs them) that loads MiniLM and
Rotten Tomatoes, then trains LoRA r=8 on q, v (all layers) for ``--steps`` steps with the default
trainer. A layout's throughput is (steps of all its workers) / (wall time from the first worker's first
step to the last worker's last step); loading is excluded (it happens once per worker per search).
Layouts alternate (A, B, A, B, ...) ``--repeats`` times so that load from other processes hits both.
The winner sets ``autopeft.searching.threads.AUTO_THREADS_PER_WORKER``.

    .venv/bin/python studies/trial-throughput/threads.py          # writes threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def worker(threads: int, steps: int, start_at: float) -> None:
    import torch

    torch.set_num_threads(threads)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from autopeft.peft.plan import Plan, PlanEntry
    from autopeft.training.config import TrainConfig
    from autopeft.training.options import DataOptions
    from autopeft.training.pipeline import prepare
    from autopeft.training.trial_run import start_run

    session = prepare(DataOptions(), splits=("train", "validation")).session
    plan = Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),))
    while time.time() < start_at:  # every worker of a layout starts training at the same moment
        time.sleep(0.05)
    begin = time.time()
    with start_run(session, plan, TrainConfig(steps=steps, seed=0)) as run:
        run.advance(steps)
    print(json.dumps({"begin": begin, "end": time.time(), "steps": steps}), flush=True)


def layout(workers: int, threads: int, steps: int, load_s: float) -> dict:
    start_at = time.time() + load_s
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(threads), str(steps), repr(start_at)],
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed with code {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    if min(r["begin"] for r in results) < start_at - 1:
        raise RuntimeError("a worker started late; raise --load-seconds")
    wall = max(r["end"] for r in results) - min(r["begin"] for r in results)
    return {"workers": workers, "threads": threads, "steps_per_s": sum(r["steps"] for r in results) / wall,
            "wall_s": wall}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--load-seconds", type=float, default=90.0, help="time given to the workers to load")
    parser.add_argument("--out", default=str(HERE / "threads.json"))
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    layouts = {f"1x{cpus}threads": (1, cpus), f"{cpus}x1thread": (cpus, 1)}
    runs: dict[str, list[dict]] = {name: [] for name in layouts}
    for _ in range(args.repeats):
        for name, (workers, threads) in layouts.items():
            runs[name].append(layout(workers, threads, args.steps, args.load_seconds))
            print(name, runs[name][-1], flush=True)
    summary = {name: statistics.median(r["steps_per_s"] for r in rs) for name, rs in runs.items()}
    from autopeft.study.files import StudyFiles

    record = {"machine": {**StudyFiles.machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg": os.getloadavg()},
              "settings": vars(args), "steps_per_s": summary, "better": max(summary, key=summary.get), "runs": runs}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["steps_per_s"]), "better:", record["better"])


if __name__ == "__main__":
    main()
