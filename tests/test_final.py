"""The hybrid, its honest evaluation and the submission: exact blends by hand, the whole run on the tiny sample."""
import json
import shutil
from datetime import date

import polars as pl
import pytest

import final
from fde import hybrid as blend
from fde import metrics
from fde.artifacts import Artifacts
from fde.files import manifest_record, write_json
from fde.strategies import Popularity, PurchaseHistory, VisualSimilarity, as_customer_frame

from shop import ARTICLES, CUSTOMERS, TWINS, TX, check_interface, lists


def hand_hybrid(weights, rank_weight=0.0, visual=False):
    personal = [PurchaseHistory(half_life_days=14, window_days=None)] + ([VisualSimilarity(TWINS)] if visual else [])
    hybrid = blend.Hybrid(personal, [Popularity("popular_all_time", reason_text="bestseller")],
                          weights=weights, rank_weight=rank_weight)
    return hybrid.fit(TX, ARTICLES)


def test_hybrid_with_only_history_weight_is_history_then_popular_fill():
    hybrid = hand_hybrid({"purchase_history": 1.0, "popular_all_time": 0.0})
    recs = hybrid.recommend(CUSTOMERS, 5)
    check_interface(recs.with_columns(score=pl.col("score").clip(0, 1)), 5)
    assert lists(recs)[1] == [104001, 102001, 101001, 101002, 103001]
    assert lists(recs)[4] == [102001, 103001, 101001, 104001]  # no history: the popular list, in order


def test_hybrid_blend_is_the_weighted_sum_of_scores():
    hybrid = hand_hybrid({"purchase_history": 1.0, "popular_all_time": 0.5})
    recs = hybrid.recommend(CUSTOMERS[2:3], 12)  # customer 3 bought 102001 two days before the cut-off
    history = PurchaseHistory(half_life_days=14, window_days=None).fit(TX, ARTICLES)
    history = history.recommend(CUSTOMERS[2:3], 1)["score"][0]
    top = recs.row(0, named=True)
    assert top["article_id"] == 102001
    assert top["score"] == pytest.approx(history + 0.5 * 1.0 + blend.TIEBREAK, rel=1e-5)
    assert recs["score"][1] == pytest.approx(0.5 * 1.0 + blend.TIEBREAK, rel=1e-5)  # 103001: popular only


def test_hybrid_rank_weight_mixes_in_reciprocal_rank():
    hybrid = hand_hybrid({"purchase_history": 1.0, "popular_all_time": 0.0}, rank_weight=0.5)
    recs = hybrid.recommend(CUSTOMERS[:1], 2)
    history = PurchaseHistory(half_life_days=14, window_days=None).fit(TX, ARTICLES)
    scores = history.recommend(CUSTOMERS[:1], 2)["score"].to_list()
    popular = {104001: 0.5, 102001: 1.0}  # all-time popularity of the two, the tie-breaker
    want = [0.5 * s + 0.5 / r + blend.TIEBREAK * popular[a] for s, r, a in zip(scores, (1, 2), (104001, 102001))]
    assert recs["score"].to_list() == pytest.approx(want, rel=1e-5)


def test_hybrid_reasons_name_the_purchase():
    hybrid = hand_hybrid({"purchase_history": 1.0, "visual": 0.1, "popular_all_time": 0.01}, visual=True)
    ranked = hybrid.explain(hybrid.candidates(as_customer_frame(CUSTOMERS), 6))
    one = dict(ranked.filter(pl.col("customer_id") == 1).select("article_id", "reason").iter_rows())
    assert one[104001] == "bought before"
    assert one[101002] == "colourway of 0000101001"
    assert one[103001] == "looks like 0000104001"
    four = ranked.filter(pl.col("customer_id") == 4)["reason"].unique().to_list()
    assert four == ["bestseller"]


def test_tune_improves_or_keeps_the_validation_score():
    hybrid = hand_hybrid(None)
    truth = pl.DataFrame({"customer_id": [1, 3, 4], "article_ids": [[101002], [103001], [104001]]},
                         schema={"customer_id": pl.UInt64, "article_ids": pl.List(pl.Int32)})
    pool = hybrid.pool(as_customer_frame(truth["customer_id"]))
    start = metrics.map_at_k(hybrid.blend(pool, 12), truth)
    weights, rank_weight, best = blend.tune(hybrid, pool, truth)
    assert best >= start
    assert best == pytest.approx(metrics.map_at_k(hybrid.blend(pool, 12, weights, rank_weight), truth))
    assert weights["purchase_history"] == 1.0


def test_map_of_blends_is_map_at_k_of_the_blended_top_12(tiny):
    """tune scores a blend from its scores alone (metrics.GroupMap): the MAP@12 of the blend's top 12, ties and all,
    on the tiny sample's validation week (every weight 0 leaves only the tie-breaker; random grid settings)."""
    import random

    from fde import candidates
    from fde.evaluation import load_inputs

    inputs = load_inputs(tiny, quiet=True)
    populars, personal = candidates.make_sources(inputs.customers)
    final.fit_all([*populars, *personal], inputs.train, inputs.articles, inputs.validation["t_dat"].min(),
                  customers=inputs.customers)
    hybrid = blend.make(populars, personal)
    truth = inputs.validation_truth
    pool = hybrid.pool(as_customer_frame(truth["customer_id"]))
    blend_map = blend.map_of_blends(hybrid, pool, truth)
    names = [s.name for s in hybrid.components]
    rng = random.Random(0)
    settings = [({n: 0.0 for n in names}, 0.0), ({n: 1.0 for n in names}, 0.5)] + [
        ({n: rng.choice(blend.WEIGHT_GRID) for n in names}, rng.choice(blend.RANK_WEIGHT_GRID)) for _ in range(8)]
    values = []
    for weights, rank_weight in settings:
        want = metrics.map_at_k(hybrid.blend(pool, 12, weights, rank_weight, explain=False), truth)
        values.append(blend_map(weights, rank_weight))
        assert values[-1] == pytest.approx(want, abs=1e-12)
    assert len(set(values)) > 3 and max(values) > 0  # the settings rank the pool differently


def test_validate_scores_the_tuned_hybrid_as_a_hybrid_making_its_own_proposals(tiny, monkeypatch):
    """hybrid.validate makes the sources' proposals once, for the week's buyers, and tunes on its sample's share of
    them: the weights and every score are those of tuning on the sample's own pool and a hybrid asked afresh."""
    from fde import candidates, evaluation
    from fde.evaluation import load_inputs

    inputs = load_inputs(tiny, quiet=True)
    populars, personal = candidates.make_sources(inputs.customers)
    final.fit_all([*populars, *personal], inputs.train, inputs.articles, inputs.validation["t_dat"].min())
    monkeypatch.setattr(blend, "TUNING_CUSTOMERS", inputs.validation_truth.height // 2)  # tuned on half of them
    chosen = blend.validate(populars, personal, inputs)
    hybrid = blend.make(populars, personal)
    truth = inputs.validation_truth
    sample = evaluation.sample_customers(truth, blend.TUNING_CUSTOMERS)
    assert 0 < sample.height < truth.height
    weights, rank_weight, _ = blend.tune(hybrid, hybrid.pool(as_customer_frame(sample["customer_id"])), sample)
    hybrid.weights, hybrid.rank_weight = weights, rank_weight
    scores, _ = evaluation.score_week([*populars, *personal, hybrid], truth, inputs.train["article_id"].unique(),
                                      inputs.articles.height)
    assert (chosen["weights"], chosen["rank_weight"]) == (weights, rank_weight)
    assert chosen["validation_map12"] == {name: s["map12"] for name, s in scores.items()}
    assert chosen["validation_map12"]["hybrid"] > 0


# ---------------------------------------------------------------------------- tiny sample

def copy_of(tiny: Artifacts, root) -> Artifacts:
    """The tiny sample's processed data and split in a private folder (no visual stage, no results)."""
    copy = Artifacts(root / "data", tiny.images_dir)
    for folder in (tiny.processed_dir, tiny.split_dir):
        shutil.copytree(folder, copy.data_dir / folder.name)
    return copy


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """final.run on a private copy of the tiny sample without visual features, with its printout."""
    import contextlib
    import io

    copy = copy_of(tiny, tmp_path_factory.mktemp("final"))
    calls = {"fit": [], "tune": []}
    fit_all, tune = final.fit_all, blend.tune

    def spy_fit(strategies, transactions, *args, **kwargs):
        calls["fit"].append(transactions["t_dat"].max())
        return fit_all(strategies, transactions, *args, **kwargs)

    def spy_tune(hybrid, features, truth, *args, **kwargs):
        calls["tune"].append(set(truth["customer_id"]))
        return tune(hybrid, features, truth, *args, **kwargs)

    final.fit_all, blend.tune = spy_fit, spy_tune
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            meta = final.run(copy, show_progress=False)
    finally:
        final.fit_all, blend.tune = fit_all, tune
    return copy, meta, out.getvalue(), calls


def test_run_without_visual_features_works_and_says_so_once(tiny_run):
    copy, meta, printed, _ = tiny_run
    assert printed.count("no visual twins") == 1
    assert "visual" not in meta["strategies"] and "visual" not in meta["weights"]
    # the cold-start strategy falls back to content vectors without images, silently
    assert "new_arrivals" in meta["strategies"] and "new_arrivals" in meta["weights"]
    for name in ("popular_all_time", "popular_last_week", "popular_decayed", "purchase_history", "repurchase",
                 "colourways", "co_purchase", "content", "popular_department", "hybrid"):
        assert name in meta["strategies"]
        assert name in printed
    assert "unique articles" in printed


def test_metrics_json_has_the_contract(tiny_run):
    copy, meta, _, _ = tiny_run
    saved = json.loads(copy.metrics.read_text())
    assert set(saved) >= {"test_week", "validation_week", "customers_evaluated", "cold_start_purchases", "weights",
                          "strategies"}
    test_truth = pl.read_parquet(copy.truth("test"))
    assert saved["customers_evaluated"] == test_truth.filter(pl.col("article_ids").list.len() > 0).height
    for scores in saved["strategies"].values():
        assert set(scores) >= {"map12", "recall12", "coverage", "lift", "cold_start_hits"}
        assert 0 <= scores["map12"] <= 1 and scores["cold_start_hits"] <= saved["cold_start_purchases"]
    assert saved["strategies"]["popular_last_week"]["lift"] == pytest.approx(1.0)
    test = pl.read_parquet(copy.split("test"))
    assert saved["test_week"] == [str(test["t_dat"].min()), str(test["t_dat"].max())]


def test_evaluation_is_honest(tiny_run):
    copy, meta, _, calls = tiny_run
    validation_start = date.fromisoformat(meta["validation_week"][0])
    test_start = date.fromisoformat(meta["test_week"][0])
    # fit 1 (choose weights) sees only days before the validation week; fit 2 (score test) only before the test week
    assert calls["fit"][0] < validation_start
    assert validation_start <= calls["fit"][1] < test_start
    # the weights are tuned on validation customers only
    validation = set(pl.read_parquet(copy.truth("validation"))["customer_id"])
    assert calls["tune"] and all(chosen <= validation for chosen in calls["tune"])


def test_submission_format(tiny_run):
    copy, _, _, _ = tiny_run
    submission = pl.read_csv(copy.submission, schema={"customer_id": pl.String, "prediction": pl.String})
    customers = pl.read_parquet(copy.customers)
    assert submission.columns == ["customer_id", "prediction"]
    assert submission.height == customers.height
    assert submission["customer_id"].str.contains(r"^[0-9a-f]{64}$").all()
    assert submission["customer_id"].n_unique() == submission.height
    ids = pl.read_parquet(copy.customer_ids)
    assert set(submission["customer_id"]) == set(ids.join(customers, on="customer_id", how="semi")["customer_id_hex"])
    predictions = submission["prediction"].str.split(" ")
    assert (predictions.list.len() == 12).all()
    assert (predictions.list.unique().list.len() == 12).all()
    assert predictions.explode().str.contains(r"^\d{10}$").all()
    known = set(pl.read_parquet(copy.articles)["article_id"])
    assert set(predictions.explode().cast(pl.Int64)) <= known


def test_recommendations_have_reasons(tiny_run):
    copy, _, _, _ = tiny_run
    recs = pl.read_parquet(copy.recommendations)
    assert recs.schema == pl.Schema({"customer_id": pl.UInt64, "article_id": pl.Int32, "rank": pl.UInt8,
                                     "score": pl.Float32, "reason": pl.String, "source_article_id": pl.Int32})
    assert recs.group_by("customer_id").len()["len"].unique().to_list() == [12]
    assert recs["reason"].null_count() == 0
    assert recs["reason"].str.contains(r"^(bought before|colourway of \d{10}|similar description to \d{10}|"
                                       r"often bought with \d{10}|"
                                       r"looks like \d{10}|trending|trending in .+|bestseller|"
                                       r"looks like \d{10} \(new arrival\)|similar to \d{10} \(new arrival\)|"
                                       r"popular at your age)$").all()
    personal = recs.filter(pl.col("reason").str.contains(r"\d{10}"))
    assert (personal["reason"].str.extract(r"(\d{10})").cast(pl.Int32) == personal["source_article_id"]).all()


@pytest.mark.slow  # runs whole stages on the tiny sample
def test_run_with_visual_twins_uses_them(tiny, tmp_path):
    copy = copy_of(tiny, tmp_path)
    articles = pl.read_parquet(copy.articles)
    # stand-in twins (visual_reccs.py's contract): the next articles of the same product type
    twins = (articles.select("article_id", "product_type_name")
             .join(articles.select(twin_id="article_id", product_type_name="product_type_name"), on="product_type_name")
             .filter(pl.col("twin_id") != pl.col("article_id"))
             .group_by("article_id").agg(pl.col("twin_id").sort().head(5))
             .explode("twin_id")
             .with_columns(rank=pl.int_range(1, pl.len() + 1).over("article_id").cast(pl.UInt8),
                           score=pl.lit(0.8, dtype=pl.Float32)))
    copy.visual_twins.parent.mkdir(parents=True, exist_ok=True)
    twins.write_parquet(copy.visual_twins)
    # recorded as visual_reccs.py records its output, so that the readers' freshness check accepts it
    write_json(manifest_record({}, {copy.visual_twins: copy.visual_twins}, "stand-in twins", copy.data_dir),
               copy.manifest("visual_reccs.py"))
    meta = final.evaluate(copy, show_progress=False)
    assert "visual" in meta["strategies"] and "visual" in meta["weights"]
