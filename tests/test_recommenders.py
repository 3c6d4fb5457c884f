"""Every strategy behind one interface: exact values on a hand-made shop, shape and leaks on the tiny sample."""
import math
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fde import strategies
from fde.evaluation import fill_with
from fde.strategies import (
    CategoryPopularity,
    Colourways,
    ContentSimilarity,
    CoPurchase,
    NewArrivals,
    Popularity,
    PurchaseHistory,
    Repurchase,
    VisualSimilarity,
    by_customer,
    customer_rows,
    nearest_neighbours,
    new_articles,
    popularity_strategies,
)

from shop import AGES, ARTICLES, CUSTOMERS, CUTOFF, TWINS, TX, VISUAL, all_strategies, check_interface, lists

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("k", [1, 3, 12])
@pytest.mark.parametrize("which", range(len(all_strategies())), ids=[s.name for s in all_strategies()])
def test_every_strategy_follows_the_interface(which, k):
    strategy = all_strategies()[which]
    recs = strategy.fit(TX, ARTICLES).recommend(CUSTOMERS, k)
    check_interface(recs, k)


def test_bad_k_is_an_error():
    with pytest.raises(ValueError):
        Popularity().fit(TX).recommend(CUSTOMERS, 0)


def test_popularity_all_time_and_last_week_exact():
    assert lists(Popularity("a").fit(TX).recommend(CUSTOMERS[:1], 4)) == {1: [102001, 103001, 101001, 104001]}
    last_week = Popularity("w", window_days=7).fit(TX).recommend(CUSTOMERS[:1], 12)
    # the window starts 2020-09-09: 101001 (sold 2020-09-01) is out
    assert last_week["article_id"].to_list() == [102001, 103001, 104001]
    assert last_week["score"].to_list() == pytest.approx([1.0, 0.5, 0.5])


def test_decayed_popularity_exact_scores():
    recs = Popularity(half_life_days=7).fit(TX).recommend(CUSTOMERS[:1], 12)
    raw = {102001: 2 * 2 ** (-2 / 7), 104001: 2 ** (-1 / 7), 103001: 2 ** (-15 / 7) + 2 ** (-6 / 7),
           101001: 2 ** (-15 / 7)}
    best = max(raw.values())
    assert recs["article_id"].to_list() == sorted(raw, key=lambda a: -raw[a])
    assert recs["score"].to_list() == pytest.approx([raw[a] / best for a in recs["article_id"]], rel=1e-5)


def test_age_band_popularity_uses_band_and_falls_back_to_global():
    strategy = Popularity("age", customers=AGES, prior_weight=0.01).fit(TX)
    recs = lists(strategy.recommend(CUSTOMERS, 12))
    assert recs[1][:3] == [102001, 101001, 104001]  # what customer 1's band bought, global share breaks ties
    assert recs[2][0] == 103001  # customer 2 (age 50) bought 103001 twice
    assert recs[3] == lists(Popularity("g").fit(TX).recommend(CUSTOMERS, 12))[3]  # unknown age: global list
    assert len(recs[2]) == 4  # a small band is completed from the global shares


def test_purchase_history_exact_scores_and_colourways():
    strategy = PurchaseHistory(half_life_days=14, colourway_weight=0.3, window_days=None).fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    one = recs.filter(pl.col("customer_id") == 1)
    expected = {104001: 2 ** (-1 / 14), 102001: 2 ** (-2 / 14), 101001: 2 ** (-15 / 14),
                101002: 0.3 * 2 ** (-15 / 14)}  # the never-sold blue colourway of 101001
    assert one["article_id"].to_list() == [104001, 102001, 101001, 101002]
    assert one["score"].to_list() == pytest.approx([1 - math.exp(-expected[a]) for a in one["article_id"]], rel=1e-5)
    assert one["source_article_id"].to_list() == [104001, 102001, 101001, 101001]
    two = recs.filter(pl.col("customer_id") == 2)  # two purchases of one article add up
    assert two["score"].to_list() == pytest.approx([1 - math.exp(-(2 ** (-15 / 14) + 2 ** (-6 / 14)))], rel=1e-5)
    assert 4 not in recs["customer_id"].to_list()  # no history, no recommendation
    reasons = one.select(r=strategy.reason(pl.col("article_id"), pl.col("source_article_id")))["r"].to_list()
    assert reasons == ["bought before"] * 3 + ["colourway of 0000101001"]


def test_purchase_history_window_forgets_old_purchases():
    strategy = PurchaseHistory(window_days=7).fit(TX, ARTICLES)
    assert lists(strategy.recommend(CUSTOMERS, 12)) == {1: [104001, 102001], 2: [103001], 3: [102001]}


def test_fill_with_popular_completes_lists_without_duplicates():
    hist = PurchaseHistory(window_days=7).fit(TX, ARTICLES).recommend(CUSTOMERS, 12)
    popular = Popularity("a").fit(TX).top_articles(12)
    filled = lists(fill_with(hist, popular, CUSTOMERS.to_frame(), k=3))
    assert filled[1] == [104001, 102001, 103001]
    assert filled[4] == [102001, 103001, 101001]


def test_category_popularity_exact_scores_and_reasons():
    strategy = CategoryPopularity(half_life_days=120).fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    one = recs.filter(pl.col("customer_id") == 1)
    # customer 1 bought denim 15 and 2 days ago, knitwear yesterday
    denim, knit = 2 ** (-15 / 120) + 2 ** (-2 / 120), 2 ** (-1 / 120)
    denim, knit = denim / (denim + knit), knit / (denim + knit)
    sales = {101001: 2 ** (-15 / 7), 102001: 2 * 2 ** (-2 / 7), 103001: 2 ** (-15 / 7) + 2 ** (-6 / 7),
             104001: 2 ** (-1 / 7)}
    trend = {a: v / sales[102001] for a, v in sales.items()}
    want = {102001: denim * trend[102001], 101001: denim * trend[101001],
            104001: knit * trend[104001], 103001: knit * trend[103001]}
    assert one["article_id"].to_list() == sorted(want, key=lambda a: -want[a])
    assert one["score"].to_list() == pytest.approx([want[a] for a in one["article_id"]], rel=1e-5)
    assert one["source_article_id"].null_count() == one.height
    assert 4 not in recs["customer_id"].to_list()
    reasons = one.select(r=strategy.reason(pl.col("article_id"), pl.col("source_article_id")))["r"].to_list()
    assert reasons[0] == "trending in Denim"


def test_category_popularity_keeps_the_top_categories_only():
    strategy = CategoryPopularity(top_categories=1).fit(TX, ARTICLES)
    assert set(strategy.recommend(CUSTOMERS[:1], 12)["article_id"]) == {101001, 102001}  # denim only


def test_content_similarity_prefers_same_kind_and_reaches_unsold_articles():
    strategy = ContentSimilarity(popularity_weight=0.0).fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    three = recs.filter(pl.col("customer_id") == 3)  # bought black denim trousers 102001
    top = three["article_id"].to_list()
    assert set(top[:3]) == {101001, 101002, 105001}  # the other trousers, incl. two never sold
    assert top.index(101001) < top.index(101002)  # same colour beats another colour
    assert set(three["source_article_id"].to_list()) == {102001}
    assert 4 not in recs["customer_id"].to_list()


def test_look_ups_made_in_several_threads_at_once_are_all_kept(tiny):
    """Batches scored in threads share a look-alike source's look-ups (neighbours_of keeps them): each thread
    gets its articles' pairs and none is lost or doubled."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    articles, train = pl.read_parquet(tiny.articles), pl.read_parquet(tiny.split("train"))
    order = ["article_id", "neighbour_id"]
    queries = ContentSimilarity().fit(train, articles).recent["article_id"].unique().sort()
    expected = ContentSimilarity().fit(train, articles).neighbours_of(queries).sort(order)
    parts = [queries.gather_every(8, offset=i) for i in range(8)]
    def ask(content, start, part):
        start.wait()  # every thread asks at once
        return content.neighbours_of(part)

    for _ in range(3):
        content = ContentSimilarity().fit(train, articles)
        start = threading.Barrier(len(parts))
        with ThreadPoolExecutor(len(parts)) as pool:
            answers = list(pool.map(lambda part: ask(content, start, part), parts))  # noqa: B023 (waited for here)
        for part, got in zip(parts, answers):
            assert got.sort(order).equals(expected.join(part.to_frame(), on="article_id", how="semi"))
        assert content.neighbour_pairs.sort(order).equals(expected) and content.looked_up.len() == queries.len()
    assert expected.height > 10 * queries.len()


def test_look_ups_do_not_depend_on_the_batches_that_ask_for_them(tiny):
    """Each batch's look-alike pairs are those of looking up every article at once, whatever the batches (every
    score is a float64 product: on some BLAS builds a float32 product's row rounds differently with the other
    rows of its block, and near-tied neighbours changed with the batching)."""
    articles, train = pl.read_parquet(tiny.articles), pl.read_parquet(tiny.split("train"))
    order = ["article_id", "neighbour_id"]
    recent = ContentSimilarity().fit(train, articles).recent["article_id"].unique().sort()
    everything = ContentSimilarity().fit(train, articles).neighbours_of(recent).sort(order)
    for batches in (3, 8, 50):
        content = ContentSimilarity().fit(train, articles)
        for part in [recent.gather_every(batches, offset=i) for i in reversed(range(batches))]:
            pairs = content.neighbours_of(part).sort(order)
            assert pairs.equals(everything.join(part.to_frame(), on="article_id", how="semi"))
        assert content.looked_up.len() == recent.len()


def test_customer_rows_are_the_semi_join_of_a_table_sorted_by_customer():
    """Per-customer tables are kept sorted by customer (by_customer) and read by binary search: the rows and order
    of the semi join, for customers with many, one or no rows, duplicates asked twice, and none asked."""
    rng = np.random.default_rng(5)
    table = by_customer(pl.DataFrame({"customer_id": rng.integers(0, 300, 5_000).astype(np.uint64),
                                      "article_id": rng.integers(0, 50, 5_000).astype(np.int32),
                                      "evidence": rng.random(5_000)}))
    for asked in ([], [7], [7, 7, 3], rng.integers(0, 400, 200).tolist(), list(range(300))):
        customers = pl.DataFrame({"customer_id": asked}, schema={"customer_id": pl.UInt64})
        assert customer_rows(table, customers).equals(table.join(customers, on="customer_id", how="semi"))
    with pytest.raises(ValueError, match="sorted by customer_id"):
        customer_rows(table.reverse(), customers)


def test_content_recommends_only_available_articles():
    old = TX.with_columns(pl.when(pl.col("article_id") == 101001).then(pl.lit(date(2019, 1, 1)))
                          .otherwise(pl.col("t_dat")).alias("t_dat"))
    strategy = ContentSimilarity(active_days=28, recent_days=900).fit(old, ARTICLES)
    assert 101001 not in strategy.targets.to_list()  # last sold long ago: out of the shop
    assert 101001 not in strategy.recommend(CUSTOMERS, 12)["article_id"].to_list()


def test_popularity_weight_multiplies_similarity_and_launches_count_as_median_sellers():
    strategy = VisualSimilarity(TWINS, half_life_days=30, popularity_weight=1.0).fit(TX, ARTICLES)
    weights = dict(strategy.target_weights(TX, ARTICLES).iter_rows())
    # decayed sales (half-life 7 days) over the last 28 days; 101002 and 105001 never sold
    sales = {101001: 2 ** (-15 / 7), 102001: 2 * 2 ** (-2 / 7), 103001: 2 ** (-15 / 7) + 2 ** (-6 / 7),
             104001: 2 ** (-1 / 7)}
    median = (sales[103001] + sales[104001]) / 2
    best = sales[102001]
    assert weights == pytest.approx({**{a: v / best for a, v in sales.items()}, 101002: median / best,
                                     105001: median / best})
    three = strategy.recommend(CUSTOMERS, 12).filter(pl.col("customer_id") == 3)
    want = {101002: 0.9 * median / best, 103001: 0.5 * sales[103001] / best, 104001: 0.4 * sales[104001] / best}
    assert three["article_id"].to_list() == sorted(want, key=lambda a: -want[a])
    assert three["score"].to_list() == pytest.approx([want[a] * 2 ** (-2 / 30) for a in three["article_id"]],
                                                     rel=1e-5)


def test_nearest_neighbours_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 150, dtype=np.int32)
    table = nearest_neighbours(vectors, ids, vectors, ids, n=5, block=7)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    for row, article in enumerate(ids):
        got = table.filter(pl.col("article_id") == article)
        want = [ids[j] for j in np.argsort(-sims[row])[:5] if sims[row, j] > 0]
        assert got["neighbour_id"].to_list() == want



@pytest.mark.parametrize("first", [1, 3, 16, 10_000])
def test_weighted_neighbours_read_in_decreasing_weight_are_every_targets_best(monkeypatch, first):
    """Queries stop once no later (lighter) target can enter their top n: the same table as comparing every
    target, ties (by id) included, whatever the first chunk's size."""
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(40, 6)).astype(np.float32)
    queries[5] = queries[4]  # two queries with the same neighbours
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    targets = rng.normal(size=(300, 6)).astype(np.float32)
    targets[7] = targets[8]  # equal scores, broken by id
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    query_ids = np.arange(1000, 1040, dtype=np.int32)
    target_ids = rng.permutation(np.arange(1010, 1310)).astype(np.int32)  # 30 queries are targets too
    weights = (rng.pareto(1.5, size=300) + 1).astype(np.float32)
    weights = (weights / weights.max()) ** np.float32(0.5)
    weights[8] = weights[7]
    monkeypatch.setattr(strategies, "FIRST_TARGETS", first)
    compared, top_n = [], strategies.top_n

    def spy(sims, *args, **kwargs):
        compared.append(sims.size)
        return top_n(sims, *args, **kwargs)

    monkeypatch.setattr(strategies, "top_n", spy)
    table = nearest_neighbours(queries, query_ids, targets, target_ids, n=6, block=9, target_weights=weights)
    scores = (queries @ targets.T) * weights[None, :]
    column = {t: j for j, t in enumerate(target_ids)}
    for row, article in enumerate(query_ids):
        ranked = sorted((-scores[row, j], target_ids[j]) for j in range(300)
                        if target_ids[j] != article and scores[row, j] > 0)
        want = [t for _, t in ranked[:6]]
        got = table.filter(pl.col("article_id") == article)
        assert got["neighbour_id"].to_list() == want
        assert got["similarity"].to_list() == pytest.approx([scores[row, column[t]] for t in want])
    # the heaviest targets settle most queries: fewer scores computed than queries x targets
    assert (sum(compared) < 40 * 300) == (first < 300)


@pytest.mark.parametrize("weighted", [False, True])
def test_neighbours_are_those_of_float64_products_however_near_the_ties(monkeypatch, weighted):
    """Targets a few float32 roundings apart: the float32 pass only finds candidates, so every neighbour and
    every similarity is that of float64 products rounded to float32 (x weight), ties by id, whatever the block."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 64))
    targets = base[rng.integers(0, 6, 400)] + 1e-7 * rng.normal(size=(400, 64))  # near-ties everywhere
    targets[10:20] = targets[0:10]  # and exact ones
    targets = (targets / np.linalg.norm(targets, axis=1, keepdims=True)).astype(np.float32)
    target_ids = rng.permutation(np.arange(5000, 5400)).astype(np.int32)
    queries, query_ids = targets[:60], target_ids[:60]
    weights = np.sort(rng.uniform(0.5, 1.0, 400).astype(np.float32))[::-1].copy() if weighted else None
    monkeypatch.setattr(strategies, "FIRST_TARGETS", 50)
    exact = (queries.astype(np.float64) @ targets.astype(np.float64).T).astype(np.float32)
    if weighted:
        exact *= weights[None, :]
    tables = [nearest_neighbours(queries, query_ids, targets, target_ids, n=8, block=b, target_weights=weights)
              for b in (1, 7, 60)]
    for table in tables[1:]:
        assert table.equals(tables[0])
    for row, article in enumerate(query_ids):
        ranked = sorted((-exact[row, j], target_ids[j]) for j in range(400)
                        if target_ids[j] != article and exact[row, j] > 0)[:8]
        got = tables[0].filter(pl.col("article_id") == article)
        assert got["neighbour_id"].to_list() == [t for _, t in ranked]
        assert got["similarity"].to_list() == [-s for s, _ in ranked]  # equal, not approximately


def test_visual_twins_of_recent_purchases_exact():
    strategy = VisualSimilarity(TWINS, half_life_days=30, popularity_weight=0.0).fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    three = recs.filter(pl.col("customer_id") == 3)
    assert three["article_id"].to_list() == [101002, 103001, 104001]
    assert three["score"].to_list() == pytest.approx([s * 2 ** (-2 / 30) for s in (0.9, 0.5, 0.4)], rel=1e-5)
    one = recs.filter(pl.col("customer_id") == 1)
    # 103001 is a twin of 104001 (0.95, yesterday) and of 102001 (0.5): the best explanation wins
    assert one.filter(pl.col("article_id") == 103001)["source_article_id"].to_list() == [104001]
    reasons = three.select(r=strategy.reason(pl.col("article_id"), pl.col("source_article_id")))["r"]
    assert reasons.to_list() == ["looks like 0000102001"] * 3


def test_visual_load_without_twins_says_so(tmp_path, capsys):
    from fde.artifacts import Artifacts
    assert VisualSimilarity.load(Artifacts(tmp_path)) is None
    assert "no visual twins" in capsys.readouterr().out


def test_fit_is_deterministic_and_ignores_row_order():
    for strategy in all_strategies():
        a = strategy.fit(TX, ARTICLES).recommend(CUSTOMERS, 12)
        b = strategy.fit(TX.reverse(), ARTICLES).recommend(CUSTOMERS, 12)
        assert a.equals(b), strategy.name


# ---------------------------------------------------------------------------- tiny sample

def test_tiny_strategies_shape_and_no_future_articles(tiny):
    articles = pl.read_parquet(tiny.articles)
    customers = pl.read_parquet(tiny.customers)
    train = pl.read_parquet(tiny.split("train"))
    test = pl.read_parquet(tiny.split("test"))
    cutoff = train["t_dat"].max() + timedelta(days=1)
    assert test["t_dat"].min() > cutoff  # validation lies between
    sold_before = set(train["article_id"].unique())
    who = customers["customer_id"].head(300)
    for strategy in popularity_strategies(customers):
        recs = strategy.fit(train, articles).recommend(who, 12)
        check_interface(recs, 12)
        assert set(recs["article_id"]) <= sold_before, strategy.name  # later sales never leak in
    # purchase history: only what the customer bought before the cut-off, or its colourways
    history = PurchaseHistory().fit(train, articles)
    recs = history.recommend(who, 12)
    check_interface(recs, 12)
    product = articles.select("article_id", "product_code")
    bought = train.join(product, on="article_id").select("customer_id", "product_code").unique()
    assert recs.join(product, on="article_id").join(bought, on=["customer_id", "product_code"], how="anti").height == 0
    assert history.history.join(train.select("customer_id", "article_id").unique(),
                                on=["customer_id", "article_id"], how="anti").height == 0
    content = ContentSimilarity().fit(train, articles)
    check_interface(content.recommend(who, 12), 12)
    # the purchases content similarity starts from are all before the cut-off
    seen = train.select("customer_id", "article_id").unique()
    assert content.recent.join(seen, on=["customer_id", "article_id"], how="anti").height == 0
    assert content.cutoff == cutoff


# ---------------------------------------------------------------------------- new arrivals (cold start)

def test_new_articles_are_the_catalogue_articles_unsold_before_the_cutoff():
    assert new_articles(TX, ARTICLES).to_list() == [101002, 105001]
    assert new_articles(TX, ARTICLES, max_sales=1).to_list() == [101001, 101002, 104001, 105001]


def test_new_arrivals_exact_scores_and_reasons():
    strategy = NewArrivals(VISUAL).fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    recency = {age: math.exp(-math.log(2) / 120 * age) for age in (1, 2, 15)}
    # customer 1 bought 101001 15 days, 102001 2 days and 104001 1 day before the cut-off
    rows = {(r["customer_id"], r["article_id"]): (r["score"], r["source_article_id"], r["rank"])
            for r in recs.iter_rows(named=True)}
    assert set(rows) == {(1, 101002), (1, 105001), (3, 101002), (3, 105001)}  # 2: sweaters look like neither
    assert rows[1, 101002] == (pytest.approx(0.8 * recency[2], abs=1e-6), 102001, 1)
    assert rows[1, 105001] == (pytest.approx(0.8 * recency[15], abs=1e-6), 101001, 2)
    assert rows[3, 101002] == (pytest.approx(0.8 * recency[2], abs=1e-6), 102001, 1)
    assert rows[3, 105001] == (pytest.approx(0.6 * recency[2], abs=1e-6), 102001, 2)
    reasons = recs.select(reason=strategy.reason(pl.col("article_id"), pl.col("source_article_id")))["reason"]
    assert reasons.to_list()[:2] == ["looks like 0000102001 (new arrival)",
                                     "looks like 0000101001 (new arrival)"]


def test_new_arrivals_without_images_use_content_and_say_so():
    strategy = NewArrivals().fit(TX, ARTICLES)
    recs = strategy.recommend(CUSTOMERS, 12, with_source=True)
    assert set(recs["article_id"]) <= {101002, 105001} and recs.height > 0
    reason = recs.head(1).select(strategy.reason(pl.col("article_id"), pl.col("source_article_id"))).item()
    assert reason.startswith("similar to ") and reason.endswith(" (new arrival)")


def test_new_arrivals_never_recommend_what_sold_before_the_cutoff(tiny):
    articles = pl.read_parquet(tiny.articles)
    train = pl.read_parquet(tiny.split("train"))
    who = pl.read_parquet(tiny.customers)["customer_id"]
    rng = np.random.default_rng(0)
    ids = articles["article_id"].to_numpy()
    for visual in (None, (ids, rng.normal(size=(len(ids), 8)).astype(np.float32))):
        recs = NewArrivals(visual).fit(train, articles).recommend(who, 12)
        check_interface(recs, 12)
        assert recs.height > 0
        assert not recs["article_id"].is_in(train["article_id"].unique().implode()).any()


# ---------------------------------------------------------------------------- repurchase, colourways, co-purchase

def test_repurchase_exact_scores_for_both_kernels():
    hyperbolic = Repurchase("hyperbolic", 7.0).fit(TX, ARTICLES, CUTOFF)
    recs = hyperbolic.recommend(CUSTOMERS, 12)
    one = dict(recs.filter(pl.col("customer_id") == 1).select("article_id", "score").iter_rows())
    assert one[104001] == pytest.approx(1 - math.exp(-1 / (1 + 1 / 7)), rel=1e-5)   # bought 1 day before
    assert one[101001] == pytest.approx(1 - math.exp(-1 / (1 + 15 / 7)), rel=1e-5)  # 15 days before
    two = recs.filter(pl.col("customer_id") == 2)["score"].to_list()
    assert two == pytest.approx([1 - math.exp(-(1 / (1 + 15 / 7) + 1 / (1 + 6 / 7)))], rel=1e-5)  # twice
    exponential = Repurchase("exponential", 7.0).fit(TX, ARTICLES, CUTOFF).recommend(CUSTOMERS[1:2], 12)
    assert exponential["score"].to_list() == pytest.approx([1 - math.exp(-(0.5 ** (15 / 7) + 0.5 ** (6 / 7)))],
                                                           rel=1e-5)
    with pytest.raises(ValueError):
        Repurchase("linear", 7.0)


def test_explicit_cutoff_ignores_later_transactions():
    early = Repurchase("hyperbolic", 7.0).fit(TX, ARTICLES, date(2020, 9, 12)).recommend(CUSTOMERS, 12)
    assert lists(early) == {1: [101001], 2: [103001]}  # customer 3's and 1's purchases of 14-15 Sep are after it


def test_colourways_propose_other_colours_of_bought_products_only():
    recs = Colourways("hyperbolic", 7.0).fit(TX, ARTICLES, CUTOFF).recommend(CUSTOMERS, 12, with_source=True)
    assert recs.select("customer_id", "article_id", "source_article_id").rows() == [(1, 101002, 101001)]
    assert recs["score"][0] == pytest.approx(1 - math.exp(-1 / (1 + 15 / 7)), rel=1e-5)


def test_colourways_sum_a_product_s_bought_colours_as_the_pairwise_reference_does():
    """Colourways sums each product's bought articles once and gives the sum to its other colours: the lists of
    a per-(bought, colourway) reference (each colourway's evidence summed over the bought articles of its
    product, the source the one with the most, ties by the lowest id) on a shop of many colours and ties."""
    rng = np.random.default_rng(5)
    articles = pl.DataFrame({"article_id": np.arange(1000, 1300, dtype=np.int32),
                             "product_code": (np.arange(300) // rng.integers(1, 6, 300).clip(1)).astype(np.int32)})
    rows = [(CUTOFF - timedelta(days=int(rng.integers(1, 5))), int(c), int(rng.integers(1000, 1300)))
            for c in range(60) for _ in range(int(rng.integers(1, 25)))]
    tx = pl.DataFrame(rows, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32},
                      orient="row").with_columns(price=pl.lit(0.02, pl.Float32), sales_channel_id=pl.lit(2, pl.UInt8))
    strategy = Colourways("exponential", 7.0).fit(tx, articles, CUTOFF)
    customers = pl.DataFrame({"customer_id": np.arange(60, dtype=np.uint64)})
    own, product = strategy.history, articles.select("article_id", "product_code")
    keys = ["customer_id", "colourway_id"]
    reference = (
        own.join(product, on="article_id").join(product.rename({"article_id": "colourway_id"}), on="product_code")
        .filter(pl.col("colourway_id") != pl.col("article_id"))
        .join(own.select("customer_id", colourway_id="article_id"), on=keys, how="anti")
        .sort([*keys, "evidence", "article_id"], descending=[False, False, True, False])
        .group_by(keys, maintain_order=True)
        .agg(evidence=strategies.exact_sum(pl.col("evidence")), source_article_id=pl.col("article_id").first())
        .select("customer_id", article_id="colourway_id", score=strategies.saturate(pl.col("evidence")),
                source_article_id="source_article_id"))
    expected = strategies.top_k(reference, 10).select(list(strategies.CANDIDATE_SCHEMA))
    got = strategy.candidates(customers, 10)
    assert expected.height > 200 and got.equals(expected)
    ties = own.join(product, on="article_id").group_by("customer_id", "product_code", "evidence").len()
    assert ties.filter(pl.col("len") > 1).height > 0  # bought colours of one product with the same evidence


def test_co_purchase_exact_conditional_probability():
    a, b = 101001, 103001
    rows = [(date(2020, 9, 10), 1, a), (date(2020, 9, 10), 1, b), (date(2020, 9, 12), 2, a), (date(2020, 9, 12), 2, b),
            (date(2020, 9, 15), 3, a), (date(2020, 8, 1), 4, a)]
    tx = pl.DataFrame(rows, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32},
                      orient="row").with_columns(price=pl.lit(0.02, pl.Float32), sales_channel_id=pl.lit(2, pl.UInt8))
    strategy = CoPurchase(pair_days=7, half_life_days=28.0).fit(tx, ARTICLES, CUTOFF)
    recs = strategy.recommend(pl.Series([3], dtype=pl.UInt64), 12, with_source=True)
    w = lambda days: 0.5 ** (days / 28)  # noqa: E731
    p_b_given_a = (w(6) + w(4)) / (w(6) + w(4) + w(1) + w(46))
    assert recs.select("article_id", "source_article_id").rows() == [(b, a)]
    assert recs["score"][0] == pytest.approx(p_b_given_a * w(1), rel=1e-5)
    # a pair bought by a single customer is not a pattern
    single = CoPurchase(pair_days=7).fit(tx.filter(pl.col("customer_id") != 2), ARTICLES, CUTOFF)
    assert single.recommend(pl.Series([3], dtype=pl.UInt64), 12).height == 0


@pytest.mark.parametrize("kind", ["distinct", "ties", "all tied", "mostly -inf", "half -inf"])
def test_top_n_by_chunk_maxima_is_exactly_the_partition_answer(kind):
    """The chunked top_n keeps the same (row, column) pairs in the same order as one partition per row,
    ties at the n-th score included, on blocks wide enough to take the chunked path (and on a block of
    ties, where it partitions)."""
    from fde.strategies import top_n, top_n_by_partition

    rng = np.random.default_rng(len(kind))
    for width, n in ((500, 3), (2_000, 13), (997, 1), (64, 8)):  # 64 x 8: too narrow, the partition itself
        scores = rng.standard_normal((40, width)).astype(np.float32)
        if kind == "ties":
            scores = rng.integers(0, 100, scores.shape).astype(np.float32)
        elif kind == "all tied":  # the candidates would be the whole block: partitioned instead
            scores = np.ones_like(scores)
        elif kind == "mostly -inf":
            scores[rng.random(scores.shape) < 0.97] = -np.inf
        elif kind == "half -inf":
            scores[:, : width // 2] = -np.inf
        for above in (-np.inf, 0.0):
            got, want = top_n(scores, n, above), top_n_by_partition(scores, n, above)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert len(got[0]) >= 1


@pytest.mark.slow
def test_the_neighbours_bench_finds_both_formulations_equal_from_a_shell(pipeline):
    """`python bench/bench_neighbours.py` times the float32-then-rescored look-ups against float64 products on the
    data dir's own sources and says whether their tables are equal: on the tiny pipeline (image vectors for the new
    arrivals) they are, for both sources."""
    done = subprocess.run([sys.executable, "bench/bench_neighbours.py", "--data-dir", str(pipeline.data_dir),
                           "--repeats", "1"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["content", "new_arrivals"]
    assert all(line.endswith("equal: True") and " 0 pairs" not in line for line in lines)
