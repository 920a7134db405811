"""Can the trained supernet tell good sub-networks from bad ones? (issue #19, tuning datasets only)

The one-shot readouts are only as good as the supernet's judgement of a sub-network. This measures it
directly: per dataset, ``--n`` random sub-networks of the default space (``compact``) within the 0.5%
budget (drawn by :func:`autopeft.oneshot.subnets.random_subnet` with a fixed seed, the training
distribution of the ``subnets`` supernet), each

- **trained for real** (autopeft's trainer, ``--steps`` steps, lr 1e-3, seed 0): the truth, and
- **evaluated inside trained supernets** with only its slices open, for each way of training the
  supernet: ``gates`` (S3Delta's soft budget gates, the first design) and ``subnets`` (one random hard
  sub-network per step, SPOS / OFA), both for the same ``--steps`` at lr 1e-3 and seed 0.

Two cheaper judges are measured against the same truth: the supernet's sub-network **fine-tuned
briefly** from the supernet's weights (``gates+tune``: ``--tune-steps`` AdamW steps on its open slices
and the head, then evaluated; OFA's fine-tune before judging) and the sub-network **trained from
scratch for the same few steps** (``short``: what a low rung of the search measures at that cost). The
supernet is worth its training only if ``gates+tune`` ranks better than ``short``.

Reported: Spearman's rank correlation between each supernet's validation accuracy and the real
validation accuracy over the sub-networks, next to the trivial predictor (the parameter count), with
95% intervals (Fisher z): with 12 sub-networks they are wide, and the real accuracies carry their own
noise (one seed; s.e. ~1 point on rotten_tomatoes' 1,275 validation examples).
Validation accuracy only: nothing here touches test. Tuning datasets only (``trec``,
``rotten_tomatoes``): the other datasets of the search-quality study inform no choice.
``proxy.jsonl`` holds every run (resumable).

    .venv/bin/python studies/oneshot/proxy.py --datasets rotten_tomatoes [--n 12] [--steps 800]
    .venv/bin/python studies/oneshot/proxy.py --summarize      # -> proxy.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import datasets
import torch
import transformers
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "search-quality"))
from sqlib import append_jsonl, load, machine, read_jsonl  # noqa: E402

from autopeft.oneshot.candidates import candidates, kept_units, sample_of  # noqa: E402
from autopeft.oneshot.gates import SliceSpec  # noqa: E402
from autopeft.oneshot.run import subnet_metric, train_supernet  # noqa: E402
from autopeft.oneshot.subnets import random_subnet  # noqa: E402
from autopeft.oneshot.supernet import build_supernet  # noqa: E402
from autopeft.peft.inject import head_parameters  # noqa: E402
from autopeft.space.presets import load_space  # noqa: E402
from autopeft.training.config import TrainConfig  # noqa: E402
from autopeft.training.trial_run import TrialRun, train_plan  # noqa: E402

OUT = HERE / "proxy.jsonl"
SPACE = "compact"
BUDGET_FRACTION = 0.005
LR = 1e-3
SEED = 0
#: supernet judges; ``short`` is a real training of ``--tune-steps`` steps from scratch (a low rung)
MODES = ("gates", "subnets", "gates+head", "gates+tune", "short")
REFITS = {"gates+head": "head", "gates+tune": "slices"}  # refit modes -> what their steps train
LABELS = {"gates": "in `gates` supernet", "subnets": "in `subnets` supernet",
          "gates+head": "`gates`, head re-fit", "gates+tune": "`gates`, fine-tuned", "short": "real, short"}
TUNE_STEPS = 100  # steps of gates+head, gates+tune and short (of 800 for the real training)


def subnets(slices, budget: float, n: int) -> list[tuple[int, ...]]:
    """``n`` distinct non-empty random sub-networks, the same for every run of this script."""
    generator = torch.Generator().manual_seed(20261207)
    specs = [SliceSpec(s.cost, s.parent, s.unit) for s in slices]
    out: list[tuple[int, ...]] = []
    while len(out) < n:
        kept = tuple(random_subnet(specs, budget, lambda: float(torch.rand((), generator=generator))))
        if kept and kept not in out:
            out.append(kept)
    return out


def refit_metric(run: TrialRun, supernet, kept: tuple[int, ...], trains: str, steps: int) -> float:
    """Validation accuracy of the supernet with only ``kept`` open after ``steps`` AdamW steps (lr 1e-3,
    constant, a fresh batch order) in that configuration, training the head alone (``trains="head"``:
    is the collapse of sub-networks inside the supernet the shared head's co-adaptation?) or the open
    slices and the head (``"slices"``: a short fine-tune from the inherited weights). Closed slices get
    no gradient (their opening is 0); every weight is restored afterwards."""
    session = run.session
    head = list(head_parameters(session.model).values())
    weights = [p for _, p in supernet.trainable_parameters() if p is not supernet.gates.raw]
    saved = [p.detach().clone() for p in weights]
    flags = [p.requires_grad for p in weights]
    trained = head if trains == "head" else weights
    for p in weights:
        p.requires_grad_(any(p is t for t in trained))
    supernet.fixed_openings = torch.zeros_like(supernet.gates.raw)
    supernet.fixed_openings[list(kept)] = 1.0
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0)
    batches = session.train_batches(TrainConfig(steps=steps, lr=1e-3, seed=run.config.seed + 1,
                                                batch_size=run.config.batch_size))
    try:
        session.model.train()
        for _ in range(steps):
            with session.autocast(run.recipe.autocast_bf16):
                loss = session.loss(next(batches))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        session.model.eval()
        return run.evaluate("validation").value
    finally:
        session.model.eval()
        with torch.no_grad():
            for p, value in zip(weights, saved, strict=True):
                p.copy_(value)
        for p, flag in zip(weights, flags, strict=True):
            p.requires_grad_(flag)
        supernet.fixed_openings = None


def gates_with_refits(session, space, budget: float, config: TrainConfig, probes: list[tuple[int, ...]],
                      refits: list[str], steps: int) -> dict[str, dict[tuple[int, ...], float]]:
    """The gates supernet trained exactly as train_supernet does; per mode (``gates`` and each of
    ``refits``) and probe, its metric."""
    torch.manual_seed(config.seed)
    session.reset_head(config.seed)
    supernet = build_supernet(session.model, session.arch, space, budget,
                              train_head=session.task == "classification")
    with TrialRun(session, supernet, config) as run:
        run.advance(config.steps)
        out: dict[str, dict[tuple[int, ...], float]] = {"gates": {}, **{mode: {} for mode in refits}}
        for kept in probes:
            out["gates"][kept] = subnet_metric(run, supernet, kept)
            for mode in refits:
                out[mode][kept] = refit_metric(run, supernet, kept, REFITS[mode], steps)
        return out


def run_dataset(dataset: str, n: int, steps: int, tune_steps: int) -> None:
    # a refit or short record counts only at its own --tune-steps (the first gates+head records, written
    # before the field existed, used 100)
    done = {(r["dataset"], r["kind"], r.get("mode"), tuple(r.get("kept", ())), r["steps"],
             r.get("tune_steps", TUNE_STEPS) if r.get("mode") in (*REFITS, "short") else None) for r in read_jsonl(OUT)}
    prepared = load(dataset)
    session = prepared.session
    space = load_space(SPACE)
    budget = int(BUDGET_FRACTION * prepared.loaded.base_params)
    slices = candidates(space, session.arch)
    probes = subnets(slices, budget, n)
    config = TrainConfig(steps=steps, lr=LR, seed=SEED)
    missing = [mode for mode in MODES if not all(
        (dataset, "supernet", mode, kept, steps, tune_steps if mode in (*REFITS, "short") else None) in done
        for kept in probes)]

    def record(mode: str, metrics: dict[tuple[int, ...], float], seconds: float) -> None:
        for kept in probes:
            append_jsonl(OUT, {"dataset": dataset, "kind": "supernet", "mode": mode, "kept": list(kept),
                               "steps": steps, "tune_steps": tune_steps if mode in (*REFITS, "short") else None,
                               "validation": round(metrics[kept], 5), "supernet_seconds": round(seconds, 1),
                               "machine": machine()})
        print(f"{dataset} {mode}: {seconds:.0f} s", flush=True)

    refits = [mode for mode in REFITS if mode in missing]
    if refits:  # one gates supernet for every refit mode (its training is deterministic: checked below)
        start = time.perf_counter()
        metrics = gates_with_refits(session, space, budget, config, probes, refits, tune_steps)
        plain = {tuple(r["kept"]): r["validation"] for r in read_jsonl(OUT)
                 if (r["dataset"], r["kind"], r.get("mode"), r["steps"]) == (dataset, "supernet", "gates", steps)}
        if plain:
            print("plain metrics reproduce the gates run:",
                  all(round(metrics["gates"][k], 5) == plain.get(k) for k in probes), flush=True)
        for mode in refits:
            record(mode, metrics[mode], time.perf_counter() - start)
        if "gates" in missing:
            record("gates", metrics["gates"], time.perf_counter() - start)
    for mode in ("gates", "subnets"):
        if mode in missing and not (mode == "gates" and refits):
            start = time.perf_counter()
            result, _ = train_supernet(session, space, budget, config, training=mode, probes=probes)
            record(mode, result.probes, time.perf_counter() - start)
    if "short" in missing:  # the same sub-networks trained from scratch for tune_steps (own schedule)
        start = time.perf_counter()
        short = TrainConfig(steps=tune_steps, lr=LR, seed=SEED)
        metrics = {kept: train_plan(session, sample_of(space, session.arch, slices, list(kept)).plan(),
                                    short).validation.value for kept in probes}
        record("short", metrics, time.perf_counter() - start)
    for kept in probes:
        if (dataset, "standalone", None, kept, steps, None) in done:
            continue
        plan = sample_of(space, session.arch, slices, list(kept)).plan()
        start = time.perf_counter()
        outcome = train_plan(session, plan, config)
        record = {"dataset": dataset, "kind": "standalone", "kept": list(kept), "steps": steps,
                  "units": kept_units(slices, kept), "params": outcome.adapter_params,
                  "validation": round(outcome.validation.value, 5),
                  "seconds": round(time.perf_counter() - start, 1), "machine": machine()}
        append_jsonl(OUT, record)
        print(json.dumps({k: record[k] for k in ("units", "params", "validation", "seconds")}), flush=True)


def spearman_text(predicted: list[float], real: list[float]) -> str:
    """Spearman's rho with a 95% interval (Fisher z, standard error 1.06 / sqrt(n - 3): Fieller et al.)."""
    rho = float(spearmanr(predicted, real).statistic)
    n = len(real)
    if n < 5 or abs(rho) >= 1:
        return f"{rho:+.2f}"
    half = 1.96 * 1.06 / math.sqrt(n - 3)
    low, high = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    return f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]"


def summarize() -> str:
    runs = read_jsonl(OUT)
    lines = ["| dataset | steps | sub-networks | Spearman: params | " + " | ".join(f"Spearman: {LABELS[m]}"
                                                                           for m in MODES) + " |",
             "|---|---|---|---|" + "---|" * len(MODES)]
    details = []
    for dataset, steps in sorted({(r["dataset"], r["steps"]) for r in runs}):
        truth = {tuple(r["kept"]): r for r in runs
                 if (r["dataset"], r["steps"], r["kind"]) == (dataset, steps, "standalone")}
        keys = sorted(truth, key=lambda k: truth[k]["validation"])
        real = [truth[k]["validation"] for k in keys]
        cells = [spearman_text([truth[k]["params"] for k in keys], real)]
        proxies: dict[str, dict] = {}
        for mode in MODES:
            proxy = {tuple(r["kept"]): r["validation"] for r in runs
                     if (r["dataset"], r["steps"], r["kind"], r.get("mode")) == (dataset, steps, "supernet", mode)}
            proxies[mode] = proxy
            cells.append(spearman_text([proxy[k] for k in keys], real)
                         if all(k in proxy for k in keys) and len(keys) > 2 else "-")
        lines.append(f"| {dataset} | {steps} | {len(keys)} | " + " | ".join(cells) + " |")
        details += [f"\n{dataset}, {steps} steps (validation accuracy %):\n",
                    "| sub-network | params | real | " + " | ".join(LABELS[m] for m in MODES) + " |",
                    "|---|---|---|" + "---|" * len(MODES)]
        for k in keys:
            units = ", ".join(f"{u} {m}" for u, m in truth[k]["units"].items())
            details.append(f"| {units} | {truth[k]['params']:,} | {100 * truth[k]['validation']:.1f} | " + " | ".join(
                f"{100 * proxies[m][k]:.1f}" if k in proxies[m] else "-" for m in MODES) + " |")
    return "\n".join(lines + details) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="rotten_tomatoes")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--tune-steps", type=int, default=TUNE_STEPS,
                        help="steps of the gates+head / gates+tune refits and of the short real training")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args()
    if args.summarize:
        (HERE / "proxy.md").write_text(summarize())
        print((HERE / "proxy.md").read_text())
        return
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    for dataset in args.datasets.split(","):
        if dataset not in ("trec", "rotten_tomatoes"):
            raise SystemExit(f"{dataset}: tuning datasets only (trec, rotten_tomatoes)")
        run_dataset(dataset, args.n, args.steps, args.tune_steps)


if __name__ == "__main__":
    main()
