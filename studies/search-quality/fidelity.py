"""How long must a plan train before its validation accuracy stops moving? (chooses search's full fidelity)

LoRA r8 on q,v of every layer (the standard recipe), trained for 150 steps (the old full fidelity) and
for 0.5, 1, 2 and 3 epochs, each length its own run with its own schedule; plus the learning rate at
1 epoch. Tuning datasets only (rotten_tomatoes, trec): bbc_news, amazon_reviews and newsgroups stay out of
every choice this script informs.

    .venv/bin/python studies/search-quality/fidelity.py      # appends to fidelity.jsonl (resumable)
"""

from __future__ import annotations

import argparse
import json

from sqlib import (
    HERE,
    LORA_R8_QV,
    append_jsonl,
    epoch_steps,
    load,
    machine,
    quiet_logs,
    read_jsonl,
    train_recipe,
)

TUNING = ("trec", "rotten_tomatoes")
LENGTHS = ("150", "0.5", "1", "2", "3")  # "150" = steps, the others epochs
LRS = (5e-4, 1e-3, 2e-3, 4e-3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--datasets", default=",".join(TUNING))
    args = parser.parse_args()
    quiet_logs()
    out = HERE / "fidelity.jsonl"
    done = {(r["dataset"], r["length"], r["lr"], r["seed"]) for r in read_jsonl(out)}
    for dataset in args.datasets.split(","):
        prepared = load(dataset)
        runs = [(length, 1e-3) for length in LENGTHS] + [("1", lr) for lr in LRS if lr != 1e-3]
        for seed in range(args.seeds):
            for length, lr in runs:
                if (dataset, length, lr, seed) in done:
                    continue
                steps = 150 if length == "150" else epoch_steps(prepared, float(length))
                result = train_recipe(prepared, "lora r8 q,v", LORA_R8_QV, steps, lr, seed)
                record = {"dataset": dataset, "length": length, **result.record(), "machine": machine()}
                append_jsonl(out, record)
                print(json.dumps({k: record[k] for k in ("dataset", "length", "lr", "seed", "steps",
                                                          "validation", "test", "seconds")}), flush=True)


if __name__ == "__main__":
    main()
