"""Train a plan found by autopeft with the Hugging Face ``Trainer``.

autopeft's ``apply`` returns the model as a normal ``nn.Module`` with the base frozen and the plan's
modules (plus the task head) trainable, so HF ``Trainer`` trains it like any other model; afterwards
``autopeft.save_adapter`` writes an adapter directory that ``autopeft eval`` and
``autopeft.load_adapter`` read.

    python examples/trainer_example.py --plan runs/rt/best/plan.json --steps 300 --out runs/trainer-rt

``--plan`` takes a plan.json, an adapter directory, or a study directory (``runs/rt`` = its best plan,
``runs/rt:7`` = trial 7). ``--model``/``--dataset`` default to what that study used (else minilm and
rotten_tomatoes, autopeft's built-in offline assets); any transformers classification model and any
dataset autopeft reads work (hub ids, csv/json/parquet files).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import autopeft
from autopeft.study.plan_source import resolve_plan_source
from autopeft.training.data import load_task_data
from autopeft.training.models import resolve_model
from autopeft.training.options import DataOptions


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True, help="plan.json, adapter dir, or study dir (STUDY or STUDY:N)")
    p.add_argument("--model", help="default: the study's model, else minilm")
    p.add_argument("--dataset", help="default: the study's dataset, else rotten_tomatoes")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="default: the learning rate the plan was found with, else 1e-3")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--out", default="runs/trainer-example")
    args = p.parse_args(argv)

    source = resolve_plan_source(args.plan)
    recorded_data, recorded_train = source.data or {}, source.train or {}
    model_spec = args.model or recorded_data.get("model") or "minilm"
    dataset = args.dataset or recorded_data.get("dataset") or "rotten_tomatoes"
    lr = args.lr or recorded_train.get("lr") or 1e-3

    # 1. data: autopeft's loader gives seeded train/validation/test splits with columns "text", "label"
    data = load_task_data(dataset)
    folder = resolve_model(model_spec)  # a built-in alias becomes its local folder; hub ids pass through
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

    splits = {name: split.map(tokenize, batched=True, remove_columns=["text"])
              for name, split in data.splits.items() if name in ("train", "validation")}

    # 2. model + plan: a plain transformers model; autopeft.apply freezes it and adds the plan's modules
    labels = dict(enumerate(data.label_names))
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(labels), id2label=labels,
                                                               label2id={v: k for k, v in labels.items()})
    model.config.pad_token_id = tokenizer.pad_token_id
    handle = autopeft.apply(model, source.plan)
    print(f"plan from {source.where}: {source.plan.describe()}; {handle.num_adapter_params()} adapter params "
          f"+ {handle.num_head_params()} head params trainable")

    # 3. HF Trainer, unchanged: it optimises exactly the parameters that require gradients
    def accuracy(prediction) -> dict:
        logits, labels = prediction
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    training = TrainingArguments(output_dir=str(Path(args.out) / "trainer"), max_steps=args.steps,
                                 per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
                                 learning_rate=lr, lr_scheduler_type="linear", warmup_steps=max(1, int(0.06 * args.steps)),
                                 logging_steps=max(1, args.steps // 10), save_strategy="no", report_to=[],
                                 seed=0, use_cpu=True)
    trainer = Trainer(model=model, args=training, train_dataset=splits["train"], eval_dataset=splits["validation"],
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()

    # 4. an autopeft adapter directory: plan + weights + the base-model record
    #    (with the data record and fp32 evaluation, `autopeft eval OUT/adapter` re-evaluates it)
    out = autopeft.save_adapter(model, Path(args.out) / "adapter", base_model=model_spec,
                                metrics={"validation": {"accuracy": metrics["eval_accuracy"]}},
                                data=DataOptions(model=model_spec, dataset=dataset, max_length=args.max_length).to_record(),
                                train={"steps": args.steps, "batch_size": args.batch_size, "lr": lr,
                                       "precision": "fp32"})
    result = {"validation_accuracy": metrics["eval_accuracy"], "adapter": str(out),
              "adapter_params": handle.num_adapter_params()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
