"""`methods/`, `kernels/` and `search_spaces/` install as autopeft.methods / .kernels / .search_spaces,
both from the editable install and from a built wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = (
    "import autopeft, autopeft.methods, autopeft.kernels; from autopeft.space import list_presets; "
    "assert 'hybrid' in list_presets(); assert {'lora', 'adapter', 'prefix'} <= set(autopeft.methods.REGISTRY); "
    "print(autopeft.__file__); print(autopeft.methods.__file__)"
)


def test_editable_install_maps_top_level_folders():
    import autopeft.kernels
    import autopeft.methods

    assert Path(autopeft.methods.__file__).parent == ROOT / "methods"
    assert Path(autopeft.kernels.__file__).parent == ROOT / "kernels"


@pytest.mark.slow
def test_wheel_contains_and_imports_the_mapped_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("autopeft-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("autopeft/methods/lora.py", "autopeft/kernels/__init__.py",
                     "autopeft/search_spaces/hybrid.yaml", "autopeft/cli/main.py"):
        assert required in names, required
    assert not any(n.startswith(("methods/", "kernels/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # run outside the repository with the extracted wheel first on the path
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(site) in result.stdout.splitlines()[0]
    assert str(site) in result.stdout.splitlines()[1]
