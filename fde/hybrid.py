"""The hybrid: a weighted blend of every source's score over the candidate pool, weights tuned on validation.

score(customer, article) = sum_s w_s * ((1 - rank_weight) * score__s + rank_weight / rank__s)
                           + sum_p w_p * score__p (the popularity priors) + a tie-breaker,
over the pool of candidates.py. `tune` chooses the weights by coordinate ascent on one week's
MAP@12 (the validation week, never the test week). The ranker (ranker.py) learns the same
combination, and more, with LightGBM.
"""
from __future__ import annotations

import polars as pl

from fde import candidates, evaluation, metrics
from fde.strategies import ARTICLE, K, Popularity, Recommender, as_customer_frame, top_k

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
RANK_WEIGHT_GRID = (0.0, 0.25, 0.5)
TUNING_ROUNDS = 2
HYBRID_POPULAR = ("popular_decayed", "popular_age")  # popularity priors inside the hybrid (the first fills lists)
DEFAULT_WEIGHT = 0.5       # every weight's start before tuning
DEFAULT_RANK_WEIGHT = 0.0
TIEBREAK = 1e-6  # weight of the first popularity prior that breaks ties between equal blends
ANCHOR = "purchase_history"  # fixed at 1: only the ratios of the weights matter
TUNING_CUSTOMERS = 50_000  # validation customers the weights are tuned on (a seeded sample above this)


class Hybrid(Recommender):
    """A weighted blend of fitted strategies' scores and ranks over their pooled candidates."""

    name = "hybrid"

    def __init__(self, personal: list[Recommender], popular: list[Popularity], weights: dict | None = None,
                 rank_weight: float = DEFAULT_RANK_WEIGHT, n_candidates: int = candidates.N_CANDIDATES,
                 n_popular: int = candidates.N_POPULAR):
        if not popular:
            raise ValueError("the hybrid needs at least one popularity strategy to fill lists")
        self.personal = personal
        self.popular = popular
        self.weights = dict(weights or {})
        self.rank_weight = rank_weight
        self.n_candidates = n_candidates
        self.n_popular = n_popular

    @property
    def components(self) -> list[Recommender]:
        return [*self.personal, *self.popular]

    def fit(self, transactions, articles, cutoff=None, customers=None):
        """Fit every component on the same history."""
        for strategy in self.components:
            strategy.fit(transactions, articles, cutoff, customers)
        return self

    def pool(self, customers: pl.DataFrame, proposed: dict | None = None) -> pl.DataFrame:
        """The candidate pool of these customers (candidates.build) over the hybrid's components."""
        return candidates.build(self.personal, self.popular, customers, self.n_candidates, self.n_popular, proposed)

    def contributions(self, weights: dict | None = None, rank_weight: float | None = None) -> list[pl.Expr]:
        """Each component's weighted term, named after it: w * ((1 - rank_weight) * score + rank_weight / rank)."""
        weights = self.weights if weights is None else weights
        rank_weight = self.rank_weight if rank_weight is None else rank_weight
        terms = []
        for strategy in self.components:
            w = float(weights.get(strategy.name, 0.0))
            term = pl.col(candidates.score_column(strategy.name))
            if strategy in self.personal and rank_weight:
                rank = pl.col(candidates.rank_column(strategy.name)).cast(pl.Float32).fill_null(float("inf"))
                term = (1 - rank_weight) * term + rank_weight / rank  # not proposed: 1/inf = 0
            terms.append((w * term).cast(pl.Float32).alias(strategy.name))
        return terms

    def score(self, weights: dict | None = None, rank_weight: float | None = None) -> pl.Expr:
        """A pooled row's blended score (Float32): the components' weighted terms, and a tie-breaker."""
        # ties (e.g. every weight 0 for a customer without history) go to the more popular article
        return (pl.sum_horizontal(self.contributions(weights, rank_weight))
                + TIEBREAK * pl.col(candidates.score_column(self.popular[0].name))).cast(pl.Float32)

    def blend(self, pool: pl.DataFrame, k: int, weights: dict | None = None,
              rank_weight: float | None = None, explain: bool = True) -> pl.DataFrame:
        """Top-k per customer by blended score, with the component that contributed most and its purchase.

        explain=False skips the last two (tuning needs only the ranking).
        """
        # rank a slim frame, then fetch the evidence of the k kept rows only (sorting every column is slower)
        ranked = top_k(pool.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), "customer_id",
                                   "article_id", score=self.score(weights, rank_weight)), k)
        if not explain:
            return ranked.drop("row")
        kept = pool.select(pl.all().gather(ranked["row"]))
        names = [s.name for s in self.components]
        contributed = pl.concat_list(self.contributions(weights, rank_weight))
        # the component that contributed most explains the item; nothing contributed: the first popular list
        best = (pl.when(contributed.list.max() > 0).then(contributed.list.arg_max())
                .otherwise(len(self.personal)).cast(pl.UInt8))
        source = pl.lit(None, dtype=ARTICLE)
        for index, strategy in enumerate(self.personal):
            source = pl.when(pl.col("component") == index).then(
                pl.col(candidates.source_column(strategy.name))).otherwise(source)
        return (pl.concat([ranked.drop("row"), kept.drop("customer_id", "article_id")], how="horizontal")
                .with_columns(component=best).with_columns(source_article_id=source)
                .with_columns(strategy=pl.col("component").replace_strict(list(range(len(names))), names,
                                                                          return_dtype=pl.String))
                .select("customer_id", "article_id", "score", "rank", "strategy", "source_article_id"))

    def candidates(self, customers, n, proposed: dict | None = None):
        """Blend for customers with personal candidates; the others share their popularity group's list.

        A customer no personal strategy proposes anything to gets the blend of the popular lists
        alone, which depends only on their group (e.g. age band): it is computed once per group.
        proposed: the personal sources' proposals (candidates.proposals) made for exactly these customers.
        """
        if proposed is None:
            proposed = candidates.proposals(self.personal, customers, self.n_candidates)
        active = (pl.concat([p.select("customer_id") for p in proposed.values()]).unique()
                  if proposed else customers.clear())
        ranked = [self.blend(self.pool(customers.join(active, on="customer_id", how="semi"), proposed), n)]
        cold = customers.join(active, on="customer_id", how="anti")
        if cold.height:
            groups = cold
            for offset, strategy in enumerate(self.popular):
                groups = strategy.groups(groups).rename({"group": f"g{offset}"})
            keys = [f"g{offset}" for offset in range(len(self.popular))]
            representatives = groups.unique(keys, keep="first").rename({"customer_id": "representative"})
            lists = self.blend(self.pool(representatives.select(customer_id="representative")), n)
            ranked.append(groups.join(representatives, on=keys, how="inner")
                          .join(lists.rename({"customer_id": "representative"}), on="representative", how="inner")
                          .select(ranked[0].columns))
        return pl.concat(ranked).sort("customer_id", "rank")

    def explain(self, ranked: pl.DataFrame) -> pl.DataFrame:
        """Add the reason (words) for each ranked row from its main component and source purchase."""
        reason = pl.lit("trending")
        for strategy in self.components:
            reason = pl.when(pl.col("strategy") == strategy.name).then(
                strategy.reason(pl.col("article_id"), pl.col("source_article_id"))).otherwise(reason)
        return ranked.with_columns(reason=reason.cast(pl.String))


class Proposed(Recommender):
    """A fitted hybrid that reuses the personal sources' proposals already made for the customers it is asked
    about (validate: the tuning's sample is scored from the same proposals as the whole week)."""

    def __init__(self, hybrid: Hybrid, proposed: dict):
        self.hybrid, self.proposed, self.name = hybrid, proposed, hybrid.name

    def candidates(self, customers, n):
        return self.hybrid.candidates(customers, n, self.proposed)


def make(populars: list[Popularity], personal: list[Recommender], weights=None,
         rank_weight=DEFAULT_RANK_WEIGHT) -> Hybrid:
    """The hybrid over already fitted strategies, with the popularity priors it uses."""
    priors = sorted((p for p in populars if p.name in HYBRID_POPULAR), key=lambda p: HYBRID_POPULAR.index(p.name))
    return Hybrid(personal, priors, weights=weights, rank_weight=rank_weight)


def map_of_blends(hybrid: Hybrid, pool: pl.DataFrame, truth: pl.DataFrame):
    """f(weights, rank_weight) -> MAP@12 on truth of the hybrid's top 12 from the pool with those weights: the value
    of metrics.map_at_k(hybrid.blend(pool, K, weights, rank_weight), truth), from the blended scores alone
    (metrics.GroupMap, as the ranker's early stopping) instead of sorting the pool for every blend."""
    # a customer none of whose pooled candidates was bought scores 0 whatever the weights, and
    # map_at_k counts customers missing from the recommendations as 0: blend only the others
    bought = metrics.truth_pairs(truth)
    reachable = (pool.join(pool.join(bought, on=candidates.KEYS, how="semi").select("customer_id").unique(),
                           on="customer_id", how="semi")
                 .with_columns(pl.col("article_id").cast(pl.Int32)).sort(candidates.KEYS))
    # a row's rank counts the rows of its customer scored higher, or as high and earlier: article id first, as
    # top_k breaks ties
    labels = (reachable.select(candidates.KEYS).join(bought.with_columns(hit=pl.lit(1.0)), on=candidates.KEYS,
                                                     how="left", maintain_order="left")["hit"].fill_null(0.0))
    groups = reachable.group_by("customer_id", maintain_order=True).len()
    n_truth = groups.join(bought.group_by("customer_id").len("n"), on="customer_id", how="left",
                          maintain_order="left")["n"]
    group_map = metrics.GroupMap(labels.to_numpy(), groups["len"].to_numpy(), n_truth.to_numpy(),
                                 bought["customer_id"].n_unique(), K)

    def blend_map(weights: dict, rank_weight: float) -> float:
        return group_map(reachable.select(hybrid.score(weights, rank_weight)).to_series().to_numpy())

    return blend_map


def tune(hybrid: Hybrid, pool: pl.DataFrame, truth: pl.DataFrame, progress=None) -> tuple[dict, float, float]:
    """Coordinate ascent of the blend weights (then the rank weight) on one week's MAP@12."""
    names = [s.name for s in hybrid.components]
    blend_map = map_of_blends(hybrid, pool, truth)
    weights = {n: DEFAULT_WEIGHT for n in names}
    anchor = ANCHOR if ANCHOR in names else names[0]
    weights[anchor] = 1.0
    rank_weight = DEFAULT_RANK_WEIGHT
    tried = {}

    def score(w, rw):
        key = (tuple(sorted(w.items())), rw)
        if key not in tried:  # a later round revisits settings: score each once
            if progress is not None:
                progress.update(1)
            tried[key] = blend_map(w, rw)
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


def validate(populars: list[Popularity], personal: list[Recommender], inputs: evaluation.Inputs,
             progress=None) -> dict:
    """The validation week's choices and scores, with every source already fitted before it.

    The blend weights are tuned on (a sample of) the week's buyers, then every strategy and the tuned
    hybrid are scored on all of them. Returns {"weights", "rank_weight", "validation_map12": per strategy}:
    ranker.py saves it in ranker.json from the sources it fits at that cut-off, and final.py reuses it
    instead of fitting them again.
    """
    hybrid = make(populars, personal)
    truth = inputs.validation_truth
    tune_truth = evaluation.sample_customers(truth, TUNING_CUSTOMERS)
    if progress is not None:
        progress.set_postfix_str("tune hybrid")
    # the personal sources' proposals to every buyer of the week, made once: the tuning's pool is its sample's
    # (a customer's proposals do not depend on who else is asked), the tuned hybrid's lists all of them
    proposed = candidates.proposals(personal, as_customer_frame(truth["customer_id"]), hybrid.n_candidates)
    sample = as_customer_frame(tune_truth["customer_id"])
    ids = sample["customer_id"].implode()
    pool = hybrid.pool(sample, {name: frame.filter(pl.col("customer_id").is_in(ids))
                                for name, frame in proposed.items()})
    weights, rank_weight, _ = tune(hybrid, pool, tune_truth, progress)
    del pool
    hybrid.weights, hybrid.rank_weight = weights, rank_weight
    scores, _ = evaluation.score_week([*populars, *personal, Proposed(hybrid, proposed)], truth,
                                      inputs.train["article_id"].unique(), inputs.articles.height)
    return {"weights": weights, "rank_weight": rank_weight,
            "validation_map12": {name: s["map12"] for name, s in scores.items()}}


def tuning_steps(n_components: int) -> int:
    """Upper bound of the blends `tune` scores (for the progress bar)."""
    per_round = (n_components - 1) * (len(WEIGHT_GRID) - 1) + len(RANK_WEIGHT_GRID) - 1
    return 1 + TUNING_ROUNDS * per_round
