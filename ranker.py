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
from datetime import timedelta

import polars as pl

from fde import artifacts as art
from fde import evaluation
from fde.cli import Stopwatch, add_progress_flag, peak_rss_mb, run_main, summary
from fde.errors import UserError, check_writable
from fde.evaluation import Inputs
from fde.ranking import Model
from fde.training import (
    MAX_ROUNDS,
    PARAMS,
    TRAINING_WEEKS,
    choose_launch_slots,
    load_vectors,
    train,
    usable_features,
    week_frame,
)


def fit_ranker(artifacts: art.Artifacts, inputs: Inputs, show_progress: bool = True) -> dict:
    """Choose scales, build the weekly frames, early-stop on validation, retrain up to the test week, save."""
    from tqdm.auto import tqdm

    clock = Stopwatch()
    check_writable(artifacts.ranker_dir)  # before minutes of work, not after
    history = pl.concat([inputs.train, inputs.validation])  # never the test week
    val_start = inputs.validation["t_dat"].min()
    cutoffs = [val_start - timedelta(weeks=w) for w in range(TRAINING_WEEKS, 0, -1)]
    if inputs.train["t_dat"].min() > cutoffs[0] - timedelta(weeks=1):
        raise UserError(f"the ranker needs at least {TRAINING_WEEKS + 1} weeks of history before the validation week "
                        f"(training weeks from {cutoffs[0]}): give more data or use the hybrid (final.py)")
    progress = tqdm(total=evaluation.scale_steps() + len(cutoffs) + 1 + MAX_ROUNDS, desc="ranker", unit="step",
                    disable=not show_progress)
    timings = {}
    scales, scale_scores = evaluation.choose_scales(inputs.train, inputs.articles, inputs.validation_truth,
                                                    val_start, progress)
    timings["choose_scales"] = clock.seconds
    vectors = load_vectors(artifacts, inputs.articles)
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
    booster, rounds, curve = train(weeks, features, MAX_ROUNDS,
                                   valid.select(*features, "label", "cutoff", "customer_id"),
                                   valid_truth, progress)
    val_map = max(curve) if curve else 0.0
    scored = valid.with_columns(score=pl.Series(
        booster.predict(valid.select(pl.col(f).cast(pl.Float32) for f in features).to_numpy(), num_iteration=rounds),
        dtype=pl.Float32))
    slots, slot_scores = choose_launch_slots(scored, valid_truth.truth, inputs.train["article_id"].unique())
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
        "validation_map12_without_launch_slots": val_map, "seconds": timings, "launch_slots": slots,
        "launch_slot_scores": slot_scores,
        "pool_recall": recalls[str(val_start)], "early_stopping_weeks": [[str(c), str(c + timedelta(days=6))]
                                                                         for c in cutoffs],
    })
    model.save(artifacts, trained_on(artifacts))
    top = ", ".join(f"{r['feature']}" for r in model.importance()[:5])
    summary("ranker", weeks=len(training_weeks), rows=weeks.height, features=len(features), rounds=rounds,
            validation_map12=f"{slot_scores[slots][0]:.4f}", launch_slots=slots,
            pool_recall=f"{recalls[str(val_start)].get('pool', 0):.3f}",
            top_features=top, seconds=clock.seconds, peak_rss_mb=peak_rss_mb(), output=str(artifacts.ranker_model))
    return model.meta | {"features": features, "feature_importance": model.importance()}


def trained_on(artifacts: art.Artifacts) -> list:
    """The files the ranker was trained from: results/ranker/manifest.json records them, every reader checks it."""
    files = [artifacts.articles, artifacts.customers, *(artifacts.split(p) for p in ("train", "validation", "test"))]
    return files + [p for p in (artifacts.visual_features, artifacts.visual_twins) if p.exists()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    add_progress_flag(parser)
    args = parser.parse_args(argv)
    artifacts = art.from_args(args)
    fit_ranker(artifacts, evaluation.load_inputs(artifacts), show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)

