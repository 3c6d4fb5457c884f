"""MAP@12 as the competition defines it: hand-computed cases and an independent reference (ml_metrics)."""
import random

import polars as pl
import pytest

from fde import metrics


def recs_of(lists: dict) -> pl.DataFrame:
    """{customer: [article, ...]} -> recommendation frame with ranks in list order."""
    rows = [(c, a, r) for c, arts in lists.items() for r, a in enumerate(arts, start=1)]
    return pl.DataFrame(rows, schema={"customer_id": pl.UInt64, "article_id": pl.Int32, "rank": pl.UInt16},
                        orient="row")


def truth_of(lists: dict) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": list(lists), "article_ids": list(lists.values())},
                        schema={"customer_id": pl.UInt64, "article_ids": pl.List(pl.Int32)})


# ml_metrics (benhamner/Metrics) apk/mapk, reimplemented verbatim as the independent reference;
# empty actuals are dropped before averaging, as the competition did.
def ref_apk(actual, predicted, k=12):
    if len(predicted) > k:
        predicted = predicted[:k]
    score, num_hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


def ref_mapk(actual, predicted, k=12):
    return sum(ref_apk(a, p, k) for a, p in zip(actual, predicted)) / len(actual)


def test_hand_computed_average_precision():
    # hits at positions 1 and 3 of 3 bought: (1/1 + 2/3) / 3
    recs = recs_of({1: [10, 40, 20]})
    assert metrics.map_at_k(recs, truth_of({1: [10, 20, 30]})) == pytest.approx((1 + 2 / 3) / 3)


def test_duplicate_prediction_earns_nothing_but_takes_its_slot():
    recs = recs_of({1: [10, 10, 20]})
    assert metrics.map_at_k(recs, truth_of({1: [10, 20]})) == pytest.approx((1 + 2 / 3) / 2)


def test_customers_without_prediction_count_zero_and_empty_truth_is_excluded():
    recs = recs_of({1: [10], 3: [99]})
    truth = truth_of({1: [10], 2: [20], 3: []})
    # customer 1: AP 1; customer 2: no prediction, AP 0; customer 3 bought nothing: excluded
    assert metrics.map_at_k(recs, truth) == pytest.approx(0.5)
    per = metrics.per_customer(recs, truth)
    assert per["customer_id"].to_list() == [1, 2]


def test_only_first_k_predictions_count_and_denominator_is_capped_at_k():
    arts = list(range(100, 114))  # 14 predictions, 14 bought
    recs = recs_of({1: arts[::-1]})
    truth = truth_of({1: arts})
    assert metrics.map_at_k(recs, truth, k=12) == pytest.approx(1.0)  # 12 hits / min(14, 12)
    recs = recs_of({1: [1] * 12 + [100]})  # the 13th prediction would hit, but is past k
    assert metrics.map_at_k(recs, truth_of({1: [100]})) == 0.0


def test_truth_counts_unique_articles():
    recs = recs_of({1: [10]})
    assert metrics.map_at_k(recs, truth_of({1: [10, 10]})) == pytest.approx(1.0)


def test_rank_order_not_row_order_defines_positions():
    recs = recs_of({1: [10, 20]}).reverse()
    assert metrics.map_at_k(recs, truth_of({1: [10]})) == pytest.approx(1.0)


def test_recall_and_coverage():
    recs = recs_of({1: [10, 11], 2: [10, 12]})
    result = metrics.evaluate(recs, truth_of({1: [10, 20], 2: [30]}), n_articles=10)
    assert result["recall12"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["coverage"] == pytest.approx(3 / 10)


def test_hits_on_pairs():
    recs = recs_of({1: [10, 11], 2: [10]})
    pairs = pl.DataFrame({"customer_id": [1, 2, 2], "article_id": [11, 12, 10]},
                         schema={"customer_id": pl.UInt64, "article_id": pl.Int32})
    assert metrics.hits_on(recs, pairs) == 2


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_mapk_on_random_lists(seed):
    rng = random.Random(seed)
    truth, preds = {}, {}
    for customer in range(1, 201):
        truth[customer] = list({rng.randrange(30) for _ in range(rng.randrange(1, 16))})
        if rng.random() < 0.9:  # some customers get no prediction at all
            preds[customer] = [rng.randrange(30) for _ in range(rng.randrange(1, 16))]  # duplicates allowed
    expected = ref_mapk([truth[c] for c in truth], [preds.get(c, []) for c in truth])
    assert metrics.map_at_k(recs_of(preds), truth_of(truth)) == pytest.approx(expected, abs=1e-12)
    for c in list(truth)[:20]:
        ap = metrics.per_customer(recs_of(preds), truth_of(truth)).filter(pl.col("customer_id") == c)["ap"][0]
        assert ap == pytest.approx(ref_apk(truth[c], preds.get(c, [])), abs=1e-12)
