"""Every strategy, the tuned hybrid and the learned ranker: scored once on the test week, then a submission.

    python ranker.py --data-dir data   # trains the ranker (optional: without it, the hybrid alone)
    python final.py --data-dir data

1. Validation: every strategy is fitted on train (everything before the validation week); the
   repurchase time scales and the hybrid's blend weights are chosen on the validation week's MAP@12.
   When the ranker exists, ranker.py has done this step from the sources it fitted at that cut-off
   (ranker.json: scales, hybrid): they are read, not fitted again.
2. Test: every strategy is refitted on train + validation and scored once on the test week, with
   the hybrid's chosen weights and the saved ranker (trained on weeks before the test week). The
   table printed (and results/metrics.json) comes from this step only.
3. Submission: refitted on all transactions; the ranker's top 12 for every customer when it beat
   the hybrid on validation (else the hybrid's) go to results/recommendations.parquet (with a
   reason per item) and results/submission.csv.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from fde import artifacts as art
from fde import candidates, evaluation, factors, launch, scale_out
from fde import hybrid as blend
from fde.cli import Stopwatch, add_progress_flag, peak_rss_mb, run_main, summary
from fde.errors import UserError, check_writable
from fde.evaluation import BASELINE, Inputs, load_inputs
from fde.files import ParquetStream, atomic_outputs, atomic_path, write_json, write_parquet
from fde.ranking import LearnedRanker, Model
from fde.strategies import K, Recommender, as_customer_frame
from fde.submission import check_submission, prediction_lists, submission_frame
from fde.training import MAX_TRIM_COST, load_vectors
from fde.visual_index import VisualIndex

LAUNCH_AUDIENCE = 500     # customers scored by the ranker for each launch (the app shows the best of them)
CHUNK_CUSTOMERS = 100_000  # customers per batch when recommending for everyone (bounds memory)
RECOMMENDATION_SCHEMA = {"customer_id": pl.UInt64, "article_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32,
                         "reason": pl.String, "source_article_id": pl.Int32}


def fit_all(strategies: list[Recommender], transactions: pl.DataFrame, articles: pl.DataFrame, cutoff=None,
            progress=None, customers: pl.DataFrame | None = None):
    """Fit each strategy on the same history (everything before one cut-off), for these customers (all when None)."""
    for strategy in strategies:
        if progress is not None:
            progress.set_postfix_str(f"fit {strategy.name}")
        strategy.fit(transactions, articles, cutoff, customers)
        if progress is not None:
            progress.update(1)


def load_ranker(artifacts: art.Artifacts, quiet: bool = False) -> Model | None:
    """The saved ranker, or None (saying how to train it) when ranker.py has not run."""
    if not artifacts.ranker_model.exists():
        if not quiet:
            print(f"ranker: no model at {artifacts.ranker_model}; run `{artifacts.command('ranker.py')}` "
                  "to add the learned ranker. Scoring the hybrid alone.", flush=True)
        return None
    return Model.load(artifacts)


def scales_of(model: Model | None, inputs: Inputs, progress=None) -> dict:
    """The time scales the ranker chose on validation, or chosen here the same way without a ranker."""
    if model is not None and "scales" in model.meta:
        return model.meta["scales"]
    scales, _ = evaluation.choose_scales(inputs.train, inputs.articles, inputs.validation_truth,
                                         inputs.validation["t_dat"].min(), progress)
    return scales


def make_ranker(model: Model | None, populars, personal, inputs: Inputs, vectors,
                launch_slots: int | None = None) -> LearnedRanker | None:
    """The ranker over already made strategies (its features must match the model's), with the depths
    chosen on validation and its launch slots (or launch_slots, when forced)."""
    if model is None:
        return None
    return LearnedRanker(model, populars, personal, inputs.customers, vectors, launch_slots=launch_slots)


def ranker_chain(artifacts: art.Artifacts) -> factors.Chain:
    """The chain of ALS factors ranker.py's weeks were framed with, continued from its last (validation)
    factors; an empty chain (the next factors fitted from random ones) when ranker.py saved none."""
    path = artifacts.ranker_factors
    if not path.exists():
        return factors.Chain()
    return factors.Chain(art.load_damaged(path, artifacts.command("ranker.py"), factors.Factors.load))


def fitted_ranker(artifacts: art.Artifacts, inputs: Inputs, transactions: pl.DataFrame, scales: dict | None = None,
                  launch_slots: int | None = None, chain: factors.Chain | None = None) -> LearnedRanker:
    """The saved ranker over new sources at these time scales (default: those it chose), fitted on these
    transactions: the submission's, on every transaction (and the benchmarks' of its scoring). Its ALS
    factors continue chain (default: ranker.py's)."""
    model = Model.load(artifacts)
    scales = model.meta["scales"] if scales is None else scales
    populars, personal = candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors, scales)
    ranker = make_ranker(model, populars, personal, inputs, load_vectors(artifacts, inputs.articles), launch_slots)
    return ranker.fit(transactions, inputs.articles, chain=chain if chain is not None else ranker_chain(artifacts))


def submission_ranker(data_dir: str) -> tuple[art.Artifacts, Inputs, LearnedRanker]:
    """The data dir's artifacts, inputs and saved ranker fitted on every transaction, as the submission fits it
    (what the benchmarks of its scoring start from; its ALS factors continue ranker.py's directly, where the
    submission's continue the test week's)."""
    artifacts = art.Artifacts(Path(data_dir))
    inputs = load_inputs(artifacts, quiet=True)
    everything = pl.concat([inputs.train, inputs.validation, inputs.test])
    return artifacts, inputs, fitted_ranker(artifacts, inputs, everything)


def print_report(table: pl.DataFrame, meta: dict) -> None:
    """Print the evaluation table with what it measured."""
    print(f"\nTest week {meta['test_week'][0]}..{meta['test_week'][1]}: {meta['customers_evaluated']:,} customers "
          f"who bought something (ground truth = the unique articles each bought; customers without a "
          f"prediction score 0). Trained on everything before the test week; weights, time scales and the "
          f"ranker's rounds chosen on the validation week {meta['validation_week'][0]}..{meta['validation_week'][1]}.")
    print(f"val MAP@12 = the validation week, on which the hybrid's weights and the ranker's early stopping were "
          f"chosen (so those two are optimistic there); every other column is the test week. Lift = MAP@12 / "
          f"MAP@12 of {BASELINE}. Coverage = share of the {meta['catalogue']:,} catalogue articles shown to "
          f"someone. Cold start: {meta['cold_start_purchases']:,} test-week purchases of articles never sold "
          "before the test week; hits = how many each strategy put in that customer's top 12.")
    evaluation.print_table(table)
    weights = ", ".join(f"{k}={v:g}" for k, v in meta["weights"].items())
    print(f"hybrid weights (chosen on validation): {weights}")
    scales = "; ".join(f"{k}: " + ", ".join(f"{a}={v}" for a, v in s.items()) for k, s in meta["scales"].items())
    print(f"time scales (chosen on validation): {scales}")
    if meta.get("pool_recall"):
        recall = ", ".join(f"{k}={v:.3f}" for k, v in meta["pool_recall"].items())
        print(f"candidate pool recall on the test week (share of purchases proposed): {recall}")
    if meta.get("feature_importance"):
        top = ", ".join(f"{r['feature']} ({r['gain']:,.0f})" for r in meta["feature_importance"][:8])
        print(f"ranker's top features by gain: {top}")
    if meta.get("ranker_setup"):
        depths = ", ".join(f"{k}={v}" for k, v in meta["depths"].items()) if isinstance(meta["depths"], dict) \
            else meta["depths"]
        print(f"ranker: {meta['ranker_setup']} (chosen on validation); launch slots {meta['launch_slots']}; "
              f"candidates per source: {depths}")
        if meta.get("pool_depths"):
            scored = ", ".join(f"{k}={v}" for k, v in meta["pool_depths"].items())
            print(f"ranker: pool scored (chosen on validation: the first step of the depth path within "
                  f"{MAX_TRIM_COST:.0%} of the whole pool's MAP@12): {scored}")
    print(f"recommendations and submission come from: {meta['recommender_used']}")


def evaluate(artifacts: art.Artifacts, show_progress: bool = True, inputs: Inputs | None = None,
             use_ranker: bool = True, launch_slots: int | None = None, chain: factors.Chain | None = None) -> dict:
    """Tune on validation, score every strategy, the hybrid and the ranker once on the test week (its ALS
    factors continue chain, default ranker.py's)."""
    from tqdm.auto import tqdm

    clock = Stopwatch()
    inputs = inputs or load_inputs(artifacts)
    articles = inputs.articles
    model = load_ranker(artifacts) if use_ranker else None
    scales = scales_of(model, inputs)
    populars, personal = candidates.make_sources(inputs.customers, inputs.twins, inputs.visual_vectors, scales)
    strategies = [*populars, *personal]
    hybrid = blend.make(populars, personal)
    # ranker.py tuned the hybrid and scored every strategy on validation, from the sources it fitted at that
    # cut-off: the same choices as here, without fitting them again
    chosen = model.meta.get("hybrid") if model is not None else None
    steps = len(strategies) if chosen else 2 * len(strategies) + blend.tuning_steps(len(hybrid.components))
    progress = tqdm(total=steps, desc="evaluate", unit="step", disable=not show_progress)

    # 1. validation: fit before the validation week, choose the weights
    if chosen is None:
        fit_all(strategies, inputs.train, articles, inputs.validation["t_dat"].min(), progress,
                inputs.validation_truth.select("customer_id"))
        chosen = blend.validate(populars, personal, inputs, progress)
    weights, rank_weight = chosen["weights"], chosen["rank_weight"]
    hybrid.weights, hybrid.rank_weight = weights, rank_weight
    validation = {name: {"map12": score} for name, score in chosen["validation_map12"].items()}
    if model is not None:  # early-stopped on this week: optimistic, like the hybrid's tuned value
        validation["ranker"] = {"map12": model.meta["validation_map12"]}

    # 2. test: refit before the test week, score once with the chosen settings
    before_test = pl.concat([inputs.train, inputs.validation])
    test_start = inputs.test["t_dat"].min()
    test_truth = inputs.test_truth  # everyone scored at this cut-off is a test-week buyer
    fit_all(strategies, before_test, articles, test_start, progress, test_truth.select("customer_id"))
    vectors = load_vectors(artifacts, articles) if model is not None else None
    ranker = make_ranker(model, populars, personal, inputs, vectors, launch_slots)
    scored = [*strategies, hybrid]
    pool_recall = {}
    if ranker is not None:
        progress.set_postfix_str("ranker features")
        chain = chain if chain is not None else ranker_chain(artifacts)
        ranker.fit(before_test, articles, test_start, fit_sources=False, chain=chain)
        # the pool's keys and the sources' proposals: only the purchased rows are annotated, none gets features
        keys, proposed = ranker.pool_keys(test_truth.select("customer_id"))
        pool_recall = candidates.recall(keys, test_truth, proposed)
        del keys, proposed
        scored.append(ranker)
    results, cold = evaluation.score_week(scored, test_truth, before_test["article_id"].unique(), articles.height)
    progress.total = progress.n  # tuning may stop early
    progress.close()
    evaluation.add_lift(results)
    used = "ranker" if model is not None and validation["ranker"]["map12"] > validation["hybrid"]["map12"] else "hybrid"
    meta = {
        "test_week": evaluation.week_of(inputs.test),
        "validation_week": evaluation.week_of(inputs.validation),
        "customers_evaluated": test_truth.filter(pl.col("article_ids").list.len() > 0).height,
        "cold_start_purchases": int(cold),
        "weights": {**weights, "rank_weight": rank_weight},
        "scales": scales,
        "ground_truth": "unique articles bought per customer in the week",
        "validation_map12": {name: s["map12"] for name, s in validation.items()},
        "strategies": results,
        "catalogue": articles.height,
        "recommender_used": used,
        "pool_recall": pool_recall,
        "feature_importance": model.importance() if model is not None else [],
        "training_weeks": model.meta.get("training_weeks", []) if model is not None else [],
        "ranker_setup": model.meta.get("setup") if model is not None else None,
        "depths": ranker.n_candidates if ranker is not None else None,
        "pool_depths": ranker.pool_depths if ranker is not None else None,
        "launch_slots": ranker.launch_slots if ranker is not None else None,
        "seconds": clock.seconds,
    }
    print_report(evaluation.table_of(results, validation), meta)
    summary("final.evaluate", customers=meta["customers_evaluated"], hybrid_map12=f"{results['hybrid']['map12']:.4f}",
            ranker_map12=f"{results['ranker']['map12']:.4f}" if "ranker" in results else "-",
            seconds=clock.seconds, peak_rss_mb=peak_rss_mb())
    return meta


# ---------------------------------------------------------------------------- submission

def recommend_batch(recommender: Recommender, batch: pl.DataFrame) -> pl.DataFrame:
    """One batch of customers' top 12 with reasons, from the hybrid or the ranker."""
    if isinstance(recommender, LearnedRanker):
        ranked = recommender.recommend_explained(batch, K)
    else:
        ranked = recommender.explain(recommender.candidates(batch, K))
    columns = [pl.col(name).cast(dtype) for name, dtype in RECOMMENDATION_SCHEMA.items()]
    return ranked.select(*columns, *(["explanation"] if "explanation" in ranked.columns else []))


def batch_customers(recommender: Recommender, threads: int = scale_out.LOCAL_THREADS) -> int:
    """Customers per submission batch: the batches scored at once hold SCORE_ROWS pooled rows (with their
    features) for the ranker (at the rows per customer of the pool it scores), CHUNK_CUSTOMERS customers for
    the hybrid, together."""
    if isinstance(recommender, LearnedRanker):
        return recommender.customers_per_batch(threads)
    return max(1, CHUNK_CUSTOMERS // threads)


def recommend_everyone(recommender: Recommender, customers: pl.Series, show_progress: bool = True,
                       chunk: int = CHUNK_CUSTOMERS, engine: str = "local",
                       ray_address: str | None = None, sink=None,
                       threads: int = scale_out.LOCAL_THREADS) -> pl.DataFrame | None:
    """The top 12 with reasons for every customer, in batches of customers: here (`threads` batches at a
    time), or as Ray tasks (fde/scale_out.py).

    With `sink`, each batch's recommendations go to sink(frame) in the customers' order instead (None returned)."""
    frame = as_customer_frame(customers)
    if frame.height == 0:
        empty = pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
        return sink(empty) if sink else empty
    if isinstance(recommender, LearnedRanker) and engine == "local" and threads > 1 and frame.height > chunk:
        # the trees compiled before the threads start: every batch is scored by them, whichever comes first
        # (Model.predict switches from LightGBM's predict after COMPILE_ROWS rows scored in all)
        recommender.model.compiled()
    return scale_out.score_batches(recommender, frame["customer_id"], recommend_batch, engine=engine,
                                   batch_size=chunk, ray_address=ray_address, show_progress=show_progress,
                                   sink=sink, threads=threads)


def launch_pairs(scorer: launch.LaunchAudience, ids: list[int], show_progress: bool = True,
                 threads: int = scale_out.LOCAL_THREADS) -> pl.DataFrame:
    """customer_id, article_id: each launch's LAUNCH_AUDIENCE best customers by launch.py's evidence, in the
    launches' order, `threads` launches at a time (numpy and polars release the GIL for most of each; the
    pairs are the same: bench/bench_threads.py)."""
    from tqdm.auto import tqdm

    def proposed(aid: int) -> pl.DataFrame:
        return scorer.candidates(aid, LAUNCH_AUDIENCE).select("customer_id", article_id=pl.lit(aid, dtype=pl.Int32))

    with ThreadPoolExecutor(threads) as pool:
        pairs = list(tqdm(pool.map(proposed, ids), total=len(ids), desc="launch audiences", unit="launch",
                          disable=not show_progress))
    return pl.concat(pairs) if pairs else pl.DataFrame(schema={"customer_id": pl.UInt64, "article_id": pl.Int32})


def launch_audiences(ranker: LearnedRanker, artifacts: art.Artifacts, transactions: pl.DataFrame,
                     show_progress: bool = True) -> pl.DataFrame:
    """For every launch (no sales before the cut-off), its likeliest customers by the ranker, with reasons.

    launch.py proposes each launch's candidate customers (buyers of look-alikes, of its type in its
    colour); the ranker scores them with the same features as any pooled candidate.
    """
    articles = ranker.articles
    visual = VisualIndex.load(artifacts) if artifacts.visual_features.exists() else None
    scorer = launch.LaunchAudience(articles, transactions, ranker.cutoff, visual=visual)
    pairs = launch_pairs(scorer, launch.launches(articles, transactions, ranker.cutoff).to_list(), show_progress)
    if pairs.height == 0:
        return pl.DataFrame(schema=launch.AUDIENCE_SCHEMA)
    scored = ranker.score_pairs(pairs, unsold=True)
    return (scored.sort(["article_id", "score", "customer_id"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over("article_id"))
            .select([pl.col(name).cast(dtype) for name, dtype in launch.AUDIENCE_SCHEMA.items()]))


def submit(artifacts: art.Artifacts, meta: dict, show_progress: bool = True, inputs: Inputs | None = None,
           outputs=lambda path: path, engine: str = "local", ray_address: str | None = None,
           launch_slots: int | None = None, chain: factors.Chain | None = None) -> dict:
    """Fit on all transactions, write recommendations.parquet (with reasons) and submission.csv for every
    customer of customers.csv and every buyer (to `outputs(path)`: see files.atomic_outputs). The ranker's
    ALS factors continue chain (default: ranker.py's)."""
    clock = Stopwatch()
    inputs = inputs or load_inputs(artifacts, quiet=True)
    articles, customers = inputs.articles, inputs.customers
    transactions = pl.concat([getattr(inputs, p) for p in ("train", "validation", "test")])
    if meta["recommender_used"] == "ranker":
        recommender = fitted_ranker(artifacts, inputs, transactions, meta["scales"], launch_slots, chain)
    else:
        weights = dict(meta["weights"])
        rank_weight = float(weights.pop("rank_weight", blend.DEFAULT_RANK_WEIGHT))
        populars, personal = candidates.make_sources(customers, inputs.twins, inputs.visual_vectors, meta["scales"])
        recommender = blend.make(populars, personal, weights, rank_weight).fit(transactions, articles)
    clock.lap("fit")
    audiences = (launch_audiences(recommender, artifacts, transactions, show_progress)
                 if isinstance(recommender, LearnedRanker) else None)
    clock.lap("launch_audiences")
    del transactions
    # everyone: customers.csv's customers and every buyer (customer_ids.parquet maps both)
    customer_ids = art.read_parquet(artifacts.customer_ids, artifacts.command("data_optim.py"))
    threads = scale_out.LOCAL_THREADS if engine == "local" else 1
    chunk = batch_customers(recommender, threads)
    # each batch's recommendations go to disk as they come (1.37M customers' explanations take ~2.6 GB), and
    # the two files appear only once the whole submission is checked
    lists = []
    with atomic_path(outputs(artifacts.recommendations)) as recs_tmp:
        with ParquetStream(recs_tmp, pl.DataFrame(schema=RECOMMENDATION_SCHEMA)) as recs:
            def keep(batch: pl.DataFrame) -> None:
                recs.write(batch)
                lists.append(prediction_lists(batch))
            recommend_everyone(recommender, customer_ids["customer_id"], show_progress, chunk=chunk, engine=engine,
                               ray_address=ray_address, sink=keep, threads=threads)
        clock.lap("recommendations")
        submission = submission_frame(pl.concat(lists), customer_ids, customer_ids)
        check_submission(submission, customer_ids["customer_id_hex"], artifacts.command("final.py"))
        with atomic_path(outputs(artifacts.submission)) as tmp:
            submission.write_csv(tmp)
    # always written, empty without the ranker, so an older ranker's audiences never outlive these results
    write_parquet(audiences if audiences is not None else pl.DataFrame(schema=launch.AUDIENCE_SCHEMA),
                  outputs(artifacts.launch_audience))
    clock.lap("submission")
    summary("final.submit", recommender=meta["recommender_used"], customers=submission.height, rows=recs.rows,
            seconds=clock.seconds, **{f"{step}_s": round(s, 1) for step, s in clock.laps.items()},
            peak_rss_mb=peak_rss_mb(), output=str(artifacts.submission))
    return {"customers": submission.height, "recommendations": recs.rows, "seconds": clock.seconds,
            "steps": clock.laps,
            "submission": str(artifacts.submission), "recommendations_path": str(artifacts.recommendations)}


def run(artifacts: art.Artifacts, show_progress: bool = True, use_ranker: bool = True, engine: str = "local",
        ray_address: str | None = None, launch_slots: int | None = None) -> dict:
    """Evaluate (tune on validation, score the test week), then write the submission trained on all data;
    the results appear together or not at all."""
    check_writable(artifacts.results_dir)  # before minutes of work, not after
    if engine == "ray":  # an unreachable cluster fails in seconds, not after the evaluation
        scale_out.connect_ray(ray_address)
    inputs = load_inputs(artifacts)
    built_from = [artifacts.manifest("data_optim.py"), artifacts.manifest("split_data.py")]
    built_from += [p for p in (artifacts.visual_twins, artifacts.ranker_model) if p.exists()]
    with atomic_outputs(artifacts.manifest("final.py"), built_from, artifacts.command("final.py"),
                        artifacts.data_dir) as outputs:
        # one chain of ALS factors: ranker.py's weeks, then the test week, then the submission's
        chain = ranker_chain(artifacts) if use_ranker else None
        meta = evaluate(artifacts, show_progress, inputs, use_ranker, launch_slots, chain)
        meta["submission"] = submit(artifacts, meta, show_progress, inputs, outputs, engine, ray_address,
                                    launch_slots, chain)
        write_json(meta, outputs(artifacts.metrics))
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    add_progress_flag(parser)
    parser.add_argument("--no-ranker", action="store_true", help="ignore a trained ranker: the hybrid alone")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="score the submission's customer batches here or as Ray tasks (default: %(default)s)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (auto, or ray://HOST:10001); default: start Ray on this machine")
    parser.add_argument("--launch-slots", type=int, default=None, metavar="N",
                        help="keep the last N places of every ranker list for launches (default: the number "
                             "ranker.py chose on validation, 0 when slots cost more than 1%% of MAP@12)")
    args = parser.parse_args(argv)
    if args.ray_address and args.engine != "ray":
        raise UserError("--ray-address needs --engine ray")
    if args.launch_slots is not None and not 0 <= args.launch_slots <= K:
        raise UserError(f"--launch-slots {args.launch_slots}: give a number of places from 0 to {K}")
    run(art.from_args(args), show_progress=not args.no_progress, use_ranker=not args.no_ranker, engine=args.engine,
        ray_address=args.ray_address, launch_slots=args.launch_slots)


if __name__ == "__main__":
    run_main(main)
