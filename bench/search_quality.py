"""How good is the text search, and does a learned words-to-photos map help? Measured on a catalogue.

1. Text search. Queries are made from the catalogue's own attributes: a colour and a product type
   ("dark blue trousers"), or a pattern and a type ("striped dress"); each query once in the catalogue's
   words and once paraphrased with everyday synonyms ("navy pants", "striped frock"). A result is
   relevant when it has every attribute the query names. precision@12 of:
   - lexical: fde.search's BM25 (what search.py runs);
   - semantic: cosine of wordllama's static word embeddings (256-d, weights inside its PyPI wheel,
     loaded offline with cache_dir=<package>, disable_download=True), query vs each article's text;
   - both: reciprocal-rank fusion (k=60) of the two rankings;
   - weighted: BM25 divided by the query's best BM25 score plus w x the semantic cosine, w picked from
     WEIGHTS on one half of the queries and scored on the other half (each half in turn), never on the
     queries it is scored on;
   - gated: the same, but the semantic score counts only for a query with a word the catalogue does not
     know (so a query in the catalogue's words is answered by BM25 alone).
   wordllama is not a dependency of the project: install it to run this part
   (`pip install --target /tmp/wl --no-deps wordllama==0.4.0.post1 tokenizers safetensors toml pydantic
   pydantic-core annotated-types typing-inspection` and pass `--wordllama /tmp/wl`); without it the
   semantic columns are skipped.
2. Words to photos. A ridge regression from each article's TF-IDF text vector to its unit image vector,
   fitted on 80% of the articles; for each held-out article the query is its name and colour
   ("Isa trousers Organic dark blue"), ranked among every article by (a) BM25 alone, (b) the cosine of
   the predicted image vector with the image vectors, (c) both fused. recall@12 of the article itself and
   the share of the 12 results with its product type.

    python bench/search_quality.py --data-dir data --images-dir images [--wordllama /tmp/wl] [--queries 150]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from fde import artifacts as art
from fde.search import SearchCatalogue, words
from fde.visual_index import VisualIndex

K = 12
RRF_K = 60
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)  # semantic weights tried (cross-fitted)
# everyday words for the catalogue's product types and colours (a paraphrase names the same attributes)
TYPE_SYNONYMS = {"Trousers": "pants", "Sweater": "jumper", "T-shirt": "tee", "Dress": "frock", "Shorts": "short pants",
                 "Jacket": "coat", "Blouse": "shirt", "Skirt": "midi", "Hoodie": "hooded sweatshirt",
                 "Bra": "brassiere", "Leggings/Tights": "tights", "Sneakers": "trainers", "Top": "shirt",
                 "Vest top": "tank top", "Swimsuit": "bathing suit", "Pyjama set": "pajamas", "Cardigan": "knit jacket",
                 "Boots": "booties", "Bag": "handbag", "Coat": "overcoat", "Jumpsuit/Playsuit": "romper",
                 "Shirt": "button-down", "Bikini top": "swim top", "Underwear bottom": "briefs", "Socks": "sox"}
COLOUR_SYNONYMS = {"Dark Blue": "navy", "Black": "jet black", "White": "snow white", "Light Pink": "blush",
                   "Grey": "gray", "Dark Grey": "charcoal", "Beige": "sand", "Red": "scarlet", "Dark Red": "burgundy",
                   "Light Blue": "sky blue", "Off White": "cream", "Dark Green": "forest green", "Blue": "cobalt",
                   "Pink": "rose", "Yellow": "lemon", "Light Beige": "ecru", "Greenish Khaki": "khaki",
                   "Dark Beige": "camel", "Orange": "tangerine", "Light Grey": "heather grey"}
PATTERN_WORDS = {"Stripe": ("striped", "pinstripe"), "Check": ("checked", "plaid"), "Dot": ("dotted", "polka dot"),
                 "Denim": ("denim", "jean"), "All over pattern": ("patterned", "print"),
                 "Melange": ("melange", "heathered"), "Lace": ("lace", "lacy"), "Glittering/Metallic": ("metallic",
                                                                                                        "shiny")}


def make_queries(articles: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """query, paraphrase, and the attribute columns and values a relevant article must have."""
    rows = []
    by_colour = articles.group_by("colour_group_name", "product_type_name").len().filter(pl.col("len") >= K)
    for colour, kind, _ in by_colour.iter_rows():
        rows.append({"query": f"{colour} {kind}".lower(), "colour": colour, "kind": kind, "pattern": None,
                     "paraphrase": f"{COLOUR_SYNONYMS.get(colour, colour)} {TYPE_SYNONYMS.get(kind, kind)}".lower()})
    by_pattern = articles.group_by("graphical_appearance_name", "product_type_name").len().filter(pl.col("len") >= K)
    for pattern, kind, _ in by_pattern.iter_rows():
        if pattern in PATTERN_WORDS:
            plain, other = PATTERN_WORDS[pattern]
            rows.append({"query": f"{plain} {kind}".lower(), "colour": None, "kind": kind, "pattern": pattern,
                         "paraphrase": f"{other} {TYPE_SYNONYMS.get(kind, kind)}".lower()})
    queries = pl.DataFrame(rows).sort("query")  # group_by's order varies from run to run: sampled from a fixed one
    return queries.sample(min(n, queries.height), seed=seed) if queries.height else queries


def relevant(articles: pl.DataFrame, query: dict) -> np.ndarray:
    keep = articles["product_type_name"] == query["kind"]
    if query["colour"]:
        keep = keep & (articles["colour_group_name"] == query["colour"])
    if query["pattern"]:
        keep = keep & (articles["graphical_appearance_name"] == query["pattern"])
    return keep.to_numpy()


def top(scores: np.ndarray, k: int = K) -> np.ndarray:
    """Rows of the k best scores, ties by row (as fde.search does)."""
    order = np.lexsort((np.arange(scores.shape[0]), -scores))
    return order[:k]


def fuse(*rankings: np.ndarray, n: int, depth: int = 200) -> np.ndarray:
    """Reciprocal-rank fusion scores of several score arrays (each one's top `depth` counts)."""
    fused = np.zeros(n)
    for scores in rankings:
        for rank, row in enumerate(top(scores, depth)):
            if np.isfinite(scores[row]) and scores[row] > -np.inf:
                fused[row] += 1 / (RRF_K + rank + 1)
    return fused


def load_wordllama(where: str | None):
    if not where:
        return None
    sys.path.append(where)  # appended: the venv's numpy and friends stay first
    import wordllama
    from wordllama import WordLlama

    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def text_of(articles: pl.DataFrame) -> list[str]:
    columns = ["prod_name", "product_type_name", "colour_group_name", "graphical_appearance_name",
               "department_name", "index_group_name", "detail_desc"]
    present = [c for c in columns if c in articles.columns]
    return [". ".join(str(v) for v in row if v) for row in articles.select(pl.col(present).cast(pl.String)).rows()]


def weighted(lexical: np.ndarray, semantic: np.ndarray, weight: float) -> np.ndarray:
    """BM25 scaled by its best score to [0, 1] (0 without a matching word), plus weight x the semantic cosine."""
    lex = np.where(np.isfinite(lexical), lexical, 0.0)
    return lex / (lex.max() or 1.0) + weight * semantic


def cross_fitted(precision: dict[str, np.ndarray], seed: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """Each query's precision at the weight chosen on the other half of the queries (both kinds together).

    precision: kind -> (queries x WEIGHTS) array; a query and its paraphrase are in the same half."""
    n = next(iter(precision.values())).shape[0]
    half = np.random.default_rng(seed).permutation(n) < n // 2
    out = {kind: np.zeros(n) for kind in precision}
    chosen = []
    for fold in (half, ~half):
        fit = np.mean([p[~fold].mean(axis=0) for p in precision.values()], axis=0)
        best = int(np.argmax(fit))
        chosen.append(WEIGHTS[best])
        for kind, p in precision.items():
            out[kind][fold] = p[fold, best]
    return out, chosen


def text_search_table(catalogue: SearchCatalogue, full: pl.DataFrame, queries: pl.DataFrame, wl) -> list[str]:
    articles = catalogue.articles
    doc_vectors = wl.embed(text_of(full), norm=True) if wl is not None else None
    results, by_weight, gated = {}, {}, {}
    for kind in ("query", "paraphrase"):
        precision = {"lexical": [], "semantic": [], "both": []}
        by_weight[kind], gated[kind] = [], []
        for q in queries.iter_rows(named=True):
            hits = relevant(articles, q)
            lexical, _ = catalogue.text_scores(q[kind])
            lexical = np.where(lexical > 0, lexical, -np.inf)
            precision["lexical"].append(hits[top(lexical)].mean() if np.isfinite(lexical).any() else 0.0)
            if doc_vectors is not None:
                semantic = doc_vectors @ wl.embed([q[kind]], norm=True)[0]
                precision["semantic"].append(hits[top(semantic)].mean())
                both = fuse(lexical, semantic, n=len(articles))
                precision["both"].append(hits[top(both)].mean())
                by_weight[kind].append([hits[top(weighted(lexical, semantic, w))].mean() for w in WEIGHTS])
                # gated: the semantic score counts only when the catalogue does not know one of the query's words
                gated[kind].append(any(w not in catalogue.vocabulary for w in words(q[kind])))
        results[kind] = {m: (float(np.mean(v)) if v else None) for m, v in precision.items()}
    chosen, differences = {}, {}
    if doc_vectors is not None:
        grid = {kind: np.array(v) for kind, v in by_weight.items()}
        lexical_only = {kind: grid[kind][:, WEIGHTS.index(0.0)] for kind in grid}
        fitted, chosen["weighted"] = cross_fitted(grid)
        gated_grid = {kind: np.where(np.array(gated[kind])[:, None], grid[kind], lexical_only[kind][:, None])
                      for kind in grid}
        gated_fitted, chosen["gated"] = cross_fitted(gated_grid)
        for kind in grid:
            results[kind]["weighted"] = float(fitted[kind].mean())
            results[kind]["gated"] = float(gated_fitted[kind].mean())
            for name, got in (("weighted", fitted[kind]), ("gated", gated_fitted[kind])):
                differences[(kind, name)] = got - lexical_only[kind]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"| queries ({queries.height} each) | lexical (BM25) | semantic (wordllama) | both (RRF) | "
             "weighted: BM25/max + w x cosine | gated: weighted only when a query word is unknown |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, label in (("query", "catalogue's words (\"dark blue trousers\", \"striped dress\")"),
                        ("paraphrase", "everyday synonyms (\"navy pants\", \"pinstripe frock\")")):
        r = results[kind]
        lines.append(f"| {label} | {fmt(r['lexical'])} | {fmt(r['semantic'])} | {fmt(r['both'])} | "
                     f"{fmt(r.get('weighted'))} | {fmt(r.get('gated'))} |")
    rng = np.random.default_rng(0)
    lines += [""] if differences else []
    for (kind, name), diff in differences.items():  # paired: the same query by both methods
        boot = [diff[rng.integers(0, diff.shape[0], diff.shape[0])].mean() for _ in range(2000)]
        lines.append(f"- {name} - lexical on the {'catalogue' if kind == 'query' else 'synonym'} queries: "
                     f"{diff.mean():+.3f} (95% bootstrap interval {np.percentile(boot, 2.5):+.3f} to "
                     f"{np.percentile(boot, 97.5):+.3f}; {np.sum(diff > 0)} queries better, {np.sum(diff < 0)} worse)")
    if chosen:
        lines.append(f"- w chosen on each half of the query pairs, scored on the other: weighted {chosen['weighted']}, "
                     f"gated {chosen['gated']} (from {list(WEIGHTS)})")
    return lines


def words_to_photos_table(catalogue: SearchCatalogue, full: pl.DataFrame, index: VisualIndex, n_test: int,
                          seed: int = 0) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    articles = catalogue.articles
    ids = catalogue.article_ids
    rows = np.array([index.row(a) if index.has(a) else -1 for a in ids])
    has = np.flatnonzero(rows >= 0)
    rng = np.random.default_rng(seed)
    rng.shuffle(has)
    test, train = has[: len(has) // 5], has[len(has) // 5:]
    unit = index.unit_vectors()
    texts = text_of(full)
    vectorizer = TfidfVectorizer(analyzer=words, sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform([texts[i] for i in train])
    model = Ridge(alpha=1.0).fit(x_train, unit[rows[train]])
    image_all = np.full((len(ids), unit.shape[1]), 0, dtype=np.float32)
    image_all[has] = unit[rows[has]]
    kinds = articles["product_type_name"].to_numpy()
    scores = {"text alone (BM25)": [], "words-to-photos map alone": [], "text + map (RRF)": []}
    same = {k: [] for k in scores}
    for i in test[:n_test]:
        row = articles.row(int(i), named=True)
        query = f"{row['prod_name']} {row['colour_group_name']}"
        lexical, _ = catalogue.text_scores(query)
        lexical = np.where(lexical > 0, lexical, -np.inf)
        predicted = model.predict(vectorizer.transform([query]))[0]
        looks = image_all @ (predicted / max(np.linalg.norm(predicted), 1e-9))
        looks[rows < 0] = -np.inf
        for name, ranking in (("text alone (BM25)", lexical), ("words-to-photos map alone", looks),
                              ("text + map (RRF)", fuse(lexical, looks, n=len(ids)))):
            found = top(ranking)
            scores[name].append(float(i in found))
            same[name].append(float(np.mean(kinds[found] == row["product_type_name"])))
    lines = [f"| held-out articles ({len(scores['text alone (BM25)'])}), query = name + colour | recall@12 of the "
             "article | share of results with its product type |", "|---|---:|---:|"]
    for name in scores:
        lines.append(f"| {name} | {np.mean(scores[name]):.3f} | {np.mean(same[name]):.3f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    art.add_dir_args(parser, images=True)
    parser.add_argument("--wordllama", help="folder where wordllama is installed (pip --target); else no semantic")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--held-out", type=int, default=400, help="held-out articles queried in part 2")
    args = parser.parse_args()
    artifacts = art.from_args(args)
    catalogue = SearchCatalogue.load(artifacts)
    full = pl.read_parquet(artifacts.articles).sort("article_id")
    queries = make_queries(catalogue.articles, args.queries)
    lines = ["Text search, precision@12 (a result is relevant when it has every attribute named)", ""]
    lines += text_search_table(catalogue, full, queries, load_wordllama(args.wordllama))
    lines += ["", "Words to photos (ridge from TF-IDF text to the image vectors, 80% of articles to fit)", ""]
    lines += words_to_photos_table(catalogue, full, VisualIndex.load(artifacts), args.held_out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
