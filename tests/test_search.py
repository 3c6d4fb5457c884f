"""search.py and fde/search.py: words and filters on the hand-made shop, photos on the tiny pipeline, bad input."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fde import images
from fde import search as fs
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.ids import format_article_id

from shop import ARTICLES, TX

ROOT = Path(__file__).resolve().parents[1]
# 101001 cheapest trousers, 102001 dearest; 104001 the cheaper sweater; 101002 and 105001 never sold
PRICES = {101001: 0.01, 102001: 0.03, 103001: 0.05, 104001: 0.02}


@pytest.fixture
def shop(tmp_path) -> Artifacts:
    """The hand-made shop as a data dir: processed/articles.parquet and transactions.parquet."""
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    art.processed_dir.mkdir(parents=True)
    ARTICLES.with_columns(prod_name=pl.Series(["Slim jeans", "Slim jeans", "Skinny jeans", "Wool sweater",
                                               "Wool sweater", "Loose jeans"])).write_parquet(art.articles)
    TX.with_columns(price=pl.col("article_id").replace_strict(PRICES, return_dtype=pl.Float32)).write_parquet(
        art.transactions)
    return art


def search_cli(art: Artifacts, *args) -> subprocess.CompletedProcess:
    """search.py as a user runs it, from a shell."""
    return subprocess.run([sys.executable, "search.py", "--data-dir", str(art.data_dir),
                           "--images-dir", str(art.images_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def csv_ids(stdout: str) -> list[str]:
    lines = stdout.strip().splitlines()
    assert lines[0] == "rank,article_id,score"
    return [line.split(",")[1] for line in lines[1:]]


# ---------------------------------------------------------------- words and filters (hand-made shop)

def test_words_fold_plurals_and_pattern_adjectives():
    assert fs.words("Dark-blue TROUSERS, dresses & striped jeans") == ["dark", "blue", "trouser", "dress",
                                                                      "stripe", "jean"]
    assert fs.words("dress glass chorus") == ["dress", "glass", "chorus"]


def test_price_bands_are_thirds_within_the_product_type(shop):
    bands = fs.price_bands(pl.read_parquet(shop.articles), pl.scan_parquet(shop.transactions))
    got = dict(zip(bands["article_id"], bands["price_band"]))
    assert got == {101001: "low", 102001: "high", 103001: "high", 104001: "low", 101002: None, 105001: None}


def test_text_search_ranks_the_articles_with_every_word_first(shop):
    engine = fs.Search(shop)
    found = engine.by_text("black slim jeans", k=6)
    # 101001 and 102001 have all three words (101001 "slim" in its name too); the others two of them
    assert found["article_id"].to_list()[:2] == [101001, 102001]
    assert set(found["article_id"].to_list()[2:]) == {101002, 105001}
    assert found["score"].is_sorted(descending=True)
    assert "black: colour" in found["why"][0] and "slim" in found["why"][0]
    assert 103001 not in found["article_id"].to_list()  # a sweater has none of the words: no answer


def test_filters_on_the_hand_made_shop(shop):
    engine = fs.Search(shop)
    ids = lambda query, **f: engine.by_text(query, k=6, filters=fs.Filters(**f))["article_id"].to_list()  # noqa: E731
    assert ids("jeans", colour="blue") == [101002]                      # any case
    assert set(ids("jeans sweater", product_type="Sweater")) == {103001, 104001}
    assert ids("jeans", price_band="low") == [101001]
    assert ids("jeans", price_band="high") == [102001]
    assert ids("sweater", price_band="mid") == []
    assert set(ids("jeans", hide_colourways=True)) == {101001, 102001, 105001}  # one of product 101's two
    with pytest.raises(UserError, match=r"--index-group 'Menswear' is not in the catalogue: choose one of "
                                        r"Ladieswear$"):
        ids("jeans", index_group="Menswear")
    with pytest.raises(UserError, match="--price-band 'cheap'.*low, mid, high"):
        ids("jeans", price_band="cheap")
    with pytest.raises(UserError, match="--colour 'Navy'.*Black, Blue, Red"):
        ids("jeans", colour="Navy")


@pytest.mark.parametrize("query", ["", "   ", "?!", None])
def test_a_query_without_words_is_a_message(shop, query):
    with pytest.raises(UserError, match="the query has no words"):
        fs.Search(shop).by_text(query)


def test_a_10000_character_query_is_answered(shop):
    found = fs.Search(shop).by_text("wool " + "x" * 9_995)
    assert set(found["article_id"].to_list()) == {103001, 104001}


def test_the_text_index_is_saved_and_rebuilt_when_the_articles_change(shop):
    fs.Search(shop)
    assert fs.is_current(shop) and shop.search_manifest.exists()
    assert not shop.search_text_index.exists()  # made by the first text search, not by every search
    fs.Search(shop).by_text("jeans")
    assert fs.text_is_current(shop)
    before = shop.search_text_index.stat().st_mtime_ns, shop.search_catalogue.stat().st_mtime_ns
    assert fs.Search(shop).catalogue.vocabulary  # loaded, not rebuilt
    assert (shop.search_text_index.stat().st_mtime_ns, shop.search_catalogue.stat().st_mtime_ns) == before
    pl.read_parquet(shop.articles).with_columns(detail_desc=pl.lit("linen")).write_parquet(shop.articles)
    assert not fs.is_current(shop) and not fs.text_is_current(shop)
    assert fs.Search(shop).by_text("linen", k=6).height == 6  # rebuilt from the new articles
    assert fs.is_current(shop) and fs.text_is_current(shop)


def test_data_optim_builds_what_the_first_search_needs(tiny, monkeypatch):
    """After data_optim.py the catalogue and the text index are current: the first text search builds neither."""
    assert fs.is_current(tiny) and fs.text_is_current(tiny)
    monkeypatch.setattr(fs, "build_text_index", lambda articles: pytest.fail("the first text search built the index"))
    monkeypatch.setattr(fs.SearchCatalogue, "build",
                        classmethod(lambda cls, art: pytest.fail("the first search built the catalogue")))
    word = pl.read_parquet(tiny.articles)["product_type_name"].cast(pl.String)[0]
    found = fs.Search(tiny).by_text(word, k=5)
    assert found.height == 5 and found["why"].str.contains("type").all()


def test_cli_text_search_and_its_errors(shop):
    done = search_cli(shop, "--text", "slim jeans", "--k", "2")
    assert done.returncode == 0, done.stderr
    assert csv_ids(done.stdout) == ["0000101001", "0000101002"]
    assert "[search] query=text results=2" in done.stderr
    bad = search_cli(shop, "--text", "jeans", "--product-type", "Dress")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == ("error: --product-type 'Dress' is not in the catalogue: choose one of "
                                  "Sweater, Trousers")
    empty = search_cli(shop, "--text", "")
    assert empty.returncode == 2 and "Traceback" not in empty.stderr and "the query has no words" in empty.stderr


# ---------------------------------------------------------------- photos: decoding (no network needed)

def packshot(path: Path, size=(200, 300)) -> Path:
    """A drawn red dress on white."""
    im = Image.new("RGB", size, (246, 246, 244))
    from PIL import ImageDraw

    w, h = size
    ImageDraw.Draw(im).polygon([(0.4 * w, 0.13 * h), (0.6 * w, 0.13 * h), (0.85 * w, 0.9 * h), (0.15 * w, 0.9 * h)],
                               fill=(200, 30, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=95)
    return path


def test_a_catalogue_photo_decodes_as_the_catalogue_decodes_it(tmp_path):
    path = packshot(tmp_path / "p.jpg")
    assert np.array_equal(images.load_photo(path), images.load_image(path))
    assert np.array_equal(images.load_photo(path.read_bytes()), images.load_image(path))


def test_exif_rotation_is_applied(tmp_path):
    path = packshot(tmp_path / "p.png")
    upright = images.load_photo(path)
    rotated = Image.open(path).rotate(90, expand=True)  # a phone stores the sensor's view plus an EXIF turn
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rotated.save(tmp_path / "r.jpg", exif=exif, quality=98)
    again = images.load_photo(tmp_path / "r.jpg").astype(int)
    assert np.abs(again - upright.astype(int)).mean() < 4  # upright again (only JPEG noise differs)
    assert np.abs(images.load_image(tmp_path / "r.jpg").astype(int) - upright.astype(int)).mean() > 20


def test_cmyk_and_16_bit_photos_decode_like_their_8_bit_rgb(tmp_path):
    path = packshot(tmp_path / "p.png")
    rgb = Image.open(path).convert("RGB")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    assert np.abs(images.load_photo(tmp_path / "cmyk.jpg").astype(int) - images.load_photo(path)).mean() < 4
    grey = np.asarray(rgb.convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "grey16.png")  # 16-bit greyscale PNG (mode I;16)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "grey8.png")
    assert np.array_equal(images.load_photo(tmp_path / "grey16.png"), images.load_photo(tmp_path / "grey8.png"))


def test_a_50_megapixel_jpeg_is_answered_and_a_huge_png_refused(tmp_path, monkeypatch):
    big = Image.new("RGB", (8660, 5774), (246, 246, 244))
    big.paste((200, 30, 40), (3000, 1000, 5600, 5000))
    big.save(tmp_path / "big.jpg", quality=80)
    del big
    pixels = images.load_photo(tmp_path / "big.jpg")
    assert pixels.shape == (224, 224, 3) and pixels[112, 112, 0] > 150  # the red block, at the centre
    monkeypatch.setattr(images, "MAX_PHOTO_PIXELS", 50_000)  # the rule, without writing a 60 MP PNG
    packshot(tmp_path / "p.png", size=(300, 450))
    with pytest.raises(UserError, match=r"300x450 \(0 megapixels\), more than 0 for a PNG image: shrink it"):
        images.load_photo(tmp_path / "p.png")


@pytest.mark.parametrize("case,content,message", [
    ("empty", b"", "empty file"),
    ("text", b"rank,article_id\n1,2\n", "not an image PIL can read"),
    ("truncated", None, "could not be decoded, it may be truncated or damaged"),
    ("missing", "absent", "not found"),
])
def test_bad_photos_are_one_line_messages(tmp_path, case, content, message):
    path = tmp_path / f"{case}.jpg"
    if content is None:
        data = packshot(tmp_path / "whole.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as raised:
        images.load_photo(path)
    assert "\n" not in str(raised.value)
    if isinstance(content, bytes):
        with pytest.raises(UserError, match=message):
            images.load_photo(io.BytesIO(content).getvalue() if content else b"")


# ---------------------------------------------------------------- photos: the network (tiny pipeline)

@pytest.fixture(scope="module")
def engine(pipeline):
    return fs.Search(pipeline)


@pytest.fixture(scope="module")
def demo_size(tmp_path_factory) -> Artifacts:
    """The tiny sample generated again with its packshots at the demo's 384x576, and embedded.

    The tiny sample's own photos are 128x192: a half-size copy of one (64x96) is far smaller than any
    photo a user has (on the demo's 384x576 packshots, 150 of 150 half-size copies found their product
    in the top 3), so the half-size test uses these.
    """
    import data_optim
    import sample_data
    import visual_features

    root = tmp_path_factory.mktemp("demo_size")
    art = Artifacts(root / "data", root / "images")
    sample_data.generate(art, scale="tiny", seed=0, show_progress=False, image_size=(384, 576))
    data_optim.optimize(art, show_progress=False)
    visual_features.embed_catalogue(art, backbone="mobilenet_v2", num_workers=0, show_progress=False)
    return art


def test_a_catalogue_photo_finds_itself(engine, pipeline):
    ids = np.load(pipeline.visual_article_ids)
    for aid in ids[:: max(1, len(ids) // 5)][:5]:
        found = engine.by_photo(pipeline.image(int(aid)), k=3)
        assert found["article_id"][0] == aid and found["score"][0] >= 0.99, found


@pytest.mark.slow
def test_a_reencoded_half_size_copy_finds_its_product(demo_size, tmp_path):
    engine = fs.Search(demo_size)
    ids = np.load(demo_size.visual_article_ids)
    hits = []
    for aid in ids[:: max(1, len(ids) // 12)][:12]:
        with Image.open(demo_size.image(int(aid))) as im:
            half = im.convert("RGB").resize((im.width // 2, im.height // 2))
        half.save(tmp_path / "half.jpg", quality=70)
        found = engine.by_photo(tmp_path / "half.jpg", k=3)
        hits.append(int(aid) // 1000 in (found["article_id"].to_numpy() // 1000))
    assert all(hits), hits


def test_photo_search_filters(engine, pipeline):
    catalogue = engine.catalogue.articles
    aid = int(np.load(pipeline.visual_article_ids)[0])
    group = catalogue.filter(pl.col("article_id") == aid)["index_group_name"].item()
    found = engine.by_photo(pipeline.image(aid), k=24, filters=fs.Filters(index_group=group.upper(),
                                                                           hide_colourways=True))
    groups = catalogue.join(found, on="article_id")["index_group_name"].unique().to_list()
    assert groups == [group]
    codes = found["article_id"].to_numpy() // 1000
    assert len(set(codes)) == len(codes) and found["article_id"][0] == aid


def test_cli_photo_search_as_a_user_runs_it(pipeline, tmp_path):
    aid = int(np.load(pipeline.visual_article_ids)[0])
    done = search_cli(pipeline, "--image", str(pipeline.image(aid)), "--k", "5")
    assert done.returncode == 0, done.stderr
    assert csv_ids(done.stdout)[0] == format_article_id(aid)
    assert float(done.stdout.splitlines()[1].split(",")[2]) >= 0.99
    assert "[search] query=photo results=5" in done.stderr
    (tmp_path / "notes.jpg").write_text("not a photo")
    bad = search_cli(pipeline, "--image", str(tmp_path / "notes.jpg"))
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "not an image" in bad.stderr


def copy_of(pipeline: Artifacts, tmp_path: Path) -> Artifacts:
    """processed/ and visual/ of the pipeline copied: for a test that writes beside the features."""
    import shutil

    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    for folder in (pipeline.processed_dir, pipeline.visual_dir):
        shutil.copytree(folder, art.data_dir / folder.name, ignore=shutil.ignore_patterns("chunks", "search_*"))
    return art


def test_a_photo_search_imports_no_torch(pipeline):
    """The catalogue was embedded in ONNX Runtime: a photo search runs it without torch (seconds to import)."""
    aid = int(np.load(pipeline.visual_article_ids)[0])
    code = ("import sys; from fde.artifacts import Artifacts; from fde.search import Search; "
            f"found = Search(Artifacts({str(pipeline.data_dir)!r}, {str(pipeline.images_dir)!r}))"
            f".by_photo({str(pipeline.image(aid))!r}, k=3); "
            "print(found['article_id'][0], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(aid), "False"]


def test_exact_search_saves_the_unit_vectors_and_maps_them_next_time(pipeline, tmp_path, monkeypatch):
    from fde.visual_index import VisualIndex

    art = copy_of(pipeline, tmp_path)
    aid = int(np.load(art.visual_article_ids)[0])
    first = fs.Search(art).by_photo(art.image(aid), k=5)
    want = VisualIndex.load(art).unit_vectors()
    saved = np.load(art.search_unit_vectors)
    assert saved.dtype == np.float32 and np.array_equal(saved, want) and art.search_unit_manifest.exists()
    assert np.allclose(np.linalg.norm(saved, axis=1), 1, atol=1e-5)
    with monkeypatch.context() as m:
        m.setattr(VisualIndex, "unit_vectors", lambda self: pytest.fail("converted the features again"))
        again = fs.Search(art)
        assert again.by_photo(art.image(aid), k=5).equals(first)
        assert isinstance(again.unit_vectors, np.memmap)
    # other features (the catalogue embedded again): stale, made again from them
    ids, features = np.load(art.visual_article_ids), np.load(art.visual_features)
    np.save(art.visual_features, features[::-1].copy())
    remade = fs.saved_unit_vectors(art, VisualIndex(ids[::-1], np.load(art.visual_features, mmap_mode="r")))
    assert np.array_equal(remade, want[::-1]) and np.array_equal(np.load(art.search_unit_vectors), want[::-1])
    art.search_unit_vectors.write_bytes(b"damaged")  # not what the manifest recorded: made again
    assert np.array_equal(fs.saved_unit_vectors(art, VisualIndex(ids[::-1], features[::-1])), want[::-1])


@pytest.mark.parametrize("content", ["{not json", '{"backbone": "mobilenet_v2"}', "[]", ""])
def test_a_damaged_visual_meta_names_the_command_to_rerun(pipeline, tmp_path, content):
    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    art.visual_dir.mkdir(parents=True)
    art.visual_meta.write_text(content)
    with pytest.raises(UserError) as error:
        fs.PhotoEmbedder(art)
    message = str(error.value)
    assert "damaged" in message and "python visual_features.py --data-dir" in message and "\n" not in message


def test_the_ann_index_answers_like_exact_and_is_saved_with_the_features(pipeline, tmp_path, monkeypatch):
    from fde import ann

    art = copy_of(pipeline, tmp_path)  # a copy: the index is written beside the features
    monkeypatch.setattr(ann, "EXACT_LIMIT", 10)  # auto picks the index above 10 image vectors
    engine, exact = fs.Search(art), fs.Search(art, index="exact")
    assert engine.uses_ann() and not exact.uses_ann()
    ids = np.load(art.visual_article_ids)
    catalogue = engine.catalogue.articles
    for aid in ids[:: max(1, len(ids) // 6)][:6]:
        got = engine.by_photo(art.image(int(aid)), k=12)
        assert got["article_id"][0] == aid and got["score"][0] >= 0.99
        assert got["article_id"].to_list() == exact.by_photo(art.image(int(aid)), k=12)["article_id"].to_list()
        rare = catalogue.filter(pl.col("article_id") != aid)["colour_group_name"].value_counts().sort("count")
        colour = rare["colour_group_name"][0]  # so few articles that the candidates cannot hold k of them
        filters = fs.Filters(colour=colour, hide_colourways=True)
        got, want = (e.by_photo(art.image(int(aid)), k=12, filters=filters) for e in (engine, exact))
        assert got["article_id"].to_list() == want["article_id"].to_list() and got.height >= 1
        assert np.allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-5)  # exact scores both
    assert art.search_ann_index.exists() and art.search_ann_manifest.exists()
    built = art.search_ann_index.stat().st_mtime_ns
    fs.Search(art).by_photo(art.image(int(ids[0])), k=3)
    assert art.search_ann_index.stat().st_mtime_ns == built  # loaded, not rebuilt
    features = np.load(art.visual_features)
    np.save(art.visual_features, features[::-1].copy())  # other features: the index is stale
    assert ann.AnnIndex.load(art) is None


def test_the_first_photo_search_converts_no_vectors_and_builds_no_text_index(pipeline, tmp_path, monkeypatch):
    """The stage that makes the features also writes exact search's unit vectors (up to EXACT_LIMIT images)."""
    import shutil

    import visual_features
    from fde import ann
    from fde.visual_index import VisualIndex, fresh_unit_vectors

    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    for folder in (pipeline.processed_dir, pipeline.visual_dir):  # chunks too: the features are up to date
        shutil.copytree(folder, art.data_dir / folder.name, ignore=shutil.ignore_patterns("search_*"))
    embed = dict(backbone="mobilenet_v2", num_workers=0, show_progress=False)
    with monkeypatch.context() as m:
        m.setattr(ann, "EXACT_LIMIT", 1)  # a catalogue search answers with the ANN index: none written
        assert visual_features.embed_catalogue(art, **embed)["search_vectors"].startswith("not needed")
    assert not art.search_unit_vectors.exists()
    assert visual_features.embed_catalogue(art, **embed)["search_vectors"] == "written"  # features made before
    assert visual_features.embed_catalogue(art, **embed)["search_vectors"] == "up to date"
    features = np.load(art.visual_features)
    unit = fresh_unit_vectors(art, features.shape)
    assert unit is not None and np.array_equal(unit, VisualIndex(np.load(art.visual_article_ids), features)
                                               .unit_vectors())
    written = art.search_unit_vectors.stat().st_mtime_ns
    monkeypatch.setattr(VisualIndex, "unit_vectors", lambda self: pytest.fail("search converted the features"))
    monkeypatch.setattr(fs, "build_text_index", lambda articles: pytest.fail("a photo search built the text index"))
    aid = int(np.load(art.visual_article_ids)[3])
    engine = fs.Search(art)  # the very first search on this catalogue
    found = engine.by_photo(art.image(aid), k=3)
    assert found["article_id"][0] == aid and isinstance(engine.unit_vectors, np.memmap)
    assert art.search_unit_vectors.stat().st_mtime_ns == written and not art.search_text_index.exists()


def clustered(n: int, dim: int, seed: int, centres: int = 40) -> np.ndarray:
    """n float16 rows around `centres` Gaussian centres (the same centres for every seed), as features are stored."""
    middle = np.random.default_rng(0).standard_normal((centres, dim))
    rng = np.random.default_rng(seed)
    return (middle[rng.integers(0, centres, n)] + 0.8 * rng.standard_normal((n, dim))).astype(np.float16)


def test_the_ann_build_picks_the_smallest_nprobe_that_reaches_its_recall_against_exact():
    """On the catalogue's own vectors: the recall it saves is what exact search confirms, and holds on new queries."""
    from fde import ann

    features = clustered(20_000, 300, seed=1)  # wider than PROJECTED_DIM: projected, re-ranked in full
    unit = ann.UnitRows(features)
    index = ann.AnnIndex.build(unit)
    settings = index.settings
    nprobe, tried = settings["nprobe"], settings["tried"]
    assert settings["nlist"] == ann.list_count(20_000) == 78 and index.project is not None
    assert settings["tune_recall"] >= ann.TUNE_RECALL and 1 < nprobe < settings["nlist"] // 4
    assert tried[str(nprobe - 1)] < ann.TUNE_RECALL  # the smallest: one list fewer falls short
    whole = unit[np.arange(len(features))]

    def exact(queries, k):
        return np.argsort(-(queries @ whole.T), axis=1, kind="stable")[:, :k]

    own = ann.sample_rows(len(features), ann.TUNE_QUERIES, seed=2)  # the build's sample, checked by brute force
    claimed = ann.recall_without_self(index.nearest(whole[own], ann.K + 1, unit), exact(whole[own], ann.K + 1),
                                      own, ann.K)
    assert claimed == pytest.approx(settings["tune_recall"], abs=1e-4)
    fresh = ann.UnitRows(clustered(500, 300, seed=3))[np.arange(500)]  # photos not in the catalogue
    found, want = index.nearest(fresh, ann.K, unit), exact(fresh, ann.K)
    recall = np.mean([len(set(f) & set(w)) / ann.K for f, w in zip(found.tolist(), want.tolist())])
    assert recall >= 0.95
    index.index.nprobe = 1
    worse = index.nearest(fresh, ann.K, unit)
    assert np.mean([len(set(f) & set(w)) / ann.K for f, w in zip(worse.tolist(), want.tolist())]) < 0.95


def test_an_index_saved_by_an_older_version_is_built_again_not_read(pipeline, tmp_path):
    import faiss

    from fde import ann, files

    art = copy_of(pipeline, tmp_path)
    features = np.load(art.visual_features)
    old = faiss.IndexHNSWFlat(features.shape[1], 16, faiss.METRIC_INNER_PRODUCT)  # what v1 saved
    old.add(np.ascontiguousarray(ann.UnitRows(features)[np.arange(len(features))]))
    with files.atomic_outputs(art.search_ann_manifest, [art.visual_features], built_by="hnsw-ip-M16-efc100-pca256-v1",
                              root=art.data_dir) as outputs:
        faiss.write_index(old, str(outputs(art.search_ann_index)))
        with open(outputs(art.search_ann_projection), "wb") as fh:
            np.save(fh, np.zeros((0, 0), np.float32))
    assert ann.AnnIndex.load(art) is None
    aid = int(np.load(art.visual_article_ids)[0])
    engine = fs.Search(art, index="ann")
    assert engine.by_photo(art.image(aid), k=3)["article_id"][0] == aid
    assert isinstance(engine.ann_index.index, faiss.IndexIVF)
    record = files.require_fresh(art.search_ann_manifest, "search.py", art.data_dir)
    assert record["built_by"] == ann.ANN_VERSION and art.search_ann_settings.exists()
    again = ann.AnnIndex.load(art)
    assert again is not None and again.settings == engine.ann_index.settings
    assert again.index.nprobe == engine.ann_index.settings["nprobe"]
