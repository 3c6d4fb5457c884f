"""The learned ranker: LightGBM LambdaRank over the candidate pool's features, trained on past weeks.

    python ranker.py --data-dir data

1. Chosen on the validation week (sources fitted on train): the repurchase and co-purchase time
   scales, then each candidate source's depth from its recall curve (candidates.choose_depths); from
   the same fitted sources, the hybrid's blend weights and every strategy's validation MAP@12
   (hybrid.validate), saved for final.py, which then fits nothing at this cut-off.
2. For each of max(WEEK_CHOICES) cut-offs before the validation week and the validation week itself,
   every source is fitted on the history before that cut-off; the pool of that week's buyers gets
   its features (features.py) and label = bought in the 7 days after the cut-off. One group per
   (week, customer); groups without a positive in the pool are dropped from training.
3. Set-ups train on the weeks before the validation week, each with early stopping on the
   validation week's MAP@12 (every buyer counts, as the metric does): LambdaRank and a binary
   objective on 3 weeks, then 6 weeks with the objective that won; the best is kept. Where scoring
   every customer's whole pool would pass training.WHOLE_POOL_ROWS, the scored pool stops at the
   first step of the depth path within 1% of the whole pool's validation MAP@12 (training.choose_pool). The
   launch slots are chosen on the scored pool's validation scores (at most 1% of MAP@12 for them).
   Then it is retrained with its number of rounds on the weeks up to the test week (the validation
   week included) and saved to results/ranker/ (model.txt, ranker.json). final.py scores it on the
   test week once.
"""
from __future__ import annotations

import argparse
from datetime import timedelta

import polars as pl
import polars.selectors as cs

from fde import artifacts as art
from fde import candidates, evaluation
from fde import hybrid as blend
from fde.cli import Stopwatch, add_progress_flag, peak_rss_mb, run_main, summary
from fde.errors import check_writable
from fde.evaluation import Inputs
from fde.ranking import Model
from fde.training import (
    MAX_ROUNDS,
    MAX_TRIM_COST,
    OBJECTIVES,
    PARAMS,
    WHOLE_POOL_ROWS,
    choose_depths,
    choose_launch_slots,
    choose_pool,
    load_vectors,
    thin,
    train,
    training_cutoffs,
    usable_features,
    weekly_frames,
)


def variant_name(weeks: int, objective: str) -> str:
    return f"{weeks} weeks, {objective}"


def fit_ranker(artifacts: art.Artifacts, inputs: Inputs, show_progress: bool = True) -> dict:
    """Choose scales and depths, build the weekly frames, choose the training set-up on validation
    (early stopping), retrain up to the test week, save."""
    from tqdm.auto import tqdm

    clock = Stopwatch()
    check_writable(artifacts.ranker_dir)  # before minutes of work, not after
    val_start = inputs.validation["t_dat"].min()
    choices, cutoffs = training_cutoffs(inputs)
    # scales, depths, the hybrid, frames, set-ups, retrain
    steps = 3 + len(cutoffs) + 1 + len(OBJECTIVES) + len(choices) - 1 + 1
    progress = tqdm(total=steps, desc="ranker", unit="step",
                    disable=not show_progress)
    progress.set_postfix_str("choose time scales")
    scales, scale_scores = evaluation.choose_scales(inputs.train, inputs.articles, inputs.validation_truth,
                                                    val_start)
    progress.update(1)
    clock.lap("choose_scales")
    depths, depth_info, validation_sources = choose_depths(inputs, scales, progress)
    progress.update(1)
    clock.lap("choose_depths")
    print_depths(depths, depth_info)
    # the hybrid's weights and every strategy's validation MAP@12 from the same fitted sources, for final.py
    progress.set_postfix_str("tune the hybrid on validation")
    hybrid_choice = blend.validate(*validation_sources, inputs)
    progress.update(1)
    clock.lap("hybrid")
    print("ranker: the hybrid tuned on validation (for final.py): MAP@12 "
          f"{hybrid_choice['validation_map12']['hybrid']:.4f}", flush=True)
    frames = weekly_frames(inputs, cutoffs, scales, load_vectors(artifacts, inputs.articles), depths,
                           validation_sources, progress)
    del validation_sources  # released once the validation week's frame is built
    training_frames, valid, valid_truth = frames.training, frames.valid, frames.valid_truth
    valid_recall, week_rows, chain = frames.valid_recall, frames.week_rows, frames.chain
    clock.lap("features")
    features, dropped = usable_features(pl.concat(training_frames, how="diagonal_relaxed"))
    if dropped:
        print(f"ranker: training without {', '.join(dropped)} (no information in this data: no images, "
              "colours or descriptions, or a constant value)", flush=True)

    def weeks_of(weeks: list[pl.DataFrame]) -> pl.DataFrame:
        return pl.concat([f.select(*features, "label", "cutoff", "customer_id") for f in weeks])

    # the set-up (training weeks, objective) with the best validation MAP@12, each early-stopped there
    valid_rows = valid.select(*features, "label", "cutoff", "customer_id")
    variants, boosters = {}, {}
    built: dict[int, dict] = {}  # LightGBM's datasets of each number of weeks, built once for both objectives

    def try_setup(n_weeks: int, objective: str) -> None:
        name = variant_name(n_weeks, objective)
        progress.set_postfix_str(f"train {name}, early stopping on validation")
        weeks = weeks_of(training_frames[len(cutoffs) - n_weeks:])
        booster, rounds, curve = train(weeks, features, MAX_ROUNDS, valid_rows, valid_truth, objective=objective,
                                       reuse=built.setdefault(n_weeks, {}))
        variants[name] = {"map12": round(max(curve) if curve else 0.0, 5), "rounds": rounds, "weeks": n_weeks,
                          "objective": objective}
        boosters[name] = booster
        progress.update(1)

    # the objective on the fewest weeks, then the other week counts with the objective that won there
    for objective in OBJECTIVES:
        try_setup(choices[0], objective)
    best_objective = max(OBJECTIVES, key=lambda o: variants[variant_name(choices[0], o)]["map12"])
    for n_weeks in choices[1:]:
        try_setup(n_weeks, best_objective)
    # ties keep the fewer weeks and LambdaRank: the cheaper and the first tried
    chosen = max(variants, key=lambda v: (variants[v]["map12"], -variants[v]["weeks"],
                                          variants[v]["objective"] == OBJECTIVES[0]))
    setup = variants[chosen]
    booster = boosters[chosen]
    predictions = booster.predict(valid.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(),
                                  num_iteration=setup["rounds"])
    # how deep the pools final.py scores go (a cost), then the launch slots on that pool
    whole_rows = depth_info["choice"]["rows_per_customer"] * inputs.customers.height
    trim = whole_rows > WHOLE_POOL_ROWS
    pool_depths, kept, pool_table = choose_pool(valid, predictions, valid_truth, depth_info["choice"]["path"],
                                                list(depths), depth_info["proposer"], trim)
    print_pool(pool_table, whole_rows)
    pool_depths = pool_depths if trim else None  # None: the whole pool
    pool_step = next(row for row in pool_table if row["chosen"])
    val_map = pool_step["validation_map12"]
    scored = (valid.select("customer_id", "article_id", cs.starts_with("rank__"),
                           cs.by_name("days_since_first_sale", require_all=False))
              .with_columns(score=pl.Series(predictions, dtype=pl.Float32)).filter(kept))
    scored_recall = candidates.recall(scored, valid_truth.truth)
    slots, slot_scores = choose_launch_slots(scored, valid_truth.truth, inputs.train["article_id"].unique())
    del scored, predictions
    boosters.clear()
    built.clear()
    progress.set_postfix_str(f"retrain {chosen}, {setup['rounds']} rounds, up to the test week")
    n_weeks = setup["weeks"]
    # the validation week joins the training weeks, thinned as they are
    weeks = weeks_of([*training_frames[len(cutoffs) - n_weeks + 1:], thin(valid, week_rows)])
    booster, _, _ = train(weeks, features, setup["rounds"], objective=setup["objective"])
    progress.update(1)
    progress.close()
    clock.lap("training")
    training_weeks = [[str(c), str(c + timedelta(days=6))] for c in [*cutoffs, val_start][-n_weeks:]]
    model = Model(booster, features, {
        "training_weeks": training_weeks, "rounds": setup["rounds"], "objective": setup["objective"],
        "setups": variants, "setup": chosen, "params": PARAMS, "scales": scales,
        "scale_scores": scale_scores, "depths": depths, "recall_curves": depth_info,
        "validation_map12": slot_scores[slots][0], "dropped_features": dropped, "hybrid": hybrid_choice,
        "validation_map12_without_launch_slots": val_map, "seconds": clock.laps, "launch_slots": slots,
        "launch_slot_scores": slot_scores,
        "pool_depths": pool_depths, "pool_steps": pool_table,
        "pool_recall": scored_recall, "pool_recall_whole": valid_recall,
        "early_stopping_weeks": [[str(c), str(c + timedelta(days=6))] for c in cutoffs[len(cutoffs) - n_weeks:]],
    })
    model.save(artifacts, trained_on(artifacts), chain.last)  # final.py's test week continues the chain
    top = ", ".join(f"{r['feature']}" for r in model.importance()[:5])
    summary("ranker", setup=chosen.replace(" ", "_").replace(",", ""), rows=weeks.height, features=len(features),
            rounds=setup["rounds"], validation_map12=f"{slot_scores[slots][0]:.4f}", launch_slots=slots,
            pool_recall=f"{scored_recall.get('pool', 0):.3f}",
            pool_rows=pool_step["rows_per_customer"],
            top_features=top, seconds=clock.seconds,
            peak_rss_mb=peak_rss_mb(), output=str(artifacts.ranker_model))
    return model.meta | {"features": features, "feature_importance": model.importance()}


def trained_on(artifacts: art.Artifacts) -> list:
    """The files the ranker was trained from: results/ranker/manifest.json records them, every reader checks it."""
    files = [artifacts.articles, artifacts.customers, *(artifacts.split(p) for p in ("train", "validation", "test"))]
    return files + [p for p in (artifacts.visual_features, artifacts.visual_twins) if p.exists()]


def print_depths(depths: dict, info: dict) -> None:
    """The recall curves (each source alone) and the depths chosen from them."""
    print(f"ranker: recall of each source's candidates at each depth on the validation week "
          f"({info['customers']:,} buyers; rows = candidates per customer):", flush=True)
    table = pl.DataFrame(info["curves"])
    depths_tried = [int(c.removeprefix("recall@")) for c in table.columns if c.startswith("recall@")]
    cells = [pl.format("{} ({})", pl.col(f"recall@{d}").round(3), pl.col(f"rows@{d}").round(0).cast(pl.Int64))
             .alias(f"recall@{d} (rows)") for d in depths_tried]
    evaluation.print_table(table.select("source", *cells).with_columns(
        chosen=pl.col("source").replace_strict(depths, default=None)))
    choice = info["choice"]
    print("ranker: depths chosen (most purchases per added row first, up to "
          f"{candidates.POOL_ROWS} rows per customer): " + ", ".join(f"{k}={v}" for k, v in depths.items())
          + f"; pool recall {choice['pool_recall']:.3f} with {choice['rows_per_customer']:.0f} rows per customer",
          flush=True)


def print_pool(table: list[dict], whole_rows: float) -> None:
    """The depth path's steps with the validation MAP@12 of a pool that stops there; the one final.py scores."""
    which = (f"the first step within {MAX_TRIM_COST:.0%} of the whole pool" if whole_rows > WHOLE_POOL_ROWS else
             f"the whole pool (trimmed only above {WHOLE_POOL_ROWS:,} rows)")
    print("ranker: validation MAP@12 of the pool along the depth path (rows per customer and recall on the "
          f"buyers above); a submission would score {whole_rows:,.0f} rows of the whole pool, so final.py "
          f"scores {which}:", flush=True)
    evaluation.print_table(pl.DataFrame(table).select(
        pl.col("source").fill_null("(every source)"), "depth",
        pl.col("rows_per_customer").round(0).cast(pl.Int64), "pool_recall", "validation_map12",
        chosen=pl.when(pl.col("chosen")).then(pl.lit("<-")).otherwise(pl.lit(""))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    artifacts = art.from_args(args)
    fit_ranker(artifacts, evaluation.load_inputs(artifacts), show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)

