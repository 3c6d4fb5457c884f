"""Reasons a merchandiser reads: each ranked item's words from the feature family that raised its score most."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from fde.features import family_of
from fde.ids import ARTICLE, article_id_text

REASONS = 3  # feature families shown per recommendation


def when_text(days: pl.Expr) -> pl.Expr:
    """The one date phrase of every reason: days before the cut-off (1 = the day before) -> 'last week',
    'N weeks ago' (up to 8), else 'N months ago'."""
    weeks = ((days - 1) // 7 + 1).cast(pl.Int32)
    months = (days / 30.44).round(0).cast(pl.Int32)
    return (pl.when(days <= 7).then(pl.lit("last week"))
            .when(weeks <= 8).then(pl.format("{} weeks ago", weeks))
            .otherwise(pl.format("{} months ago", months)))


def new_text(columns: list[str]) -> pl.Expr:
    """A launch's words: the purchase it looks most like, when one is known."""
    text = pl.lit("new arrival")
    for kind, verb in (("content", "similar to"), ("visual", "looks like")):  # visual, when present, wins
        source = f"sim_{kind}_source"
        if source in columns:
            text = pl.when(pl.col(source).is_not_null()).then(pl.format(
                f"new arrival, {verb} {{}} you bought {{}}", article_id_text(pl.col(source)),
                when_text(pl.col(f"sim_{kind}_days")))).otherwise(text)
    return text


def family_texts(articles: pl.DataFrame, columns: list[str]) -> dict[str, pl.Expr]:
    """Each family's sentence for a ranked row (its columns hold the evidence)."""
    def name_of(column: str, fallback: str) -> pl.Expr:
        if column not in articles.columns:
            return pl.lit(fallback)
        lookup = articles.select(pl.col("article_id").cast(ARTICLE), pl.col(column).cast(pl.String))
        return pl.col("article_id").replace_strict(lookup["article_id"], lookup[column], default=fallback)

    times = pl.col("times_bought").cast(pl.Int32)
    return {
        "bought": pl.when(times == 1).then(pl.format("bought it {}", when_text(pl.col("days_since_bought"))))
                    .otherwise(pl.format("bought {} times, most recently {}", times,
                                         when_text(pl.col("days_since_bought")))),
        "colourway": pl.format("colourway of {}", article_id_text(pl.col("source__colourways"))),
        "co_purchase": pl.format("often bought with {}", article_id_text(pl.col("source__co_purchase"))),
        "visual": pl.format("looks like {}, bought {}", article_id_text(pl.col("sim_visual_source")),
                            when_text(pl.col("sim_visual_days"))),
        "content": pl.format("similar to {}, bought {}", article_id_text(pl.col("sim_content_source")),
                             when_text(pl.col("sim_content_days"))),
        "new": new_text(columns),
        "type": pl.format("often buys {}", name_of("product_type_name", "this type")),
        "department": pl.format("often buys from {}", name_of("department_name", "this department")),
        "colour": pl.format("often buys {}", name_of("colour_group_name", "this colour")),
        "age": pl.lit("popular at your age"),
        "local": pl.lit("popular near you"),
        "taste": pl.lit("bought by customers with tastes like yours"),
        "last_year": pl.when(pl.col("last_year_week_bought") > 0).then(pl.lit("you bought it this week last year"))
                       .otherwise(pl.format("{} sold this week last year",
                                            pl.col("last_year_week_sales").cast(pl.Int32))),
        "trend": pl.format("trending: {} sold last week", pl.col("sales_1w").cast(pl.Int32)),
        "price": pl.lit("in your price range"),
    }


def family_sources(ranked: pl.DataFrame) -> dict[str, pl.Expr]:
    """The purchase each family's words name."""
    columns = {"colourway": "source__colourways", "co_purchase": "source__co_purchase",
               "visual": "sim_visual_source", "content": "sim_content_source"}
    out = {"bought": pl.col("article_id").cast(ARTICLE)}
    look_alike = [pl.col(c) for c in ("sim_visual_source", "sim_content_source") if c in ranked.columns]
    if look_alike:
        out["new"] = pl.coalesce(look_alike).cast(ARTICLE)
    out.update({family: pl.col(column).cast(ARTICLE) for family, column in columns.items() if column in ranked.columns})
    return out


def family_groups(features: list[str]) -> tuple[list[str], tuple[int, ...]]:
    """The families that can explain an item (sorted) and each feature's group: its family's position, or
    for a customer-only feature a last group that never explains an item (Model.path_contributions' groups)."""
    families = [family_of(f) for f in features]
    names = sorted({f for f in families if f is not None})
    return names, tuple(names.index(f) if f is not None else len(names) for f in families)


def explain(ranked: pl.DataFrame, model, articles: pl.DataFrame) -> pl.DataFrame:
    """reason = the words of the feature family that raised the item's score most; explanation = the top REASONS.

    model: the ranking.Model that scored the rows (its features and path_contributions are used).

    Contributions are the model's path attribution summed per family (Model.path_contributions):
    LightGBM's exact pred_contrib costs about a millisecond a row, hours for 1.37M customers x 12 on
    2 cores; the two name the same top family for most rows (tests/test_ranker.py measures it).

    A family whose evidence is missing for the row (e.g. no co-purchase source) cannot be its reason.
    """
    names, groups = family_groups(model.features)
    by_family = model.path_contributions(ranked, groups)[:, :len(names)]
    texts = family_texts(articles, ranked.columns)
    def has(column: str) -> pl.Expr:
        """The row has this evidence (a column the data may lack altogether)."""
        return pl.col(column).is_not_null() if column in ranked.columns else pl.lit(False)

    # near you: some of the customer's postal-code neighbours bought the article lately
    local = [c for c in ranked.columns if c.startswith(("postal_share_", "age_postal_share_"))]
    available = {
        "bought": pl.col("times_bought") > 0,
        "colourway": has("source__colourways"),
        "co_purchase": has("source__co_purchase"),
        "visual": has("sim_visual_source"),
        "content": has("sim_content_source"),
        "new": pl.col("days_since_first_sale").is_null(),
        "price": pl.col("price").is_not_null(),
        "last_year": pl.col("last_year_week_sales") > 0,
        "taste": pl.col("mf_score") > 0,
        "local": pl.any_horizontal(pl.col(c) > 0 for c in local) if local else pl.lit(False),
    }
    mask = ranked.select([available.get(n, pl.lit(True)).fill_null(False).alias(n) for n in names]).to_numpy()
    by_family = np.where(mask, by_family, -np.inf)
    order = np.argsort(-by_family, axis=1)[:, :REASONS]
    top_values = np.take_along_axis(by_family, order, axis=1)
    sources = family_sources(ranked)

    # each (row, place) pair's words and source, computed on that family's rows only (a when/then chain over
    # every family formats every family's sentence for every row)
    ok = np.isfinite(top_values) & (top_values > 0)
    rows, places = np.nonzero(ok)
    families_at = order[rows, places]
    needed = ranked.select(sorted({c for expr in [*texts.values(), *sources.values()] for c in expr.meta.root_names()}
                                  & set(ranked.columns) | {"article_id"}))
    pieces = []
    for position, name in enumerate(names):
        at = np.flatnonzero(families_at == position)
        if not len(at):
            continue
        subset = needed[rows[at]]
        pieces.append(subset.select(
            _row=pl.Series(rows[at], dtype=pl.UInt32), _place=pl.Series(places[at], dtype=pl.UInt8),
            feature=pl.lit(name, dtype=pl.String),
            contribution=pl.Series(top_values[rows[at], places[at]], dtype=pl.Float32),
            text=texts.get(name, pl.lit(None)).cast(pl.String),
            source=sources.get(name, pl.lit(None, dtype=ARTICLE)).cast(ARTICLE)))
    said = (pl.concat(pieces) if pieces else pl.DataFrame(schema={
        "_row": pl.UInt32, "_place": pl.UInt8, "feature": pl.String, "contribution": pl.Float32, "text": pl.String,
        "source": ARTICLE}))
    said = said.sort("_row", "_place")
    index = pl.DataFrame({"_row": np.arange(ranked.height, dtype=np.uint32)})
    first = index.join(said.filter(pl.col("_place") == 0), on="_row", how="left", maintain_order="left")
    # each row's entries, best first: a list column made from the entries and each row's count (concat_list of
    # structs took about 1 s per 240k rows)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=ranked.height))]).astype(np.int64)
    values = said.select(pl.struct("feature", "contribution", "text")).to_series().to_arrow()
    entries = pl.Series("explanation", pa.LargeListArray.from_arrays(
        pa.array(offsets, pa.int64()), pa.concat_arrays(values.chunks) if isinstance(values, pa.ChunkedArray)
        else values))
    # nothing raised the score: a launch is still a new arrival, anything else is on the popular lists
    fallback = pl.when(pl.col("days_since_first_sale").is_null()).then(texts["new"]).otherwise(pl.lit("trending"))
    # a reason that names no purchase (trending, often buys a type, ...) has no source either
    fallback_source = pl.when(pl.col("days_since_first_sale").is_null()).then(
        sources.get("new", pl.lit(None, dtype=ARTICLE))).otherwise(pl.lit(None, dtype=ARTICLE))
    explained = pl.col("_feature0").is_not_null()
    return (ranked.with_columns(_feature0=first["feature"], _text0=first["text"], _source0=first["source"])
            .with_columns(
                reason=pl.when(explained).then(pl.col("_text0")).otherwise(fallback),
                source_article_id=pl.when(explained).then(pl.col("_source0")).otherwise(fallback_source),
                explanation=entries)
            .select("customer_id", "article_id", "score", "rank", "source_article_id", "reason", "explanation"))
