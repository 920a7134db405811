"""``report.html``: one self-contained page about a study.

Sections: settings, the best plan (with its layers x sites picture), the Pareto front (table and plot),
the search-efficiency curve (hypervolume vs cumulative training steps; reference point in
:mod:`autopeft.study.view`), Optuna parameter importances, and timings. Every picture is a PNG embedded
as base64, so the file can be mailed or archived alone; the interactive ``pareto.html`` is written next
to it and linked.

Parameter importances use Optuna's PED-ANOVA evaluator (``optuna.importance``; it needs no scikit-learn)
on the validation metric (``target=`` the first objective, negated when it is maximised, since
PED-ANOVA ranks low values as good). Parameters are the search space's decisions that every completed
trial has (Optuna's intersection search space). With fewer than :data:`MIN_TRIALS_FOR_IMPORTANCE`
completed trials, or when Optuna cannot compute them, the report says why instead.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
import tempfile
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from autopeft.core.units import format_bytes, format_count
from autopeft.peft.plan import Plan
from autopeft.report.readout_grid import load_readouts, readout_grid
from autopeft.searching.uplift import describe_comparison
from autopeft.study.layout import StudyLayout
from autopeft.study.view import StudyView, TrialView, load_optuna_study

MIN_TRIALS_FOR_IMPORTANCE = 5

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}code,pre{font-size:.85em;background:#f7f7f7}
pre{padding:.5em;overflow-x:auto}.note{color:#555;font-size:.9em}
"""


def importances(view: StudyView) -> tuple[dict[str, float], str | None]:
    """(parameter -> importance, None) or ({}, reason they are not available)."""
    import optuna

    n = len(view.completed)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (f"not computed: {n} completed trial(s); parameter importances need at least "
                    f"{MIN_TRIALS_FOR_IMPORTANCE}")
    study = load_optuna_study(view.root, view.settings)
    sign = -1.0 if view.greater_is_better else 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return {}, f"not computed: Optuna could not ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    if not values:
        return {}, "not computed: the completed trials share no search-space parameter"
    return {k: float(v) for k, v in values.items()}, None


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return f'<p class="note">({html.escape(alt)}: nothing to draw)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{html.escape(str(v))}</td>'
                         for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric_text(t: TrialView) -> str:
    if t.metric_mean is None:
        return "-"
    return f"{t.metric_mean:.4f}" + (f" ± {t.metric_std:.4f}" if t.metric_std is not None else "")


def _settings_rows(view: StudyView) -> list[list[Any]]:
    identity = view.settings.get("identity", {}) if isinstance(view.settings.get("identity"), dict) else {}
    data = identity.get("data", {})
    train = identity.get("train", {})
    counts = view.counts()
    budget = view.budget_params
    rows = [
        ["model", data.get("model", "?")], ["dataset", data.get("dataset", "?")],
        ["task", view.settings.get("data", {}).get("task", "?")],
        ["metric", f"validation {view.metric} ({'higher' if view.greater_is_better else 'lower'} is better)"],
        ["base model", f"{format_count(view.base_params)} params"],
        ["budget", f"{identity.get('budget', '?')} = {format_count(budget) if budget else '?'} trainable params"],
        ["space", identity.get("space", "?")], ["seed", identity.get("seed", "?")],
        ["training per trial", ", ".join(f"{k} {v}" for k, v in train.items() if k in
                                         ("steps", "batch_size", "lr", "precision")) or "?"],
        ["trials", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"],
    ]
    return rows


def _timings(view: StudyView) -> str:
    trained = [t for t in view.trials if isinstance(t.attrs.get("duration_s"), (int, float))]
    durations = [float(t.attrs["duration_s"]) for t in trained]
    step_times = [float(t.attrs["step_time_s"]) for t in trained if isinstance(t.attrs.get("step_time_s"),
                                                                               (int, float))]
    elapsed = view.summary.get("elapsed_s")
    rows = [["search wall time", f"{elapsed:.0f} s" if isinstance(elapsed, (int, float)) else "-"],
            ["trained trials", str(len(trained))],
            ["training time, all trials", f"{sum(durations):.0f} s" if durations else "-"],
            ["median trial", f"{statistics.median(durations):.1f} s" if durations else "-"],
            ["median step", f"{1000 * statistics.median(step_times):.0f} ms" if step_times else "-"],
            ["total training steps", str(sum(t.steps for t in view.trials))]]
    if isinstance(elapsed, (int, float)) and elapsed > 0 and trained:
        rows.append(["trials per hour", f"{3600 * len(trained) / elapsed:.1f}"])
    machine = view.summary.get("machine")
    out = _table(["", ""], rows)
    if isinstance(machine, dict):
        out += f'<p class="note">machine: {html.escape(", ".join(f"{k} {v}" for k, v in machine.items()))}</p>'
    return out


def _best_section(view: StudyView, work: Path) -> str:
    best = view.best()
    if best is None or best.plan is None:
        return "<p>No completed trial yet.</p>"
    from autopeft.core.errors import UserError
    from autopeft.report.plan_picture import draw_plan
    from autopeft.training.models import arch_for

    model = view.settings.get("identity", {}).get("data", {}).get("model")
    try:
        arch = arch_for(model)
    except UserError:
        arch = None
    picture = draw_plan(best.plan, work / "best_plan.png", arch)
    recorded = view.summary.get("best", {}) if isinstance(view.summary.get("best"), dict) else {}
    test = recorded.get("test", {}).get(view.metric) if isinstance(recorded.get("test"), dict) else None
    rows = [["trial", best.number], [f"validation {view.metric}", _metric_text(best)],
            [f"test {view.metric}", f"{test:.4f}" if isinstance(test, (int, float)) else "-"],
            ["trainable params", f"{format_count(best.params or 0)} ({best.params_pct or 0:.3f}% of base)"],
            ["plan", best.plan.describe(arch)]]
    return _table(["", ""], rows) + _img(picture, "best plan") + \
        f"<details><summary>plan.json</summary><pre>{html.escape(json.dumps(best.plan.to_dict(), indent=1))}</pre>" \
        "</details>"


def _oneshot_section(view: StudyView) -> list[str]:
    """--strategy oneshot*: each readout's budget and plan beside its verified (really trained) metric, the
    sub-networks measured inside the supernet and (gates training) the gates' ranking of the candidates."""
    record = load_readouts(view.layout.oneshot_dir)
    if record is None:
        return []
    verified = {t.attrs["oneshot_readout"]: t for t in view.trials if "oneshot_readout" in t.attrs}
    rows = []
    for index, readout in enumerate(record["readouts"]):
        trial = verified.get(index)
        predicted = readout.get("supernet_metric")
        rows.append([index, format_count(readout["budget"]), format_count(readout["params"]),
                     "-" if predicted is None else f"{predicted:.4f}", readout.get("source", "ranking"), trial.number if trial else "-",
                     _metric_text(trial) if trial else "-", Plan.from_dict(readout["plan"]).describe()])
    grid_header, grid_rows = readout_grid(record)
    grid = (["<p>Units kept at each readout budget (method and size; blank = left out):</p>",
             _table(grid_header, grid_rows, numeric={1, 2})] if len(grid_header) > 3 else [])
    how = ("each readout is the best, measured inside the supernet with only its candidates open (the weight-sharing "
           "prediction), of random sub-networks filling its budget"
           + (" and the gates' ranking cut at that budget" if "ranking" in record else "")
           + ("; the supernet trained one random sub-network per step" if record.get("training") == "subnets" else ""))
    details = ["<details><summary>sub-networks measured inside the supernet (best first)</summary>",
               _table(["params", "in the supernet", "units kept"],
                      [[format_count(r["params"]), f'{r["supernet_metric"]:.4f}',
                        ", ".join(f"{unit} {kept}" for unit, kept in r["kept"].items())]
                       for r in record.get("measured", [])[:40]], numeric={0, 1}),
               "</details>"]
    if "ranking" in record:
        details += ["<details><summary>the gates' ranking of the candidates (best first)</summary>",
                    _table(["unit", "method", "dims", "params", "score"],
                           [[r["unit"], r["method"], f'{r["dims"][0]}-{r["dims"][1]}', format_count(r["cost"]),
                             f'{r["score"]:.3f}'] for r in record["ranking"][:30]], numeric={3, 4}),
                    "</details>"]
    return ["<h2>One-shot supernet</h2>",
            f'<p class="note">The supernet trained {record["steps"]} steps in {record["seconds"]:.0f} s; {how}, '
            "then trained as an ordinary trial (the verified metric).</p>",
            _table(["readout", "budget", "params", "in the supernet", "from", "trial", f"validation {view.metric}",
                    "plan"],
                   rows, numeric={1, 2, 3}),
            *grid, *details]


def build_report(view: StudyView, out: Path) -> Path:
    """Write ``out`` (report.html) and ``pareto.html`` next to it; return ``out``."""
    from autopeft.report import plots

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = [f"<h1>autopeft study report: {html.escape(str(view.root))}</h1>",
                 f'<p class="note">generated {datetime.now().isoformat(timespec="seconds")}</p>',
                 "<h2>Settings</h2>", _table(["setting", "value"], _settings_rows(view)),
                 "<details><summary>settings.json</summary><pre>"
                 f"{html.escape(json.dumps(view.settings, indent=1, default=str))}</pre></details>",
                 "<h2>Best plan</h2>", _best_section(view, work)]
        comparison = describe_comparison(view.summary.get("baseline_comparison"))
        if comparison:
            parts.append(f"<p><b>Against the baselines:</b> {html.escape(comparison)}</p>")
        front = view.front
        parts.append(f"<h2>Pareto front ({len(front)} plans)</h2>")
        if front:
            parts.append(_table(["trial", f"validation {view.metric}", "params", "% of base", "memory", "plan"],
                                [[t.number, _metric_text(t), format_count(t.params or 0),
                                  f"{t.params_pct or 0:.3f}%", format_bytes(t.memory_bytes), t.summary]
                                 for t in front], numeric={2, 3}))
            parts.append(_img(plots.pareto_png(view, work / "pareto.png"), "Pareto front"))
            html_plot = plots.pareto_html(view, StudyLayout(out.parent).pareto_html)
            parts.append(f'<p><a href="{html.escape(html_plot.name)}">interactive version</a> (plotly; hover a '
                         "point to see its plan)</p>")
        x_ref, y_ref = view.reference_point()
        curve = view.efficiency_curve()
        parts += ["<h2>Search efficiency</h2>",
                  f'<p class="note">Hypervolume of the (validation {html.escape(view.metric)}, trainable params) '
                  "front after each trained trial, against the training steps spent so far. Parameters are "
                  f"normalised by the budget; reference point: params = budget, {html.escape(view.metric)} = "
                  f"{abs(y_ref):.4g}"
                  + (" (the worst completed trial)" if not view.greater_is_better else "") + ".</p>",
                  _img(plots.efficiency_png(view, work / "efficiency.png"), "search efficiency")]
        if curve:
            parts.append(f'<p>final hypervolume {curve[-1]["hypervolume"]:.4f} after {curve[-1]["steps"]} '
                         "training steps</p>")
        parts += _oneshot_section(view)
        values, reason = importances(view)
        parts.append("<h2>Parameter importances</h2>")
        if values:
            parts.append(_img(plots.importance_png(values, work / "importance.png"), "parameter importances"))
            top = list(values.items())[:20]
            parts.append(f'<p class="note">{len(view.completed)} completed trials; with few trials these are '
                         "rough. Top " + str(len(top)) + f" of {len(values)} parameters.</p>")
            parts.append(_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in top], numeric={1}))
        else:
            parts.append(f"<p>{html.escape(reason or '')}</p>")
        parts += ["<h2>Timings</h2>", _timings(view), "<h2>All trials</h2>", "<details><summary>table</summary>",
                  _table(["trial", "status", f"validation {view.metric}", "params", "steps", "duration (s)",
                          "reason", "plan"],
                         [[t.number, t.status, _metric_text(t), format_count(t.params) if t.params is not None
                           else "-", t.steps, t.attrs.get("duration_s", "-"), t.attrs.get("reason", ""), t.summary]
                          for t in view.trials], numeric={3, 4, 5}), "</details>"]
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>autopeft report: "
                f"{html.escape(view.root.name)}</title><style>{STYLE}</style></head><body>"
                + "\n".join(parts) + "</body></html>\n")
    out.write_text(page)
    return out
