"""Launch audience from a shell: who to show an article nobody has bought yet, and why (fde/launch.py).

    python launch.py --data-dir data [--article 0XXXXXXXXX] [--top 20]

Prints the article's top customers with their reasons: the ranker's (results/launch_audience.parquet,
written by final.py) when it scored the article, else the similarity score of fde.launch.
"""
from __future__ import annotations

import argparse

import polars as pl

from fde import artifacts as art
from fde.cli import Stopwatch, run_main, summary
from fde.errors import UserError
from fde.ids import format_article_id, parse_article_id
from fde.launch import LaunchAudience, launches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--article", help="the article (default: the newest launch)")
    parser.add_argument("--top", type=int, default=20, help="customers to print (default: %(default)s)")
    args = parser.parse_args()
    artifacts = art.from_args(args)
    clock = Stopwatch()
    scorer = LaunchAudience.from_artifacts(artifacts)
    new = launches(scorer.articles, pl.scan_parquet(artifacts.transactions))
    if args.article is None and not new.len():
        raise UserError("every article has sales: give one with --article")
    article = args.article or new[0]
    found, source = scorer.audience(article, top=args.top)
    with pl.Config(tbl_rows=args.top, fmt_str_lengths=80):
        print(found.select("rank", "customer_id", "score", "reason"))
    summary("launch", article=format_article_id(parse_article_id(article)), launches=new.len(),
            customers=found.height, source=source, cutoff=str(scorer.cutoff), seconds=clock.seconds)


if __name__ == "__main__":
    run_main(main)
