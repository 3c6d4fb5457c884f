"""sample_data.py at the tiny scale: Kaggle formats, determinism, safety of existing files, realism."""
import hashlib
import re
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from PIL import Image

import sample_data
from fde.artifacts import Artifacts
from fde.errors import UserError

KAGGLE_ARTICLES = (
    "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,"
    "graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,"
    "perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,"
    "perceived_colour_master_name,department_no,department_name,index_code,index_name,"
    "index_group_no,index_group_name,section_no,section_name,garment_group_no,garment_group_name,"
    "detail_desc"
)
KAGGLE_CUSTOMERS = "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"
KAGGLE_TRANSACTIONS = "t_dat,customer_id,article_id,price,sales_channel_id"
HEX64 = r"^[0-9a-f]{64}$"


def read_text(path) -> pl.DataFrame:
    """A raw CSV with every column as text, as the file has it."""
    return pl.read_csv(path, infer_schema=False)


@pytest.fixture(scope="module")
def raw(tiny_raw):
    return {
        "articles": read_text(tiny_raw.raw_articles),
        "customers": read_text(tiny_raw.raw_customers),
        "transactions": read_text(tiny_raw.raw_transactions).with_columns(
            day=pl.col("t_dat").str.to_date("%Y-%m-%d"), price_f=pl.col("price").cast(pl.Float64)),
    }


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_headers_are_exactly_kaggles(tiny_raw):
    for path, header in ((tiny_raw.raw_articles, KAGGLE_ARTICLES), (tiny_raw.raw_customers, KAGGLE_CUSTOMERS),
                         (tiny_raw.raw_transactions, KAGGLE_TRANSACTIONS)):
        with open(path) as fh:
            assert fh.readline().rstrip("\n") == header


def test_article_ids_and_product_codes(raw):
    arts = raw["articles"]
    assert arts["article_id"].str.contains(r"^0\d{9}$").all()  # 10 digits, leading zero kept
    assert arts["product_code"].str.contains(r"^0\d{6}$").all()
    ids = arts["article_id"].cast(pl.Int64)
    assert ids.n_unique() == arts.height == sample_data.SCALES["tiny"].articles
    assert (ids // 1000 == arts["product_code"].cast(pl.Int64)).all()
    colourways = arts.group_by("product_code").agg(n=pl.len(), colours=pl.col("colour_group_code").n_unique())
    assert colourways["n"].max() >= 3 and (colourways["n"] > 1).sum() >= 20
    assert (colourways["colours"] == colourways["n"]).all()  # colourways differ in colour
    assert arts["colour_group_code"].str.contains(r"^(-1|\d{2})$").all()


def test_taxonomy_looks_real(raw):
    arts = raw["articles"]
    assert set(arts["index_group_name"]) <= {"Ladieswear", "Baby/Children", "Divided", "Menswear", "Sport"}
    assert arts["index_group_name"].value_counts(sort=True)["index_group_name"][0] == "Ladieswear"
    assert arts["graphical_appearance_name"].value_counts(sort=True)["graphical_appearance_name"][0] == "Solid"
    assert arts["product_type_name"].n_unique() >= 25
    assert arts["detail_desc"].null_count() >= 1  # the real file has empty descriptions too
    assert arts["detail_desc"].drop_nulls().str.len_chars().min() > 20
    vest = arts.filter(pl.col("product_type_name") == "Vest top")
    assert (vest["product_type_no"] == "253").all() and (vest["product_group_name"] == "Garment Upper body").all()


def test_customer_formats(raw):
    cust = raw["customers"]
    assert cust.height == sample_data.SCALES["tiny"].customers
    assert cust["customer_id"].str.contains(HEX64).all() and cust["customer_id"].is_unique().all()
    assert cust["customer_id"].str.slice(48).is_unique().all()  # the UInt64 keys of data_optim
    assert cust["customer_id"].is_sorted()
    assert cust["postal_code"].str.contains(HEX64).all()
    assert set(cust["FN"].drop_nulls()) == {"1.0"} and set(cust["Active"].drop_nulls()) == {"1.0"}
    assert set(cust["club_member_status"].drop_nulls()) <= {"ACTIVE", "PRE-CREATE", "LEFT CLUB"}
    assert {"NONE", "Regularly", "None"} <= set(cust["fashion_news_frequency"].drop_nulls())
    age = cust["age"].cast(pl.Int64)
    assert age.drop_nulls().is_between(16, 99).all() and 30 < age.mean() < 43


def test_transaction_formats(raw):
    tx, arts, cust = raw["transactions"], raw["articles"], raw["customers"]
    assert tx["t_dat"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert tx["day"].max() == date(2020, 9, 22) and tx["day"].is_sorted()
    assert tx["article_id"].str.contains(r"^0\d{9}$").all()
    assert tx["article_id"].is_in(arts["article_id"].implode()).all()
    assert tx["customer_id"].is_in(cust["customer_id"].implode()).all()
    assert set(tx["sales_channel_id"]) == {"1", "2"}
    assert 0.6 < (tx["sales_channel_id"] == "2").mean() < 0.8
    price = tx["price_f"]
    assert price.min() > 0 and price.max() < 0.6 and 0.01 < price.mean() < 0.05
    cents = price * sample_data.PRICE_DIVISOR * 100  # real prices in cents, divided by 590
    assert ((cents - cents.round()).abs() < 1e-6).all()


def test_last_weeks_have_buyers_and_new_articles(raw):
    tx = raw["transactions"]
    end = date(2020, 9, 22)
    for k in range(2):
        week = tx.filter(pl.col("day").is_between(end - timedelta(days=7 * k + 6), end - timedelta(days=7 * k)))
        assert week["customer_id"].n_unique() >= 100
    first_sold = tx.group_by("article_id").agg(first=pl.col("day").min())
    new = first_sold.filter(pl.col("first") > end - timedelta(days=7))
    assert new.height >= 1  # cold start: articles launched in the test week


def test_repeats_and_units(raw):
    tx = raw["transactions"].select("t_dat", "customer_id", "article_id", "price", "sales_channel_id", "day")
    dup_share = 1 - tx.unique().height / tx.height
    assert 0.03 < dup_share < 0.25  # several units of an article in one basket
    days = tx.select("customer_id", "article_id", "day").unique()
    again = days.group_by("customer_id", "article_id").agg(pl.col("day").n_unique().alias("days"))
    assert again.filter(pl.col("days") > 1).height >= 10  # the same article bought again later
    colourways = (tx.with_columns(product=pl.col("article_id").str.slice(0, 7))
                  .group_by("customer_id", "product").agg(pl.col("article_id").n_unique().alias("n")))
    assert colourways.filter(pl.col("n") > 1).height >= 10  # other colourways of one product
    per_customer = tx.group_by("customer_id").len()["len"]
    assert per_customer.max() > 5 * per_customer.median()  # long-tailed activity


def test_images_follow_kaggle_layout(tiny_raw, raw):
    ids = raw["articles"]["article_id"].to_list()
    present = [a for a in ids if tiny_raw.image(int(a)).exists()]
    missing = len(ids) - len(present)
    assert 1 <= missing <= 0.03 * len(ids)
    for a in present[:20]:
        path = tiny_raw.image(int(a))
        assert path.parent.name == a[:3] and path.name == f"{a}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == sample_data.SCALES["tiny"].image_size and im.size[1] * 2 == im.size[0] * 3
    assert not list(tiny_raw.images_dir.rglob("*.tmp-*"))


def test_images_show_the_colour(tiny_raw, raw):
    def brightness(colour):
        ids = raw["articles"].filter(pl.col("colour_group_name") == colour)["article_id"].to_list()
        values = []
        for a in ids[:15]:
            if tiny_raw.image(int(a)).exists():
                with Image.open(tiny_raw.image(int(a))) as im:
                    values.append(float(np.asarray(im.convert("L")).mean()))
        return sum(values) / max(len(values), 1)

    assert brightness("Black") < brightness("White") - 20


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        art = Artifacts(tmp_path / name / "data", tmp_path / name / "images")
        sample_data.generate(art, scale="tiny", seed=seed, show_progress=False, image_size=(32, 48))
        runs.append(art)
    a, b, c = runs
    for attr in ("raw_articles", "raw_customers", "raw_transactions"):
        assert digest(getattr(a, attr)) == digest(getattr(b, attr))
        assert digest(getattr(a, attr)) != digest(getattr(c, attr))
    images_a = sorted(p.relative_to(a.images_dir) for p in a.images_dir.rglob("*.jpg"))
    assert images_a == sorted(p.relative_to(b.images_dir) for p in b.images_dir.rglob("*.jpg"))
    assert all(digest(a.images_dir / p) == digest(b.images_dir / p) for p in images_a)


def test_never_overwrites_raw_files_without_force(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    art.raw_dir.mkdir(parents=True)
    art.raw_customers.write_text("my real Kaggle file\n")
    with pytest.raises(UserError, match="--force") as err:
        sample_data.generate(art, scale="tiny", images=False, show_progress=False)
    assert "\n" not in str(err.value)
    assert art.raw_customers.read_text() == "my real Kaggle file\n"
    assert not art.raw_articles.exists() and not art.raw_transactions.exists()
    sample_data.generate(art, scale="tiny", images=False, force=True, show_progress=False)
    assert art.raw_customers.read_text().startswith(KAGGLE_CUSTOMERS)


def test_never_overwrites_images_without_force(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    first = sample_data.generate(Artifacts(tmp_path / "x", art.images_dir), scale="tiny", show_progress=False,
                                 image_size=(32, 48))
    assert first["images"] > 0
    with pytest.raises(UserError, match="--force"):
        sample_data.generate(art, scale="tiny", show_progress=False, image_size=(32, 48))
    assert not art.raw_transactions.exists()


def test_command_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setattr("sys.argv", ["sample_data.py", "--data-dir", str(data), "--images-dir", str(tmp_path / "img"),
                                     "--scale", "tiny", "--seed", "5", "--no-images"])
    sample_data.main()
    assert re.search(r"\[sample_data\] scale=tiny .*transactions=", capsys.readouterr().out)
    assert (data / "raw" / "transactions_train.csv").exists() and not (tmp_path / "img").exists()
    monkeypatch.setattr("sys.argv", ["sample_data.py", "--data-dir", str(data), "--image-size", "big"])
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        sample_data.main()


def test_unknown_scale_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="tiny, demo, full"):
        sample_data.generate(Artifacts(tmp_path / "d", tmp_path / "i"), scale="huge")


def test_the_generator_shares_one_taxonomy():
    """sample_data and fde.sample_images draw from one table of colours (fde.taxonomy); cycles: test_layout."""
    from fde import sample_images, taxonomy

    assert sample_data.COLOURS is sample_images.COLOURS is taxonomy.COLOURS


@pytest.fixture(scope="module")
def habitual(tmp_path_factory):
    art = Artifacts(tmp_path_factory.mktemp("habitual") / "data", tmp_path_factory.mktemp("habitual") / "images")
    result = sample_data.generate(art, scale="tiny", seed=0, regime="habitual", show_progress=False)
    return art, result


def test_habitual_regime_has_kaggles_schema_without_colours_descriptions_or_images(habitual, raw):
    art, result = habitual
    for path, header in ((art.raw_articles, KAGGLE_ARTICLES), (art.raw_customers, KAGGLE_CUSTOMERS),
                         (art.raw_transactions, KAGGLE_TRANSACTIONS)):
        with open(path) as fh:
            assert fh.readline().rstrip("\n") == header
    arts = read_text(art.raw_articles)
    assert arts.schema == raw["articles"].schema and arts.height == raw["articles"].height
    for col in ("colour_group_code", "perceived_colour_value_id", "perceived_colour_master_id"):
        assert set(arts[col]) == {"-1"}, col
    for col in ("colour_group_name", "perceived_colour_value_name", "perceived_colour_master_name"):
        assert set(arts[col]) == {"Unknown"}, col
    assert arts["detail_desc"].null_count() == arts.height  # empty in the CSV
    assert arts["article_id"].str.contains(r"^0\d{9}$").all()
    assert arts["product_type_name"].n_unique() >= 25  # the rest of the catalogue is still there
    assert result["images"] == 0 and not art.images_dir.exists()
    assert result["regime"] == "habitual"
    tx = read_text(art.raw_transactions)
    assert tx["article_id"].is_in(arts["article_id"].implode()).all()
    assert 0.6 < (tx["sales_channel_id"] == "2").mean() < 0.8


def long_repeat_share(path) -> float:
    """Share of (customer, article, week) purchases in pairs bought in 3+ weeks spanning 8+ weeks."""
    tx = (read_text(path).select("customer_id", "article_id", week=pl.col("t_dat").str.to_date().dt.truncate("1w"))
          .unique())
    pairs = tx.group_by("customer_id", "article_id").agg(
        weeks=pl.len(), span=(pl.col("week").max() - pl.col("week").min()).dt.total_days())
    return pairs.select(pl.col("weeks").filter((pl.col("weeks") >= 3) & (pl.col("span") >= 56)).sum()
                        / pl.col("weeks").sum()).item()


def test_habitual_shoppers_buy_the_same_articles_again(habitual, tiny_raw):
    art, _ = habitual
    habitual_share = long_repeat_share(art.raw_transactions)
    fashion_share = long_repeat_share(tiny_raw.raw_transactions)  # same scale and seed, fashion regime
    assert habitual_share > 2 * fashion_share and habitual_share > 0.3
    # few launches: fewer articles first sell after the first month than in the fashion regime
    assert late_first_sale_share(art.raw_transactions) < 0.6 * late_first_sale_share(tiny_raw.raw_transactions)


def late_first_sale_share(path) -> float:
    """Share of the rows that buy an article first sold after the first 4 weeks of the history.

    By rows, not by articles: with few buyers (the habitual regime's), an old article's first sale in
    the file can come late by chance, but it carries few rows.
    """
    rows = read_text(path).with_columns(day=pl.col("t_dat").str.to_date())
    rows = rows.with_columns(first=pl.col("day").min().over("article_id"))
    return rows.select((pl.col("first") > pl.col("day").min() + timedelta(days=28)).mean()).item()


def test_habitual_regime_images_only_on_request(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    result = sample_data.generate(art, scale="tiny", regime="habitual", images=True, show_progress=False,
                                  image_size=(32, 48))
    assert result["images"] > 0 and any(art.images_dir.rglob("*.jpg"))


def test_unknown_regime_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="fashion, habitual"):
        sample_data.generate(Artifacts(tmp_path / "d", tmp_path / "i"), regime="grocery")


def test_command_line_regime(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setattr("sys.argv", ["sample_data.py", "--data-dir", str(data), "--images-dir", str(tmp_path / "img"),
                                     "--scale", "tiny", "--regime", "habitual"])
    sample_data.main()
    assert re.search(r"\[sample_data\] scale=tiny regime=habitual .*images=0", capsys.readouterr().out)
    assert (data / "raw" / "transactions_train.csv").exists() and not (tmp_path / "img").exists()
