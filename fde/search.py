"""Search the catalogue from a photo or from words, with filters.

- `SearchCatalogue`: the searchable articles (names, type, colour, index group, median price and its
  band) and a BM25 index of their words, built from processed/ by data_optim.py (`prepare`) and saved
  under search/ with a manifest; a change to articles.parquet or transactions.parquet rebuilds it on
  the next search.
- `PhotoEmbedder`: a user's photo through exactly the catalogue's recipe, read from visual_meta.json
  (backbone, verified weights, input size, fit, runtime): the same decoding and fit as
  visual_features.py (fde.images), the same network: its ONNX export in ONNX Runtime without torch
  (fde.pretrained), or torch (fde.backbones) when the catalogue was embedded in torch; plus the EXIF
  rotation a phone photo needs.
- `Search`: both, over the catalogue's image vectors (fde.visual_index): exact cosine over unit vectors
  that visual_features.py saved (fde.visual_index.saved_unit_vectors, memory-mapped), or the ANN index
  (fde.ann); filters, one article
  per product on request, and a short reason per result.

Text scoring is lexical (BM25 over product name, type, colour, pattern, department, index group and
description, with plurals folded); bench/search_quality.py measures it and a static word-embedding
model (wordllama), alone and fused three ways, on queries made from the catalogue's own attributes
(README, "Search"): no fusion helped the catalogue's words, so none is used.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse

from fde import ann, files, pretrained
from fde import artifacts as art
from fde.errors import UserError
from fde.ids import format_article_id
from fde.images import DEFAULT_FIT, INPUT_SIZE, load_photo
from fde.visual_index import VisualIndex, normalize, saved_unit_vectors

DEFAULT_K = 12
INDEX_MODES = ("auto", "exact", "ann")  # auto: exact up to ann.EXACT_LIMIT image vectors, the ANN index beyond
MAX_K = 1000
PRICE_BANDS = ("low", "mid", "high")  # thirds of the median prices within each product type
# Filters on catalogue columns: the option (CLI --index-group, app ?index_group=) -> the column.
FILTER_COLUMNS = {"index_group": "index_group_name", "product_type": "product_type_name",
                  "colour": "colour_group_name"}
# The words of an article, and how much each field counts (name, type and colour are what people type).
TEXT_FIELDS = {"prod_name": 2, "product_type_name": 2, "colour_group_name": 2, "perceived_colour_master_name": 1,
               "graphical_appearance_name": 1, "department_name": 1, "index_group_name": 1, "detail_desc": 1}
FIELD_WORDS = {"prod_name": "name", "product_type_name": "type", "colour_group_name": "colour",
               "perceived_colour_master_name": "colour", "graphical_appearance_name": "pattern",
               "department_name": "department", "index_group_name": "index group", "detail_desc": "description"}
BM25_K1, BM25_B = 1.2, 0.75
MAX_QUERY_CHARS = 2000  # a longer query is cut here (and said so): the words beyond add nothing findable
INDEX_VERSION = "bm25-plural-v2"  # change it whenever build_text_index changes what it writes
WORD = re.compile(r"[a-z0-9]+")
# Adjectives people type for the catalogue's pattern names (graphical_appearance_name: Stripe, Check, Dot...)
SAME_WORD = {"striped": "stripe", "checked": "check", "checkered": "check", "dotted": "dot", "spotted": "dot",
             "printed": "print", "embroidered": "embroidery", "denims": "denim"}


def words(text: str | None) -> list[str]:
    """Lower-case words, plurals folded (trousers -> trouser, dresses -> dress): the same for articles and queries."""
    out = []
    for word in WORD.findall(str(text or "").lower()):
        word = SAME_WORD.get(word, word)
        if len(word) > 4 and word.endswith("sses"):
            word = word[:-2]
        elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


@dataclass(frozen=True)
class Filters:
    """What a search keeps: None means any. hide_colourways keeps the best article of each product."""

    index_group: str | None = None
    product_type: str | None = None
    colour: str | None = None
    price_band: str | None = None
    hide_colourways: bool = False

    def active(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def price_bands(articles: pl.DataFrame, transactions: pl.LazyFrame | None) -> pl.DataFrame:
    """article_id, price (median paid) and price_band (low/mid/high third within its product type); null: never sold."""
    if transactions is None:
        return articles.select("article_id").with_columns(price=pl.lit(None, pl.Float32),
                                                          price_band=pl.lit(None, pl.String))
    median = transactions.group_by("article_id").agg(price=pl.col("price").median().cast(pl.Float32)).collect()
    priced = articles.select("article_id", "product_type_name").join(median, on="article_id", how="left")
    share = ((pl.col("price").rank("average") - 0.5) / pl.col("price").count()).over("product_type_name")
    band = (pl.when(pl.col("price").is_null()).then(None)
            .when(share <= 1 / 3).then(pl.lit("low"))
            .when(share <= 2 / 3).then(pl.lit("mid")).otherwise(pl.lit("high")))
    return priced.select("article_id", "price", price_band=band)


def build_text_index(articles: pl.DataFrame) -> tuple[sparse.csc_matrix, dict[str, int]]:
    """BM25 weight of every (article, word): idf * tf (k1 + 1) / (tf + k1 (1 - b + b len / mean len)).

    An article's words are its fields' words, each field repeated by its weight (TEXT_FIELDS). Each distinct
    value is split into words once: categories repeat across the catalogue, descriptions across colourways.
    """
    columns = [c for c in TEXT_FIELDS if c in articles.columns]
    weights = [TEXT_FIELDS[c] for c in columns]
    vocabulary: dict[str, int] = {}
    word_ids: dict[str | None, list[int]] = {}

    def ids_of(value: str | None) -> list[int]:
        found = word_ids.get(value)
        if found is None:
            found = word_ids[value] = [vocabulary.setdefault(w, len(vocabulary)) for w in words(value)]
        return found

    cols: list[int] = []
    lengths = np.zeros(articles.height, dtype=np.int64)
    for i, row in enumerate(articles.select(pl.col(columns).cast(pl.String)).iter_rows()):
        start = len(cols)
        for value, weight in zip(row, weights):
            cols.extend(ids_of(value) * weight)
        lengths[i] = len(cols) - start
    n = articles.height
    rows = np.repeat(np.arange(n), lengths)
    tf = sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, np.asarray(cols, dtype=np.int64))),
                           shape=(n, len(vocabulary)))
    tf.sum_duplicates()
    lengths = np.asarray(tf.sum(axis=1)).ravel()
    norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(lengths.mean(), 1e-9))
    df = np.bincount(tf.indices, minlength=len(vocabulary))
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    row_of = np.repeat(np.arange(n), np.diff(tf.indptr))
    tf.data = idf[tf.indices] * tf.data * (BM25_K1 + 1) / (tf.data + norm[row_of])
    return tf.tocsc(), vocabulary


class SearchCatalogue:
    """The searchable articles (row i of `articles` is row i of the text index) and their BM25 index.

    Saved in two parts, each with its manifest: the articles with their price bands (needed by every
    search) and the text index (only text search loads it). data_optim.py builds both (`prepare`); a
    search builds a missing or stale part itself (a text search the index, ~1 s at 105k articles)."""

    COLUMNS = ("article_id", "product_code", "prod_name", "product_type_name", "colour_group_name",
               "perceived_colour_master_name", "graphical_appearance_name", "department_name", "index_group_name")

    def __init__(self, articles: pl.DataFrame, text: tuple[sparse.csc_matrix, dict[str, int]] | None = None,
                 artifacts: art.Artifacts | None = None):
        self.articles = articles
        self._text = text
        self.artifacts = artifacts
        self.article_ids = articles["article_id"].to_numpy().astype(np.int32)
        self.codes = articles["product_code"].to_numpy().astype(np.int64)

    @staticmethod
    def raw_articles(artifacts: art.Artifacts) -> pl.DataFrame:
        return art.read_parquet(artifacts.articles, artifacts.command("data_optim.py")).sort("article_id")

    @classmethod
    def build(cls, artifacts: art.Artifacts) -> SearchCatalogue:
        """The articles from processed/articles.parquet (and transactions.parquet for prices), in memory."""
        raw = cls.raw_articles(artifacts)
        sold = pl.scan_parquet(artifacts.transactions) if artifacts.transactions.exists() else None
        keep = [c for c in cls.COLUMNS if c in raw.columns]
        articles = (raw.select(keep).with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String))
                    .join(price_bands(raw, sold), on="article_id", how="left", maintain_order="left"))
        return cls(articles, None, artifacts)

    def save(self, artifacts: art.Artifacts) -> None:
        """The articles and their manifest (files.atomic_outputs)."""
        with files.atomic_outputs(artifacts.search_manifest, catalogue_inputs(artifacts), built_by=INDEX_VERSION,
                                  root=artifacts.data_dir) as outputs:
            self.articles.write_parquet(outputs(artifacts.search_catalogue))

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> SearchCatalogue:
        """The saved articles when they are current, else built again (and saved where the data dir is writable)."""
        if is_current(artifacts):
            return cls(pl.read_parquet(artifacts.search_catalogue), None, artifacts)
        catalogue = cls.build(artifacts)
        try:
            catalogue.save(artifacts)
        except OSError:
            pass  # a read-only data dir: search works from memory, and builds again next time
        return catalogue

    @property
    def text(self) -> tuple[sparse.csc_matrix, dict[str, int]]:
        """The BM25 index and its vocabulary: the saved ones when current, else built now and saved."""
        if self._text is None:
            artifacts = self.artifacts
            if text_is_current(artifacts):
                self._text = (sparse.load_npz(artifacts.search_text_index),
                              json.loads(artifacts.search_vocabulary.read_text()))
            else:
                self._text = build_text_index(self.raw_articles(artifacts))
                try:
                    with files.atomic_outputs(artifacts.search_text_manifest, [artifacts.articles],
                                              built_by=INDEX_VERSION, root=artifacts.data_dir) as outputs:
                        with open(outputs(artifacts.search_text_index), "wb") as fh:
                            sparse.save_npz(fh, self._text[0])
                        outputs(artifacts.search_vocabulary).write_text(json.dumps(self._text[1]))
                except OSError:
                    pass  # read-only: built again by the next process
            if self._text[0].shape[0] != len(self):
                raise UserError(f"{artifacts.search_dir} does not match {artifacts.articles}: delete it and search "
                                f"again")
        return self._text

    @property
    def text_index(self) -> sparse.csc_matrix:
        return self.text[0]

    @property
    def vocabulary(self) -> dict[str, int]:
        return self.text[1]

    def __len__(self) -> int:
        return self.articles.height

    def values(self, option: str) -> list[str]:
        """The valid values of a filter, sorted."""
        if option == "price_band":
            return list(PRICE_BANDS)
        column = FILTER_COLUMNS[option]
        if column not in self.articles.columns:
            return []
        return sorted(self.articles[column].drop_nulls().unique().to_list())

    def resolve(self, filters: Filters) -> Filters:
        """The filters with each value spelled as in the catalogue (any case); UserError listing the valid ones."""
        spelled = {}
        for option, value in filters.active().items():
            if option == "hide_colourways":
                continue
            valid = self.values(option)
            found = next((v for v in valid if v.lower() == str(value).strip().lower()), None)
            if found is None:
                flag = "--" + option.replace("_", "-")
                raise UserError(f"{flag} {value!r} is not in the catalogue: choose one of " + ", ".join(valid)
                                if valid else f"{flag}: this catalogue has no {option.replace('_', ' ')} values")
            spelled[option] = found
        return Filters(**{**filters.__dict__, **spelled})

    def mask(self, filters: Filters) -> np.ndarray:
        """Rows that pass the filters (values as resolve() spells them)."""
        keep = pl.repeat(True, pl.len())  # a column as long as the catalogue, also without filters
        for option, value in filters.active().items():
            if option in FILTER_COLUMNS:
                keep = keep & (pl.col(FILTER_COLUMNS[option]) == value)
            elif option == "price_band":
                keep = keep & (pl.col("price_band") == value)
        return self.articles.select(keep.fill_null(False).alias("keep"))["keep"].to_numpy().astype(bool)

    def text_scores(self, query: str) -> tuple[np.ndarray, list[str]]:
        """BM25 score of every article for the query, and the query's words the catalogue knows."""
        known = [w for w in dict.fromkeys(words(query)) if w in self.vocabulary]
        if not known:
            return np.zeros(len(self), dtype=np.float32), []
        columns = self.text_index[:, [self.vocabulary[w] for w in known]]
        return np.asarray(columns.sum(axis=1), dtype=np.float32).ravel(), known

    def why_text(self, row: int, known: list[str]) -> str:
        """Which of the query's words an article has, and where: 'dark, blue: colour · trouser: type'."""
        article = self.articles.row(row, named=True)
        found: dict[str, list[str]] = {}
        for column, label in FIELD_WORDS.items():
            if column == "detail_desc":
                continue
            have = set(words(article.get(column)))
            for word in known:
                if word in have and not any(word in ws for ws in found.values()):
                    found.setdefault(label, []).append(word)
        parts = [f"{', '.join(ws)}: {label}" for label, ws in found.items()]
        rest = [w for w in known if not any(w in ws for ws in found.values())]
        if rest:
            parts.append(f"{', '.join(rest[:6])}: description")
        return " · ".join(parts)


def prepare(artifacts: art.Artifacts) -> int:
    """Build and save the search catalogue and its text index unless they are current; return the articles.

    data_optim.py calls it after writing processed/, so that the first search of a new data dir answers
    at once instead of first making the price bands from every transaction and the BM25 index (about 3 s
    at 105k articles and 31.8M transactions). Search still builds whatever is missing or stale itself.
    """
    catalogue = SearchCatalogue.load(artifacts)
    catalogue.text  # noqa: B018 (the property builds and saves the index unless it is current)
    return len(catalogue)


def catalogue_inputs(artifacts: art.Artifacts) -> list[Path]:
    return [p for p in (artifacts.articles, artifacts.transactions) if p.exists()]


def saved_and_current(manifest: Path, inputs: list[Path], artifacts: art.Artifacts) -> bool:
    """Outputs recorded in the manifest exist, are whole, and were built from these inputs by this version."""
    try:
        record = files.require_fresh(manifest, "search.py", artifacts.data_dir)
    except (UserError, OSError, ValueError, KeyError):
        return False
    wanted = {files.relative(p, artifacts.data_dir) for p in inputs}
    return record.get("built_by") == INDEX_VERSION and set(record.get("inputs", {})) == wanted


def is_current(artifacts: art.Artifacts) -> bool:
    """The saved search catalogue (articles and price bands) is current."""
    return saved_and_current(artifacts.search_manifest, catalogue_inputs(artifacts), artifacts)


def text_is_current(artifacts: art.Artifacts) -> bool:
    """The saved text index is current (built from today's articles.parquet by this version)."""
    return saved_and_current(artifacts.search_text_manifest, [artifacts.articles], artifacts)


def top_rows(scores: np.ndarray, keep: np.ndarray, k: int, codes: np.ndarray | None = None) -> np.ndarray:
    """Rows of the k best scores among `keep` (ties by row), one per product code when codes are given."""
    candidates = np.flatnonzero(keep & np.isfinite(scores))
    if codes is None and candidates.shape[0] > k:
        candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    if codes is not None:
        _, first = np.unique(codes[order], return_index=True)
        order = order[np.sort(first)]
    return order[:k]


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise UserError(f"--k {k}: give a number of results between 1 and {MAX_K}")


RESULT_SCHEMA = {"rank": pl.UInt16, "article_id": pl.Int32, "score": pl.Float32, "why": pl.String}


class PhotoEmbedder:
    """A photo as the catalogue's vectors were made: visual_meta.json's backbone, weights, input size, fit, runtime."""

    def __init__(self, artifacts: art.Artifacts, threads: int = 0):
        command = artifacts.command("visual_features.py")
        meta = art.load_damaged(artifacts.visual_meta, command, lambda path: json.loads(path.read_text()))
        try:
            backbone, recorded = meta["backbone"], dict(meta["weights"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{artifacts.visual_meta} is damaged (no backbone or weights): rerun `{command}`") from None
        if backbone not in pretrained.NETWORKS:
            raise UserError(f"{artifacts.visual_meta} names an unknown backbone {backbone!r}: rerun `{command}`")
        path = recorded.get("file")
        if path and Path(path).is_file():
            weights = pretrained.verify(backbone, Path(path), "visual_meta.json")
        else:
            weights = pretrained.find_weights(backbone, download=False, show_progress=False)
        if weights.sha256 != recorded.get("sha256"):
            raise UserError(f"the {backbone} weights here ({weights.path}) are not those the catalogue was embedded "
                            f"with (sha256 {str(recorded.get('sha256'))[:12]}): install those, or rerun `{command}`")
        self.size = int(meta.get("input_size", INPUT_SIZE))
        self.fit = meta.get("fit", DEFAULT_FIT)
        self.dim = int(meta.get("dim", pretrained.NETWORKS[backbone]["dim"]))
        runtimes = meta.get("runtime") or []
        if any(r.startswith("onnxruntime") for r in runtimes) and pretrained.onnx_available():
            onnx = pretrained.onnx_path(weights, artifacts.visual_onnx_dir)
            if not onnx.exists():  # torch only to export the network once (visual_features.py has, normally)
                from fde import backbones
                onnx = backbones.onnx_model(weights, artifacts.visual_onnx_dir)
            self.runtime = pretrained.OnnxEmbedder(onnx, threads)
        else:  # embedded in torch: searched in torch (seconds to import)
            from fde import backbones
            precision = "bf16" if any("bfloat16" in r for r in runtimes) else "fp32"
            self.runtime = backbones.make_runtime(weights, backbones.pick_device("cpu"), precision, "torch")
        self.backbone = backbone

    def __call__(self, source, name: str = "the photo") -> np.ndarray:
        """The photo's unit vector (float32, dim), or a UserError saying what is wrong with the file."""
        pixels = load_photo(source, self.size, self.fit, name=name)
        features = self.runtime(np.ascontiguousarray(pixels.transpose(2, 0, 1)[None]))
        return normalize(features)[0]


class Search:
    """Photo and text search over one data dir: the catalogue, its image vectors and the network, each loaded once."""

    def __init__(self, artifacts: art.Artifacts, index: str = "auto"):
        if index not in INDEX_MODES:
            raise UserError(f"unknown index {index!r}: choose {', '.join(INDEX_MODES)}")
        self.artifacts = artifacts
        self.index_mode = index
        self.catalogue = SearchCatalogue.load(artifacts)
        self._visual: tuple[VisualIndex, np.ndarray] | None = None
        self._embedder: PhotoEmbedder | None = None
        self._ann: ann.AnnIndex | None = None
        self._unit: np.ndarray | None = None

    @property
    def visual(self) -> tuple[VisualIndex, np.ndarray]:
        """The image index and, per catalogue row, its row in the image vectors (-1 without an image)."""
        if self._visual is None:
            index = VisualIndex.load(self.artifacts)
            ids = self.catalogue.article_ids
            at = np.clip(np.searchsorted(index.sorted_ids, ids), 0, max(len(index) - 1, 0))
            found = (index.sorted_ids[at] == ids) if len(index) else np.zeros(ids.shape, bool)
            self._visual = index, np.where(found, index.order[at] if len(index) else -1, -1)
        return self._visual

    @property
    def unit_vectors(self) -> np.ndarray:
        """Exact search's unit image vectors (saved_unit_vectors), loaded on first use."""
        if self._unit is None:
            self._unit = saved_unit_vectors(self.artifacts, self.visual[0])
        return self._unit

    def uses_ann(self) -> bool:
        """Whether photo queries go through the ANN index (INDEX_MODES)."""
        return self.index_mode == "ann" or (self.index_mode == "auto" and len(self.visual[0]) > ann.EXACT_LIMIT)

    @property
    def ann_index(self) -> ann.AnnIndex:
        """The saved ANN index of the image vectors, built (and saved) on first use when absent or stale."""
        if self._ann is None:
            self._ann = ann.load_or_build(self.artifacts, ann.UnitRows(self.visual[0].features))
        return self._ann

    def image_scores(self, vector: np.ndarray, keep: np.ndarray, k: int, one_per_product: bool) -> np.ndarray:
        """Cosine of each catalogue row's image with the vector (-inf: no image, or not scored).

        Exact: every row. ANN: the index's candidates, scored exactly from the mapped features; when the
        filters leave fewer than k of them (or k products), every row the filters keep is scored exactly.
        """
        index, rows = self.visual
        has = rows >= 0
        scores = np.full(len(self.catalogue), -np.inf, dtype=np.float32)
        if not self.uses_ann():
            scores[has] = (self.unit_vectors @ vector)[rows[has]]  # no N x D copy in catalogue order
            return scores
        found = self.ann_index.candidates(vector, ann.RERANK * k)[0]
        catalogue_row = np.full(len(index), -1)
        catalogue_row[rows[has]] = np.flatnonzero(has)
        picked = catalogue_row[found[found >= 0]]
        picked = np.unique(picked[(picked >= 0)])
        enough = keep[picked].sum() >= k and (not one_per_product or
                                               np.unique(self.catalogue.codes[picked[keep[picked]]]).size >= k)
        if not enough:
            picked = np.flatnonzero(keep & has)
        order = np.argsort(rows[picked])  # a memory map reads fastest in row order
        picked = picked[order]
        scores[picked] = normalize(index.features[rows[picked]]) @ vector
        return scores

    @property
    def embedder(self) -> PhotoEmbedder:
        if self._embedder is None:
            self._embedder = PhotoEmbedder(self.artifacts)
        return self._embedder

    def by_photo(self, source, k: int = DEFAULT_K, filters: Filters = Filters(), name: str = "the photo"
                 ) -> pl.DataFrame:
        """The k articles whose photos look most like this one (cosine of the image vectors)."""
        check_k(k)
        filters = self.catalogue.resolve(filters)
        vector = self.embedder(source, name)
        width = self.visual[0].features.shape[1]
        if width != vector.shape[0]:
            raise UserError(f"the image vectors have {width} dimensions, the network {vector.shape[0]}: "
                            f"rerun `{self.artifacts.command('visual_features.py')}`")
        keep = self.catalogue.mask(filters)
        scores = self.image_scores(vector, keep, k, filters.hide_colourways)
        top = top_rows(scores, keep, k, self.catalogue.codes if filters.hide_colourways else None)
        why = [f"looks like the photo (similarity {scores[r]:.2f})" for r in top]
        return self._results(top, scores, why)

    def by_text(self, query: str, k: int = DEFAULT_K, filters: Filters = Filters()) -> pl.DataFrame:
        """The k articles whose words match the query best (BM25); only articles with a matching word."""
        check_k(k)
        filters = self.catalogue.resolve(filters)
        text = str(query or "").strip()
        if not words(text):
            raise UserError("the query has no words: type what you look for, e.g. \"black slim jeans\"")
        scores, known = self.catalogue.text_scores(text[:MAX_QUERY_CHARS])
        scores[scores <= 0] = -np.inf  # an article without any of the words is no answer
        top = top_rows(scores, self.catalogue.mask(filters), k,
                       self.catalogue.codes if filters.hide_colourways else None)
        return self._results(top, scores, [self.catalogue.why_text(int(r), known) for r in top])

    def _results(self, top: np.ndarray, scores: np.ndarray, why: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"rank": np.arange(1, top.shape[0] + 1), "article_id": self.catalogue.article_ids[top],
                             "score": scores[top], "why": why}, schema=RESULT_SCHEMA)

    def details(self, results: pl.DataFrame) -> pl.DataFrame:
        """The results with their catalogue columns (name, type, colour, price band...)."""
        return results.join(self.catalogue.articles, on="article_id", how="left", maintain_order="left")


def results_csv(results: pl.DataFrame) -> str:
    """rank,article_id,score with 10-digit ids: what search.py prints."""
    lines = ["rank,article_id,score"]
    lines += [f"{r},{format_article_id(a)},{s:.4f}" for r, a, s in results.select("rank", "article_id", "score").rows()]
    return "\n".join(lines) + "\n"
