"""Start-up: the commands that need only configs, counts and search spaces import neither torch nor transformers.

Each command runs in a fresh interpreter (``autopeft.cli.main.main``, as the ``autopeft`` script runs it),
which then reports the heavy libraries in ``sys.modules``. This checks imports, not timings: those are
measured by ``studies/startup/measure.py``. ``estimate`` is not here: the memory model imports torch, and
reading a config with transformers' config classes imports it too (see studies/startup/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autopeft.space import list_presets

HEAVY = {"torch", "transformers"}

# Run in a fresh interpreter as ``python -c CODE OUT ARGS...``, then write its top-level modules to OUT.
CLI = """
import sys
from autopeft.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
assert code == 0, code
"""
COUNT_EVERY_METHOD = """
from autopeft.methods import REGISTRY
from autopeft.peft.plan import Plan
from autopeft.space.shapes import config_file_shapes

arch, _ = config_file_shapes("minilm")
for name, method in REGISTRY.items():
    plan = Plan.from_dict({"entries": [{"method": name, "layers": [0], "sites": list(method.sites or ["q"])}]})
    assert plan.num_params(arch) > 0, name
"""
REPORT = """
import json, sys
with open(sys.argv[1], "w") as f:
    json.dump(sorted(m for m in sys.modules if "." not in m), f)
"""


def heavy_imports(tmp_path, code: str, *args: str) -> set[str]:
    """The heavy libraries in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", code + REPORT, str(out), *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return HEAVY & set(json.loads(out.read_text()))


@pytest.mark.parametrize("argv", [["--help"], ["methods"], ["methods", "--json"], ["spaces"], ["spaces", "--json"]],
                         ids=" ".join)
def test_catalogue_commands_import_no_torch(argv, tmp_path):
    assert heavy_imports(tmp_path, CLI, *argv) == set()


@pytest.mark.parametrize("preset", list_presets())
def test_space_check_on_a_model_config_imports_no_torch(preset, tmp_path):
    assert heavy_imports(tmp_path, CLI, "space", "check", preset, "--json") == set()


def test_space_check_with_a_budget_imports_no_torch(tmp_path):
    assert heavy_imports(tmp_path, CLI, "space", "check", "hybrid", "--budget", "0.5%", "--samples", "200") == set()


def test_the_method_registry_counts_without_torch(tmp_path):
    assert heavy_imports(tmp_path, COUNT_EVERY_METHOD) == set()
