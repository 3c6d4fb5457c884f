"""How often do an article's top-12 visual twins share its product type and colour group?

    .venv/bin/python bench/visual_quality.py --data-dir data --images-dir images

Compares, on the same articles: each pretrained backbone whose weights are here (MobileNetV2;
ResNet50 only if its weights are installed) with each way of fitting the photo into the square
input (--fits: pad, crop, stretch), each --precisions and each --runtimes, raw pixels (the photo
shrunk to 32x48 RGB, centred, as a vector), and random twins (the exact expectation, no sampling). Each is scored
twice: all twins, and twins from other products only (colourways of one product share its type by
construction, which flatters every method alike). Also reported: the share of articles with another
colourway whose single nearest twin is one (the measure of the real-photo table in the README).

Embeddings are cached under bench/results/visual_quality/<method>/ (resumable, like the stage).
Writes bench/results/visual_quality.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

import visual_features as vf
from fde import images, pretrained, visual_index
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.ids import product_codes

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
PIXELS = (32, 48)  # width, height: portrait 2:3 like the photos


def read_labels(artifacts: Artifacts) -> pl.DataFrame:
    """article_id, product_type_no, colour_group_code from processed or raw articles."""
    columns = ["article_id", "product_type_no", "colour_group_code"]
    if artifacts.articles.exists():
        frame = pl.read_parquet(artifacts.articles, columns=columns)
    elif artifacts.raw_articles.exists():
        frame = pl.read_csv(artifacts.raw_articles, columns=columns, schema_overrides={"article_id": pl.Int64})
    else:
        raise UserError(f"no articles in {artifacts.data_dir}: run `python sample_data.py` first")
    return frame.select(pl.col("article_id").cast(pl.Int32), pl.col("product_type_no").cast(pl.Int64),
                        pl.col("colour_group_code").cast(pl.Int64))


def pixel_vectors(artifacts: Artifacts, ids: np.ndarray) -> np.ndarray:
    """Each photo shrunk to 32x48 RGB, flattened; the mean image is subtracted so white does not dominate."""
    from PIL import Image

    def shrink(aid):
        with Image.open(artifacts.image(aid)) as im:
            im.draft("RGB", (PIXELS[0] * 2, PIXELS[1] * 2))
            return np.asarray(im.convert("RGB").resize(PIXELS, Image.Resampling.BILINEAR), dtype=np.float32).ravel()

    vectors = np.stack([shrink(a) for a in tqdm(ids, desc="raw pixels", unit="img")])
    return vectors - vectors.mean(axis=0)


def twin_shares(ids: np.ndarray, vectors: np.ndarray, labels: pl.DataFrame, k: int, exclude: bool) -> dict:
    """Mean share of the top-k twins with the query's product type, colour group, and both."""
    index, _ = visual_index.top_k_twins(visual_index.normalize(vectors), k, product_codes(ids) if exclude else None)
    lab = pl.DataFrame({"article_id": ids}).join(labels, on="article_id", how="left")
    ptype, colour = lab["product_type_no"].to_numpy(), lab["colour_group_code"].to_numpy()
    valid = index >= 0
    safe = np.where(valid, index, 0)
    same_type = (ptype[safe] == ptype[:, None]) & valid
    same_colour = (colour[safe] == colour[:, None]) & valid
    per_query = valid.sum(axis=1)
    ok = per_query > 0

    def share(hit):
        return float((hit.sum(axis=1)[ok] / per_query[ok]).mean())

    return {"type": share(same_type), "colour": share(same_colour), "both": share(same_type & same_colour)}


def colourway_share(ids: np.ndarray, vectors: np.ndarray) -> float:
    """Share of articles that have another colourway whose nearest twin is another colourway of the same product."""
    codes = product_codes(ids)
    _, counts = np.unique(codes, return_counts=True)
    has_sibling = np.isin(codes, np.unique(codes)[counts > 1])
    index, _ = visual_index.top_k_twins(visual_index.normalize(vectors), 1, None)
    nearest = index[:, 0]
    hit = (nearest >= 0) & (codes[np.maximum(nearest, 0)] == codes)
    return float(hit[has_sibling].mean())


def random_shares(ids: np.ndarray, labels: pl.DataFrame, exclude: bool) -> dict:
    """Expected shares for twins drawn uniformly from the other articles (other products if exclude)."""
    lab = (pl.DataFrame({"article_id": ids}).join(labels, on="article_id", how="left")
           .with_columns(product_code=pl.col("article_id") // 1000))
    n = lab.height
    counts = lab.with_columns(
        n_type=pl.len().over("product_type_no"), n_colour=pl.len().over("colour_group_code"),
        n_both=pl.len().over("product_type_no", "colour_group_code"),
        p_all=pl.len().over("product_code"),
        p_type=pl.len().over("product_code", "product_type_no"),
        p_colour=pl.len().over("product_code", "colour_group_code"),
        p_both=pl.len().over("product_code", "product_type_no", "colour_group_code"),
    )
    if exclude:  # candidates: articles of other products
        pool = n - pl.col("p_all")
        hits = {key: pl.col(f"n_{key}") - pl.col(f"p_{key}") for key in ("type", "colour", "both")}
    else:  # candidates: every other article
        pool = pl.lit(n - 1)
        hits = {key: pl.col(f"n_{key}") - 1 for key in ("type", "colour", "both")}
    out = counts.filter(pool > 0).select(**{key: (expr / pool).mean() for key, expr in hits.items()})
    return {key: float(out[key][0]) for key in ("type", "colour", "both")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--images-dir", default="images")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fits", default=",".join(images.FITS),
                        help="comma-separated fits to compare (default: %(default)s)")
    parser.add_argument("--precisions", default="auto", help="comma-separated: auto, fp32, bf16 (default: %(default)s)")
    parser.add_argument("--runtimes", default="auto",
                        help="comma-separated: auto, onnx, torch (default: %(default)s)")
    parser.add_argument("--max-articles", type=int, default=None,
                        help="only the first N images (by id), for a quick look")
    args = parser.parse_args()
    source = Artifacts(Path(args.data_dir), Path(args.images_dir))
    labels = read_labels(source)

    methods = []  # (name, backbone, precision, fit, runtime)
    for backbone in pretrained.NETWORKS:
        try:
            pretrained.find_weights(backbone, download=False)
        except UserError as exc:
            print(f"skipping {backbone}: {exc}")
            continue
        methods += [(f"{backbone} {runtime} {precision} {fit}", backbone, precision, fit, runtime)
                    for fit in args.fits.split(",") for precision in args.precisions.split(",")
                    for runtime in args.runtimes.split(",")]

    photos, _ = images.list_images(source.images_dir)
    if args.max_articles:
        photos = photos.head(args.max_articles)
    ids = photos["article_id"].to_numpy()
    embeddings = {}
    for name, backbone, precision, fit, runtime in methods:
        cache = RESULTS / "visual_quality" / name.replace(" ", "-")
        images_dir = source.images_dir
        if args.max_articles:  # a subset: link just those files into a folder of their own
            images_dir = cache / "images"
            for aid in ids:
                link = Artifacts(cache, images_dir).image(aid)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(source.image(aid).resolve())
        target = Artifacts(cache, images_dir)
        vf.embed_catalogue(target, backbone=backbone, batch_size=args.batch_size, num_workers=args.workers,
                           precision=precision, fit=fit, runtime=runtime)
        got_ids = np.load(target.visual_article_ids)
        features = np.load(target.visual_features).astype(np.float32)
        keep = np.isin(got_ids, ids)
        embeddings[name] = (got_ids[keep], features[keep])
    embeddings[f"raw pixels {PIXELS[0]}x{PIXELS[1]}"] = (ids, pixel_vectors(source, ids))

    rows = []
    for exclude in (False, True):
        for name, (method_ids, vectors) in embeddings.items():
            rows.append({"twins": "other products" if exclude else "all", "method": name,
                         "articles": int(len(method_ids)), **twin_shares(method_ids, vectors, labels, args.k, exclude),
                         "colourway_top1": colourway_share(method_ids, vectors)})
        rows.append({"twins": "other products" if exclude else "all", "method": "random",
                     "articles": int(len(ids)), **random_shares(ids, labels, exclude), "colourway_top1": None})
    table = pl.DataFrame(rows)
    print(table)

    lines = [f"# Visual twins quality: share of the top-{args.k} twins that match the query "
             f"({len(ids):,} articles with images in {source.images_dir})", "",
             "| twins from | method | same product type | same colour group | both "
             "| nearest twin is another colourway |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        top1 = "-" if row["colourway_top1"] is None or row["twins"] != "all" else f"{row['colourway_top1']:.3f}"
        lines.append(f"| {row['twins']} | {row['method']} | {row['type']:.3f} | {row['colour']:.3f} | "
                     f"{row['both']:.3f} | {top1} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "visual_quality.json").write_text(json.dumps({"k": args.k, "rows": rows}, indent=2) + "\n")
    (RESULTS / "visual_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
