"""launch.py: launches, the similarity audience and the twins lookup, with exact values on a hand-made shop."""
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from fde import launch, strategies, visual_index
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.files import write_parquet

CUTOFF = date(2020, 9, 23)
L, A, B, C, D, E = 1001001, 1002001, 1003001, 1004001, 1005001, 1006001  # L is the launch
ARTICLES = pl.DataFrame({
    "article_id": [L, A, B, C, D, E],
    "product_type_name": ["Trousers", "Trousers", "Trousers", "Sweater", "Top", "Sweater"],
    "colour_group_name": ["Dark Blue", "Dark Blue", "Black", "Red", "Dark Blue", "Red"],
    "department_name": ["Trousers", "Trousers", "Trousers", "Knitwear", "Jersey", "Knitwear"],
    "index_group_name": ["Ladieswear", "Ladieswear", "Ladieswear", "Menswear", "Ladieswear", "Menswear"],
}, schema_overrides={"article_id": pl.Int32}).with_columns(pl.exclude("article_id").cast(pl.Categorical))
# customer, article, day: 1 buys A twice (last week and 4 weeks earlier), 2 buys B 8 days before the
# cut-off, 3 buys only the unrelated C, 4 buys D last week, 5 bought A too long ago, 7 buys E (nothing
# like L but for its photo) 3 days before; L sells after the cut-off.
TRANSACTIONS = pl.DataFrame({
    "t_dat": [date(2020, 9, 22), date(2020, 8, 25), date(2020, 9, 15), date(2020, 9, 20), date(2020, 9, 22),
              date(2020, 6, 1), date(2020, 9, 25), date(2020, 9, 22), date(2020, 9, 20)],
    "customer_id": [1, 1, 2, 3, 4, 5, 6, 1, 7],
    "article_id": [A, A, B, C, D, A, L, A, E],  # row 8: a second unit of the same purchase
}, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32})
WEEK = 0.5 ** (7 / launch.HALF_LIFE_DAYS)  # weight of a purchase 8 days before the cut-off (days_ago 7)


def scorer(visual=None, ranked=None) -> launch.LaunchAudience:
    return launch.LaunchAudience(ARTICLES, TRANSACTIONS, CUTOFF, visual=visual, ranked=ranked)


def photo_index(twins_path=None) -> visual_index.VisualIndex:
    """L, A and E look the same, B is at cosine 0.6, C at 0, D opposite; stored in a shuffled order."""
    ids = np.array([C, L, D, A, B, E], dtype=np.int32)
    features = np.array([[0, 5], [2, 0], [-1, 0], [3, 0], [0.6, 0.8], [1, 0]], dtype=np.float32)
    return visual_index.VisualIndex(ids, features, twins_path)


def test_launches_are_articles_without_sales_before_the_cutoff():
    assert launch.launches(ARTICLES, TRANSACTIONS, CUTOFF).to_list() == [L]
    assert launch.launches(ARTICLES, TRANSACTIONS).to_list() == []  # L sold after the cut-off
    assert launch.launches(ARTICLES, TRANSACTIONS, date(2020, 9, 21)).to_list() == [D, L]
    assert launch.launches(ARTICLES, TRANSACTIONS, date(2020, 9, 20)).to_list() == [E, D, C, L]
    assert launch.default_cutoff(TRANSACTIONS) == date(2020, 9, 26)


def test_recent_purchases_window_and_duplicates():
    recent = launch.recent_purchases(TRANSACTIONS, CUTOFF).sort("customer_id", "days_ago")
    assert recent.rows() == [(1, A, 0), (1, A, 28), (2, B, 7), (3, C, 2), (4, D, 0), (7, E, 2)]


def test_content_audience_exact_scores_and_reasons():
    found = scorer().score(L)
    assert found["customer_id"].to_list() == [1, 2, 4]
    assert found["rank"].to_list() == [1, 2, 3]
    # 1: A is identical on the 4 fields (1.0) and the same type in the same colour, bought at weights 1 and 0.5
    # 2: B shares 3 of 4 fields, bought 8 days before; 4: D shares 2 of 4, bought last week
    assert found["similarity"].to_list() == pytest.approx([1.5, 0.75 * WEEK, 0.5])
    assert found["affinity"].to_list() == pytest.approx([1.5, 0, 0])
    assert found["score"].to_list() == pytest.approx([3.0, 0.75 * WEEK, 0.5], rel=1e-6)
    assert found["reason"].to_list() == ["often buys Trousers in Dark Blue",
                                         "bought 0001003001 2 weeks ago, also Trousers",
                                         "bought 0001005001 last week, also in Dark Blue"]
    assert found["source_article_id"].to_list() == [A, B, D]
    assert dict(found.schema) | launch.AUDIENCE_SCHEMA == dict(found.schema)  # the contract's columns and types


def test_visual_audience_averages_photo_and_metadata():
    """similarity = (metadata share + photo cosine, clipped at 0) / 2, neighbours from 0.5 up."""
    found = scorer(photo_index()).score(L)
    # A: (1 + 1) / 2; B: (0.75 + 0.6) / 2; E: (0 + 1) / 2; D: (0.5 + 0) / 2 = 0.25 is too far, C (0 + 0) too
    assert found["customer_id"].to_list() == [1, 2, 7]
    assert found["similarity"].to_list() == pytest.approx([1.5, 0.675 * WEEK, 0.5 * 0.5 ** (2 / 28)])
    assert found["reason"].to_list() == ["often buys Trousers in Dark Blue",
                                         "bought 0001003001 2 weeks ago, also Trousers",  # metadata is closer
                                         "bought 0001006001 last week, which looks like it"]  # the photo is


def test_a_launch_without_similar_buyers_has_an_empty_audience():
    shop = ARTICLES.vstack(pl.DataFrame({"article_id": [9009001], "product_type_name": ["Hat"],
                                         "colour_group_name": ["Yellow"], "department_name": ["Hats"],
                                         "index_group_name": ["Baby"]}, schema=ARTICLES.schema))
    found, source = launch.LaunchAudience(shop, TRANSACTIONS, CUTOFF).audience(9009001)
    assert found.is_empty() and source == "similarity"
    assert dict(found.schema) | launch.AUDIENCE_SCHEMA == dict(found.schema)


def test_unknown_article_is_a_user_error():
    with pytest.raises(UserError, match="0999999999 is not in the catalogue"):
        scorer().audience("0999999999")
    with pytest.raises(UserError, match="is not an article id"):
        scorer().audience("abc")


def test_audience_prefers_the_ranker_table(tmp_path):
    path = tmp_path / "launch_audience.parquet"
    ranked = pl.DataFrame({"article_id": [L, L, D], "customer_id": [4, 2, 1], "rank": [2, 1, 1],
                           "score": [0.1, 0.9, 0.5], "reason": ["x", "y", "z"], "source_article_id": [None, B, A]},
                          schema=launch.AUDIENCE_SCHEMA)
    write_parquet(ranked, path)
    found, source = scorer(ranked=path).audience(L)
    assert source == "ranker" and found["customer_id"].to_list() == [2, 4]
    found, source = scorer(ranked=path).audience(A, top=2)  # not in the table: the similarity path
    assert source == "similarity" and found.height <= 2


def test_age_bands_and_profile():
    ages = pl.DataFrame({"age": [16, 24, 25, 64, 65, None]}, schema={"age": pl.UInt8})
    assert ages.select(band=strategies.age_band_label(pl.col("age")))["band"].to_list() == \
        ["under 25", "under 25", "25-34", "55-64", "65+", "unknown"]
    found = scorer().score(L)
    customers = pl.DataFrame({"customer_id": [1, 2, 4], "age": [30, 31, 70]},
                             schema={"customer_id": pl.UInt64, "age": pl.UInt8})
    bands, groups = launch.audience_profile(found, customers, launch.recent_purchases(TRANSACTIONS, CUTOFF), ARTICLES)
    assert bands.rows() == [("25-34", 2), ("65+", 1)]
    assert groups.rows() == [("Ladieswear", 4)]  # customers 1 (twice), 2 and 4: all their window's purchases


def test_visual_index_similarities_and_twins(tmp_path):
    index = photo_index()
    scores = dict(zip(index.article_ids.tolist(), index.similarities(L).tolist()))
    assert scores[A] == pytest.approx(1) and scores[B] == pytest.approx(0.6) and scores[C] == pytest.approx(0)
    assert scores[D] == pytest.approx(-1) and scores[L] == -np.inf
    assert index.twins(L, k=4)["twin_id"].to_list() == [A, E, B, C]  # A and E tie: by id
    assert index.twins(L, k=9)["twin_id"].to_list() == [A, E, B, C, D]
    with pytest.raises(UserError, match="not among the 6 articles"):
        index.twins(1234567)


def test_twins_table_answers_when_it_can(tmp_path):
    """k <= the table's k comes from the table; more, or hidden colourways that empty it, scan the features."""
    path = tmp_path / "visual_twins.parquet"
    # a deliberately different answer in the table, so that the test sees which path answered
    write_parquet(pl.DataFrame({"article_id": [L, L], "twin_id": [D, 1001002], "rank": [1, 2], "score": [0.9, 0.8]},
                               schema={"article_id": pl.Int32, "twin_id": pl.Int32, "rank": pl.UInt8,
                                       "score": pl.Float32}), path)
    index = photo_index(path)
    assert index.twins(L, k=2)["twin_id"].to_list() == [D, 1001002]
    assert index.twins(L, k=1, exclude_same_product=True)["twin_id"].to_list() == [D]
    assert index.twins(L, k=2, exclude_same_product=True)["twin_id"].to_list() == [A, E]  # table too short
    assert index.twins(L, k=3)["twin_id"].to_list() == [A, E, B]


def test_visual_index_load_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="visual_features.py"):
        visual_index.VisualIndex.load(Artifacts(tmp_path / "data", tmp_path / "images"))


def reference_neighbours(audience: launch.LaunchAudience, key: int) -> pl.DataFrame:
    """LaunchAudience.neighbours written plainly in polars over the whole catalogue (what it computed until it
    read precomputed integer codes): the content share, the photo, the NEIGHBOURS best from MIN_SIMILARITY up."""
    catalogue = audience.articles
    row = audience.launch(key)
    columns = [c for c in launch.CONTENT_COLUMNS if c in catalogue.columns and row.get(c) is not None]
    same = [(pl.col(c).cast(pl.String) == str(row[c])).fill_null(False).cast(pl.Float64) for c in columns]
    content = pl.sum_horizontal(same) / len(columns) if columns else pl.lit(0.0)
    near = catalogue.filter(pl.col("article_id") != key).select("article_id", content=content)
    if audience.visual is not None and audience.visual.has(key):
        scores = audience.visual.similarities(key)
        finite = np.isfinite(scores)
        looks = pl.DataFrame({"article_id": audience.visual.article_ids[finite], "look": scores[finite]},
                             schema={"article_id": pl.Int32, "look": pl.Float64})
        near = (near.join(looks, on="article_id", how="left")
                .with_columns(pl.col("look").clip(lower_bound=0.0).fill_null(0.0))
                .with_columns(similarity=(pl.col("content") + pl.col("look")) / 2))
    else:
        near = near.with_columns(similarity=pl.col("content"))
    near = (near.filter(pl.col("similarity") >= launch.MIN_SIMILARITY)
            .sort(["similarity", "article_id"], descending=[True, False]).head(launch.NEIGHBOURS))
    matching = catalogue.filter((pl.col("product_type_name").cast(pl.String) == row["product_type_name"])
                                & (pl.col("colour_group_name").cast(pl.String) == row["colour_group_name"])
                                & (pl.col("article_id") != key))
    return (near.select("article_id", "similarity")
            .join(matching.select("article_id", same_type_colour=pl.lit(True)), on="article_id", how="full",
                  coalesce=True)
            .with_columns(pl.col("similarity").fill_null(0.0), pl.col("same_type_colour").fill_null(False))
            .sort("article_id"))


@pytest.mark.parametrize("neighbours", [launch.NEIGHBOURS, 3])  # 3: many ties at the cut, broken by id
def test_neighbours_and_candidates_on_the_tiny_sample(tiny, neighbours, monkeypatch):
    """The tiny sample's launches and some sold articles, with and without photos (random features for every
    other article): the neighbours of a plain polars version; candidates = the best of score, in its order;
    the audience does not depend on the order the transactions come in."""
    monkeypatch.setattr(launch, "NEIGHBOURS", neighbours)
    articles = pl.read_parquet(tiny.articles)
    transactions = pl.read_parquet(tiny.transactions)
    cutoff = transactions["t_dat"].max() - timedelta(days=20)
    ids = articles["article_id"].to_numpy()[::2]
    photos = visual_index.VisualIndex(ids, np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32))
    asked = launch.launches(articles, transactions, cutoff).head(15).to_list() + articles["article_id"].sample(
        15, seed=0).to_list()
    shuffled = transactions.sample(fraction=1.0, shuffle=True, seed=1)
    compared = 0
    for visual in (None, photos):
        audience = launch.LaunchAudience(articles, transactions, cutoff, visual=visual)
        again = launch.LaunchAudience(articles, shuffled, cutoff, visual=visual)
        for key in asked:
            expected = reference_neighbours(audience, key)
            assert audience.neighbours(key).select(expected.columns).equals(expected), key
            scored = audience.score(key)
            best = audience.candidates(key, limit=7)
            assert best.equals(scored.head(7).select("customer_id", "score")), key
            assert again.score(key).equals(scored), key
            compared += scored.height
    assert compared > 100  # audiences were there to compare
