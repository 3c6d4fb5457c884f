"""Reasons a merchandiser reads: each ranked item's words from the feature family that raised its score most."""
from __future__ import annotations

import numpy as np
import polars as pl

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


def explain(ranked: pl.DataFrame, model, articles: pl.DataFrame) -> pl.DataFrame:
    """reason = the words of the feature family that raised the item's score most; explanation = the top REASONS.

    model: the ranking.Model that scored the rows (its features and path_contributions are used).

    Contributions are the model's path attribution summed per family (Model.path_contributions):
    LightGBM's exact pred_contrib costs about a millisecond a row, hours for 1.37M customers x 12 on
    2 cores; the two name the same top family for most rows (tests/test_ranker.py measures it).

    A family whose evidence is missing for the row (e.g. no co-purchase source) cannot be its reason.
    """
    families = [family_of(f) for f in model.features]
    names = sorted({f for f in families if f is not None})
    # customer-only features go to a last group that never explains an item
    groups = tuple(names.index(f) if f is not None else len(names) for f in families)
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

    def pick(choices: dict[str, pl.Expr], index: str, default: pl.Expr) -> pl.Expr:
        """The expression of the family whose position in `names` is in column `index`."""
        expr = None
        for position, name in enumerate(names):
            value = choices.get(name, default)
            expr = (pl.when(pl.col(index) == position) if expr is None
                    else expr.when(pl.col(index) == position)).then(value)
        return expr.otherwise(default) if expr is not None else default

    slots = {}
    for j in range(order.shape[1]):
        ok = np.isfinite(top_values[:, j]) & (top_values[:, j] > 0)
        slots[f"_family{j}"] = pl.Series(np.where(ok, order[:, j], -1).astype(np.int32))
        slots[f"_contribution{j}"] = pl.Series(np.where(ok, top_values[:, j], 0).astype(np.float32))
    names_series = pl.Series(names, dtype=pl.String)
    # nothing raised the score: a launch is still a new arrival, anything else is on the popular lists
    fallback = pl.when(pl.col("days_since_first_sale").is_null()).then(texts["new"]).otherwise(pl.lit("trending"))
    # a reason that names no purchase (trending, often buys a type, ...) has no source either
    fallback_source = pl.when(pl.col("days_since_first_sale").is_null()).then(
        sources.get("new", pl.lit(None, dtype=ARTICLE))).otherwise(pl.lit(None, dtype=ARTICLE))
    entries = [pl.when(pl.col(f"_family{j}") >= 0).then(pl.struct(
        feature=pl.col(f"_family{j}").replace_strict(list(range(len(names))), names_series, default=None),
        contribution=pl.col(f"_contribution{j}"),
        text=pick(texts, f"_family{j}", pl.lit(None, pl.String))))
        for j in range(order.shape[1])]
    return (ranked.with_columns(**slots)
            .with_columns(
                reason=pl.when(pl.col("_family0") >= 0).then(pick(texts, "_family0", fallback)).otherwise(fallback),
                source_article_id=pl.when(pl.col("_family0") >= 0)
                .then(pick(sources, "_family0", pl.lit(None, dtype=ARTICLE))).otherwise(fallback_source),
                explanation=pl.concat_list(entries).list.drop_nulls())
            .select("customer_id", "article_id", "score", "rank", "source_article_id", "reason", "explanation"))
