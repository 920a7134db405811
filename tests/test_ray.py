"""The Ray backend on a two-node Ray cluster on this machine: trials run on both nodes, the Pareto-aware
scheduler stops dominated plans at rungs, and the study directory is the Optuna backend's."""

import json

import optuna
import pandas as pd
import pytest
from tiny_assets import TINY_SPACE, tiny_csv, tiny_model_dir

from autopeft.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.setenv("OMP_NUM_THREADS", "1")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    mp.undo()


def test_ray_backend_runs_trials_on_both_nodes_and_writes_the_study_directory(cluster, tmp_path):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    code = main(["search", "--backend", "ray", "--ray-address", cluster.address, "--ray-cpus-per-trial", "1",
                 "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "6", "--max-steps", "240", "--min-steps", "80",
                 "--seeds", "2", "--out", str(out), "--quiet", "--baselines", "none"])
    assert code == 0
    for name in ("study.db", "trials.csv", "pareto.csv", "summary.json", "settings.json", "best/metrics.json",
                 "best/adapter.safetensors"):
        assert (out / name).is_file(), name
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    trained = [t for t in study.trials if t.user_attrs.get("status") in ("complete", "stopped")]
    assert len(trained) == 6
    assert len({t.user_attrs["node"] for t in trained}) == 2  # both nodes trained plans
    for t in trained:
        rungs = t.user_attrs["rung_metrics"]
        assert set(rungs) == {r for r in ("80", "240") if int(r) <= t.user_attrs["steps"]}
    complete = [t for t in trained if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.values[0] == t.user_attrs["rung_metrics"]["240"] for t in complete)
    assert all((out / "trials" / f"{t.number:04d}" / "adapter.safetensors").is_file() for t in complete)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray"
    assert set(pd.read_csv(out / "pareto.csv").number) == {e["trial"] for e in summary["front"]}
    for entry in summary["front"]:
        assert entry["retrain"] is None or len(entry["retrain"]["values"]) == 2  # finalists: 2 seeds
        assert (out / "front" / f"{entry['trial']:04d}" / "metrics.json").is_file()
