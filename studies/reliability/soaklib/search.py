"""The search under test: the ``autopeft search`` command every run of the soak repeats, and its tiny assets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# the tiny setup: a 42k-param BERT, 240 rows, LoRA on q/v per layer and site; rungs 60/90/135/180 with
# eta 1.5 so that most plans are promoted (promoted trials to kill) and some stopped; a trial takes ~1-3 s
# on one thread, so a run killed a few seconds after its start still makes progress
TINY_FLAGS = ("--budget", "1.2k", "--batch-size", "8", "--trials", "16", "--max-steps", "180", "--min-steps", "60",
              "--eta", "1.5", "--seeds", "2")


def tiny_assets(root: Path) -> tuple[str, str, str]:
    """A tiny random BERT with a word-level tokenizer, a learnable CSV (240 rows, label 1 iff the text
    has w7) and a LoRA q/v space: :mod:`autopeft.testing`'s assets, as the test suite uses them."""
    import torch

    from autopeft.testing import TINY_SPACE, tiny_csv, tiny_model_dir

    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    (root / "space.yaml").write_text(TINY_SPACE)
    return (str(tiny_model_dir(root / "model")), str(tiny_csv(root / "data.csv", n=240)),
            str(root / "space.yaml"))


def search_command(args: argparse.Namespace, work: Path) -> list[str]:
    out = str(work / "study")
    if args.real:  # the real defaults (hybrid space, 150 steps, eta 3, 3 seeds, 12 trials) on one worker
        base = ["--model", "minilm", "--dataset", "rotten_tomatoes"]
        flags: tuple[str, ...] = ()
    else:
        model, data, space = tiny_assets(work / "assets")
        base = ["--model", model, "--dataset", data, "--space", space]
        flags = TINY_FLAGS
    return [sys.executable, "-m", "autopeft", "search", *base, "--out", out, *flags, "--workers", "1",
            *args.search_args.split()]


def flag(command: list[str], name: str, default: str) -> str:
    """The last value of ``name`` in the command (later flags win, as in argparse)."""
    value = default
    for i, item in enumerate(command[:-1]):
        if item == name:
            value = command[i + 1]
    return value
