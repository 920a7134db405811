"""CPU softmax of bf16 attention scores: torch's bf16 kernel vs the fp32 kernel with casts (autopeft's).

Shapes of a MiniLM training batch's scores, (16, 12, T, T) for T from 33 to 64; per shape the median
of ``--repeats`` timings of each way (interleaved), and whether the two give the same values.

    .venv/bin/python studies/step-speed/softmax_check.py --threads 1   # softmax.json / softmax.csv
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from autopeft.benchmarking import machine_record, study_arguments, write_results

HERE = Path(__file__).parent


def main() -> None:
    parser = study_arguments(__doc__.splitlines()[0], HERE / "softmax.json")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import torch

    from autopeft.training.fastpath.step_kernels import bf16_softmax

    if args.threads:
        torch.set_num_threads(args.threads)
    record = {"machine": machine_record(), "settings": vars(args)}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for width in (33, 40, 47, 50, 55, 58, 63, 64):
        scores = (torch.randn(16, 12, width, width, generator=generator) * 3).to(torch.bfloat16)
        ways = {"torch_bf16_ms": lambda s=scores: torch.softmax(s, -1),
                "fp32_kernel_ms": lambda s=scores: bf16_softmax(s, -1)}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(3):
            for way in ways.values():
                way()
        for _ in range(args.repeats):
            for name, way in ways.items():
                t = time.perf_counter()
                way()
                times[name].append(1e3 * (time.perf_counter() - t))
        native, ours = torch.softmax(scores, -1), bf16_softmax(scores, -1)
        row = {"width": width, **{name: statistics.median(v) for name, v in times.items()},
               "differing_elements": int((native != ours).sum()), "elements": native.numel()}
        rows.append(row)
        print(row, flush=True)
    record["rows"] = rows
    write_results(args.out, record, rows)


if __name__ == "__main__":
    main()
