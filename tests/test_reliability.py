"""Reliability and safety, the fast part (issue #10): failing plans, --max-failures, stale-trial recovery,
the study lock, forbid rules and invalid plans in the proposal step, the base-model check of search-made
adapters, Ctrl-C at a step boundary, forbidden calls in the source, and where a search writes files.

Faults are injected for real: a test-only method ``test_fault`` is registered in
``autopeft.methods.REGISTRY`` (and removed again) whose module raises, returns NaN after a few steps,
raises ``torch.OutOfMemoryError`` or ``MemoryError`` in its forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
import pandas as pd
import pytest
import storage_race
import torch
import torch.nn as nn
from optuna.trial import TrialState
from tiny_assets import tiny_csv, tiny_model_dir

import autopeft
from autopeft.cli.commands.common import add_data_options
from autopeft.cli.main import main
from autopeft.core.arch import LinearSite, ModelArch, arch_from_config
from autopeft.core.errors import UserError
from autopeft.methods import REGISTRY
from autopeft.methods.base import Placement
from autopeft.peft.artifacts import load_adapter
from autopeft.peft.plan import Plan
from autopeft.searching.progress import Reporter
from autopeft.searching.proposal import propose
from autopeft.searching.settings import SearchSettings
from autopeft.testing import tiny_model
from autopeft.training.config import TrainConfig
from autopeft.training.options import DataOptions

ROOT = Path(__file__).resolve().parents[1]
FAULT_SPACE = """
decisions:
  - name: lora
    sites: [v]
    per: global
    methods:
      none: {}
      lora: {r: 2, alpha: 8}
  - name: fault
    sites: [q]
    per: global
    methods:
      none: {}
      test_fault: {kind: {choice: [raise, nan, oom, memory]}}
"""
ONLY_FAULT_SPACE = """
decisions:
  - {name: fault, sites: [q], per: global, methods: {test_fault: {kind: raise}}}
"""


# --- a method that fails on purpose ------------------------------------------------------------------
@dataclass(frozen=True)
class FaultConfig:
    kind: Literal["raise", "nan", "oom", "memory"] = "raise"


class FaultModule(nn.Module):
    def __init__(self, width: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.delta = nn.Parameter(torch.zeros(width))
        self.calls = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.kind == "raise":
            raise RuntimeError("injected fault: mat1 and mat2 shapes cannot be multiplied")
        if self.kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if self.kind == "memory":
            raise MemoryError("injected: cannot allocate array")
        # "nan": trains normally for two forward passes, then diverges
        return y + self.delta if self.calls <= 2 else y * float("nan")


class FaultMethod:
    name = "test_fault"
    summary = "test only: fails on purpose"
    placement = Placement.LINEAR
    stage = 0
    config_cls = FaultConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: FaultConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return site.width

    def build(self, config: FaultConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return FaultModule(site.width, config.kind)


@pytest.fixture
def fault_method():
    REGISTRY["test_fault"] = FaultMethod()  # type: ignore[assignment]
    try:
        yield
    finally:
        del REGISTRY["test_fault"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    torch.set_num_threads(1)
    (root / "fault.yaml").write_text(FAULT_SPACE)
    (root / "only_fault.yaml").write_text(ONLY_FAULT_SPACE)
    (root / "lora.yaml").write_text("decisions:\n  - {name: a, sites: [q, v], per: layer, methods: {none: {}, lora: {r: 2}}}\n")
    return {"model": tiny_model_dir(root / "model"), "data": tiny_csv(root / "data.csv", n=120), "root": root}


def _settings(assets, out: Path, space: str, **kw) -> SearchSettings:
    values = {"trials": 2, "train": TrainConfig(steps=6, batch_size=8, lr=1e-2), "min_steps": 6, "eta": 2.0,
              "seeds": 1, "workers": 1, "max_failures": 10, "sampler": "random", "budget": "10%", "baselines": (),
              **kw}
    return SearchSettings(data=DataOptions(model=str(assets["model"]), dataset=str(assets["data"])),
                          space=str(assets["root"] / space), out=str(out), **values)


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.syncs = 0

    def sync(self, study, total=None, refresh=True) -> None:
        self.syncs += 1
        super().sync(study, total, refresh)


@pytest.fixture(scope="module")
def fault_study(assets, tmp_path_factory):
    """A search whose queue holds one plan per fault kind, then a good plan: every fault fails its trial only."""
    from autopeft.searching.backends.local import prepare_study
    from autopeft.searching.context import build_context
    from autopeft.searching.run import run_search

    REGISTRY["test_fault"] = FaultMethod()  # type: ignore[assignment]
    try:
        out = tmp_path_factory.mktemp("faults") / "study"
        settings = _settings(assets, out, "fault.yaml")
        quiet = Reporter(quiet=True)
        ctx = build_context(settings, quiet)
        study = prepare_study(ctx, quiet)  # the warm start (smallest plan: nothing) is trial 0
        unit = {d.name: u.name for d, u in ctx.space.units(ctx.arch)}
        for kind in ("raise", "nan", "oom", "memory"):
            study.enqueue_trial({f"fault.{unit['fault']}.method": "test_fault",
                                 f"fault.{unit['fault']}.test_fault.kind": kind,
                                 f"lora.{unit['lora']}.method": "lora"})
        study.enqueue_trial({f"fault.{unit['fault']}.method": "none", f"lora.{unit['lora']}.method": "lora"})
        reporter = RecordingReporter()
        result = run_search(settings, reporter)
    finally:
        del REGISTRY["test_fault"]
    return out, result, reporter


def test_failing_trials_are_recorded_with_their_reason_and_the_search_goes_on(fault_study):
    out, result, reporter = fault_study
    trials = pd.read_csv(out / "trials.csv").set_index("number")
    failed = trials[trials.status == "failed"]
    assert list(failed.index) == [1, 2, 3, 4] and (failed.state == "fail").all()
    reasons = list(failed.reason)
    assert reasons[0].startswith("RuntimeError: injected fault")
    assert reasons[1].startswith("diverged (DivergedError: training loss is nan")
    assert reasons[2].startswith("out of memory (OutOfMemoryError: CUDA out of memory")
    assert reasons[3].startswith("out of memory (MemoryError: injected")
    # failed trials do not count: two plans trained (the warm start and the good plan after the faults)
    assert list(trials[trials.status == "complete"].index) == [0, 5]
    assert result.summary["trials"]["fail"] == 4 and (out / "best" / "adapter.safetensors").is_file()
    # the plan of a failed trial was removed from the shared model: the good plan's adapter holds only LoRA
    state = load_adapter(out / "trials" / "0005")[1]
    assert not any("test_fault" in k for k in state) and any(".lora." in k for k in state)
    # the live status was recounted from the study after every tell
    status = reporter.status()
    assert reporter.syncs >= 6 and (status.done, status.failed) == (2, 4)


def test_max_failures_stops_a_search_that_only_fails(assets, tmp_path, capsys, fault_method):
    out = tmp_path / "study"
    code = main(["search", "--model", str(assets["model"]), "--dataset", str(assets["data"]), "--space",
                 str(assets["root"] / "only_fault.yaml"), "--out", str(out), "--budget", "10%", "--trials", "4",
                 "--steps", "4", "--batch-size", "8", "--workers", "1", "--max-failures", "3", "--quiet", "--baselines", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("error: 3 trials failed (last: RuntimeError: injected fault") \
        and "raise --max-failures" in err[0]
    trials = pd.read_csv(out / "trials.csv")
    assert (trials.status == "failed").sum() == 3


# --- stale trials -------------------------------------------------------------------------------------
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _running(study: optuna.Study, status: str | None, stamp: dict | None) -> int:
    trial = study.ask()
    if status:
        trial.set_user_attr("status", status)
    if stamp:
        trial.set_user_attr("worker", stamp)
    return trial.number


def test_stale_trials_are_found_by_pid_or_heartbeat_and_requeued_or_failed(tmp_path):
    import socket

    from autopeft.searching.liveness import claim_interrupted, is_stale, recover_stale

    # (a SQLite storage, as in a search: Optuna's in-memory storage mis-filters WAITING trials)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 'study.db'}")
    now = time.time()
    here, dead = socket.gethostname(), _dead_pid()
    killed = _running(study, "running", {"host": here, "pid": dead, "claimed": now, "beat": now})
    # killed after recording its outcome, before telling Optuna: resumed too, not lost
    untold = _running(study, "complete", {"host": here, "pid": dead, "claimed": now, "beat": now})
    remote_dead = _running(study, "running", {"host": "elsewhere", "pid": 1, "claimed": now, "beat": now})
    remote_alive = _running(study, "running", {"host": "elsewhere", "pid": 1, "claimed": now, "beat": now})
    alive = _running(study, "running", {"host": here, "pid": os.getpid(), "claimed": now, "beat": now})
    sampling = _running(study, None, {"host": here, "pid": dead, "claimed": now, "beat": now})
    trials = study.get_trials(deepcopy=False)
    assert not is_stale(trials[remote_dead]) and is_stale(trials[remote_dead], now=now + 500, grace_s=120)
    # a stamp from before the trial was (re)claimed belongs to a previous owner: it does not count
    old = {"host": "elsewhere", "pid": 1, "claimed": now - 999, "beat": now - 999}
    study._storage.set_trial_user_attr(trials[remote_alive]._trial_id, "worker", old)
    assert not is_stale(study.get_trials(deepcopy=False)[remote_alive])
    time.sleep(1.5)  # remote_dead misses its beats; the live workers beat
    for number, host, pid in ((remote_alive, "elsewhere", 1), (alive, here, os.getpid())):
        fresh = time.time()
        study._storage.set_trial_user_attr(trials[number]._trial_id, "worker",
                                           {"host": host, "pid": pid, "claimed": fresh, "beat": fresh})
    assert sorted(recover_stale(study, grace_s=1.0)) == sorted([killed, untold, remote_dead, sampling])
    trials = study.get_trials(deepcopy=False)
    assert [trials[n].state for n in (killed, untold, remote_dead)] == [TrialState.WAITING] * 3
    assert trials[killed].user_attrs["interruptions"] == 1
    assert trials[sampling].state == TrialState.FAIL and "interrupted" in trials[sampling].user_attrs["reason"]
    assert trials[alive].state == trials[remote_alive].state == TrialState.RUNNING
    claimed = {claim_interrupted(study).number for _ in range(3)}
    assert claimed == {killed, untold, remote_dead} and claim_interrupted(study) is None


# --- the study lock -----------------------------------------------------------------------------------
def test_a_second_search_on_the_same_directory_is_refused_until_the_holder_dies(tmp_path):
    from autopeft.study.lock import StudyLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from autopeft.study.lock import StudyLock;"
         f"StudyLock(Path({str(tmp_path)!r})).acquire(); print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another autopeft search \(pid {holder.pid} on .*is using study "
                                            r"directory.*join it deliberately as a worker: autopeft worker"):
            StudyLock(tmp_path, "autopeft worker --storage X --study Y").acquire()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, the stale file does not block
        holder.wait()
    with StudyLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()


# --- the proposal step: forbid rules, invalid plans -----------------------------------------------------
def _propose(assets, tmp_path, space_text: str, method_of):
    """Enqueue the plan choosing ``method_of(decision name)`` in every unit, and propose it."""
    from autopeft.searching.context import build_context, open_study

    (tmp_path / "space.yaml").write_text(space_text)
    settings = SearchSettings(data=DataOptions(model=str(assets["model"]), dataset=str(assets["data"])),
                              space=str(tmp_path / "space.yaml"), out=str(tmp_path / "study"), budget="50%")
    ctx = build_context(settings, Reporter(quiet=True))
    study = open_study(ctx)
    study.enqueue_trial({f"{d.name}.{u.name}.method": method_of(d.name) for d, u in ctx.space.units(ctx.arch)})
    trial = study.ask()
    return propose(ctx, study, trial), study, ctx


def test_proposal_respects_forbid_rules_and_enqueues_an_allowed_repair(assets, tmp_path):
    space = """
decisions:
  - {name: a, sites: [q], per: layer, methods: {none: {}, lora: {r: 2}}}
  - {name: b, sites: [down], per: layer, methods: {none: {}, adapter: {size: 4}}}
forbid:
  - {together: [lora, adapter], in: layer}
"""
    proposal, study, ctx = _propose(assets, tmp_path, space, {"a": "lora", "b": "adapter"}.get)
    assert proposal is None  # lora and an adapter in every layer: never trained
    frozen = study.trials[0]
    assert frozen.state == TrialState.PRUNED and frozen.user_attrs["status"] == "infeasible"
    assert "forbidden: lora + adapter in layer" in frozen.user_attrs["reason"]
    repaired = study.ask()
    assert repaired.user_attrs["repaired_from"] == frozen.number
    fixed = propose(ctx, study, repaired)
    assert fixed is not None
    methods_by_layer: dict[int, set[str]] = {}
    for entry in fixed.plan.entries:
        for layer in entry.layers:
            methods_by_layer.setdefault(layer, set()).add(entry.method)
    assert all(m != {"lora", "adapter"} for m in methods_by_layer.values())


def test_two_prefix_type_methods_on_one_layer_are_refused_by_the_plan_and_repaired_in_a_search(assets, tmp_path):
    arch = arch_from_config(tiny_model("bert").config)
    plan = Plan.from_dict({"entries": [{"method": "prefix", "layers": [0, 1], "sites": ["attn"], "options": {"length": 2}},
                                       {"method": "ptuning_v2", "layers": [1], "sites": ["attn"], "options": {"length": 2}}]})
    with pytest.raises(UserError, match=r"two prefix-type methods \('prefix' and 'ptuning_v2'\) on layer 1"):
        plan.num_params(arch)
    space = """
decisions:
  - {name: p, sites: [prefix], per: global, methods: {none: {}, prefix: {length: 2}}}
  - {name: d, sites: [prefix], per: global, methods: {none: {}, ptuning_v2: {length: 2}}}
"""
    # a space offering both in one layer: the implicit forbid rule marks the sample infeasible, and the
    # enqueued repair holds at most one of them
    proposal, study, ctx = _propose(assets, tmp_path, space, {"p": "prefix", "d": "ptuning_v2"}.get)
    assert proposal is None
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "infeasible"
    assert "forbidden: prefix + ptuning_v2" in trial.user_attrs["reason"], trial.user_attrs["reason"]
    repaired = study.ask()
    assert repaired.user_attrs["repaired_from"] == trial.number
    fixed = propose(ctx, study, repaired)
    assert fixed is not None and len({e.method for e in fixed.plan.entries} & {"prefix", "ptuning_v2"}) <= 1


# --- adapters made by a search know their base model --------------------------------------------------
def test_search_adapters_refuse_a_different_base_model(fault_study, assets, tmp_path, capsys):
    out = fault_study[0]
    config = json.loads((out / "best" / "autopeft_config.json").read_text())
    assert config["base_fingerprint"]["base_params"] == config["base_params"]
    # the same weights under another name are accepted; other weights are refused, naming both models
    other = tmp_path / "other-model"
    shutil.copytree(assets["model"], other)
    tiny_model("bert", num_labels=2, seed=1).save_pretrained(other)
    adapter = tmp_path / "adapter"
    shutil.copytree(out / "best", adapter)
    config["data"]["model"] = str(other)
    (adapter / "autopeft_config.json").write_text(json.dumps(config))
    assert main(["eval", str(adapter)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: {re.escape(str(adapter))} was made for base model '.*' \(bert, \d+ params\), not "
                        r"for this model '.*' \(bert, \d+ params\) \(different weights\); load it onto .*", err), err
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(UserError, match="different weights"):
        autopeft.load_adapter(AutoModelForSequenceClassification.from_pretrained(other), out / "best")
    handle = autopeft.load_adapter(AutoModelForSequenceClassification.from_pretrained(assets["model"]), out / "best")
    handle.remove()


# --- Ctrl-C stops at a step boundary -------------------------------------------------------------------
def test_interrupt_saves_a_checkpoint_at_a_step_boundary_that_resumes_bitwise(assets, tmp_path):
    from autopeft.searching import interrupt
    from autopeft.searching.rung_run import train_through_rungs
    from autopeft.training.pipeline import prepare
    from autopeft.training.trial_run import Checkpoint

    prepared = prepare(DataOptions(model=str(assets["model"]), dataset=str(assets["data"])))
    plan = Plan.from_dict({"entries": [{"method": "lora", "layers": [0, 1], "sites": ["q", "v"], "options": {"r": 2}}]})
    config = TrainConfig(steps=12, batch_size=8, lr=1e-2, seed=3)
    reference = train_through_rungs(prepared.session, plan, config, (6, 12), tmp_path / "ref.safetensors",
                                    on_rung=lambda r, m: True)

    def press_ctrl_c_at_step_8(step: int, loss: float) -> None:
        if step == 8:
            interrupt.request()

    checkpoint = tmp_path / "ckpt.safetensors"
    try:
        with pytest.raises(interrupt.Interrupted):
            train_through_rungs(prepared.session, plan, config, (6, 12), checkpoint, on_rung=lambda r, m: True,
                                progress=press_ctrl_c_at_step_8)
    finally:
        interrupt._requested.clear()
    assert Checkpoint.load(checkpoint).step == 8
    resumed = train_through_rungs(prepared.session, plan, config, (6, 12), checkpoint, on_rung=lambda r, m: True)
    assert resumed.resumed_from == 8 and resumed.rung_metrics == {12: reference.rung_metrics[12]}
    for key, value in reference.outcome.state.items():
        assert torch.equal(value, resumed.outcome.state[key]), key


# --- safe formats --------------------------------------------------------------------------------------
FORBIDDEN = [
    (r"\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|\bdill\b|\bjoblib\b", "pickle"),
    (r"\btorch\.load\(", "torch.load"),
    (r"\byaml\.(?:unsafe_)?load\(|\byaml\.load_all\(|Loader=yaml\.(?:Full|Unsafe)?Loader", "yaml.load (use safe_load)"),
    (r"trust_remote_code\s*=\s*True", "trust_remote_code=True"),
    (r"allow_pickle\s*=\s*True|weights_only\s*=\s*False", "pickle through numpy/torch"),
    (r"(?<![\w.])(?:eval|exec)\(", "eval/exec"),
    (r"\bshell\s*=\s*True", "subprocess with a shell"),
]


def test_the_source_uses_only_safe_formats():
    files = [p for d in ("autopeft", "methods", "kernels", "search_spaces") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            found += [f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}"
                      for pattern, what in FORBIDDEN if re.search(pattern, code)]
    assert not found, "\n".join(found)
    # trust_remote_code reaches transformers only from the --trust-remote-code flag (default off)
    uses = [p.relative_to(ROOT) for p in files if "trust_remote_code=" in p.read_text()]
    assert uses and all("trust_remote_code=trust_remote_code" in (ROOT / p).read_text()
                        or "trust_remote_code=args.trust_remote_code" in (ROOT / p).read_text()
                        or "trust_remote_code=options.trust_remote_code" in (ROOT / p).read_text()
                        or "trust_remote_code=bool(" in (ROOT / p).read_text() for p in uses), uses
    parser = argparse.ArgumentParser()
    add_data_options(parser)
    assert parser.parse_args([]).trust_remote_code is False


# --- where a search writes --------------------------------------------------------------------------------
def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_a_search_writes_only_into_its_study_and_cache_directories(assets, tmp_path):
    dirs = {name: tmp_path / name for name in ("cwd", "home", "cache", "hf", "tmp")}
    for d in dirs.values():
        d.mkdir()
    inputs = shutil.copytree(assets["root"], tmp_path / "inputs")
    before = _files(inputs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "TRANSFORMERS_", "TORCH"))}
    env.update(HOME=str(dirs["home"]), AUTOPEFT_CACHE=str(dirs["cache"]), HF_HOME=str(dirs["hf"]),
               TMPDIR=str(dirs["tmp"]), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "autopeft", "search", "--model", str(inputs / "model"), "--dataset",
               str(inputs / "data.csv"), "--space", str(inputs / "lora.yaml"),
               "--out", "runs/x", "--budget", "10%", "--trials", "2", "--steps", "4", "--min-steps", "4",
               "--seeds", "2", "--batch-size", "8", "--workers", "2", "--quiet", "--baselines", "none"]
    result = subprocess.run(command, cwd=dirs["cwd"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert all(f.startswith("runs/x/") for f in _files(dirs["cwd"])), _files(dirs["cwd"])
    assert (dirs["cwd"] / "runs" / "x" / "summary.json").is_file()
    assert not _files(dirs["home"]) and not _files(dirs["tmp"])  # caches went where they were pointed
    assert _files(inputs) == before  # nothing next to the model or the data
    assert _files(dirs["cache"]) or _files(dirs["hf"])  # the token cache / datasets cache were used


# --- bad input: the list in one table ----------------------------------------------------------
def _bad_inputs(assets, adapter: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a regex the single error line must match). Files are written on demand."""
    model, data = str(assets["model"]), str(assets["data"])
    search = ["search", "--model", model, "--dataset", data, "--space", str(assets["root"] / "lora.yaml"),
              "--out", str(tmp / "never"), "--trials", "1", "--steps", "2"]
    (tmp / "syntax.yaml").write_text("decisions:\n  - name: a\n    sites: [q, v\n")
    (tmp / "unknown_key.yaml").write_text("decisions:\n  - {name: a, sites: [q], methods: {lora: {rank: 2}}}\n")
    (tmp / "bad_site.yaml").write_text("decisions:\n  - {name: a, sites: [gate], methods: {lora: {r: 2}}}\n")
    (tmp / "inverted.yaml").write_text("decisions:\n  - {name: a, sites: [q], methods: {lora: {r: {int: [8, 2]}}}}\n")
    (tmp / "empty_choice.yaml").write_text("decisions:\n  - {name: a, sites: [q], methods: {lora: {r: {choice: []}}}}\n")
    (tmp / "forced.yaml").write_text("decisions:\n  - {name: a, sites: [q], per: global, methods: {lora: {r: 2}}}\n")
    pd.DataFrame({"text": ["a b"] * 30, "label": ["x"] * 30}).to_csv(tmp / "one_class.csv", index=False)
    pd.DataFrame({"text": [], "label": []}).to_csv(tmp / "empty.csv", index=False)
    plan = json.loads((adapter / "plan.json").read_text())
    (tmp / "newer_plan.json").write_text(json.dumps({**plan, "autopeft_plan": 99}))
    truncated = tmp / "truncated"
    shutil.copytree(adapter, truncated)
    weights = (truncated / "adapter.safetensors").read_bytes()
    (truncated / "adapter.safetensors").write_bytes(weights[: len(weights) // 2])
    newer = tmp / "newer"
    shutil.copytree(adapter, newer)
    config = json.loads((newer / "autopeft_config.json").read_text())
    (newer / "autopeft_config.json").write_text(json.dumps({**config, "autopeft_adapter": 99}))
    with_space = [*search[:5], *search[7:]]
    return {
        "yaml syntax": ([*with_space, "--space", str(tmp / "syntax.yaml")], r"syntax\.yaml:\d+:\d+: invalid YAML"),
        "unknown key": ([*with_space, "--space", str(tmp / "unknown_key.yaml")], r"unknown_key\.yaml.*'rank'"),
        "unknown site": ([*with_space, "--space", str(tmp / "bad_site.yaml")], r"gate not in bert models; its linear"),
        "inverted range": ([*with_space, "--space", str(tmp / "inverted.yaml")], r"inverted\.yaml.*\b8\b.*\b2\b"),
        "empty choice": ([*with_space, "--space", str(tmp / "empty_choice.yaml")], r"empty_choice\.yaml.*(empty|at least)"),
        "budget 0.5": ([*search, "--budget", "0.5"], r"budget"),
        "budget 5%%": ([*search, "--budget", "5%%"], r"budget.*5%%"),
        "budget -1%": ([*search, "--budget=-1%"], r"budget.*-1%"),
        "budget abc": ([*search, "--budget", "abc"], r"budget.*abc"),
        "budget below every plan": ([*with_space, "--space", str(tmp / "forced.yaml"), "--budget", "3"], r"smallest feasible budget is \d+"),
        "memory below the model": ([*search, "--budget", "10%", "--memory", "1KiB"], r"--memory 1KiB is below"),
        "missing data file": ([*search[:3], "--dataset", str(tmp / "nope.csv"), *search[5:]], r"not found.*nope\.csv"),
        "unknown column": ([*search, "--text-column", "body"], r"'body'.*(text|label)"),
        "empty dataset": ([*search[:3], "--dataset", str(tmp / "empty.csv"), *search[5:]], r"empty\.csv"),
        "single class": ([*search[:3], "--dataset", str(tmp / "one_class.csv"), *search[5:]], r"single class"),
        "unknown model": (["search", "--model", "no-such-model-alias", *search[3:]], r"no-such-model-alias"),
        "newer plan": (["train", "--model", model, "--dataset", data, "--plan", str(tmp / "newer_plan.json"),
                        "--steps", "2", "--out", str(tmp / "t")], r"newer than this autopeft"),
        "truncated weights": (["eval", str(truncated)], r"corrupted or truncated"),
        "newer adapter": (["eval", str(newer)], r"newer than this autopeft"),
    }


def test_every_bad_input_is_one_error_line_with_exit_code_2(fault_study, assets, tmp_path, capsys):
    cases = _bad_inputs(assets, fault_study[0] / "best", tmp_path)
    wrong = {}
    for i, (name, (argv, pattern)) in enumerate(cases.items()):
        code = main([*argv, "--out", str(tmp_path / f"out-{i}")] if argv[0] == "search" else argv)
        err = capsys.readouterr().err.strip()
        lines = [x for x in err.splitlines() if not x.startswith("[autopeft]")]
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or not re.search(pattern, lines[0]):
            wrong[name] = (code, err[-500:])
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    assert not list(tmp_path.glob("out-*/**/*.safetensors"))  # nothing was trained


def test_a_tokenizer_without_a_pad_token_is_handled(assets, tmp_path):
    from transformers import AutoTokenizer

    from autopeft.training.models import load_model

    model_dir = shutil.copytree(assets["model"], tmp_path / "no-pad")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token is None
    loaded = load_model(str(model_dir), "classification")
    assert loaded.tokenizer.pad_token is not None
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id


def test_a_worker_killed_while_sampling_is_found_dead_at_once_not_after_the_grace_period(tmp_path):
    from autopeft.searching.liveness import GRACE_S, is_stale

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(directions=["maximize", "minimize"], storage=url, study_name="s")
    # another process claims a trial (as Worker.run does: ask, then stamp at once) and dies before training
    code = ("import optuna; from autopeft.searching.liveness import stamp_claim; "
            f"s = optuna.load_study(study_name='s', storage='{url}'); t = s.ask(); stamp_claim(s, t._trial_id)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    trial = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)[0]
    assert trial.state == TrialState.RUNNING and "status" not in trial.user_attrs
    assert is_stale(trial, grace_s=GRACE_S)  # its pid is gone: no need to wait GRACE_S


@pytest.mark.slow  # spawns 4 processes
def test_processes_opening_one_new_storage_at_once_all_succeed(tmp_path):
    # a search, its second worker and `autopeft pareto` may create the same new database at the same moment
    # (Optuna inserts its schema version without a lock: the loser saw an IntegrityError and the search exited)
    import concurrent.futures
    import multiprocessing
    for round_ in range(2):  # without the retry, the first round already failed (4 processes, 2 cores)
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
            # warm the pool: four tasks at once start four workers, each imports before the start time
            warm = [pool.submit(storage_race.ready) for _ in range(4)]
            assert all(f.result() for f in warm)
            start = time.time() + 2.0
            outcomes = list(pool.map(storage_race.open_when_told, [url] * 4, [start] * 4))
        assert outcomes == ["ok"] * 4


def test_a_lost_schema_race_is_retried_and_other_storage_errors_are_not(tmp_path, monkeypatch):
    import sqlalchemy.exc

    from autopeft.core.errors import UserError
    from autopeft.study import files
    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(url, **kwargs)

    monkeypatch.setattr(files.optuna.storages, "RDBStorage", racing)
    assert files.open_storage(f"sqlite:///{tmp_path / 'a.db'}") is not None and len(calls) == 2

    def broken(url, **kwargs):
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("unable to open database file"))

    calls.clear()
    monkeypatch.setattr(files.optuna.storages, "RDBStorage", broken)
    with pytest.raises(UserError, match="unable to open database file"):
        files.open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    assert len(calls) == 1
