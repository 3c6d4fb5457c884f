"""Stage 4: visual twins, the articles whose photos look most alike (cosine on the image features).

Reads visual/visual_features.npy + visual_article_ids.npy (merging visual_features.py's chunks first
if only those exist) and writes visual/visual_twins.parquet: article_id Int32, twin_id Int32,
rank UInt8 (1 = most alike), score Float32 (cosine similarity), k rows per article, itself excluded.

All pairs are scored blockwise (visual_index.top_k_twins): memory stays at the feature matrix plus
a few MB however large the catalogue. `--article` prints one article's twins (visual_index.VisualIndex,
the same lookup the app and the strategies use).

    python visual_reccs.py --data-dir data --k 12 [--exclude-same-product]
"""
from __future__ import annotations

import argparse

import polars as pl

from fde import artifacts as art
from fde.cli import Stopwatch, add_progress_flag, run_main, summary
from fde.errors import UserError, check_writable
from fde.files import atomic_outputs, write_parquet
from fde.ids import format_article_id, product_codes
from fde.visual_index import DEFAULT_K, VisualIndex, check_k, load_features, normalize, top_k_twins, twins_table


def build_twins(artifacts: art.Artifacts, k: int = DEFAULT_K, exclude_same_product: bool = False,
                show_progress: bool = True) -> dict:
    """Top-k visual twins of every article with an image, written to visual_twins.parquet."""
    clock = Stopwatch()
    check_k(k)
    ids, features = load_features(artifacts)
    if ids.shape[0] < 2:
        raise UserError(f"{ids.shape[0]} article(s) with an image: twins need at least 2")
    codes = product_codes(ids) if exclude_same_product else None
    index, score = top_k_twins(normalize(features), k, codes, show_progress=show_progress)
    table = twins_table(ids, index, score)
    features = [artifacts.visual_features, artifacts.visual_article_ids]  # twins of these, checked by every reader
    with atomic_outputs(artifacts.manifest("visual_reccs.py"), features, artifacts.command("visual_reccs.py"),
                        artifacts.data_dir) as outputs:
        write_parquet(table, outputs(artifacts.visual_twins))
    result = {"articles": int(ids.shape[0]), "twins": table.height, "k": k,
              "exclude_same_product": exclude_same_product, "seconds": clock.seconds,
              "output": str(artifacts.visual_twins)}
    summary("visual_reccs", articles=result["articles"], rows=table.height, k=k,
            exclude_same_product="yes" if exclude_same_product else "no", mean_score=float(table["score"].mean() or 0),
            seconds=clock.seconds, output=str(artifacts.visual_twins))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="twins per article (default: %(default)s)")
    parser.add_argument("--exclude-same-product", action="store_true",
                        help="skip other colourways of the same product_code (trivially alike)")
    parser.add_argument("--article", help="print the twins of this one article instead of building the table")
    add_progress_flag(parser)
    args = parser.parse_args()
    artifacts = art.from_args(args)
    if not args.article:
        check_writable(artifacts.visual_dir)  # before the work, not after it
    if args.article:
        twins = VisualIndex.load(artifacts).twins(args.article, args.k, args.exclude_same_product)
        print(twins.with_columns(pl.col("twin_id").map_elements(format_article_id, return_dtype=pl.String)))
        return
    build_twins(artifacts, k=args.k, exclude_same_product=args.exclude_same_product, show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)
