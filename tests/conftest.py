"""Fixtures shared by test modules."""

import pytest
import torch
from tiny_assets import TINY_SPACE, tiny_csv, tiny_model_dir


@pytest.fixture(scope="module")
def tiny_search_assets(tmp_path_factory):
    """A tiny local model, a 240-row csv and the tiny LoRA space, for end-to-end searches."""
    root = tmp_path_factory.mktemp("assets")
    torch.set_num_threads(1)  # tiny shapes: one thread is fastest, and immune to a busy machine
    (root / "space.yaml").write_text(TINY_SPACE)
    return tiny_model_dir(root / "model"), tiny_csv(root / "data.csv", n=240), root / "space.yaml"
