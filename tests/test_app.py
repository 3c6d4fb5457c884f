"""app.py through streamlit.testing.v1.AppTest, on the tiny sample after the whole pipeline."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

import app
from fde import launch, visual_index
from fde.artifacts import Artifacts
from fde.errors import UserError
from fde.files import fingerprint, manifest_record, write_json
from fde.ids import format_article_id

APP = Path(app.__file__).resolve()
TIMEOUT = 60  # seconds per AppTest run: the first one loads torch and the embeddings
ID = re.compile(r"\b\d{10}\b")
BADGE = re.compile(r":\w+-badge\[(.*)\]")


@pytest.fixture(scope="session")
def catalogue(pipeline) -> pl.DataFrame:
    return pl.read_parquet(pipeline.articles)


@pytest.fixture(scope="session")
def with_image(pipeline) -> np.ndarray:
    return np.load(pipeline.visual_article_ids)


def run_app(monkeypatch, art: Artifacts, **query) -> AppTest:
    """A fresh app session on `art`, opened with these URL query parameters."""
    monkeypatch.setenv("FDE_DATA_DIR", str(art.data_dir))
    monkeypatch.setenv("FDE_IMAGES_DIR", str(art.images_dir))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return at.run()


def assert_clean(at: AppTest) -> None:
    """No traceback element and no error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def card_ids(at: AppTest) -> list[str]:
    """Ids of the product cards with an id line, in page order (a card's caption has several lines)."""
    return [ID.search(c.value).group() for c in at.caption if "\n" in c.value and ID.search(c.value)]


def badges(at: AppTest) -> list[str]:
    """Labels of the reason badges (st.badge is the Markdown directive :colour-badge[label])."""
    return [found.group(1) for m in at.markdown if (found := BADGE.search(m.value))]


def twin_ids(at: AppTest) -> list[str]:
    """Ids of the twin cards: their captions carry 'similarity'."""
    return [ID.search(c.value).group() for c in at.caption if "similarity" in c.value and ID.search(c.value)]


# ---------------------------------------------------------------- pure helpers

def test_parse_customer_id_full_and_short():
    full = "00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657"
    assert app.parse_customer_id(full) == int("5f88aa139fdfc657", 16)
    assert app.parse_customer_id(" 5F88AA139FDFC657 ") == int("5f88aa139fdfc657", 16)
    for bad in ["", "xyz", full[:-1], "12345"]:
        with pytest.raises(UserError, match="not a customer id"):
            app.parse_customer_id(bad)


def test_split_reason():
    assert app.split_reason("colourway of 0108775015") == ("Colourway of", "0108775015")
    assert app.split_reason("looks like 108775015") == ("Looks like", "0108775015")
    assert app.split_reason("similar description to 0108775015") == ("Similar description to", "0108775015")
    assert app.split_reason("bought before") == ("Bought before", None)
    assert app.split_reason("popular at your age") == ("Popular at your age", None)
    assert app.reason_colour("bought before") == "green"
    assert app.reason_colour("trending") == "gray"


def test_folders_from_command_line_then_environment():
    env = {"FDE_DATA_DIR": "/env/data", "FDE_IMAGES_DIR": "/env/images"}
    assert app.artifacts_from_args([], env) == Artifacts(Path("/env/data"), Path("/env/images"))
    # pytest's own options around them are ignored; the command line wins over the environment
    art = app.artifacts_from_args(["-q", "--data-dir", "/cli", "tests/x.py"], env)
    assert art == Artifacts(Path("/cli"), Path("/env/images"))
    assert app.artifacts_from_args(["--data"], {}) == Artifacts(Path("data"), Path("images"))  # no abbreviations
    assert Artifacts().command("visual_features.py") == "python visual_features.py"
    assert art.command("visual_features.py") == \
        "python visual_features.py --data-dir /cli --images-dir /env/images"


def test_week_label():
    assert app.week_label(["2020-09-16", "2020-09-22"]) == "16–22 Sep 2020"
    assert app.week_label(["2020-08-29", "2020-09-04"]) == "29 Aug – 04 Sep 2020"


def test_missing_or_corrupt_image_gets_the_placeholder(tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    assert app.image_of(art, 108775015) == app.placeholder()
    art.image(108775015).parent.mkdir(parents=True)
    art.image(108775015).write_bytes(b"not a jpeg")
    assert app.image_of(art, 108775015) == app.placeholder()


# ---------------------------------------------------------------- visual twins

def test_twins_of_an_article_typed_without_leading_zero(monkeypatch, pipeline, with_image):

    query = int(with_image[0])
    at = run_app(monkeypatch, pipeline)
    assert any("Type an article id" in info.value for info in at.info)
    assert len(at.image) == 12  # a pick from the catalogue to start from
    at.text_input(key="article").input(str(query)).run()  # no leading zero
    assert_clean(at)
    expected = visual_index.VisualIndex.load(pipeline).twins(query, k=12)["twin_id"].to_list()
    assert twin_ids(at) == [format_article_id(t) for t in expected]
    assert len(at.image) == 1 + 12  # the query and its twins
    assert "12 visual twins" in [s.value for s in at.subheader]

    at.button(key="twin-0").click().run()  # "More like this" on the nearest twin explores it
    assert_clean(at)
    assert at.text_input(key="article").value == format_article_id(expected[0])
    assert twin_ids(at)[:1] != [format_article_id(expected[0])]


def test_twins_options_from_the_url(monkeypatch, pipeline, catalogue, with_image):
    codes = catalogue.filter(pl.col("article_id").is_in(with_image.tolist())).group_by("product_code").len()
    product = codes.filter(pl.col("len") > 1)["product_code"].min()  # a product with several colourways
    query = catalogue.filter(pl.col("product_code") == product)["article_id"].min()
    at = run_app(monkeypatch, pipeline, article=format_article_id(query), k=5, hide_colourways="true")
    assert_clean(at)
    shown = [int(t) for t in twin_ids(at)]
    assert len(shown) == 5 and len(at.image) == 6
    assert all(t // 1000 != product for t in shown)

    group = catalogue.filter(pl.col("article_id") == query)["index_group_name"].cast(pl.String).item()
    at = run_app(monkeypatch, pipeline, article=query, same_group="true")
    assert_clean(at)
    shown = [int(t) for t in twin_ids(at)]
    groups = catalogue.filter(pl.col("article_id").is_in(shown))["index_group_name"].cast(pl.String)
    assert shown and set(groups) == {group}


def test_random_article_button(monkeypatch, pipeline, with_image):
    at = run_app(monkeypatch, pipeline)
    next(b for b in at.button if b.label == "Random article").click().run()
    assert_clean(at)
    assert int(at.text_input(key="article").value) in set(with_image.tolist())
    assert len(at.image) == 13


def test_unknown_and_malformed_article_ids(monkeypatch, pipeline):
    at = run_app(monkeypatch, pipeline, article="0999999999")
    assert not at.exception
    assert "not in the catalogue" in at.error[0].value
    at.text_input(key="article").input("abc").run()
    assert not at.exception
    assert "is not an article id" in at.error[0].value
    at.text_input(key="article").input("²").run()  # issue 17: before, a ValueError that said to rerun the pipeline
    assert not at.exception
    assert "is not an article id" in at.error[0].value and "rerun" not in at.error[0].value
    at.text_input(key="article").input("../../etc/passwd").run()  # never a path: no image is read from it
    assert not at.exception and not at.image
    assert "is not an article id" in at.error[0].value


def test_article_without_features_says_so(monkeypatch, pipeline, catalogue, with_image):
    without = sorted(set(catalogue["article_id"].to_list()) - set(with_image.tolist()))
    if not without:
        pytest.skip("every article of the tiny sample has an image")
    at = run_app(monkeypatch, pipeline, article=format_article_id(without[0]))
    assert not at.exception
    assert any("visual twins" in info.value and format_article_id(without[0]) in info.value for info in at.info)
    assert at.image[0].value[0].endswith(".png")  # the placeholder (photos are served as .jpg)


def test_missing_image_shows_placeholder_not_error(monkeypatch, pipeline, with_image, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(pipeline.images_dir, images)
    query = int(with_image[0])
    Artifacts(pipeline.data_dir, images).image(query).unlink()
    at = run_app(monkeypatch, Artifacts(pipeline.data_dir, images), article=query)
    assert_clean(at)
    assert at.image[0].value[0].endswith(".png")
    assert all(image.value[0].endswith(".jpg") for image in at.image[1:])
    assert len(at.image) == 13


def test_missing_visual_features_names_the_command(monkeypatch, pipeline, with_image, tmp_path):
    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    shutil.copytree(pipeline.processed_dir, art.processed_dir)
    at = run_app(monkeypatch, art, article=int(with_image[0]))
    assert not at.exception
    assert len(at.image) == 1  # the query is still shown
    assert any("visual_features.py" in w.value for w in at.warning)


def test_empty_data_dir_names_the_first_command(monkeypatch, tmp_path):
    art = Artifacts(tmp_path / "data", tmp_path / "images")
    for view, command in [("Visual twins", "data_optim.py"), ("Customers", "data_optim.py"),
                          ("launch", "data_optim.py"), ("Evaluation", "final.py")]:
        at = run_app(monkeypatch, art, view=view)
        assert not at.exception
        assert any(command in w.value and "not found" in w.value for w in at.warning), view


# ---------------------------------------------------------------- customers

def test_customer_picked_from_the_sample(monkeypatch, pipeline):
    sample = app.sample_customers(str(pipeline.transactions), None, str(pipeline.customer_ids), None)
    assert 1 <= sample.height <= app.SAMPLE_CUSTOMERS
    assert sample["purchases"].min() >= 2 and sample["purchases"].is_sorted(descending=True)
    at = run_app(monkeypatch, pipeline, view="Customers")
    assert_clean(at)
    picker = at.selectbox(key="customer_pick")
    assert len(picker.options) == sample.height
    customer = sample["customer_id_hex"][0]
    picker.select(customer).run()
    assert_clean(at)
    assert at.text_input(key="customer").value == customer
    key = app.parse_customer_id(customer)
    recs = pl.read_parquet(pipeline.recommendations).filter(pl.col("customer_id") == key).sort("rank")
    bought = pl.read_parquet(pipeline.transactions).filter(pl.col("customer_id") == key)
    recent = min(bought["article_id"].n_unique(), app.RECENT_PURCHASES)
    assert recent >= 1 and recs.height == 12
    assert len(at.image) == recent + 12
    assert card_ids(at) == [format_article_id(a) for a in recs["article_id"]]  # in rank order
    assert badges(at) == [app.split_reason(r)[0] for r in recs["reason"]]
    assert at.metric[0].value == f"{bought.height:,}"


def test_customer_typed_as_last_16_hex_digits(monkeypatch, pipeline):
    ids = pl.read_parquet(pipeline.customer_ids)
    recs = pl.read_parquet(pipeline.recommendations)
    customer = ids.filter(pl.col("customer_id").is_in(recs["customer_id"].implode()))["customer_id_hex"][0]
    at = run_app(monkeypatch, pipeline, view="Customers")
    at.text_input(key="customer").input(customer[-16:]).run()
    assert_clean(at)
    assert any(app.short_hex(customer) in s.value for s in at.subheader)
    assert len(badges(at)) == 12


def test_unknown_and_malformed_customers(monkeypatch, pipeline):
    at = run_app(monkeypatch, pipeline, view="Customers", customer="0" * 64)
    assert not at.exception
    assert "No customer" in at.error[0].value
    at.text_input(key="customer").input("not-an-id").run()
    assert "is not a customer id" in at.error[0].value


def test_customer_without_recommendations_file(monkeypatch, pipeline, tmp_path):
    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    shutil.copytree(pipeline.processed_dir, art.processed_dir)
    customer = pl.read_parquet(art.customer_ids)["customer_id_hex"][0]
    at = run_app(monkeypatch, art, view="Customers", customer=customer)
    assert not at.exception
    assert any("final.py" in w.value for w in at.warning)


# ---------------------------------------------------------------- evaluation

def test_evaluation_matches_metrics_json(monkeypatch, pipeline):
    metrics = json.loads(pipeline.metrics.read_text())
    at = run_app(monkeypatch, pipeline, view="Evaluation")
    assert_clean(at)
    used = metrics["recommender_used"]  # the headline is the recommender whose lists were submitted
    assert used in ("ranker", "hybrid") and at.metric[0].label == f"MAP@12 · {app.pretty_strategy(used)}"
    assert at.metric[0].value == f"{metrics['strategies'][used]['map12']:.4f}"
    assert at.metric[2].value == f"{metrics['customers_evaluated']:,}"
    table = at.dataframe[0].value
    assert len(table) == len(metrics["strategies"])
    assert table["MAP@12"].is_monotonic_decreasing
    cold = metrics["cold_start_purchases"]
    if cold:
        assert any(m.value == f"{cold:,}" for m in at.metric)


def test_results_older_than_the_data_are_not_shown_as_current(monkeypatch, pipeline, tmp_path):
    """Issue 17. Before: after new data (data_optim.py rerun, final.py not), the Evaluation view showed the old
    metrics and the Customers view said a new customer had no entry in the recommendations."""
    import data_optim

    art = copy_artifacts(pipeline, tmp_path)
    shutil.copytree(pipeline.raw_dir, art.raw_dir)
    newcomer = "f" * 48 + "0123456789abcdef"
    first = art.raw_transactions.read_text().splitlines()[1].split(",")
    with open(art.raw_transactions, "a") as fh:  # a new customer's purchase on the last day
        fh.write(",".join([max(line[:10] for line in art.raw_transactions.read_text().splitlines()[1:]),
                           newcomer, *first[2:]]) + "\n")
    data_optim.optimize(art, show_progress=False)
    rerun = f"python final.py --data-dir {art.data_dir}"

    at = run_app(monkeypatch, art, view="evaluation")
    assert not at.exception and not at.metric  # no old MAP@12 shown as the current one
    assert any(app.STALE_RESULTS in w.value and rerun in w.value for w in at.warning), [w.value for w in at.warning]

    at = run_app(monkeypatch, art, view="customers", customer=newcomer)
    assert not at.exception and not at.info
    assert any(app.STALE_RESULTS in w.value and rerun in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.metric[0].value == "1"  # the newcomer's purchase, read from the current data, is still shown

    at = run_app(monkeypatch, art, view="launch")  # the ranker's audiences of the old data are not served either
    assert not at.exception
    assert any(rerun in w.value for w in at.warning), [w.value for w in at.warning]


def test_corrupt_metrics_is_a_message_not_a_traceback(monkeypatch, pipeline, tmp_path):
    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    art.results_dir.mkdir(parents=True)
    art.metrics.write_text("{not json")
    record_results(art)  # as if final.py had written it (a manifest records it): the file itself is damaged
    at = run_app(monkeypatch, art, view="Evaluation")
    assert not at.exception
    assert "could not be shown" in at.error[0].value


def test_evaluation_without_the_ranker_says_how_to_produce_it(monkeypatch, pipeline, tmp_path):
    """What final.py writes when ranker.py never ran: no ranker row, no pool recall, no features, no model."""
    art = copy_artifacts(pipeline, tmp_path)
    shutil.rmtree(art.ranker_dir)
    metrics = json.loads(art.metrics.read_text())
    del metrics["strategies"]["ranker"], metrics["validation_map12"]["ranker"]
    metrics.update(pool_recall={}, feature_importance=[], training_weeks=[], recommender_used="hybrid")
    art.metrics.write_text(json.dumps(metrics))
    record_results(art)
    at = run_app(monkeypatch, art, view="evaluation")
    assert_clean(at)
    assert any("ranker" in w.value and "final.py" in w.value for w in at.warning)


def test_evaluation_shows_the_ranker(monkeypatch, pipeline, tmp_path):
    """The ranker's contract (metrics.json gains ranker, pool_recall, feature_importance): a stand-in file."""
    art = copy_artifacts(pipeline, tmp_path)
    metrics = json.loads(pipeline.metrics.read_text())
    metrics["strategies"]["ranker"] = {**metrics["strategies"]["hybrid"], "map12": 0.5}
    metrics["validation_map12"] = {**metrics.get("validation_map12", {}), "ranker": 0.4}
    metrics["pool_recall"] = {"co_purchase": 0.2, "visual_twins": 0.1, "pool": 0.35}
    metrics["feature_importance"] = [{"feature": f"feature_{i}", "gain": 100.0 - i} for i in range(20)]
    metrics["training_weeks"] = [["2020-08-26", "2020-09-01"], ["2020-09-02", "2020-09-08"]]
    metrics["recommender_used"] = "ranker"
    art.metrics.write_text(json.dumps(metrics))
    record_results(art)
    at = run_app(monkeypatch, art, view="evaluation")
    assert_clean(at)
    assert at.metric[0].label == "MAP@12 · ranker" and at.metric[0].value == "0.5000"
    assert "ranker" in at.dataframe[0].value["Strategy"].to_list()
    assert not any("ranker" in w.value for w in at.warning)
    assert any("Trained on 2 weeks" in c.value for c in at.caption)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # MAP@12, cold start (or none), pool recall, features
    features = json.loads(charts[-1].proto.spec)
    assert features["height"] == 34 * app.TOP_FEATURES + 30 and "Gain" in json.dumps(features)  # the top 15 bars


# ---------------------------------------------------------------- launch audience

def copy_artifacts(pipeline: Artifacts, tmp_path: Path) -> Artifacts:
    """A writable copy of the pipeline's processed/, visual/ and results/ (images shared)."""
    art = Artifacts(tmp_path / "data", pipeline.images_dir)
    for part in ("processed_dir", "visual_dir", "results_dir"):
        shutil.copytree(getattr(pipeline, part), getattr(art, part))
    return art


def record_results(art: Artifacts) -> None:
    """Stand-in results written in place: record them in results/manifest.json as final.py would, from the
    inputs it last used, so that the app takes them as current."""
    manifest = art.manifest("final.py")
    old = json.loads(manifest.read_text()) if manifest.exists() else {"inputs": {}, "built_by": "stand-in results"}
    written = [p for p in (art.metrics, art.recommendations, art.submission, art.launch_audience) if p.exists()]
    write_json(manifest_record(old["inputs"], {p: p for p in written}, old["built_by"], art.data_dir), manifest)


def launch_table(at: AppTest):
    tables = [d.value for d in at.dataframe if "Why" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def test_launch_from_a_shared_link(monkeypatch, pipeline, tmp_path):
    """Without the ranker's table (launch_audience.parquet) the view scores a launch by similarity."""
    art = copy_artifacts(pipeline, tmp_path)
    art.launch_audience.unlink()
    scorer = launch.LaunchAudience.from_artifacts(art)
    new = launch.launches(scorer.articles, pl.scan_parquet(art.transactions))
    aid = next(a for a in new if scorer.score(a).height)  # a launch with an audience
    expected = scorer.score(aid)
    at = run_app(monkeypatch, art, view="launch", article=format_article_id(aid), top=10)
    assert_clean(at)
    assert at.tabs[2].label == "Launch audience"
    assert f"{expected.height:,} customers to show it to" in [s.value for s in at.subheader]
    table = launch_table(at)
    hexes = pl.read_parquet(pipeline.customer_ids)
    want = expected.head(10).join(hexes, on="customer_id", how="left", maintain_order="left")
    assert table["Customer"].to_list() == want["customer_id_hex"].to_list()
    assert all(len(h) == 64 for h in table["Customer"])
    assert table["Why"].to_list() == want["reason"].to_list()
    assert len(at.get("vega_lite_chart")) == 2  # age bands, departments
    assert at.metric[0].value == f"{expected.height:,}" and at.metric[1].value == f"{min(10, expected.height)}"
    csv = at.get("download_button")[0].proto
    assert "launch_audience_" in csv.label or "Download" in csv.label


def test_launch_view_defaults_to_the_newest_launch(monkeypatch, pipeline):
    new = launch.launches(pl.read_parquet(pipeline.articles), pl.scan_parquet(pipeline.transactions))
    at = run_app(monkeypatch, pipeline, view="launch")
    assert_clean(at)
    if new.len():
        assert any(f"Showing the newest launch, {format_article_id(new[0])}" in c.value for c in at.caption)
        assert len(at.selectbox(key="launch_pick").options) == new.len()
        at.selectbox(key="launch_pick").select(new[-1]).run()
        assert_clean(at)
        assert at.text_input(key="article").value == format_article_id(new[-1])


def test_launch_without_similar_customers(monkeypatch, pipeline, tmp_path):
    art = copy_artifacts(pipeline, tmp_path)
    articles = pl.read_parquet(art.articles)
    odd = articles.head(1).with_columns(
        pl.lit(999999001, dtype=pl.Int32).alias("article_id"), pl.lit(999999, dtype=pl.Int32).alias("product_code"),
        *[pl.lit(f"Nothing like it {c}").cast(articles.schema[c]).alias(c)
          for c in ("product_type_name", "colour_group_name", "graphical_appearance_name", "department_name",
                    "index_group_name", "section_name", "garment_group_name", "perceived_colour_master_name")])
    pl.concat([articles, odd]).write_parquet(art.articles)
    # a launch added to the catalogue after the images were embedded: the image features are still valid
    # for every other article, as visual_features.py records after merging a grown catalogue
    manifest = art.manifest("visual_features.py")
    record = json.loads(manifest.read_text())
    for name in record["inputs"]:
        if name.endswith("articles.parquet"):
            record["inputs"][name] = fingerprint(art.articles)
    manifest.write_text(json.dumps(record))
    at = run_app(monkeypatch, art, view="launch", article="0999999001")
    assert_clean(at)
    assert "0 customers to show it to" in [s.value for s in at.subheader]
    assert any("No customer bought anything like 0999999001" in i.value for i in at.info)


def test_launch_unknown_and_malformed_ids(monkeypatch, pipeline):
    at = run_app(monkeypatch, pipeline, view="launch", article="0999999999")
    assert not at.exception
    assert "not in the catalogue" in at.error[0].value
    at.text_input(key="article").input("abc").run()
    assert not at.exception
    assert "is not an article id" in at.error[0].value
    at.text_input(key="article").input("²").run()
    assert not at.exception
    assert "is not an article id" in at.error[0].value and "rerun" not in at.error[0].value


def test_launch_view_serves_the_rankers_audience(monkeypatch, pipeline):
    """final.py scored every launch with the ranker: the view lists that audience, best first."""
    scorer = launch.LaunchAudience.from_artifacts(pipeline)
    aid = int(pl.read_parquet(pipeline.launch_audience)["article_id"][0])
    expected, source = scorer.audience(aid, top=10)
    assert source == "ranker" and expected.height > 0
    at = run_app(monkeypatch, pipeline, view="launch", article=format_article_id(aid), top=10)
    assert_clean(at)
    assert any("learned ranker" in c.value for c in at.caption)
    hexes = pl.read_parquet(pipeline.customer_ids)
    want = expected.join(hexes, on="customer_id", how="left", maintain_order="left")
    assert launch_table(at)["Customer"].to_list() == want["customer_id_hex"].to_list()
    assert launch_table(at)["Why"].to_list() == want["reason"].to_list()


def test_launch_from_the_ranker_table(monkeypatch, pipeline, tmp_path):
    art = copy_artifacts(pipeline, tmp_path)
    articles = pl.read_parquet(art.articles)
    aid = int(articles["article_id"][0])
    customers = pl.read_parquet(art.customer_ids).head(3)
    ranked = pl.DataFrame({"article_id": [aid] * 3, "customer_id": customers["customer_id"], "rank": [1, 2, 3],
                           "score": [0.9, 0.5, 0.1], "reason": ["ranker says a", "ranker says b", "ranker says c"],
                           "source_article_id": [None, None, None]},
                          schema={"article_id": pl.Int32, "customer_id": pl.UInt64, "rank": pl.UInt16,
                                  "score": pl.Float32, "reason": pl.String, "source_article_id": pl.Int32})
    ranked.write_parquet(art.launch_audience)
    record_results(art)
    at = run_app(monkeypatch, art, view="launch", article=aid)
    assert_clean(at)
    assert "3 customers to show it to" in [s.value for s in at.subheader]
    assert any("learned ranker" in c.value for c in at.caption)
    assert launch_table(at)["Customer"].to_list() == customers["customer_id_hex"].to_list()


def test_customer_view_shows_the_rankers_breakdown(monkeypatch, pipeline, tmp_path):
    """recommendations.parquet from the ranker carries `explanation`: its contributions per item."""
    art = copy_artifacts(pipeline, tmp_path)
    recs = pl.read_parquet(art.recommendations)
    parts = [{"feature": "days_since_bought_type", "contribution": 0.75, "text": "bought this type last week"},
             {"feature": "score__popular", "contribution": -0.25, "text": "less popular than most"}]
    kind = pl.List(pl.Struct({"feature": pl.String, "contribution": pl.Float32, "text": pl.String}))
    recs.with_columns(explanation=pl.Series([parts] * recs.height, dtype=kind)).write_parquet(art.recommendations)
    record_results(art)
    customer = pl.read_parquet(art.customer_ids).filter(
        pl.col("customer_id").is_in(recs["customer_id"].implode()))["customer_id_hex"][0]
    at = run_app(monkeypatch, art, view="customers", customer=customer)
    assert_clean(at)
    lines = [m.value for m in at.markdown if "bought this type last week" in m.value]
    assert len(lines) == 12
    assert "`+0.750` bought this type last week" in lines[0] and "`-0.250` less popular than most" in lines[0]


def test_switching_tabs_keeps_the_other_tabs_inputs(monkeypatch, pipeline, with_image):
    query = format_article_id(int(with_image[0]))
    customer = pl.read_parquet(pipeline.customer_ids)["customer_id_hex"][0]
    at = run_app(monkeypatch, pipeline, article=query, k=6, customer=customer)
    assert_clean(at)
    for view in ["Customers", "Launch audience", "Evaluation", "Visual twins"]:
        at.session_state["view"] = view
        at.run()
        assert_clean(at)
        assert at.query_params["article"] == query, view
        assert at.query_params["k"] == "6", view
        assert at.query_params["customer"] == customer, view


# ---------------------------------------------------------------- search

def test_search_by_words_from_a_shared_link(monkeypatch, pipeline, catalogue):
    row = catalogue.filter(pl.col("product_type_name") == "Trousers").row(0, named=True)
    colour, group = row["colour_group_name"], row["index_group_name"]
    at = run_app(monkeypatch, pipeline, view="search", q=f"{colour} trousers", index_group=group)
    assert_clean(at)
    ids = [int(i) for i in card_ids(at)]
    shown = catalogue.filter(pl.col("article_id").is_in(ids))
    assert len(ids) == 12 and shown["index_group_name"].unique().to_list() == [group]  # the URL's filter holds
    assert (shown["product_type_name"] == "Trousers").any() and (shown["colour_group_name"] == colour).any()
    assert at.query_params["q"] == f"{colour} trousers" and at.query_params["view"] == "search"
    assert any("price band" in c.value for c in at.caption) and any(": colour" in c.value for c in at.caption)


def test_search_by_an_uploaded_photo_opens_its_twins(monkeypatch, pipeline, with_image):
    aid = int(with_image[0])
    at = run_app(monkeypatch, pipeline, view="search")
    assert_clean(at)
    at.file_uploader(key="search_photo").set_value(("mine.jpg", pipeline.image(aid).read_bytes(), "image/jpeg"))
    at.run()
    assert_clean(at)
    assert card_ids(at)[0] == format_article_id(aid)
    assert any("looks like the photo (similarity 1.00)" in c.value for c in at.caption)
    at.button(key="search-0").click().run()  # More like this: the twins of the best match
    assert_clean(at)
    assert at.session_state["view"] == app.VIEWS[0] and at.session_state["article"] == format_article_id(aid)


def test_search_bad_photo_and_unknown_filter_values(monkeypatch, pipeline):
    at = run_app(monkeypatch, pipeline, view="search", q="dress", colour="Plaid")
    assert not at.exception
    at.file_uploader(key="search_photo").set_value(("broken.jpg", b"\xff\xd8\xff\xe0 not really", "image/jpeg"))
    at.run()
    assert not at.exception
    assert any("could not be decoded" in w.value or "not an image" in w.value for w in at.warning)
