"""Packaging: every folder with Python files is a package the wheel holds, and a built wheel installed
NON-editable into a fresh virtual environment works: ``--help``, ``methods``, a tiny real ``search`` and
``eval`` (an editable install, which every developer and CI use, would hide a folder left out of the wheel).

The fresh environment reuses the heavy dependencies already installed (a ``.pth`` line pointing at this
interpreter's site-packages), so the test installs only autopeft itself and stays fast.
"""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = {"autopeft": "autopeft", "methods": "autopeft/methods", "kernels": "autopeft/kernels",
                  "search_spaces": "autopeft/search_spaces"}


def test_editable_install_maps_top_level_folders():
    import autopeft.kernels
    import autopeft.methods

    assert Path(autopeft.methods.__file__).parent == ROOT / "methods"
    assert Path(autopeft.kernels.__file__).parent == ROOT / "kernels"


def test_every_folder_with_python_files_is_a_package():
    """setup.py finds packages by their ``__init__.py``: a folder without one would be left out of the wheel."""
    missing = [str(folder.relative_to(ROOT)) for top in SOURCE_FOLDERS for folder in [ROOT / top, *(ROOT / top).rglob("*")]
               if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
               and not (folder / "__init__.py").is_file()]
    assert not missing, missing


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return next(dist.glob("autopeft-*.whl"))


@pytest.mark.slow
def test_wheel_holds_every_module_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{target}/{path.relative_to(ROOT / top)}" for top, target in SOURCE_FOLDERS.items()
                for path in (ROOT / top).rglob("*") if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts}
    assert not expected - names, sorted(expected - names)
    assert not any(n.startswith(("methods/", "kernels/", "tests/", "studies/")) for n in names)


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_searches_and_evaluates(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    # the heavy dependencies come from this environment: a plain path line (its .pth files, such as the
    # editable install's finder, are not run, so autopeft can only come from the wheel)
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, timeout=600)
    work = tmp_path / "work"  # outside the repository: nothing can be imported from the source tree
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}:/usr/bin:/bin")

    def run(*args: str, timeout: int = 600) -> str:
        result = subprocess.run([str(venv / "bin" / "autopeft"), *args], cwd=work, env=env, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-4000:])
        return result.stdout

    where = subprocess.run([str(python), "-c", "import autopeft, autopeft.methods; print(autopeft.__file__); "
                            "print(autopeft.methods.__file__)"], cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(fresh_site)) for line in where.stdout.split()), where.stdout
    assert "search" in run("--help")
    assert "lora" in run("methods")
    subprocess.run([str(python), "-c", "from pathlib import Path; from autopeft.testing import TINY_SPACE, tiny_csv, "
                    "tiny_model_dir; tiny_model_dir(Path('model')); tiny_csv(Path('data.csv')); "
                    "Path('space.yaml').write_text(TINY_SPACE)"], cwd=work, env=env, check=True, timeout=300)
    run("search", "--model", "model", "--dataset", "data.csv", "--space", "space.yaml", "--budget", "1.2k",
        "--batch-size", "8", "--trials", "3", "--max-steps", "30", "--min-steps", "30", "--seeds", "1",
        "--workers", "1", "--out", "study", "--quiet")
    evaluated = json.loads(run("eval", "study/best", "--split", "test", "--json"))
    best = json.loads((work / "study" / "best" / "metrics.json").read_text())
    assert evaluated["split"] == "test" and {k: evaluated[k] for k in best["test"]} == best["test"]
    # what a user ships: the peft export of the pick loads with PeftModel.from_pretrained from the wheel too
    run("export", "study", "--format", "peft", "--out", "exported")
    loaded = subprocess.run([str(python), "-c", "from peft import PeftModel; from transformers import "
                             "AutoModelForSequenceClassification as A; m = PeftModel.from_pretrained("
                             "A.from_pretrained('model'), 'exported'); print(type(m).__name__)"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and "PeftModel" in loaded.stdout, loaded.stderr[-3000:]
    assert (work / "exported" / "README.md").is_file()  # the model card
