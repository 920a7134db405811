"""A/B of one trainer switch: the same MiniLM LoRA trial with a ``TrainConfig`` flag on and off.

Plan 0 of ``studies/trial-throughput/bench.py`` (LoRA on q/v, its seed and learning rate), ``--steps``
training steps then validation (1,275 reviews), the two settings alternating ``--repeats`` times in one
process (one model load), so that machine load hits both alike. Reports training seconds, median step
and validation seconds per run, and the ratio of the means.

    .venv/bin/python studies/step-speed/switch_ab.py --threads 1 --flag head_rows   # switch_head_rows.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "trial-throughput"))

from bench import autopeft_plan, sample_plans  # noqa: E402

from autopeft.benchmarking import machine_record, prepare_minilm, study_arguments, write_results  # noqa: E402


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "switch_{flag}.json")
    parser.add_argument("--flag", required=True, help="a boolean TrainConfig field, e.g. head_rows")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from dataclasses import fields

    from autopeft.training.config import TrainConfig
    from autopeft.training.trial_run import start_run

    flags = {f.name for f in fields(TrainConfig) if f.type in (bool, "bool")}
    if args.flag not in flags:
        parser.error(f"--flag {args.flag!r} is not a boolean TrainConfig field; choose one of {sorted(flags)}")
    out = args.out.format(flag=args.flag)
    record = {"machine": machine_record(), "settings": vars(args)}
    session = prepare_minilm(args).session
    plan = sample_plans(1)[0]
    rows = []
    for repeat in range(args.repeats):
        for value in (True, False):
            config = TrainConfig(steps=args.steps, batch_size=16, lr=plan["lr"], seed=plan["seed"],
                                 **{args.flag: value})
            with start_run(session, autopeft_plan(plan["ranks"]), config) as run:
                t = time.perf_counter()
                run.advance(config.steps)
                trained = time.perf_counter()
                metrics = run.evaluate("validation")
                rows.append({"repeat": repeat, args.flag: value, "train_s": trained - t,
                             "median_step_s": run.median_step_time, "eval_s": time.perf_counter() - trained,
                             "accuracy": metrics.value, "train_loss": run.train_loss})
            print(rows[-1], flush=True)
    mean = {value: {key: statistics.mean(r[key] for r in rows if r[args.flag] is value)
                    for key in ("train_s", "median_step_s", "eval_s")} for value in (True, False)}
    record["summary"] = {"mean_on": mean[True], "mean_off": mean[False],
                         "ratio_on_off": {k: mean[True][k] / mean[False][k] for k in mean[True]}}
    record["runs"] = rows
    write_results(out, record, rows)
    print(record["summary"])


if __name__ == "__main__":
    main()
