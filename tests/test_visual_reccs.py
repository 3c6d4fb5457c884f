"""visual_reccs.py: blockwise top-k twins against brute force, the twins table, one-article lookups."""
import json
import re

import numpy as np
import polars as pl
import pytest

import visual_reccs as vr
from fde import visual_index
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.files import atomic_outputs, save_npy, write_json
from fde.ids import product_codes

SCHEMA = {"article_id": pl.Int32, "twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}


def catalogue(n_products: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Article ids with 1-4 colourways per product, and float16 features with product clusters."""
    rng = np.random.default_rng(seed)
    ids, features = [], []
    for p in range(n_products):
        centre = rng.gamma(1.0, 1.0, 64)
        for colour in range(rng.integers(1, 5)):
            ids.append((108775 + 37 * p) * 1000 + 10 + colour)
            features.append(centre + rng.gamma(1.0, 0.6, 64))  # colourways look alike, not identical
    return np.array(ids, dtype=np.int32), np.array(features, dtype=np.float16)


def write_features(root, ids, features, missing=(), unreadable=()) -> Artifacts:
    """The three outputs of visual_features.py and their manifest, written directly."""
    artifacts = Artifacts(root / "data", root / "images")
    with atomic_outputs(artifacts.manifest("visual_features.py"), (), "visual_features.py", artifacts.data_dir) as out:
        save_npy(features, out(artifacts.visual_features))
        save_npy(ids, out(artifacts.visual_article_ids))
        write_json({"count": len(ids), "dim": features.shape[1], "missing_article_ids": list(missing),
                    "unreadable": [{"article_id": a, "error": "OSError: image file is truncated"}
                                   for a in unreadable]}, out(artifacts.visual_meta))
    return artifacts


def brute_force(vectors, k, codes=None):
    """Full similarity matrix, self (and same code) excluded, best k by score then index."""
    scores = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(scores, -np.inf)
    if codes is not None:
        scores[codes[:, None] == codes[None, :]] = -np.inf
    columns = np.broadcast_to(np.arange(len(vectors)), scores.shape)
    order = np.lexsort((columns, -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.parametrize("block", [7, 64, 1024])
@pytest.mark.parametrize("exclude", [False, True])
def test_blockwise_top_k_matches_brute_force(block, exclude):
    ids, features = catalogue()
    vectors = visual_index.normalize(features)
    codes = product_codes(ids) if exclude else None
    index, score = visual_index.top_k_twins(vectors, 6, codes, block=block)
    want_index, want_score = brute_force(vectors, 6, codes)
    finite = np.isfinite(want_score)
    assert (index == np.where(finite, want_index, -1)).all()
    np.testing.assert_allclose(score[finite], want_score[finite], atol=1e-5)
    assert np.isneginf(score[~finite]).all()


def test_hand_checkable_scores(tmp_path):
    # Four arrows in the plane: cosine is the cosine of the angle between them.
    ids = np.array([108775010, 108775011, 110065001, 110065002], dtype=np.int32)
    features = np.array([[2, 0], [1, 1], [0, 3], [-1, 0]], dtype=np.float16)
    artifacts = write_features(tmp_path, ids, features)
    vr.build_twins(artifacts, k=3, show_progress=False)
    table = pl.read_parquet(artifacts.visual_twins)
    first = table.filter(pl.col("article_id") == 108775010)
    assert first["twin_id"].to_list() == [108775011, 110065001, 110065002]
    np.testing.assert_allclose(first["score"].to_numpy(), [np.sqrt(0.5), 0.0, -1.0], atol=1e-6)
    assert table.filter(pl.col("article_id") == 110065001)["twin_id"].to_list() == [108775011, 108775010, 110065002]

    vr.build_twins(artifacts, k=3, exclude_same_product=True, show_progress=False)
    first = pl.read_parquet(artifacts.visual_twins).filter(pl.col("article_id") == 108775010)
    assert first["twin_id"].to_list() == [110065001, 110065002]  # its colourway is skipped, nothing else left


def test_twins_table_is_sorted_complete_and_exact(tmp_path):
    ids, features = catalogue()
    artifacts = write_features(tmp_path, ids, features)
    result = vr.build_twins(artifacts, k=5, show_progress=False)
    table = pl.read_parquet(artifacts.visual_twins)
    assert dict(table.schema) == SCHEMA
    assert result["articles"] == len(ids) and result["twins"] == table.height == 5 * len(ids)
    assert table.equals(table.sort("article_id", "rank"))
    ranks = table.group_by("article_id").agg(pl.col("rank")).sort("article_id")["rank"].to_list()
    assert ranks == [[1, 2, 3, 4, 5]] * len(ids)
    assert table.filter(pl.col("article_id") == pl.col("twin_id")).height == 0
    assert table.group_by("article_id").agg(ok=(pl.col("score").diff().fill_null(0) <= 0).all())["ok"].all()
    want_index, want_score = brute_force(visual_index.normalize(features), 5)
    assert (table["twin_id"].to_numpy().reshape(-1, 5) == ids[want_index]).all()
    np.testing.assert_allclose(table["score"].to_numpy().reshape(-1, 5), want_score, atol=1e-5)
    assert table["score"].max() <= 1 + 1e-6


def test_exclude_same_product(tmp_path):
    ids, features = catalogue()
    artifacts = write_features(tmp_path, ids, features)
    vr.build_twins(artifacts, k=5, show_progress=False)
    plain = pl.read_parquet(artifacts.visual_twins)
    # Colourways of one product look alike: without the filter they crowd the top.
    same_product = (pl.col("article_id") // 1000 == pl.col("twin_id") // 1000).mean()
    assert plain.filter(pl.col("rank") == 1).select(same_product).item() > 0.5
    vr.build_twins(artifacts, k=5, exclude_same_product=True, show_progress=False)
    table = pl.read_parquet(artifacts.visual_twins)
    assert table.filter(pl.col("article_id") // 1000 == pl.col("twin_id") // 1000).height == 0
    assert table.height == 5 * len(ids)
    twins = visual_index.VisualIndex.load(artifacts)
    for aid in ids[::7]:
        got = twins.twins(int(aid), k=5, exclude_same_product=True)
        want = table.filter(pl.col("article_id") == aid)
        assert got["twin_id"].to_list() == want["twin_id"].to_list()


def test_lookup_matches_table_for_any_k_and_id_form(tmp_path):
    ids, features = catalogue()
    artifacts = write_features(tmp_path, ids, features)
    vr.build_twins(artifacts, k=5, show_progress=False)
    table = pl.read_parquet(artifacts.visual_twins)
    twins = visual_index.VisualIndex.load(artifacts)
    assert len(twins) == len(ids)
    for aid in ids:
        got = twins.twins(int(aid), k=5)
        want = table.filter(pl.col("article_id") == aid)
        assert dict(got.schema) == {"twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}
        assert got["twin_id"].to_list() == want["twin_id"].to_list()
        assert got["rank"].to_list() == [1, 2, 3, 4, 5]
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-5)
    aid = int(ids[3])
    assert twins.twins(f"{aid:010d}").equals(twins.twins(str(aid))) and twins.twins(aid).equals(twins.twins(str(aid)))
    longer = twins.twins(aid, k=40)
    assert longer.height == 40 and longer.head(5)["twin_id"].to_list() == twins.twins(aid, k=5)["twin_id"].to_list()
    assert twins.twins(aid, k=255).height == len(ids) - 1  # everything but itself


def test_unknown_or_imageless_ids_are_user_errors(tmp_path):
    ids, features = catalogue(5)
    no_file, broken = 999999001, 999999002
    artifacts = write_features(tmp_path, ids, features, missing=[no_file], unreadable=[broken])
    twins = visual_index.VisualIndex.load(artifacts)
    assert twins.has(f"{ids[0]:010d}") and twins.has(int(ids[0]))
    for bad in (no_file, broken, 123, "12ab", "01234567890"):
        assert not twins.has(bad)
    with pytest.raises(UserError, match="0999999001 has no image file"):
        twins.twins(no_file)
    with pytest.raises(UserError, match="0999999002 has an unreadable image"):
        twins.twins(f"{broken:010d}")
    with pytest.raises(UserError, match="0000000123 is not among the"):
        twins.twins("123")
    with pytest.raises(UserError, match="is not an article id"):
        twins.twins("12ab")
    with pytest.raises(UserError, match="between 1 and 255"):
        twins.twins(ids[0], k=0)
    with pytest.raises(UserError, match="between 1 and 255"):
        vr.build_twins(artifacts, k=256, show_progress=False)


def test_missing_features_say_what_to_run(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    expected = f"run `python visual_features.py --data-dir {art.data_dir} --images-dir {art.images_dir}` first"
    with pytest.raises(UserError, match=re.escape(expected)):
        vr.build_twins(art, show_progress=False)


@pytest.mark.slow  # runs whole stages on the tiny sample
def test_tiny_sample_end_to_end(tiny):
    """The real stages on the generated sample: every image gets a vector and 12 plausible twins."""
    import visual_features as vf

    vf.embed_catalogue(tiny, num_workers=0, batch_size=32, show_progress=False)
    meta = json.loads(tiny.visual_meta.read_text())
    articles = pl.read_parquet(tiny.articles)
    has_file = np.array([tiny.image(a).exists() for a in articles["article_id"]])
    assert meta["count"] + len(meta["unreadable"]) == has_file.sum()
    assert meta["missing_article_ids"] == articles["article_id"].filter(~has_file).to_list()

    vr.build_twins(tiny, k=12, exclude_same_product=True, show_progress=False)
    table = pl.read_parquet(tiny.visual_twins)
    assert table["article_id"].n_unique() == meta["count"] and table.height == 12 * meta["count"]
    # The generator draws one silhouette per product type: twins from other products should share
    # the query's type far more often than random picks would.
    labels = articles.select("article_id", "product_type_no")
    hits = (table.join(labels, on="article_id")
            .join(labels.rename({"article_id": "twin_id", "product_type_no": "twin_type"}), on="twin_id"))
    share = (hits["product_type_no"] == hits["twin_type"]).mean()
    chance = (labels.group_by("product_type_no").len()["len"] ** 2).sum() / labels.height ** 2
    assert share > 2 * chance, (share, chance)
