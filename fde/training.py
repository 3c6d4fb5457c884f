"""Training the ranker over past weeks: one frame of features and labels per cut-off, LambdaRank with early
stopping on the validation week's MAP@12, and the launch slots chosen there.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from fde import artifacts as art
from fde import candidates, evaluation, factors, metrics
from fde.errors import UserError
from fde.evaluation import Inputs
from fde.features import feature_columns, reduce_vectors
from fde.ids import ARTICLE
from fde.ranking import LearnedRanker, top_with_launches
from fde.strategies import ContentSimilarity, K
from fde.visual_index import load_visual_vectors

WEEK_CHOICES = (3, 6)        # label weeks before the validation week the model may learn from (chosen there)
OBJECTIVES = ("lambdarank", "binary")  # the training objective, chosen on the validation week too
TRAINING_WEEKS = min(WEEK_CHOICES)     # the fewest weeks the ranker needs before the validation week
MAX_WEEK_CUSTOMERS = 40_000  # buyers per week in a training frame (a seeded sample above this bounds time)
# A cost, not a behaviour: the rows LightGBM learns from, all training weeks together. Above it the
# training weeks keep every purchased row and a seeded share of the others (negative sampling, before
# the features are computed); the validation week and every scored customer keep their whole pool.
# Fashion demo: validation MAP@12 0.0597 at 500k rows, 0.0595 at 2M; training 764 s against 1,200 s.
TRAINING_ROWS = 500_000
PARAMS = {
    "objective": "lambdarank", "metric": "None", "learning_rate": 0.05, "num_leaves": 31,
    "min_data_in_leaf": 40, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
    "lambdarank_truncation_level": 20, "verbose": -1, "seed": 0, "deterministic": True, "force_row_wise": True,
}
MAX_ROUNDS = 400
EARLY_STOPPING = 30
# Cold start is a product promise with a bounded price: the last places of a list may be kept for
# launches (never sold before the cut-off), but only where that costs at most MAX_SLOT_COST of the
# validation MAP@12. Otherwise launches compete on their score like any article.
# `final.py --launch-slots N` forces N for a merchandiser who wants the guarantee.
LAUNCH_SLOTS = (0, 1, 2, 3, 4)
MAX_SLOT_COST = 0.01
# A cost, not a behaviour: a submission that would score more pool rows than this (customers x rows per
# customer: 100M rows take about 10 minutes of features and scoring on 2 cores) scores a trimmed pool,
# the shallowest whose validation MAP@12 is within MAX_TRIM_COST of the whole pool's (choose_pool): the
# same price as launch slots may cost. Below it, the whole pool.
WHOLE_POOL_ROWS = 100_000_000
MAX_TRIM_COST = MAX_SLOT_COST


@dataclass
class WeekTruth:
    """What MAP@12 of one week's pool needs beside the pool: the week's truth and how many bought."""

    truth: pl.DataFrame    # customer_id, article_ids: the unique articles each buyer bought that week
    n_truth: np.ndarray    # per group of the pool (sorted by customer): that buyer's unique purchases
    customers: int         # buyers scored; those with nothing in the pool count 0


HAS_PURCHASE = pl.col("label").max().over("customer_id") > 0  # the row's customer bought something in the pool


def with_purchases(frame: pl.DataFrame, truth: WeekTruth) -> tuple[pl.DataFrame, WeekTruth]:
    """The groups of a week's pool (sorted by customer) that hold a purchase, and their truth counts.

    MAP@12, its cold-start hits and the pool's recall are the same on these rows as on the whole pool:
    a customer with no purchase in the pool scores 0 whatever the order (truth.customers still counts
    them). ranker.py early-stops and chooses on them, fewer rows wherever the pool misses most buyers.
    """
    has = frame.group_by("customer_id", maintain_order=True).agg(pl.col("label").max() > 0)["label"].to_numpy()
    return (frame.filter(HAS_PURCHASE),
            WeekTruth(truth.truth, truth.n_truth[has], truth.customers))


def choose_launch_slots(valid: pl.DataFrame, truth: pl.DataFrame, seen: pl.Series) -> tuple[int, dict]:
    """The launch slots with the most validation cold-start hits among those that cost at most MAX_SLOT_COST.

    valid: the validation pool with the model's score; seen: articles sold before the validation week.
    Ties keep the fewest slots; with no cold-start hit to gain, 0. Returns (slots, {slots: [MAP@12,
    cold-start hits], "new_arrivals_hits": what new_arrivals alone finds, "max_cost": MAX_SLOT_COST}).
    """
    cold = metrics.truth_pairs(truth).filter(~pl.col("article_id").is_in(seen.cast(ARTICLE).implode()))
    table: dict = {}
    if "rank__new_arrivals" in valid.columns:
        alone = valid.filter(pl.col("rank__new_arrivals") <= K).select("customer_id", "article_id",
                                                                       rank="rank__new_arrivals")
        table["new_arrivals_hits"] = metrics.hits_on(alone, cold, K)
    table["max_cost"] = MAX_SLOT_COST
    for slots in LAUNCH_SLOTS:
        recs = top_with_launches(valid, K, slots)
        table[slots] = [round(metrics.map_at_k(recs, truth, K), 5), metrics.hits_on(recs, cold, K)]
    affordable = [s for s in LAUNCH_SLOTS if table[s][0] >= (1 - MAX_SLOT_COST) * table[0][0]]
    chosen = max(affordable, key=lambda s: (table[s][1], -s))
    return chosen, table


def pool_steps(frame: pl.DataFrame, after: list[dict[str, int]], proposer: str | None) -> np.ndarray:
    """Each pooled row's first step of the depth path whose pool holds it; after: every source's depth after
    each step (candidates.path_depths)."""
    enter = np.full(frame.height, len(after), dtype=np.int64)
    never = np.iinfo(np.int64).max
    for name in after[0]:
        rank = candidates.source_rank(name, proposer, frame.columns)
        if rank is None:
            continue
        rank = frame.select(rank).to_series().cast(pl.Int64).fill_null(never).to_numpy()
        enter = np.minimum(enter, np.searchsorted([depths[name] for depths in after], rank, side="left"))
    return enter


def choose_pool(scored: pl.DataFrame, scores: np.ndarray, truth: WeekTruth, path: list[dict], names: list[str],
                proposer: str | None, trim: bool = True) -> tuple[dict[str, int], np.ndarray, list[dict]]:
    """The depths a scored pool keeps: with trim, the first step of the depth path whose validation MAP@12 is
    at least (1 - MAX_TRIM_COST) x the whole pool's (the ranker learns from the whole pool; a submission pays
    for every scored row); without, the last (the whole pool). Each step's MAP@12 is measured either way.

    scored: the validation pool (sorted by customer) and scores its model's. Removing rows changes no
    other row's features (a row keeps every source's evidence), so each step's MAP@12 is exactly what
    scoring a pool of its depths gives. Returns ({source: depth}, the kept rows' mask, one row per step:
    the path's source, depth, rows per customer and pool recall, and the validation MAP@12).
    """
    after = candidates.path_depths(path, names)
    enter = pool_steps(scored, after, proposer)
    sizes = group_sizes(scored)
    group = np.repeat(np.arange(len(sizes)), sizes)
    labels = scored["label"].to_numpy()
    maps = []
    for step in range(len(path)):
        keep = enter <= step
        maps.append(metrics.group_map(scores[keep], labels[keep], np.bincount(group[keep], minlength=len(sizes)),
                                      truth.n_truth, truth.customers))
    chosen = (next(step for step, value in enumerate(maps) if value >= (1 - MAX_TRIM_COST) * maps[-1]) if trim
              else len(path) - 1)
    table = [{**row, "validation_map12": round(value, 5), "chosen": step == chosen}
             for step, (row, value) in enumerate(zip(path, maps))]
    kept = enter <= chosen if trim else np.ones(scored.height, dtype=bool)
    return after[chosen], kept, table


def choose_depths(inputs: Inputs, scales: dict, progress=None) -> tuple[dict[str, int], dict, tuple[list, list]]:
    """Each candidate source's depth, chosen on the validation week from the recall curves (candidates.py).

    Every source is fitted on train (everything before the validation week); the proposing ones are
    measured on (a sample of) the validation week's buyers. Returns (depths, {"curves": one row per
    source, "choice": ...}, the fitted (populars, personal): the validation week's frame reuses them).
    """
    populars, personal = candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors, scales)
    val_start = inputs.validation["t_dat"].min()
    buyers = inputs.validation_truth.select("customer_id")  # everyone measured at this cut-off is a buyer
    for source in [*populars, *personal]:
        if progress is not None:
            progress.set_postfix_str(f"fit {source.name} before the validation week")
        source.fit(inputs.train, inputs.articles, val_start, buyers)
    truth = evaluation.sample_customers(inputs.validation_truth, candidates.DEPTH_CUSTOMERS)
    unscored = LearnedRanker(None, populars, personal, inputs.customers)  # its sources, and which prior proposes
    table, curves = candidates.recall_curves(unscored.sources(), truth)
    depths, choice = candidates.choose_depths(curves)
    return depths, {"curves": table.to_dicts(), "choice": choice, "customers": truth.height,
                    "proposer": unscored.proposer}, (populars, personal)


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
          valid_truth: WeekTruth | None = None, progress=None,
          objective: str = "lambdarank", reuse: dict | None = None) -> tuple[object, int, list[float]]:
    """LambdaRank (or binary) on the weeks' groups that have a positive; early stopping on valid's MAP@12.

    reuse: a dict the caller keeps for trainings on the same weeks and validation rows (ranker.py's two
    objectives): the first fills it with its LightGBM datasets, the others train on them (the same bins,
    so the same models as datasets of their own, without building them again).
    Returns (booster, best number of rounds, validation MAP@12 after each round).
    """
    import lightgbm as lgb

    built = reuse if reuse else datasets(weeks, features, valid, valid_truth)
    if reuse is not None:
        reuse.update(built)
    curve: list[float] = []
    callbacks = []
    valid_sets, feval = [], None
    if valid is not None:
        group_map = built["group_map"]
        valid_sets = [built["valid"]]

        def feval(preds, _data):
            value = group_map(preds)
            curve.append(value)
            return "map12", value, True

        callbacks.append(lgb.early_stopping(EARLY_STOPPING, first_metric_only=True, verbose=False))
    if progress is not None:
        callbacks.append(lambda env: progress.update(1))
    params = PARAMS if objective == "lambdarank" else {
        **{k: v for k, v in PARAMS.items() if not k.startswith("lambdarank")}, "objective": objective}
    booster = lgb.train(params, built["train"], num_boost_round=rounds, valid_sets=valid_sets, feval=feval,
                        callbacks=callbacks)
    best = booster.best_iteration if valid is not None and booster.best_iteration > 0 else rounds
    return booster, best, curve


def datasets(weeks: pl.DataFrame, features: list[str], valid: pl.DataFrame | None = None,
             valid_truth: WeekTruth | None = None) -> dict:
    """train's LightGBM datasets: the weeks' groups with a positive ("train") and, with valid, the validation
    rows ("valid", binned as the training rows are) with the MAP@12 early stopping measures ("group_map")."""
    import lightgbm as lgb

    positive = weeks.filter(pl.col("label").max().over("cutoff", "customer_id") > 0)
    if positive.height == 0:
        raise UserError("no training week has a purchase the candidate pool proposed: the ranker cannot learn; "
                        "check the split (split_data.py) or use more weeks of data")
    train_set = lgb.Dataset(positive.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(),
                            label=positive["label"].to_numpy(), group=group_sizes(positive),
                            feature_name=features, free_raw_data=True)
    if valid is None:
        return {"train": train_set}
    sizes = group_sizes(valid)
    labels = valid["label"].to_numpy()
    return {"train": train_set,
            "valid": lgb.Dataset(valid.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(),
                                 label=labels, group=sizes, feature_name=features, reference=train_set),
            "group_map": metrics.GroupMap(labels, sizes, valid_truth.n_truth, valid_truth.customers)}


def load_vectors(artifacts: art.Artifacts, articles: pl.DataFrame) -> dict:
    """Reduced article vectors for the similarity features: content always, visual when image features exist."""
    vectors, ids = ContentSimilarity().article_vectors(articles)
    out = {"content": reduce_vectors(ids, vectors)}
    visual = load_visual_vectors(artifacts)
    if visual is not None:
        out["visual"] = reduce_vectors(*visual)
    return out


def thin(pool: pl.DataFrame, max_rows: int, seed: int = 0) -> pl.DataFrame:
    """A training week's labelled pool for learning: only groups with a purchase (the others teach a ranker
    nothing), then, above max_rows, every purchased row and a seeded share of the others."""
    pool = pool.filter(HAS_PURCHASE)
    positives = int(pool["label"].sum())
    if pool.height <= max_rows:
        return pool
    share = max(max_rows - positives, 0) / max(pool.height - positives, 1)
    keep = np.random.default_rng(seed).random(pool.height) < share
    return pool.filter(pl.Series(keep) | (pl.col("label") > 0))


def week_frame(inputs: Inputs, transactions: pl.DataFrame, cutoff, scales: dict, vectors: dict,
               depths: dict[str, int] | None = None, max_customers: int = MAX_WEEK_CUSTOMERS,
               seed: int = 0, max_rows: int | None = None,
               fitted: tuple[list, list] | None = None,
               purchased_only: bool = False,
               chain: factors.Chain | None = None) -> tuple[pl.DataFrame, WeekTruth, dict]:
    """Features and labels of one week's buyers at a cut-off, with the truth counts the metric needs.

    max_rows: a training week's share of TRAINING_ROWS (thin); None keeps the whole pool (the
    validation week, on which MAP@12 is measured). purchased_only: only the groups with a purchase in
    the pool (what with_purchases keeps), ranker.py's validation week. fitted: (populars, personal)
    already fitted at this cut-off (choose_depths'), not fitted again. chain: the ALS factors are its next
    (the weeks are framed in time order). Returns (frame sorted by
    customer, the week's truth, pool recall per source, measured before any thinning).

    The pool's evidence and features are computed for the rows kept only: each row's are its own
    (and its customer's), so they are those rows of the whole pool's frame, at a fraction of the cost
    (a full-scale training week keeps 83,000 of 10M pooled rows).
    """
    truth = evaluation.sample_customers(candidates.week_truth(transactions, cutoff), max_customers, seed)
    populars, personal = fitted or candidates.make_sources(inputs.customers, inputs.twins,
                                                           inputs.visual_vectors, scales)
    ranker = LearnedRanker(None, populars, personal, inputs.customers, vectors, depths=depths)
    # the sources' tables of each customer's own purchases: the week's sampled buyers only
    ranker.fit(transactions, inputs.articles, cutoff, truth.select("customer_id"), fit_sources=fitted is None,
               chain=chain)
    keys, proposed = ranker.pool_keys(truth.select("customer_id"))
    keys = candidates.labels(keys.sort("customer_id", "article_id"), truth)
    recall = candidates.recall(keys, truth, proposed)
    if max_rows is not None:
        keys = thin(keys, max_rows, seed)
    elif purchased_only:
        keys = keys.filter(HAS_PURCHASE)
    pool = candidates.labels(candidates.annotate(keys, proposed, ranker.popular), truth)
    frame = ranker.context.features(pool).with_columns(cutoff=pl.lit(cutoff)).sort("customer_id", "article_id")
    n_truth = (frame.select("customer_id").unique(maintain_order=True)
               .join(truth.select("customer_id", n=pl.col("article_ids").list.len()), on="customer_id", how="left"))
    return frame, WeekTruth(truth, n_truth["n"].to_numpy(), truth.height), recall


def training_cutoffs(inputs: Inputs) -> tuple[list[int], list]:
    """The numbers of training weeks the history allows (of WEEK_CHOICES) and the cut-offs of the most,
    oldest first; a one-line error when it allows none."""
    val_start = inputs.validation["t_dat"].min()
    first_day = inputs.train["t_dat"].min()
    choices = [w for w in WEEK_CHOICES if first_day <= val_start - timedelta(weeks=w + 1)]
    if not choices:
        raise UserError(f"the ranker needs at least {TRAINING_WEEKS + 1} weeks of history before the validation week "
                        f"(training weeks from {val_start - timedelta(weeks=TRAINING_WEEKS)}): give more data or "
                        "use the hybrid (final.py)")
    return choices, [val_start - timedelta(weeks=w) for w in range(max(choices), 0, -1)]


@dataclass
class WeeklyFrames:
    """What the ranker learns and early-stops from (weekly_frames)."""

    training: list[pl.DataFrame]  # one thinned frame per training cut-off, oldest first
    valid: pl.DataFrame           # the validation week's groups with a purchase in the pool, whole
    valid_truth: WeekTruth
    valid_recall: dict            # the validation pool's recall per source, before any filtering
    week_rows: int                # each training week's share of TRAINING_ROWS
    chain: factors.Chain          # the ALS factors' chain, its last the validation week's


def weekly_frames(inputs: Inputs, cutoffs: list, scales: dict, vectors: dict, depths: dict[str, int],
                  fitted: tuple[list, list], progress=None) -> WeeklyFrames:
    """The training weeks' frames (each thinned to its share of TRAINING_ROWS), then the validation week's from
    the sources choose_depths fitted at its cut-off (fitted), its groups with a purchase only (with_purchases:
    every validation score is the same on them); the weeks in time order, each cut-off's ALS factors starting
    from the week before's (factors.Chain). ranker.py's frames, and the ablation bench's."""
    history = pl.concat([inputs.train, inputs.validation])  # never the test week
    val_start = inputs.validation["t_dat"].min()
    week_rows = TRAINING_ROWS // len(cutoffs)
    chain = factors.Chain()
    training = []
    for cutoff in cutoffs:
        if progress is not None:
            progress.set_postfix_str(f"features at {cutoff}")
        training.append(week_frame(inputs, history, cutoff, scales, vectors, depths, max_rows=week_rows,
                                   chain=chain)[0])
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.set_postfix_str(f"features at {val_start}")
    valid, valid_truth, valid_recall = week_frame(inputs, history, val_start, scales, vectors, depths,
                                                  fitted=fitted, purchased_only=True, chain=chain)
    if progress is not None:
        progress.update(1)
    return WeeklyFrames(training, valid, valid_truth, valid_recall, week_rows, chain)
