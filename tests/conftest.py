"""Shared fixtures: one tiny sample dataset per test session, built through the real stages."""

import pytest

from fde.artifacts import Artifacts


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Artifacts:
    """Raw Kaggle-format CSVs and images at the tiny scale (seed 0)."""
    import sample_data

    root = tmp_path_factory.mktemp("tiny")
    art = Artifacts(root / "data", root / "images")
    sample_data.generate(art, scale="tiny", seed=0, show_progress=False)
    return art


@pytest.fixture(scope="session")
def tiny(tiny_raw) -> Artifacts:
    """The tiny sample after data_optim.py and split_data.py."""
    import data_optim
    import split_data

    data_optim.optimize(tiny_raw, show_progress=False)
    split_data.split(tiny_raw)
    return tiny_raw
