"""Trials per hour at equal fidelity: autopeft vs a naive Optuna + HF peft + HF Trainer loop.

Ten plans are sampled (seed 0) from the ``hybrid`` space's LoRA decision restricted to what peft can
express exactly: per layer and per site (q, v of MiniLM's 6 layers) either nothing or LoRA with rank
2, 4 or 8 (alpha 16), plus the space's learning rate (log-uniform in [1e-3, 5e-3]). Adapters,
parallel adapters, prefixes and DoRA-next-to-LoRA (the rest of ``hybrid``) have no exact peft
equivalent, so they are left out rather than approximated: both sides train the *same* architecture.
peft expresses a plan as ``target_modules`` (a regex of exactly the plan's modules) and ``rank_pattern``.

Both sides: MiniLM-L6, Rotten Tomatoes (autopeft's seeded 80/10/10 split), ``--steps`` optimizer steps
(default 200) of batch 16, max length 64, AdamW, linear warm-up (6%) and decay, grad-norm clip 1.0,
seed = plan number; then accuracy on the validation split (1,275 reviews).

- **naive** (what the Optuna/peft/Trainer tutorials do): ``study.optimize(objective)``; each trial
  reloads the model with ``from_pretrained``, wraps it with ``get_peft_model`` and trains it with
  ``Trainer`` in fp32, examples padded to ``max_length``; the dataset is tokenised once, outside the
  objective (as the tutorials do).
- **autopeft**: one ``prepare`` (model load + tokenisation, counted in its total), then
  ``train_plan(session, plan, TrainConfig(...))`` per trial with the defaults (bf16, prefix cache, length
  buckets).

Trials alternate (naive 0, autopeft 0, naive 1, ...) so that load from other processes falls on both.
trials/hour = trials / total wall time (setup included).

    .venv/bin/python studies/trial-throughput/bench.py            # ~1-2 h on 2 idle cores; results.json/.csv
    .venv/bin/python studies/trial-throughput/bench.py --steps 5 --plans 2 --out /tmp/smoke.json   # smoke
"""

from __future__ import annotations

import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from autopeft.benchmarking import machine_record, prepare_minilm, study_arguments, write_results

HERE = Path(__file__).parent
SITES = {"q": "query", "v": "value"}


def sample_plans(n: int, layers: int = 6, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    plans = []
    while len(plans) < n:
        ranks = {(layer, site): rng.choice([None, 2, 4, 8]) for layer in range(layers) for site in SITES}
        ranks = {k: r for k, r in ranks.items() if r is not None}
        if ranks:
            lr = math.exp(rng.uniform(math.log(1e-3), math.log(5e-3)))
            plans.append({"ranks": ranks, "lr": lr, "seed": len(plans)})
    return plans


def autopeft_plan(ranks: dict):
    from autopeft.peft.plan import Plan, PlanEntry

    return Plan(tuple(PlanEntry("lora", (layer,), (site,), {"r": r, "alpha": 16})
                      for (layer, site), r in sorted(ranks.items())))


def peft_config(ranks: dict):
    from peft import LoraConfig

    names = {(layer, site): f"encoder.layer.{layer}.attention.self.{SITES[site]}" for layer, site in ranks}
    target = "^.*(" + "|".join(n.replace(".", r"\.") for n in names.values()) + ")$"
    return LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=target,
                      rank_pattern={names[k]: r for k, r in ranks.items()})


class Naive:
    """Optuna + peft + HF Trainer, reloading the model in every trial."""

    def __init__(self, source: str, data, steps: int) -> None:
        from transformers import AutoTokenizer

        t = time.perf_counter()
        self.source, self.steps = source, steps
        tokenizer = AutoTokenizer.from_pretrained(source)

        def encode(batch):
            return tokenizer(batch["text"], truncation=True, padding="max_length", max_length=64)

        self.train = data.splits["train"].map(encode, batched=True).rename_column("label", "labels")
        self.validation = data.splits["validation"].map(encode, batched=True).rename_column("label", "labels")
        self.setup_s = time.perf_counter() - t

    def trial(self, plan: dict) -> float:
        import numpy as np
        import optuna
        from peft import get_peft_model
        from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

        def objective(trial: optuna.Trial) -> float:
            lr = trial.suggest_float("lr", 1e-3, 5e-3, log=True)
            model = AutoModelForSequenceClassification.from_pretrained(self.source, num_labels=2)
            model = get_peft_model(model, peft_config(plan["ranks"]))
            with tempfile.TemporaryDirectory() as out:
                args = TrainingArguments(
                    output_dir=out, max_steps=self.steps, per_device_train_batch_size=16, learning_rate=lr,
                    lr_scheduler_type="linear", warmup_steps=0.06, weight_decay=0.0, max_grad_norm=1.0,
                    seed=plan["seed"], per_device_eval_batch_size=64, report_to=[], save_strategy="no",
                    logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)

                def accuracy(prediction):
                    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

                trainer = Trainer(model=model, args=args, train_dataset=self.train, eval_dataset=self.validation,
                                  compute_metrics=accuracy)
                trainer.train()
                return trainer.evaluate()["eval_accuracy"]

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize")
        study.enqueue_trial({"lr": plan["lr"]})
        study.optimize(objective, n_trials=1)
        return study.best_value


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "results.json")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--plans", type=int, default=10)
    args = parser.parse_args()
    from autopeft.training.config import TrainConfig
    from autopeft.training.trial_run import train_plan

    record = {"machine": machine_record(), "settings": vars(args), "trials": []}
    t = time.perf_counter()
    prepared = prepare_minilm(args)
    autopeft_setup = time.perf_counter() - t
    naive = Naive(prepared.loaded.source, prepared.data, args.steps)
    totals = {"naive": naive.setup_s, "autopeft": autopeft_setup}
    for plan in sample_plans(args.plans):
        row = {"plan": autopeft_plan(plan["ranks"]).describe(prepared.loaded.arch), "lr": plan["lr"],
               "seed": plan["seed"], "params": autopeft_plan(plan["ranks"]).num_params(prepared.loaded.arch)}
        t = time.perf_counter()
        row["naive_accuracy"] = naive.trial(plan)
        row["naive_s"] = time.perf_counter() - t
        t = time.perf_counter()
        config = TrainConfig(steps=args.steps, batch_size=16, lr=plan["lr"], seed=plan["seed"])
        outcome = train_plan(prepared.session, autopeft_plan(plan["ranks"]), config)
        row["autopeft_accuracy"] = outcome.validation.value
        row["autopeft_s"] = time.perf_counter() - t
        for side in ("naive", "autopeft"):
            totals[side] += row[f"{side}_s"]
        record["trials"].append(row)
        print(json.dumps(row), flush=True)
    n = len(record["trials"])
    accuracies = {side: [r[f"{side}_accuracy"] for r in record["trials"]] for side in ("naive", "autopeft")}
    record["summary"] = {
        "setup_s": {"naive": naive.setup_s, "autopeft": autopeft_setup},
        "total_s": totals,
        "trials_per_hour": {side: 3600 * n / totals[side] for side in totals},
        "throughput_ratio": totals["naive"] / totals["autopeft"],
        "mean_accuracy": {side: statistics.mean(v) for side, v in accuracies.items()},
        "mean_accuracy_difference": statistics.mean(a - b for a, b in zip(accuracies["autopeft"], accuracies["naive"], strict=True)),
        "stdev_accuracy_difference": statistics.stdev(a - b for a, b in zip(accuracies["autopeft"], accuracies["naive"], strict=True)) if n > 1 else None,
    }
    write_results(args.out, record, record["trials"])
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
