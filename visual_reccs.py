"""Stage 4: visual twins, the articles whose photos look most alike (cosine on the image features).

Reads visual/visual_features.npy + visual_article_ids.npy (merging visual_features.py's chunks first
if only those exist) and writes visual/visual_twins.parquet: article_id Int32, twin_id Int32,
rank UInt8 (1 = most alike), score Float32 (cosine similarity), k rows per article, itself excluded.

All pairs are scored in blocks of BLOCK x BLOCK articles, each block once for both of its halves
(cosine is symmetric), keeping a running top-k per article: memory stays at the feature matrix plus
a few MB however large the catalogue. `VisualTwins` answers one article at a time, any k, from the
feature matrix, for the app and the hybrid recommender.

    python visual_reccs.py --data-dir data --k 12 [--exclude-same-product]
"""
from __future__ import annotations

import argparse

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

import artifacts as art
from common import (Stopwatch, UserError, check_writable, format_article_id, no_image_feature, parse_article_id, run_main,
                    summary, write_parquet)

DEFAULT_K = 12
BLOCK = 1024  # 1024 x 1024 float32 scores = 4 MB per block; large enough for full BLAS speed
TWIN_SCHEMA = {"twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}


def product_codes(article_ids: np.ndarray) -> np.ndarray:
    """Kaggle's convention: article_id = product_code * 1000 + colourway."""
    return np.asarray(article_ids, dtype=np.int64) // 1000


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (an all-zero row stays zero and matches nothing)."""
    vectors = np.array(features, dtype=np.float32)  # one float32 copy, scaled in place
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # no N x D temporary, unlike norm()
    vectors /= np.maximum(norms, 1e-12)[:, None]
    return vectors


def load_features(artifacts: art.Artifacts) -> tuple[np.ndarray, np.ndarray]:
    """(article_ids int32, features) of the last visual_features.py run."""
    if not artifacts.visual_features.exists() or not artifacts.visual_article_ids.exists():
        raise UserError(f"{artifacts.visual_features} not found: "
                        f"run `{artifacts.command('visual_features.py', images=True)}` first")
    ids = np.load(artifacts.visual_article_ids).astype(np.int32)
    features = np.load(artifacts.visual_features)
    if features.ndim != 2 or features.shape[0] != ids.shape[0]:
        raise UserError(f"{artifacts.visual_features} ({features.shape}) and {artifacts.visual_article_ids} "
                        f"({ids.shape}) do not match: rerun `python visual_features.py`")
    return ids, features


def top_k_twins(vectors: np.ndarray, k: int = DEFAULT_K, codes: np.ndarray | None = None,
                block: int = BLOCK, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and scores (N x k, best first) of each row's nearest rows by dot product.

    vectors: unit rows. codes: when given, rows with an equal code are never each other's twins.
    Rows with fewer than k candidates are padded with index -1 and score -inf.
    """
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    n = x.shape[0]
    best_score = torch.full((n, k), -torch.inf)
    best_index = torch.full((n, k), -1, dtype=torch.int64)
    codes_t = None if codes is None else torch.from_numpy(np.asarray(codes, dtype=np.int64))

    def merge(rows: slice, scores: torch.Tensor, offset: int) -> None:
        # Running top-k: the k best so far plus this block's k best, keep the k best of both.
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        cand_score = torch.cat([best_score[rows], top.values], dim=1)
        cand_index = torch.cat([best_index[rows], top.indices + offset], dim=1)
        keep = cand_score.topk(k, dim=1)
        best_score[rows] = keep.values
        best_index[rows] = cand_index.gather(1, keep.indices)

    starts = list(range(0, n, block))
    with torch.inference_mode(), tqdm(total=len(starts) * (len(starts) + 1) // 2, unit="block",
                                      desc="visual twins", disable=not show_progress) as bar:
        for i, a in enumerate(starts):
            rows_a = slice(a, min(a + block, n))
            for b in starts[i:]:
                rows_b = slice(b, min(b + block, n))
                scores = x[rows_a] @ x[rows_b].T
                if a == b:
                    scores.fill_diagonal_(-torch.inf)  # an article is not its own twin
                if codes_t is not None:
                    ca, cb = codes_t[rows_a], codes_t[rows_b]
                    if ca.min() <= cb.max() and cb.min() <= ca.max():  # ids are sorted: rarely true
                        scores[ca[:, None] == cb[None, :]] = -torch.inf
                merge(rows_a, scores, b)
                if a != b:
                    merge(rows_b, scores.T, a)
                bar.update(1)
    index, score = best_index.numpy(), best_score.numpy()
    index[~np.isfinite(score)] = -1  # excluded pairs (-inf) are padding too, not twins
    # Sort each row by score, then by index, so ties come out the same on every run and machine.
    order = np.lexsort((np.where(index < 0, n, index), -score), axis=1)
    return np.take_along_axis(index, order, 1), np.take_along_axis(score, order, 1)


def twins_table(article_ids: np.ndarray, index: np.ndarray, score: np.ndarray) -> pl.DataFrame:
    """Long table article_id, twin_id, rank, score from top_k_twins' arrays (padding dropped)."""
    n, k = index.shape
    valid = (index >= 0).ravel()
    return pl.DataFrame({
        "article_id": np.repeat(article_ids, k)[valid],
        "twin_id": article_ids[np.clip(index, 0, None)].ravel()[valid],
        "rank": np.tile(np.arange(1, k + 1), n)[valid],
        "score": score.ravel()[valid],
    }, schema={"article_id": pl.Int32, "twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32})


def check_k(k: int) -> None:
    if not 1 <= k <= 255:  # rank is UInt8
        raise UserError(f"k={k}: give a number of twins between 1 and 255")


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
    write_parquet(table, artifacts.visual_twins)
    result = {"articles": int(ids.shape[0]), "twins": table.height, "k": k,
              "exclude_same_product": exclude_same_product, "seconds": clock.seconds,
              "output": str(artifacts.visual_twins)}
    summary("visual_reccs", articles=result["articles"], rows=table.height, k=k,
            exclude_same_product="yes" if exclude_same_product else "no", mean_score=float(table["score"].mean() or 0),
            seconds=clock.seconds, output=str(artifacts.visual_twins))
    return result


class VisualTwins:
    """Visual twins of one article on demand, from the normalised feature matrix (any k, any filter)."""

    def __init__(self, article_ids: np.ndarray, features: np.ndarray, no_image: dict | None = None):
        order = np.argsort(article_ids, kind="stable")
        self.article_ids = np.asarray(article_ids, dtype=np.int32)[order]
        self.vectors = torch.from_numpy(normalize(np.asarray(features)[order]))
        self.codes = product_codes(self.article_ids)
        self.no_image = no_image or {}  # article_id -> why it has no vector, for the error message

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> "VisualTwins":
        """The features written by visual_features.py (metadata supplies missing/unreadable ids)."""
        ids, features = load_features(artifacts)
        no_image = art.images_without_features(artifacts)
        return cls(ids, features, no_image)

    def __len__(self) -> int:
        return int(self.article_ids.shape[0])

    def _row(self, article_id) -> int | None:
        key = parse_article_id(article_id)
        row = int(np.searchsorted(self.article_ids, key))
        return row if row < len(self) and self.article_ids[row] == key else None

    def has(self, article_id) -> bool:
        """True when the article has a vector (text with or without the leading zero, or an int)."""
        try:
            return self._row(article_id) is not None
        except UserError:
            return False

    def twins(self, article_id, k: int = DEFAULT_K, exclude_same_product: bool = False) -> pl.DataFrame:
        """The k most alike articles: twin_id Int32, rank UInt8 (1-based), score Float32 (cosine)."""
        check_k(k)
        row = self._row(article_id)
        if row is None:
            raise no_image_feature(parse_article_id(article_id), self.no_image, len(self))
        with torch.inference_mode():
            scores = (self.vectors @ self.vectors[row]).numpy()
        scores[row] = -np.inf
        if exclude_same_product:
            scores[self.codes == self.codes[row]] = -np.inf
        candidates = np.flatnonzero(np.isfinite(scores))
        k = min(k, candidates.shape[0])
        if k == 0:
            return pl.DataFrame(schema=TWIN_SCHEMA)
        top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        # Best first; equal scores by id, as in visual_twins.parquet.
        top = top[np.lexsort((top, -scores[top]))]
        return pl.DataFrame({"twin_id": self.article_ids[top], "rank": np.arange(1, k + 1),
                             "score": scores[top]}, schema=TWIN_SCHEMA)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="twins per article (default: %(default)s)")
    parser.add_argument("--exclude-same-product", action="store_true",
                        help="skip other colourways of the same product_code (trivially alike)")
    parser.add_argument("--article", help="print the twins of this one article instead of building the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    artifacts = art.from_args(args)
    if not args.article:
        check_writable(artifacts.visual_dir)  # before the work, not after it
    if args.article:
        twins = VisualTwins.load(artifacts).twins(args.article, args.k, args.exclude_same_product)
        print(twins.with_columns(pl.col("twin_id").map_elements(format_article_id, return_dtype=pl.String)))
        return
    build_twins(artifacts, k=args.k, exclude_same_product=args.exclude_same_product, show_progress=not args.quiet)


if __name__ == "__main__":
    run_main(main)
