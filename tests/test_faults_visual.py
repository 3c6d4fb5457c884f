"""Faults against visual_features.py (issue 8, item 4): cached embedding work is never destroyed silently.

Each case runs the stage's command in-process (main() under run_main, as `python visual_features.py`
runs it) and checks the exit code, the message and that no embedded work was lost.
"""
import os
import shutil
import sys

import numpy as np
import pytest

import visual_features as vf
from fde import chunks
from fde.artifacts import Artifacts
from fde.cli import run_main

from photos import draw_catalogue, draw_garment


def stage(monkeypatch, capsys, artifacts: Artifacts, *extra) -> tuple[int, str]:
    """Exit code and output of `python visual_features.py --data-dir .. --images-dir .. --no-progress *extra`."""
    argv = ["visual_features.py", "--data-dir", str(artifacts.data_dir), "--images-dir", str(artifacts.images_dir),
            "--no-progress", "--workers", "0", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    code = 0
    try:
        run_main(vf.main)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def chunk_files(artifacts: Artifacts) -> dict:
    """name -> bytes of every chunk file."""
    return {p.name: p.read_bytes() for p in sorted(artifacts.visual_chunks_dir.glob("*.npz"))}


@pytest.fixture
def embedded(offline, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A data dir whose features were made from images/ (12 drawn articles, 3 chunks)."""
    artifacts, ids = draw_catalogue(tmp_path / "a")
    code, text = stage(monkeypatch, capsys, artifacts)
    assert code == 0, text
    return artifacts, ids


def other_folder(artifacts: Artifacts, how: str) -> Artifacts:
    """A second images folder next to the first: other photos, a plain copy, or a copy with timestamps."""
    other = Artifacts(artifacts.data_dir, artifacts.images_dir.parent.parent / f"other_{how}" / "images")
    if how == "other photos":
        for path in sorted(artifacts.images_dir.glob("*/*.jpg"))[:5]:
            draw_garment(other.images_dir / path.parent.name / path.name, "top", (0, 150, 60))
    else:
        shutil.copytree(artifacts.images_dir, other.images_dir,
                        copy_function=shutil.copy2 if how == "copy keeping timestamps" else shutil.copyfile)
    if how == "plain copy":  # a copy made later has later timestamps, even when the test runs within a second
        for path in other.images_dir.glob("*/*.jpg"):
            later = (artifacts.images_dir / path.parent.name / path.name).stat().st_mtime + 60
            os.utime(path, (later, later))
    return other


@pytest.mark.parametrize("how, code, message, reembedded", [
    # The reported case: a different folder would replace the chunks: refused, with the way out.
    ("other photos", 2, "pass --replace-features to discard them deliberately", None),
    # The same photos copied without timestamps look changed: refused as well, nothing redone silently.
    ("plain copy", 2, "give this images folder its own --data-dir", None),
    # Copied with timestamps (rsync -a, cp -p): the same chunks, so nothing is at stake or redone.
    ("copy keeping timestamps", 0, "embedded=0 ", 0),
])
def test_another_images_dir_never_deletes_chunks(embedded, monkeypatch, capsys, how, code, message, reembedded):
    artifacts, ids = embedded
    chunks, features = chunk_files(artifacts), artifacts.visual_features.read_bytes()
    other = other_folder(artifacts, how)

    got, text = stage(monkeypatch, capsys, other)

    assert got == code, text
    assert message in text
    assert "Traceback" not in text
    after = chunk_files(artifacts)
    assert {name: after.get(name) for name in chunks} == chunks  # every chunk of the first folder is intact
    if code:
        last = text.strip().splitlines()[-1]  # one line, naming the folder whose work is at stake
        assert last.startswith("error: ") and message in last and str(artifacts.images_dir.resolve()) in last
        assert artifacts.visual_features.read_bytes() == features  # outputs untouched too
    else:
        assert np.load(artifacts.visual_article_ids).tolist() == ids


def test_replace_features_is_the_deliberate_way(embedded, monkeypatch, capsys):
    artifacts, ids = embedded
    other = other_folder(artifacts, "other photos")
    code, text = stage(monkeypatch, capsys, other, "--replace-features")
    assert code == 0, text
    assert np.load(artifacts.visual_article_ids).size == 5
    assert "embedded=5 " in text
    # Back to the first folder: its chunks were replaced on request, so this is asked for again.
    code, text = stage(monkeypatch, capsys, artifacts)
    assert code == 2 and "--replace-features" in text


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path):
    path.write_bytes(b"")


def flip_a_byte(path):  # damage inside the stored features: only the zip's CRC notices
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def not_a_chunk(path):
    with open(path, "wb") as fh:
        np.savez(fh, something=np.arange(3))


@pytest.mark.parametrize("damage", [truncate, empty, flip_a_byte, not_a_chunk], ids=lambda f: f.__name__)
@pytest.mark.parametrize("outputs", ["deleted", "stale"])
def test_damaged_chunk_is_reported_and_recomputed(embedded, monkeypatch, capsys, damage, outputs):
    artifacts, ids = embedded
    features = np.load(artifacts.visual_features)
    victim = sorted(artifacts.visual_chunks_dir.glob("*.npz"))[1]
    damage(victim)
    if outputs == "deleted":
        artifacts.visual_features.unlink()
    else:  # a new articles file makes the outputs stale, so the chunks are merged again
        import polars as pl

        artifacts.articles.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"article_id": ids}, schema={"article_id": pl.Int32}).write_parquet(artifacts.articles)

    code, text = stage(monkeypatch, capsys, artifacts)

    assert code == 0, text
    assert "Traceback" not in text and "BadZipFile" not in text.split("warning:")[0]
    assert f"warning: damaged chunk {victim.name}" in text and "embedded again" in text
    assert "embedded=4 " in text and "damaged=1 " in text  # just that chunk's images
    assert victim.with_name(victim.name + ".damaged").exists()  # set aside, not deleted
    chunks.read_chunk(victim, 1280)  # recomputed: readable again
    assert np.load(artifacts.visual_article_ids).tolist() == ids
    np.testing.assert_allclose(np.load(artifacts.visual_features).astype(np.float32), features.astype(np.float32),
                               rtol=0.01, atol=0.01)


def test_damaged_plan_is_rewritten_without_redoing_work(embedded, monkeypatch, capsys):
    artifacts, ids = embedded
    artifacts.visual_features.unlink()
    text = artifacts.visual_plan.read_text()
    artifacts.visual_plan.write_text(text[: len(text) // 2])  # cut mid-way, as by a full disk
    code, out = stage(monkeypatch, capsys, artifacts)
    assert code == 0, out
    assert "embedded=0 " in out and np.load(artifacts.visual_article_ids).tolist() == ids
