"""Search the catalogue from a photo or from words: the nearest articles as CSV on stdout.

    python search.py --data-dir data --images-dir images --image photo.jpg [--k 12]
    python search.py --data-dir data --text "black slim jeans" --colour Black --price-band low

A photo goes through exactly the catalogue's recipe (visual/visual_meta.json: backbone, weights, input
size, fit, runtime; its EXIF rotation applied) and is compared with every article's image vector
(cosine). Words are scored with BM25 over each article's name, type, colour, pattern, department, index
group and description. Filters work on both. stdout gets `rank,article_id,score` (10-digit ids);
stderr gets progress and a one-line summary. The search catalogue (price bands) and its text index are
made from processed/ by data_optim.py and saved under search/ with a manifest; a search rebuilds them
when articles.parquet or transactions.parquet have changed since.
Beyond 200,000 image vectors (or with --index ann) a photo's candidates come from an approximate
index (fde/ann.py: faiss IVF over 256-d projections, nprobe measured at build), built once and saved in
visual/, and are re-ranked with the exact cosine.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from fde import artifacts as art
from fde.cli import Stopwatch, run_main, summary
from fde.errors import UserError
from fde.search import DEFAULT_K, INDEX_MODES, PRICE_BANDS, Filters, Search, results_csv


def search(artifacts: art.Artifacts, image: str | None = None, text: str | None = None, k: int = DEFAULT_K,
           filters: Filters = Filters(), index: str = "auto"):
    """The results frame (rank, article_id, score, why) of a photo or a text query."""
    if (image is None) == (text is None):
        raise UserError("give either --image PHOTO or --text WORDS")
    engine = Search(artifacts, index=index)
    if image is not None:
        return engine.by_photo(image, k, filters, name=image)
    return engine.by_text(text, k, filters)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser, images=True)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="a photo (JPEG, PNG, ...) to find the look-alikes of")
    query.add_argument("--text", help='words to search for, e.g. "black slim jeans"')
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="results (default: %(default)s)")
    parser.add_argument("--index-group", help="only this index group, e.g. Ladieswear")
    parser.add_argument("--product-type", help="only this product type, e.g. Trousers")
    parser.add_argument("--colour", help="only this colour group, e.g. \"Dark Blue\"")
    parser.add_argument("--price-band", help=f"only this third of its product type's prices: {', '.join(PRICE_BANDS)}")
    parser.add_argument("--index", choices=INDEX_MODES, default="auto",
                        help="photo search: exact (every image vector), ann (the approximate index in visual/, "
                             "built once), auto: exact up to 200,000 image vectors (default: %(default)s)")
    parser.add_argument("--hide-colourways", action="store_true",
                        help="one article per product: the best of its colourways")
    args = parser.parse_args()
    clock = Stopwatch()
    filters = Filters(index_group=args.index_group, product_type=args.product_type, colour=args.colour,
                      price_band=args.price_band, hide_colourways=args.hide_colourways)
    # stdout is the answer: whatever the work prints (an ONNX export's notice) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        results = search(art.from_args(args), image=args.image, text=args.text, k=args.k, filters=filters,
                         index=args.index)
    sys.stdout.write(results_csv(results))
    sys.stdout.flush()
    with contextlib.redirect_stdout(sys.stderr):
        summary("search", query="photo" if args.image else "text", results=results.height,
                best=float(results["score"][0]) if results.height else 0.0,
                filters=",".join(f"{key}={value}" for key, value in filters.active().items()) or "none",
                seconds=clock.seconds)
        if results.is_empty():
            print("no article matches: try other words or fewer filters")


if __name__ == "__main__":
    run_main(main)
