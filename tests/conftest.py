"""Shared fixtures, each built once per test session through the real stages.

- tiny_raw / tiny: the tiny generated sample, raw and after data_optim.py + split_data.py;
- pipeline: a copy of it with every artifact (visual features, twins, a trained ranker, final.py's results);
- offline: no network and an empty torch hub cache;
- local_ray: one Ray on this machine (2 CPUs, loopback only), shut down at the end.

The hand-made shop of the exact-value tests is in shop.py; drawn product photos in photos.py.
"""
import shutil
import socket

import pytest

from fde.artifacts import Artifacts

SLOW_FIXTURES = {"pipeline", "tiny_run"}  # whole runs of the stages: the first test that asks builds one
RAY_FIXTURES = {"local_ray", "ray_tasks"}


def pytest_collection_modifyitems(items):
    """Markers that follow from the fixtures a test uses, so a new test cannot forget them."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)


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


@pytest.fixture(scope="session")
def pipeline(tiny, tmp_path_factory) -> Artifacts:
    """The tiny sample after every stage: visual features and twins, the ranker trained, final.py's results.

    A private copy (the same images): tests that read it share one trained pipeline; a test that
    changes an artifact copies it first.
    """
    import final
    import ranker
    import visual_features
    import visual_reccs
    from fde import evaluation

    art = Artifacts(tmp_path_factory.mktemp("pipeline") / "data", tiny.images_dir)
    for folder in (tiny.raw_dir, tiny.processed_dir, tiny.split_dir):
        shutil.copytree(folder, art.data_dir / folder.name)
    visual_features.embed_catalogue(art, backbone="mobilenet_v2", num_workers=0, show_progress=False)
    visual_reccs.build_twins(art, show_progress=False)
    ranker.fit_ranker(art, evaluation.load_inputs(art, quiet=True), show_progress=False)
    final.run(art, show_progress=False)
    return art


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache (so no ResNet50 weights) and no network at all."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # DataLoader workers use AF_UNIX
            raise AssertionError(f"tried to reach the network: {address}")
        return real_connect(sock, address)

    def download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)


@pytest.fixture(scope="session")
def local_ray():
    """A Ray on this machine only: 2 CPUs, no dashboard, listening on 127.0.0.1; started once."""
    import ray

    from fde import scale_out

    scale_out.connect_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
