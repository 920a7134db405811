"""Do the fast paths change what a trial learns? Validation accuracy, fp32 reference vs the defaults.

Same plans, same seeds, same data order up to the batching: MiniLM-L6 on Rotten Tomatoes, ``--steps``
steps (default 150, the demo's fidelity), batch 16, max length 64, lr 2e-3.

- ``reference``: ``precision="fp32"``, ``prefix_cache="off"``, ``bucket_by_length=False``,
  ``unpad=False``, ``head_rows=False``: fp32 everywhere, the full model in train mode, padded blocks,
  every row through the last block, batches of a plain seeded permutation;
- ``fast``: the defaults: bf16 autocast with bf16 frozen weights (attention scores, softmax and dropout
  in bf16), the frozen-prefix cache (bf16), padding-free blocks, head rows only in the last block, no
  length buckets; on CPU also eager attention, bf16 softmax through the fp32 kernel and
  16-bit-uniform dropout (always on in the trainer);
- ``bucketed``: the defaults plus ``bucket_by_length=True`` (the default before padding-free blocks).

``--configs`` runs a subset; with ``--reuse`` the rows of the other configs are kept from ``--out``
(the reference does not change when the defaults do).

Plans: LoRA r=8 on q, v of all layers (first layer 0: no cache); LoRA r=8 on q, v plus an adapter
(size 16) after the MLP in layers 3-5 (the cache serves layers 0-2); a hybrid with a prefix (length 8)
in layers 0-1, LoRA r=4 on v in layers 2-3 and a parallel adapter in layers 4-5.

    .venv/bin/python studies/trial-throughput/accuracy.py     # writes accuracy.json, accuracy.csv
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from autopeft.benchmarking import machine_record, prepare_minilm, study_arguments, write_results

HERE = Path(__file__).parent


def plans():
    from autopeft.peft.plan import Plan, PlanEntry

    top = (3, 4, 5)
    return {
        "lora-qv-all": Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),)),
        "hybrid-top": Plan((PlanEntry("lora", top, ("q", "v"), {"r": 8, "alpha": 16}),
                            PlanEntry("adapter", top, ("down",), {"size": 16}))),
        "hybrid-mixed": Plan((PlanEntry("prefix", (0, 1), ("attn",), {"length": 8}),
                              PlanEntry("lora", (2, 3), ("v",), {"r": 4, "alpha": 16}),
                              PlanEntry("parallel_adapter", (4, 5), ("down",), {"size": 16}))),
    }


CONFIGS = {"reference": {"precision": "fp32", "prefix_cache": "off", "bucket_by_length": False, "unpad": False,
                         "head_rows": False},
           "fast": {}, "bucketed": {"bucket_by_length": True}}


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "accuracy.json")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--plans", default=",".join(plans()), help="which plans (default: all three)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which configs (default: all)")
    parser.add_argument("--reuse", action="store_true", help="keep the other configs' rows from --out")
    args = parser.parse_args()
    from autopeft.training.config import TrainConfig
    from autopeft.training.trial_run import train_plan

    machine = machine_record()
    prepared = prepare_minilm(args)
    configs = {label: CONFIGS[label] for label in args.configs.split(",")}
    rows = []
    if args.reuse and Path(args.out).exists():
        rows = [r for r in json.loads(Path(args.out).read_text())["runs"] if r["config"] not in configs]
    chosen = {name: plan for name, plan in plans().items() if name in args.plans.split(",")}
    for name, plan in chosen.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            for label, overrides in configs.items():  # alternate, so that machine load hits both alike
                config = TrainConfig(steps=args.steps, batch_size=16, lr=2e-3, seed=seed, **overrides)
                t = time.perf_counter()
                outcome = train_plan(prepared.session, plan, config)
                rows.append({"plan": name, "seed": seed, "config": label, "accuracy": outcome.validation.value,
                             "train_loss": outcome.train_loss, "median_step_s": outcome.step_time_s,
                             "trial_s": time.perf_counter() - t})
                print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (list(plans()).index(r["plan"]), r["seed"], list(CONFIGS).index(r["config"])))
    summary: dict[str, dict] = {}
    for name in chosen:
        accuracy = {label: {r["seed"]: r["accuracy"] for r in rows if r["plan"] == name and r["config"] == label}
                    for label in CONFIGS}
        ref = accuracy["reference"]
        summary[name] = {"reference_mean": statistics.mean(ref.values()),
                         "reference_seed_stdev": statistics.stdev(ref.values()) if len(ref) > 1 else None}
        for label in ("fast", "bucketed"):
            if accuracy[label] and set(accuracy[label]) == set(ref):
                diffs = [accuracy[label][seed] - ref[seed] for seed in ref]
                summary[name][f"{label}_mean"] = statistics.mean(accuracy[label].values())
                summary[name][f"{label}_mean_difference"] = statistics.mean(diffs)
    write_results(args.out, {"machine": machine, "settings": vars(args), "summary": summary, "runs": rows}, rows)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
