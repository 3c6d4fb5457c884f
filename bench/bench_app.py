"""Benchmark of the app's first visual-twin lookup on a 105k catalogue, and of page reruns.

    .venv/bin/python bench/bench_app.py                                   # first lookup, before vs after
    .venv/bin/python bench/bench_app.py --data-dir data --images-dir images   # + reruns of every view

First lookup: what the app does the first time anyone asks for an article's twins, each in a fresh
Python process (numpy and polars already imported, as in the app), timed from the import of the
module that answers until the answer:

- before: `VisualIndex.twins(aid)` without the twins table, as the app once answered (reads and
  normalises the whole feature matrix);
- after: `VisualIndex.load(...).twins(aid)`, the app's path now (maps the matrix, reads that one
  article's rows of visual_twins.parquet);
- after, uncovered: the same for a query the twins table cannot answer (k=48: a scan of the mapped
  matrix), and the next such query in the same process (the scan's unit rows are kept).

The catalogue is synthetic: 105,542 articles x 1,280 float16 features (mobilenet_v2's output, as
visual_features.py saves it) and a twins table of k=12 per article with random twins (the lookup
time does not depend on which articles they are). The files are fresh, hence in the page cache,
as after a pipeline run. Medians of --repeats processes, the paths interleaved; the ratio is
before / after in the same run. Reruns: the seconds of app.main() when each view reruns on a real
data dir (under AppTest, in one process; the browser's drawing is not included). Writes
bench/results/bench_app.{json,md} (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from fde import launch
from fde.artifacts import Artifacts
from fde.files import save_npy, write_parquet

CATALOGUE = 105_542  # Kaggle's articles.csv
DIM = 1280
TWINS_K = 12
RESULTS = Path(__file__).resolve().parent / "results"

FIRST_LOOKUP = r"""
import sys, time
import numpy, polars  # the app has these loaded before anyone asks for twins
from pathlib import Path
from fde.artifacts import Artifacts

art = Artifacts(Path({data!r}), Path({data!r}) / "images")
start = time.perf_counter()
from fde.visual_index import VisualIndex
index = VisualIndex.load(art)
if {path!r} == "before":
    index.twins_path = None  # no twins table: read and normalise the whole matrix, as the app once did
found = index.twins({aid}, k={k})
seconds = time.perf_counter() - start
assert found.height == {k}, found
if {path!r} == "after" and {k} > 12:  # the next such query in the same process reuses the scan
    start = time.perf_counter()
    index.twins(index.article_ids[0], k={k})
    print(time.perf_counter() - start)
print(seconds)
"""


def make_catalogue(data_dir: Path, n: int, dim: int, seed: int = 0) -> Artifacts:
    """visual_article_ids.npy, visual_features.npy (float16) and a k=12 visual_twins.parquet for n articles."""
    art = Artifacts(data_dir, data_dir / "images")
    rng = np.random.default_rng(seed)
    codes = np.sort(rng.choice(np.arange(108_775, 959_461), size=n // 4 + 1, replace=False))
    ids = (np.repeat(codes, 4)[:n] * 1000 + np.tile(np.arange(1, 5), n // 4 + 1)[:n]).astype(np.int32)
    save_npy(ids, art.visual_article_ids)
    features = np.lib.format.open_memmap(art.visual_features, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 16_384):
        stop = min(start + 16_384, n)
        features[start:stop] = rng.random((stop - start, dim), dtype=np.float32)
    features.flush()
    del features
    twins = rng.integers(0, n, size=(n, TWINS_K))
    write_parquet(pl.DataFrame({
        "article_id": np.repeat(ids, TWINS_K), "twin_id": ids[twins.ravel()],
        "rank": np.tile(np.arange(1, TWINS_K + 1), n), "score": np.tile(np.linspace(0.9, 0.8, TWINS_K), n),
    }, schema={"article_id": pl.Int32, "twin_id": pl.Int32, "rank": pl.UInt8, "score": pl.Float32}),
        art.visual_twins)
    return art


def first_lookup(data_dir: Path, path: str, aid: int, k: int) -> list[float]:
    """Seconds of one first lookup in a fresh process (and of the next one, for a query that scans)."""
    code = FIRST_LOOKUP.format(data=str(data_dir), path=path, aid=aid, k=k)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [float(line) for line in out.stdout.split()]
    return lines[-1:] + lines[:-1]


RERUN_SCRIPT = """
import sys, time
import app
start = time.perf_counter()
app.main()
with open({log!r}, "a") as log:
    log.write(f"{{time.perf_counter() - start}}\\n")
"""


def reruns(data_dir: Path, images_dir: Path, repeats: int) -> dict:
    """Median seconds of app.main() on a rerun of each view (after a first run that fills the caches).

    Run under AppTest through a wrapper that times the script itself (AppTest's own polling is left out).
    """
    from streamlit.testing.v1 import AppTest

    os.environ["FDE_DATA_DIR"], os.environ["FDE_IMAGES_DIR"] = str(data_dir), str(images_dir)
    art = Artifacts(data_dir, images_dir)
    some = int(np.load(art.visual_article_ids)[0]) if art.visual_article_ids.exists() else None
    new = launch.launches(pl.read_parquet(art.articles), pl.scan_parquet(art.transactions))
    customer = pl.read_parquet(art.customer_ids)["customer_id_hex"][0]
    pages = {"twins": {"view": "twins", "article": some}, "customers": {"view": "customers", "customer": customer},
             "launch": {"view": "launch", "article": new[0] if new.len() else some},
             "evaluation": {"view": "evaluation"}}
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench_app_reruns_") as tmp:
        log = Path(tmp) / "seconds.txt"
        script = Path(tmp) / "timed_app.py"
        script.write_text(RERUN_SCRIPT.format(log=str(log)))
        for name, query in pages.items():
            log.write_text("")
            at = AppTest.from_file(str(script), default_timeout=300)
            for key, value in query.items():
                at.query_params[key] = str(value)
            for _ in range(repeats + 1):
                at.run()
                assert not at.exception, [e.value for e in at.exception]
            first, *times = [float(line) for line in log.read_text().split()]
            result[name] = {"first_s": first, "rerun_median_s": statistics.median(times), "rerun_s": times}
            print(f"rerun {name}: first {first:.2f}s, rerun median {statistics.median(times):.3f}s", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per path (default: %(default)s)")
    parser.add_argument("--n", type=int, default=CATALOGUE, help="articles (default: %(default)s)")
    parser.add_argument("--data-dir", help="a pipeline's data dir: also time reruns of every view on it")
    parser.add_argument("--images-dir", default="images")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "catalogue": args.n, "dim": DIM, "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="bench_app_") as tmp:
        started = time.perf_counter()
        art = make_catalogue(Path(tmp) / "data", args.n, DIM)
        print(f"synthetic catalogue: {args.n:,} x {DIM} float16 + twins table in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
        ids = np.load(art.visual_article_ids)
        rng = np.random.default_rng(1)
        times = {"before": [], "after": [], "after_uncovered": [], "after_uncovered_next": []}
        for i in range(args.repeats):
            aid = int(rng.choice(ids))  # a different article each time: nothing is cached per article
            times["before"] += first_lookup(art.data_dir, "before", aid, 12)
            times["after"] += first_lookup(art.data_dir, "after", aid, 12)
            first, following = first_lookup(art.data_dir, "after", aid, 48)
            times["after_uncovered"].append(first)
            times["after_uncovered_next"].append(following)
            print(f"repeat {i + 1}: " + ", ".join(f"{name} {values[-1]:.3f}s" for name, values in times.items()),
                  flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    report["first_lookup"] = {name: {"median_s": medians[name], "runs_s": times[name]} for name in times}
    report["speedup"] = medians["before"] / medians["after"]
    report["speedup_uncovered"] = medians["before"] / medians["after_uncovered"]
    print(f"first lookup on {args.n:,} articles: before {medians['before']:.2f}s, after {medians['after']:.3f}s "
          f"({report['speedup']:.0f}x); a query the table cannot answer {medians['after_uncovered']:.2f}s, "
          "the next one "
          f"{medians['after_uncovered_next']:.2f}s", flush=True)
    if args.data_dir:
        report["reruns"] = reruns(Path(args.data_dir), Path(args.images_dir), args.repeats)

    lines = [f"# bench_app ({os.cpu_count()} CPUs)", "",
             f"First twin lookup on {args.n:,} articles x {DIM} float16 features, median of {args.repeats} fresh "
             "processes:", "", "| path | median s | runs |", "|---|---|---|"]
    for name in times:
        lines.append(f"| {name} | {medians[name]:.3f} | {', '.join(f'{t:.3f}' for t in times[name])} |")
    lines += ["", f"Speed-up (before / after): {report['speedup']:.1f}x"]
    if "reruns" in report:
        lines += ["", "| view | first run s | rerun median s |", "|---|---|---|"]
        lines += [f"| {name} | {r['first_s']:.2f} | {r['rerun_median_s']:.3f} |"
                  for name, r in report["reruns"].items()]
    (RESULTS / "bench_app.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "bench_app.md").write_text("\n".join(lines) + "\n")
    print(f"written {RESULTS / 'bench_app.md'}")


if __name__ == "__main__":
    main()
