"""Several processes share one study through PostgreSQL: `autopeft search` plus two `autopeft worker`s.

Needs a PostgreSQL server on 127.0.0.1:5432 with trust authentication and a database `test`
(AUTOPEFT_TEST_POSTGRES overrides the URL); skipped, saying so, when no server answers.
"""

import contextlib
import os
import subprocess
import sys
import time
import uuid

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from tiny_assets import TINY_SPACE, tiny_csv, tiny_model_dir

from autopeft.study.files import normalize_storage_url

pytestmark = pytest.mark.slow

URL = os.environ.get("AUTOPEFT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
DIRECT = normalize_storage_url(URL)  # for this test's own Optuna calls


def _server_answers() -> str | None:
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed (pip install autopeft[postgres])"
    try:
        psycopg2.connect(URL.replace("postgresql://", "postgres://"), connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        return f"no PostgreSQL server answers at {URL}: {str(exc).strip().splitlines()[0]}"
    return None


def test_two_workers_share_a_postgres_study_and_every_trial_is_recorded_once(tmp_path):
    reason = _server_answers()
    if reason:
        pytest.skip(reason)
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    name = f"autopeft-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    autopeft = [sys.executable, "-m", "autopeft"]
    search = subprocess.Popen(
        [*autopeft, "search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
         "--budget", "1.2k", "--batch-size", "8", "--trials", "8", "--max-steps", "240", "--min-steps", "80",
         "--seeds", "1", "--workers", "1", "--storage", URL, "--study-name", name, "--out", str(out), "--quiet", "--baselines", "none"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while True:  # the workers join once the search has recorded its settings in the study
            assert search.poll() is None, search.communicate()
            assert time.time() < deadline
            try:
                if "started_at" in optuna.load_study(study_name=name, storage=DIRECT).user_attrs:
                    break
            except KeyError:
                pass
            time.sleep(0.5)
        workers = [subprocess.Popen([*autopeft, "worker", "--storage", URL, "--study", name, "--quiet"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        for p in [search, *workers]:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        study = optuna.load_study(study_name=name, storage=DIRECT)
        trials = study.get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(numbers)))  # one record per trial number
        trained = [t for t in trials if t.user_attrs.get("status") in ("complete", "stopped")]
        assert len(trained) == 8  # exactly the budget: no trial lost, none counted twice
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert all(t.state == TrialState.WAITING and t.user_attrs["status"] == "queued"
                   for t in trials if t.state == TrialState.WAITING)
        pids = {t.user_attrs["worker"]["pid"] for t in trained}
        worker_pids = {p.pid for p in workers}
        assert len(pids) >= 2 and pids & worker_pids, (pids, search.pid, worker_pids)
        rows = pd.read_csv(out / "trials.csv")
        assert sorted(rows.number) == numbers
        for name_ in ("pareto.csv", "summary.json", "best/metrics.json", "settings.json"):
            assert (out / name_).is_file(), name_
        assert not (out / "study.db").exists()  # the storage is PostgreSQL, not the default SQLite file
    finally:
        for p in [search, *locals().get("workers", [])]:
            if p.poll() is None:
                p.kill()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=DIRECT)
