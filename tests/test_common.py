"""Shared helpers: ids, atomic writes, artifact locations."""
import errno
import json
import os

import numpy as np
import polars as pl
import pytest

from fde.artifacts import Artifacts, require
from fde.cli import run_main
from fde.errors import UserError, check_writable, environment_problem
from fde.files import ParquetStream, atomic_outputs, atomic_path, require_fresh, save_npy, write_parquet
from fde.ids import customer_key_expr, format_article_id, parse_article_id
from fde.submission import check_submission


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


def test_atomic_path_removes_the_folders_it_made_when_the_write_fails(tmp_path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other.txt").write_text("a user's file")
    for target in (tmp_path / "new" / "deeper" / "out.csv", tmp_path / "kept" / "made" / "out.csv"):
        with pytest.raises(RuntimeError):
            with atomic_path(target) as tmp:
                tmp.write_text("half")
                raise RuntimeError("interrupted")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept", "kept/other.txt"]


def test_a_parquet_stream_writes_what_one_write_would(tmp_path):
    parts = [pl.DataFrame({"a": [i, i + 1], "s": [f"x{i}", None], "l": [[{"f": "t", "v": 0.5}], []]})
             for i in range(3)]
    with atomic_path(tmp_path / "out.parquet") as tmp, ParquetStream(tmp, parts[0].clear()) as stream:
        for part in parts:
            stream.write(part)
    assert stream.rows == 6 and pl.read_parquet(tmp_path / "out.parquet").equals(pl.concat(parts))
    with ParquetStream(tmp_path / "empty.parquet", parts[0].clear()):
        pass
    assert pl.read_parquet(tmp_path / "empty.parquet").schema == parts[0].schema


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


# ---------------------------------------------------------------------------- faults of the environment

def test_environment_problem_reads_errno_and_polars_text():
    assert environment_problem(OSError(errno.ENOSPC, "No space left on device", "/x/y")).startswith(
        "the disk is full (/x/y): free some space")
    polars_text = pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")
    assert environment_problem(polars_text).startswith("the disk is full")
    assert environment_problem(OSError(errno.EROFS, "Read-only file system")).startswith("the file system is read-only")
    assert environment_problem(OSError(errno.ENOENT, "No such file")) is None
    assert environment_problem(pl.exceptions.ComputeError("bad csv")) is None


def test_run_main_shows_a_full_disk_as_one_line(capsys):
    def main():
        raise OSError("No space left on device (os error 28)")
    with pytest.raises(SystemExit) as exit_:
        run_main(main)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ValueError):  # anything else is a bug: its traceback stays
        run_main(lambda: int("x"))


def test_check_writable_probes_without_creating(tmp_path):
    check_writable(tmp_path / "not" / "yet")  # the nearest existing folder above is probed
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot write to {blocker / 'out'}"):
        check_writable(blocker / "out")  # a file where the folder should be


def test_atomic_outputs_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "out" / "a.txt", tmp_path / "out" / "b.txt"
    with pytest.raises(OSError):
        with atomic_outputs() as outputs:
            outputs(a).write_text("new a")
            raise OSError(errno.ENOSPC, "No space left on device")  # while writing b
    assert list((tmp_path / "out").iterdir()) == []
    source = tmp_path / "in.csv"
    source.write_text("x\n1\n")
    with atomic_outputs(tmp_path / "out" / "manifest.json", [source], "python make.py", tmp_path) as outputs:
        outputs(a).write_text("a")
        outputs(b).write_text("b")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt", "manifest.json"]
    record = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert record["built_by"] == "python make.py" and list(record["inputs"]) == ["in.csv"]
    assert record["outputs"]["out/a.txt"]["size"] == 1


def test_require_fresh_names_the_command_when_an_input_changed(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("x\n1\n")
    manifest = tmp_path / "out" / "manifest.json"
    with pytest.raises(UserError, match="manifest.json is missing\\): run `python make.py`"):
        require_fresh(manifest, "python make.py", tmp_path)
    with atomic_outputs(manifest, [source], "python make.py", tmp_path) as outputs:
        outputs(tmp_path / "out" / "a.txt").write_text("a")
    require_fresh(manifest, "python make.py", tmp_path)
    stamp = source.stat().st_mtime_ns
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))  # a copy with new timestamps: still the same data
    require_fresh(manifest, "python make.py", tmp_path)
    source.write_text("x\n2\n")  # same size, other content
    with pytest.raises(UserError, match=r"in\.csv changed since it was used to build .*out/: rerun `python make.py`"):
        require_fresh(manifest, "python make.py", tmp_path)
    source.unlink()  # raw files deleted after conversion: no sign of staleness
    require_fresh(manifest, "python make.py", tmp_path)
    (tmp_path / "out" / "a.txt").write_text("other")
    with pytest.raises(UserError, match="a.txt was replaced since `python make.py` wrote"):
        require_fresh(manifest, "python make.py", tmp_path)


# ---------------------------------------------------------------------------- the submission

HEX = [f"{i:064x}" for i in range(4)]
GOOD = " ".join(f"{i:010d}" for i in range(1, 13))


@pytest.mark.parametrize("rows, message", [
    ([(HEX[0], GOOD), (HEX[1], GOOD), (HEX[2], GOOD)], "1 customers are missing"),
    ([], "submission has 0 rows for 4 customers: 4 customers are missing"),
    ([*[(h, GOOD) for h in HEX], (HEX[0], GOOD)], "1 customers have more than one row"),
    ([*[(h, GOOD) for h in HEX], ("f" * 64, GOOD)], "1 ids are not customers"),
    ([*[(h, GOOD) for h in HEX[1:]], (HEX[0], "-000000005 0108775015")], "1 predictions are not 1 to 12"),
    ([*[(h, GOOD) for h in HEX[1:]], (HEX[0], "")], "1 predictions are not 1 to 12"),
    ([*[(h, GOOD) for h in HEX[1:]], (HEX[0], GOOD + " 0108775015")], "1 predictions are not 1 to 12"),
])
def test_check_submission_refuses_a_submission_that_is_not_one_row_per_customer(rows, message):
    submission = pl.DataFrame(rows, schema={"customer_id": pl.String, "prediction": pl.String}, orient="row")
    with pytest.raises(UserError, match=message):
        check_submission(submission, pl.Series(HEX))


def test_check_submission_passes_a_complete_one():
    check_submission(pl.DataFrame({"customer_id": HEX, "prediction": [GOOD, "0108775015", GOOD, GOOD]}),
                     pl.Series(HEX))
