"""What each feature group of issue 15 adds to the ranker: validation MAP@12 with and without it.

The weekly frames are built once, as ranker.py builds them (training.weekly_frames: time scales and
each source's depth chosen on validation, max(WEEK_CHOICES) training weeks thinned to their share of
TRAINING_ROWS, the validation week's groups with a purchase); then the set-up ranker.py chose
(its number of training weeks and objective, from results/ranker/ranker.json; --weeks and --objective
otherwise, default 3 weeks and LambdaRank) is trained with each subset of features, early-stopping on
the validation week's MAP@12, as ranker.py does. Reported per subset: that best validation MAP@12
(ranker.json's validation_map12_without_launch_slots: the week that chose the rounds, so a little
optimistic, alike for every subset) and the rounds. The groups:

    last_year  the same week last year (article, pair) and the article's lifetime sales and buyers
    local      postal-code and age x postal-code shares, and the popular_age_postal source's score and rank
    mf         mf_score (ALS factors, fde/factors.py)

"base" is every other feature; each group is measured both added to base and removed from all.
The pool is the same for every subset (popular_age_postal's candidates stay in it; its recall is shown).
--seeds 0 1 2 trains each subset with each LightGBM seed (bagging and feature fractions) and reports
every run, so that a difference can be read against the spread one seed to the next; --only names
the subsets to train.

    python sample_data.py --scale demo --data-dir /tmp/f15/data --images-dir /tmp/f15/images --no-images
    python data_optim.py --data-dir /tmp/f15/data && python split_data.py --data-dir /tmp/f15/data
    python ranker.py --data-dir /tmp/f15/data     # optional: the set-up it chooses is the one trained here
    python bench/ablation.py --data-dir /tmp/f15/data
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl

from fde import artifacts as art
from fde import evaluation, training
from fde.cli import run_main, summary
from fde.errors import UserError
from fde.files import write_json
from fde.training import MAX_ROUNDS, OBJECTIVES, TRAINING_WEEKS, load_vectors, train, usable_features

GROUPS = {
    "last_year": ("last_year_week_sales", "last_year_week_bought", "lifetime_sales", "lifetime_buyers"),
    "local": ("postal_customers", "postal_share_", "age_postal_share_", "score__popular_age_postal",
              "rank__popular_age_postal"),
    "mf": ("mf_score",),
}


def in_group(feature: str, group: str) -> bool:
    return any(feature == p or (p.endswith("_") and feature.startswith(p)) for p in GROUPS[group])


def subsets(features: list[str]) -> dict[str, list[str]]:
    """name -> features: base, base + each group, all - each group, all."""
    base = [f for f in features if not any(in_group(f, g) for g in GROUPS)]
    out = {"base": base}
    out.update({f"base + {g}": [f for f in features if f in base or in_group(f, g)] for g in GROUPS})
    out.update({f"all - {g}": [f for f in features if not in_group(f, g)] for g in GROUPS})
    out["all"] = list(features)
    return out


def chosen_setup(artifacts: art.Artifacts) -> tuple[int | None, str | None]:
    """(training weeks, objective) of the set-up the data dir's ranker.py chose, (None, None) without one."""
    if not artifacts.ranker_meta.exists():
        return None, None
    meta = art.load_damaged(artifacts.ranker_meta, artifacts.command("ranker.py"),
                            lambda path: json.loads(path.read_text()))
    setup = (meta.get("setups") or {}).get(meta.get("setup"), {})
    return setup.get("weeks"), setup.get("objective")


def frames(artifacts: art.Artifacts, weeks: int) -> training.WeeklyFrames:
    """The training weeks' frames and the validation week's, built as ranker.py builds them; a one-line error
    first when the history has fewer than `weeks` training weeks."""
    inputs = evaluation.load_inputs(artifacts)
    val_start = inputs.validation["t_dat"].min()
    _, cutoffs = training.training_cutoffs(inputs)
    if not 0 < weeks <= len(cutoffs):
        raise UserError(f"--weeks {weeks}: this history has {len(cutoffs)} training weeks before the validation "
                        "week; give at most that many")
    scales, _ = evaluation.choose_scales(inputs.train, inputs.articles, inputs.validation_truth, val_start)
    depths, _, fitted = training.choose_depths(inputs, scales)
    return training.weekly_frames(inputs, cutoffs, scales, load_vectors(artifacts, inputs.articles), depths, fitted)


def ablation(artifacts: art.Artifacts, seeds: tuple[int, ...] = (0,), only: tuple[str, ...] = (),
             weeks: int = TRAINING_WEEKS, objective: str = OBJECTIVES[0]) -> dict:
    """Validation MAP@12 and rounds per feature subset and seed (the last `weeks` training weeks, `objective`),
    and the validation pool's recall per source."""
    start = time.perf_counter()
    built = frames(artifacts, weeks)
    build_seconds = time.perf_counter() - start
    features, dropped = usable_features(pl.concat(built.training, how="diagonal_relaxed"))  # as ranker.py
    weeks_frame = pl.concat(built.training[-weeks:], how="diagonal_relaxed")
    valid, valid_truth, recall = built.valid, built.valid_truth, built.valid_recall
    rows = {}
    seed = training.PARAMS["seed"]
    for name, subset in subsets(features).items():
        if only and name not in only:
            continue
        for s in seeds:
            clock = time.perf_counter()
            columns = [*subset, "label", "cutoff", "customer_id"]
            training.PARAMS["seed"] = s  # the one parameter varied; restored below
            try:
                _, rounds, curve = train(weeks_frame.select(columns), subset, MAX_ROUNDS, valid.select(columns),
                                         valid_truth, objective=objective)
            finally:
                training.PARAMS["seed"] = seed
            key = name if seeds == (0,) else f"{name} (seed {s})"
            rows[key] = {"validation_map12": round(max(curve), 5) if curve else 0.0, "rounds": rounds,
                         "features": len(subset), "seconds": round(time.perf_counter() - clock, 1)}
            print(f"{key:26s} MAP@12 {rows[key]['validation_map12']:.5f}  rounds {rounds:3d}  "
                  f"features {len(subset)}", flush=True)
    return {"subsets": rows, "dropped_features": dropped, "validation_pool_recall": recall,
            "training_weeks": weeks, "objective": objective, "frames_seconds": round(build_seconds, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--out", default=None, help="JSON file for the table (default: bench/results/ablation.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="LightGBM seeds (default: 0, as ranker.py)")
    parser.add_argument("--only", nargs="+", default=[], help="train only these subsets (e.g. base all)")
    parser.add_argument("--weeks", type=int, default=None,
                        help=f"training weeks (default: the ranker's chosen set-up, else {TRAINING_WEEKS})")
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help=f"LightGBM objective (default: the ranker's chosen set-up, else {OBJECTIVES[0]})")
    args = parser.parse_args(argv)
    artifacts = art.from_args(args)
    weeks, objective = chosen_setup(artifacts)
    weeks = args.weeks or weeks or TRAINING_WEEKS
    objective = args.objective or objective or OBJECTIVES[0]
    print(f"ablation: {weeks} training weeks, {objective} (ranker.py's set-up where it ran, else the default)",
          flush=True)
    result = ablation(artifacts, tuple(args.seeds), tuple(args.only), weeks, objective)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "ablation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json({"data_dir": str(artifacts.data_dir), **result}, out)
    best = max(result["subsets"], key=lambda k: result["subsets"][k]["validation_map12"])
    summary("ablation", subsets=len(result["subsets"]), best=best,
            best_map12=result["subsets"][best]["validation_map12"], output=str(out))


if __name__ == "__main__":
    run_main(main)
