"""The year-back and postal-code features (and the customer x article factors) on a hand-made shop of their own:
exact values, unknown where the data cannot say, and nothing from the label week."""
import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from fde import factors
from fde.features import Context, family_of

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
CUTOFF = date(2020, 9, 16)  # the label week's twin a year back: [2019-09-18, 2019-09-25)
ARTICLES = pl.DataFrame({"article_id": [101, 102, 103, 104], "product_code": [1, 2, 3, 4]},
                        schema={"article_id": pl.Int32, "product_code": pl.Int32})
# 1 and 2 share postal code A (bands 0 and 3); 3 is alone in B; 4 (A, age unknown) and 5 (no postal code) never bought
CUSTOMERS = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5], "age": [22, 50, 23, None, 40],
                          "postal_code": ["A", "A", "B", "A", None]},
                         schema={"customer_id": pl.UInt64, "age": pl.UInt8, "postal_code": pl.String})
TX = pl.DataFrame({
    "t_dat": [date(2019, 9, 1), date(2019, 9, 18), date(2019, 9, 24),   # before, first and last day of the week
              date(2019, 9, 17), date(2019, 9, 25),                     # the days either side: not in it
              date(2020, 8, 25), date(2020, 9, 10), date(2020, 9, 15), date(2020, 9, 15)],
    "customer_id": [1, 1, 2, 3, 2, 3, 1, 2, 3],
    "article_id": [101, 101, 101, 102, 102, 101, 102, 102, 103],
    "price": [0.02] * 9,
    "sales_channel_id": [2] * 9,
}, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32, "price": pl.Float32,
           "sales_channel_id": pl.UInt8})
POOL = pl.DataFrame([(1, 101), (1, 102), (2, 101), (3, 101), (3, 102), (4, 102), (5, 102), (1, 104)],
                    schema={"customer_id": pl.UInt64, "article_id": pl.Int32}, orient="row")
NEW = ("lifetime_sales", "lifetime_buyers", "last_year_week_sales", "last_year_week_bought", "postal_customers",
       "postal_share_1w", "postal_share_4w", "age_postal_share_1w", "age_postal_share_4w", "mf_score")


def row(frame, customer, article):
    return frame.filter((pl.col("customer_id") == customer) & (pl.col("article_id") == article)).row(0, named=True)


@pytest.fixture(scope="module")
def frame():
    return Context(TX, ARTICLES, CUSTOMERS, CUTOFF).features(POOL)


def test_rows_and_their_order_are_unchanged(frame):
    assert frame.select("customer_id", "article_id").equals(POOL)
    assert set(NEW) <= set(frame.columns)


def test_lifetime_counts(frame):
    assert row(frame, 1, 101)["lifetime_sales"] == 4 and row(frame, 1, 101)["lifetime_buyers"] == 3
    assert row(frame, 3, 102)["lifetime_sales"] == 4 and row(frame, 3, 102)["lifetime_buyers"] == 3  # 2 bought twice
    assert row(frame, 1, 101)["times_bought"] == 2  # the pair's lifetime count: a year ago and the week before
    never = row(frame, 1, 104)
    assert never["lifetime_sales"] == 0 and never["lifetime_buyers"] == 0


def test_the_same_week_last_year(frame):
    assert row(frame, 1, 101)["last_year_week_sales"] == 2  # 2019-09-18 and 2019-09-24; not 2019-09-01
    assert row(frame, 1, 101)["last_year_week_bought"] == 1 and row(frame, 2, 101)["last_year_week_bought"] == 1
    # 2019-09-17 and 2019-09-25 lie just outside the week
    assert row(frame, 3, 102)["last_year_week_sales"] == 0 and row(frame, 3, 102)["last_year_week_bought"] == 0
    assert row(frame, 3, 101)["last_year_week_bought"] == 0 and row(frame, 1, 104)["last_year_week_sales"] == 0


def test_last_year_is_unknown_when_the_history_does_not_reach_back_a_year():
    short = Context(TX.filter(pl.col("t_dat") >= date(2019, 9, 19)), ARTICLES, CUSTOMERS, CUTOFF).features(POOL)
    assert short["last_year_week_sales"].null_count() == POOL.height
    assert short["last_year_week_bought"].null_count() == POOL.height


def test_postal_code_shares(frame):
    # last week (from 2020-09-09): A bought 102 twice (customers 1 and 2), B bought 103 once
    assert row(frame, 1, 102)["postal_share_1w"] == 1.0 and row(frame, 1, 101)["postal_share_1w"] == 0
    # four weeks: B also bought 101 (2020-08-25), so 101 and 103 each have half of B's sales
    assert row(frame, 3, 101)["postal_share_1w"] == 0 and row(frame, 3, 101)["postal_share_4w"] == 0.5
    assert row(frame, 3, 102)["postal_share_4w"] == 0
    # age band x postal code: 1 (band 0) and 2 (band 3) are apart, 3 is alone in band 0 x B
    assert row(frame, 1, 102)["age_postal_share_1w"] == 1.0 and row(frame, 2, 101)["age_postal_share_4w"] == 0
    assert row(frame, 3, 101)["age_postal_share_4w"] == 0.5
    assert row(frame, 1, 101)["postal_customers"] == 3 and row(frame, 3, 101)["postal_customers"] == 1


def test_postal_shares_are_unknown_without_a_group(frame):
    unknown_age = row(frame, 4, 102)  # in A, so A's share; no age band, so no band's share
    assert unknown_age["postal_share_1w"] == 1.0 and unknown_age["age_postal_share_1w"] is None
    no_postal = row(frame, 5, 102)
    assert no_postal["postal_share_1w"] is None and no_postal["age_postal_share_4w"] is None
    assert no_postal["postal_customers"] is None


def test_without_postal_codes_the_postal_features_are_absent():
    plain = Context(TX, ARTICLES, CUSTOMERS.drop("postal_code"), CUTOFF).features(POOL)
    assert not [c for c in plain.columns if "postal" in c]
    assert plain.select("customer_id", "article_id").equals(POOL)


def test_a_purchase_after_the_cutoff_changes_none_of_them():
    future = pl.DataFrame({"t_dat": [CUTOFF, CUTOFF, CUTOFF + timedelta(days=3), CUTOFF + timedelta(days=6)],
                           "customer_id": [1, 3, 2, 4], "article_id": [101, 102, 102, 104],
                           "price": [0.5] * 4, "sales_channel_id": [1] * 4}, schema=TX.schema)
    clean = Context(TX, ARTICLES, CUSTOMERS, CUTOFF).features(POOL)
    leaky = Context(pl.concat([TX, future]), ARTICLES, CUSTOMERS, CUTOFF).features(POOL)
    assert clean.select(NEW).null_count().sum_horizontal()[0] < clean.height * len(NEW)  # not vacuous
    assert clean.equals(leaky)


@pytest.mark.parametrize("feature", NEW)
def test_every_new_feature_has_a_family_or_is_about_the_customer(feature):
    from fde.features import CUSTOMER_ONLY

    assert family_of(feature) is not None or feature in CUSTOMER_ONLY


def test_repeat_buyer_share_counts_buyers_on_two_days_or_more():
    """An article's repeat_buyer_share: its buyers who bought it on two different days or more (the first day
    before the last), over its buyers; two purchases on one day are one day."""
    day = date(2020, 9, 1)
    tx = pl.DataFrame({"t_dat": [day, day + timedelta(days=3), day, day, day, day + timedelta(days=1)],
                       "customer_id": [1, 1, 2, 2, 3, 1], "article_id": [101, 101, 101, 101, 101, 102],
                       "price": [0.02] * 6, "sales_channel_id": [2] * 6},
                      schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32, "price": pl.Float32,
                              "sales_channel_id": pl.UInt8})
    table = Context(tx, ARTICLES, CUSTOMERS, CUTOFF).article_table
    share = dict(zip(table["article_id"], table["repeat_buyer_share"]))
    assert share[101] == pytest.approx(1 / 3) and share[102] == 0.0


# ---------------------------------------------------------------------------- customer x article factors

def test_mf_score_is_the_dot_product_of_the_fitted_factors_and_unknown_without_them(frame):
    fitted = factors.fit(TX, CUTOFF)
    customer = {c: i for i, c in enumerate(fitted.customer_ids)}
    article = {a: i for i, a in enumerate(fitted.article_ids)}
    # the factors' year holds 2019-09-18 on: customer 1 bought 101 and 102 in it
    assert set(customer) == {1, 2, 3} and set(article) == {101, 102, 103}
    expected = float(fitted.customers[customer[3]] @ fitted.articles[article[102]])
    assert row(frame, 3, 102)["mf_score"] == pytest.approx(expected, rel=1e-5)
    assert row(frame, 5, 102)["mf_score"] is None   # no purchase: no factors
    assert row(frame, 1, 104)["mf_score"] is None   # never sold


def two_tastes(seed: int = 0) -> pl.DataFrame:
    """Customers 0-39 buy from articles 0-9, customers 40-79 from articles 10-19, a few each."""
    rng = np.random.default_rng(seed)
    rows = [(date(2020, 9, 1) + timedelta(days=int(rng.integers(0, 14))), customer,
             int(rng.integers(0, 10)) + (10 if customer >= 40 else 0))
            for customer in range(80) for _ in range(4)]
    return pl.DataFrame(rows, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32},
                        orient="row")


def test_mf_scores_a_customer_s_own_taste_above_the_other():
    tx = two_tastes()
    fitted = factors.fit(tx, CUTOFF, factors=2)  # two tastes: two factors (more would memorise 20 articles)
    pairs = pl.DataFrame({"customer_id": np.repeat(np.arange(80), 20), "article_id": np.tile(np.arange(20), 80)},
                         schema={"customer_id": pl.UInt64, "article_id": pl.Int32})
    scores = pairs.with_columns(score=fitted.score_pairs(pairs), same=(pl.col("customer_id") >= 40)
                                == (pl.col("article_id") >= 10))
    means = scores.group_by("same").agg(pl.col("score").mean())
    assert means.filter("same")["score"][0] > means.filter(~pl.col("same"))["score"][0] + 0.3
    # every customer's top 10 are their own taste's 10 articles, bought or not
    top = fitted.top(pl.Series(np.arange(80), dtype=pl.UInt64), 10)
    assert top.height == 800
    assert ((top["customer_id"] >= 40) == (top["article_id"] >= 10)).all()


def test_mf_fit_is_deterministic_whatever_the_threads():
    tx = two_tastes(1)
    first, again, single = (factors.fit(tx, CUTOFF, threads=2), factors.fit(tx, CUTOFF, threads=2),
                            factors.fit(tx, CUTOFF, threads=1))
    for other in (again, single):
        assert np.array_equal(first.customers, other.customers) and np.array_equal(first.articles, other.articles)
    assert not np.array_equal(first.customers, factors.fit(tx, CUTOFF, seed=1).customers)


def test_a_warm_fit_starts_from_the_earlier_factors_of_the_same_ids():
    """With no sweep, a fit started from earlier factors gives them back row by row, by id; an id new since
    then starts at random as implicit starts (uniform in [0, 0.01)); factors holding purchases after a cut-off
    never start a fit at it."""
    tx = two_tastes(2)
    earlier = factors.fit(tx, date(2020, 9, 5))
    later = factors.fit(tx, CUTOFF, iterations=0, start=earlier)
    assert earlier.cutoff == date(2020, 9, 5) and later.cutoff == CUTOFF
    assert set(earlier.customer_ids) < set(later.customer_ids)  # customers who first bought from 5 September
    for ids, rows, old_ids, old_rows in ((later.customer_ids, later.customers, earlier.customer_ids, earlier.customers),
                                         (later.article_ids, later.articles, earlier.article_ids, earlier.articles)):
        known = np.isin(ids, old_ids)
        assert np.array_equal(rows[known], old_rows[np.searchsorted(old_ids, ids[known])])
        assert ((rows[~known] >= 0) & (rows[~known] < 0.01)).all()
    with pytest.raises(ValueError, match="after it"):
        factors.fit(tx, date(2020, 9, 5), start=later)


def test_a_chain_of_weekly_fits_finds_what_a_cold_fit_finds(tmp_path):
    """Factors.Chain: the first cut-off fitted from random factors, each later one WARM_ITERATIONS sweeps from
    the one before; its last factors rank pairs as a cold fit of ITERATIONS sweeps does, and a cut-off before
    the chain's last is fitted cold. The factors saved and loaded are the same."""
    tx = two_tastes(3)
    chain = factors.Chain()
    first = chain.fit(tx, date(2020, 9, 8))
    assert np.array_equal(first.customers, factors.fit(tx, date(2020, 9, 8)).customers)  # cold
    for cutoff in (date(2020, 9, 11), date(2020, 9, 15), CUTOFF):
        last = chain.fit(tx, cutoff)
    assert not np.array_equal(last.customers, factors.fit(tx, CUTOFF).customers)  # warm, not cold
    pairs = pl.DataFrame({"customer_id": np.repeat(np.arange(80), 20), "article_id": np.tile(np.arange(20), 80)},
                         schema={"customer_id": pl.UInt64, "article_id": pl.Int32})
    chained, cold = last.score_pairs(pairs).to_numpy(), factors.fit(tx, CUTOFF).score_pairs(pairs).to_numpy()
    assert np.corrcoef(chained, cold)[0, 1] > 0.99  # 0.9998 here; one sweep from random factors: 0.85
    one_sweep = factors.fit(tx, CUTOFF, iterations=factors.WARM_ITERATIONS).score_pairs(pairs).to_numpy()
    assert np.corrcoef(chained, cold)[0, 1] > np.corrcoef(one_sweep, cold)[0, 1]  # the start is what helps
    again = chain.fit(tx, date(2020, 9, 11))  # before the last: cold, never from factors that know its future
    assert np.array_equal(again.customers, factors.fit(tx, date(2020, 9, 11)).customers)
    last.save(tmp_path / "factors.npz")
    loaded = factors.Factors.load(tmp_path / "factors.npz")
    assert loaded.cutoff == CUTOFF and all(np.array_equal(getattr(loaded, a), getattr(last, a)) for a in
                                           ("customer_ids", "article_ids", "customers", "articles"))


def test_the_purchase_matrix_counts_each_pair_of_the_window_at_its_ids_rows():
    """Row i, column j of ALS's input is how often customer_ids[i] bought article_ids[j] in the year before the
    cut-off: customer 2 bought 102 on 2020-09-15 (once) and 101 on 2019-09-24 (in the year), 1 bought 101 twice."""
    tx = pl.concat([TX, TX.filter((pl.col("customer_id") == 1) & (pl.col("article_id") == 101)
                                  & (pl.col("t_dat") == date(2019, 9, 18)))])
    customer_ids, article_ids, matrix = factors.purchase_matrix(tx.sample(fraction=1.0, shuffle=True, seed=3), CUTOFF)
    assert list(customer_ids) == [1, 2, 3] and list(article_ids) == [101, 102, 103]
    year = tx.filter((pl.col("t_dat") < CUTOFF) & (pl.col("t_dat") >= CUTOFF - timedelta(days=factors.WINDOW_DAYS)))
    expected = np.zeros((3, 3))
    for customer, article in year.select("customer_id", "article_id").iter_rows():
        expected[list(customer_ids).index(customer), list(article_ids).index(article)] += 1
    assert np.array_equal(matrix.toarray(), expected) and expected[0, 0] == 2 and expected.sum() == year.height
    assert factors.purchase_matrix(TX, date(2019, 9, 1)) is None


def test_mf_knows_only_the_purchases_before_the_cutoff():
    assert factors.fit(TX, date(2019, 9, 1)) is None  # nothing before: no factors, every mf_score unknown
    assert Context(TX, ARTICLES, CUSTOMERS, date(2019, 9, 1)).features(POOL)["mf_score"].null_count() == POOL.height
    frame = Context(TX, ARTICLES, CUSTOMERS, date(2019, 9, 2)).features(POOL)  # one purchase: 1 bought 101
    assert row(frame, 1, 101)["mf_score"] is not None
    assert frame["mf_score"].null_count() == POOL.height - 1


def test_loading_the_stages_does_not_import_implicit():
    code = "import sys, final, ranker, fde.features; sys.exit('implicit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(ROOT)).returncode == 0


# ---------------------------------------------------------------------------- the age x postal-code source

def test_local_popularity_proposes_each_group_s_own_recent_articles():
    from fde.strategies import LocalPopularity

    from shop import check_interface

    week = LocalPopularity(CUSTOMERS, window_days=7, min_sales=1).fit(TX, ARTICLES, CUTOFF)
    recs = week.recommend([1, 2, 3, 4, 5], 12)
    check_interface(recs, 12)
    # 1 (band 0, A) and 2 (band 3, A) each bought 102 last week, 3 (band 0, B) bought 103; 4 has no age, 5 no postal
    assert recs.select("customer_id", "article_id", "score").rows() == [(1, 102, 1.0), (2, 102, 1.0), (3, 103, 1.0)]
    # four weeks, at least two purchases per group: only band 0 x B is big enough (101 on 08-25, 103 on 09-15)
    month = LocalPopularity(CUSTOMERS, window_days=28, min_sales=2).fit(TX, ARTICLES, CUTOFF)
    assert month.recommend([1, 2, 3, 4, 5], 12).select("customer_id", "article_id", "score").rows() == [
        (3, 101, 0.5), (3, 103, 0.5)]
    assert month.recommend([3], 1)["article_id"].to_list() == [101]  # ties: the smaller article id


def test_local_popularity_needs_postal_codes():
    from fde.errors import UserError
    from fde.strategies import LocalPopularity

    with pytest.raises(UserError, match="postal_code"):
        LocalPopularity(CUSTOMERS.drop("postal_code"))
