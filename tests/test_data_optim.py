"""data_optim.py on small hand-written CSVs: types, id round trips, rejects, errors, atomic outputs."""
from datetime import date
from pathlib import Path

import polars as pl
import pytest

import data_optim
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.ids import format_article_id

C1 = "00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657"
C2 = "0000423b00ade91418cceaf3b26c6af3dd342b51fd051eec9c12fb36984420fa"
C3 = "000058a12d5b43e67d225668fa1f8d618c13dc232df0cad8ffe7ad4a1091e318"
C4 = "ffff0000000000000000000000000000000000000000000000000000000000a1"  # buys, not in customers.csv
C1_TWIN = "ffffffffffffffffffffffffffffffffffffffffffffffff" + C1[-16:]  # same key as C1

ARTICLES = """\
article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,perceived_colour_master_name,department_no,department_name,index_code,index_name,index_group_no,index_group_name,section_no,section_name,garment_group_no,garment_group_name,detail_desc
0108775015,0108775,Strap top,253,Vest top,Garment Upper body,1010016,Solid,09,Black,4,Dark,5,Black,1676,Jersey Basic,A,Ladieswear,1,Ladieswear,16,Womens Everyday Basics,1002,Jersey Basic,Jersey top with narrow shoulder straps.
0108775044,0108775,Strap top,253,Vest top,Garment Upper body,1010016,Solid,10,White,3,Light,9,White,1676,Jersey Basic,A,Ladieswear,1,Ladieswear,16,Womens Everyday Basics,1002,Jersey Basic,"Jersey top, narrow straps."
0110065001,0110065,OP T-shirt (Idro),306,Bra,Underwear,1010016,Solid,-1,Unknown,4,Dark,5,Black,1339,Clean Lingerie,B,Lingeries/Tights,1,Ladieswear,61,Womens Lingerie,1017,"Under-, Nightwear",
"""
CUSTOMERS = f"""\
customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code
{C1},,,ACTIVE,NONE,49,52043ee2162cf5aa7ee79974281641c6f11a68d276429a91f8ca0d4b6efa8100
{C2},1.0,1.0,ACTIVE,Regularly,25.0,2973abc54daa8a5f8ccfe9362140c63247c5eee03f1d93f4c830291c32bc3057
{C3},,,,,,
"""
GOOD_TRANSACTIONS = f"""\
t_dat,customer_id,article_id,price,sales_channel_id
2020-09-20,{C1},0108775015,0.0508474576271186,2
2020-09-20,{C1},108775044,0.0304915254237288,1
2020-09-21,{C2},0110065001,0.0169322033898305,2
2020-09-22,{C4},0108775015,0.05,2
"""
BAD_TRANSACTIONS = {  # each line and the reason it must be rejected with
    f"2020-09-2x,{C2},0108775015,0.05,2": "t_dat is not a YYYY-MM-DD date",
    f"2020-09-21,{C2},0110065001,abc,2": "price is not a number >= 0",
    f"2020-09-21,{C2},01100X5001,0.05,2": "article_id is not a whole number that fits Int32",
    f"2020-09-21,{C3},0110065001,0.01,2,9": "too many fields (the header has 5)",
    f"2020-09-21,{C3},0110065001,0.01": "sales_channel_id is empty (or the row has too few fields)",
    "2020-09-21,abc123,0110065001,0.01,2": "customer_id is not a 64-hex id",
    "": "blank line",
}


def raw(tmp_path: Path, articles=ARTICLES, customers=CUSTOMERS, transactions=GOOD_TRANSACTIONS) -> Artifacts:
    """Artifacts whose raw/ holds the given CSV texts (None: that file is missing)."""
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    art.raw_dir.mkdir(parents=True)
    for path, text in ((art.raw_articles, articles), (art.raw_customers, customers),
                       (art.raw_transactions, transactions)):
        if text is not None:
            path.write_text(text)
    return art


def files_under(path: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file below `path`."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_types_follow_the_contract(tmp_path):
    art = raw(tmp_path)
    data_optim.optimize(art, show_progress=False)
    assert pl.read_parquet_schema(art.transactions) == {
        "t_dat": pl.Date, "customer_id": pl.UInt64, "article_id": pl.Int32, "price": pl.Float32,
        "sales_channel_id": pl.UInt8}
    assert pl.read_parquet_schema(art.customer_ids) == {"customer_id": pl.UInt64, "customer_id_hex": pl.String}
    customers = pl.read_parquet(art.customers)
    assert dict(customers.schema) == {
        "customer_id": pl.UInt64, "FN": pl.UInt8, "Active": pl.UInt8, "club_member_status": pl.Categorical,
        "fashion_news_frequency": pl.Categorical, "age": pl.UInt8, "postal_code": pl.String}
    # "49" and "25.0" are both ages; "1.0" is a flag; empty stays null
    assert customers["age"].to_list() == [49, 25, None]
    assert customers["FN"].to_list() == [None, 1, None]
    articles = pl.read_parquet(art.articles)
    assert articles["article_id"].dtype == pl.Int32 and articles["product_code"].to_list() == [108775] * 2 + [110065]
    assert articles["colour_group_code"].dtype == pl.Int16 and articles["colour_group_code"].to_list() == [9, 10, -1]
    assert articles["product_type_name"].dtype == pl.Categorical
    assert articles["prod_name"].dtype == pl.String
    # quoted fields with commas survive; an empty detail_desc is null
    assert articles["detail_desc"].to_list() == ["Jersey top with narrow shoulder straps.", "Jersey top, narrow straps.",
                                                 None]
    assert articles["garment_group_name"].cast(pl.String).to_list()[2] == "Under-, Nightwear"


def test_ids_round_trip(tmp_path):
    art = raw(tmp_path)
    data_optim.optimize(art, show_progress=False)
    tx = pl.read_parquet(art.transactions)
    # "0108775015" and "108775044" (no leading zero) are both article ids; formatting restores the zero
    assert tx["article_id"].to_list() == [108775015, 108775044, 110065001, 108775015]
    assert [format_article_id(a) for a in tx["article_id"]] == ["0108775015", "0108775044", "0110065001", "0108775015"]
    assert tx["customer_id"][0] == int(C1[-16:], 16) == 0x5F88AA139FDFC657
    # the map gives back the exact 64-hex id of every transaction, including a buyer missing from customers.csv
    ids = pl.read_parquet(art.customer_ids)
    back = tx.join(ids, on="customer_id", how="left")["customer_id_hex"].to_list()
    assert back == [C1, C1, C2, C4]
    assert sorted(ids["customer_id_hex"].to_list()) == sorted([C1, C2, C3, C4])
    assert ids["customer_id"].is_unique().all()
    assert tx["price"].to_list() == pytest.approx([0.0508474576, 0.0304915254, 0.0169322034, 0.05], rel=1e-6)
    assert tx["t_dat"].cast(pl.String).to_list() == ["2020-09-20", "2020-09-20", "2020-09-21", "2020-09-22"]


def test_malformed_rows_end_in_the_rejects_file(tmp_path, capsys):
    lines = GOOD_TRANSACTIONS.splitlines()
    text = "\n".join([lines[0], lines[1], *BAD_TRANSACTIONS, *lines[2:]]) + "\n"
    art = raw(tmp_path, transactions=text)
    result = data_optim.optimize(art, show_progress=False)["transactions"]
    assert result["rows_in"] == len(lines) - 1 + len(BAD_TRANSACTIONS) == 11
    assert (result["rows_out"], result["rejects"]) == (4, 7)
    assert pl.read_parquet(art.transactions)["customer_id"].to_list() == [int(c[-16:], 16) for c in (C1, C1, C2, C4)]
    rejects = pl.read_csv(art.rejects("transactions"), infer_schema=False)
    assert rejects["reason"].to_list() == list(BAD_TRANSACTIONS.values())
    assert rejects["line"].to_list() == [str(n) for n in range(3, 10)]  # header = line 1, first good row = line 2
    # the original text is kept field by field: joined back it is the line of the CSV
    fields = rejects.select(pl.exclude("line", "reason", "extra_field")).rows()
    assert [",".join(f for f in row if f is not None) for row in fields][:3] == list(BAD_TRANSACTIONS)[:3]
    assert rejects["extra_field"].to_list()[3] == "9"
    out = capsys.readouterr().out
    assert "7 of 11 rows rejected" in out and "price is not a number >= 0: 1" in out


def test_duplicates_are_rejected_and_a_bad_optional_field_becomes_null(tmp_path):
    customers = CUSTOMERS + f"{C1},,,ACTIVE,NONE,49,52043ee2\n" + f"{C4},yes,,ACTIVE,NONE,49.5,x\n"
    art = raw(tmp_path, customers=customers)
    result = data_optim.optimize(art, show_progress=False)
    assert (result["customers"]["rows_out"], result["customers"]["rejects"], result["customers"]["nulled"]) == (4, 1, 1)
    rejects = pl.read_csv(art.rejects("customers"), infer_schema=False)
    assert rejects.select("line", "customer_id", "reason").rows() == [
        ("5", C1, "duplicate customer_id"),
        ("6", C4, "FN is not a whole number that fits UInt8; age is not a whole number that fits UInt8: "
                  "set to null, row kept")]
    # C4 is kept, without the two bad fields
    kept = pl.read_parquet(art.customers).filter(pl.col("customer_id") == int(C4[-16:], 16))
    assert kept.select("FN", "age", "postal_code").rows() == [(None, None, "x")]
    assert C4 in pl.read_parquet(art.customer_ids)["customer_id_hex"].to_list()


def test_missing_file_names_it_and_what_to_do(tmp_path):
    art = raw(tmp_path, customers=None)
    with pytest.raises(UserError, match=r"customers\.csv not found: run `python sample_data\.py"):
        data_optim.optimize(art, show_progress=False)
    assert not art.processed_dir.exists()


def test_missing_column_names_file_and_column(tmp_path):
    customers = CUSTOMERS.replace(",age,", ",years,")
    art = raw(tmp_path, customers=customers)
    with pytest.raises(UserError, match=r"customers\.csv has no column age \(found: customer_id,"):
        data_optim.optimize(art, show_progress=False)


@pytest.mark.parametrize("where", ["transactions vs customers", "customers", "transactions only"])
def test_key_collision_is_refused_and_writes_nothing(tmp_path, where):
    first, twin = C1, C1_TWIN
    if where == "transactions vs customers":
        art = raw(tmp_path, transactions=GOOD_TRANSACTIONS + f"2020-09-22,{C1_TWIN},0108775015,0.05,2\n")
    elif where == "customers":
        art = raw(tmp_path, customers=CUSTOMERS + f"{C1_TWIN},,,ACTIVE,NONE,30,x\n")
    else:  # two buyers, neither in customers.csv
        first, twin = C4, "0" * 48 + C4[-16:]
        art = raw(tmp_path, transactions=GOOD_TRANSACTIONS + f"2020-09-22,{twin},0108775015,0.05,2\n")
        first, twin = sorted([first, twin])
    with pytest.raises(UserError, match=f"{first} and {twin} share their last 16 hex digits"):
        data_optim.optimize(art, show_progress=False)
    assert files_under(art.data_dir).keys() == {"raw/articles.csv", "raw/customers.csv", "raw/transactions_train.csv"}


def test_outputs_are_atomic_and_raw_is_untouched(tmp_path):
    art = raw(tmp_path)
    before = files_under(art.raw_dir)
    data_optim.optimize(art, show_progress=False)
    written = files_under(art.data_dir)
    assert not [p for p in written if ".tmp-" in p]
    assert files_under(art.raw_dir) == before
    assert {p for p in written if p.startswith("processed/")} == {
        f"processed/{t}.parquet" for t in ("articles", "customers", "transactions", "customer_ids")
    } | {f"processed/rejects/{t}_rejects.csv" for t in ("articles", "customers", "transactions")} | {
        "processed/manifest.json"}
    # a later run that fails (here on a collision) leaves the previous outputs exactly as they were
    art.raw_transactions.write_text(GOOD_TRANSACTIONS + f"2020-09-22,{C1_TWIN},0108775015,0.05,2\n")
    with pytest.raises(UserError):
        data_optim.optimize(art, show_progress=False)
    after = files_under(art.data_dir)
    assert {p: v for p, v in after.items() if p.startswith("processed/")} == \
        {p: v for p, v in written.items() if p.startswith("processed/")}


def test_no_valid_transactions_is_a_user_error(tmp_path):
    header = "t_dat,customer_id,article_id,price,sales_channel_id\n"
    art = raw(tmp_path, transactions=header + "\n".join(BAD_TRANSACTIONS) + "\n")
    with pytest.raises(UserError, match="no valid transaction rows"):
        data_optim.optimize(art, show_progress=False)


def test_main_prints_a_summary_per_table(tmp_path, capsys):
    art = raw(tmp_path)
    data_optim.main(["--data-dir", str(art.data_dir), "--no-progress"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[data_optim] table=")]
    assert [ln.split()[1] for ln in lines] == ["table=articles", "table=customers", "table=transactions"]
    assert all("rows_in=" in ln and "csv_mb=" in ln and "parquet_mb=" in ln and "peak_rss_mb=" in ln for ln in lines)


def test_generated_sample_round_trips(tmp_path):
    """On the generator's tiny sample (CSVs only): every id parses, maps back, and nothing is rejected."""
    sample_data = pytest.importorskip("sample_data")
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    sample_data.generate(art, scale="tiny", seed=0, images=False, show_progress=False)
    data_optim.optimize(art, show_progress=False)
    raw_tx = pl.read_csv(art.raw_transactions, schema_overrides={"customer_id": pl.String, "article_id": pl.String})
    tx = pl.read_parquet(art.transactions)
    assert tx.height == raw_tx.height
    assert [format_article_id(a) for a in tx["article_id"].head(1000)] == raw_tx["article_id"].head(1000).to_list()
    ids = pl.read_parquet(art.customer_ids)
    back = tx.select("customer_id").join(ids, on="customer_id", how="left", maintain_order="left")
    assert back["customer_id_hex"].to_list() == raw_tx["customer_id"].to_list()
    customers = pl.read_csv(art.raw_customers, infer_schema=False)
    assert pl.read_parquet(art.customers).height == customers.height
    assert all(pl.read_csv(art.rejects(t), infer_schema=False).height == 0
               for t in ("articles", "customers", "transactions"))


def test_columns_in_another_order_and_extra_columns(tmp_path):
    text = f"sales_channel_id,price,note,article_id,customer_id,t_dat\n2,0.05,gift,0108775015,{C1},2020-09-20\n"
    art = raw(tmp_path, transactions=text)
    data_optim.optimize(art, show_progress=False)
    tx = pl.read_parquet(art.transactions)
    assert tx.columns == ["t_dat", "customer_id", "article_id", "price", "sales_channel_id", "note"]
    assert tx.row(0) == (date(2020, 9, 20), int(C1[-16:], 16), 108775015, pytest.approx(0.05), 2, "gift")
