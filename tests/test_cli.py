"""CLI behaviour on bad input: one error line, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from autopeft.cli.main import main
from autopeft.core.errors import UserError
from autopeft.core.units import parse_duration


def _run(*args):
    return subprocess.run([sys.executable, "-m", "autopeft", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["search", "--budget", "abc"], "is not a budget"),
    (["search", "--space", "nope"], "unknown search space"),
    (["search", "--dataset", "missing.csv"], "not found"),
    (["search", "--model", "./no-such-model"], "model folder not found"),
    (["search", "--trials", "0"], "--trials"),
    (["search", "--time-budget", "soon"], "not a duration"),
    (["eval", "/nonexistent"], "not an adapter directory"),
    (["pareto", "/nonexistent"], "not a study directory"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, args, message):
    # in this process (a subprocess per case cost ~8 s of imports each); the entry point's own handling
    # is checked once, in a real process, below
    code = main([*args, *(["--out", str(tmp_path / "o")] if args[0] == "search" else [])])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines[-1].startswith("error: ") and message in lines[-1], stderr


def test_python_m_autopeft_prints_one_error_line_without_a_traceback(tmp_path):
    result = _run("search", "--budget", "abc", "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and "is not a budget" in lines[-1], result.stderr


def test_unknown_flag_is_argparse_error():
    with pytest.raises(SystemExit) as exc:
        main(["search", "--no-such-flag"])
    assert exc.value.code == 2


def test_durations():
    assert parse_duration("90s") == 90
    assert parse_duration("20m") == 1200
    assert parse_duration("1.5h") == 5400
    assert parse_duration("30") == 30
    with pytest.raises(UserError):
        parse_duration("a while")


def test_methods_lists_every_registered_method(capsys):
    import json

    from autopeft.methods import REGISTRY

    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(REGISTRY)
    lora = next(r for r in rows if r["name"] == "lora")
    assert {o["name"]: o["default"] for o in lora["options"]}["r"] == 8
    assert main(["methods"]) == 0
    assert "lora" in capsys.readouterr().out


def test_plan_writes_a_valid_single_method_plan(tmp_path):
    from autopeft.core.arch import arch_from_config
    from autopeft.peft.plan import Plan
    from autopeft.training.models import load_config

    out = tmp_path / "p.json"
    assert main(["plan", "--method", "lora", "--set", "r=8", "--sites", "q,v", "--layers", "0-5", "--out", str(out)]) == 0
    plan = Plan.load(out)
    assert plan.num_params(arch_from_config(load_config("minilm"))) == 6 * 2 * 8 * (384 + 384)
    assert main(["plan", "--method", "prefix", "--set", "length=4", "--layers", "-1", "--out", str(out)]) == 0
    assert Plan.load(out).entries[0].layers == (-1,)


@pytest.mark.parametrize(("args", "message"), [
    (["plan", "--method", "lora", "--set", "rank=8", "--sites", "q"], "has no option 'rank'"),
    (["plan", "--method", "lora", "--set", "r=8"], "--sites is required"),
    (["plan", "--method", "lora", "--sites", "qq"], "site 'qq' does not exist"),
    (["plan", "--method", "nope", "--sites", "q"], "unknown method 'nope'"),
    (["plan", "--method", "lora", "--sites", "q", "--layers", "9"], "out of range"),
    (["train", "--plan", "/nonexistent/plan.json"], "plan file not found"),
])
def test_plan_and_train_mistakes(capsys, args, message):
    code = main(args)  # in this process, as above
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert message in stderr.strip().splitlines()[-1], stderr
