"""``autopeft report``: write a self-contained report.html about a study."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    r = sub.add_parser("report", help="write report.html: settings, front, plots, best plan, efficiency, importances")
    r.add_argument("study_dir")
    r.add_argument("--out", help="report file (default STUDY_DIR/report.html)")
    r.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.report.page import build_report
    from autopeft.study.view import load_study_view

    view = load_study_view(Path(args.study_dir))
    out = build_report(view, Path(args.out) if args.out else view.layout.report_html)
    print(f"wrote {out}")
    return 0
