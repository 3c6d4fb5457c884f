"""Vectors and the visual index: image features as unit vectors, each article's visual twins, all pairs' top k.

`VisualIndex` answers one article's twins at a time, any k, for the twins view, the launch view and
the strategies. The feature matrix is memory-mapped (nothing is read until a full scan is needed) and
the twins precomputed by visual_reccs.py are read for one article with a predicate scan; a query the
table cannot answer scans the matrix once and keeps its unit rows for the next ones.

`top_k_twins` scores all pairs in blocks of BLOCK x BLOCK articles, each block once for both of its
halves (cosine is symmetric), keeping a running top-k per article: memory stays at the feature
matrix plus a few MB however large the catalogue. It is the one function here that needs torch.
"""
from __future__ import annotations

import threading

import numpy as np
import polars as pl

from fde import artifacts as art
from fde import files
from fde.errors import UserError
from fde.ids import format_article_id, parse_article_id, product_codes

DEFAULT_K = 12
BLOCK = 1024  # 1024 x 1024 float32 scores = 4 MB per block; large enough for full BLAS speed
SCAN_BLOCK = 8192  # feature rows read and converted to float32 at a time in the one full scan
TWIN_SCHEMA = {"twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}
UNIT_VERSION = "unit-float32-v1"  # change it whenever save_unit_vectors changes what it writes


def normalize(features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit length as float32 (an all-zero row stays zero and matches nothing).

    out: a float32 array of the same shape to write them into (no temporary copy)."""
    if out is None:
        vectors = np.array(features, dtype=np.float32)  # one float32 copy, scaled in place
    else:
        vectors = out
        np.copyto(vectors, features, casting="same_kind")
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # no N x D temporary, unlike norm()
    vectors /= np.maximum(norms, 1e-12)[:, None]
    return vectors


def load_features(artifacts: art.Artifacts, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(article_ids int32, features) of the last visual_features.py run; mmap: map the matrix, read nothing yet."""
    command = artifacts.command("visual_features.py")
    for path in (artifacts.visual_features, artifacts.visual_article_ids):
        art.require(path, command)
    art.require_fresh_if_built(artifacts, "visual_features.py", artifacts.visual_features)
    ids = art.load_damaged(artifacts.visual_article_ids, command, np.load).astype(np.int32)
    features = art.load_damaged(artifacts.visual_features, command,
                                lambda path: np.load(path, mmap_mode="r" if mmap else None))
    if features.ndim != 2 or features.shape[0] != ids.shape[0]:
        raise UserError(f"{artifacts.visual_features} ({features.shape}) and {artifacts.visual_article_ids} "
                        f"({ids.shape}) do not match: rerun `{command}`")
    return ids, features


def load_visual_vectors(artifacts: art.Artifacts) -> tuple[np.ndarray, np.ndarray] | None:
    """(article ids, image features) written by visual_features.py, or None when it has not run.

    Stale, damaged or mismatched files stop with the command to rerun: never a silent None.
    """
    if not artifacts.visual_features.exists() and not artifacts.visual_article_ids.exists():
        return None
    return load_features(artifacts)


def fresh_twins(artifacts: art.Artifacts) -> bool:
    """True when visual_twins.parquet exists and was built from the current features (else a one-line error)."""
    if artifacts.visual_twins.exists():  # stale features first: they are what to rerun before the twins
        art.require_fresh_if_built(artifacts, "visual_features.py", artifacts.visual_features)
    return art.require_fresh_if_built(artifacts, "visual_reccs.py", artifacts.visual_twins)


def load_twins(artifacts: art.Artifacts) -> pl.DataFrame | None:
    """visual_twins.parquet, or None when visual_reccs.py has not run; stale or damaged: the command to rerun."""
    if not fresh_twins(artifacts):
        return None
    return art.read_parquet(artifacts.visual_twins, artifacts.command("visual_reccs.py"))


def no_image_feature(article_id: int, no_image: dict, n_features: int) -> UserError:
    """The error for an article without an image feature: why (missing or unreadable image) when known."""
    reason = no_image.get(article_id)
    if reason:
        return UserError(f"article {format_article_id(article_id)} {reason}, so it has no visual twins")
    return UserError(f"article {format_article_id(article_id)} is not among the {n_features:,} articles with "
                     f"an image feature: check the id, or rerun visual_features.py if it is new")


def check_k(k: int) -> None:
    if not 1 <= k <= 255:  # rank is UInt8
        raise UserError(f"k={k}: give a number of twins between 1 and 255")


def top_k_twins(vectors: np.ndarray, k: int = DEFAULT_K, codes: np.ndarray | None = None,
                block: int = BLOCK, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and scores (N x k, best first) of each row's nearest rows by dot product.

    vectors: unit rows. codes: when given, rows with an equal code are never each other's twins.
    Rows with fewer than k candidates are padded with index -1 and score -inf.
    """
    import torch  # here: the one caller that needs it is visual_reccs.py, on every article at once
    from tqdm import tqdm

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


class VisualIndex:
    """Image neighbours of one article at a time, reading only what that article needs.

    The feature matrix is memory-mapped (nothing is read until a full scan is needed) and the
    twins precomputed by visual_reccs.py are read for one article with a predicate scan.
    """

    def __init__(self, article_ids: np.ndarray, features: np.ndarray, twins_path=None, no_image: dict | None = None):
        self.article_ids = np.asarray(article_ids, dtype=np.int32)
        self.features = features
        self.order = np.argsort(self.article_ids, kind="stable")
        self.sorted_ids = self.article_ids[self.order]
        self.codes = product_codes(self.article_ids)
        self.twins_path = twins_path
        self.no_image = no_image or {}
        self._unit = None
        self._lock = threading.Lock()  # the app shares one index between sessions (threads)

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> VisualIndex:
        """The features of visual_features.py, memory-mapped; UserError naming the command when absent."""
        ids, features = load_features(artifacts, mmap=True)
        no_image = art.images_without_features(artifacts)
        twins = artifacts.visual_twins if fresh_twins(artifacts) else None
        return cls(ids, features, twins, no_image)

    def __len__(self) -> int:
        return int(self.article_ids.shape[0])

    def row(self, article_id) -> int | None:
        """Row of an article in the feature matrix, None when it has no image feature."""
        key = parse_article_id(article_id)
        at = int(np.searchsorted(self.sorted_ids, key))
        return int(self.order[at]) if at < len(self) and self.sorted_ids[at] == key else None

    def has(self, article_id) -> bool:
        try:
            return self.row(article_id) is not None
        except UserError:
            return False

    def _require_row(self, article_id) -> int:
        row = self.row(article_id)
        if row is None:
            raise no_image_feature(parse_article_id(article_id), self.no_image, len(self))
        return row

    def unit_vectors(self) -> np.ndarray:
        """The features as unit float32 rows, made by the first query that needs a full scan and then kept.

        One pass over the mapped file in float32 blocks (it may be float16); an all-zero row stays zero.
        """
        with self._lock:
            if self._unit is None:
                unit = np.empty(self.features.shape, dtype=np.float32)
                for start in range(0, len(self), SCAN_BLOCK):  # converted in place: ~2x faster than a copy per block
                    normalize(self.features[start:start + SCAN_BLOCK], out=unit[start:start + SCAN_BLOCK])
                self._unit = unit
        return self._unit

    def similarities(self, article_id) -> np.ndarray:
        """Cosine similarity of every article (in self.article_ids order) to this one; itself -inf."""
        row = self._require_row(article_id)
        unit = self.unit_vectors()
        scores = unit @ unit[row]
        scores[row] = -np.inf
        return scores

    def _from_table(self, key: int, k: int, exclude_same_product: bool) -> pl.DataFrame | None:
        """The precomputed twins, when they answer this query exactly; None when they cannot."""
        if self.twins_path is None:
            return None
        stored = (pl.scan_parquet(self.twins_path).filter(pl.col("article_id") == pl.lit(key, dtype=pl.Int32))
                  .select("twin_id", "score").collect())
        complete = stored.height >= len(self) - 1  # every other article is in the table
        if exclude_same_product:
            stored = stored.filter(pl.col("twin_id") // 1000 != key // 1000)
        if stored.height < k and not complete:
            return None  # the table keeps fewer twins than asked for: scan the features instead
        top = stored.sort(["score", "twin_id"], descending=[True, False]).head(k)
        return top.with_columns(rank=pl.int_range(1, top.height + 1)).select(
            pl.col("twin_id").cast(pl.Int32), pl.col("rank").cast(pl.UInt8), pl.col("score").cast(pl.Float32))

    def twins(self, article_id, k: int = DEFAULT_K, exclude_same_product: bool = False) -> pl.DataFrame:
        """The k most alike articles: twin_id Int32, rank UInt8 (1-based), score Float32 (cosine)."""
        check_k(k)
        key = parse_article_id(article_id)
        self._require_row(key)
        found = self._from_table(key, k, exclude_same_product)
        if found is not None:
            return found
        scores = self.similarities(key)
        if exclude_same_product:
            scores[self.codes == key // 1000] = -np.inf
        candidates = np.flatnonzero(np.isfinite(scores))
        k = min(k, candidates.shape[0])
        if k == 0:
            return pl.DataFrame(schema=TWIN_SCHEMA)
        top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        top = top[np.lexsort((self.article_ids[top], -scores[top]))]  # best first, ties by id
        return pl.DataFrame({"twin_id": self.article_ids[top], "rank": np.arange(1, k + 1),
                             "score": scores[top]}, schema=TWIN_SCHEMA)


def fresh_unit_vectors(artifacts: art.Artifacts, shape: tuple[int, ...]) -> np.ndarray | None:
    """visual/search_unit.npy memory-mapped, when it was made by this version from today's features; else None."""
    try:
        record = files.require_fresh(artifacts.search_unit_manifest, "search.py", artifacts.data_dir)
        unit = np.load(artifacts.search_unit_vectors, mmap_mode="r")
    except (UserError, OSError, ValueError, KeyError):
        return None  # absent, stale or damaged
    return unit if record.get("built_by") == UNIT_VERSION and unit.shape == shape and unit.dtype == np.float32 \
        else None


def save_unit_vectors(artifacts: art.Artifacts, index: VisualIndex) -> np.ndarray:
    """The features as unit float32 rows (index.unit_vectors), written to visual/search_unit.npy with a manifest
    of the features they come from; kept in memory only where the data dir is read-only (or the disk full)."""
    unit = index.unit_vectors()
    try:
        with files.atomic_outputs(artifacts.search_unit_manifest, [artifacts.visual_features], built_by=UNIT_VERSION,
                                  root=artifacts.data_dir) as outputs:
            with open(outputs(artifacts.search_unit_vectors), "wb") as fh:
                np.save(fh, unit)
    except OSError:
        pass
    return unit


def saved_unit_vectors(artifacts: art.Artifacts, index: VisualIndex) -> np.ndarray:
    """The image vectors as unit float32 rows for exact search, memory-mapped from visual/search_unit.npy.

    visual_features.py writes them with the features (for catalogues search answers exactly), so a fresh
    process, such as each search.py, reads them instead of converting the float16 features (0.5-1 s at
    105k x 1280, and seconds more to write them: bench/bench_search.py --first-answer). Absent or stale
    (features from before they were written, or `search.py --index exact` on a larger catalogue): made and
    saved here, once.
    """
    unit = fresh_unit_vectors(artifacts, index.features.shape)
    return unit if unit is not None else save_unit_vectors(artifacts, index)


def write_search_vectors(artifacts: art.Artifacts, limit: int) -> str:
    """visual_features.py's last step: save the unit vectors exact search reads, unless they are up to date.

    Only for catalogues of up to `limit` images (fde.ann.EXACT_LIMIT: those search.py answers exactly), so
    that the first photo search reads them instead of converting and writing them (seconds at 105k).
    Beyond, search uses the ANN index, and `search.py --index exact` makes them on its first query."""
    ids, features = load_features(artifacts, mmap=True)
    if ids.shape[0] > limit:
        return f"not needed (over {limit:,} images: search uses the ANN index)"
    if fresh_unit_vectors(artifacts, features.shape) is not None:
        return "up to date"
    save_unit_vectors(artifacts, VisualIndex(ids, features))
    return "written"
