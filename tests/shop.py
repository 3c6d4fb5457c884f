"""The hand-made shop every exact-value test reads: six articles, four customers, six purchases.

Small enough to check by hand; shared by test_recommenders, test_final and test_ranker.
"""
from datetime import date

import numpy as np
import polars as pl

from fde.strategies import (
    OUTPUT_SCHEMA,
    CategoryPopularity,
    Colourways,
    ContentSimilarity,
    CoPurchase,
    NewArrivals,
    PurchaseHistory,
    Repurchase,
    VisualSimilarity,
    popularity_strategies,
)

# 101001/101002 are two colourways of product 101; 101002 and 105001 never sold.
ARTICLES = pl.DataFrame({
    "article_id": [101001, 101002, 102001, 103001, 104001, 105001],
    "product_code": [101, 101, 102, 103, 104, 105],
    "product_type_name": ["Trousers", "Trousers", "Trousers", "Sweater", "Sweater", "Trousers"],
    "colour_group_name": ["Black", "Blue", "Black", "Red", "Red", "Black"],
    "department_name": ["Denim", "Denim", "Denim", "Knit", "Knit", "Denim"],
    "graphical_appearance_name": ["Solid"] * 6,
    "index_group_name": ["Ladieswear"] * 6,
    "detail_desc": ["slim jeans in denim", "slim jeans in denim", "slim jeans in denim", "wool knit sweater",
                    "wool knit sweater", "jeans"],
}, schema_overrides={"article_id": pl.Int32, "product_code": pl.Int32})
TX = pl.DataFrame({
    "t_dat": [date(2020, 9, 1), date(2020, 9, 1), date(2020, 9, 10), date(2020, 9, 14), date(2020, 9, 14),
              date(2020, 9, 15)],
    "customer_id": [1, 2, 2, 3, 1, 1],
    "article_id": [101001, 103001, 103001, 102001, 102001, 104001],
    "price": [0.02] * 6,
    "sales_channel_id": [2] * 6,
}, schema_overrides={"customer_id": pl.UInt64, "article_id": pl.Int32, "price": pl.Float32,
                     "sales_channel_id": pl.UInt8})
CUTOFF = date(2020, 9, 16)
CUSTOMERS = pl.Series("customer_id", [1, 2, 3, 4], dtype=pl.UInt64)  # 4 never bought anything
AGES = pl.DataFrame({"customer_id": [1, 2, 3, 4], "age": [22, 50, None, 30]},
                    schema={"customer_id": pl.UInt64, "age": pl.UInt8})
TWINS = pl.DataFrame({"article_id": [102001, 102001, 102001, 104001],
                      "twin_id": [101002, 103001, 104001, 103001],
                      "rank": [1, 2, 3, 1], "score": [0.9, 0.5, 0.4, 0.95]},
                     schema={"article_id": pl.Int32, "twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32})


# image features by hand: new 101002 is 0.6 like 101001 and 0.8 like 102001; new 105001 the reverse;
# sweaters 103001/104001 look like neither (cosine 0)
VISUAL = (np.array([101001, 101002, 102001, 103001, 104001, 105001], dtype=np.int32),
          np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0, 1], [0, 0, 2], [0.8, 0.6, 0]], dtype=np.float32))


def lists(recs: pl.DataFrame) -> dict:
    return {c: g.sort("rank")["article_id"].to_list()
            for (c,), g in recs.group_by("customer_id")}


def all_strategies(twins=TWINS):
    return [*popularity_strategies(AGES), PurchaseHistory(), Repurchase(), Colourways(), CoPurchase(),
            ContentSimilarity(), CategoryPopularity(), VisualSimilarity(twins), NewArrivals(VISUAL), NewArrivals()]


def check_interface(recs: pl.DataFrame, k: int):
    assert recs.schema == pl.Schema(OUTPUT_SCHEMA)
    assert recs.equals(recs.sort("customer_id", "rank"))
    per = recs.group_by("customer_id").agg(n=pl.len(), ranks=pl.col("rank").sort(),
                                           unique=pl.col("article_id").n_unique())
    for row in per.iter_rows(named=True):
        assert row["n"] <= k and row["unique"] == row["n"]
        assert row["ranks"] == list(range(1, row["n"] + 1))
    # scores never increase down a list, and lie in [0, 1]
    assert recs.group_by("customer_id").agg(ok=(pl.col("score").sort_by("rank").diff() <= 1e-7).all())["ok"].all()
    assert recs["score"].is_between(0, 1).all()
