"""The Kaggle submission: customer_id,prediction with up to 12 ten-digit article ids, one row per customer."""
from __future__ import annotations

import polars as pl

from fde.errors import UserError
from fde.ids import article_id_text

PREDICTION = r"^[0-9]{10}( [0-9]{10}){0,11}$"  # 1 to 12 ten-digit article ids


def check_submission(submission: pl.DataFrame, customers: pl.Series, command: str = "python final.py") -> None:
    """UserError unless `submission` (customer_id, prediction) has exactly one row per 64-hex id in
    `customers` (customers.csv's and every buyer's) and each prediction is 1 to 12 ten-digit article ids."""
    ids = submission["customer_id"]
    expected = customers.unique()
    missing = expected.filter(~expected.is_in(ids.implode()))
    unknown = ids.filter(~ids.is_in(expected.implode())).unique()
    repeated = ids.filter(ids.is_duplicated()).unique()
    bad = submission.filter(~pl.col("prediction").fill_null("").str.contains(PREDICTION))
    problems = []
    if missing.len():
        problems.append(f"{missing.len():,} customers are missing (e.g. {missing[0]})")
    if unknown.len():
        problems.append(f"{unknown.len():,} ids are not customers (e.g. {unknown[0]})")
    if repeated.len():
        problems.append(f"{repeated.len():,} customers have more than one row (e.g. {repeated[0]})")
    if bad.height:
        problems.append(f"{bad.height:,} predictions are not 1 to 12 ten-digit article ids "
                        f"(e.g. {bad['customer_id'][0]}: {bad['prediction'][0]!r})")
    if problems:
        raise UserError(f"submission has {submission.height:,} rows for {expected.len():,} customers: "
                        f"{'; '.join(problems)}; nothing was written: rerun `{command}`")


def prediction_lists(recs: pl.DataFrame) -> pl.DataFrame:
    """customer_id, prediction: each customer's article ids in rank order, as 10-digit text joined by spaces."""
    return (recs.sort("customer_id", "rank")
            .group_by("customer_id", maintain_order=True)
            .agg(prediction=article_id_text(pl.col("article_id")).str.join(" ")))


def submission_frame(lists: pl.DataFrame, customer_ids: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    """Kaggle's customer_id,prediction: original 64-hex ids, each customer's prediction_lists (empty when none)."""
    out = (customers.select("customer_id").join(customer_ids, on="customer_id", how="left", maintain_order="left")
           .join(lists, on="customer_id", how="left", maintain_order="left"))
    missing = out.filter(pl.col("customer_id_hex").is_null()).height
    if missing:
        raise UserError(f"{missing:,} customers have no original id in processed/customer_ids.parquet: "
                        "rerun data_optim.py")
    return out.select(customer_id="customer_id_hex", prediction=pl.col("prediction").fill_null(""))
