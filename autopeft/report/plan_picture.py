"""A plan as a picture: layers x sites, each cell coloured by the method(s) placed there.

Rows are layers (0 at the top), columns the model's sites (``q k v o gate up down``, then ``attn`` and
any other site a plan uses). A cell holding several methods (a hybrid plan may put LoRA and an adapter
on the same projection) is split into one slice per method. Each slice shows the method's size
(``r8`` for a rank, ``16`` for an adapter size, ``P8`` for a prefix length) and, when the model's
shapes are known, the parameter count of that placement, so one sees where the search put capacity.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.core.arch import LINEAR_SITES, SITE_ALIASES, ModelArch
from autopeft.core.errors import UserError
from autopeft.core.units import format_count
from autopeft.peft.plan import Plan

# fixed colours, so a method looks the same in every picture; LoRA's family in blues
METHOD_COLOURS = {"lora": "#4e79a7", "dora": "#2f4b7c", "lora_fa": "#86a8d0", "adalora": "#6a51a3",
                  "vera": "#76b7b2", "ia3": "#59a14f", "bitfit": "#9c755f", "adapter": "#f28e2b",
                  "parallel_adapter": "#d37295", "prefix": "#e15759", "ptuning_v2": "#ff9d9a", "prompt": "#b07aa1",
                  "ptuning": "#9d7660", "ln_tuning": "#edc948"}
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#fabfd2", "#8cd17d")
SIZE_KEYS = (("r", "r"), ("size", ""), ("length", "P"), ("num_virtual_tokens", "P"), ("tokens", "P"))


MODEL_ROW = -1  # placements without a layer (a soft prompt on ``input``) go in a row above layer 0


@dataclass(frozen=True)
class Cell:
    layer: int  # MODEL_ROW for model-level sites
    site: str
    method: str
    label: str
    params: int | None


def method_colour(method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return PALETTE[sum(map(ord, method)) % len(PALETTE)]  # stable for methods added later


def text_colour(background: str) -> str:
    """Black on light fills, white on dark ones (relative luminance, ITU-R BT.709 weights)."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.6 else "white"


def size_label(options: Any) -> str:
    values = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
    for key, prefix in SIZE_KEYS:
        if key in values:
            return f"{prefix}{values[key]}"
    return ""


def _model_level(method: str) -> bool:
    from autopeft.methods import REGISTRY

    spec = REGISTRY.get(method)
    return spec is not None and spec.placement.value == "input"


def plan_cells(plan: Plan, arch: ModelArch | None) -> tuple[list[Cell], int, list[str]]:
    """Cells, number of layers, and column order. Without ``arch`` layers come from the plan itself."""
    from autopeft.methods import get_method

    cells: list[Cell] = []
    if arch is not None:
        for p in plan.placements(arch):
            params = get_method(p.method).num_params(p.config, arch, getattr(p, "target", p.linear))
            layer = MODEL_ROW if p.layer is None else p.layer
            cells.append(Cell(layer, p.site, p.method, size_label(p.config), params))
        num_layers = arch.num_layers
    else:
        for entry in plan.entries:
            model_level = _model_level(entry.method)
            if not model_level and any(layer < 0 for layer in entry.layers):
                raise UserError("the plan uses negative layer indices; pass --model so they can be resolved")
            for layer in (MODEL_ROW,) if model_level else entry.layers:
                for site in entry.sites:
                    cells.append(Cell(layer, SITE_ALIASES.get(site, site), entry.method, size_label(entry.options),
                                      None))
        num_layers = max((c.layer for c in cells), default=-1) + 1
    used = {c.site for c in cells}
    columns = [s for s in LINEAR_SITES if (arch is not None and s in arch.sites) or s in used]
    columns += sorted(used - set(columns))
    return cells, max(num_layers, 1), columns


def draw_plan(plan: Plan, path: str | Path, arch: ModelArch | None = None, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    cells, num_layers, columns = plan_cells(plan, arch)
    offset = 1 if any(c.layer == MODEL_ROW for c in cells) else 0
    rows = num_layers + offset
    by_key: dict[tuple[int, str], list[Cell]] = {}
    for c in cells:
        by_key.setdefault((c.layer, c.site), []).append(c)
    width = max(4.5, 0.95 * len(columns) + 2.8)
    height = max(2.6, 0.42 * rows + 1.9)
    fig, ax = plt.subplots(figsize=(width, height), dpi=130)
    fontsize = 7 if num_layers <= 16 else 5
    for (layer, site), group in by_key.items():
        x0 = columns.index(site)
        share = 1.0 / len(group)
        for i, c in enumerate(sorted(group, key=lambda c: c.method)):
            ax.add_patch(Rectangle((x0 + i * share, layer + offset), share, 1, facecolor=method_colour(c.method),
                                   edgecolor="white", lw=0.8))
            text = c.label or c.method
            if c.params is not None and len(group) <= 2:
                text += f"\n{format_count(c.params)}"
            ax.text(x0 + (i + 0.5) * share, layer + offset + 0.5, text, ha="center", va="center",
                    fontsize=fontsize if len(group) == 1 else fontsize - 1,
                    color=text_colour(method_colour(c.method)), fontweight="bold")
    for x in range(len(columns) + 1):
        ax.axvline(x, color="#dddddd", lw=0.6, zorder=0)
    for y in range(rows + 1):
        ax.axhline(y, color="#dddddd", lw=0.6, zorder=0)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(rows, 0)
    ax.set_xticks([i + 0.5 for i in range(len(columns))], columns)
    ax.xaxis.tick_top()
    step = 1 if num_layers <= 24 else 2
    ticks = [(i + offset + 0.5, str(i)) for i in range(0, num_layers, step)] + ([(0.5, "model")] if offset else [])
    ax.set_yticks([t for t, _ in ticks], [label for _, label in ticks])
    ax.set_ylabel("layer")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    methods = sorted({c.method for c in cells})
    totals = {m: sum(c.params or 0 for c in cells if c.method == m) for m in methods}
    handles = [Patch(color=method_colour(m), label=m + (f" ({format_count(totals[m])})" if arch else ""))
               for m in methods]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    total = f", {format_count(plan.num_params(arch))} params" if arch is not None else ""
    heading = title or (plan.describe(arch) if plan.entries else "head only (no adapter modules)") + total
    ax.set_title("\n".join(textwrap.wrap(heading, width=int(width * 14))), fontsize=8, pad=22)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
