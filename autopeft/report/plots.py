"""Study plots: the Pareto front (PNG with matplotlib, interactive HTML with plotly), the search-efficiency
curve and parameter importances.

PNGs use matplotlib's Agg backend (no display needed). The HTML loads plotly.js from its CDN
(``include_plotlyjs="cdn"``), so the file stays a few kilobytes instead of ~5 MB; it needs a network
connection to render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopeft.core.units import format_count
from autopeft.study.layout import StudyLayout
from autopeft.study.view import StudyView, TrialView

FRONT_COLOUR = "#d62728"
TRIAL_COLOUR = "#7f7f7f"
BASELINE_COLOUR = "#1f77b4"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _kilo(values: list[int | None]) -> list[float]:
    return [(v or 0) / 1e3 for v in values]


def pareto_png(view: StudyView, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    others = [t for t in view.completed if not t.on_front]
    ax.scatter(_kilo([t.params for t in others]), [t.metric for t in others], s=22, color=TRIAL_COLOUR,
               alpha=0.6, label=f"trials ({len(view.completed)})", zorder=2)
    front = view.front
    if front:
        xs = _kilo([t.params for t in front])
        ys = [t.metric_mean for t in front]
        errs = [t.metric_std or 0.0 for t in front]
        ax.step(xs, ys, where="post", color=FRONT_COLOUR, alpha=0.5, zorder=3)
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt="o", color=FRONT_COLOUR, ms=6, capsize=3,
                    label="Pareto front" + (" (mean ± std of retrains)" if any(errs) else ""), zorder=4)
        for t, x, y in zip(front, xs, ys, strict=True):
            ax.annotate(f"#{t.number}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for b in view.baselines:
        ax.scatter([b.params / 1e3], [b.metric], marker="*", s=140, color=BASELINE_COLOUR, zorder=5)
        ax.annotate(b.name, (b.params / 1e3, b.metric), textcoords="offset points", xytext=(6, -10),
                    fontsize=8, color=BASELINE_COLOUR)
    if view.baselines:
        ax.scatter([], [], marker="*", s=140, color=BASELINE_COLOUR, label="single-method baselines")
    if view.budget_params:
        ax.axvline(view.budget_params / 1e3, color="black", ls="--", lw=0.8, label="budget")
    ax.set_xlabel("trainable parameters (thousands; task head excluded)")
    ax.set_ylabel(f"validation {view.metric}" + (" (higher is better)" if view.greater_is_better
                                                   else " (lower is better)"))
    if view.base_params:
        top = ax.secondary_xaxis("top", functions=(lambda k: 100 * k * 1e3 / view.base_params,
                                                    lambda p: p * view.base_params / 1e5))
        top.set_xlabel("% of the base model")
    ax.set_title(_title(view), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _title(view: StudyView) -> str:
    data = view.settings.get("identity", {}).get("data", {}) if isinstance(view.settings.get("identity"), dict) \
        else {}
    what = " on ".join(Path(x).name for x in (data.get("model"), data.get("dataset")) if x)
    return f"{view.root.name}: {what}" if what else str(view.root.name)


def _hover(t: TrialView, view: StudyView) -> str:
    metric = f"{t.metric_mean:.4f}" + (f" ± {t.metric_std:.4f}" if t.metric_std is not None else "")
    pct = f" ({t.params_pct:.3f}%)" if t.params_pct is not None else ""
    return (f"trial {t.number}<br>{view.metric} {metric}<br>{format_count(t.params or 0)} params{pct}"
            f"<br>{t.summary}")


def pareto_html(view: StudyView, path: Path) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    others = [t for t in view.completed if not t.on_front]
    fig.add_trace(go.Scatter(x=[t.params for t in others], y=[t.metric for t in others], mode="markers",
                             name="trials", marker={"color": TRIAL_COLOUR, "size": 7, "opacity": 0.6},
                             hovertext=[_hover(t, view) for t in others], hoverinfo="text"))
    front = view.front
    fig.add_trace(go.Scatter(
        x=[t.params for t in front], y=[t.metric_mean for t in front], mode="lines+markers", name="Pareto front",
        line={"shape": "hv", "color": FRONT_COLOUR}, marker={"size": 9},
        error_y={"type": "data", "array": [t.metric_std or 0.0 for t in front],
                 "visible": any(t.metric_std for t in front)},
        hovertext=[_hover(t, view) for t in front], hoverinfo="text"))
    if view.baselines:
        fig.add_trace(go.Scatter(x=[b.params for b in view.baselines], y=[b.metric for b in view.baselines],
                                 mode="markers+text", name="baselines", text=[b.name for b in view.baselines],
                                 textposition="bottom right", marker={"symbol": "star", "size": 14,
                                                                      "color": BASELINE_COLOUR}))
    fig.update_layout(title=_title(view), xaxis_title="trainable parameters (task head excluded)",
                      yaxis_title=f"validation {view.metric}", template="plotly_white", hovermode="closest")
    fig.write_html(str(path), include_plotlyjs="cdn", full_html=True)
    return path


def efficiency_png(view: StudyView, path: Path) -> Path | None:
    curve = view.efficiency_curve()
    if not curve:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.step([p["steps"] for p in curve], [p["hypervolume"] for p in curve], where="post", color=FRONT_COLOUR)
    ax.plot([p["steps"] for p in curve], [p["hypervolume"] for p in curve], "o", ms=3, color=FRONT_COLOUR)
    x_ref, y_ref = view.reference_point()
    ax.set_xlabel("cumulative training steps")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"search efficiency (reference: params = budget, {view.metric} = "
                 f"{abs(y_ref):.4g})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def importance_png(importances: dict[str, float], path: Path, top: int = 15) -> Path | None:
    if not importances:
        return None
    plt = _pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2), dpi=120)
    ax.barh([k for k, _ in items], [v for _, v in items], color=BASELINE_COLOUR)
    ax.set_xlabel("importance for the validation metric (PED-ANOVA)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_pareto_plots(view: StudyView, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = StudyLayout(out_dir)
    return {"png": pareto_png(view, layout.pareto_png), "html": pareto_html(view, layout.pareto_html)}
