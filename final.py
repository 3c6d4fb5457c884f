"""The hybrid recommender: tuned on the validation week, scored once on the test week, then a submission.

    python final.py --data-dir data

1. Validation: every strategy is fitted on train (everything before the validation week) and the
   hybrid's blend weights are chosen by coordinate ascent on the validation week's MAP@12.
2. Test: every strategy is refitted on train + validation and scored once on the test week with
   the chosen weights. The table printed (and results/metrics.json) comes from this step only.
3. Submission: refitted on all transactions; the hybrid's top 12 for every customer goes to
   results/recommendations.parquet (with a reason per item) and results/submission.csv.

The hybrid pools each customer's candidates from purchase history, content similarity, trending in
their departments, visual similarity and new arrivals like recent purchases (N_CANDIDATES each) and the popular lists (N_POPULAR, so
every list can be filled to 12), then scores every candidate with
sum_s w_s * ((1 - rank_weight) * score_s + rank_weight / rank_s);
the popularity strategies score every pooled candidate (a prior), the others only their own.
"""
from __future__ import annotations

import argparse
import json

import polars as pl

import artifacts as art
import metrics
from common import (Stopwatch, UserError, article_id_text, atomic_outputs, atomic_path, check_submission, check_writable,
                    peak_rss_mb, run_main, summary, write_json, write_parquet)
from individual_baseline import PurchaseHistory
from recommenders import (K, CategoryPopularity, ContentSimilarity, NewArrivals, Popularity, Recommender,
                          VisualSimilarity, as_customer_frame, load_visual_vectors, popularity_strategies, top_k)

N_CANDIDATES = 24          # candidates per personal strategy and customer
N_POPULAR = 16             # popular candidates per customer: the fill, and room for trends
WEIGHT_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
RANK_WEIGHT_GRID = (0.0, 0.25, 0.5)
TUNING_ROUNDS = 2
TUNING_CUSTOMERS = 50_000  # validation customers the weights are tuned on (a seeded sample above this)
CHUNK_CUSTOMERS = 100_000  # customers per batch when recommending for everyone (bounds memory)
BASELINE = "popular_last_week"
HYBRID_POPULAR = ("popular_decayed", "popular_age")  # popularity priors inside the hybrid (the first breaks ties)
DEFAULT_WEIGHTS = {"purchase_history": 1.0, "content": 0.25, "popular_department": 0.5, "visual": 0.25,
                   "new_arrivals": 0.25, "popular_decayed": 0.5, "popular_age": 0.0}
DEFAULT_RANK_WEIGHT = 0.0
TIEBREAK = 1e-6  # weight of the first popularity prior that breaks ties between equal blends
ANCHOR = "purchase_history"  # fixed at 1: only the ratios of the weights matter


class Hybrid(Recommender):
    """A weighted blend of fitted strategies' scores and ranks over their pooled candidates."""

    name = "hybrid"

    def __init__(self, personal: list[Recommender], popular: list[Popularity], weights: dict | None = None,
                 rank_weight: float = DEFAULT_RANK_WEIGHT, n_candidates: int = N_CANDIDATES,
                 n_popular: int = N_POPULAR):
        if not popular:
            raise ValueError("the hybrid needs at least one popularity strategy to fill lists")
        self.personal = personal
        self.popular = popular
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.rank_weight = rank_weight
        self.n_candidates = n_candidates
        self.n_popular = n_popular

    @property
    def components(self) -> list[Recommender]:
        return [*self.personal, *self.popular]

    def fit(self, transactions, articles):
        """Fit every component on the same transactions."""
        for strategy in self.components:
            strategy.fit(transactions, articles)
        return self

    def features(self, customers: pl.DataFrame, proposals: list[pl.DataFrame] | None = None) -> pl.DataFrame:
        """One row per pooled (customer_id, article_id) with every component's evidence.

        s<i>: component i's score (0 when it did not propose the article; popularity scores every
        row); r<i>: its rank for that customer (null when not proposed); src<i>: the purchase behind it.
        """
        if proposals is None:
            proposals = self.proposals(customers)
        pool = [p.select("customer_id", "article_id") for p in proposals]
        pool += [p.candidates(customers, self.n_popular).select("customer_id", "article_id") for p in self.popular]
        wide = pl.concat(pool).unique()
        for index, cands in enumerate(proposals):
            wide = wide.join(cands.select(
                "customer_id", "article_id", pl.col("score").alias(f"s{index}"),
                pl.col("score").rank("ordinal", descending=True).over("customer_id").cast(pl.UInt16).alias(f"r{index}"),
                pl.col("source_article_id").alias(f"src{index}")), on=["customer_id", "article_id"], how="left")
        for offset, strategy in enumerate(self.popular):
            wide = strategy.score_pairs(wide).rename({"score": f"s{len(self.personal) + offset}"})
        return wide.with_columns(pl.col(f"s{i}").fill_null(0.0).cast(pl.Float32) for i in range(len(self.components)))

    def proposals(self, customers: pl.DataFrame) -> list[pl.DataFrame]:
        """Each personal strategy's candidates for these customers."""
        return [strategy.candidates(customers, self.n_candidates) for strategy in self.personal]

    def contributions(self, weights: dict | None = None, rank_weight: float | None = None) -> list[pl.Expr]:
        """Each component's weighted term: w * ((1 - rank_weight) * score + rank_weight / rank); priors w * score."""
        weights = self.weights if weights is None else weights
        rank_weight = self.rank_weight if rank_weight is None else rank_weight
        terms = []
        for index, strategy in enumerate(self.components):
            w = float(weights.get(strategy.name, 0.0))
            term = pl.col(f"s{index}")
            if index < len(self.personal) and rank_weight:
                rank = pl.col(f"r{index}").cast(pl.Float32).fill_null(float("inf"))  # not proposed: 1/inf = 0
                term = (1 - rank_weight) * term + rank_weight / rank
            terms.append((w * term).cast(pl.Float32).alias(f"c{index}"))
        return terms

    def blend(self, features: pl.DataFrame, k: int, weights: dict | None = None,
              rank_weight: float | None = None, explain: bool = True) -> pl.DataFrame:
        """Top-k per customer by blended score, with the component and purchase that contributed most.

        explain=False skips the last two (tuning needs only the ranking).
        """
        terms = self.contributions(weights, rank_weight)
        # ties (e.g. every weight 0 for a customer without history) go to the more popular article
        score = pl.sum_horizontal(terms) + TIEBREAK * pl.col(f"s{len(self.personal)}")
        # rank a slim frame, then fetch the evidence of the k kept rows only (sorting every column is slower)
        ranked = top_k(features.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), "customer_id",
                                       "article_id", score=score.cast(pl.Float32)), k)
        if not explain:
            return ranked.drop("row")
        evidence = features.drop("customer_id", "article_id").select(pl.all().gather(ranked["row"]))
        ranked = pl.concat([ranked.drop("row"), evidence], how="horizontal")
        # the component that contributed most explains the item; nothing contributed: the popular list
        contributed = pl.concat_list(terms)
        best = (pl.when(contributed.list.max() > 0).then(contributed.list.arg_max())
                .otherwise(len(self.personal)).cast(pl.UInt8))
        source = pl.lit(None, dtype=pl.Int32)
        for index in range(len(self.personal)):
            source = pl.when(pl.col("strategy") == index).then(pl.col(f"src{index}")).otherwise(source)
        return (ranked.with_columns(strategy=best).with_columns(source_article_id=source)
                .select("customer_id", "article_id", "score", "rank", "strategy", "source_article_id"))

    def candidates(self, customers, n):
        """Blend for customers with personal candidates; the others share their popularity group's list.

        A customer no personal strategy proposes anything to gets the blend of the popular lists
        alone, which depends only on their group (e.g. age band): it is computed once per group.
        """
        proposals = self.proposals(customers)
        active = pl.concat([p.select("customer_id") for p in proposals]).unique() if proposals else customers.clear()
        ranked = [self.blend(self.features(customers.join(active, on="customer_id", how="semi"), proposals), n)]
        cold = customers.join(active, on="customer_id", how="anti")
        if cold.height:
            groups = cold
            for offset, strategy in enumerate(self.popular):
                groups = strategy.groups(groups).rename({"group": f"g{offset}"})
            keys = [f"g{offset}" for offset in range(len(self.popular))]
            representatives = groups.unique(keys, keep="first").rename({"customer_id": "representative"})
            lists = self.blend(self.features(representatives.select(customer_id="representative")), n)
            ranked.append(groups.join(representatives, on=keys, how="inner")
                          .join(lists.rename({"customer_id": "representative"}), on="representative", how="inner")
                          .select(ranked[0].columns))
        return pl.concat(ranked).sort("customer_id", "rank")

    def explain(self, ranked: pl.DataFrame) -> pl.DataFrame:
        """Add the reason (words) for each ranked row from its main component and source purchase."""
        reason = pl.lit("trending")
        for index, strategy in enumerate(self.components):
            reason = pl.when(pl.col("strategy") == index).then(
                strategy.reason(pl.col("article_id"), pl.col("source_article_id"))).otherwise(reason)
        return ranked.with_columns(reason=reason.cast(pl.String))


# ---------------------------------------------------------------------------- inputs and strategies

def load_inputs(artifacts: art.Artifacts, quiet: bool = False) -> dict:
    """Articles, customers, the split, and the visual twins (None, said once, when absent)."""
    art.require_fresh(artifacts, "data_optim.py", "split_data.py")  # no result from a split older than the data
    inputs = {
        "articles": art.read_parquet(artifacts.articles, artifacts.command("data_optim.py")),
        "customers": art.read_parquet(artifacts.customers, artifacts.command("data_optim.py")),
    }
    for part in ("train", "validation", "test"):
        inputs[part] = art.read_parquet(artifacts.split(part), artifacts.command("split_data.py"))
    for part in ("validation", "test"):
        inputs[f"{part}_truth"] = art.read_parquet(artifacts.truth(part), artifacts.command("split_data.py"))
    visual = VisualSimilarity.load(artifacts, quiet=quiet)
    inputs["twins"] = None if visual is None else visual.twins
    inputs["visual_vectors"] = load_visual_vectors(artifacts)  # new arrivals fall back to content without them
    return inputs


def make_strategies(inputs: dict) -> tuple[list[Popularity], list[Recommender]]:
    """Fresh popularity and personal strategies (visual only when twins exist; new arrivals always)."""
    populars = popularity_strategies(inputs["customers"])
    personal = [PurchaseHistory(), ContentSimilarity(), CategoryPopularity()]
    if inputs.get("twins") is not None:
        personal.append(VisualSimilarity(inputs["twins"]))
    personal.append(NewArrivals(inputs.get("visual_vectors")))
    return populars, personal


def make_hybrid(populars: list[Popularity], personal: list[Recommender], weights=None,
                rank_weight=DEFAULT_RANK_WEIGHT) -> Hybrid:
    """The hybrid over already fitted strategies."""
    priors = [p for p in populars if p.name in HYBRID_POPULAR]
    return Hybrid(personal, priors, weights=weights, rank_weight=rank_weight)


def fit_all(strategies: list[Recommender], transactions: pl.DataFrame, articles: pl.DataFrame, progress=None):
    """Fit each strategy on the same transactions (everything before one cut-off)."""
    for strategy in strategies:
        if progress is not None:
            progress.set_postfix_str(f"fit {strategy.name}")
        strategy.fit(transactions, articles)
        if progress is not None:
            progress.update(1)


def week_of(transactions: pl.DataFrame) -> list[str]:
    """[first day, last day] of a held-out week, as ISO dates."""
    return [str(transactions["t_dat"].min()), str(transactions["t_dat"].max())]


def sample_customers(truth: pl.DataFrame, limit: int, seed: int = 0) -> pl.DataFrame:
    """The truth frame, or a seeded sample of `limit` of its customers when it is larger."""
    return truth if truth.height <= limit else truth.sample(limit, seed=seed)


# ---------------------------------------------------------------------------- tuning

def tune(hybrid: Hybrid, features: pl.DataFrame, truth: pl.DataFrame, progress=None) -> tuple[dict, float, float]:
    """Coordinate ascent of the blend weights (then the rank weight) on one week's MAP@12."""
    names = [s.name for s in hybrid.components]
    # a customer none of whose pooled candidates was bought scores 0 whatever the weights, and
    # map_at_k counts customers missing from the recommendations as 0: blend only the others
    bought = truth.select("customer_id", article_id=pl.col("article_ids")).explode("article_id").unique()
    reachable = features.join(features.join(bought, on=["customer_id", "article_id"], how="semi")
                              .select("customer_id").unique(), on="customer_id", how="semi")
    weights = {n: DEFAULT_WEIGHTS.get(n, 0.5) for n in names}
    anchor = ANCHOR if ANCHOR in names else names[0]
    weights[anchor] = 1.0
    rank_weight = DEFAULT_RANK_WEIGHT

    tried = {}

    def score(w, rw):
        key = (tuple(sorted(w.items())), rw)
        if key not in tried:  # a later round revisits settings: score each once
            if progress is not None:
                progress.update(1)
            tried[key] = metrics.map_at_k(hybrid.blend(reachable, K, w, rw, explain=False), truth)
        return tried[key]

    best = score(weights, rank_weight)
    for _ in range(TUNING_ROUNDS):
        improved = False
        for name in names:
            if name == anchor:
                continue
            for value in WEIGHT_GRID:
                if value == weights[name]:
                    continue
                trial = {**weights, name: value}
                result = score(trial, rank_weight)
                if result > best + 1e-9:
                    best, weights, improved = result, trial, True
        for value in RANK_WEIGHT_GRID:
            if value != rank_weight:
                result = score(weights, value)
                if result > best + 1e-9:
                    best, rank_weight, improved = result, value, True
        if not improved:
            break
    return weights, rank_weight, best


def tuning_steps(n_components: int) -> int:
    """Upper bound of the blends `tune` scores (for the progress bar)."""
    per_round = (n_components - 1) * (len(WEIGHT_GRID) - 1) + len(RANK_WEIGHT_GRID) - 1
    return 1 + TUNING_ROUNDS * per_round


# ---------------------------------------------------------------------------- evaluation

def score_week(strategies: list[Recommender], hybrid: Hybrid, truth: pl.DataFrame, seen: pl.Series,
               n_articles: int) -> tuple[dict, int]:
    """Every strategy's and the hybrid's metrics on one week; cold start = articles never sold before it."""
    customers = truth["customer_id"]
    pairs = truth.explode("article_ids").rename({"article_ids": "article_id"}).drop_nulls("article_id").unique()
    cold = pairs.filter(~pl.col("article_id").is_in(seen.implode()))
    results = {}
    for strategy in [*strategies, hybrid]:
        recs = strategy.recommend(customers, K)
        results[strategy.name] = {**metrics.evaluate(recs, truth, n_articles, K),
                                  "cold_start_hits": metrics.hits_on(recs, cold, K)}
    return results, cold.height


def add_lift(results: dict) -> dict:
    """Lift of every strategy over the last-week popularity baseline (None when the baseline scores 0)."""
    base = results.get(BASELINE, {}).get("map12", 0.0)
    for scores in results.values():
        scores["lift"] = scores["map12"] / base if base > 0 else None
    return results


def table_of(results: dict, validation: dict) -> pl.DataFrame:
    """The table the user reads: one row per strategy, hybrid last."""
    rows = [{"strategy": name, "val MAP@12": validation.get(name, {}).get("map12"), "MAP@12": s["map12"],
             "lift": s["lift"], "recall@12": s["recall12"], "coverage": s["coverage"],
             "cold-start hits": s["cold_start_hits"]} for name, s in results.items()]
    return pl.DataFrame(rows, schema_overrides={"val MAP@12": pl.Float64, "lift": pl.Float64})


def print_table(table: pl.DataFrame, meta: dict) -> None:
    """Print the evaluation table with what it measured."""
    print(f"\nTest week {meta['test_week'][0]}..{meta['test_week'][1]}: {meta['customers_evaluated']:,} customers "
          f"who bought something (ground truth = the unique articles each bought; customers without a "
          f"prediction score 0). Trained on everything before the test week; weights chosen on the "
          f"validation week {meta['validation_week'][0]}..{meta['validation_week'][1]}.")
    print(f"val MAP@12 = the validation week, on which the hybrid's weights were chosen (so its value there "
          f"is optimistic); every other column is the test week. Lift = MAP@12 / MAP@12 of {BASELINE}. "
          f"Coverage = share of the {meta['catalogue']:,} catalogue "
          f"articles shown to someone. Cold start: {meta['cold_start_purchases']:,} test-week purchases of "
          "articles never sold before the test week; hits = how many each strategy put in that customer's top 12.")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, float_precision=4,
                   tbl_rows=50, tbl_width_chars=160):
        print(table)
    weights = ", ".join(f"{k}={v:g}" for k, v in meta["weights"].items())
    print(f"hybrid weights (chosen on validation): {weights}")


def evaluate(artifacts: art.Artifacts, show_progress: bool = True, inputs: dict | None = None,
             outputs=lambda path: path) -> dict:
    """Tune on validation, score every strategy and the hybrid once on the test week, write metrics.json
    (to `outputs(path)`: see common.atomic_outputs)."""
    from tqdm.auto import tqdm

    clock = Stopwatch()
    inputs = inputs or load_inputs(artifacts)
    articles = inputs["articles"]
    populars, personal = make_strategies(inputs)
    strategies = [*populars, *personal]
    n_hybrid = len(personal) + len([p for p in populars if p.name in HYBRID_POPULAR])
    progress = tqdm(total=2 * len(strategies) + tuning_steps(n_hybrid), desc="evaluate", unit="step",
                    disable=not show_progress)

    # 1. validation: fit before the validation week, choose the weights
    fit_all(strategies, inputs["train"], articles, progress)
    val_truth = inputs["validation_truth"]
    seen = inputs["train"]["article_id"].unique()
    hybrid = make_hybrid(populars, personal)
    tune_truth = sample_customers(val_truth, TUNING_CUSTOMERS)
    progress.set_postfix_str("tune hybrid")
    features = hybrid.features(as_customer_frame(tune_truth["customer_id"]))
    weights, rank_weight, val_hybrid = tune(hybrid, features, tune_truth, progress)
    del features
    hybrid.weights, hybrid.rank_weight = weights, rank_weight
    validation, _ = score_week(strategies, hybrid, val_truth, seen, articles.height)

    # 2. test: refit before the test week, score once with the chosen settings
    before_test = pl.concat([inputs["train"], inputs["validation"]])
    fit_all(strategies, before_test, articles, progress)
    test_truth = inputs["test_truth"]
    results, cold = score_week(strategies, hybrid, test_truth, before_test["article_id"].unique(), articles.height)
    progress.total = progress.n  # tuning may stop early
    progress.close()
    add_lift(results)
    meta = {
        "test_week": week_of(inputs["test"]),
        "validation_week": week_of(inputs["validation"]),
        "customers_evaluated": test_truth.filter(pl.col("article_ids").list.len() > 0).height,
        "cold_start_purchases": int(cold),
        "weights": {**weights, "rank_weight": rank_weight},
        "ground_truth": "unique articles bought per customer in the week",
        "validation_map12": {name: s["map12"] for name, s in validation.items()},
        "strategies": results,
        "catalogue": articles.height,
    }
    write_json(meta, outputs(artifacts.metrics))
    print_table(table_of(results, validation), meta)
    summary("final.evaluate", customers=meta["customers_evaluated"], hybrid_map12=f"{results['hybrid']['map12']:.4f}",
            seconds=clock.seconds, peak_rss_mb=peak_rss_mb(), output=str(artifacts.metrics))
    return meta


# ---------------------------------------------------------------------------- submission

def recommend_everyone(hybrid: Hybrid, customers: pl.Series, show_progress: bool = True,
                       chunk: int = CHUNK_CUSTOMERS) -> pl.DataFrame:
    """The hybrid's top 12 with reasons for every customer, computed in batches of customers."""
    from tqdm.auto import tqdm

    frame = as_customer_frame(customers)
    parts = []
    for start in tqdm(range(0, frame.height, chunk), desc="recommend", unit="batch", disable=not show_progress):
        ranked = hybrid.candidates(frame.slice(start, chunk), K)
        parts.append(hybrid.explain(ranked).select(
            "customer_id", pl.col("article_id").cast(pl.Int32), pl.col("rank").cast(pl.UInt8),
            pl.col("score").cast(pl.Float32), "reason", pl.col("source_article_id").cast(pl.Int32)))
    return pl.concat(parts) if parts else pl.DataFrame(schema={
        "customer_id": pl.UInt64, "article_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32,
        "reason": pl.String, "source_article_id": pl.Int32})


def submission_frame(recs: pl.DataFrame, customer_ids: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    """Kaggle's customer_id,prediction: original 64-hex ids, 12 space-separated 10-digit article ids."""
    lists = (recs.sort("customer_id", "rank")
             .group_by("customer_id", maintain_order=True)
             .agg(prediction=article_id_text(pl.col("article_id")).str.join(" ")))
    out = (customers.select("customer_id").join(customer_ids, on="customer_id", how="left", maintain_order="left")
           .join(lists, on="customer_id", how="left", maintain_order="left"))
    missing = out.filter(pl.col("customer_id_hex").is_null()).height
    if missing:
        raise UserError(f"{missing:,} customers have no original id in processed/customer_ids.parquet: "
                        "rerun data_optim.py")
    return out.select(customer_id="customer_id_hex", prediction=pl.col("prediction").fill_null(""))


def submit(artifacts: art.Artifacts, weights: dict | None = None, show_progress: bool = True,
           inputs: dict | None = None, outputs=lambda path: path) -> dict:
    """Fit on all transactions, write recommendations.parquet (with reasons) and submission.csv for every
    customer of customers.csv and every buyer (to `outputs(path)`: see common.atomic_outputs)."""
    clock = Stopwatch()
    if weights is None:
        path = art.require(artifacts.metrics, artifacts.command("final.py"))
        weights = json.loads(path.read_text())["weights"]
    weights = dict(weights)
    rank_weight = float(weights.pop("rank_weight", DEFAULT_RANK_WEIGHT))
    articles = inputs["articles"] if inputs else art.read_parquet(artifacts.articles, artifacts.command("data_optim.py"))
    customers = inputs["customers"] if inputs else art.read_parquet(artifacts.customers, artifacts.command("data_optim.py"))
    transactions = (pl.concat([inputs[p] for p in ("train", "validation", "test")]) if inputs
                    else art.read_parquet(artifacts.transactions, artifacts.command("data_optim.py")))
    twins = inputs.get("twins") if inputs else None
    vectors = inputs.get("visual_vectors") if inputs else None
    if not inputs:
        visual = VisualSimilarity.load(artifacts)
        twins = None if visual is None else visual.twins
        vectors = load_visual_vectors(artifacts)
    populars, personal = make_strategies({"customers": customers, "twins": twins, "visual_vectors": vectors})
    hybrid = make_hybrid(populars, personal, weights, rank_weight)
    hybrid.fit(transactions, articles)
    del transactions
    # everyone: customers.csv's customers and every buyer (customer_ids.parquet maps both)
    customer_ids = art.read_parquet(artifacts.customer_ids, artifacts.command("data_optim.py"))
    recs = recommend_everyone(hybrid, customer_ids["customer_id"], show_progress)
    submission = submission_frame(recs, customer_ids, customer_ids)
    check_submission(submission, customer_ids["customer_id_hex"], artifacts.command("final.py"))
    write_parquet(recs, outputs(artifacts.recommendations))
    with atomic_path(outputs(artifacts.submission)) as tmp:
        submission.write_csv(tmp)
    summary("final.submit", customers=submission.height, rows=recs.height, seconds=clock.seconds,
            peak_rss_mb=peak_rss_mb(), output=str(artifacts.submission))
    return {"customers": submission.height, "recommendations": recs.height, "seconds": clock.seconds,
            "submission": str(artifacts.submission), "recommendations_path": str(artifacts.recommendations)}


def run(artifacts: art.Artifacts, show_progress: bool = True) -> dict:
    """Evaluate (tune on validation, score the test week), then write the submission trained on all data;
    the three results appear together or not at all."""
    check_writable(artifacts.results_dir)  # before minutes of work, not after
    inputs = load_inputs(artifacts)
    built_from = [artifacts.manifest("data_optim.py"), artifacts.manifest("split_data.py")]
    built_from += [p for p in (artifacts.visual_twins,) if p.exists()]
    with atomic_outputs(artifacts.manifest("final.py"), built_from, artifacts.command("final.py"),
                        artifacts.data_dir) as outputs:
        meta = evaluate(artifacts, show_progress, inputs, outputs)
        meta["submission"] = submit(artifacts, meta["weights"], show_progress, inputs, outputs)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    run(art.from_args(args), show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)
