"""Shared helpers: ids, atomic writes, artifact locations."""
import numpy as np
import polars as pl
import pytest

from artifacts import Artifacts, require
from common import (UserError, atomic_path, customer_key_expr, format_article_id,
                    parse_article_id, save_npy, write_parquet)


def test_article_id_round_trip_keeps_leading_zero():
    assert parse_article_id("0108775015") == 108775015
    assert parse_article_id("108775015") == 108775015
    assert parse_article_id(" 0108775015 ") == 108775015
    assert format_article_id(108775015) == "0108775015"


@pytest.mark.parametrize("bad", ["", "abc", "01087750150", "-5", "1.5"])
def test_bad_article_id_is_a_user_error(bad):
    with pytest.raises(UserError, match="article id"):
        parse_article_id(bad)


def test_customer_key_is_last_16_hex_digits():
    hex_id = "00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657"
    key = pl.DataFrame({"customer_id": [hex_id]}).select(customer_key_expr()).item()
    assert key == int(hex_id[-16:], 16)


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writers_produce_the_final_file_only(tmp_path):
    write_parquet(pl.DataFrame({"a": [1, 2]}), tmp_path / "x.parquet")
    save_npy(np.arange(3, dtype=np.float32), tmp_path / "v.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy", "x.parquet"]
    assert np.load(tmp_path / "v.npy").tolist() == [0.0, 1.0, 2.0]


def test_image_path_follows_kaggle_layout(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    assert art.image(108775015) == tmp_path / "images" / "010" / "0108775015.jpg"


def test_require_names_the_command(tmp_path):
    with pytest.raises(UserError, match="run `python data_optim.py` first"):
        require(tmp_path / "missing.parquet", "python data_optim.py")
