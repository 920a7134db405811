"""Plumbing shared by the speed studies (``studies/step-speed``, ``studies/trial-throughput``)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any


def study_arguments(description: str | None, out: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=str(out))
    return parser


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers, e.g. ``32,1``."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers, e.g. 32,1")
    return values


def prepare_minilm(args: argparse.Namespace, max_length: int = 64):
    """Set the threads, silence the libraries' progress output, and prepare MiniLM on Rotten Tomatoes."""
    import datasets
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from autopeft.training.options import DataOptions
    from autopeft.training.pipeline import prepare

    return prepare(DataOptions(model="minilm", dataset="rotten_tomatoes", max_length=max_length))


def machine_record() -> dict[str, Any]:
    from autopeft.study.files import StudyFiles

    return {**StudyFiles.machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}


def write_results(out: str | Path, record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``record`` as JSON (with the load average at the end noted) and ``rows`` as CSV next to it."""
    record.setdefault("machine", {})["loadavg_end"] = os.getloadavg()
    out = Path(out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


def matmul_peak(dtype: Any, n: int = 1024, repeat: int = 20) -> float:
    """Best GFLOP/s of an n x n matmul on this process's threads (the roofline's compute ceiling)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9
