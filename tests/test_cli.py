"""CLI behaviour on bad input: one error line, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from autopeft.cli import main, parse_duration
from autopeft.errors import UserError


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
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    result = _run(*args, *(["--out", str(tmp_path / "o")] if args[0] == "search" else []))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr


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
