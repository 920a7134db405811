"""A study directory opens in optuna-dashboard (``optuna-dashboard sqlite:///STUDY/study.db``): the study
with its objective names, its trials with their rung metrics as sortable user attributes (``rung_<steps>``),
and its best trials, through the dashboard's own WSGI app and JSON API."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

from autopeft.cli.main import main
from autopeft.testing import TINY_SPACE, tiny_csv, tiny_model_dir

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def _get(app, path: str) -> dict:
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


@pytest.mark.slow
def test_a_study_directory_opens_in_optuna_dashboard(tmp_path):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    assert main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "5", "--max-steps", "60", "--min-steps", "20",
                 "--seeds", "1", "--workers", "1", "--baselines", "lora-r8-qv", "--out", str(out), "--quiet"]) == 0
    app = optuna_dashboard.wsgi(f"sqlite:///{out / 'study.db'}")
    studies = _get(app, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["autopeft"]
    assert [d for d in studies[0]["directions"]] == ["maximize", "minimize"]
    detail = _get(app, f"/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == ["validation_metric", "trainable_params"]
    trials = detail["trials"]
    assert len(trials) >= 5 and detail["best_trials"]
    for t in trials:  # every trained trial's rung metrics are sortable user attributes, one per rung
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        if "rung_metrics" in attrs:
            rungs = json.loads(attrs["rung_metrics"]) if isinstance(attrs["rung_metrics"], str) else attrs["rung_metrics"]
            assert {int(k): float(v) for k, v in rungs.items()} == \
                {int(k[5:]): float(v) for k, v in attrs.items() if k.startswith("rung_") and k[5:].isdigit()}
    sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}
    assert {"rung_20", "rung_60"} <= sortable
    assert any(a["key"] == "baseline" for t in trials for a in t["user_attrs"])
