"""The ANN index of fde/ann.py on synthetic vectors: build time, memory, query latency, recall@12 against exact.

The vectors are what the index stores for a real catalogue: 256-d unit vectors (the image vectors
projected by fde.ann.projection). They come from 1,000 Gaussian centres plus 0.8 x noise, written block
by block from fixed seeds as float16 rows of a memory-mapped .npy file (as a catalogue's features are
stored), so the index, the exact answers (blockwise) and the re-ranking read them as search.py does.
Queries: 1,000 more from the same distribution, answered one at a time (median and p99 latency of
candidates + exact re-ranking), recall@12 against the exact top 12. One build per process (peak memory
is per process), then one row per setting of that build:

    python bench/bench_search.py --n 1000000 --settings 4,8,16,32,64          # fde.ann's IVF, more nprobe
    python bench/bench_search.py --n 1000000 --lists-per-sqrt-n 4 --scalar flat
    python bench/bench_search.py --n 1000000 --kind hnsw --settings 120,480,1920  # the HNSW it replaced
    python bench/bench_search.py --n 5000000 --settings 2,4,8,16
    python bench/bench_search.py --exact      # exact search at 1280-d: where it crosses 100 ms
    python bench/bench_search.py --first-answer --data-dir data --images-dir images [--baseline ../main]

--first-answer makes a 105,542-article catalogue from a demo data dir (its articles repeated under new
ids, their image vectors with a little noise, the demo's visual_meta.json and ONNX export) and times,
each in a fresh process: the first text answer and the first photo answer, loading included. With
--baseline, another checkout's code (main's, say) is timed too, alternating with this one, with the
ratio; each checkout answers on its own copy of the catalogue, finished as its data_optim.py and
visual_features.py finish one (this tree's make the search catalogue with its text index and the unit
vectors exact search reads: timed, reported apart).

Each run appends its table row to bench/results/bench_search.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fde import ann
from fde.cli import Stopwatch, peak_rss_mb

K = ann.K
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


def synthetic_features(n: int, path: Path) -> np.ndarray:
    """n synthetic vectors as a catalogue stores them: float16 rows of a .npy file, written block by block and
    memory-mapped (so that the index, the exact answers and the re-ranking read them as search.py does)."""
    centre = centres()
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, BLOCK):
        features[start:start + BLOCK] = unit_rows(start // BLOCK, min(BLOCK, n - start), centre)
    features.flush()
    del features
    return np.load(path, mmap_mode="r")


def exact_top(unit: ann.UnitRows, queries: np.ndarray) -> np.ndarray:
    top = ann.ExactTop(queries, K)
    for start in range(0, unit.shape[0], BLOCK):
        top.add(start, unit[start:start + BLOCK])
    return top.rows


class Hnsw(ann.AnnIndex):
    """faiss HNSW (M16, efConstruction 100: the index before the IVF), answering through AnnIndex.nearest."""

    M, EF_CONSTRUCTION, EF_SEARCH = 16, 100, 128

    def __init__(self, unit, show_progress: bool):
        import faiss
        from tqdm import tqdm

        self.index, self.project, self.settings = faiss.IndexHNSWFlat(DIM, self.M, faiss.METRIC_INNER_PRODUCT), None, {}
        self.index.hnsw.efConstruction = self.EF_CONSTRUCTION
        self.ef_search = self.EF_SEARCH
        for start in tqdm(range(0, unit.shape[0], BLOCK), desc="HNSW", disable=not show_progress):
            self.index.add(np.ascontiguousarray(unit[start:start + BLOCK]))

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, n))
        return self.index.search(np.ascontiguousarray(np.atleast_2d(queries)), n, params=params)[1]


def ann_run(n: int, n_queries: int, threads: int, kind: str = "ivf", lists_per_sqrt_n: float = ann.LISTS_PER_SQRT_N,
            scalar: str = ann.SCALAR, settings: tuple[int, ...] = (), work: Path | None = None) -> list[str]:
    """Build one index on n synthetic vectors, then one row per setting from that build.

    kind ivf (fde.ann.AnnIndex): the nprobe the build chose, then each of `settings` as nprobe.
    kind hnsw: each of `settings` as the number of candidates (efSearch = max(128, candidates))."""
    import shutil
    import tempfile

    import faiss

    faiss.omp_set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="bench_ann_", dir=work))
    try:
        unit = ann.UnitRows(synthetic_features(n, work / "features.npy"))
        queries = unit_rows(10_000_000, n_queries, centres())
        rss_before = peak_rss_mb()
        clock = Stopwatch()
        index = Hnsw(unit, True) if kind == "hnsw" else ann.AnnIndex.build(
            unit, show_progress=True, lists_per_sqrt_n=lists_per_sqrt_n, scalar=scalar)
        build_s = clock.seconds
        rss_index = peak_rss_mb()
        if kind == "hnsw":
            stored_mb = faiss.serialize_index(index.index).nbytes / 1e6
        else:  # codes and ids of the lists, and the lists' centroids (no serialized copy: 1.3 GB at 5M)
            stored_mb = (n * (index.index.code_size + 8) + index.settings["nlist"] * DIM * 4) / 1e6
        truth = exact_top(unit, queries)
        faiss.omp_set_num_threads(1)  # one query at a time, as a search answers
        if kind == "hnsw":
            runs = [(f"faiss HNSW M{Hnsw.M} efC{Hnsw.EF_CONSTRUCTION}, efSearch {max(Hnsw.EF_SEARCH, c)}, "
                     f"re-rank {c}", c) for c in settings or (ann.RERANK * K,)]
        else:
            nlist, chosen = index.settings["nlist"], index.settings["nprobe"]
            name = f"faiss IVF {nlist:,} lists ({lists_per_sqrt_n:g} sqrt n), {scalar}"
            runs = [(f"{name}, nprobe {chosen} chosen at build (sample recall {index.settings['tune_recall']:.3f})",
                     chosen)] + [(f"{name}, nprobe {p}", p) for p in settings if p != chosen]
        rows_out = []
        for label, setting in runs:
            if kind == "hnsw":
                index.ef_search, count = Hnsw.EF_SEARCH, setting
            else:
                index.index.nprobe, count = setting, ann.RERANK * K
            latencies, found = [], []
            for q in queries:
                start = time.perf_counter()
                found.append(ann.rerank(index.candidates(q[None], count)[0], q, unit, K))  # as search re-ranks
                latencies.append(time.perf_counter() - start)
            ms = np.array(latencies) * 1000
            recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])
            rows_out.append(f"| {n:,} x {DIM} | {label} | {build_s:,.0f} s ({threads} threads) | {rss_index:,.0f} MB "
                            f"(before: {rss_before:,.0f}; index {stored_mb:,.0f} MB) | {np.median(ms):.2f} / "
                            f"{np.percentile(ms, 99):.2f} ms | {recall:.3f} |")
            print(rows_out[-1], flush=True)
        return rows_out
    finally:
        shutil.rmtree(work)


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

# what a checkout's data_optim.py does after processed/, if it does it: the search catalogue and text index
SEARCH_CATALOGUE = """
import sys, time
from fde.artifacts import Artifacts
from fde import search
if not hasattr(search, "prepare"):
    print("-1 not-made-by-this-checkout")
    raise SystemExit
start = time.perf_counter()
search.prepare(Artifacts(sys.argv[1], sys.argv[2]))
print(f"{time.perf_counter() - start:.2f}", "made")
"""

# what a checkout's visual_features.py does after the features, if it does it: the unit vectors search reads
SEARCH_VECTORS = """
import sys, time
from fde.artifacts import Artifacts
try:
    from fde import ann
    from fde.visual_index import write_search_vectors
except ImportError:
    print("-1 not-written-by-this-checkout")
    raise SystemExit
start = time.perf_counter()
status = write_search_vectors(Artifacts(sys.argv[1], sys.argv[2]), ann.EXACT_LIMIT)
print(f"{time.perf_counter() - start:.2f}", status.replace(" ", "-"))
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

    baseline: another checkout of the project (e.g. main's), timed on a copy of the same catalogue in the same run,
    alternating with this one, so that the ratio holds on a noisy machine."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="search_first_"))
    big, photo = grow_catalogue(data_dir, images_dir, root / "grown", n)
    trees = {"this tree": str(Path(__file__).resolve().parents[1])}
    if baseline:
        trees["baseline " + baseline] = str(Path(baseline).resolve())
    # each checkout gets its own copy of the catalogue, as its own visual_features.py leaves it
    catalogues, prepared = {}, {}
    for i, (label, tree) in enumerate(trees.items()):
        copy = root / f"tree{i}" / "data"
        shutil.copytree(big.data_dir, copy)
        catalogues[label] = str(copy)
        said = []
        for what, script in (("search catalogue", SEARCH_CATALOGUE), ("search vectors", SEARCH_VECTORS)):
            done = subprocess.run([sys.executable, "-c", script, str(copy), str(big.images_dir)],
                                  capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": tree},
                                  cwd=tree)
            seconds, status = done.stdout.split()[:2]
            said.append(f"{what} {status.replace('-', ' ')}" + (f" in {seconds} s" if seconds != "-1" else ""))
        prepared[label] = ", ".join(said)
    rows = []
    for kind in ("photo", "text"):  # a photo first: the very first search on the catalogue
        seconds = {label: [] for label in trees}
        for i in range(repeats):  # a first run builds what it saves (text index, perhaps unit vectors): apart
            for label, tree in list(trees.items())[::-1 if i % 2 else 1]:  # who goes first alternates
                done = subprocess.run([sys.executable, "-c", FIRST_ANSWER, catalogues[label], str(big.images_dir),
                                       kind, photo], capture_output=True, text=True, check=True,
                                      env={**os.environ, "PYTHONPATH": tree}, cwd=tree)
                seconds[label].append(float(done.stdout.split()[0]))
        medians = {label: float(np.median(times[1:])) for label, times in seconds.items()}
        cells = [f"{label} ({prepared[label]}): {times[0]:.2f} s first run, {medians[label]:.2f} s median of "
                 f"{repeats - 1} later" for label, times in seconds.items()]
        other = list(trees)[1] if baseline else None
        ratio = (f" | first run {seconds[other][0] / seconds['this tree'][0]:.1f}x, later "
                 f"{medians[other] / medians['this tree']:.1f}x" if baseline else "")
        rows.append(f"| first {kind} answer, fresh process, {n:,} articles | " + " | ".join(cells) + ratio + " |")
        print(rows[-1], flush=True)
    shutil.rmtree(root)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="threads that build the graph")
    parser.add_argument("--kind", choices=("ivf", "hnsw"), default="ivf",
                        help="ivf: fde.ann's index (nprobe chosen at build); hnsw: the HNSW it replaced, to compare")
    parser.add_argument("--lists-per-sqrt-n", type=float, default=ann.LISTS_PER_SQRT_N, help="ivf: lists / sqrt(n)")
    parser.add_argument("--scalar", choices=("SQ8", "flat"), default=ann.SCALAR, help="ivf: how vectors are stored")
    parser.add_argument("--settings", default="",
                        help="comma-separated; ivf: more nprobe values, hnsw: candidates re-ranked (efSearch = "
                             "max(128, candidates)); one row each from the same build")
    parser.add_argument("--work-dir", help="where the synthetic vectors are written (a temporary folder in it)")
    parser.add_argument("--exact", action="store_true", help="time exact search at 1280-d instead")
    parser.add_argument("--first-answer", action="store_true", help="time the first answers on a 105k catalogue")
    parser.add_argument("--data-dir", default="data", help="--first-answer: a demo data dir with visual features")
    parser.add_argument("--images-dir", default="images")
    parser.add_argument("--baseline", help="--first-answer: another checkout (e.g. main's) timed in the same run")
    args = parser.parse_args()
    if args.first_answer:
        lines = first_answer(args.data_dir, args.images_dir, baseline=args.baseline)
    else:
        settings = tuple(int(c) for c in args.settings.split(",") if c)
        lines = exact_run() if args.exact else ann_run(args.n, args.queries, args.threads, args.kind,
                                                      args.lists_per_sqrt_n, args.scalar, settings, args.work_dir)
    print("\n".join(lines))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
