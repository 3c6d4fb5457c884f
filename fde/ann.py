"""An approximate nearest-neighbour index of the image vectors, for catalogues of millions (faiss IVF).

Exact search (one matrix product over every unit vector) stays the default up to EXACT_LIMIT vectors,
where it still answers in under 100 ms on one core (1280-d float32 ~ 200k vectors, measured in
bench/bench_search.py). Beyond it (or with `search.py --index ann`) the index answers:

- what it stores: the unit vectors projected on their top PROJECTED_DIM principal directions (learned
  on the catalogue without centring, so that a dot product there approximates the cosine), in a faiss
  inverted file (IVF) of `list_count(n)` lists, each vector as SCALAR codes (inner product). 5M x 1280-d
  float32 (25.6 GB) does not fit in 24 GB; 5M x 256-d at one byte per dimension is 1.3 GB;
- what a query does: the RERANK x k best candidates from the `nprobe` lists nearest to the query,
  re-ranked exactly with the full vectors, so every score returned is the exact cosine;
- how many lists a query visits (nprobe) is not a constant tuned on one data set: the build measures it
  on the catalogue's own vectors. TUNE_QUERIES of them, drawn at random, are searched exactly (during
  the pass that adds the vectors) and through the index; the smallest nprobe whose recall@12 (each
  query's own row left out) reaches TUNE_RECALL is saved with the index, with the recall measured.
  (bench/bench_search.py compared this with faiss HNSW, which missed the 0.95 target at 5M: 0.703.)

The index, its projection and its settings are saved with the visual artifacts (visual/search_ann.faiss,
visual/search_ann_projection.npy, visual/search_ann_settings.json) with a manifest of the features they
were built from and of ANN_VERSION; search rebuilds them when visual_features.npy or the version changes.
"""
from __future__ import annotations

import json
import math

import numpy as np

from fde import artifacts as art
from fde import files
from fde.visual_index import normalize

EXACT_LIMIT = 200_000
PROJECTED_DIM = 256
LISTS_PER_SQRT_N = 1     # list_count(n) = LISTS_PER_SQRT_N x sqrt(n) lists (bench/bench_search.py --compare)
MIN_LIST = 256           # vectors per list at least: a smaller catalogue gets fewer lists (1 below 512: exhaustive)
TRAIN_PER_LIST = 40      # k-means of the lists learns on this many vectors per list (faiss warns below 39)
SCALAR = "SQ8"           # each stored dimension as one byte; "flat" would keep float32 (4x the memory)
RERANK = 10              # candidates per result re-ranked exactly
K = 12                   # the recall the build tunes for: recall@K
TUNE_QUERIES = 200       # catalogue vectors searched exactly at build time to choose nprobe
TUNE_RECALL = 0.96       # the 0.95 target plus a margin for the sample (200 queries: about +-0.01)
PCA_SAMPLE = 100_000     # rows the projection is learned on
ADD_BLOCK = 100_000
ANN_VERSION = (f"ivf{LISTS_PER_SQRT_N}sqrtn-{SCALAR}-ip-pca{PROJECTED_DIM}-tuned-recall{TUNE_RECALL}"
               f"-q{TUNE_QUERIES}-v2")


def list_count(n: int, per_sqrt_n: float = LISTS_PER_SQRT_N) -> int:
    """The number of inverted lists for n vectors: per_sqrt_n x sqrt(n), each of MIN_LIST vectors at least."""
    return max(1, min(round(per_sqrt_n * math.sqrt(n)), n // MIN_LIST))


def sample_rows(n: int, count: int, seed: int) -> np.ndarray:
    """count distinct rows of n, sorted (a memory map reads fastest in row order)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(count, n), replace=False))


def projection(unit, dim: int = PROJECTED_DIM, seed: int = 0) -> np.ndarray | None:
    """D x dim matrix of the top principal directions of the rows (uncentred), or None when D <= dim."""
    if unit.shape[1] <= dim:
        return None
    sample = np.asarray(unit[sample_rows(unit.shape[0], PCA_SAMPLE, seed)], dtype=np.float64)
    _, vectors = np.linalg.eigh(sample.T @ sample)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim], dtype=np.float32)


class UnitRows:
    """Rows of a (memory-mapped) feature matrix as unit float32, read only when indexed: nothing else is held."""

    def __init__(self, features: np.ndarray):
        self.features = features
        self.shape = features.shape

    def __getitem__(self, rows) -> np.ndarray:
        return normalize(self.features[rows])


class ExactTop:
    """Running top k rows by inner product of a few queries, fed block by block (rows added in order)."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = queries, k
        self.scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        self.rows = np.zeros((queries.shape[0], k), dtype=np.int64)

    def add(self, start: int, block: np.ndarray) -> None:
        scores = np.concatenate([self.scores, self.queries @ block.T], axis=1)
        rows = np.concatenate([self.rows, np.broadcast_to(np.arange(start, start + block.shape[0]),
                                                          (self.queries.shape[0], block.shape[0]))], axis=1)
        keep = np.argpartition(-scores, self.k - 1, axis=1)[:, :self.k]
        self.scores, self.rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)


def recall_without_self(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int) -> float:
    """Mean share of each query's k exact neighbours (its own row left out) among its k found (own row left out)."""
    hits = 0
    for got, want, row in zip(found, truth, own):
        got = [r for r in got.tolist() if r != row and r >= 0][:k]
        want = [r for r in want.tolist() if r != row][:k]
        hits += len(set(got) & set(want))
    return hits / (k * len(own)) if len(own) else 1.0


def rerank(rows: np.ndarray, query: np.ndarray, unit, k: int) -> np.ndarray:
    """The k best of an index's candidate rows (-1 padding dropped) by exact inner product with unit's rows,
    ties by row (read in row order: a memory map reads fastest so)."""
    rows = np.sort(rows[rows >= 0])
    return rows[np.argsort(-(np.asarray(unit[rows], dtype=np.float32) @ query), kind="stable")[:k]]


class AnnIndex:
    """faiss IVF over (projected) unit vectors: candidate rows for a query, re-ranked by the caller.

    settings: nlist, nprobe and how nprobe was chosen (the recall measured on the catalogue's vectors)."""

    def __init__(self, index, project: np.ndarray | None, settings: dict):
        self.index = index
        self.project = project
        self.settings = settings
        self.index.nprobe = int(settings["nprobe"])

    @classmethod
    def build(cls, unit, show_progress: bool = False, threads: int = 0, tune: bool = True,
              lists_per_sqrt_n: float = LISTS_PER_SQRT_N, scalar: str = SCALAR) -> AnnIndex:
        """Learn the projection and the lists, add the rows in blocks (scoring the tuning queries exactly on the
        way: one pass over the vectors), then choose nprobe (tune_nprobe). unit: rows readable by index arrays.

        lists_per_sqrt_n, scalar: other settings, for bench/bench_search.py --compare."""
        import faiss
        from tqdm import tqdm

        if threads:
            faiss.omp_set_num_threads(threads)
        n = unit.shape[0]
        project = projection(unit)
        dim = unit.shape[1] if project is None else project.shape[1]
        nlist = list_count(n, lists_per_sqrt_n)

        def projected(block):
            block = np.asarray(block, dtype=np.float32)
            return np.ascontiguousarray(block if project is None else block @ project)

        quantizer = faiss.IndexFlatIP(dim)
        if scalar == "flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.train(projected(unit[sample_rows(n, TRAIN_PER_LIST * nlist, seed=1)]))
        own = sample_rows(n, TUNE_QUERIES if tune else 0, seed=2)
        queries = np.asarray(unit[own], dtype=np.float32) if own.size else np.zeros((0, unit.shape[1]), np.float32)
        exact = ExactTop(queries, K + 1)  # their own row is one of them
        with tqdm(total=n, unit="vec", desc="ANN index", disable=not show_progress) as bar:
            for start in range(0, n, ADD_BLOCK):
                block = np.asarray(unit[start:start + ADD_BLOCK], dtype=np.float32)
                exact.add(start, block)
                index.add(projected(block))
                bar.update(block.shape[0])
        made = cls(index, project, {"nlist": nlist, "nprobe": nlist, "vectors": n, "scalar": scalar})
        if own.size:
            made.tune_nprobe(unit, own, exact.rows)
        return made

    def tune_nprobe(self, unit, own: np.ndarray, truth: np.ndarray) -> None:
        """The smallest nprobe whose recall@K on these catalogue rows as queries reaches TUNE_RECALL (nlist at most).

        Doubling from 1 until it is reached, then halving the last gap: about 2 log2(nlist) searches of
        TUNE_QUERIES queries, each answered as search.py answers (candidates, re-ranked exactly)."""
        queries = np.asarray(unit[own], dtype=np.float32)
        measured = {}

        def recall(nprobe: int) -> float:
            if nprobe not in measured:
                self.index.nprobe = nprobe
                measured[nprobe] = recall_without_self(self.nearest(queries, K + 1, unit), truth, own, K)
            return measured[nprobe]

        nlist = self.settings["nlist"]
        high = 1
        while high < nlist and recall(high) < TUNE_RECALL:
            high = min(2 * high, nlist)
        low = high // 2  # below TUNE_RECALL (or 0)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if recall(middle) >= TUNE_RECALL else (middle, high)
        self.settings.update(nprobe=high, tune_recall=round(recall(high), 4), tune_target=TUNE_RECALL,
                             tune_queries=int(own.size), tune_k=K,
                             tried={str(p): round(r, 4) for p, r in sorted(measured.items())})
        self.index.nprobe = high

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """Rows of the n best candidates of each query from the index's nprobe lists (-1 pads where fewer)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.project is not None:
            queries = queries @ self.project
        _, rows = self.index.search(np.ascontiguousarray(queries), n)
        return rows

    def nearest(self, queries: np.ndarray, k: int, unit) -> np.ndarray:
        """Rows of each query's k nearest: RERANK x k candidates re-ranked by exact inner products with unit's rows."""
        found = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (query, rows) in enumerate(zip(queries, self.candidates(queries, RERANK * k))):
            best = rerank(rows, query, unit, k)
            found[i, :best.size] = best
        return found

    def save(self, artifacts: art.Artifacts) -> None:
        """The index, its projection and settings, with a manifest of the features they index, appearing together."""
        import faiss

        with files.atomic_outputs(artifacts.search_ann_manifest, [artifacts.visual_features], built_by=ANN_VERSION,
                                  root=artifacts.data_dir) as outputs:
            faiss.write_index(self.index, str(outputs(artifacts.search_ann_index)))
            with open(outputs(artifacts.search_ann_projection), "wb") as fh:
                np.save(fh, np.zeros((0, 0), np.float32) if self.project is None else self.project)
            files.write_json(self.settings, outputs(artifacts.search_ann_settings))

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> AnnIndex | None:
        """The saved index when it was built from today's features by this version (ANN_VERSION), else None."""
        import faiss

        try:
            record = files.require_fresh(artifacts.search_ann_manifest, "search.py --index ann", artifacts.data_dir)
            if record.get("built_by") != ANN_VERSION:
                return None  # another kind of index (an older version's): built again, never read as this one
            settings = json.loads(artifacts.search_ann_settings.read_text())
            project = np.load(artifacts.search_ann_projection)
            return cls(faiss.read_index(str(artifacts.search_ann_index)), project if project.size else None, settings)
        except Exception:  # noqa: BLE001 - absent, stale or damaged: all mean "build it again"
            return None


def load_or_build(artifacts: art.Artifacts, unit, show_progress: bool = False) -> AnnIndex:
    """The saved index, or one built now (and saved where the data dir is writable)."""
    found = AnnIndex.load(artifacts)
    if found is not None and found.index.ntotal == unit.shape[0]:
        return found
    print(f"building the ANN index of {unit.shape[0]:,} image vectors once (saved under {artifacts.visual_dir})",
          flush=True)
    index = AnnIndex.build(unit, show_progress=show_progress)
    try:
        index.save(artifacts)
    except OSError:
        pass  # a read-only data dir: the index serves this process and is built again next time
    return index
