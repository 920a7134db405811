"""Does ``torch.compile`` pay for a trial? Compile time and step time of one plan, compiled vs eager.

MiniLM, LoRA r=8 on q,v (all layers), batch 16 padded to 64 tokens; the same autopeft training step
(bf16 autocast, bf16 frozen weights) with the model compiled in place (``model.compile()``) or not.
Steps alternate between the two models; a trial compiles once per plan (a new plan changes the module
structure, so the graph is recompiled), hence break-even steps = compile seconds / seconds saved per step.

    .venv/bin/python studies/step-speed/compile_check.py   # writes compile.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    from autopeft.peft.inject import inject
    from autopeft.peft.plan import Plan, PlanEntry
    from autopeft.peft.precision import FrozenWeights
    from autopeft.training.fastpath.step_kernels import cpu_step_kernels, training_attention
    from autopeft.training.models import load_model

    loaded = load_model("minilm", "classification", num_labels=2)
    plan = Plan((PlanEntry("lora", tuple(range(6)), ("q", "v"), {"r": 8, "alpha": 16}),))
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (16, 64), generator=g), "attention_mask": torch.ones(16, 64, dtype=torch.long)}
    labels = torch.randint(0, 2, (16,), generator=g)

    def make(compiled: bool):
        model = copy.deepcopy(loaded.model)
        handle = inject(model, plan, loaded.arch)
        params = [p for _, p in handle.trainable_parameters()]
        optimizer = torch.optim.AdamW(params, lr=1e-3, foreach=True)
        frozen = FrozenWeights(model, loaded.arch)
        model.train()
        if compiled:
            model.compile()

        def step():
            with frozen.cast(True), torch.autocast("cpu", dtype=torch.bfloat16), \
                    training_attention(model, True), cpu_step_kernels(True):
                logits = model(**batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    steps = {"eager": make(False), "compiled": make(True)}
    first = {}
    for name, step in steps.items():
        t = time.perf_counter()
        step()
        first[name] = time.perf_counter() - t
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    eager, compiled = (statistics.median(times[n]) for n in ("eager", "compiled"))
    saved = eager - compiled
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "first_step_s": first, "median_step_s": {"eager": eager, "compiled": compiled},
              "compile_s": first["compiled"] - first["eager"],
              "break_even_steps": (first["compiled"] - first["eager"]) / saved if saved > 0 else None}
    (HERE / "compile.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
