"""``autopeft estimate``: the peak training memory of a plan (or of a space's largest plan), from the config."""

from __future__ import annotations

import argparse
import json

from autopeft.core.choices import DEVICE_TYPES, OPTIMIZERS, PRECISIONS, QUANTIZATIONS, TASK_KINDS
from autopeft.core.errors import UserError

CANDIDATES = 8  # budget-repaired versions of the space's largest plan that are estimated


def register(sub) -> None:
    p = sub.add_parser("estimate", help="peak training memory of a plan, before training it")
    p.add_argument("--model", default="minilm", help="built-in alias, local folder or hub id (config only)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--plan", help="plan file (or an adapter directory holding plan.json)")
    source.add_argument("--space", help="search space preset or YAML file: estimate its largest plan under --budget")
    p.add_argument("--budget", help="with --space: trainable-parameter budget (0.5%%, 120k, 1.5M)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64, help="tokens per example (autopeft's --max-length)")
    p.add_argument("--dtype", choices=PRECISIONS, default="bf16",
                   help="bf16 = bf16 autocast with fp32 master weights (autopeft's default); fp32")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--device", choices=DEVICE_TYPES, default="cuda")
    p.add_argument("--task", choices=("auto", *TASK_KINDS), default="auto",
                   help="default: causal-lm for decoders, classification for encoders")
    p.add_argument("--num-labels", type=int, default=2, help="classes of a classification head")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.memory.estimate import MemorySettings, estimate_memory, facts_from_config
    from autopeft.peft.plan import Plan
    from autopeft.training.models import load_config

    if args.space is None and args.budget is not None:
        raise UserError("--budget goes with --space (a plan has its own size)")
    if args.space is not None and args.budget is None:
        raise UserError("--space needs --budget: the estimate is for the space's largest plan under it")
    if args.batch_size < 1 or args.seq_len < 2:
        raise UserError(f"--batch-size must be >= 1 and --seq-len >= 2, got {args.batch_size} and {args.seq_len}")
    plan = Plan.load(args.plan) if args.plan else None  # a bad plan file fails before the model loads
    settings = MemorySettings(batch_size=args.batch_size, seq_len=args.seq_len, dtype=args.dtype,
                              quantize=args.quantize, optimizer=args.optimizer,
                              gradient_checkpointing=args.gradient_checkpointing, device=args.device,
                              task=args.task, num_labels=args.num_labels)
    config = load_config(args.model, trust_remote_code=args.trust_remote_code)
    facts = facts_from_config(config, settings.task, settings.num_labels)
    note = ""
    if plan is None:
        plan, note = largest_plan(args.space, args.budget, facts, settings)
    estimate = estimate_memory(facts, plan, settings)
    if args.json:
        print(json.dumps({"model": args.model, "plan": plan.to_dict(), "plan_summary": plan.describe(facts.arch),
                          "trainable_params": plan.num_params(facts.arch), "note": note, **estimate.to_dict()},
                         indent=2))
    else:
        print_table(args.model, plan, facts, estimate, note)
    return 0


def largest_plan(space_name: str, budget_text: str, facts, settings):
    """The most memory-hungry of several budget-repaired versions of the space's largest plan."""
    import random

    from autopeft.core.units import parse_budget
    from autopeft.memory.estimate import estimate_memory
    from autopeft.space import load_space

    space = load_space(space_name)
    arch = facts.arch
    budget = parse_budget(budget_text, facts.base_params)
    space.ensure_fits(arch, budget, facts.base_params)
    largest = space.largest(arch)
    if largest.num_params(arch) <= budget:
        return largest.plan(), f"the largest plan of space '{space.name}' (it fits the budget)"
    candidates = [space.smallest(arch)]
    for seed in range(CANDIDATES):
        repaired = space.repair(largest, arch, budget, random.Random(seed))
        if repaired is not None:
            candidates.append(repaired)
    plans = [c.plan() for c in candidates]
    best = max(plans, key=lambda p: estimate_memory(facts, p, settings).total_bytes)
    return best, (f"the most memory-hungry of {len(plans)} plans of space '{space.name}' under the budget "
                  f"({CANDIDATES} budget-repaired versions of its largest plan, and its smallest)")


def print_table(model: str, plan, facts, estimate, note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from autopeft.core.units import format_bytes

    s = estimate.settings
    title = (f"{model}: {plan.describe(facts.arch)} — batch {s.batch_size} x {s.seq_len} tokens, {s.dtype}, "
             f"quantize {s.quantize}, {s.optimizer}{', checkpointing' if s.gradient_checkpointing else ''}, {s.device}")
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("bytes", justify="right")
    table.add_column("", justify="right")
    table.add_column("detail")
    for line in estimate.lines:
        if line.bytes or line.name == "framework overhead":
            table.add_row(line.name, format_bytes(line.bytes, digits=2), f"{100 * line.bytes / estimate.total_bytes:.1f}%",
                          line.detail)
    table.add_section()
    table.add_row("peak (allocated)", format_bytes(estimate.allocated_bytes, digits=2), "", f"peak in the {estimate.phase}")
    table.add_row("[bold]total[/bold]", f"[bold]{format_bytes(estimate.total_bytes, digits=2)}[/bold]", "",
                  "allocated + framework overhead")
    console = Console()
    if note:
        console.print(note)
    console.print(table)
