"""Benchmark a submission batch's pool and features, and the hybrid's tuning, against what they replaced.

    python ranker.py --data-dir D                      # a trained ranker and its choices
    python bench/bench_batch.py --data-dir D [--customers 40000] [--repeats 3]

Fits the saved ranker on every transaction (as final.py's submission does), then measures alternately,
--repeats times, each with its previous formulation, on the same --customers customers:
  - the submission's batches: the top 12 with reasons of the customers in batches of the submission's size, one
    after the other (before: SCORE_ROWS // POOL_ROWS customers between the threads, as if every customer had the
    whole pool's 250 rows; now sized by the rows per customer of the pool the ranker scores, ranker.json's:
    final.batch_customers);
  - the pool's evidence (candidates.annotate: before, a left join per source on (customer_id, article_id); now
    a binary search of packed pair codes) of one batch of those customers;
  - the postal-code shares of that batch's pool (features.with_local_shares: before, a left join per share table
    on (group code, article_id); now on one UInt64 key packing both);
  - a similarity feature's columns put beside that batch's pool (features.Context.features: before, a left join on
    (customer_id, article_id); now side by side, the rows being in the pool's order);
  - that batch's top 12 by the model's score, its launch slots kept (ranking.top_with_launches: before, the wide
    frame of every feature sorted; now the order found on (row, customer, article, score, launch) alone and the
    kept rows gathered);
  - one blend's MAP@12 in the hybrid's tuning (hybrid.map_of_blends: before, map_at_k of the blend's top 12,
    sorting the pool; now metrics.GroupMap of the blended scores), on a sample of the validation week's buyers
    with the submission's sources (for the speed alone).
Prints median seconds, the ratio and whether the results are equal.
"""
from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fit import compare, submission_setup  # noqa: E402

import final  # noqa: E402
from fde import candidates, features, metrics, ranking, scale_out  # noqa: E402
from fde import hybrid as blend  # noqa: E402
from fde.strategies import as_customer_frame, top_k  # noqa: E402

KEYS = candidates.KEYS


def annotate_before(pairs: pl.DataFrame, proposed: dict, popular: list) -> pl.DataFrame:
    """candidates.annotate as it was: a left join on KEYS per source."""
    pool = pairs.select(KEYS).with_columns(pl.col("article_id").cast(pl.Int32)).unique().sort(KEYS)
    for name, frame in proposed.items():
        pool = pool.join(frame.select(
            *KEYS,
            pl.col("score").cast(pl.Float32).alias(candidates.score_column(name)),
            candidates.place_in_list().cast(pl.UInt16).alias(candidates.rank_column(name)),
            pl.col("source_article_id").cast(pl.Int32).alias(candidates.source_column(name)),
        ), on=KEYS, how="left", maintain_order="left")
    for prior in popular:
        pool = prior.score_pairs(pool).rename({"score": candidates.score_column(prior.name)})
    return pool.with_columns(pl.col(c).fill_null(0.0).cast(pl.Float32) for c in pool.columns if c.startswith("score__"))


def shares_before(frame: pl.DataFrame, local_tables: tuple) -> pl.DataFrame:
    """features.with_local_shares as it was: a left join per share table on (group, article_id)."""
    groups, tables = local_tables
    out = frame.join(groups, on="customer_id", how="left", maintain_order="left")
    for name, (code, table) in tables.items():
        pair = table.select((pl.col("group_key") // (1 << 32)).cast(pl.UInt32).alias(code),
                            ((pl.col("group_key") % (1 << 32)).cast(pl.Int64) - (1 << 31)).cast(pl.Int32)
                            .alias("article_id"), name)
        out = (out.join(pair, on=[code, "article_id"], how="left", maintain_order="left")
               .with_columns(pl.when(pl.col(code).is_not_null()).then(pl.col(name).fill_null(0.0)).alias(name)))
    return out.drop(*{code for code, _ in tables.values()})


def top_before(frame: pl.DataFrame, k: int, slots: int) -> pl.DataFrame:
    """ranking.top_with_launches as it was: the whole wide frame sorted."""
    return top_k(frame, k) if not slots else ranking.launch_places(frame, k, slots)


def batches(ranker, customers: pl.DataFrame, size: int) -> pl.DataFrame:
    return pl.concat([final.recommend_batch(ranker, customers.slice(start, size))
                      for start in range(0, customers.height, size)])


def main() -> None:
    args, inputs, ranker, ids = submission_setup(__doc__)
    context, model = ranker.context, ranker.model
    model.compiled()
    final.recommend_batch(ranker, ids)  # look-alikes looked up, the leaf model compiled, before anything is timed
    model.leaf_model()
    # the sizes of the submission's batches, which scale_out.LOCAL_THREADS threads score at once (timed here one after
    # the other, in this thread)
    old_size = ranking.SCORE_ROWS // candidates.POOL_ROWS // scale_out.LOCAL_THREADS
    new_size = final.batch_customers(ranker)
    batch = ids.head(new_size)
    keys, proposed = ranker.pool_keys(batch)
    pool = candidates.annotate(keys, proposed, ranker.popular)
    hybrid = blend.make(ranker.popular, ranker.personal)
    truth = inputs.validation_truth.sample(min(20_000, inputs.validation_truth.height), seed=0)
    hybrid_pool = hybrid.pool(as_customer_frame(truth["customer_id"]))
    weights = {s.name: 1.0 for s in hybrid.components}
    blend_map = blend.map_of_blends(hybrid, hybrid_pool, truth)
    pairs = {
        f"top 12 with reasons of {ids.height:,} customers, batches of {old_size:,} / {new_size:,} customers": (
            lambda: batches(ranker, ids, old_size), lambda: batches(ranker, ids, new_size),
            lambda a, b: a.sort("customer_id", "rank").equals(b.sort("customer_id", "rank"))),  # each batch sorted
        f"evidence of a {batch.height:,}-customer batch's {keys.height:,} pool rows": (
            lambda: annotate_before(keys, proposed, ranker.popular),
            lambda: candidates.annotate(keys, proposed, ranker.popular), lambda a, b: a.equals(b)),
        "one blend's MAP@12 in the hybrid's tuning": (
            lambda: metrics.map_at_k(hybrid.blend(hybrid_pool, 12, weights, 0.25, explain=False), truth),
            lambda: blend_map(weights, 0.25), lambda a, b: abs(a - b) < 1e-12),
    }
    scored = context.features(pool)
    scored = scored.with_columns(score=pl.Series(model.predict(scored), dtype=pl.Float32))
    pairs[f"the top 12 of that batch's pool with its {scored.width} columns, {ranker.launch_slots} launch slots"] = (
        lambda: top_before(scored, 12, ranker.launch_slots),
        lambda: ranking.top_with_launches(scored, 12, ranker.launch_slots), lambda a, b: a.equals(b))
    if context.vectors:
        kind = next(iter(context.vectors))
        similar = context.similarity(pool, kind, context.customer_tables(pool["customer_id"]).recent)
        pairs[f"the batch pool's sim_{kind} columns"] = (
            lambda: pool.join(similar, on=KEYS, how="left", maintain_order="left"),
            lambda: pool.hstack(similar.drop(KEYS)), lambda a, b: a.equals(b))
    if context.local_tables is not None:
        pairs["the batch pool's postal-code shares"] = (
            lambda: shares_before(pool.select(KEYS), context.local_tables),
            lambda: features.with_local_shares(pool.select(KEYS), context.local_tables), lambda a, b: a.equals(b))
    print(f"{context.history.height:,} transactions before {context.cutoff}; {ids.height:,} customers; the scored "
          f"pool's {ranker.rows_per_customer:.1f} rows per customer (validation)")
    compare(pairs, args.repeats)

if __name__ == "__main__":
    main()
