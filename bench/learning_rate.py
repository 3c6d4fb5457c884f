"""What LightGBM's learning rate trades: `ranker.py` + `final.py` seconds against validation and test MAP@12.

The demo's 90-s target (issue 15) is mostly LightGBM: three set-ups early-stopped on the validation week, then
the chosen one retrained. A higher learning rate stops in fewer rounds. For each rate this runs `ranker.py`
(with `training.PARAMS["learning_rate"]` set to it) and then `final.py` from a shell, each rate on a copy of
the data dir's inputs (every folder but raw/ and results/; the original's results are never
touched), and prints one row per rate: the set-up chosen, its rounds and those of the set-ups tried,
validation and test MAP@12, the hybrid's test MAP@12, and the median seconds of each stage over --repeats
runs (the rates alternating).

    python bench/learning_rate.py --data-dir data --rates 0.05 0.1 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fde import artifacts as art
from fde.cli import run_main, summary
from fde.files import write_json

ROOT = Path(__file__).resolve().parent.parent
# run a stage as `python X.py` would, with the learning rate set first (ranker.py reads training.PARAMS)
WRAPPER = ("import runpy, sys; import fde.training as t; t.PARAMS = {{**t.PARAMS, 'learning_rate': {rate}}}; "
           "sys.argv = [{script!r}, '--data-dir', {data!r}, '--no-progress']; "
           "runpy.run_path({path!r}, run_name='__main__')")


def inputs_copy(data_dir: Path, to: Path) -> Path:
    """A data dir holding what ranker.py and final.py read from data_dir: every folder but raw/ (the CSVs,
    gigabytes at full scale, which neither reads) and results/ (which they write)."""
    to.mkdir(parents=True)
    for folder in data_dir.iterdir():
        if folder.is_dir() and folder.name not in ("raw", "results"):
            shutil.copytree(folder, to / folder.name)
    return to


def run_stage(script: str, data_dir: Path, rate: float) -> float:
    """Seconds of `python script --data-dir data_dir` with this learning rate; its output goes to a log."""
    code = WRAPPER.format(rate=rate, script=script, data=str(data_dir), path=str(ROOT / script))
    start = time.perf_counter()
    with open(data_dir / f"{script}.log", "w") as log:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{script} failed at learning rate {rate}: see {data_dir / (script + '.log')}")
    return time.perf_counter() - start


def run_rate(data_dir: Path, rate: float) -> dict:
    """ranker.py then final.py at this rate on a copy of data_dir's inputs: what they chose, scored and took."""
    with tempfile.TemporaryDirectory(prefix="lr_") as tmp:
        copy = inputs_copy(data_dir, Path(tmp) / "data")
        ranker_s, final_s = run_stage("ranker.py", copy, rate), run_stage("final.py", copy, rate)
        out = art.Artifacts(copy)
        ranker = json.loads(out.ranker_meta.read_text())
        tested = json.loads(out.metrics.read_text())["strategies"]
    setups = ranker["setups"].values()
    return {"learning_rate": ranker["params"]["learning_rate"], "setup": ranker["setup"],
            "rounds": ranker["rounds"], "set_up_rounds": [s["rounds"] for s in setups],
            "validation_map12": ranker["validation_map12"], "test_map12": tested["ranker"]["map12"],
            "hybrid_test_map12": tested["hybrid"]["map12"], "training_s": [ranker["seconds"]["training"]],
            "ranker_s": [ranker_s], "final_s": [final_s]}


def bench(data_dir: Path, rates: list[float], repeats: int) -> list[dict]:
    """One row per rate; the seconds are medians of `repeats` runs, the rates alternating (a shared machine's
    speed drifts), the choices and scores those of every run (the same: LightGBM is seeded)."""
    rows: dict[float, dict] = {}
    for _ in range(repeats):
        for rate in rates:
            run = run_rate(data_dir, rate)
            if rate in rows:
                for key in ("training_s", "ranker_s", "final_s"):
                    rows[rate][key] += run[key]
            else:
                rows[rate] = run
    out = []
    for rate, row in rows.items():
        row["runs"] = len(row["ranker_s"])
        row |= {f"{key}_runs": row[key] for key in ("training_s", "ranker_s", "final_s")}
        row |= {key: statistics.median(row[key]) for key in ("training_s", "ranker_s", "final_s")}
        print(f"learning rate {rate}: {row['setup']}, {row['rounds']} rounds (set-ups early-stopped at "
              f"{', '.join(map(str, row['set_up_rounds']))}); validation {row['validation_map12']:.4f}, "
              f"test {row['test_map12']:.4f} (hybrid {row['hybrid_test_map12']:.4f}); medians of {row['runs']}: "
              f"LightGBM {row['training_s']:.1f} s, ranker.py {row['ranker_s']:.1f} s + final.py "
              f"{row['final_s']:.1f} s = {row['ranker_s'] + row['final_s']:.1f} s", flush=True)
        out.append(row)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data", help="a data dir after split_data.py (and the visual stages)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1], help="learning rates to try")
    parser.add_argument("--repeats", type=int, default=1, help="runs per rate (seconds: their median)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning_rate.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = bench(Path(args.data_dir), args.rates, args.repeats)
    write_json(rows, Path(args.out))
    summary("bench.learning_rate", rates=len(rows), seconds=time.perf_counter() - start, output=args.out)


if __name__ == "__main__":
    run_main(main)
