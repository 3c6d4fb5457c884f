"""The learned ranker: LightGBM LambdaRank over the candidate pool's features, trained on past weeks.

    python ranker.py --data-dir data

1. The repurchase and co-purchase time scales are chosen on the validation week (fitted on train).
2. For each of TRAINING_WEEKS cut-offs before the validation week and the validation week itself,
   every source is fitted on the history before that cut-off; the pool of that week's buyers gets
   its features (features.py) and label = bought in the 7 days after the cut-off. One LambdaRank
   group per (week, customer); groups without a positive in the pool are dropped from training.
3. The model trains on the weeks before the validation week, with early stopping on the
   validation week's MAP@12 (every buyer counts, as the metric does). Then it is retrained with
   that number of rounds on the weeks up to the test week (the validation week included) and
   saved to results/ranker/ (model.txt, ranker.json). final.py scores it on the test week once.
"""
from __future__ import annotations

import argparse
import json
from datetime import timedelta

import numpy as np
import polars as pl

import artifacts as art
import candidates
import evaluation
from common import Stopwatch, UserError, article_id_text, atomic_path, check_writable, peak_rss_mb, run_main, summary, write_json
from features import Context, feature_columns, reduce_vectors
from recommenders import ARTICLE, K, Popularity, Recommender, before, load_visual_vectors, top_k

TRAINING_WEEKS = 3           # label weeks before the validation week the model learns from
MAX_WEEK_CUSTOMERS = 40_000  # buyers per week in a training frame (a seeded sample above this bounds time)
PRIORS = ("popular_age", "popular_decayed", "popular_last_week", "popular_all_time")  # the first proposes
PARAMS = {
    "objective": "lambdarank", "metric": "None", "learning_rate": 0.05, "num_leaves": 31,
    "min_data_in_leaf": 40, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
    "lambdarank_truncation_level": 20, "verbose": -1, "seed": 0, "deterministic": True, "force_row_wise": True,
}
MAX_ROUNDS = 400
EARLY_STOPPING = 30
REASONS = 3  # feature families shown per recommendation
# Cold start is a product promise, not a behaviour constant: the last slots of a list may be kept for
# launches (never sold before the cut-off). How many (of LAUNCH_SLOTS) is chosen on the validation week:
# the fewest that keep COLD_START_SHARE of the cold-start purchases new_arrivals alone finds there.
LAUNCH_SLOTS = (0, 1, 2, 3, 4)
COLD_START_SHARE = 0.5


# ---------------------------------------------------------------------------- the metric LightGBM stops on

def group_map(scores: np.ndarray, labels: np.ndarray, sizes: np.ndarray, n_truth: np.ndarray,
              n_customers: int | None = None, k: int = K) -> float:
    """MAP@k of contiguous groups ranked by score: n_truth = each customer's unique purchases that week.

    Customers of the week missing from the groups (nothing pooled) count 0 when n_customers says how many.
    """
    if len(sizes) == 0:
        return 0.0
    sizes = np.asarray(sizes, dtype=np.int64)
    group = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((-scores, group))
    hits = labels[order].astype(np.float64)
    starts = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(sizes)[:-1]])
    position = np.arange(len(hits)) - starts[group] + 1
    hits[position > k] = 0.0
    cumulative = np.cumsum(hits)
    before_group = np.concatenate([[0.0], cumulative])[starts]
    precision = (cumulative - before_group[group]) / position * hits
    ap = np.bincount(group, weights=precision, minlength=len(sizes)) / np.minimum(n_truth, k)
    return float(ap.sum() / (n_customers or len(sizes)))


# ---------------------------------------------------------------------------- launches in the list

def top_with_launches(frame: pl.DataFrame, k: int, slots: int) -> pl.DataFrame:
    """Each customer's k best rows by score, the last `slots` of them kept for launches when the pool has some.

    A launch is an article never sold before the cut-off (days_since_first_sale is null); a launch
    that already ranks in the top k - slots keeps its place, and a customer with fewer launches
    gets the next best articles instead.
    """
    if not slots:
        return top_k(frame, k)
    new = pl.col("days_since_first_sale").is_null()
    ranked = (frame.sort(["customer_id", "score", "article_id"], descending=[False, True, False])
              .with_columns(_pos=pl.int_range(1, pl.len() + 1).over("customer_id"))
              # launches below the first k - slots places, counted in score order
              .with_columns(_new=(new & (pl.col("_pos") > k - slots)).cast(pl.UInt32).cum_sum().over("customer_id")))
    group = (pl.when(pl.col("_pos") <= k - slots).then(0)
             .when(new & (pl.col("_new") <= slots)).then(1).otherwise(2))
    return (ranked.with_columns(_group=group).sort(["customer_id", "_group", "_pos"])
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over("customer_id"))
            .filter(pl.col("rank") <= k).drop("_pos", "_new", "_group"))


def choose_launch_slots(valid: pl.DataFrame, truth: pl.DataFrame, seen: pl.Series) -> tuple[int, dict]:
    """The fewest launch slots whose validation cold-start hits reach COLD_START_SHARE of new_arrivals' own.

    valid: the validation pool with the model's score; seen: articles sold before the validation week.
    Returns (slots, {slots: [MAP@12, cold-start hits], "new_arrivals_hits": n}).
    """
    import metrics

    cold = candidates.truth_pairs(truth).filter(~pl.col("article_id").is_in(seen.cast(ARTICLE).implode()))
    alone = valid.filter(pl.col("rank__new_arrivals") <= K).select("customer_id", "article_id",
                                                                   rank="rank__new_arrivals")
    target = COLD_START_SHARE * metrics.hits_on(alone, cold, K)
    table = {"new_arrivals_hits": metrics.hits_on(alone, cold, K)}
    for slots in LAUNCH_SLOTS:
        recs = top_with_launches(valid, K, slots)
        table[slots] = [round(metrics.map_at_k(recs, truth, K), 5), metrics.hits_on(recs, cold, K)]
    enough = [slots for slots in LAUNCH_SLOTS if table[slots][1] >= target]
    chosen = enough[0] if enough else max(LAUNCH_SLOTS, key=lambda s: table[s][1])
    return chosen, table


# ---------------------------------------------------------------------------- the model

class Model:
    """A trained booster, the feature names it reads, and what it was trained on."""

    def __init__(self, booster, features: list[str], meta: dict | None = None):
        self.booster = booster
        self.features = list(features)
        self.meta = dict(meta or {})

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The model's inputs; a one-line error when the data gives other features than it was trained on."""
        known = set(self.features) | set(self.meta.get("dropped_features", []))
        present = set(feature_columns(frame))
        if not set(self.features) <= present or not present <= known:
            gone = sorted(set(self.features) - present)
            new = sorted(present - known)
            raise UserError(f"the saved ranker was trained on other features than this data gives (new: "
                            f"{', '.join(new) or '-'}; gone: {', '.join(gone) or '-'}): rerun `python ranker.py` "
                            "with this data's --data-dir/--images-dir")
        return frame.select(pl.col(f).cast(pl.Float32) for f in self.features).to_numpy()

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return self.booster.predict(self.matrix(frame), num_threads=0)

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        """Each feature's SHAP contribution to each row's score (LightGBM pred_contrib, bias dropped).

        Exact but slow (about 1 ms a row here): for a few rows. `path_contributions` scales.
        """
        return self.booster.predict(self.matrix(frame), pred_contrib=True)[:, :-1]

    def path_tables(self, groups: tuple[int, ...]) -> tuple[list[np.ndarray], float]:
        """Per tree, leaf -> what each feature group added along the path to it; and the trees' summed root value.

        groups[i] is feature i's group. Each split moves the value from a node's to its child's,
        and the change is credited to the split's feature (the path attribution that XGBoost offers
        as approx_contribs): a row's credits plus the bias add up to its score exactly.
        """
        cache = self.__dict__.setdefault("_path_tables", {})
        if groups in cache:
            return cache[groups]
        width = max(groups) + 1
        tables, bias = [], 0.0
        for tree in self.booster.dump_model()["tree_info"]:
            root = tree["tree_structure"]
            table = np.zeros((tree["num_leaves"], width), dtype=np.float64)
            tables.append(table)
            if "leaf_value" in root:  # a tree without a split
                bias += root["leaf_value"]
                continue
            bias += root["internal_value"]
            stack = [(root, np.zeros(width))]
            while stack:
                node, credit = stack.pop()
                group = groups[node["split_feature"]]
                for child in (node["left_child"], node["right_child"]):
                    step = credit.copy()
                    step[group] += child.get("internal_value", child.get("leaf_value")) - node["internal_value"]
                    if "leaf_index" in child:
                        table[child["leaf_index"]] = step
                    else:
                        stack.append((child, step))
        cache[groups] = (tables, bias)
        return tables, bias

    def path_contributions(self, frame: pl.DataFrame, groups: tuple[int, ...]) -> np.ndarray:
        """Each row's score split over feature groups by path attribution (see path_tables); one predict's cost."""
        tables, _ = self.path_tables(groups)
        leaves = self.booster.predict(self.matrix(frame), pred_leaf=True, num_threads=0)
        out = np.zeros((frame.height, max(groups) + 1), dtype=np.float64)
        for tree, table in enumerate(tables):
            out += table[leaves[:, tree]]
        return out.astype(np.float32)

    def importance(self) -> list[dict]:
        gains = self.booster.feature_importance(importance_type="gain")
        rows = sorted(zip(self.features, gains), key=lambda r: -r[1])
        return [{"feature": f, "gain": round(float(g), 3)} for f, g in rows]

    def save(self, artifacts: art.Artifacts) -> None:
        """model.txt and ranker.json, each written atomically."""
        with atomic_path(artifacts.ranker_model) as tmp:
            self.booster.save_model(str(tmp))
        write_json({**self.meta, "features": self.features, "feature_importance": self.importance()},
                   artifacts.ranker_meta)

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> "Model":
        """The saved ranker; a one-line error naming the command when absent or inconsistent."""
        import lightgbm as lgb

        command = artifacts.command("ranker.py", images=True)
        meta = json.loads(art.require(artifacts.ranker_meta, command).read_text())
        booster = lgb.Booster(model_file=str(art.require(artifacts.ranker_model, command)))
        if booster.feature_name() != meta["features"]:
            raise UserError(f"{artifacts.ranker_model} and {artifacts.ranker_meta} disagree: rerun `{command}`")
        return cls(booster, meta["features"], meta)


def usable_features(frame: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(features with information, features that are constant or empty in these rows: dropped)."""
    usable, dropped = [], []
    for name in feature_columns(frame):
        column = frame[name].cast(pl.Float32)
        (usable if column.drop_nulls().n_unique() > 1 else dropped).append(name)
    return usable, dropped


def group_sizes(frame: pl.DataFrame) -> np.ndarray:
    """Rows per (cutoff, customer) group of a frame sorted by cutoff, customer."""
    return frame.group_by("cutoff", "customer_id", maintain_order=True).len()["len"].to_numpy()


def train(weeks: pl.DataFrame, features: list[str], rounds: int, valid: pl.DataFrame | None = None,
          valid_truth: dict | None = None, progress=None) -> tuple[object, int, list[float]]:
    """LambdaRank on the weeks' groups that have a positive; early stopping on valid's MAP@12 when given.

    Returns (booster, best number of rounds, validation MAP@12 after each round).
    """
    import lightgbm as lgb

    positive = weeks.filter(pl.col("label").max().over("cutoff", "customer_id") > 0)
    if positive.height == 0:
        raise UserError("no training week has a purchase the candidate pool proposed: the ranker cannot learn; "
                        "check the split (split_data.py) or use more weeks of data")
    train_set = lgb.Dataset(positive.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(),
                            label=positive["label"].to_numpy(), group=group_sizes(positive),
                            feature_name=features, free_raw_data=True)
    curve: list[float] = []
    callbacks = []
    valid_sets, feval = [], None
    if valid is not None:
        sizes = group_sizes(valid)
        labels = valid["label"].to_numpy()
        n_truth = valid_truth["n_truth"]
        valid_set = lgb.Dataset(valid.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(),
                                label=labels, group=sizes, feature_name=features, reference=train_set)
        valid_sets = [valid_set]

        def feval(preds, _data):
            value = group_map(preds, labels, sizes, n_truth, valid_truth["customers"])
            curve.append(value)
            return "map12", value, True

        callbacks.append(lgb.early_stopping(EARLY_STOPPING, first_metric_only=True, verbose=False))
    if progress is not None:
        callbacks.append(lambda env: progress.update(1))
    booster = lgb.train(PARAMS, train_set, num_boost_round=rounds, valid_sets=valid_sets, feval=feval,
                        callbacks=callbacks)
    best = booster.best_iteration if valid is not None and booster.best_iteration > 0 else rounds
    return booster, best, curve


# ---------------------------------------------------------------------------- the ranker as a recommender

class LearnedRanker(Recommender):
    """Candidates from every source, scored by the trained model; reasons from its feature contributions."""

    name = "ranker"

    def __init__(self, model: Model | None, populars: list[Popularity], personal: list[Recommender],
                 customers: pl.DataFrame, vectors: dict | None = None,
                 n_candidates: int = candidates.N_CANDIDATES, n_popular: int = candidates.N_POPULAR):
        self.model = model
        by_name = {p.name: p for p in populars}
        self.popular = [by_name[name] for name in PRIORS if name in by_name]
        self.personal = personal
        self.customers = customers
        self.vectors = vectors
        self.n_candidates = n_candidates
        self.n_popular = n_popular

    def fit(self, transactions, articles, cutoff=None, fit_sources: bool = True):
        """Fit every source at the cut-off (unless already fitted there) and the feature context."""
        transactions, self.cutoff = before(transactions, cutoff)
        if fit_sources:
            for strategy in [*self.popular, *self.personal]:
                strategy.fit(transactions, articles, self.cutoff)
        self.articles = articles
        self.context = Context(transactions, articles, self.customers, self.cutoff, self.vectors)
        return self

    def frame(self, customers: pl.DataFrame) -> pl.DataFrame:
        """The pool of these customers with every feature."""
        pool = candidates.build(self.personal, self.popular, customers, self.n_candidates, self.n_popular)
        return self.context.features(pool)

    def scored(self, customers: pl.DataFrame, n: int) -> pl.DataFrame:
        """Each customer's top n pooled rows by the model's score, with all their features."""
        frame = self.frame(customers)
        frame = frame.with_columns(score=pl.Series(self.model.predict(frame), dtype=pl.Float32))
        return top_with_launches(frame, n, int(self.model.meta.get("launch_slots", 0)))

    def candidates(self, customers, n):
        ranked = self.scored(customers, n)
        return ranked.select("customer_id", "article_id", "score", source_article_id=source_of(ranked))

    def score_pairs(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Given (customer_id, article_id) pairs scored and explained: score, reason, source_article_id, explanation.

        Each pair gets every source's evidence, as a pooled candidate would (candidates.annotate).
        """
        customers = pairs.select(pl.col("customer_id").cast(pl.UInt64)).unique().sort("customer_id")
        proposed = candidates.proposals(self.personal, customers, self.n_candidates)
        frame = self.context.features(candidates.annotate(pairs, proposed, self.popular))
        frame = frame.with_columns(score=pl.Series(self.model.predict(frame), dtype=pl.Float32),
                                   rank=pl.lit(0, dtype=pl.UInt16))
        return explain(frame, self.model, self.articles).drop("rank")

    def recommend_explained(self, customers: pl.DataFrame, k: int = K) -> pl.DataFrame:
        """Top k with reason (words) and explanation (the largest feature-family contributions)."""
        ranked = self.scored(customers, k)
        return explain(ranked, self.model, self.articles)


def source_of(ranked: pl.DataFrame) -> pl.Expr:
    """The purchase that best explains each row: bought itself, else a co-purchase, colourway or look-alike."""
    expr = pl.when(pl.col("times_bought") > 0).then(pl.col("article_id"))
    for column in ("source__co_purchase", "source__colourways", "sim_visual_source", "sim_content_source"):
        if column in ranked.columns:
            expr = expr.when(pl.col(column).is_not_null()).then(pl.col(column))
    return expr.otherwise(None).cast(ARTICLE)


# ---------------------------------------------------------------------------- reasons a merchandiser reads

# feature -> family; a family's words come from its own columns. Customer-only features (age,
# purchases, ...) shift all of one customer's items alike, so they never explain one item.
FAMILIES = {
    "bought": ("times_bought", "days_since_bought", "bought_decayed_", "score__repurchase", "rank__repurchase",
               "score__purchase_history", "rank__purchase_history"),
    "colourway": ("score__colourways", "rank__colourways"),
    "co_purchase": ("score__co_purchase", "rank__co_purchase"),
    "visual": ("sim_visual", "score__visual", "rank__visual"),
    "content": ("sim_content", "score__content", "rank__content"),
    "new": ("score__new_arrivals", "rank__new_arrivals", "days_since_first_sale"),
    "type": ("affinity_type",),
    "department": ("affinity_department", "score__popular_department", "rank__popular_department"),
    "colour": ("affinity_colour",),
    "age": ("score__popular_age",),
    "trend": ("sales_", "trend", "score__popular_decayed", "score__popular_last_week", "score__popular_all_time",
              "repeat_buyer_share"),
    "price": ("price",),
}
CUSTOMER_ONLY = ("age", "days_since_last_purchase", "purchases", "customer_avg_price", "channel_2_share")


def family_of(feature: str) -> str | None:
    if feature in CUSTOMER_ONLY:
        return None
    for family, prefixes in FAMILIES.items():
        if any(feature == p or (p.endswith("_") and feature.startswith(p)) for p in prefixes):
            return family
    if feature.startswith("sim_visual"):
        return "visual"
    if feature.startswith("sim_content"):
        return "content"
    return None


def when_text(days: pl.Expr) -> pl.Expr:
    """'last week', 'last month', or 'N days ago' for a number of days before the cut-off."""
    return (pl.when(days <= 7).then(pl.lit("last week")).when(days <= 31).then(pl.lit("last month"))
            .otherwise(pl.format("{} days ago", days.cast(pl.Int32))))


def new_text(columns: list[str]) -> pl.Expr:
    """A launch's words: the purchase it looks most like, when one is known."""
    text = pl.lit("new arrival")
    for kind, verb in (("content", "similar to"), ("visual", "looks like")):  # visual, when present, wins
        source = f"sim_{kind}_source"
        if source in columns:
            text = pl.when(pl.col(source).is_not_null()).then(pl.format(
                f"new arrival, {verb} {{}} you bought {{}}", article_id_text(pl.col(source)),
                when_text(pl.col(f"sim_{kind}_days")))).otherwise(text)
    return text


def family_texts(articles: pl.DataFrame, columns: list[str]) -> dict[str, pl.Expr]:
    """Each family's sentence for a ranked row (its columns hold the evidence)."""
    def name_of(column: str, fallback: str) -> pl.Expr:
        if column not in articles.columns:
            return pl.lit(fallback)
        lookup = articles.select(pl.col("article_id").cast(ARTICLE), pl.col(column).cast(pl.String))
        return pl.col("article_id").replace_strict(lookup["article_id"], lookup[column], default=fallback)

    times = pl.col("times_bought").cast(pl.Int32)
    return {
        "bought": pl.when(times == 1).then(pl.format("bought it {}", when_text(pl.col("days_since_bought"))))
                    .otherwise(pl.format("bought {} times, last {}", times, when_text(pl.col("days_since_bought")))),
        "colourway": pl.format("colourway of {}", article_id_text(pl.col("source__colourways"))),
        "co_purchase": pl.format("often bought with {}", article_id_text(pl.col("source__co_purchase"))),
        "visual": pl.format("looks like {}, bought {}", article_id_text(pl.col("sim_visual_source")),
                            when_text(pl.col("sim_visual_days"))),
        "content": pl.format("similar to {}, bought {}", article_id_text(pl.col("sim_content_source")),
                             when_text(pl.col("sim_content_days"))),
        "new": new_text(columns),
        "type": pl.format("often buys {}", name_of("product_type_name", "this type")),
        "department": pl.format("often buys from {}", name_of("department_name", "this department")),
        "colour": pl.format("often buys {}", name_of("colour_group_name", "this colour")),
        "age": pl.lit("popular at your age"),
        "trend": pl.format("trending: {} sold last week", pl.col("sales_1w").cast(pl.Int32)),
        "price": pl.lit("in your price range"),
    }


def family_sources(ranked: pl.DataFrame) -> dict[str, pl.Expr]:
    """The purchase each family's words name."""
    columns = {"colourway": "source__colourways", "co_purchase": "source__co_purchase",
               "visual": "sim_visual_source", "content": "sim_content_source"}
    out = {"bought": pl.col("article_id").cast(ARTICLE)}
    look_alike = [pl.col(c) for c in ("sim_visual_source", "sim_content_source") if c in ranked.columns]
    if look_alike:
        out["new"] = pl.coalesce(look_alike).cast(ARTICLE)
    out.update({family: pl.col(column).cast(ARTICLE) for family, column in columns.items() if column in ranked.columns})
    return out


def explain(ranked: pl.DataFrame, model: Model, articles: pl.DataFrame) -> pl.DataFrame:
    """reason = the words of the feature family that raised the item's score most; explanation = the top REASONS.

    Contributions are the model's path attribution summed per family (Model.path_contributions):
    LightGBM's exact pred_contrib costs about a millisecond a row, hours for 1.37M customers x 12 on
    2 cores; the two name the same top family for most rows (tests/test_ranker.py measures it).

    A family whose evidence is missing for the row (e.g. no co-purchase source) cannot be its reason.
    """
    families = [family_of(f) for f in model.features]
    names = sorted({f for f in families if f is not None})
    # customer-only features go to a last group that never explains an item
    groups = tuple(names.index(f) if f is not None else len(names) for f in families)
    by_family = model.path_contributions(ranked, groups)[:, :len(names)]
    texts = family_texts(articles, ranked.columns)
    available = {
        "bought": pl.col("times_bought") > 0,
        "colourway": pl.col("source__colourways").is_not_null() if "source__colourways" in ranked.columns else pl.lit(False),
        "co_purchase": pl.col("source__co_purchase").is_not_null() if "source__co_purchase" in ranked.columns else pl.lit(False),
        "visual": pl.col("sim_visual_source").is_not_null() if "sim_visual_source" in ranked.columns else pl.lit(False),
        "content": pl.col("sim_content_source").is_not_null() if "sim_content_source" in ranked.columns else pl.lit(False),
        "new": pl.col("days_since_first_sale").is_null(),
        "price": pl.col("price").is_not_null(),
    }
    mask = ranked.select([available.get(n, pl.lit(True)).fill_null(False).alias(n) for n in names]).to_numpy()
    by_family = np.where(mask, by_family, -np.inf)
    order = np.argsort(-by_family, axis=1)[:, :REASONS]
    top_values = np.take_along_axis(by_family, order, axis=1)
    sources = family_sources(ranked)

    def pick(choices: dict[str, pl.Expr], index: str, default: pl.Expr) -> pl.Expr:
        """The expression of the family whose position in `names` is in column `index`."""
        expr = None
        for position, name in enumerate(names):
            value = choices.get(name, default)
            expr = (pl.when(pl.col(index) == position) if expr is None
                    else expr.when(pl.col(index) == position)).then(value)
        return expr.otherwise(default) if expr is not None else default

    slots = {}
    for j in range(order.shape[1]):
        ok = np.isfinite(top_values[:, j]) & (top_values[:, j] > 0)
        slots[f"_family{j}"] = pl.Series(np.where(ok, order[:, j], -1).astype(np.int32))
        slots[f"_contribution{j}"] = pl.Series(np.where(ok, top_values[:, j], 0).astype(np.float32))
    names_series = pl.Series(names, dtype=pl.String)
    # nothing raised the score: a launch is still a new arrival, anything else is on the popular lists
    fallback = pl.when(pl.col("days_since_first_sale").is_null()).then(texts["new"]).otherwise(pl.lit("trending"))
    # a reason that names no purchase (trending, often buys a type, ...) has no source either
    fallback_source = pl.when(pl.col("days_since_first_sale").is_null()).then(
        sources.get("new", pl.lit(None, dtype=ARTICLE))).otherwise(pl.lit(None, dtype=ARTICLE))
    entries = [pl.when(pl.col(f"_family{j}") >= 0).then(pl.struct(
        feature=pl.col(f"_family{j}").replace_strict(list(range(len(names))), names_series, default=None),
        contribution=pl.col(f"_contribution{j}"),
        text=pick(texts, f"_family{j}", pl.lit(None, pl.String))))
        for j in range(order.shape[1])]
    return (ranked.with_columns(**slots)
            .with_columns(
                reason=pl.when(pl.col("_family0") >= 0).then(pick(texts, "_family0", fallback)).otherwise(fallback),
                source_article_id=pl.when(pl.col("_family0") >= 0)
                .then(pick(sources, "_family0", pl.lit(None, dtype=ARTICLE))).otherwise(fallback_source),
                explanation=pl.concat_list(entries).list.drop_nulls())
            .select("customer_id", "article_id", "score", "rank", "source_article_id", "reason", "explanation"))


# ---------------------------------------------------------------------------- training over past weeks

def load_vectors(artifacts: art.Artifacts, articles: pl.DataFrame) -> dict:
    """Reduced article vectors for the similarity features: content always, visual when image features exist."""
    from recommenders import ContentSimilarity

    vectors, ids = ContentSimilarity().article_vectors(articles)
    out = {"content": reduce_vectors(ids, vectors)}
    visual = load_visual_vectors(artifacts)
    if visual is not None:
        out["visual"] = reduce_vectors(*visual)
    return out


def week_frame(inputs: dict, transactions: pl.DataFrame, cutoff, scales: dict, vectors: dict,
               max_customers: int = MAX_WEEK_CUSTOMERS, seed: int = 0) -> tuple[pl.DataFrame, dict, dict]:
    """Features and labels of one week's buyers at a cut-off, with the truth counts the metric needs.

    Returns (frame sorted by customer, {"n_truth": per group, "customers": buyers scored, "truth": the
    week's truth frame}, pool recall).
    """
    truth = evaluation.sample_customers(candidates.week_truth(transactions, cutoff), max_customers, seed)
    populars, personal = candidates.make_sources(inputs["customers"], inputs.get("twins"),
                                                 inputs.get("visual_vectors"), scales)
    ranker = LearnedRanker(None, populars, personal, inputs["customers"], vectors)
    ranker.fit(transactions, inputs["articles"], cutoff)
    frame = candidates.labels(ranker.frame(truth.select("customer_id")), truth)
    frame = frame.with_columns(cutoff=pl.lit(cutoff)).sort("customer_id", "article_id")
    n_truth = (frame.select("customer_id").unique(maintain_order=True)
               .join(truth.select("customer_id", n=pl.col("article_ids").list.len()), on="customer_id", how="left"))
    return (frame, {"n_truth": n_truth["n"].to_numpy(), "customers": truth.height, "truth": truth},
            candidates.recall(frame, truth))


def fit_ranker(artifacts: art.Artifacts, inputs: dict, show_progress: bool = True) -> dict:
    """Choose scales, build the weekly frames, early-stop on validation, retrain up to the test week, save."""
    from tqdm.auto import tqdm

    clock = Stopwatch()
    check_writable(artifacts.ranker_dir)  # before minutes of work, not after
    history = pl.concat([inputs["train"], inputs["validation"]])  # never the test week
    val_start = inputs["validation"]["t_dat"].min()
    cutoffs = [val_start - timedelta(weeks=w) for w in range(TRAINING_WEEKS, 0, -1)]
    if inputs["train"]["t_dat"].min() > cutoffs[0] - timedelta(weeks=1):
        raise UserError(f"the ranker needs at least {TRAINING_WEEKS + 1} weeks of history before the validation week "
                        f"(training weeks from {cutoffs[0]}): give more data or use the hybrid (final.py)")
    progress = tqdm(total=evaluation.scale_steps() + len(cutoffs) + 1 + MAX_ROUNDS, desc="ranker", unit="step",
                    disable=not show_progress)
    timings = {}
    scales, scale_scores = evaluation.choose_scales(inputs["train"], inputs["articles"], inputs["validation_truth"],
                                                    val_start, progress)
    timings["choose_scales"] = clock.seconds
    vectors = load_vectors(artifacts, inputs["articles"])
    frames, recalls = [], {}
    for cutoff in [*cutoffs, val_start]:
        progress.set_postfix_str(f"features at {cutoff}")
        frame, truth, recall = week_frame(inputs, history, cutoff, scales, vectors)
        frames.append((frame, truth))
        recalls[str(cutoff)] = recall
        progress.update(1)
    timings["features"] = clock.seconds - sum(timings.values())
    valid, valid_truth = frames[-1]
    features, dropped = usable_features(pl.concat([f for f, _ in frames[:-1]], how="diagonal_relaxed"))
    if dropped:
        print(f"ranker: training without {', '.join(dropped)} (no information in this data: no images, "
              "colours or descriptions, or a constant value)", flush=True)
    progress.set_postfix_str("train, early stopping on validation")
    weeks = pl.concat([f.select(*features, "label", "cutoff", "customer_id") for f, _ in frames[:-1]])
    booster, rounds, curve = train(weeks, features, MAX_ROUNDS, valid.select(*features, "label", "cutoff", "customer_id"),
                                   valid_truth, progress)
    val_map = max(curve) if curve else 0.0
    scored = valid.with_columns(score=pl.Series(
        booster.predict(valid.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(), num_iteration=rounds),
        dtype=pl.Float32))
    slots, slot_scores = choose_launch_slots(scored, valid_truth["truth"], inputs["train"]["article_id"].unique())
    del scored
    progress.set_postfix_str(f"retrain {rounds} rounds up to the test week")
    weeks = pl.concat([f.select(*features, "label", "cutoff", "customer_id") for f, _ in frames[1:]])
    booster, _, _ = train(weeks, features, rounds)
    progress.total = progress.n
    progress.close()
    timings["training"] = clock.seconds - sum(timings.values())
    training_weeks = [[str(c), str(c + timedelta(days=6))] for c in [*cutoffs[1:], val_start]]
    model = Model(booster, features, {
        "training_weeks": training_weeks, "rounds": rounds, "params": PARAMS, "scales": scales,
        "scale_scores": scale_scores, "validation_map12": slot_scores[slots][0], "dropped_features": dropped,
        "validation_map12_without_launch_slots": val_map, "seconds": timings, "launch_slots": slots, "launch_slot_scores": slot_scores,
        "pool_recall": recalls[str(val_start)], "early_stopping_weeks": [[str(c), str(c + timedelta(days=6))]
                                                                         for c in cutoffs],
    })
    model.save(artifacts)
    top = ", ".join(f"{r['feature']}" for r in model.importance()[:5])
    summary("ranker", weeks=len(training_weeks), rows=weeks.height, features=len(features), rounds=rounds,
            validation_map12=f"{slot_scores[slots][0]:.4f}", launch_slots=slots, pool_recall=f"{recalls[str(val_start)].get('pool', 0):.3f}",
            top_features=top, seconds=clock.seconds, peak_rss_mb=peak_rss_mb(), output=str(artifacts.ranker_model))
    return model.meta | {"features": features, "feature_importance": model.importance()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    artifacts = art.from_args(args)
    fit_ranker(artifacts, evaluation.load_inputs(artifacts), show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)
