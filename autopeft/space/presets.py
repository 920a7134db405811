"""Presets shipped in ``search_spaces/`` (package ``autopeft.search_spaces``) and loading by name or path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from autopeft.core.errors import UserError

from .parse import parse_space
from .search_space import SearchSpace

PRESETS_PACKAGE = "autopeft.search_spaces"


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> str:
    return str(resources.files(PRESETS_PACKAGE).joinpath(f"{name}.yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """A preset name (see :func:`list_presets`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"search space file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read search space file {path}: {exc}") from None
        return parse_space(text, str(path), path.stem)
    if name_or_path in list_presets():
        text = resources.files(PRESETS_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        return parse_space(text, f"search_spaces/{name_or_path}.yaml", name_or_path)
    raise UserError(f"unknown search space '{name_or_path}'; presets: {', '.join(list_presets())}, or a .yaml file")
