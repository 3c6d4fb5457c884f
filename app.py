"""Fashion discovery app: an article's visual twins, a customer's recommendations and why, who to show a
new launch to, the evaluation, and search from a photo or from words.

    python -m streamlit run app.py -- --data-dir data --images-dir images

The folders can also be given as FDE_DATA_DIR / FDE_IMAGES_DIR (the command line wins).
The app only reads what the pipeline saved (fde/artifacts.py names every file) and recomputes
nothing; a missing piece is named in the page together with the command that writes it.
The page state (view, article, customer, options) lives in the URL, so a link can be shared, e.g.
`?view=launch&article=0108775015` (URL_PARAMETERS lists them; the README too).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import re
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import streamlit as st
from PIL import Image, ImageDraw, ImageFont, ImageOps

from fde import launch
from fde import search as catalogue_search
from fde.artifacts import DEFAULT_DATA_DIR, DEFAULT_IMAGES_DIR, Artifacts, require, require_fresh_if_built
from fde.errors import UserError
from fde.ids import format_article_id, parse_article_id
from fde.visual_index import VisualIndex

START = "python -m streamlit run app.py -- --data-dir data --images-dir images"
if __name__ == "__main__" and not st.runtime.exists():  # `python app.py`: say how to start it instead
    sys.exit(f"start the app with: {START}")

DEFAULT_K = 12              # twins shown by default: one Kaggle prediction's worth
MAX_K = 48
GRID_COLUMNS = 6            # cards per row on a wide screen (the grid wraps on narrow ones)
THUMB_SIZE = (300, 450)     # product photos are 2:3 portrait; thumbnails keep that shape
SAME_GROUP_FETCH = 8        # fetch k x this many twins before keeping those of the query's index group
FETCH_MAX = 255             # VisualIndex.twins answers up to 255 (its rank is a UInt8)
RECENT_PURCHASES = 8
SAMPLE_CUSTOMERS = 24
SAMPLE_WINDOW_DAYS = 28     # sample customers bought something in the last four weeks
DEFAULT_TOP, MAX_TOP = 100, 1000   # launch audience listed and exported
VIEWS = ("Visual twins", "Customers", "Launch audience", "Evaluation", "Search")
VIEW_SLUGS = dict(zip(VIEWS, ("twins", "customers", "launch", "evaluation", "search")))  # what ?view= says
URL_PARAMETERS = {  # every input a link carries (README: "Share a page")
    "view": "the tab: twins, customers, launch, evaluation or search (or its label, e.g. Launch+audience)",
    "article": "an article id, 0108775015 or 108775015 (Visual twins and Launch audience)",
    "k": f"twins to show, 4-{MAX_K} (Visual twins)",
    "hide_colourways": "true: leave out the other colours of the same product (Visual twins)",
    "same_group": "true: only twins from the article's index group (Visual twins)",
    "customer": "a 64-hex customer_id or its last 16 hex digits (Customers)",
    "top": f"customers listed and exported, 10-{MAX_TOP} (Launch audience)",
    "q": "words to search for, e.g. black+slim+jeans (Search)",
    "index_group": "only this index group, e.g. Ladieswear (Search)",
    "product_type": "only this product type, e.g. Trousers (Search)",
    "colour": "only this colour group, e.g. Dark+Blue (Search)",
    "price_band": "low, mid or high: a third of the product type's prices (Search)",
    "one_per_product": "true: the best colourway of each product only (Search)",
}
SEARCH_FILTERS = {"index_group": "Index group", "product_type": "Product type", "colour": "Colour"}
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
TOP_FEATURES = 15                  # the ranker's features shown by gain
MAX_PICKER = 500                   # launches offered in the picker (any other can be typed)
META_COLUMNS = ("article_id", "product_code", "prod_name", "product_type_name", "product_group_name",
                "colour_group_name", "graphical_appearance_name", "department_name", "index_group_name")
REASON_COLOURS = (("bought before", "green"), ("colourway", "blue"), ("looks like", "violet"),
                  ("description", "orange"))  # popularity reasons (trending, bestseller, ...) stay grey
HIGHLIGHT, MUTED = "#c53948", "#b9b4ab"  # the hybrid's bar, the others' bars

LOG = logging.getLogger("app")


# ---------------------------------------------------------------- pure helpers

def artifacts_from_args(argv: list[str] | None = None, environ: dict | None = None) -> Artifacts:
    """Artifacts for `-- --data-dir X --images-dir Y`, else FDE_DATA_DIR / FDE_IMAGES_DIR, else the defaults."""
    environ = os.environ if environ is None else environ
    # allow_abbrev=False and parse_known_args: under AppTest, sys.argv is pytest's command line
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data-dir", default=environ.get("FDE_DATA_DIR") or DEFAULT_DATA_DIR)
    parser.add_argument("--images-dir", default=environ.get("FDE_IMAGES_DIR") or DEFAULT_IMAGES_DIR)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return Artifacts(Path(args.data_dir), Path(args.images_dir))


def parse_customer_id(text: str) -> int:
    """UInt64 key of a customer: the full 64-hex customer_id or its last 16 hex digits."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{16}", raw) is None:
        raise UserError(f"{str(text).strip()!r} is not a customer id: paste the 64-character customer_id "
                        "(or its last 16 hex digits), or pick a customer from the sample")
    return int(raw[-16:], 16)


def short_hex(customer_hex: str) -> str:
    """A customer id short enough for a caption: first and last six characters."""
    return f"{customer_hex[:6]}…{customer_hex[-6:]}" if len(customer_hex) > 14 else customer_hex


def reason_colour(reason: str) -> str:
    """Badge colour of a recommendation reason."""
    text = reason.lower()
    return next((colour for word, colour in REASON_COLOURS if word in text), "gray")


def split_reason(reason: str) -> tuple[str, str | None]:
    """'colourway of 0108775015' -> ('Colourway of', '0108775015'); a reason without an article id -> (it, None)."""
    found = re.search(r"\s*\b(\d{9,10})\s*$", reason)
    words, source = (reason, None) if found is None else \
        (reason[:found.start()], format_article_id(int(found.group(1))))
    words = words.strip()
    return words[:1].upper() + words[1:], source


def pretty_strategy(name: str) -> str:
    """'popular_last_week' -> 'popular last week'."""
    return name.replace("_", " ")


def week_label(week) -> str:
    """['2020-09-16', '2020-09-22'] -> '16–22 Sep 2020'."""
    try:
        start, end = (date.fromisoformat(str(day)[:10]) for day in week)
    except (TypeError, ValueError):
        return " – ".join(str(day) for day in week or [])
    if start.year == end.year and start.month == end.month:
        return f"{start.day}–{end.day} {end:%b %Y}"
    return f"{start:%d %b} – {end:%d %b %Y}"


def view_label(text: str | None) -> str | None:
    """The tab of a ?view= value: its short name ('launch') or its label ('Launch audience'), any case."""
    wanted = re.sub(r"[\s+_]+", " ", str(text or "")).strip().lower()
    return next((label for label, slug in VIEW_SLUGS.items() if wanted in (slug, label.lower())), None)


def visual_stamp(art: Artifacts) -> tuple:
    """Cache key of the visual artifacts."""
    return mtime(art.visual_features), mtime(art.visual_article_ids), mtime(art.visual_twins), mtime(art.visual_meta)


def mtime(path: Path) -> int | None:
    """Modification time of a file, part of cache keys so that rerunning a stage refreshes the app."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return None


# ---------------------------------------------------------------- cached loaders
# Everything below reads saved artifacts; the file's mtime is part of each cache key.

@st.cache_data(show_spinner="Loading the catalogue…", max_entries=4)
def load_articles(path: str, stamp: int | None) -> pl.DataFrame:
    """Article metadata for captions (no descriptions: st.cache_data copies this on every rerun)."""
    # Categoricals stay categorical: 105k articles then pickle in ~30 ms instead of ~300 ms as strings.
    columns = pl.read_parquet_schema(path)
    return pl.read_parquet(path, columns=[c for c in META_COLUMNS if c in columns])


@st.cache_data(show_spinner=False, max_entries=1024)
def article_description(path: str, stamp: int | None, aid: int) -> str | None:
    """detail_desc of one article."""
    if "detail_desc" not in pl.read_parquet_schema(path):
        return None
    found = pl.scan_parquet(path).filter(pl.col("article_id") == aid).select("detail_desc").head(1).collect()
    return found.item() if found.height else None


@st.cache_data(show_spinner=False, max_entries=4)
def load_image_ids(path: str, stamp: int | None) -> np.ndarray:
    """Ids of the articles that have an image embedding (for the random article button)."""
    return np.load(path).astype(np.int64)


@st.cache_resource(show_spinner=False, max_entries=2)
def load_visual_index(data_dir: str, images_dir: str, stamp: tuple) -> VisualIndex:
    """The memory-mapped image features and the twins table, opened once per artifact version for every session.

    Opening reads only the id list: one article's twins come from visual_twins.parquet, and the
    feature matrix is scanned (through the page cache) only for options the table cannot answer.
    """
    return VisualIndex.load(Artifacts(Path(data_dir), Path(images_dir)))


@st.cache_resource(show_spinner="Reading the purchase history…", max_entries=2)
def load_launch_audience(data_dir: str, images_dir: str, stamp: tuple) -> launch.LaunchAudience:
    """launch.LaunchAudience on these artifacts (the recent purchases, the image index), shared by every session."""
    return launch.LaunchAudience.from_artifacts(Artifacts(Path(data_dir), Path(images_dir)))


@st.cache_data(show_spinner=False, max_entries=256)
def audience_of(_scorer: launch.LaunchAudience, stamp: tuple, aid: int) -> tuple[pl.DataFrame, str]:
    """Every customer with evidence for an article, best first, and where the scores come from."""
    ranked = _scorer.ranked_audience(aid)
    return (ranked, "ranker") if ranked is not None else (_scorer.score(aid), "similarity")


@st.cache_data(show_spinner=False, max_entries=4)
def launch_ids(_scorer: launch.LaunchAudience, stamp: tuple, transactions: str) -> list[int]:
    """Articles with no sale in processed/transactions, newest id first (the launch picker)."""
    return launch.launches(_scorer.articles, pl.scan_parquet(transactions)).to_list()


@st.cache_data(show_spinner=False, max_entries=64)
def listed_audience(_scorer: launch.LaunchAudience, stamp: tuple, aid: int, top: int, ids_path: str,
                    customers_path: str) -> pl.DataFrame:
    """The top customers of an article with customer_id_hex (the original 64-hex id) and age."""
    listed = audience_of(_scorer, stamp, aid)[0].head(top)
    wanted = listed["customer_id"].implode()
    found = pl.scan_parquet(ids_path).filter(pl.col("customer_id").is_in(wanted)).collect()
    if Path(customers_path).exists():
        ages = pl.scan_parquet(customers_path).filter(pl.col("customer_id").is_in(wanted)).select(
            "customer_id", "age").collect()
        found = found.join(ages, on="customer_id", how="left")
    return listed.join(found, on="customer_id", how="left", maintain_order="left")


@st.cache_resource(show_spinner="Loading the search…", max_entries=2)
def load_search(data_dir: str, images_dir: str, stamp: tuple) -> catalogue_search.Search:
    """fde.search.Search on these artifacts (its text index built and saved on first use), shared by every session.

    The network and the image vectors load on the first photo search.
    """
    return catalogue_search.Search(Artifacts(Path(data_dir), Path(images_dir)))


@st.cache_data(show_spinner=False, max_entries=8)
def load_json(path: str, stamp: int | None) -> dict:
    """A small JSON artifact (metrics, visual metadata)."""
    return json.loads(Path(path).read_text())


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(path: str, stamp: int | None) -> bytes | None:
    """A product photo shrunk and padded to THUMB_SIZE as JPEG bytes; None if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", THUMB_SIZE)  # JPEG decodes at 1/2, 1/4 or 1/8 scale, still >= THUMB_SIZE
            image = ImageOps.pad(image.convert("RGB"), THUMB_SIZE, color=(255, 255, 255))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@st.cache_resource(show_spinner=False)
def placeholder(text: str = "No image") -> bytes:
    """A neutral card for an article without a (readable) photo."""
    image = Image.new("RGB", THUMB_SIZE, (241, 240, 237))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=26)
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(((THUMB_SIZE[0] - box[2]) / 2, (THUMB_SIZE[1] - box[3]) / 2), text, fill=(150, 146, 140), font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _one_customer(path: str, key: int) -> pl.LazyFrame:
    # a predicate scan: Parquet statistics skip row groups that cannot hold the key
    return pl.scan_parquet(path).filter(pl.col("customer_id") == pl.lit(key, dtype=pl.UInt64))


@st.cache_data(show_spinner=False, max_entries=256)
def customer_purchases(path: str, stamp: int | None, key: int) -> pl.DataFrame:
    """Every purchase of one customer, newest first."""
    return (_one_customer(path, key).select("t_dat", "article_id", "price")
            .sort("t_dat", descending=True, maintain_order=True).collect())


@st.cache_data(show_spinner=False, max_entries=256)
def customer_recommendations(path: str, stamp: int | None, key: int) -> pl.DataFrame:
    """The hybrid's saved top-12 of one customer, by rank."""
    return _one_customer(path, key).sort("rank").collect()


@st.cache_data(show_spinner=False, max_entries=256)
def customer_hex(path: str, stamp: int | None, key: int) -> str | None:
    """The original 64-hex customer_id of a key, None when the customer is unknown."""
    found = _one_customer(path, key).select("customer_id_hex").head(1).collect()
    return found.item() if found.height else None


@st.cache_data(show_spinner=False, max_entries=256)
def customer_profile(path: str, stamp: int | None, key: int) -> dict | None:
    """One customer's row of customers.parquet (age, club status, ...), None when absent."""
    found = _one_customer(path, key).head(1).collect()
    if not found.height:
        return None
    return found.with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String)).to_dicts()[0]


@st.cache_data(show_spinner="Finding recently active customers…", max_entries=4)
def sample_customers(transactions: str, stamp: int | None, customer_ids: str, ids_stamp: int | None) -> pl.DataFrame:
    """A fixed sample of customers who bought at least twice in the last four weeks, busiest first."""
    scan = pl.scan_parquet(transactions)
    last = scan.select(pl.col("t_dat").max()).collect().item()
    empty = pl.DataFrame(schema={"customer_id": pl.UInt64, "purchases": pl.UInt32, "customer_id_hex": pl.String})
    if last is None:
        return empty
    recent = (scan.filter(pl.col("t_dat") > pl.lit(last) - pl.duration(days=SAMPLE_WINDOW_DAYS))
              .group_by("customer_id").agg(pl.len().alias("purchases"))
              .filter(pl.col("purchases") >= 2)
              .sort("customer_id")  # a stable order before sampling: the same sample on every start
              .collect())
    if not recent.height:
        return empty
    sample = recent.sample(min(SAMPLE_CUSTOMERS, recent.height), seed=0)
    hexes = (pl.scan_parquet(customer_ids)
             .filter(pl.col("customer_id").is_in(sample["customer_id"].implode())).collect())
    return sample.join(hexes, on="customer_id").sort(["purchases", "customer_id"], descending=[True, False])


# ---------------------------------------------------------------- page pieces

def show_article(aid: int) -> None:
    """Callback: open the visual twins of an article."""
    st.session_state["article"] = format_article_id(aid)
    st.session_state["view"] = VIEWS[0]


def image_of(art: Artifacts, aid: int) -> bytes:
    """Thumbnail bytes of an article, or the placeholder."""
    path = art.image(aid)
    stamp = mtime(path)
    data = thumbnail(str(path), stamp) if stamp is not None else None
    return data if data is not None else placeholder()


def show_image(target, data: bytes) -> None:
    """st.image of thumbnail bytes, keeping the placeholder a PNG (flat graphics) and photos JPEG."""
    target.image(data, width="stretch", output_format="PNG" if data.startswith(b"\x89PNG") else "JPEG")


def describe(articles: pl.DataFrame, ids) -> dict[int, dict]:
    """Metadata rows of some articles, by id."""
    rows = articles.filter(pl.col("article_id").is_in([int(i) for i in ids])).to_dicts()
    return {row["article_id"]: row for row in rows}


def catalogue_article(articles: pl.DataFrame, text: str, other_way: str) -> tuple[int, dict] | None:
    """The typed article id and its catalogue details, or None after showing what is wrong with it."""
    try:
        aid = parse_article_id(text)
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    meta = describe(articles, [aid]).get(aid)
    if meta is None:
        st.error(f"Article {format_article_id(aid)} is not in the catalogue ({articles.height:,} articles). "
                 f"Check the id, or {other_way}.", icon=":material/search_off:")
        return None
    return aid, meta


def card(art: Artifacts, aid: int, meta: dict | None, *, key: str, note: str | None = None,
         badge: str | None = None, because: str | None = None, compact: bool = False,
         explanation: list[dict] | None = None) -> None:
    """One product card: photo, name, type and colour, department, a note, a reason, its breakdown and a button."""
    meta = meta or {}
    name = meta.get("prod_name") or "Unknown article"
    show_image(st, image_of(art, aid))
    st.markdown(f"**{name}**")
    kind = " · ".join(str(meta[c]) for c in ("product_type_name", "colour_group_name") if meta.get(c))
    lines = [kind] if compact else [kind, str(meta.get("department_name") or "")]
    lines.append(note or f"`{format_article_id(aid)}`")
    st.caption("  \n".join(line for line in lines if line))
    if badge:
        st.badge(badge, color=reason_colour(badge))
    if because:
        st.caption(because)
    if explanation:
        with st.popover("Why", icon=":material/analytics:", width="stretch"):
            explain(explanation)
    if not compact:
        st.button("More like this", key=key, type="tertiary", icon=":material/style:",
                  on_click=show_article, args=(aid,))


def explain(explanation: list[dict]) -> None:
    """The ranker's largest feature contributions to one item (LightGBM pred_contrib), largest first."""
    st.markdown("**What moved this item up**")
    lines = []
    for part in explanation:
        contribution = part.get("contribution")
        value = "–" if contribution is None else f"{contribution:+.3f}"
        words = part.get("text") or pretty_strategy(str(part.get("feature") or ""))
        lines.append(f"`{value}` {words}" + (f" · *{part['feature']}*" if part.get("text") and part.get("feature")
                                             else ""))
    st.markdown("  \n".join(lines))
    st.caption("Contributions to the ranker's score (log-odds scale); positive ones push the item up.")


def card_grid(art: Artifacts, items: list[dict], articles: pl.DataFrame, key: str,
              columns: int = GRID_COLUMNS, compact: bool = False) -> None:
    """A grid of product cards; each item has `article_id` and optional `note`, `badge`, `because`."""
    meta = describe(articles, [item["article_id"] for item in items])
    grid = st.grid(columns, gap="small", border=True, min_column_width=110 if compact else 150)
    for i, item in enumerate(items):
        with grid.cell():
            card(art, item["article_id"], meta.get(item["article_id"]), key=f"{key}-{i}", note=item.get("note"),
                 badge=item.get("badge"), because=item.get("because"), compact=compact,
                 explanation=item.get("explanation"))


def query_card(art: Artifacts, aid: int, meta: dict) -> None:
    """The article being explored: its photo beside its full description."""
    photo, text = st.columns([1, 5], gap="medium")
    show_image(photo, image_of(art, aid))
    with text:
        st.subheader(meta.get("prod_name") or format_article_id(aid), anchor=False)
        facts = [("Product type", meta.get("product_type_name")), ("Colour", meta.get("colour_group_name")),
                 ("Pattern", meta.get("graphical_appearance_name")), ("Department", meta.get("department_name")),
                 ("Index group", meta.get("index_group_name")), ("Article", f"`{format_article_id(aid)}`")]
        st.markdown("  \n".join(f"{label}: **{value}**" for label, value in facts if value))
        description = article_description(str(art.articles), mtime(art.articles), aid)
        if description:
            st.caption(description)


def missing(what: str, exc: UserError) -> None:
    """Say which artifact is missing and which command writes it."""
    st.warning(f"**{what}**  \n{exc}", icon=":material/inventory_2:")


STALE_RESULTS = "The saved results are out of date."


def results_error(art: Artifacts, path: Path) -> UserError | None:
    """Why final.py's `path` cannot be shown as current (missing, or results/ older than its inputs), else None."""
    try:
        require(path, art.command("final.py"))
        require_fresh_if_built(art, "final.py", path)
    except UserError as exc:
        return exc
    return None


# ---------------------------------------------------------------- visual twins

def random_article(choices: np.ndarray) -> None:
    """Callback of the random article button."""
    if len(choices):
        st.session_state["article"] = format_article_id(int(random.choice(choices)))


def browse(art: Artifacts, articles: pl.DataFrame, with_image: np.ndarray) -> None:
    """A random pick from the catalogue to start from (the same pick for the whole session)."""
    seed = st.session_state.setdefault("browse_seed", random.randrange(2**31))
    pick = np.random.default_rng(seed).choice(with_image, size=min(DEFAULT_K, len(with_image)), replace=False)
    if len(pick):
        st.markdown("##### From the catalogue")
        card_grid(art, [{"article_id": int(aid)} for aid in pick], articles, key="browse")


# ---------------------------------------------------------------- inputs kept in the URL
# A view's inputs are made by these functions, also in the tabs not shown (see keep_inputs): a bound
# widget that is not drawn in a run loses its URL parameter, and switching tabs would drop them.

def article_box(target, label: str = "Article id") -> None:
    """The article id box (?article=), shared by Visual twins and Launch audience."""
    target.text_input(label, key="article", placeholder="e.g. 0108775015", bind="query-params",
                      icon=":material/search:")


def twin_options(size, colourways, group) -> tuple[int, bool, bool]:
    """The twins' options (?k=, ?hide_colourways=, ?same_group=)."""
    k = size.slider("Twins to show", 4, MAX_K, DEFAULT_K, key="k", bind="query-params")
    hide = colourways.toggle("Hide colourways", key="hide_colourways", bind="query-params",
                             help="Leave out the other colours of the same product (same product_code): "
                                  "they are the obvious twins")
    same_group = group.toggle("Same index group", key="same_group", bind="query-params",
                              help="Only twins from the query's index group (Ladieswear, Menswear, Divided, …)")
    return k, hide, same_group


def customer_box(target) -> None:
    """The customer id box (?customer=)."""
    target.text_input("Customer id", key="customer", bind="query-params", on_change=clear_pick,
                      placeholder="64-character customer_id, or its last 16 hex digits", icon=":material/person:")


def top_slider(target) -> int:
    """How many of a launch's customers to list and export (?top=)."""
    return target.slider("Customers to list and export", 10, MAX_TOP, DEFAULT_TOP, step=10, key="top",
                         bind="query-params")


def search_inputs(words, filters, articles: pl.DataFrame) -> catalogue_search.Filters:
    """The search box and the filters (?q=, ?index_group=, ?product_type=, ?colour=, ?price_band=,
    ?one_per_product=); the filters' choices are the catalogue's values."""
    words.text_input("Words", key="q", bind="query-params", icon=":material/search:",
                     placeholder='e.g. "black slim jeans" or "floral summer dress"')
    chosen = {}
    columns = filters.columns(len(SEARCH_FILTERS) + 2, vertical_alignment="bottom")
    for column, (option, label) in zip(columns, SEARCH_FILTERS.items()):
        name = catalogue_search.FILTER_COLUMNS[option]
        values = sorted(articles[name].drop_nulls().cast(pl.String).unique().to_list()) if name in articles.columns \
            else []
        chosen[option] = column.selectbox(label, values, index=None, key=option, placeholder="Any",
                                          bind="query-params")
    chosen["price_band"] = columns[-2].selectbox("Price band", catalogue_search.PRICE_BANDS, index=None,
                                                 key="price_band", placeholder="Any", bind="query-params",
                                                 help="A third of the prices paid within the product type")
    hide = columns[-1].toggle("One per product", key="one_per_product", bind="query-params",
                              help="Only the best colourway of each product")
    return catalogue_search.Filters(**chosen, hide_colourways=hide)


def keep_inputs(view: str, shown: str, art: Artifacts) -> None:
    """Draw the URL-bound inputs of a view that is not shown (in its hidden tab), so the URL keeps them."""
    if view == VIEWS[0]:
        if shown != VIEWS[2]:  # the Launch audience view draws the shared article box itself
            article_box(st)
        twin_options(st, st, st)
    elif view == VIEWS[1]:
        customer_box(st)
    elif view == VIEWS[2]:
        top_slider(st)
    elif view == VIEWS[4] and art.articles.exists():
        search_inputs(st, st, load_articles(str(art.articles), mtime(art.articles)))


def twins_view(art: Artifacts) -> None:
    """Article id in: the article and its visual twins."""
    articles = load_articles(str(require(art.articles, art.command("data_optim.py"))), mtime(art.articles))
    with_image = (load_image_ids(str(art.visual_article_ids), mtime(art.visual_article_ids))
                  if art.visual_article_ids.exists() else articles["article_id"].to_numpy())

    search, dice, size, colourways, group = st.columns([2.4, 1.3, 2, 1.5, 1.6], vertical_alignment="bottom")
    article_box(search)
    dice.button("Random article", icon=":material/shuffle:", on_click=random_article, args=(with_image,),
                width="stretch")
    k, hide, same_group = twin_options(size, colourways, group)

    text = (st.session_state.get("article") or "").strip()
    if not text:
        st.info(f"Type an article id, or press **Random article**, to see the products that look most alike. "
                f"The catalogue has {articles.height:,} articles, {len(with_image):,} of them with a photo.",
                icon=":material/checkroom:")
        browse(art, articles, with_image)
        return
    found = catalogue_article(articles, text, "press **Random article**")
    if found is None:
        return
    aid, meta = found

    query_card(art, aid, meta)
    started = time.perf_counter()
    try:
        twins = load_visual_index(str(art.data_dir), str(art.images_dir), visual_stamp(art))
    except UserError as exc:
        missing("Visual twins need the image embeddings.", exc)
        return
    fetch = min(k * SAME_GROUP_FETCH, FETCH_MAX) if same_group else k
    try:
        found = twins.twins(aid, k=fetch, exclude_same_product=hide)
    except UserError as exc:  # no photo, or an unreadable one: the message says which
        message = str(exc)
        st.info(message[:1].upper() + message[1:], icon=":material/hide_image:")
        return
    seconds = time.perf_counter() - started
    where = ""
    if same_group and meta.get("index_group_name"):
        groups = articles.select(pl.col("article_id").alias("twin_id"), "index_group_name")
        found = (found.join(groups, on="twin_id", how="left", maintain_order="left")
                 .filter(pl.col("index_group_name") == meta["index_group_name"]).head(k))
        where = f" in {meta['index_group_name']}"
    backbone = ""
    if art.visual_meta.exists():
        backbone = str(load_json(str(art.visual_meta), mtime(art.visual_meta)).get("backbone") or "")

    st.subheader(f"{found.height} visual twins{where}", anchor=False)
    details = [f"the most similar product photos ({backbone or 'image'} embeddings, cosine similarity)"]
    if hide:
        details.append("other colourways of this product hidden")
    if same_group and found.height < k:
        details.append(f"only {found.height} of the {fetch} nearest are in {meta['index_group_name']}")
    details.append(f"looked up in {seconds * 1000:.0f} ms")
    text = " · ".join(details)
    st.caption(text[:1].upper() + text[1:])
    if found.is_empty():
        st.info("No twins match these options.", icon=":material/filter_alt_off:")
        return
    card_grid(art, [{"article_id": row["twin_id"], "note": f"`{format_article_id(row['twin_id'])}` · "
                                                           f"similarity {row['score']:.2f}"}
                    for row in found.iter_rows(named=True)], articles, key="twin")


# ---------------------------------------------------------------- customers

def pick_customer() -> None:
    """Callback: copy the sample picker's choice into the customer id box."""
    if st.session_state.get("customer_pick"):
        st.session_state["customer"] = st.session_state["customer_pick"]


def clear_pick() -> None:
    """Callback: a typed id replaces the sample choice."""
    st.session_state["customer_pick"] = None


def customers_view(art: Artifacts) -> None:
    """Customer id in: what they bought recently, and what the engine recommends and why."""
    articles = load_articles(str(require(art.articles, art.command("data_optim.py"))), mtime(art.articles))
    transactions = require(art.transactions, art.command("data_optim.py"))
    ids_path = require(art.customer_ids, art.command("data_optim.py"))
    sample = sample_customers(str(transactions), mtime(transactions), str(ids_path), mtime(ids_path))
    labels = {row["customer_id_hex"]: f"{short_hex(row['customer_id_hex'])} · {row['purchases']} purchases "
                                      f"in the last {SAMPLE_WINDOW_DAYS // 7} weeks"
              for row in sample.iter_rows(named=True)}

    typed, picked = st.columns([3, 2], vertical_alignment="bottom")
    customer_box(typed)
    picked.selectbox("…or pick a recently active customer", list(labels), index=None, key="customer_pick",
                     format_func=labels.get, on_change=pick_customer, placeholder="Sample customers")

    text = (st.session_state.get("customer") or "").strip()
    if not text:
        st.info("Enter a customer id, or pick one from the sample, to see their recent purchases and the "
                "12 articles recommended to them.", icon=":material/person_search:")
        return
    try:
        key = parse_customer_id(text)
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        return

    full_id = customer_hex(str(ids_path), mtime(ids_path), key)
    bought = customer_purchases(str(transactions), mtime(transactions), key)
    recs_missing = results_error(art, art.recommendations)
    recommended = None if recs_missing is not None else \
        customer_recommendations(str(art.recommendations), mtime(art.recommendations), key)
    if full_id is None and bought.is_empty() and (recommended is None or recommended.is_empty()):
        st.error(f"No customer {short_hex(text.lower())} in this data. Check the id, or pick one from the sample.",
                 icon=":material/person_off:")
        return

    profile = customer_profile(str(art.customers), mtime(art.customers), key) if art.customers.exists() else None
    st.subheader(f"Customer {short_hex(full_id or text.lower())}", anchor=False)
    facts = [("Purchases", f"{bought.height:,}"),
             ("Last purchase", str(bought["t_dat"].max()) if bought.height else "never")]
    if bought.height:
        favourite = (bought.join(articles.select("article_id", "product_type_name"), on="article_id", how="left")
                     ["product_type_name"].drop_nulls().mode().sort())
        if favourite.len():
            facts.append(("Buys most", str(favourite[0])))
    if profile and profile.get("age") is not None:
        facts.append(("Age", str(profile["age"])))
    if profile and profile.get("club_member_status"):
        facts.append(("Club", str(profile["club_member_status"]).title()))
    for column, (label, value) in zip(st.columns(len(facts)), facts):
        column.metric(label, value)

    st.markdown("##### Recent purchases")
    if bought.is_empty():
        st.caption("No purchases yet: the recommendations below come from what is popular.")
    else:
        recent = bought.unique("article_id", keep="first", maintain_order=True).head(RECENT_PURCHASES)
        card_grid(art, [{"article_id": row["article_id"], "note": f"bought {row['t_dat']}"}
                        for row in recent.iter_rows(named=True)], articles, key="bought",
                  columns=RECENT_PURCHASES, compact=True)

    st.markdown("##### Recommended next")
    if recs_missing is not None:
        missing("Recommendations are not computed yet." if not art.recommendations.exists() else STALE_RESULTS,
                recs_missing)
        return
    if recommended.is_empty():
        st.info("The saved recommendations have no entry for this customer.", icon=":material/info:")
        return
    splits = [split_reason(str(reason or "recommended")) for reason in recommended["reason"].to_list()] \
        if "reason" in recommended.columns else [("recommended", None)] * recommended.height
    explained = "explanation" in recommended.columns
    if "source_article_id" in recommended.columns:  # the reason's article, where its text names none
        splits = [(label, source or (None if row["source_article_id"] is None
                                     else format_article_id(row["source_article_id"])))
                  for row, (label, source) in zip(recommended.iter_rows(named=True), splits)]
    sources = describe(articles, [int(source) for _, source in splits if source])
    items = []
    for row, (label, source) in zip(recommended.iter_rows(named=True), splits):
        because = None
        if source:
            name = sources.get(int(source), {}).get("prod_name") or "an article"
            because = f"{name} · `{source}`"
        items.append({"article_id": row["article_id"], "badge": label, "because": because,
                      "explanation": row.get("explanation") if explained else None})
    if explained:
        st.caption("The learned ranker's top 12 for next week, trained on all purchases: each with the feature "
                   "that lifted it most, and the full breakdown under **Why**.")
    else:
        st.caption("The hybrid's top 12 for next week, trained on all purchases, with the signal behind each.")
    card_grid(art, items, articles, key="rec")


# ---------------------------------------------------------------- launch audience

def pick_launch() -> None:
    """Callback: copy the launch picker's choice into the article box."""
    if st.session_state.get("launch_pick"):
        st.session_state["article"] = format_article_id(st.session_state["launch_pick"])


def small_bars(target, data: pl.DataFrame, label: str, value: str, title: str,
               order: list[str] | None = None) -> None:
    """A compact horizontal bar chart of counts."""
    y = {"field": label, "type": "nominal", "sort": order or "-x", "title": None,
         "axis": {"labelLimit": 180, "labelOverlap": False}}
    x = {"field": value, "type": "quantitative", "title": title}
    spec = {"height": 26 * max(data.height, 1) + 40, "encoding": {"y": y, "x": x}, "layer": [
        {"mark": {"type": "bar", "cornerRadiusEnd": 3, "color": HIGHLIGHT},
         "encoding": {"tooltip": [{"field": label}, {"field": value}]}},
        {"mark": {"type": "text", "align": "left", "dx": 3, "color": "#2f2d2b"},
         "encoding": {"text": {"field": value, "type": "quantitative"}}}]}
    target.vega_lite_chart(data, spec, width="stretch")


def launch_view(art: Artifacts) -> None:
    """Article in (by default a launch: no sales yet): the customers to show it to, why, and who they are."""
    articles = load_articles(str(require(art.articles, art.command("data_optim.py"))), mtime(art.articles))
    transactions = require(art.transactions, art.command("data_optim.py"))
    ids_path = require(art.customer_ids, art.command("data_optim.py"))
    stamp = (mtime(art.articles), mtime(transactions), mtime(art.launch_audience),
             mtime(art.manifest("final.py"))) + visual_stamp(art)
    scorer = load_launch_audience(str(art.data_dir), str(art.images_dir), stamp)
    new = launch_ids(scorer, stamp, str(transactions))
    meta_of = describe(articles, new[:MAX_PICKER])
    labels = {aid: " · ".join([format_article_id(aid)] + [str(meta_of.get(aid, {}).get(c) or "")
                                                         for c in ("prod_name", "product_type_name",
                                                                   "colour_group_name")])
              for aid in new[:MAX_PICKER]}

    typed, picked, size = st.columns([2, 3, 2], vertical_alignment="bottom")
    article_box(typed, "Article id")
    picked.selectbox(f"…or pick one of the {len(new):,} launches (no sales yet)", list(labels), index=None,
                     key="launch_pick", format_func=labels.get, on_change=pick_launch,
                     placeholder="Launches, newest first")
    top = top_slider(size)

    text = (st.session_state.get("article") or "").strip()
    if not text:
        if not new:
            st.info("Every article of the catalogue has sales. Type an article id to see who is most likely to "
                    "buy it.", icon=":material/rocket_launch:")
            return
        text = format_article_id(new[0])
        st.caption(f"Showing the newest launch, {text}. Type an article id or pick another launch.")
    found = catalogue_article(articles, text, "pick a launch")
    if found is None:
        return
    aid, meta = found
    query_card(art, aid, meta)

    started = time.perf_counter()
    everyone, source = audience_of(scorer, stamp, aid)
    stamp += (mtime(ids_path), mtime(art.customers))
    table = listed_audience(scorer, stamp, aid, top, str(ids_path), str(art.customers))
    listed = table.select(everyone.columns)
    seconds = time.perf_counter() - started
    cutoff = f"{scorer.cutoff:%d %b %Y}"
    if source == "ranker":
        how = (f"Scored by the learned ranker (`{art.launch_audience.name}`) on the customers proposed by "
               "image and content similarity.")
    else:
        kind = "product type, colour, department…" + (
            " and photo" if scorer.visual is not None and scorer.visual.has(aid) else "")
        how = (f"Scored by similarity ({kind}) to each customer's purchases in the {launch.WINDOW_DAYS // 7} "
               f"weeks before {cutoff}, recent ones counting more, plus their purchases of "
               f"{meta.get('product_type_name')} in {meta.get('colour_group_name')}.")
        if not art.launch_audience.exists():
            how += f" The ranker's audience is not computed yet: run `{art.command('final.py')}` to produce it."
    sold = aid not in set(new)
    st.subheader(f"{everyone.height:,} customers to show it to", anchor=False)
    st.caption(f"{how} {'This article has sales already. ' if sold else ''}Looked up in {seconds * 1000:.0f} ms.")
    if everyone.is_empty():
        st.info(f"No customer bought anything like {format_article_id(aid)} in the {launch.WINDOW_DAYS // 7} weeks "
                f"before {cutoff}, so there is no evidence for an audience yet.", icon=":material/group_off:")
        return

    ages, groups = launch.audience_profile(listed, table if "age" in table.columns else None,
                                           scorer.purchases, articles, by="department_name")
    facts = [("Customers with evidence", f"{everyone.height:,}"), ("Listed", f"{listed.height:,}"),
             ("Median age", "–" if "age" not in table.columns or table["age"].drop_nulls().is_empty()
              else f"{table['age'].median():.0f}"),
             ("Top department", str(groups["group"][0]) if groups.height else "–")]
    for column, (label, value) in zip(st.columns(len(facts)), facts):
        column.metric(label, value)

    chart_ages, chart_departments = st.columns(2, gap="large")
    with chart_ages:
        st.markdown(f"##### Age of the top {listed.height:,}")
        order = sorted(ages["band"].to_list(), key=lambda band: (band == "unknown", not band.startswith("under"), band))
        small_bars(st, ages, "band", "customers", "customers", order)
    with chart_departments:
        st.markdown(f"##### What they bought in the last {launch.WINDOW_DAYS // 7} weeks")
        small_bars(st, groups.head(8), "group", "purchases", "purchases by department")

    shown = table.select(
        pl.col("rank").alias("Rank"),
        pl.col("customer_id_hex").fill_null("?").alias("Customer"),
        pl.col("age").alias("Age") if "age" in table.columns else pl.lit(None, dtype=pl.UInt8).alias("Age"),
        pl.col("score").alias("Score"),
        pl.col("reason").alias("Why"),
        pl.col("source_article_id").cast(pl.String).str.zfill(10).alias("Because of"))
    st.markdown("##### Who, and why")
    st.dataframe(shown, hide_index=True, width="stretch", height=min(35 * shown.height + 38, 460), column_config={
        "Customer": st.column_config.TextColumn(help="the original 64-hex customer_id", width="medium"),
        "Score": st.column_config.NumberColumn(format="%.3f"),
        "Why": st.column_config.TextColumn(width="large"),
    })
    export = table.select(pl.col("customer_id_hex").alias("customer_id"), "rank", "score", "reason")
    st.download_button(f"Download the top {listed.height:,} customer ids (CSV)", export.write_csv(),
                       file_name=f"launch_audience_{format_article_id(aid)}.csv", mime="text/csv",
                       icon=":material/download:", key="launch_csv")


# ---------------------------------------------------------------- evaluation

def bar_chart(table: pl.DataFrame, value: str, fmt: str, highlight: str | None) -> None:
    """Horizontal bars by strategy, best on top, one strategy highlighted, values at the bar ends.

    A plain Vega-Lite spec: building it through altair validates it against the schema on every
    rerun (~0.1 s a chart).
    """
    data = table.select("Strategy", value).drop_nulls().with_columns(
        (pl.col("Strategy") == (highlight or "")).alias("highlight"))
    x = {"field": value, "type": "quantitative", "title": value, "axis": {"format": fmt}}
    y = {"field": "Strategy", "type": "nominal", "sort": "-x", "title": None, "axis": {"labelLimit": 220}}
    spec = {"height": 34 * data.height + 30, "encoding": {"y": y, "x": x}, "layer": [
        {"mark": {"type": "bar", "cornerRadiusEnd": 3},
         "encoding": {"color": {"condition": {"test": "datum.highlight", "value": HIGHLIGHT}, "value": MUTED},
                      "tooltip": [{"field": "Strategy"}, {"field": value, "type": "quantitative", "format": fmt}]}},
        {"mark": {"type": "text", "align": "left", "dx": 4, "color": "#2f2d2b"},
         "encoding": {"text": {"field": value, "type": "quantitative", "format": fmt}}}]}
    st.vega_lite_chart(data, spec, width="stretch")


def evaluation_view(art: Artifacts) -> None:
    """MAP@12 of every strategy on the held-out test week, and the cold-start slice."""
    path = require(art.metrics, art.command("final.py"))
    stale = results_error(art, path)
    if stale is not None:
        missing(STALE_RESULTS, stale)
        return
    metrics = load_json(str(path), mtime(path))
    strategies = metrics.get("strategies") or {}
    if not strategies:
        st.warning(f"{path} lists no strategies: rerun `{art.command('final.py')}`.", icon=":material/warning:")
        return
    validation = metrics.get("validation_map12") or {}
    table = pl.DataFrame(
        [{"Strategy": pretty_strategy(name), "MAP@12": values.get("map12"), "Validation MAP@12": validation.get(name),
          "Lift": values.get("lift"), "Recall@12": values.get("recall12"), "Coverage": values.get("coverage"),
          "Cold-start hits": values.get("cold_start_hits")} for name, values in strategies.items()],
        schema={"Strategy": pl.String, "MAP@12": pl.Float64, "Validation MAP@12": pl.Float64, "Lift": pl.Float64,
                "Recall@12": pl.Float64, "Coverage": pl.Float64, "Cold-start hits": pl.Int64},
    ).sort("MAP@12", descending=True, nulls_last=True)
    if not validation:
        table = table.drop("Validation MAP@12")
    used = pretty_strategy(str(metrics.get("recommender_used") or ""))  # "ranker" or "hybrid", once the ranker exists
    hybrid = used if used in table["Strategy"].to_list() else \
        next((name for name in table["Strategy"] if "hybrid" in name.lower()), table["Strategy"][0])
    best = table.filter(pl.col("Strategy") == hybrid).row(0, named=True)
    cold = metrics.get("cold_start_purchases")

    top = st.columns(4)
    top[0].metric(f"MAP@12 · {hybrid}", "–" if best["MAP@12"] is None else f"{best['MAP@12']:.4f}")
    top[1].metric("Lift over last week's top 12", "–" if best["Lift"] is None else f"{best['Lift']:.1f}×")
    top[2].metric("Customers evaluated", f"{metrics.get('customers_evaluated') or 0:,}")
    top[3].metric("Test week", week_label(metrics.get("test_week")))

    chart, numbers = st.columns([2, 3], gap="large")
    with chart:
        st.markdown("##### MAP@12 by strategy")
        bar_chart(table, "MAP@12", ".4f", hybrid)
    with numbers:
        st.markdown("##### Every strategy on the test week")
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "MAP@12": st.column_config.NumberColumn(format="%.4f"),
            "Validation MAP@12": st.column_config.NumberColumn(format="%.4f", help="on the tuning week"),
            "Lift": st.column_config.NumberColumn(format="%.2f×", help="MAP@12 / MAP@12 of last week's top 12"),
            "Recall@12": st.column_config.NumberColumn(format="%.3f"),
            "Coverage": st.column_config.NumberColumn(format="percent", help="share of the catalogue recommended"),
            "Cold-start hits": st.column_config.NumberColumn(help="test-week purchases of never-sold articles found"),
        })
        st.caption(f"Test week {week_label(metrics.get('test_week'))}, settings tuned on the validation week "
                   f"{week_label(metrics.get('validation_week'))}. MAP@12 as in the Kaggle competition: over the "
                   "customers who bought in the test week, each week's unique articles as the truth.")

    st.markdown("##### Cold start: purchases of articles that had never sold")
    if cold:
        left, right = st.columns([2, 3], gap="large")
        with left:
            st.metric("Test-week purchases of never-sold articles", f"{cold:,}")
            st.caption("No sales history exists for these articles, so only content and image similarity can "
                       "reach them. Hits = how many of them each strategy put in that customer's top 12.")
        with right:
            bar_chart(table, "Cold-start hits", "d", hybrid)
    else:
        st.caption("No test-week purchase was of an article without earlier sales.")
    weights = {name: value for name, value in (metrics.get("weights") or {}).items()
               if isinstance(value, (int, float))}
    if weights:
        with st.expander("Blend weights chosen on the validation week"):
            st.dataframe(pl.DataFrame({"Signal": [pretty_strategy(n) for n in weights],
                                       "Weight": [float(v) for v in weights.values()]}), hide_index=True)
    ranker_panel(art, metrics)


def ranker_panel(art: Artifacts, metrics: dict) -> None:
    """The learned ranker: its candidate pool's recall per source and its features by gain."""
    st.markdown("##### The learned ranker")
    meta = load_json(str(art.ranker_meta), mtime(art.ranker_meta)) if art.ranker_meta.exists() else {}
    importance = metrics.get("feature_importance") or meta.get("feature_importance") or []
    pool = {name: value for name, value in (metrics.get("pool_recall") or {}).items()
            if isinstance(value, (int, float))}
    if "ranker" not in (metrics.get("strategies") or {}) and not importance and not pool:
        missing("The learned ranker is not trained yet.",
                UserError(f"{art.ranker_meta} not found: run `{art.command('ranker.py')}` to train it, then "
                          f"`{art.command('final.py')}` to evaluate it"))
        return
    weeks = metrics.get("training_weeks") or meta.get("training_weeks") or []
    used = metrics.get("recommender_used")
    notes = []
    if weeks:
        notes.append(f"trained on {len(weeks)} week{'s' if len(weeks) != 1 else ''} "
                     f"({week_label(weeks[0])} to {week_label(weeks[-1])})")
    if meta.get("best_iteration"):
        notes.append(f"{meta['best_iteration']} trees")
    if used:
        notes.append(f"the saved recommendations come from the {pretty_strategy(str(used))}")
    if notes:
        text = "; ".join(notes)
        st.caption(text[:1].upper() + text[1:] + ".")
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.markdown("###### Candidate pool: share of the test week's purchases it holds")
        if pool:
            table = pl.DataFrame({"Source": [pretty_strategy(n) for n in pool], "Recall": list(pool.values())},
                                 schema={"Source": pl.String, "Recall": pl.Float64})
            bar_chart(table.rename({"Source": "Strategy"}), "Recall", ".1%", "pool")
            st.caption("Recall of each candidate source alone and of the whole pool: the ranker can only put "
                       "in the top 12 what the pool holds.")
        else:
            st.caption(f"No pool recall in {art.metrics.name}: rerun `{art.command('final.py')}`.")
    with right:
        st.markdown(f"###### Top {TOP_FEATURES} features by gain")
        rows = [row for row in importance if isinstance(row, dict) and "feature" in row][:TOP_FEATURES]
        if rows:
            table = pl.DataFrame({"Strategy": [str(row["feature"]) for row in rows],
                                  "Gain": [float(row.get("gain") or 0) for row in rows]})
            bar_chart(table, "Gain", ",.0f", None)
        else:
            st.caption(f"No feature importance saved: rerun `{art.command('final.py')}`.")


# ---------------------------------------------------------------- search

def search_view(art: Artifacts) -> None:
    """A photo or words in, filters on: the catalogue's best matches, each opening its visual twins."""
    articles = load_articles(str(require(art.articles, art.command("data_optim.py"))), mtime(art.articles))
    box, photo_box = st.columns([3, 2], vertical_alignment="bottom")
    filters = search_inputs(box, st, articles)
    photo = photo_box.file_uploader("Or a photo", type=PHOTO_TYPES, key="search_photo",
                                    help="A product photo: a competitor's item, a street photo, a supplier's sample")
    query = (st.session_state.get("q") or "").strip()
    if photo is None and not query:
        st.info("Type what you look for, or upload a photo, to find the catalogue's closest articles. Filters "
                "narrow the results; a result's **More like this** opens its visual twins.", icon=":material/search:")
        return
    started = time.perf_counter()
    engine = load_search(str(art.data_dir), str(art.images_dir), search_stamp(art))
    try:
        if photo is not None:
            found = engine.by_photo(photo.getvalue(), GRID_COLUMNS * 2, filters, name=photo.name)
        else:
            found = engine.by_text(query, GRID_COLUMNS * 2, filters)
    except UserError as exc:
        message = str(exc)
        st.warning(message[:1].upper() + message[1:], icon=":material/image_not_supported:")
        return
    seconds = time.perf_counter() - started
    if photo is not None:
        show_image(st.columns([1, 5])[0], photo.getvalue() if photo.size < 5_000_000 else placeholder("Your photo"))
        what = f"the photos most like {photo.name}" + (" (the words are ignored while a photo is given)"
                                                        if query else "")
    else:
        what = f"the articles whose words match \"{query[:80]}\""
    st.subheader(f"{found.height} results", anchor=False)
    active = [str(v) for k, v in filters.active().items() if k != "hide_colourways"]
    st.caption(" · ".join([what[:1].upper() + what[1:], *([f"filters: {', '.join(active)}"] if active else []),
                           f"answered in {seconds * 1000:,.0f} ms"]))
    if found.is_empty():
        st.info("Nothing matches: try other words or fewer filters.", icon=":material/filter_alt_off:")
        return
    bands = dict(zip(*engine.catalogue.articles.select("article_id", "price_band")))
    card_grid(art, [{"article_id": row["article_id"], "because": row["why"],
                     "note": f"`{format_article_id(row['article_id'])}` · "
                             f"{bands.get(row['article_id']) or 'no'} price band"}
                    for row in found.iter_rows(named=True)], articles, key="search")


def search_stamp(art: Artifacts) -> tuple:
    """Cache key of what the search reads: the catalogue, its sales and the visual artifacts."""
    return mtime(art.articles), mtime(art.transactions), *visual_stamp(art)


# ---------------------------------------------------------------- page

def guarded(view, art: Artifacts) -> None:
    """Run a view; user errors and unreadable artifacts become a message, never a traceback."""
    try:
        view(art)
    except UserError as exc:
        missing("Something this view needs is missing.", exc)
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; the terminal log has the details
        LOG.exception("view %s failed", view.__name__)
        st.error(f"This view could not be shown ({type(exc).__name__}: {exc}). The artifacts may come from an "
                 "older or interrupted run: rerun the pipeline (`make demo`). Details are in the terminal "
                 "running streamlit.", icon=":material/error:")


def main() -> None:
    """The page: five views in tabs; the chosen tab, like every input, is kept in the URL."""
    art = artifacts_from_args()
    st.set_page_config(page_title="Fashion discovery", page_icon=":material/checkroom:", layout="wide")
    st.title("Fashion discovery", anchor=False)
    st.caption("Find products that look alike, see what a customer is likely to buy next and why, "
               "how well the engine predicted the last week of sales, and search from a photo or from words.")
    # The tab is kept in ?view= by hand rather than with bind="query-params", which would put the tab's
    # label in the URL: the link says view=launch, and view=Launch+audience (the label) works too.
    # The default must not change within a session (it is part of the tabs' identity): the link's view.
    opened = st.session_state.setdefault("opened_view", view_label(st.query_params.get("view")) or VIEWS[0])
    tabs = st.tabs(list(VIEWS), key="view", default=opened, on_change="rerun")
    shown = st.session_state.get("view") or VIEWS[0]
    if st.query_params.get("view") != VIEW_SLUGS[shown]:
        st.query_params["view"] = VIEW_SLUGS[shown]
    for tab, name, view in zip(tabs, VIEWS, (twins_view, customers_view, launch_view, evaluation_view, search_view)):
        with tab:
            if tab.open is False:  # a hidden view's work is skipped, its inputs are kept
                keep_inputs(name, shown, art)
            else:
                guarded(view, art)
    st.divider()
    st.caption(f"Artifacts from `{art.data_dir}`, images from `{art.images_dir}`.")


if __name__ == "__main__":
    main()
