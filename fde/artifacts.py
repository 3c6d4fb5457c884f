"""Where every artifact of the pipeline lives: the one contract between the stages.

Each stage takes `--data-dir` (default `data`) and, where it reads images,
`--images-dir` (default `images`), builds an `Artifacts` and reads or writes only the
paths named here. Layout under the data dir:

    raw/            articles.csv, customers.csv, transactions_train.csv (Kaggle files, never overwritten)
    processed/      compact Parquet from data_optim.py, plus customer_ids.parquet and rejects/
    split/          train/validation/test transactions, *_truth.parquet, split.json
    visual/         visual_features.npy, visual_article_ids.npy, visual_meta.json, chunks/, visual_twins.parquet
    results/        metrics.json, recommendations.parquet, submission.csv, launch_audience.parquet
    results/ranker/ model.txt (LightGBM), ranker.json (features, training weeks, importance)
    search/         the search's catalogue (price bands) and text index, with their manifest (search.py)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from fde import files
from fde.errors import UserError

DEFAULT_DATA_DIR = "data"
DEFAULT_IMAGES_DIR = "images"
IMAGE_STAGES = ("sample_data.py", "visual_features.py")  # the stages that take --images-dir


@dataclass(frozen=True)
class Artifacts:
    """Paths of every input and output, rooted at a data dir and an images dir."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    images_dir: Path = Path(DEFAULT_IMAGES_DIR)

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "images_dir", Path(self.images_dir))

    # raw Kaggle files (input; the generator writes them only with --force over existing ones)
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def raw_articles(self) -> Path:
        return self.raw_dir / "articles.csv"

    @property
    def raw_customers(self) -> Path:
        return self.raw_dir / "customers.csv"

    @property
    def raw_transactions(self) -> Path:
        return self.raw_dir / "transactions_train.csv"

    # data_optim.py
    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def articles(self) -> Path:
        return self.processed_dir / "articles.parquet"

    @property
    def customers(self) -> Path:
        return self.processed_dir / "customers.parquet"

    @property
    def transactions(self) -> Path:
        return self.processed_dir / "transactions.parquet"

    @property
    def customer_ids(self) -> Path:
        """UInt64 key -> original 64-hex customer_id."""
        return self.processed_dir / "customer_ids.parquet"

    @property
    def rejects_dir(self) -> Path:
        return self.processed_dir / "rejects"

    def rejects(self, table: str) -> Path:
        return self.rejects_dir / f"{table}_rejects.csv"

    # split_data.py
    @property
    def split_dir(self) -> Path:
        return self.data_dir / "split"

    def split(self, part: str) -> Path:
        """Transactions of one part: 'train', 'validation' or 'test'."""
        return self.split_dir / f"{part}.parquet"

    def truth(self, part: str) -> Path:
        """Ground truth of a held-out week: customer_id, article_ids (unique, list)."""
        return self.split_dir / f"{part}_truth.parquet"

    @property
    def split_info(self) -> Path:
        return self.split_dir / "split.json"

    # visual_features.py / visual_reccs.py
    @property
    def visual_dir(self) -> Path:
        return self.data_dir / "visual"

    @property
    def visual_features(self) -> Path:
        return self.visual_dir / "visual_features.npy"

    @property
    def visual_article_ids(self) -> Path:
        return self.visual_dir / "visual_article_ids.npy"

    @property
    def visual_meta(self) -> Path:
        return self.visual_dir / "visual_meta.json"

    @property
    def visual_chunks_dir(self) -> Path:
        return self.visual_dir / "chunks"

    @property
    def visual_plan(self) -> Path:
        """Which images go in which chunk: shards of one run must share it."""
        return self.visual_chunks_dir / "plan.json"

    @property
    def visual_onnx_dir(self) -> Path:
        """The network exported to ONNX, one file per weights and export recipe (backbones.onnx_model)."""
        return self.visual_dir / "onnx"

    @property
    def visual_twins(self) -> Path:
        return self.visual_dir / "visual_twins.parquet"

    # final.py
    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def metrics(self) -> Path:
        return self.results_dir / "metrics.json"

    @property
    def recommendations(self) -> Path:
        """Hybrid top-12 for every customer, trained on all data, with a reason per item."""
        return self.results_dir / "recommendations.parquet"

    @property
    def submission(self) -> Path:
        return self.results_dir / "submission.csv"

    @property
    def launch_audience(self) -> Path:
        """Launches (no sales before the cut-off) -> their likeliest customers, with reasons."""
        return self.results_dir / "launch_audience.parquet"

    # ranker.py
    @property
    def ranker_dir(self) -> Path:
        return self.results_dir / "ranker"

    @property
    def ranker_model(self) -> Path:
        """The LightGBM LambdaRank model (text format)."""
        return self.ranker_dir / "model.txt"

    @property
    def ranker_factors(self) -> Path:
        """The ALS factors of the last week ranker.py framed (validation): final.py's fits start from them."""
        return self.ranker_dir / "factors.npz"

    @property
    def ranker_meta(self) -> Path:
        """The ranker's feature list, training weeks, parameters and feature importance."""
        return self.ranker_dir / "ranker.json"

    # search.py --index ann (fde/ann.py): the image vectors' approximate index, built once, beside them
    @property
    def search_ann_index(self) -> Path:
        return self.visual_dir / "search_ann.faiss"

    @property
    def search_ann_projection(self) -> Path:
        """The index's projection of the image vectors (D x 256), empty when they are stored whole."""
        return self.visual_dir / "search_ann_projection.npy"

    @property
    def search_ann_settings(self) -> Path:
        """The index's lists, the nprobe chosen at build time and the recall it measured (fde.ann.AnnIndex)."""
        return self.visual_dir / "search_ann_settings.json"

    @property
    def search_ann_manifest(self) -> Path:
        return self.visual_dir / "search_ann.json"

    # search.py (fde/search.py), exact search: the image vectors as unit float32 rows, made once and then
    # memory-mapped (a fresh process answers without converting the float16 features again)
    @property
    def search_unit_vectors(self) -> Path:
        return self.visual_dir / "search_unit.npy"

    @property
    def search_unit_manifest(self) -> Path:
        return self.visual_dir / "search_unit.json"

    # search.py (fde/search.py): built from processed/ by data_optim.py (or the first search), rebuilt when it changes
    @property
    def search_dir(self) -> Path:
        return self.data_dir / "search"

    @property
    def search_catalogue(self) -> Path:
        """The searchable articles: id, product code, median price and price band, in the text index's row order."""
        return self.search_dir / "catalogue.parquet"

    @property
    def search_text_index(self) -> Path:
        """BM25 weights of every article's words (scipy sparse, articles x vocabulary)."""
        return self.search_dir / "text_index.npz"

    @property
    def search_vocabulary(self) -> Path:
        return self.search_dir / "vocabulary.json"

    @property
    def search_manifest(self) -> Path:
        """What the search catalogue was built from (articles.parquet, transactions.parquet)."""
        return self.search_dir / "manifest.json"

    @property
    def search_text_manifest(self) -> Path:
        """What the text index and vocabulary were built from (articles.parquet)."""
        return self.search_dir / "text_manifest.json"

    def manifest(self, script: str) -> Path:
        """What the outputs of `script` were built from: the fingerprints of its inputs and outputs."""
        return {"data_optim.py": self.processed_dir / "manifest.json",
                "split_data.py": self.split_dir / "manifest.json",
                "visual_features.py": self.visual_dir / "manifest.json",
                "visual_reccs.py": self.visual_dir / "twins_manifest.json",
                "ranker.py": self.ranker_dir / "manifest.json", "final.py": self.results_dir / "manifest.json"}[script]

    def command(self, script: str) -> str:
        """The command line that runs `script` on these folders (for "run X first" messages); --images-dir
        for the stages that take it (IMAGE_STAGES)."""
        parts = ["python", script]
        if self.data_dir != Path(DEFAULT_DATA_DIR):
            parts += ["--data-dir", str(self.data_dir)]
        if script in IMAGE_STAGES and self.images_dir != Path(DEFAULT_IMAGES_DIR):
            parts += ["--images-dir", str(self.images_dir)]
        return " ".join(parts)

    def image(self, article_id: int) -> Path:
        """Kaggle layout: images/<first 3 digits>/<10-digit id>.jpg."""
        text = f"{int(article_id):010d}"
        return self.images_dir / text[:3] / f"{text}.jpg"


def require(path: Path, command: str) -> Path:
    """Return `path`, or stop with a message naming the command that makes it."""
    if not Path(path).exists():
        raise UserError(f"{path} not found: run `{command}` first")
    return Path(path)


def require_fresh(artifacts: Artifacts, *scripts: str) -> None:
    """Stop, naming the command to rerun, if the outputs of any of `scripts` (in pipeline order) are
    missing, were replaced, or were built from inputs that have changed since."""
    for script in scripts:
        manifest = artifacts.manifest(script)
        if not manifest.parent.exists():
            raise UserError(f"{manifest.parent} not found: run `{artifacts.command(script)}` first")
        files.require_fresh(manifest, artifacts.command(script), artifacts.data_dir)


def require_fresh_if_built(artifacts: Artifacts, script: str, *outputs: Path) -> bool:
    """For an optional stage (visual features, twins, the ranker): False when none of its `outputs` exist,
    True when they are fresh; else the one-line error of require_fresh naming the command to rerun."""
    if not any(Path(p).exists() for p in outputs):
        return False
    files.require_fresh(artifacts.manifest(script), artifacts.command(script), artifacts.data_dir)
    return True


def load_damaged(path: Path, command: str, read):
    """read(path), or a one-line error naming `command` when the file cannot be parsed (truncated, say)."""
    try:
        return read(require(path, command))
    except UserError:
        raise
    except Exception as exc:  # numpy, json, polars and LightGBM each raise their own kind for a damaged file
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # permissions, a full disk: said by run_main, not a damaged file
        why = (str(exc).splitlines() or [""])[0][:120]
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {why}): rerun `{command}`") from None


def images_without_features(artifacts: Artifacts) -> dict[int, str]:
    """article_id -> why it has no image feature (no image file, or an unreadable one), from visual_meta.json."""
    import json

    if not artifacts.visual_meta.exists():
        return {}
    meta = json.loads(artifacts.visual_meta.read_text())
    reasons = {int(a): "has no image file" for a in meta.get("missing_article_ids", [])}
    reasons.update({int(u["article_id"]): f"has an unreadable image ({u['error']})"
                    for u in meta.get("unreadable", [])})
    return reasons


def read_parquet(path: Path, command: str) -> pl.DataFrame:
    """Read an artifact, or say which command writes it (or rewrites it, when it is damaged)."""
    return load_damaged(path, command, pl.read_parquet)


def add_dir_args(parser, images: bool = False) -> None:
    """Add --data-dir (and --images-dir) to a stage's argument parser."""
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder with raw/ and every artifact (default: %(default)s)")
    if images:
        parser.add_argument("--images-dir", default=DEFAULT_IMAGES_DIR,
                            help="folder laid out like Kaggle's images/0XX/0XXXXXXXXX.jpg "
                                 "(default: %(default)s)")


def from_args(args) -> Artifacts:
    """Artifacts for the --data-dir/--images-dir of parsed arguments."""
    return Artifacts(Path(args.data_dir), Path(getattr(args, "images_dir", DEFAULT_IMAGES_DIR)))
