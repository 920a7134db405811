"""Training step time: autopeft's trainer vs HF peft + a plain fp32 torch loop, measured side by side.

Both sides train the same plan on MiniLM-L6 (all-MiniLM-L6-v2) with Rotten Tomatoes batches of 16:

- ``lora``: LoRA r=8, alpha 16 on q and v of all 6 layers (peft: ``target_modules=["query", "value"]``);
- ``hybrid-top``: LoRA r=8 on q, v and a bottleneck adapter (size 16) after the MLP, layers 3-5 only.
  peft has no bottleneck adapter: its side is the closest peft config, LoRA r=8 on query, value and the
  MLP's ``output.dense`` in layers 3-5 (``layers_to_transform``) — same layers, similar parameter count.

Three input settings:

- ``fixed64`` gives both sides the *same* batches of consecutive reviews, padded to 64 tokens (the step
  on identical inputs; ~57% of the positions are padding, which autopeft's padding-free blocks skip);
- ``full64`` gives both sides the same batches with **no padding**: each row is consecutive reviews'
  tokens concatenated up to 64 (equal work on both sides: what is left is precision and kernels);
- ``data`` lets each side batch as it would: autopeft with its own sampler (dynamic padding, length
  buckets), peft with ``padding="max_length"`` (64) as tutorials do.

autopeft's steps go through ``TrialRun.advance`` (bf16 autocast with bf16 frozen weights, prefix cache,
eager attention on CPU, foreach AdamW, grad clipping); peft's are ``loss.backward(); opt.step();
opt.zero_grad()`` in fp32, the model in train mode, torch's default AdamW. Steps alternate between the two
sides (A, B, A, B, ...) so that load from other processes hits both alike; the ratio is the median of the
per-pair ratios, and the medians of each side are over ``--steps`` steps after ``--warmup`` steps.

    .venv/bin/python studies/step-speed/bench.py                 # writes results.json, results.csv
    .venv/bin/python studies/step-speed/bench.py --profile       # also profile_<side>.txt (torch.profiler)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from autopeft.benchmarking import machine_record, matmul_peak, prepare_minilm, study_arguments, write_results

HERE = Path(__file__).parent
BATCH, LENGTH = 16, 64


def plans():
    from autopeft.peft.plan import Plan, PlanEntry

    top = (3, 4, 5)
    return {
        "lora": (Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),)),
                 {"target_modules": ["query", "value"]}),
        "hybrid-top": (Plan((PlanEntry("lora", top, ("q", "v"), {"r": 8, "alpha": 16}),
                             PlanEntry("adapter", top, ("down",), {"size": 16}))),
                       {"target_modules": r".*\.layer\.(3|4|5)\.(attention\.self\.(query|value)|output\.dense)"}),
    }


def fixed_batches(session, n: int) -> list[dict[str, torch.Tensor]]:
    """n batches of consecutive train examples, padded to LENGTH tokens (the same for both sides)."""
    data = session.splits["train"]
    out = []
    for b in range(n):
        index = list(range(b * BATCH, (b + 1) * BATCH))
        ids = torch.full((BATCH, LENGTH), session.pad_token_id, dtype=torch.long)
        mask = torch.zeros((BATCH, LENGTH), dtype=torch.long)
        for r, i in enumerate(index):
            row = data.input_ids[i][:LENGTH]
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([data.labels[i] for i in index]),
                    "index": torch.tensor(index)})
    return out


def full_session(session, n: int):
    """A session on the same model whose train split holds n·BATCH rows of LENGTH real tokens each:
    consecutive train examples' tokens, concatenated and cut (labels: the first example's). Its own
    split, so that the frozen-prefix cache (keyed by split and example) serves these very rows."""
    from autopeft.training.data import TokenizedSplit
    from autopeft.training.session import Session

    data = session.splits["train"]
    stream = (token for row in data.input_ids for token in row)
    rows = [[next(stream) for _ in range(LENGTH)] for _ in range(n * BATCH)]
    split = TokenizedSplit(rows, data.labels[:len(rows)], 0)
    return Session(session.model, session.arch, session.task, {"train": split, "validation": split},
                   pad_token_id=session.pad_token_id)


def split_batches(session, n: int) -> list[dict[str, torch.Tensor]]:
    return [session._collate(session.splits["train"], list(range(b * BATCH, (b + 1) * BATCH))) for b in range(n)]


class AutopeftSide:
    def __init__(self, session, plan, batches):
        from autopeft.training.config import TrainConfig
        from autopeft.training.trial_run import start_run

        self.session = session
        if batches is not None:  # the same padded batches as peft: replace only the data order
            session.train_batches = lambda config, skip=0: iter(batches[skip:])
        self.run = start_run(session, plan, TrainConfig(steps=10_000, batch_size=BATCH, seed=0))
        # steady state: the prefix cache is warm (it is computed once per session and first layer k)
        t = time.perf_counter()
        if self.run.prefix.active:
            with session.autocast(True), session.frozen.cast(True):
                self.run.prefix.warm()
        self.warmup_s = time.perf_counter() - t

    def step(self) -> None:
        self.run.advance(self.run.step + 1)

    def close(self) -> None:
        self.run.close()
        self.session.__dict__.pop("train_batches", None)


class PeftSide:
    def __init__(self, prepared, peft_kwargs, batches):
        from peft import LoraConfig, get_peft_model

        from autopeft.training.models import load_model

        model = load_model("minilm", "classification", num_labels=2).model
        config = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, **peft_kwargs)
        self.model = get_peft_model(model, config)
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)
        if batches is None:  # tutorial collation: every example padded to max_length
            tokenizer = prepared.loaded.tokenizer
            texts = list(prepared.data.splits["train"]["text"])
            labels = list(prepared.data.splits["train"]["label"])
            batches = []
            for b in range(len(texts) // BATCH):
                enc = tokenizer(texts[b * BATCH:(b + 1) * BATCH], padding="max_length", truncation=True,
                                max_length=LENGTH, return_tensors="pt")
                batches.append({**enc, "labels": torch.tensor(labels[b * BATCH:(b + 1) * BATCH])})
        self.batches = batches
        self.i = 0

    def step(self) -> None:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def close(self) -> None:
        pass


def interleave(sides: dict, warmup: int, steps: int) -> dict[str, dict[str, list[float]]]:
    times = {name: {"wall": [], "cpu": []} for name in sides}
    for i in range(warmup + steps):
        for name, side in sides.items():
            w, c = time.perf_counter(), time.process_time()
            side.step()
            if i >= warmup:
                times[name]["wall"].append(time.perf_counter() - w)
                times[name]["cpu"].append(time.process_time() - c)
    return times


def profile(side, path: Path, steps: int = 5) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            side.step()
    path.write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30) + "\n")


def step_flops(arch, plan, rows: float, batch: int, width: float) -> float:
    """FLOPs of one training step with frozen projections, as autopeft runs it: per-token work 2·n·P per
    linear on the n rows the blocks run on (padding-free blocks: the real tokens rounded up to the pack
    multiple with filler padding rows, or all B·T positions for a batch left padded; see batch_shape),
    attention 4·B·T²·H per layer on the padded layout; forward from the plan's
    first layer k up (the frozen prefix comes from the warm cache), backward only input gradients (the
    same again, attention twice); in the last block, with head rows only (autopeft/training/fastpath/head_rows.py), the
    projections after attention (o, up, down) on one row per example. Adapter and LoRA FLOPs are < 1%
    and ignored."""
    from autopeft.training.fastpath.activation_cache import first_trained_layer
    from autopeft.training.fastpath.head_rows import head_rows_supported

    weights = {v.path: v.in_features * v.out_features for v in arch.sites.values()}
    after = sum(weights[arch.sites[name].path] for name in ("o", "up", "down"))
    before = sum(weights.values()) - after
    attention = 4 * batch * width * width * arch.hidden
    layers = arch.num_layers - first_trained_layer(plan, arch)
    last_rows = batch if head_rows_supported(arch, "classification") else rows
    forward = (layers * (2 * rows * before + attention) + (layers - 1) * 2 * rows * after
               + 2 * last_rows * after)
    return 2 * forward + layers * attention  # backward: input gradients (the same again), attention twice


def batch_shape(batches) -> tuple[float, float, float]:
    """Mean real tokens, mean rows the blocks run on (autopeft/peft/unpad.py's packing on the batch's device)
    and mean width (padded length) of a batch."""
    from autopeft.peft.unpad import MIN_PADDING, Packing
    from autopeft.training.config import TrainConfig
    from autopeft.training.step import step_recipe

    batches = list(batches)
    masks = [b["attention_mask"] for b in batches]
    packings = [Packing.of(m, MIN_PADDING, step_recipe(TrainConfig(), m.device.type).pack_multiple) for m in masks]
    return (statistics.mean(float(m.sum()) for m in masks),
            statistics.mean(float(m.numel() if p is None else p.tokens) for m, p in zip(masks, packings, strict=True)),
            statistics.mean(float(m.shape[1]) for m in masks))


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "results.json")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--plans", default="lora,hybrid-top")
    parser.add_argument("--inputs", default="fixed64,full64,data")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    prepared = prepare_minilm(args, LENGTH)
    session = prepared.session
    record = {"machine": machine_record(), "settings": vars(args), "results": []}
    for plan_name in args.plans.split(","):
        plan, peft_kwargs = plans()[plan_name]
        for inputs in args.inputs.split(","):
            n = args.warmup + args.steps + 10
            used = full_session(session, n) if inputs == "full64" else session
            batches = {"fixed64": fixed_batches, "full64": split_batches}[inputs](used, n) if inputs != "data" else None
            sides = {"autopeft": AutopeftSide(used, plan, batches), "peft": PeftSide(prepared, peft_kwargs, batches)}
            try:
                times = interleave(sides, args.warmup, args.steps)
                if args.profile:
                    for name, side in sides.items():
                        profile(side, HERE / f"profile_{plan_name}_{inputs}_{name}.txt")
            finally:
                for side in sides.values():
                    side.close()
            row = {"plan": plan_name, "inputs": inputs, "prefix_layer": sides["autopeft"].run.prefix.k,
                   "cache_warmup_s": sides["autopeft"].warmup_s,
                   "real_token_share": (sum(int(b["attention_mask"].sum()) for b in batches)
                                        / sum(b["attention_mask"].numel() for b in batches)) if batches else None}
            for name in sides:
                row[f"{name}_ms"] = 1e3 * statistics.median(times[name]["wall"])
                row[f"{name}_cpu_ms"] = 1e3 * statistics.median(times[name]["cpu"])
            pairs = [a / b for a, b in zip(times["autopeft"]["wall"], times["peft"]["wall"], strict=True)]
            row["ratio"] = statistics.median(pairs)
            row["ratio_of_medians"] = row["autopeft_ms"] / row["peft_ms"]
            row["ratio_cpu"] = row["autopeft_cpu_ms"] / row["peft_cpu_ms"]
            if batches is None:  # autopeft's own batches of this run (seed 0)
                from itertools import islice

                from autopeft.training.config import TrainConfig
                own = session.train_batches(TrainConfig(steps=10_000, batch_size=BATCH, seed=0))
                real, rows, width = batch_shape(islice(own, n))
            else:
                real, rows, width = batch_shape(batches)
            row["autopeft_real_tokens"], row["autopeft_rows"], row["autopeft_width"] = real, rows, width
            row["autopeft_gflop_per_step"] = step_flops(prepared.loaded.arch, plan, rows, BATCH, width) / 1e9
            record["results"].append(row)
            print(json.dumps(row), flush=True)
    peak = matmul_peak(torch.bfloat16)
    record["roofline"] = {"bf16_matmul_1024_gflops": peak, "fp32_matmul_1024_gflops": matmul_peak(torch.float32)}
    for row in record["results"]:
        achieved = row["autopeft_gflop_per_step"] / (row["autopeft_ms"] / 1e3)
        row["autopeft_gflops_achieved"] = achieved
        row["fraction_of_bf16_peak"] = achieved / peak
        row["floor_ms_at_peak"] = 1e3 * row["autopeft_gflop_per_step"] / peak
    write_results(args.out, record, record["results"])


if __name__ == "__main__":
    main()
