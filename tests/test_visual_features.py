"""visual_features.py: offline weights, embeddings, reports, resume, fits, the Ray engine (CPU, no network)."""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image, ImageDraw

import visual_features as vf
from fde import backbones, chunks, images, pretrained
from fde.artifacts import Artifacts
from fde.errors import UserError

from photos import BUILDINGS, add_broken_files, draw_catalogue, draw_garment


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Features of the drawn catalogue from one clean, uninterrupted run."""
    artifacts, ids = draw_catalogue(tmp_path_factory.mktemp("reference"))
    run(artifacts, backbone="mobilenet_v2", chunk_size=2)
    return outputs(artifacts)[0]


def run(artifacts, **kwargs):
    kwargs = {"num_workers": 0, "batch_size": 4, "show_progress": False, **kwargs}
    return vf.embed_catalogue(artifacts, **kwargs)


def outputs(artifacts):
    return (np.load(artifacts.visual_features), np.load(artifacts.visual_article_ids),
            json.loads(artifacts.visual_meta.read_text()))


def test_offline_weights_verified_and_classify_known_pictures(offline):
    from sklearn.datasets import load_sample_image
    from torchvision.models import MobileNet_V2_Weights

    weights = pretrained.find_weights("auto")
    assert weights.backbone == "mobilenet_v2"
    assert weights.sha256.startswith("b0353104")
    net = backbones.Embedder(backbones.load_network(weights, classifier=True)).eval()
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    top5 = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("china.jpg", "flower.jpg"):
            path = Path(tmp) / name
            Image.fromarray(load_sample_image(name)).save(path)
            pixels = torch.from_numpy(images.load_image(path)).permute(2, 0, 1)[None]
            with torch.inference_mode():
                top5[name] = {categories[i] for i in net(pixels)[0].topk(5).indices.tolist()}
    # A Chinese temple is a building to ImageNet; a dahlia close-up (no dahlia class) is not.
    assert len(top5["china.jpg"] & BUILDINGS) >= 2, top5
    assert not top5["flower.jpg"] & BUILDINGS, top5


def test_damaged_or_wrong_weights_are_refused(tmp_path):
    good = pretrained.offline_mobilenet_file()
    damaged = tmp_path / "resnet50-11ad3fa6.pth"
    damaged.write_bytes(good.read_bytes())  # right name, wrong bytes
    with pytest.raises(UserError, match="sha256 starts with b0353104, expected 11ad3fa6"):
        pretrained.find_weights("resnet50", damaged)
    wrong = tmp_path / "my_resnet.pth"
    wrong.write_bytes(good.read_bytes())  # no hash in the name: the architecture check catches it
    with pytest.raises(UserError, match="does not hold resnet50 weights"):
        backbones.load_network(pretrained.find_weights("resnet50", wrong))


def test_resnet_without_weights_says_where_to_put_them(offline, monkeypatch, tmp_path):
    def no_network(url, dst, hash_prefix=None, progress=True):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError) as err:
        pretrained.find_weights("resnet50")
    message = str(err.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "--weights" in message and "--backbone mobilenet_v2" in message
    assert "Name or service not known" in message


def test_load_image_fits_the_whole_garment_on_white(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1166, 1750), (200, 30, 40)).save(path, quality=95)  # real packshot size
    with Image.open(path) as im:
        im.draft("RGB", (images.INPUT_SIZE, images.INPUT_SIZE))
        assert im.size == (292, 438)  # decoded at 1/4 scale, still above 224
    pixels = images.load_image(path, fit="pad")
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert (pixels[:, :30] == 255).all() and (pixels[:, -30:] == 255).all()  # side bars, not a crop
    assert np.abs(pixels[112, 112].astype(int) - (200, 30, 40)).max() <= 6
    assert (pixels[0, 112] != 255).any() and (pixels[-1, 112] != 255).any()  # full height kept


def test_embeds_every_image_reports_broken_ones_and_missing(offline, tmp_path):
    artifacts, ids = draw_catalogue(tmp_path)
    broken = add_broken_files(artifacts)
    never_photographed = 108775099
    artifacts.articles.parent.mkdir(parents=True)
    pl.DataFrame({"article_id": [*ids, never_photographed]}, schema={"article_id": pl.Int32}).write_parquet(
        artifacts.articles)

    result = run(artifacts, num_workers=2)  # the worker-process path, once

    features, got_ids, meta = outputs(artifacts)
    assert result["embedded"] == len(ids) and result["unreadable"] == 2 and result["missing"] == 1
    assert got_ids.dtype == np.int32 and got_ids.tolist() == ids
    assert features.shape == (len(ids), 1280) and features.dtype == np.float16
    assert np.isfinite(features).all() and (features >= 0).all()  # pooled ReLU6 activations
    assert np.linalg.norm(features.astype(np.float32), axis=1).min() > 1
    assert meta["count"] == len(ids) and meta["dim"] == 1280 and meta["backbone"] == "mobilenet_v2"
    assert meta["input_size"] == 224 and meta["weights"]["sha256"].startswith("b0353104")
    assert meta["missing_article_ids"] == [never_photographed]
    assert sorted(u["article_id"] for u in meta["unreadable"]) == sorted(broken.values())
    assert meta["images_found"] == len(ids) + 2 and meta["ignored_files"] == 1

    # Row i belongs to article i: embed two articles on their own and find them at their rows.
    cpu = torch.device("cpu")
    precision = backbones.pick_precision(cpu)
    model = backbones.make_embedder(pretrained.find_weights("auto"), cpu, precision)
    unit = features.astype(np.float32) / np.linalg.norm(features.astype(np.float32), axis=1, keepdims=True)
    for aid in (ids[0], ids[7]):
        pixels = torch.from_numpy(images.load_image(artifacts.image(aid))).permute(2, 0, 1)[None]
        alone = backbones.embed_batch(model, pixels, cpu)[0]
        cosine = unit @ (alone / np.linalg.norm(alone))
        assert int(np.argmax(cosine)) == ids.index(aid) and cosine.max() > 0.999

    # The pretrained network sees what was drawn: each article's nearest neighbour is its
    # near-identical sibling (same shape and colour, shifted), never an article of another shape.
    scores = unit @ unit.T
    np.fill_diagonal(scores, -1)
    for row, aid in enumerate(ids):
        variant = (aid // 1000) % 100_000 - 8775
        sibling = aid + 1000 if variant == 0 else aid - 1000
        assert ids[int(np.argmax(scores[row]))] == sibling


def test_interrupted_run_resumes_to_the_same_vectors(offline, reference, tmp_path, monkeypatch):
    artifacts, ids = draw_catalogue(tmp_path)
    real_write, calls = chunks.write_chunk, []

    def write_then_die(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the 4th chunk was being written
        calls.append(args[0])
        real_write(*args, **kwargs)

    monkeypatch.setattr(chunks, "write_chunk", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(artifacts, chunk_size=2)
    monkeypatch.setattr(chunks, "write_chunk", real_write)
    assert not artifacts.visual_features.exists()
    assert len(list(artifacts.visual_chunks_dir.glob("*.npz"))) == 3
    assert not list(artifacts.visual_chunks_dir.glob(".*tmp*"))  # nothing half-written

    resumed = run(artifacts, chunk_size=2)
    assert resumed["embedded"] == len(ids) - 3 * 2 and resumed["chunks_written"] == 3
    features, got_ids, _ = outputs(artifacts)
    assert got_ids.tolist() == ids
    np.testing.assert_allclose(features.astype(np.float32), reference.astype(np.float32), rtol=0.01, atol=0.01)

    # Deleting the outputs and a chunk redoes just that chunk.
    artifacts.visual_features.unlink()
    sorted(artifacts.visual_chunks_dir.glob("*.npz"))[0].unlink()
    again = run(artifacts, chunk_size=2)
    assert again["embedded"] == 2 and outputs(artifacts)[1].tolist() == ids


def test_changed_image_redoes_only_its_chunk(offline, tmp_path):
    artifacts, ids = draw_catalogue(tmp_path)
    run(artifacts, chunk_size=2)
    before, _, _ = outputs(artifacts)
    stamp = artifacts.visual_features.stat().st_mtime_ns
    assert run(artifacts, chunk_size=2)["embedded"] == 0  # unchanged: nothing to do
    assert artifacts.visual_features.stat().st_mtime_ns == stamp
    changed = ids[5]
    draw_garment(artifacts.image(changed), "dress", (240, 200, 0))  # repainted yellow, new size/mtime
    stat = artifacts.image(changed).stat()
    os.utime(artifacts.image(changed), (stat.st_atime + 10, stat.st_mtime + 10))
    result = run(artifacts, chunk_size=2)
    after, _, _ = outputs(artifacts)
    assert result["embedded"] == 2 and result["chunks_written"] == 1
    moved = np.abs(after.astype(np.float32) - before.astype(np.float32)).max(axis=1) > 0.05
    assert moved.tolist() == [aid == changed for aid in ids]
    assert len(list(artifacts.visual_chunks_dir.glob("*.npz"))) == 6  # the stale chunk is gone


def test_ray_engine_writes_the_local_vectors_and_resumes(offline, reference, local_ray, tmp_path):
    artifacts, ids = draw_catalogue(tmp_path)
    broken = add_broken_files(artifacts)
    result = run(artifacts, chunk_size=2, engine="ray")
    features, got_ids, meta = outputs(artifacts)
    assert result["embedded"] == len(ids) and result["unreadable"] == 2
    assert got_ids.tolist() == ids and features.dtype == np.float16
    np.testing.assert_allclose(features.astype(np.float32), reference.astype(np.float32), rtol=0.01, atol=0.01)
    assert sorted(u["article_id"] for u in meta["unreadable"]) == sorted(broken.values())
    assert meta["fit"] == images.DEFAULT_FIT == "stretch" and meta["count"] == len(ids)
    assert meta["runtime"] == ["onnxruntime-float32"]  # the actors run the local path's ONNX export

    # Resume: with two chunks gone (and the outputs), Ray embeds only their images.
    artifacts.visual_features.unlink()
    for chunk in sorted(artifacts.visual_chunks_dir.glob("*.npz"))[:2]:
        chunk.unlink()
    again = run(artifacts, chunk_size=2, engine="ray")
    assert again["chunks_written"] == 2 and again["embedded"] <= 4
    np.testing.assert_array_equal(outputs(artifacts)[0], features)
    assert run(artifacts, chunk_size=2, engine="ray")["embedded"] == 0  # up to date: no Ray job at all


@pytest.mark.slow  # a fresh interpreter imports torch and the stages
def test_local_engine_never_imports_ray():
    import subprocess
    import sys

    code = ("import sys, visual_features, visual_reccs, fde.scale_out, fde.engines; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(vf.__file__).parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_fit_decides_what_the_network_sees(tmp_path, fit):
    path = tmp_path / "tall.jpg"
    im = Image.new("RGB", (200, 400), (200, 30, 40))  # a red portrait photo with a navy top quarter
    ImageDraw.Draw(im).rectangle([0, 0, 199, 99], fill=(20, 30, 110))
    im.save(path, quality=95)
    pixels = images.load_image(path, fit=fit).astype(int)
    assert pixels.shape == (224, 224, 3)
    white_sides = (pixels[:, :40] >= 250).all()
    navy_top = np.abs(pixels[5, 112] - (20, 30, 110)).max() <= 12
    want = {"pad": (True, True), "crop": (False, False), "stretch": (False, True)}[fit]
    assert (bool(white_sides), bool(navy_top)) == want  # crop keeps the centre: no navy, no white


def test_changed_fit_reembeds_and_is_recorded(offline, tmp_path):
    artifacts, ids = draw_catalogue(tmp_path)
    run(artifacts, chunk_size=4, fit="pad")
    padded, _, meta = outputs(artifacts)
    assert meta["fit"] == "pad" and json.loads(artifacts.visual_plan.read_text())["fit"] == "pad"
    result = run(artifacts, chunk_size=4, fit="stretch")
    stretched, got_ids, meta = outputs(artifacts)
    assert result["embedded"] == len(ids) and got_ids.tolist() == ids
    assert meta["fit"] == "stretch" and meta["preprocess"] == images.FITS["stretch"]
    assert json.loads(artifacts.visual_plan.read_text())["fit"] == "stretch"
    assert np.abs(stretched.astype(np.float32) - padded.astype(np.float32)).max() > 0.05
    # The padded chunks stay on disk: going back costs nothing.
    assert run(artifacts, chunk_size=4, fit="pad")["embedded"] == 0
    np.testing.assert_array_equal(outputs(artifacts)[0], padded)
    with pytest.raises(UserError, match="unknown fit"):
        run(artifacts, fit="zoom")


def test_no_images_is_a_user_error(offline, tmp_path):
    with pytest.raises(UserError, match="images folder .* not found"):
        run(Artifacts(tmp_path / "data", tmp_path / "nowhere"))
    (tmp_path / "empty" / "010").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        run(Artifacts(tmp_path / "data", tmp_path / "empty"))
    with pytest.raises(UserError, match="not available"):
        backbones.pick_device("cuda:7" if not torch.cuda.is_available() else "mps")


def test_the_weights_files_are_found_as_torch_finds_them_without_torch(monkeypatch, tmp_path):
    """fde.pretrained (a photo search's path, torch-free) names torchvision's files, cache and version."""
    for name, spec in backbones.BACKBONES.items():
        assert spec["url"] == spec["enum"].url and spec["dim"] == pretrained.NETWORKS[name]["dim"]
    assert pretrained.torch_version() == torch.__version__
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert pretrained.hub_dir() == Path(torch.hub.get_dir())
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert pretrained.hub_dir() == Path(torch.hub.get_dir()) == tmp_path / "cache" / "torch" / "hub"


def test_auto_prefers_resnet50_when_its_weights_are_on_disk(offline, monkeypatch, tmp_path):
    # Stand-in weights under a name without a hash (so no sha check): this tests the ResNet50
    # plumbing offline (choice, 2048-d pooled features, metadata), not its quality.
    name = {"resnet50": "resnet50-local.pth", "mobilenet_v2": "mobilenet_v2-b0353104.pth"}
    monkeypatch.setattr(pretrained, "weights_file_name", lambda backbone: name[backbone])
    cached = pretrained.hub_checkpoint("resnet50")
    cached.parent.mkdir(parents=True)
    torch.save(backbones.BACKBONES["resnet50"]["build"](weights=None).state_dict(), cached)
    assert pretrained.find_weights("auto").backbone == "resnet50"
    artifacts, ids = draw_catalogue(tmp_path)
    result = run(artifacts)
    features, got_ids, meta = outputs(artifacts)
    assert result["backbone"] == meta["backbone"] == "resnet50" and meta["dim"] == 2048
    assert meta["runtime"] == ["onnxruntime-float32"]  # ResNet50 goes through the same ONNX export
    assert features.shape == (len(ids), 2048) and got_ids.tolist() == ids
    assert meta["weights"]["file"] == str(cached)


# ---------------------------------------------------------------------------- runtimes: ONNX Runtime and torch

def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float32), b.astype(np.float32)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_runtime_gives_torchs_vectors_and_chunks_record_it(offline, tmp_path):
    on_onnx, ids = draw_catalogue(tmp_path / "onnx")
    on_torch, _ = draw_catalogue(tmp_path / "torch")
    assert run(on_onnx, chunk_size=4, runtime="onnx")["runtime"] == ["onnxruntime-float32"]
    assert run(on_torch, chunk_size=4, runtime="torch", precision="fp32")["runtime"] == ["torch-float32"]
    onnx_vectors, onnx_ids, meta = outputs(on_onnx)
    torch_vectors, torch_ids, _ = outputs(on_torch)
    assert onnx_ids.tolist() == torch_ids.tolist() == ids and meta["runtime"] == ["onnxruntime-float32"]
    assert cosines(onnx_vectors, torch_vectors).min() >= 0.9999
    for chunk in on_onnx.visual_chunks_dir.glob("*.npz"):
        assert chunks.read_chunk(chunk, meta["dim"])["runtime"] == "onnxruntime-float32"
    # the export is cached under the data dir, named by the weights' and the export's fingerprint
    weights = pretrained.find_weights("mobilenet_v2")
    assert [p.name for p in on_onnx.visual_onnx_dir.iterdir()] == \
        [f"mobilenet_v2-{pretrained.onnx_fingerprint(weights)}.onnx"]
    # another runtime later keeps the chunks it finds: nothing is embedded again
    assert run(on_onnx, chunk_size=4, runtime="torch")["embedded"] == 0


def test_onnx_export_is_reused_and_rebuilt_when_its_recipe_changes(offline, tmp_path, monkeypatch):
    weights = pretrained.find_weights("mobilenet_v2")
    exports = []
    real = backbones.export_onnx
    monkeypatch.setattr(backbones, "export_onnx", lambda w, path: exports.append(path) or real(w, path))
    first = backbones.onnx_model(weights, tmp_path)
    assert backbones.onnx_model(weights, tmp_path) == first and len(exports) == 1
    monkeypatch.setattr(pretrained, "ONNX_EXPORT", pretrained.ONNX_EXPORT + "-changed")
    second = backbones.onnx_model(weights, tmp_path)
    assert second != first and len(exports) == 2
    assert list(tmp_path.iterdir()) == [second]  # the stale export is gone
    pixels = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    torch_fp32 = backbones.embed_batch(backbones.make_embedder(weights, torch.device("cpu"), None), pixels,
                                       torch.device("cpu"))
    assert cosines(pretrained.OnnxEmbedder(second)(pixels), torch_fp32).min() >= 0.9999
    second.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load the ONNX model"):
        pretrained.OnnxEmbedder(second)


def test_runtime_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert backbones.pick_runtime("auto", cpu) == "onnx"  # requirements.txt installs onnxruntime
    assert backbones.pick_runtime("auto", cuda) == "torch"
    assert backbones.pick_runtime("torch", cpu) == "torch"
    with pytest.raises(UserError, match="runs on the CPU"):
        backbones.pick_runtime("onnx", cuda)
    with pytest.raises(UserError, match="unknown runtime"):
        backbones.pick_runtime("tensorrt", cpu)
    with pytest.raises(UserError, match="--runtime torch"):
        backbones.make_runtime(pretrained.find_weights("mobilenet_v2"), cpu, "bf16", "onnx")
    monkeypatch.setattr(pretrained, "onnx_available", lambda export=False: False)
    assert backbones.pick_runtime("auto", cpu) == "torch"
    with pytest.raises(UserError, match="pip install onnxruntime"):
        backbones.pick_runtime("onnx", cpu)


def test_chunks_from_before_runtimes_were_recorded_still_merge(offline, tmp_path):
    """A chunk that records its torch precision (the format before runtimes) reads as torch-<precision>."""
    path = tmp_path / "old.npz"
    with open(path, "wb") as fh:
        np.savez(fh, article_ids=np.array([1], np.int32), features=np.zeros((1, 4), np.float16),
                 failed_ids=np.array([], np.int32), failed_errors=np.array([], dtype=str),
                 precision=np.array("bfloat16"))
    assert chunks.read_chunk(path, 4)["runtime"] == "torch-bfloat16"
