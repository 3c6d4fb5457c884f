"""Choices the ranker makes on the validation week: each source's depth, and the launch slots' price."""
from datetime import date, timedelta

import numpy as np
import polars as pl

from fde import candidates, evaluation, training
from fde.strategies import Popularity, Repurchase

CUTOFF = date(2020, 9, 16)


def shop(regulars: int, weeks: int = 8) -> pl.DataFrame:
    """Customer 1 buys `regulars` articles (1..regulars) every week; customers 2-9 buy articles 500-505."""
    rows = []
    for week in range(1, weeks + 1):
        day = CUTOFF - timedelta(weeks=week) + timedelta(days=week % 3)
        rows += [(day, 1, a) for a in range(1, regulars + 1)]
        rows += [(day, c, 500 + (c + week) % 6) for c in range(2, 10)]
    return pl.DataFrame(rows, schema={"t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32},
                        orient="row").with_columns(price=pl.lit(0.02), sales_channel_id=pl.lit(2, dtype=pl.Int8))


def truth_of(lists: dict[int, list[int]]) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": list(lists), "article_ids": list(lists.values())},
                        schema={"customer_id": pl.UInt64, "article_ids": pl.List(pl.Int32)})


def chosen_depths(regulars: int) -> tuple[dict, pl.DataFrame, list]:
    history = shop(regulars)
    articles = pl.DataFrame({"article_id": sorted(history["article_id"].unique().to_list())},
                            schema={"article_id": pl.Int32})
    sources = [Repurchase().fit(history, articles, CUTOFF),
               Popularity("popular", window_days=28).fit(history, articles, CUTOFF)]
    truth = truth_of({1: list(range(1, regulars + 1)), 2: [502]})
    table, curves = candidates.recall_curves(sources, truth)
    depths, _ = candidates.choose_depths(curves)
    return depths, table, sources


def test_a_customer_with_40_regular_articles_gets_all_40_in_the_pool():
    depths, table, sources = chosen_depths(40)
    assert depths["repurchase"] == 50  # 24 would miss 16 of them; 50 holds all 40, 100 adds nothing
    pool = candidates.build([sources[0]], [sources[1]], pl.DataFrame({"customer_id": [1]}, schema={
        "customer_id": pl.UInt64}), depths, depths["popular"])
    assert set(range(1, 41)) <= set(pool["article_id"].to_list())
    curve = table.filter(pl.col("source") == "repurchase").row(0, named=True)
    assert curve["recall@24"] < curve["recall@50"] == curve["recall@200"]


def test_a_short_repertoire_keeps_the_shallowest_depth():
    depths, _, _ = chosen_depths(8)
    assert depths["repurchase"] == 12  # deeper adds rows and no purchase


def test_the_pool_stays_within_its_row_budget():
    history = shop(40)
    articles = pl.DataFrame({"article_id": sorted(history["article_id"].unique().to_list())},
                            schema={"article_id": pl.Int32})
    sources = [Repurchase().fit(history, articles, CUTOFF)]
    _, curves = candidates.recall_curves(sources, truth_of({1: list(range(1, 41))}))
    depths, choice = candidates.choose_depths(curves, budget=30)
    assert depths["repurchase"] == 24 and choice["rows_per_customer"] <= 30


def slots_frame(launch_bought: bool) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series]:
    """One customer: 12 old articles by score (1 best), and launch 50 just below them.

    The customer bought old article 12 (the 12th place) and, when launch_bought, the launch.
    """
    frame = pl.DataFrame({
        "customer_id": [1] * 13, "article_id": [*range(1, 13), 50],
        "score": [1.0 - i / 100 for i in range(13)],
        "days_since_first_sale": [30.0] * 12 + [None], "rank__new_arrivals": [None] * 12 + [1],
    }, schema_overrides={"customer_id": pl.UInt64, "article_id": pl.Int32, "rank__new_arrivals": pl.UInt16})
    bought = [12, 50] if launch_bought else [12]
    return frame, truth_of({1: bought}), pl.Series(list(range(1, 13)), dtype=pl.Int32)


def test_a_launch_slot_that_costs_map_is_refused():
    slots, table = training.choose_launch_slots(*slots_frame(launch_bought=False))
    assert table[1][0] < 0.99 * table[0][0]  # the slot pushes the bought 12th article out
    assert slots == 0


def test_a_launch_slot_that_costs_nothing_is_kept():
    slots, table = training.choose_launch_slots(*slots_frame(launch_bought=True))
    assert table[1][0] >= table[0][0] and table[1][1] == 1 and table[0][1] == 0
    assert slots == 1  # more slots add no hit: the fewest with the most hits


def labelled_pool(customers: int, rows: int, bought_by: set[int]) -> pl.DataFrame:
    """`rows` pooled articles per customer; customers in bought_by bought their articles 0 and 1."""
    return pl.DataFrame({
        "customer_id": [c for c in range(customers) for _ in range(rows)],
        "article_id": [a for _ in range(customers) for a in range(rows)],
        "label": [int(c in bought_by and a < 2) for c in range(customers) for a in range(rows)],
    }, schema={"customer_id": pl.UInt64, "article_id": pl.Int32, "label": pl.UInt8})


def test_thinning_keeps_every_purchase_and_bounds_the_rows():
    pool = labelled_pool(100, 50, bought_by=set(range(0, 100, 2)))  # 5,000 rows, 100 purchases
    thinned = training.thin(pool, max_rows=1_000)
    assert thinned["label"].sum() == 100                      # every purchased row stays
    assert set(thinned["customer_id"].unique()) == set(range(0, 100, 2))  # groups without a purchase go
    assert 800 <= thinned.height <= 1_200                     # about the budget (a seeded share)
    assert thinned.equals(training.thin(pool, max_rows=1_000))  # the same rows every run
    assert thinned.join(pool, on=["customer_id", "article_id"], how="anti").height == 0


def test_a_pool_within_the_budget_loses_only_groups_without_a_purchase():
    pool = labelled_pool(10, 20, bought_by={3})
    assert training.thin(pool, max_rows=10_000).equals(pool.filter(pl.col("customer_id") == 3))


# ---------------------------------------------------------------------------- how deep the scored pool goes

def path_pool(bought_rank: int) -> tuple[pl.DataFrame, np.ndarray, training.WeekTruth, list[dict]]:
    """Customer 1's candidates come from source a (ranks 1-30), customer 2's from b (1-30); the model scores
    each list in rank order, except that customer 1's purchase (a's `bought_rank`) scores above everything.
    Customer 2 bought b's 1st. The path: both at 12, then a at 24, then b at 24."""
    ranks = list(range(1, 31))
    frame = pl.DataFrame({
        "customer_id": [1] * 30 + [2] * 30, "article_id": ranks + ranks,
        "rank__a": ranks + [None] * 30, "rank__b": [None] * 30 + ranks,
        "label": [int(r == bought_rank) for r in ranks] + [int(r == 1) for r in ranks],
        "cutoff": [CUTOFF] * 60,
    }, schema_overrides={"customer_id": pl.UInt64, "article_id": pl.Int32, "rank__a": pl.UInt16,
                         "rank__b": pl.UInt16, "label": pl.UInt8})
    scores = np.array([2.0 if r == bought_rank else 1 - r / 100 for r in ranks] + [1 - r / 100 for r in ranks])
    truth = training.WeekTruth(truth_of({1: [bought_rank], 2: [1]}), np.array([1, 1]), 2)
    path = [{"source": None, "depth": 12, "rows_per_customer": 24.0, "pool_recall": 0.5},
            {"source": "a", "depth": 24, "rows_per_customer": 30.0, "pool_recall": 0.5},
            {"source": "b", "depth": 24, "rows_per_customer": 36.0, "pool_recall": 0.5}]
    return frame, scores, truth, path


def test_a_scored_pool_stops_where_deeper_rows_add_nothing_on_validation():
    depths, kept, table = training.choose_pool(*path_pool(bought_rank=5), names=["a", "b"], proposer=None)
    assert [row["validation_map12"] for row in table] == [1.0, 1.0, 1.0]
    assert depths == {"a": 12, "b": 12} and int(kept.sum()) == 24 and table[0]["chosen"]


def test_a_scored_pool_goes_as_deep_as_a_purchase_the_model_finds():
    depths, kept, table = training.choose_pool(*path_pool(bought_rank=20), names=["a", "b"], proposer=None)
    assert [row["validation_map12"] for row in table] == [0.5, 1.0, 1.0]  # a's 20th is customer 1's first
    assert depths == {"a": 24, "b": 12} and int(kept.sum()) == 36 and table[1]["chosen"]


def crowd_pool(bought_rank: int, customers: int):
    """path_pool's customer 1 (whose purchase is a's `bought_rank`) among `customers` in all, the others each
    with b's list and b's 1st bought: a's deeper rows then move MAP@12 by 1 / customers at most."""
    frame, scores, _, path = path_pool(bought_rank)
    ones = frame.filter(pl.col("customer_id") == 2)
    frame = pl.concat([frame.filter(pl.col("customer_id") == 1)]
                      + [ones.with_columns(customer_id=pl.lit(c, dtype=pl.UInt64)) for c in range(2, customers + 1)])
    scores = np.concatenate([scores[:30]] + [scores[30:]] * (customers - 1))
    truth = training.WeekTruth(truth_of({1: [bought_rank], **{c: [1] for c in range(2, customers + 1)}}),
                               np.ones(customers, dtype=np.int64), customers)
    return frame, scores, truth, path


def test_a_scored_pool_gives_up_at_most_max_trim_cost_of_validation_map():
    """Customer 1's purchase is a's 20th: 24 rows of a find it, 12 do not. Among 200 customers that is
    0.5% of MAP@12 (1.0 against 0.995), within MAX_TRIM_COST (1%): the pool stops at 12. Among 50, 2%: at 24."""
    assert training.MAX_TRIM_COST == 0.01
    depths, kept, table = training.choose_pool(*crowd_pool(20, 200), names=["a", "b"], proposer=None)
    assert [row["validation_map12"] for row in table] == [0.995, 1.0, 1.0]
    assert depths == {"a": 12, "b": 12} and table[0]["chosen"]
    depths, kept, table = training.choose_pool(*crowd_pool(20, 50), names=["a", "b"], proposer=None)
    assert [row["validation_map12"] for row in table] == [0.98, 1.0, 1.0]
    assert depths == {"a": 24, "b": 12} and table[1]["chosen"]


def test_a_pool_cheap_enough_to_score_whole_is_not_trimmed():
    depths, kept, table = training.choose_pool(*path_pool(bought_rank=5), names=["a", "b"], proposer=None,
                                               trim=False)
    assert depths == {"a": 24, "b": 24} and bool(kept.all()) and table[-1]["chosen"] and not table[0]["chosen"]


def test_the_scored_pool_holds_each_source_top_candidates_at_its_depth():
    history = shop(40)
    articles = pl.DataFrame({"article_id": sorted(history["article_id"].unique().to_list())},
                            schema={"article_id": pl.Int32})
    personal = [Repurchase().fit(history, articles, CUTOFF)]
    popular = [Popularity("popular_decayed", window_days=28).fit(history, articles, CUTOFF)]
    customers = pl.DataFrame({"customer_id": [1, 2, 3]}, schema={"customer_id": pl.UInt64})
    whole = candidates.build(personal, popular, customers, {"repurchase": 50}, 6)
    kept = candidates.build(personal, popular, customers, {"repurchase": 50}, 6,
                            scored={"repurchase": 12, "popular_decayed": 3})
    expected = pl.concat([personal[0].candidates(customers, 12).select(candidates.KEYS),
                          popular[0].candidates(customers, 3).select(candidates.KEYS)]).unique()
    assert kept.height == expected.height < whole.height
    assert kept.join(expected.with_columns(pl.col("article_id").cast(kept["article_id"].dtype)),
                     on=candidates.KEYS, how="anti").height == 0


def test_every_source_fitted_for_some_customers_gives_them_the_lists_of_a_fit_on_everyone(pipeline):
    """A training week's sources are fitted for its sampled buyers (choose_scales' for its sample, the test
    cut-off's for the test week's buyers): the tables of each customer's own purchases hold only theirs,
    what everyone's purchases say (sales, co-purchases, trends) is still learnt from everyone."""
    inputs = evaluation.load_inputs(pipeline, quiet=True)
    cutoff = inputs.validation["t_dat"].min()
    some = evaluation.sample_customers(inputs.validation_truth, 80).select("customer_id")
    sources = [candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors) for _ in range(2)]
    names = set()
    for everyone, theirs in zip([*sources[0][0], *sources[0][1]], [*sources[1][0], *sources[1][1]]):
        everyone.fit(inputs.train, inputs.articles, cutoff)
        theirs.fit(inputs.train, inputs.articles, cutoff, some)
        expected = everyone.candidates(some, 200)
        assert expected.height > 0 and theirs.candidates(some, 200).equals(expected), everyone.name
        names.add(everyone.name)
    assert {"purchase_history", "repurchase", "colourways", "co_purchase", "content", "popular_department",
            "visual", "new_arrivals"} <= names
    # and the customer tables were made from those customers' purchases alone
    repurchase = [s for s in sources[1][1] if s.name == "repurchase"][0]
    assert set(repurchase.history["customer_id"]) <= set(some["customer_id"])


def test_sources_fitted_together_compute_what_they_share_once_and_for_those_frames_only(pipeline):
    """make_sources' sources share what they compute alike (strategies.Shared): colourways reads repurchase's
    table, the look-alike sources and co-purchase the same last purchases; the same lists as sources fitted
    alone, and a fit on other transactions computes its own."""
    inputs = evaluation.load_inputs(pipeline, quiet=True)
    cutoff = inputs.validation["t_dat"].min()
    some = evaluation.sample_customers(inputs.validation_truth, 80).select("customer_id")
    (_, together), (_, alone) = [candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors)
                                 for _ in range(2)]
    for source in alone:
        source.shared = None
    for source in [*together, *alone]:
        source.fit(inputs.train, inputs.articles, cutoff, some)
    t, a = {s.name: s for s in together}, {s.name: s for s in alone}
    assert t["colourways"].history is t["repurchase"].history
    for name in ("repurchase", "colourways", "co_purchase", "content", "new_arrivals", "visual"):
        expected = a[name].candidates(some, 200)
        assert expected.height > 0 and t[name].candidates(some, 200).equals(expected), name
    assert t["content"].recent.equals(a["content"].recent) and t["co_purchase"].recent.equals(a["co_purchase"].recent)
    assert not t["co_purchase"].recent["weight"].equals(t["content"].recent["weight"])  # each its own half-life
    earlier = inputs.train.filter(pl.col("t_dat") < cutoff - timedelta(days=30))
    for source in (t["colourways"], a["colourways"]):
        source.fit(earlier, inputs.articles, cutoff, some)
    assert t["colourways"].history is not t["repurchase"].history
    assert t["colourways"].history.sort(candidates.KEYS).equals(a["colourways"].history.sort(candidates.KEYS))
    assert not t["colourways"].history.equals(t["repurchase"].history)


def test_annotate_gives_each_pair_the_evidence_a_left_join_on_the_pair_gives():
    """candidates.annotate places each source's evidence by binary search of packed (customer, article) codes: the
    rows, values and nulls of a left join on KEYS, for proposals to customers outside the pairs too, an empty
    source, tied scores (ranked in the source's row order) and article ids of any sign."""
    rng = np.random.default_rng(0)
    customers = np.array([1, 7, 2**63 + 5, 2**64 - 1, 40, 41], dtype=np.uint64)
    articles = np.array([-(2**31), -3, 0, 5, 108775015, 2**31 - 1], dtype=np.int32)

    def frame(n: int, outsiders: bool) -> pl.DataFrame:
        who = np.concatenate([customers, np.array([99, 2**62], dtype=np.uint64)]) if outsiders else customers
        keys = pl.DataFrame({"customer_id": rng.choice(who, n), "article_id": rng.choice(articles, n)}).unique()
        sources = [(None, 5, -3)[i] for i in rng.integers(0, 3, keys.height)]
        return keys.with_columns(score=pl.Series(rng.choice([0.1, 0.5, 0.9], keys.height)),
                                 source_article_id=pl.Series(sources, dtype=pl.Int32))

    pairs = frame(30, outsiders=False).select(candidates.KEYS)
    proposed = {"a": frame(25, outsiders=True), "b": frame(40, outsiders=True),
                "c": frame(0, outsiders=True), "d": frame(10, outsiders=False)}
    want = pairs.with_columns(pl.col("article_id").cast(pl.Int32)).unique().sort(candidates.KEYS)
    for name, found in proposed.items():
        want = want.join(found.select(
            *candidates.KEYS, pl.col("score").cast(pl.Float32).alias(candidates.score_column(name)),
            candidates.place_in_list().cast(pl.UInt16).alias(candidates.rank_column(name)),
            pl.col("source_article_id").cast(pl.Int32).alias(candidates.source_column(name))),
            on=candidates.KEYS, how="left", maintain_order="left")
    want = want.with_columns(pl.col("^score__.*$").fill_null(0.0))
    got = candidates.annotate(pairs, proposed, [])
    assert got.equals(want)
    assert got[candidates.rank_column("b")].null_count() < got.height  # the sources did propose pooled pairs
    assert got.select("customer_id", "article_id").is_duplicated().sum() == 0
