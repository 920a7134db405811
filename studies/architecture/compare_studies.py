"""Compare two study directories made by the same command: trials.csv rows (states, statuses, metrics,
rung metrics, retraining means, seeds, plans) and every adapter's tensors and metadata, bitwise.

Used to show that the #20 package move changed no result (see README.md here): the same fixed-seed
search run from the tree before the move and from the tree after it.

    .venv/bin/python studies/architecture/compare_studies.py STUDY_A STUDY_B
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

from safetensors import safe_open

COLUMNS = ("number", "state", "status", "metric", "params", "steps", "rung_metrics", "retrain_mean", "retrain_std",
           "seed", "plan")


def rows(study: Path) -> list[dict[str, str]]:
    with open(study / "trials.csv") as f:
        return [{k: r[k] for k in COLUMNS} for r in csv.DictReader(f)]


def adapters(study: Path) -> dict[str, tuple[dict, dict]]:
    """relative path -> (tensors, metadata) of every safetensors file in the study."""
    out = {}
    for path in sorted(study.rglob("*.safetensors")):
        with safe_open(path, "pt") as f:
            out[str(path.relative_to(study))] = ({k: f.get_tensor(k) for k in f.keys()}, f.metadata())  # noqa: SIM118
    return out


def same_adapter(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(a[0][k].equal(b[0][k]) for k in a[0])


def main(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    print(f"trials.csv rows equal (metrics, states, seeds, plans): {ra == rb} ({len(ra)} rows)")
    ta, tb = adapters(a), adapters(b)
    print(f"adapter files: {len(ta)} and {len(tb)}, same paths: {sorted(ta) == sorted(tb)}")
    print("every adapter tensor bitwise equal and same metadata:", all(same_adapter(ta[k], tb[k]) for k in ta))
    identical = [k for k in ta if hashlib.sha256((a / k).read_bytes()).digest() == hashlib.sha256((b / k).read_bytes()).digest()]
    print(f"files byte-identical: {len(identical)} of {len(ta)}")
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    for name, s in (("A", sa), ("B", sb)):
        print(f"best ({name}): trial {s['best']['trial']}, validation {s['best']['validation']}, test {s['best']['test']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
