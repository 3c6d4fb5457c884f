"""An approximate nearest-neighbour index of the image vectors, for catalogues of millions (faiss HNSW).

Exact search (one matrix product over every unit vector) stays the default up to EXACT_LIMIT vectors,
where it still answers in under 100 ms on one core (1280-d float32 ~ 200k vectors, measured in
bench/bench_search.py). Beyond it (or with `search.py --index ann`) the index answers:

- what it stores: the unit vectors projected on their top PROJECTED_DIM principal directions (learned
  on the catalogue without centring, so that a dot product there approximates the cosine), float32,
  in a faiss HNSW graph (M=HNSW_M, efConstruction=EF_CONSTRUCTION, inner product). 5M x 1280-d float32
  (25.6 GB) does not fit in 24 GB; 5M x 256-d does (~5.6 GB with the graph);
- what a query does: the graph's RERANK x k best candidates (efSearch=EF_SEARCH), re-ranked exactly
  with the full vectors, so every score returned is the exact cosine.

The index and its projection are saved with the visual artifacts (visual/search_ann.faiss,
visual/search_ann_projection.npy) with a manifest of the features they were built from; search
rebuilds them when visual_features.npy changes.
"""
from __future__ import annotations

import numpy as np

from fde import artifacts as art
from fde import files
from fde.visual_index import normalize

EXACT_LIMIT = 200_000
PROJECTED_DIM = 256
HNSW_M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 128
RERANK = 10          # candidates per result re-ranked exactly
PCA_SAMPLE = 100_000  # rows the projection is learned on
ADD_BLOCK = 100_000
ANN_VERSION = f"hnsw-ip-M{HNSW_M}-efc{EF_CONSTRUCTION}-pca{PROJECTED_DIM}-v1"


def projection(unit: np.ndarray, dim: int = PROJECTED_DIM, seed: int = 0) -> np.ndarray | None:
    """D x dim matrix of the top principal directions of the rows (uncentred), or None when D <= dim."""
    if unit.shape[1] <= dim:
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(unit.shape[0], min(PCA_SAMPLE, unit.shape[0]), replace=False))
    sample = np.asarray(unit[rows], dtype=np.float64)
    _, vectors = np.linalg.eigh(sample.T @ sample)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim], dtype=np.float32)


class UnitRows:
    """Rows of a (memory-mapped) feature matrix as unit float32, read only when sliced: nothing else is held."""

    def __init__(self, features: np.ndarray):
        self.features = features
        self.shape = features.shape

    def __getitem__(self, rows) -> np.ndarray:
        return normalize(self.features[rows])


class AnnIndex:
    """faiss HNSW over (projected) unit vectors: candidate rows for a query, re-ranked by the caller."""

    def __init__(self, index, project: np.ndarray | None):
        self.index = index
        self.project = project

    @classmethod
    def build(cls, unit: np.ndarray, show_progress: bool = False, threads: int = 0) -> AnnIndex:
        """Learn the projection, then add the rows to the graph in blocks (the projected copy is never whole)."""
        import faiss
        from tqdm import tqdm

        if threads:
            faiss.omp_set_num_threads(threads)
        project = projection(unit)
        dim = unit.shape[1] if project is None else project.shape[1]
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        with tqdm(total=unit.shape[0], unit="vec", desc="ANN index", disable=not show_progress) as bar:
            for start in range(0, unit.shape[0], ADD_BLOCK):
                block = np.asarray(unit[start:start + ADD_BLOCK], dtype=np.float32)
                index.add(np.ascontiguousarray(block if project is None else block @ project))
                bar.update(block.shape[0])
        return cls(index, project)

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """Rows of the n best candidates of each query (-1 pads where the graph found fewer)."""
        import faiss

        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.project is not None:
            queries = queries @ self.project
        params = faiss.SearchParametersHNSW(efSearch=max(EF_SEARCH, n))
        _, rows = self.index.search(np.ascontiguousarray(queries), n, params=params)
        return rows

    def save(self, artifacts: art.Artifacts) -> None:
        """The graph and its projection, with a manifest of the features they index, appearing together."""
        import faiss

        with files.atomic_outputs(artifacts.search_ann_manifest, [artifacts.visual_features], built_by=ANN_VERSION,
                                  root=artifacts.data_dir) as outputs:
            faiss.write_index(self.index, str(outputs(artifacts.search_ann_index)))
            with open(outputs(artifacts.search_ann_projection), "wb") as fh:
                np.save(fh, np.zeros((0, 0), np.float32) if self.project is None else self.project)

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> AnnIndex | None:
        """The saved index when it was built from today's features by this version, else None."""
        import faiss

        try:
            record = files.require_fresh(artifacts.search_ann_manifest, "search.py --index ann", artifacts.data_dir)
        except Exception:  # noqa: BLE001 - absent, stale or damaged: all mean "build it again"
            return None
        if record.get("built_by") != ANN_VERSION:
            return None
        project = np.load(artifacts.search_ann_projection)
        return cls(faiss.read_index(str(artifacts.search_ann_index)), project if project.size else None)


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
