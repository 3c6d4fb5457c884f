"""The ranking model: a trained LightGBM booster with path attribution, and the learned ranker as a recommender.

`Model` holds the booster and the feature names it reads; `LearnedRanker` proposes candidates from
every source (candidates.py), gives them features (features.py), scores them with the model, keeps
launch slots at the end of the list when the model was trained with some, and explains each item
(reasons.py). Training lives in training.py; the stage that trains and saves it is ranker.py.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading

import numpy as np
import polars as pl

from fde import artifacts as art
from fde import candidates, factors
from fde.errors import UserError
from fde.features import Context, feature_columns
from fde.files import atomic_outputs, write_json
from fde.ids import ARTICLE
from fde.reasons import explain
from fde.strategies import K, Popularity, Recommender, as_customer_frame, before, empty_candidates, top_k

SCORE_ROWS = 5_000_000  # a cost, not a behaviour: pool rows (with their features) in memory at once when scoring
# Costs of the compiled model (Model.compiled): compiling takes about as long as LightGBM scoring this many rows
# (both grow with the trees), so a model compiles once it has scored that many (in one frame or in all of
# them: a submission's batches, a trimmed pool's), and until then LightGBM scores; the compiled model reads
# float64, so it is fed this many rows at a time: a copy the allocator reuses (14 MB at 53 features); chunks of
# 250,000 rows (106 MB, faulted in afresh each time) took 3.3 s against 1.4 s for a 1.13M-row batch at full scale.
COMPILE_ROWS = 2_000_000
COMPILED_CHUNK_ROWS = 32_768
_ONCE = threading.Lock()  # what a Model makes once (compiled trees, path tables) when threads score batches
# rows per block when explaining: a block's leaf indices and sums stay in the CPU cache; one LightGBM pred_leaf
# call over 480,000 rows took 3.3 s against 1.9 s in blocks of 8,192 (it writes every tree's leaf as float64)
PATH_BLOCK_ROWS = 8_192
# Leaf indices as the compiled trees' raw outputs (Model.leaf_model): integers below 2**53 add exactly in float64,
# so one output holds the leaves of FLOAT_BITS // (bits per leaf) trees (10 trees of 31 leaves); explanations switch
# from LightGBM's pred_leaf to it once a Model has explained COMPILE_ROWS rows, as scoring does
FLOAT_BITS = 52
PRIORS = ("popular_age", "popular_decayed", "popular_last_week", "popular_all_time")  # the first proposes


def top_with_launches(frame: pl.DataFrame, k: int, slots: int) -> pl.DataFrame:
    """Each customer's k best rows by score, the last `slots` of them kept for launches when the pool has some.

    A launch is an article never sold before the cut-off (days_since_first_sale is null); a launch
    that already ranks in the top k - slots keeps its place, and a customer with fewer launches
    gets the next best articles instead. The order is found on a slim frame and the kept rows are then
    taken from the wide one (sorting every feature column of a batch's pool took 1.8x as long).
    """
    slim = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "customer_id", "article_id", "score",
                        *(["days_since_first_sale"] if slots else []))
    ranked = top_k(slim, k) if not slots else launch_places(slim, k, slots)
    return frame.select(pl.all().gather(ranked["_row"])).with_columns(rank=ranked["rank"])


def launch_places(frame: pl.DataFrame, k: int, slots: int) -> pl.DataFrame:
    """top_with_launches' rows with their rank (1..k), sorted by customer and rank."""
    new = pl.col("days_since_first_sale").is_null()
    ranked = (frame.sort(["customer_id", "score", "article_id"], descending=[False, True, False])
              .with_columns(_pos=pl.int_range(1, pl.len() + 1).over("customer_id"))
              # launches below the first k - slots places, counted in score order
              .with_columns(_new=(new & (pl.col("_pos") > k - slots)).cast(pl.UInt32).cum_sum().over("customer_id")))
    group = (pl.when(pl.col("_pos") <= k - slots).then(0)
             .when(new & (pl.col("_new") <= slots)).then(1).otherwise(2))
    return (ranked.with_columns(_group=group).sort(["customer_id", "_group", "_pos"])
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over("customer_id"))
            .filter(pl.col("rank") <= k).drop("_pos", "_new", "_group"))


# ---------------------------------------------------------------------------- the model

def compile_model_text(text: str, raw_score: bool = False):
    """A LightGBM model text compiled to machine code by lleaves (raw_score: no objective's transform)."""
    import lleaves

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.txt")
        with open(path, "w") as fh:
            fh.write(text)
        model = lleaves.Model(model_file=path)
        model.compile(raw_score=raw_score)
    return model


def leaf_index_text(text: str) -> tuple[str, np.ndarray, np.ndarray, int]:
    """A model text with the same trees whose raw outputs spell each row's leaf indices; how to read them back.

    Tree i's leaf k is worth k * 2**shift[i] to output outputs[i]: trees take turns over the outputs, each
    output's trees own disjoint bits below 2**FLOAT_BITS, so the float64 sums are exact whatever their order
    and (code >> shift[i]) & mask is tree i's leaf, as LightGBM's pred_leaf gives it.
    Returns (text, outputs, shifts, mask).
    """
    head, rest = text.split("\nTree=0\n", 1)
    trees, tail = rest.split("\nend of trees\n", 1)
    blocks = ("Tree=0\n" + trees).strip().split("\n\n")
    fields = [dict(line.split("=", 1) for line in block.split("\n") if "=" in line) for block in blocks]
    leaves = [int(f["num_leaves"]) for f in fields]
    bits = max(1, int(np.ceil(np.log2(max(leaves)))))
    width = FLOAT_BITS // bits  # trees per output
    n_out = -(-len(blocks) // width)
    blocks += ["\n".join([f"Tree={len(blocks) + j}", "num_leaves=1", "num_cat=0", "split_feature=", "threshold=",
                          "decision_type=", "left_child=", "right_child=", "leaf_value=0", "shrinkage=1"])
               for j in range(-len(blocks) % n_out)]  # a whole number of trees per output: leaf 0 adds nothing
    outputs = np.arange(len(fields)) % n_out
    shifts = (np.arange(len(fields)) // n_out) * bits
    for i, n in enumerate(leaves):
        value = " ".join(str(k << int(shifts[i])) for k in range(n))
        blocks[i] = "\n".join(f"leaf_value={value}" if line.startswith("leaf_value=") else line
                               for line in blocks[i].split("\n"))
    header = {"num_class": n_out, "num_tree_per_iteration": n_out, "objective": f"multiclass num_class:{n_out}",
              "tree_sizes": " ".join(str(len(block) + 2) for block in blocks)}
    lines = [f"{key}={header[key]}" if key in header else line
             for line in head.split("\n") for key in [line.split("=", 1)[0]]]
    out = "\n".join(lines) + "\n\n" + "\n\n".join(blocks) + "\n\nend of trees\n" + tail
    return out, outputs, shifts.astype(np.int64), (1 << bits) - 1


def file_sha256(path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class Model:
    """A trained booster, the feature names it reads, and what it was trained on."""

    def __init__(self, booster, features: list[str], meta: dict | None = None):
        self.booster = booster
        self.features = list(features)
        self.meta = dict(meta or {})

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """The model's inputs; a one-line error when the data gives other features than it was trained on."""
        known = set(self.features) | set(self.meta.get("dropped_features", []))
        present = set(feature_columns(frame))
        if not set(self.features) <= present or not present <= known:
            gone = sorted(set(self.features) - present)
            new = sorted(present - known)
            raise UserError(f"the saved ranker was trained on other features than this data gives (new: "
                            f"{', '.join(new) or '-'}; gone: {', '.join(gone) or '-'}): rerun `python ranker.py` "
                            "with this data's --data-dir/--images-dir")
        return frame.select(pl.col(f).cast(pl.Float32) for f in self.features).to_numpy()

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """The model's score of every row: by LightGBM until this Model has scored COMPILE_ROWS rows in all
        (this frame's included), then by the compiled trees; the two agree to float64 rounding
        (tests/test_ranker.py)."""
        x = self.matrix(frame)
        self._rows_scored = self.__dict__.get("_rows_scored", 0) + x.shape[0]
        if self._rows_scored < COMPILE_ROWS and "_compiled" not in self.__dict__:
            return self.booster.predict(x, num_threads=0)
        compiled, threads = self.compiled(), len(os.sched_getaffinity(0))
        out = np.empty(x.shape[0], dtype=np.float64)
        for start in range(0, x.shape[0], COMPILED_CHUNK_ROWS):
            # one C-ordered float64 copy (the matrix is column-major: astype kept that order, and lleaves copied
            # it again into rows)
            chunk = np.ascontiguousarray(x[start:start + COMPILED_CHUNK_ROWS], dtype=np.float64)
            out[start:start + chunk.shape[0]] = compiled.predict(chunk, n_jobs=threads)
        return out

    def compiled(self):
        """The booster compiled to machine code by lleaves (LLVM), made once per Model and process.

        It scores the same trees about 3-6x faster than LightGBM's own predict on 2 cores
        (bench/bench_predict.py); compiling 214 trees takes about 6 s."""
        with _ONCE:  # batches scored in threads compile once
            if "_compiled" not in self.__dict__:
                self._compiled = compile_model_text(self.booster.model_to_string())
        return self._compiled

    def leaf_model(self) -> tuple:
        """The trees compiled (once per Model and process) to give each row's leaf indices, and how to read them:
        (compiled model, output of each tree, bit shift of each tree, leaf mask). See leaf_index_text."""
        with _ONCE:
            if "_leaf_model" not in self.__dict__:
                text, outputs, shifts, mask = leaf_index_text(self.booster.model_to_string())
                self._leaf_model = (compile_model_text(text, raw_score=True), outputs, shifts, mask)
        return self._leaf_model

    def tree_leaves(self, x: np.ndarray) -> np.ndarray:
        """Each row's leaf index in every tree, trees x rows (LightGBM's pred_leaf, transposed): by LightGBM until
        this Model has explained COMPILE_ROWS rows in all, then by the compiled leaf model (the same integers)."""
        self._rows_explained = self.__dict__.get("_rows_explained", 0) + x.shape[0]
        if self._rows_explained < COMPILE_ROWS and "_leaf_model" not in self.__dict__:
            return np.ascontiguousarray(self.booster.predict(x, pred_leaf=True, num_threads=0).T)
        compiled, outputs, shifts, mask = self.leaf_model()
        codes = compiled.predict(np.ascontiguousarray(x, dtype=np.float64),
                                 n_jobs=len(os.sched_getaffinity(0))).reshape(x.shape[0], -1)
        return (codes.astype(np.int64).T[outputs] >> shifts[:, None]) & mask

    def __getstate__(self) -> dict:
        """Pickled (for Ray's workers) without the compiled code: each process compiles its own."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_compiled", "_leaf_model")}

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        """Each feature's SHAP contribution to each row's score (LightGBM pred_contrib, bias dropped).

        Exact but slow (about 1 ms a row here): for a few rows. `path_contributions` scales.
        """
        return self.booster.predict(self.matrix(frame), pred_contrib=True)[:, :-1]

    def path_tables(self, groups: tuple[int, ...]) -> tuple[list[np.ndarray], float]:
        """Per tree, leaf -> what each feature group added along the path to it; and the trees' summed root value.

        groups[i] is feature i's group. Each split moves the value from a node's to its child's,
        and the change is credited to the split's feature (the path attribution that XGBoost offers
        as approx_contribs): a row's credits plus the bias add up to its score exactly.
        """
        with _ONCE:  # batches explained in threads make the tables once
            return self._make_path_tables(groups)

    def _make_path_tables(self, groups: tuple[int, ...]) -> tuple[list[np.ndarray], float]:
        cache = self.__dict__.setdefault("_path_tables", {})
        if groups in cache:
            return cache[groups]
        width = max(groups) + 1
        tables, bias = [], 0.0
        for tree in self.booster.dump_model()["tree_info"]:
            root = tree["tree_structure"]
            table = np.zeros((tree["num_leaves"], width), dtype=np.float64)
            tables.append(table)
            if "leaf_value" in root:  # a tree without a split
                bias += root["leaf_value"]
                continue
            bias += root["internal_value"]
            stack = [(root, np.zeros(width))]
            while stack:
                node, credit = stack.pop()
                group = groups[node["split_feature"]]
                for child in (node["left_child"], node["right_child"]):
                    step = credit.copy()
                    step[group] += child.get("internal_value", child.get("leaf_value")) - node["internal_value"]
                    if "leaf_index" in child:
                        table[child["leaf_index"]] = step
                    else:
                        stack.append((child, step))
        cache[groups] = (tables, bias)
        return tables, bias

    def path_contributions(self, frame: pl.DataFrame, groups: tuple[int, ...]) -> np.ndarray:
        """Each row's score split over feature groups by path attribution (see path_tables); one predict's cost."""
        tables, _ = self.path_tables(groups)
        x = self.matrix(frame)
        out = np.zeros((frame.height, max(groups) + 1), dtype=np.float32)
        # tree after tree (the same sums in the same order), over blocks of rows whose sums stay in the CPU cache
        for start in range(0, frame.height, PATH_BLOCK_ROWS):
            block = self.tree_leaves(x[start:start + PATH_BLOCK_ROWS])  # tree x rows
            total = np.zeros((block.shape[1], out.shape[1]), dtype=np.float64)
            for tree, table in enumerate(tables):
                total += table[block[tree]]
            out[start:start + block.shape[1]] = total
        return out

    def importance(self) -> list[dict]:
        gains = self.booster.feature_importance(importance_type="gain")
        rows = sorted(zip(self.features, gains), key=lambda r: -r[1])
        return [{"feature": f, "gain": round(float(g), 3)} for f, g in rows]

    def save(self, artifacts: art.Artifacts, inputs=(), last_factors: factors.Factors | None = None) -> None:
        """model.txt and ranker.json as one pair: ranker.json holds model.txt's hash, and both appear together
        with results/ranker/manifest.json (the fingerprints of `inputs`, the data it was trained on), and
        last_factors (the validation week's ALS factors, final.py's next fits start from them) when given."""
        with atomic_outputs(artifacts.manifest("ranker.py"), inputs, artifacts.command("ranker.py"),
                            artifacts.data_dir) as outputs:
            if last_factors is not None:
                last_factors.save(outputs(artifacts.ranker_factors))
            model = outputs(artifacts.ranker_model)
            self.booster.save_model(str(model))
            write_json({**self.meta, "features": self.features, "feature_importance": self.importance(),
                        "model_sha256": file_sha256(model)}, outputs(artifacts.ranker_meta))
        if last_factors is None:  # no factors (no purchases in their window): none of an older run's either,
            artifacts.ranker_factors.unlink(missing_ok=True)  # once the new set is in place

    @classmethod
    def load(cls, artifacts: art.Artifacts) -> Model:
        """The saved ranker; a one-line error naming the command when absent, stale, damaged or not one pair."""
        import lightgbm as lgb

        command = artifacts.command("ranker.py")  # ranker.py reads no images: it takes --data-dir alone
        art.require(artifacts.ranker_model, command)
        art.require_fresh_if_built(artifacts, "ranker.py", artifacts.ranker_model, artifacts.ranker_meta)
        meta = art.load_damaged(artifacts.ranker_meta, command, lambda path: json.loads(path.read_text()))
        if not isinstance(meta, dict) or meta.get("model_sha256") != file_sha256(artifacts.ranker_model):
            raise UserError(f"{artifacts.ranker_model} and {artifacts.ranker_meta} are not one pair (written by "
                            f"different runs, or one is damaged): rerun `{command}`")
        booster = art.load_damaged(artifacts.ranker_model, command, lambda path: lgb.Booster(model_file=str(path)))
        if booster.feature_name() != meta["features"]:
            raise UserError(f"{artifacts.ranker_model} and {artifacts.ranker_meta} disagree: rerun `{command}`")
        return cls(booster, meta["features"], meta)



# ---------------------------------------------------------------------------- the ranker as a recommender

class LearnedRanker(Recommender):
    """Candidates from every source, scored by the trained model; reasons from its feature contributions."""

    name = "ranker"

    def __init__(self, model: Model | None, populars: list[Popularity], personal: list[Recommender],
                 customers: pl.DataFrame, vectors: dict | None = None,
                 depths: dict[str, int] | None = None, launch_slots: int | None = None):
        """depths: each source's candidates per customer (default: what ranker.py chose on validation, saved
        with the model, which then also says how deep the scored pool goes: pool_depths); launch_slots:
        places kept for launches (default: the model's choice)."""
        self.model = model
        by_name = {p.name: p for p in populars}
        self.popular = [by_name[name] for name in PRIORS if name in by_name]
        self.personal = personal
        self.customers = customers
        self.vectors = vectors
        # every candidate keeps the evidence of every source at its depth (the features the model learned
        # from); the rows scored may stop earlier (training.choose_pool): None scores the whole pool
        self.pool_depths = model.meta.get("pool_depths") if model is not None and depths is None else None
        depths = depths if depths is not None else (model.meta.get("depths") if model is not None else None)
        self.n_candidates = depths or candidates.N_CANDIDATES
        self.n_popular = candidates.depth_of(depths or {}, self.proposer, candidates.N_POPULAR)
        if launch_slots is None:
            launch_slots = int(model.meta.get("launch_slots", 0)) if model is not None else 0
        self.launch_slots = launch_slots

    @property
    def rows_per_customer(self) -> float:
        """Pool rows a scored customer has, as measured on the validation week's buyers (who buy more, so have
        more rows, than customers on average): the scored pool's, else the whole pool's, else POOL_ROWS."""
        meta = self.model.meta if self.model is not None else {}
        chosen = [step for step in meta.get("pool_steps") or [] if step.get("chosen")]
        rows = (chosen[0]["rows_per_customer"] if chosen and self.pool_depths
                else (meta.get("recall_curves") or {}).get("choice", {}).get("rows_per_customer"))
        return float(rows) if rows else float(candidates.POOL_ROWS)

    def customers_per_batch(self, threads: int = 1) -> int:
        """Customers scored at once by each of `threads` batches so that all of them hold SCORE_ROWS pool rows."""
        return max(1, int(SCORE_ROWS / max(self.rows_per_customer, 1.0)) // threads)

    @property
    def proposer(self) -> str | None:
        """The popularity prior whose top articles every customer's pool gets."""
        return self.popular[0].name if self.popular else None

    def sources(self) -> list[Recommender]:
        """Every source that proposes candidates: the personal ones and the proposing prior."""
        return [*self.personal, *self.popular[:1]]

    def fit(self, transactions, articles, cutoff=None, customers=None, fit_sources: bool = True,
            chain: factors.Chain | None = None):
        """Fit every source at the cut-off (unless already fitted there) and the feature context (its ALS
        factors as chain's next, when given)."""
        transactions, self.cutoff = before(transactions, cutoff)
        if fit_sources:
            for strategy in [*self.popular, *self.personal]:
                strategy.fit(transactions, articles, self.cutoff, customers)
        self.articles = articles
        self.context = Context(transactions, articles, self.customers, self.cutoff, self.vectors, chain)
        return self

    def pool(self, customers: pl.DataFrame) -> pl.DataFrame:
        """The candidate pool of these customers: every source's evidence, no features yet."""
        return candidates.build(self.personal, self.popular, customers, self.n_candidates, self.n_popular,
                                scored=self.pool_depths)

    def pool_keys(self, customers: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
        """The pool's (customer_id, article_id) pairs and each source's candidates, not annotated yet
        (candidates.pooled_keys): a training week annotates the rows it keeps."""
        return candidates.pooled_keys(self.personal, self.popular, customers, self.n_candidates, self.n_popular,
                                      scored=self.pool_depths)

    def frame(self, customers: pl.DataFrame) -> pl.DataFrame:
        """The pool of these customers with every feature."""
        return self.context.features(self.pool(customers))

    def scored(self, customers: pl.DataFrame, n: int) -> pl.DataFrame:
        """Each customer's top n pooled rows by the model's score, with all their features.

        In batches of customers_per_batch(): only one batch's pool and features (SCORE_ROWS rows) are in
        memory at a time (scoring a full-scale test week's 80,000 buyers at once took 12 GB)."""
        frame = as_customer_frame(customers)
        step = self.customers_per_batch()
        parts = []
        for start in range(0, max(frame.height, 1), step):
            pool = self.frame(frame.slice(start, step))
            pool = pool.with_columns(score=pl.Series(self.model.predict(pool), dtype=pl.Float32))
            parts.append(top_with_launches(pool, n, self.launch_slots))
        return pl.concat(parts, how="vertical_relaxed")

    def candidates(self, customers, n):
        ranked = self.scored(customers, n)
        return ranked.select("customer_id", "article_id", "score", source_article_id=source_of(ranked))

    def score_pairs(self, pairs: pl.DataFrame, unsold: bool = False) -> pl.DataFrame:
        """Given (customer_id, article_id) pairs scored and explained: score, reason, source_article_id, explanation.

        Each pair gets every source's evidence, as a pooled candidate would (candidates.annotate). unsold: the
        pairs' articles never sold before the cut-off (launches), so the sources whose candidates cannot hold
        them (proposes_unsold False: repurchase, co-purchase, what sells now) are not asked: no evidence either way.
        """
        customers = pairs.select(pl.col("customer_id").cast(pl.UInt64)).unique().sort("customer_id")
        asked = [s for s in self.personal if s.proposes_unsold or not unsold]
        found = candidates.proposals(asked, customers, self.n_candidates)
        proposed = {s.name: found.get(s.name, empty_candidates()) for s in self.personal}
        frame = self.context.features(candidates.annotate(pairs, proposed, self.popular))
        frame = frame.with_columns(score=pl.Series(self.model.predict(frame), dtype=pl.Float32),
                                   rank=pl.lit(0, dtype=pl.UInt16))
        return explain(frame, self.model, self.articles).drop("rank")

    def recommend_explained(self, customers: pl.DataFrame, k: int = K) -> pl.DataFrame:
        """Top k with reason (words) and explanation (the largest feature-family contributions)."""
        ranked = self.scored(customers, k)
        return explain(ranked, self.model, self.articles)


def source_of(ranked: pl.DataFrame) -> pl.Expr:
    """The purchase that best explains each row: bought itself, else a co-purchase, colourway or look-alike."""
    expr = pl.when(pl.col("times_bought") > 0).then(pl.col("article_id"))
    for column in ("source__co_purchase", "source__colourways", "sim_visual_source", "sim_content_source"):
        if column in ranked.columns:
            expr = expr.when(pl.col(column).is_not_null()).then(pl.col(column))
    return expr.otherwise(None).cast(ARTICLE)
