"""Optional parts fail politely: a missing optional package is one ``error:`` line naming the extra to
install (``pip install 'autopeft[ray]'``), before anything is loaded or written.

A package is made missing the standard way: ``sys.modules[name] = None`` makes ``import name`` raise
ImportError and ``importlib.util.find_spec(name)`` return None.
"""

from __future__ import annotations

import sys

import pytest

from autopeft.cli.main import main
from autopeft.core.errors import UserError
from autopeft.core.extras import EXTRAS, installed, require


def _missing(monkeypatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def _one_line_error(capsys, argv: list[str], extra: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"pip install 'autopeft[{extra}]'" in err, err


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_require_names_the_extra_of_each_missing_package(monkeypatch, extra):
    assert installed(extra)  # the development install has every extra
    require(extra)
    _missing(monkeypatch, *EXTRAS[extra].modules)
    assert not installed(extra)
    with pytest.raises(UserError, match=rf"pip install 'autopeft\[{extra}\]'"):
        require(extra)


@pytest.mark.parametrize(("extra", "options"), [
    ("ray", ["--backend", "ray"]),
    ("quant", ["--quantize", "nf4"]),
    ("postgres", ["--storage", "postgresql://nobody@127.0.0.1:5432/test"]),
])
def test_search_refuses_a_missing_extra_before_loading_anything(monkeypatch, capsys, tmp_path, extra, options):
    _missing(monkeypatch, *EXTRAS[extra].modules)
    out = tmp_path / "study"
    _one_line_error(capsys, ["search", *options, "--out", str(out)], extra)
    assert not out.exists()


def test_peft_export_refuses_a_missing_peft_before_writing(monkeypatch, capsys, tmp_path):
    _missing(monkeypatch, "peft")
    out = tmp_path / "exported"
    _one_line_error(capsys, ["export", str(tmp_path / "any-adapter"), "--format", "peft", "--out", str(out)], "peft")
    assert not out.exists()


def test_triton_kernels_refuse_a_missing_triton(monkeypatch):
    import torch

    from autopeft.kernels import _triton, dispatch

    _missing(monkeypatch, "triton")
    _triton.triton_installed.cache_clear()
    monkeypatch.setenv(dispatch.ENV, "triton")
    try:
        with pytest.raises(UserError, match=r"pip install 'autopeft\[kernels\]'"):
            dispatch.backend(torch.zeros(2))
    finally:
        _triton.triton_installed.cache_clear()
