"""The ANN index of fde/ann.py on synthetic vectors: build time, memory, query latency, recall@12 against exact.

The vectors are what the index stores for a real catalogue: 256-d float32 unit vectors (the image
vectors projected by fde.ann.projection). They come from 1,000 Gaussian centres plus 0.8 x noise, made
block by block from fixed seeds, so the exact answers can be computed again block by block without a
second copy in memory. Queries: 1,000 more from the same distribution, answered one at a time (median
and p99 latency of candidates + exact re-ranking, as search.py does), recall@12 against a blockwise
exact top 12. Run one size per process (peak memory is per process):

    python bench/bench_search.py --n 1000000
    python bench/bench_search.py --n 5000000 --candidates 120,480,1920
    python bench/bench_search.py --exact      # exact search at 1280-d: where it crosses 100 ms
    python bench/bench_search.py --first-answer --data-dir data --images-dir images [--baseline ../main]

--first-answer makes a 105,542-article catalogue from a demo data dir (its articles repeated under new
ids, their image vectors with a little noise, the demo's visual_meta.json and ONNX export) and times,
each in a fresh process: the first text answer and the first photo answer, loading included. With
--baseline, another checkout's code (main's, say) is timed too, alternating with this one, with the ratio.

Each run appends its table row to bench/results/bench_search.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fde import ann
from fde.cli import Stopwatch, peak_rss_mb

K = 12
DIM = ann.PROJECTED_DIM
CENTRES = 1000
BLOCK = ann.ADD_BLOCK
OUT = Path(__file__).resolve().parent / "results" / "bench_search.md"


def centres() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((CENTRES, DIM), dtype=np.float32)


def unit_rows(seed: int, n: int, centre: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([1, seed])
    x = centre[rng.integers(0, CENTRES, n)] + 0.8 * rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Synthetic:
    """n synthetic unit vectors, made block by block (fde.ann.AnnIndex.build reads them in ADD_BLOCK slices)."""

    def __init__(self, n: int):
        self.shape = (n, DIM)
        self.centre = centres()

    def __getitem__(self, rows: slice) -> np.ndarray:
        start = rows.start or 0
        assert start % BLOCK == 0, "read in ADD_BLOCK slices"
        return unit_rows(start // BLOCK, min(BLOCK, self.shape[0] - start), self.centre)

    def blocks(self):
        for start in range(0, self.shape[0], BLOCK):
            yield start, self[start:start + BLOCK]


def exact_top(data: Synthetic, queries: np.ndarray) -> np.ndarray:
    best_s = np.full((queries.shape[0], K), -np.inf, dtype=np.float32)
    best_i = np.zeros((queries.shape[0], K), dtype=np.int64)
    for start, block in data.blocks():
        s = queries @ block.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.arange(start, start + block.shape[0])[None].repeat(len(queries), 0)], 1)
        keep = np.argpartition(-cand_s, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_i


def ann_run(n: int, n_queries: int, threads: int, candidates: tuple[int, ...] = (ann.RERANK * K,)) -> list[str]:
    """One row per number of candidates re-ranked (efSearch = max(EF_SEARCH, candidates)), from one build."""
    import faiss

    faiss.omp_set_num_threads(threads)
    data = Synthetic(n)
    queries = unit_rows(10_000_000, n_queries, data.centre)
    rss_before = peak_rss_mb()
    clock = Stopwatch()
    index = ann.AnnIndex.build(data, show_progress=True)
    build_s = clock.seconds
    rss_index = peak_rss_mb()
    truth = exact_top(data, queries)
    faiss.omp_set_num_threads(1)  # one query at a time, as a search answers
    rows_out = []
    for count in candidates:
        latencies, hits = [], 0
        for q, want in zip(queries, truth):
            start = time.perf_counter()
            rows = index.candidates(q, count)[0]
            rows = rows[rows >= 0]
            vectors = index.index.reconstruct_batch(rows)  # the full vectors (256-d here: stored whole)
            found = rows[np.argsort(-(vectors @ q), kind="stable")[:K]]
            latencies.append(time.perf_counter() - start)
            hits += len(set(found.tolist()) & set(want.tolist()))
        ms = np.array(latencies) * 1000
        rows_out.append(f"| {n:,} x {DIM} f32 | faiss HNSW M{ann.HNSW_M} efC{ann.EF_CONSTRUCTION}, efSearch "
                        f"{max(ann.EF_SEARCH, count)}, re-rank {count} | {build_s:,.0f} s ({threads} threads) | "
                        f"{rss_index:,.0f} MB (before: {rss_before:,.0f}) | {np.median(ms):.2f} / "
                        f"{np.percentile(ms, 99):.2f} ms | {hits / truth.size:.3f} |")
    return rows_out


def exact_run(sizes=(100_000, 200_000, 400_000), dim: int = 1280, repeats: int = 50) -> list[str]:
    """Exact search at the image vectors' width: numpy float32 matmul + argpartition, one thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        for n in sizes:
            x = rng.standard_normal((n, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            times = []
            for _ in range(repeats):
                q = x[rng.integers(n)]
                start = time.perf_counter()
                s = x @ q
                np.argpartition(-s, K - 1)[:K]
                times.append(time.perf_counter() - start)
            ms = np.array(times) * 1000
            rows.append(f"| exact, {n:,} x {dim} f32, 1 thread | {np.median(ms):.1f} / "
                        f"{np.percentile(ms, 99):.1f} ms |")
            del x
    return rows


FIRST_ANSWER = """
import sys, time
start = time.perf_counter()
from fde.artifacts import Artifacts
from fde.search import Search
engine = Search(Artifacts(sys.argv[1], sys.argv[2]))
if sys.argv[3] == "text":
    found = engine.by_text("dark blue trousers")
else:
    found = engine.by_photo(sys.argv[4])
print(f"{time.perf_counter() - start:.2f}", found.height)
"""


def grow_catalogue(data_dir: str, images_dir: str, root: Path, n: int = 105_542):
    """An n-article catalogue under root from a demo data dir: its articles repeated under new ids, their image
    vectors with a little noise, its visual_meta.json and ONNX export. Returns (Artifacts, a demo photo)."""
    import json
    import shutil

    import polars as pl

    from fde.artifacts import Artifacts
    from fde.files import atomic_outputs, save_npy, write_json

    demo = Artifacts(data_dir, images_dir)
    big = Artifacts(root / "data", demo.images_dir)
    articles = pl.read_parquet(demo.articles)
    copies = -(-n // articles.height)
    codes = articles["product_code"].unique().sort()
    rank = pl.col("product_code").replace_strict(codes, pl.int_range(codes.len(), eager=True), return_dtype=pl.Int32)
    # copy i of product p gets product code 100000 + i * products + rank(p): ids stay unique and Int32
    grown = pl.concat([articles.with_columns(product_code=100_000 + i * codes.len() + rank)
                       .with_columns(article_id=pl.col("product_code") * 1000 + pl.col("article_id") % 1000)
                       for i in range(copies)]).head(n)
    big.processed_dir.mkdir(parents=True)
    grown.write_parquet(big.articles)
    ids = np.load(demo.visual_article_ids)
    new_id = dict(zip(articles["article_id"].to_list(), range(articles.height)))
    features = np.load(demo.visual_features).astype(np.float32)
    rng = np.random.default_rng(0)
    per_copy = grown["article_id"].to_numpy().reshape(-1)
    positions = np.array([new_id[int(a)] for a in ids])
    all_ids, all_features = [], []
    for i in range(copies):
        block = per_copy[i * articles.height:(i + 1) * articles.height]
        keep = positions < block.shape[0]
        all_ids.append(block[positions[keep]])
        all_features.append(features[keep] + 0.05 * rng.standard_normal(features[keep].shape, dtype=np.float32))
    all_ids = np.concatenate(all_ids).astype(np.int32)
    all_features = np.concatenate(all_features)
    order = np.argsort(all_ids)
    meta = json.loads(demo.visual_meta.read_text())
    meta.update(count=int(n), missing_article_ids=[], unreadable=[])
    # recorded as visual_features.py records them (visual/manifest.json), which every reader checks
    with atomic_outputs(big.manifest("visual_features.py"), [big.articles], "bench_search.py grow_catalogue",
                        big.data_dir) as out:
        save_npy(all_ids[order], out(big.visual_article_ids))
        save_npy(all_features[order].astype(np.float16), out(big.visual_features))
        write_json(meta, out(big.visual_meta))
    shutil.copytree(demo.visual_onnx_dir, big.visual_onnx_dir)
    return big, str(demo.image(int(ids[0])))


def first_answer(data_dir: str, images_dir: str, n: int = 105_542, repeats: int = 5,
                 baseline: str | None = None) -> list[str]:
    """Seconds to the first text and photo answers of a fresh process on an n-article catalogue.

    baseline: another checkout of the project (e.g. main's), timed on the same catalogue in the same run,
    alternating with this one, so that the ratio holds on a noisy machine."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="search_first_"))
    big, photo = grow_catalogue(data_dir, images_dir, root, n)
    trees = {"this tree": str(Path(__file__).resolve().parents[1])}
    if baseline:
        trees["baseline " + baseline] = str(Path(baseline).resolve())
    rows = []
    for kind in ("text", "photo"):
        seconds = {label: [] for label in trees}
        for i in range(repeats):  # this tree's first run builds what it saves (text index, unit vectors): apart
            for label, tree in list(trees.items())[::-1 if i % 2 else 1]:  # who goes first alternates
                done = subprocess.run([sys.executable, "-c", FIRST_ANSWER, str(big.data_dir), str(big.images_dir),
                                       kind, photo], capture_output=True, text=True, check=True,
                                      env={**os.environ, "PYTHONPATH": tree}, cwd=tree)
                seconds[label].append(float(done.stdout.split()[0]))
        medians = {label: float(np.median(times[1:])) for label, times in seconds.items()}
        cells = [f"{label}: {times[0]:.2f} s first run, {medians[label]:.2f} s median of {repeats - 1} later"
                 for label, times in seconds.items()]
        ratio = f" | {medians[list(trees)[1]] / medians['this tree']:.1f}x" if baseline else ""
        rows.append(f"| first {kind} answer, fresh process, {n:,} articles | " + " | ".join(cells) + ratio + " |")
    shutil.rmtree(root)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="threads that build the graph")
    parser.add_argument("--candidates", default=str(ann.RERANK * K),
                        help="candidates re-ranked per query, comma-separated: one row each from the same build "
                             "(search.py uses %(default)s; e.g. 120,480,1920 to see what recall costs at 5M)")
    parser.add_argument("--exact", action="store_true", help="time exact search at 1280-d instead")
    parser.add_argument("--first-answer", action="store_true", help="time the first answers on a 105k catalogue")
    parser.add_argument("--data-dir", default="data", help="--first-answer: a demo data dir with visual features")
    parser.add_argument("--images-dir", default="images")
    parser.add_argument("--baseline", help="--first-answer: another checkout (e.g. main's) timed in the same run")
    args = parser.parse_args()
    if args.first_answer:
        lines = first_answer(args.data_dir, args.images_dir, baseline=args.baseline)
    else:
        lines = exact_run() if args.exact else ann_run(args.n, args.queries, args.threads,
                                                      tuple(int(c) for c in args.candidates.split(",")))
    print("\n".join(lines))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
