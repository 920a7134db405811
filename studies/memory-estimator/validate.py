"""Estimated vs measured peak memory of one training step, across models, methods and shapes.

For every (model, method, batch size, sequence length) of the grid, train one real steady-state step with
autopeft's own trainer (``autopeft.memory.measure.measure_training_step``: ``Session.start`` +
``TrialRun.advance``) and compare its measured peak of allocated tensor memory (CPU: torch profiler
memory events; CUDA: ``torch.cuda.max_memory_allocated``) with ``autopeft.memory.estimate.estimate_memory``.

    python studies/memory-estimator/validate.py                 # the CPU grid (results/ here)
    python studies/memory-estimator/validate.py --device cuda   # the same grid against CUDA's allocator
    python studies/memory-estimator/validate.py --quick         # tiny models, a smoke run

Writes ``results[-<device>].csv`` (one row per grid point) and ``summary[-<device>].json`` (median and max
relative error, skipped rows with reasons, estimate timings, machine).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from autopeft.memory.estimate import MemorySettings, estimate_memory
from autopeft.memory.measure import measure_training_step
from autopeft.methods import REGISTRY
from autopeft.peft.plan import Plan

HERE = Path(__file__).resolve().parent
METHODS = ("lora", "adapter", "prefix", "prompt", "hybrid", "qlora")


def plan_for(method: str, layers: int) -> dict:
    every = list(range(layers))
    third = max(1, layers // 3)
    if method in ("lora", "qlora"):
        sites = ["q", "v"] if method == "lora" else ["q", "k", "v", "o", "up", "down"]
        return {"entries": [{"method": "lora", "layers": every, "sites": sites, "options": {"r": 8}}]}
    if method == "adapter":
        return {"entries": [{"method": "adapter", "layers": every, "sites": ["o", "down"], "options": {"size": 16}}]}
    if method == "prefix":
        return {"entries": [{"method": "prefix", "layers": every, "sites": ["attn"], "options": {"length": 16}}]}
    if method == "prompt":
        return {"entries": [{"method": "prompt", "layers": [], "sites": ["input"], "options": {"length": 16}}]}
    # hybrid: nothing in the lower third (a frozen prefix of layers), LoRA, adapters and prefixes above
    return {"entries": [
        {"method": "lora", "layers": list(range(third, 2 * third)), "sites": ["q", "v"], "options": {"r": 8}},
        {"method": "adapter", "layers": list(range(2 * third, layers)), "sites": ["down"], "options": {"size": 16}},
        {"method": "prefix", "layers": list(range(2 * third, layers)), "sites": ["attn"], "options": {"length": 8}},
    ]}


def skip_reason(method: str) -> str | None:
    if method == "prompt" and "prompt" not in REGISTRY:
        return "method 'prompt' is not registered in autopeft.methods yet"
    if method == "qlora" and not _quantize_available():
        return "the model loader does not support quantize='nf4' yet"
    return None


def _quantize_available() -> bool:
    from autopeft.training.models import load_model

    if "quantize" not in inspect.signature(load_model).parameters:
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def config_for(name: str):
    """The transformers config of a grid model (no weights)."""
    from transformers import GPT2Config

    from autopeft.testing import tiny_config
    from autopeft.training.models import load_config

    if name.startswith("tiny-"):
        return tiny_config(name[5:])
    if name == "gpt2-6x384":
        return GPT2Config(n_layer=6, n_embd=384, n_head=6, n_positions=1024, pad_token_id=0)
    return load_config(name)


def rescore(path: Path, device: str) -> list[dict]:
    """Recompute the estimates of an existing results CSV (measurements kept): for estimator changes."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        settings = MemorySettings(batch_size=int(row["batch"]), seq_len=int(row["seq_len"]), dtype="bf16",
                                  quantize=row["quantize"], device=device,  # type: ignore[arg-type]
                                  task="classification" if row["family"] in ("bert", "distilbert") else "causal-lm",
                                  num_labels=2)
        start = time.perf_counter()
        estimate = estimate_memory(config_for(row["model"]), Plan.from_json(row["plan"]), settings)
        row["estimate_seconds"] = round(time.perf_counter() - start, 4)
        row["estimate_bytes"] = estimate.allocated_bytes
        row["phase"] = estimate.phase
        row["rel_error"] = round((estimate.allocated_bytes - int(row["measured_bytes"])) / int(row["measured_bytes"]), 5)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def build(name: str, quantize: str, device: str):
    """(model, task) for a grid model; weights as autopeft loads them (fp32, optionally quantized)."""
    from transformers import AutoModelForCausalLM

    from autopeft.testing import tiny_model

    if name.startswith("tiny-"):
        family = name[5:]
        task = "classification" if family in ("bert", "distilbert") else "causal-lm"
        model = tiny_model(family, task)
        if quantize != "none":
            from autopeft.core.arch import arch_from_config
            from autopeft.peft.quantize import quantize_model

            quantize_model(model, arch_from_config(model.config), quantize)
    elif name == "gpt2-6x384":
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config_for(name)).eval()
        task = "causal-lm"
        if quantize != "none":
            from autopeft.core.arch import arch_from_config
            from autopeft.peft.quantize import quantize_model

            quantize_model(model, arch_from_config(model.config), quantize)
    else:
        from autopeft.training.models import load_model

        task = "classification" if name == "minilm" else "causal-lm"
        kwargs = {"quantize": quantize} if quantize != "none" else {}
        model = load_model(name, task, **kwargs).model
    return model.to(device), task


def _errors(rows: list[dict]) -> dict:
    errors = [abs(float(r["rel_error"])) for r in rows]
    return {"rows": len(rows),
            "median_abs_rel_error": round(statistics.median(errors), 5) if errors else None,
            "max_abs_rel_error": round(max(errors), 5) if errors else None,
            "worst": max(rows, key=lambda r: abs(float(r["rel_error"])), default=None)}


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny random models (smoke run)")
    parser.add_argument("--models", help="comma-separated subset of the grid's models")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-sizes", default="2,8")
    parser.add_argument("--seq-lens", default="64,192")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the estimates of the existing results CSV (keeps the measurements)")
    args = parser.parse_args(argv)
    models = ["tiny-bert", "tiny-gpt2", "tiny-llama"] if args.quick else ["minilm", "smollm2-135m", "gpt2-6x384"]
    if args.models:
        models = args.models.split(",")
    batches = [int(x) for x in args.batch_sizes.split(",")]
    lengths = [int(x) for x in args.seq_lens.split(",")] if not args.quick else [9, 17]
    suffix = ("-quick" if args.quick else "") + ("-cuda" if args.device == "cuda" else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        rows = rescore(out / f"results{suffix}.csv", args.device)
        summary = json.loads((out / f"summary{suffix}.json").read_text())
        summary.update(_errors(rows), rescored=datetime.datetime.now().isoformat(timespec="seconds"))
        (out / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(_errors(rows)))
        return 0
    table = open(out / f"results{suffix}.csv", "w", newline="")  # noqa: SIM115 (row by row: shows progress)
    writer: csv.DictWriter | None = None
    rows, skipped, timings = [], [], {}
    for name in models:
        for quantize in ("none", "nf4"):
            methods = [m for m in args.methods.split(",") if (m == "qlora") == (quantize == "nf4")]
            reasons = {m: skip_reason(m) for m in methods}
            for m, reason in reasons.items():
                if reason:
                    print(f"skip {name} {m}: {reason}", flush=True)
                    skipped.append({"model": name, "method": m, "reason": reason})
            methods = [m for m in methods if not reasons[m]]
            if not methods:
                continue
            model, task = build(name, quantize, args.device)
            layers = model.config.num_hidden_layers
            for method in methods:
                plan = Plan.from_dict(plan_for(method, layers))
                for batch in batches:
                    for length in lengths:
                        settings = MemorySettings(batch_size=batch, seq_len=length, dtype="bf16", quantize=quantize,  # type: ignore[arg-type]
                                                  device=args.device, task=task, num_labels=2)  # type: ignore[arg-type]
                        start = time.perf_counter()
                        estimate = estimate_memory(model.config, plan, settings)
                        seconds = time.perf_counter() - start
                        timings.setdefault(name, []).append(seconds)
                        try:
                            measured = measure_training_step(model, plan, task, batch, length, "bf16")
                        except Exception as exc:  # a method mid-change elsewhere must not sink the grid
                            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                            traceback.print_exc(file=sys.stderr)
                            print(f"skip {name} {method} B{batch} T{length}: {reason}", flush=True)
                            skipped.append({"model": name, "method": method, "batch": batch, "seq_len": length,
                                            "reason": reason})
                            continue
                        error = (estimate.allocated_bytes - measured) / measured
                        row = {"model": name, "family": model.config.model_type, "method": method,
                               "quantize": quantize, "batch": batch, "seq_len": length,
                               "estimate_bytes": estimate.allocated_bytes, "measured_bytes": measured,
                               "rel_error": round(error, 5), "phase": estimate.phase,
                               "estimate_seconds": round(seconds, 4), "plan": plan.to_json()}
                        rows.append(row)
                        if writer is None:
                            writer = csv.DictWriter(table, fieldnames=list(row))
                            writer.writeheader()
                        writer.writerow(row)
                        table.flush()
                        print(f"{name:14s} {method:8s} B{batch:<3d} T{length:<4d} est {estimate.allocated_bytes / 2**20:9.1f} MiB"
                              f"  measured {measured / 2**20:9.1f} MiB  error {100 * error:+6.2f}%", flush=True)
            del model
    table.close()
    summary = {
        "device": args.device, **_errors(rows),
        "estimate_seconds_max": {k: round(max(v), 4) for k, v in timings.items()},
        "estimate_seconds_median": {k: round(statistics.median(v), 4) for k, v in timings.items()},
        "skipped": skipped, "machine": machine(),
        "command": "python studies/memory-estimator/validate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("rows", "median_abs_rel_error", "max_abs_rel_error")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
