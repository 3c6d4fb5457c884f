"""How well launch.py's similarity audience finds the first buyers of articles launched in the test week.

    .venv/bin/python bench/launch_quality.py --data-dir data [--top 100 1000]

Needs split_data.py's split (and visual_features.py's features for the image path). The audience is
scored at the test week's start from the train and validation weeks only; the truth is who bought
each launch (an article with no sale before the test week) during the test week. For each launch
and N: recall = share of its test-week buyers in its top N, hit rate = share of launches with at
least one buyer in the top N. Baselines with the same N: the N customers with most purchases in the
same 13-week window (the busiest customers), and a random N of the customers active in it (expected
value). Writes bench/results/launch_quality.{json,md} (git-ignored).
"""
from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import polars as pl

from fde import artifacts as art
from fde import launch, visual_index
from fde.cli import Stopwatch

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--top", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--no-images", action="store_true", help="score by metadata only")
    args = parser.parse_args()
    artifacts = art.from_args(args)
    clock = Stopwatch()
    split = json.loads(art.require(artifacts.split_info, artifacts.command("split_data.py")).read_text())
    cutoff = date.fromisoformat(split["test"]["start"])
    history = pl.concat([pl.scan_parquet(artifacts.split("train")), pl.scan_parquet(artifacts.split("validation"))])
    test = pl.read_parquet(artifacts.split("test"))
    articles = pl.read_parquet(artifacts.articles)
    with_images = not args.no_images and artifacts.visual_features.exists()
    visual = visual_index.VisualIndex.load(artifacts) if with_images else None
    scorer = launch.LaunchAudience(articles, history, cutoff, visual=visual)
    new = launch.launches(articles, history, cutoff)
    buyers = (test.filter(pl.col("article_id").is_in(new.implode())).group_by("article_id")
              .agg(pl.col("customer_id").unique().alias("buyers")))
    active = scorer.purchases.group_by("customer_id").agg(purchases=pl.len()).sort(
        ["purchases", "customer_id"], descending=[True, False])
    rows = []
    for aid, who in buyers.iter_rows():
        found = scorer.score(aid)
        truth = set(who)
        for n in args.top:
            top = set(found["customer_id"].head(n).to_list())
            busy = set(active["customer_id"].head(n).to_list())
            rows.append({"article_id": aid, "n": n, "buyers": len(truth), "audience": found.height,
                         "recall": len(top & truth) / len(truth), "hit": bool(top & truth),
                         "recall_busiest": len(busy & truth) / len(truth), "hit_busiest": bool(busy & truth),
                         "recall_random": min(n, active.height) / max(active.height, 1)})
    table = pl.DataFrame(rows)
    summary = (table.group_by("n").agg(launches=pl.len(), buyers_mean=pl.col("buyers").mean(),
                                       recall=pl.col("recall").mean(), recall_busiest=pl.col("recall_busiest").mean(),
                                       recall_random=pl.col("recall_random").mean(), hit_rate=pl.col("hit").mean(),
                                       hit_rate_busiest=pl.col("hit_busiest").mean())
               .sort("n"))
    with pl.Config(tbl_cols=-1, tbl_width_chars=200):
        print(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = "metadata" if visual is None else "images"
    (RESULTS / "launch_quality.json").write_text(json.dumps(
        {"cutoff": str(cutoff), "path": path, "active_customers": active.height, "summary": summary.to_dicts()},
        indent=2))
    (RESULTS / "launch_quality.md").write_text(
        f"# launch audience vs test-week buyers ({path}, cut-off {cutoff})\n\n" + str(summary) + "\n")
    print(f"[launch_quality] launches={buyers.height} active_customers={active.height} path={path} "
          f"seconds={clock.seconds:.1f}")


if __name__ == "__main__":
    main()
