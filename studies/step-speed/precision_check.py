"""Step time of autopeft's trainer at fp32 and at bf16 autocast on this CPU, interleaved in one process.

Why: on a CPU without native bf16 (no AVX512-BF16, no AMX) torch emulates bf16 matmuls, and the old default
``--precision bf16`` made every step many times slower there; the default ``auto`` picks fp32 on such a CPU
(:func:`autopeft.training.step.uses_bf16`). This measures the ratio the choice rests on, on whatever CPU it
runs: LoRA r8 on q,v of MiniLM-L6, trec batches of 16 (autopeft's own sampler), one thread by default.
Rounds alternate fp32 and bf16 so that load from other processes hits both alike; the median step time of
each precision over its rounds is reported, with the machine.

    .venv/bin/python studies/step-speed/precision_check.py --threads 1   # -> precision.json (~3 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "search-quality"))
from sqlib import LORA_R8_QV, load, machine, quiet_logs  # noqa: E402

from autopeft.training.config import TrainConfig  # noqa: E402
from autopeft.training.session import native_bf16  # noqa: E402
from autopeft.training.trial_run import start_run  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per precision")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    session = load("trec").session
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.rounds):
        for precision in PRECISIONS:  # one injected plan at a time: each round injects the plan afresh
            with start_run(session, LORA_R8_QV, TrainConfig(steps=800, lr=1e-3, seed=0, precision=precision)) as run:
                run.advance(1)  # the first step pays the bf16 weight copies and kernel selection
                start = time.perf_counter()
                run.advance(1 + args.steps)
                times[precision].append((time.perf_counter() - start) / args.steps)
    median = {p: statistics.median(v) for p, v in times.items()}
    result = {"plan": "lora r8 q,v", "model": "minilm", "dataset": "trec", "batch_size": 16,
              "threads": args.threads, "native_bf16": native_bf16(torch.device("cpu")),
              "median_step_s": median, "bf16_over_fp32": median["bf16"] / median["fp32"],
              "step_s_by_round": times, "machine": machine()}
    (HERE / "precision.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"native bf16: {result['native_bf16']}; median step fp32 {median['fp32']:.3f} s, bf16 "
          f"{median['bf16']:.3f} s: bf16 / fp32 = {result['bf16_over_fp32']:.1f}x")


if __name__ == "__main__":
    main()
