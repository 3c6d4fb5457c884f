"""End to end: `streamlit run app.py` on the tiny pipeline, driven by headless Chromium through Playwright.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install chromium`; Playwright's own browser
download does not work on these machines). Screenshots go to test-artifacts/.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import app
from fde import launch
from fde.ids import format_article_id

ROOT = Path(app.__file__).resolve().parent
SHOTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("FDE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 90   # seconds for the server to answer its health check
RENDER_TIMEOUT = 90_000  # ms for a view to render (the first twin lookup loads torch and the embeddings)
IMAGES = '[data-testid="stImage"] img'

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium); CI installs it")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipeline, tmp_path_factory):
    """The app served by `python -m streamlit run` on a free local port; yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none",
             "--", "--data-dir", str(pipeline.data_dir), "--images-dir", str(pipeline.images_dir)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {START_TIMEOUT}s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    yield page
    page.close()


def wait_for_images(page, count: int) -> list[dict]:
    """Wait until exactly `count` images are on the page and all have decoded; return their sizes."""
    # The sizes are read in the same check that found every image decoded: read later, a rerun of the
    # app in between can have replaced an image with a fresh one that has not loaded yet (width 0).
    found = page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector)];
            const ready = images.length === count && images.every(i => i.complete && i.naturalWidth > 0);
            return ready && images.map(i => ({w: i.naturalWidth, h: i.naturalHeight, src: i.src}));
        }""", arg=[IMAGES, count], timeout=RENDER_TIMEOUT)
    return found.json_value()


def screenshot(page, name: str) -> Path:
    """The whole app as a PNG (it scrolls inside its own container, so the viewport grows to fit it)."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
    page.set_viewport_size({"width": 1440, "height": 4000})
    time.sleep(1)  # let the grid reflow
    height = page.evaluate("""() => {
        const content = document.querySelector('[data-testid="stMainBlockContainer"]');
        return content ? content.getBoundingClientRect().bottom : document.body.scrollHeight;
    }""")
    page.set_viewport_size({"width": 1440, "height": min(max(int(height) + 16, 800), 4000)})
    time.sleep(0.5)
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path))
    return path


def assert_no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_twins_render_as_real_images(server, browser, page, pipeline):
    import numpy as np

    query = int(np.load(pipeline.visual_article_ids)[0])
    page.goto(server)
    box = page.get_by_label("Article id")
    box.wait_for(timeout=RENDER_TIMEOUT)
    box.fill(str(query))  # typed without the leading zero
    box.press("Enter")

    images = wait_for_images(page, 1 + app.DEFAULT_K)  # the query and its twins
    assert all(image["w"] > 0 and image["h"] > 0 for image in images)
    page.get_by_text(f"{app.DEFAULT_K} visual twins").wait_for()
    assert_no_traceback(page)
    assert f"article={query}" in page.url and "view=twins" in page.url  # the state is in the URL ...
    print("screenshot:", screenshot(page, "app_twins.png"))

    shared = browser.new_page(viewport={"width": 1440, "height": 1000})  # ... so a link opens the same article
    shared.goto(page.url.replace(f"article={query}", f"article={format_article_id(query)}") + "&k=6")
    assert len(wait_for_images(shared, 1 + 6)) == 7
    shared.close()


def test_customer_and_evaluation_views(server, page, pipeline):
    import polars as pl

    sample = app.sample_customers(str(pipeline.transactions), None, str(pipeline.customer_ids), None)
    customer = sample["customer_id_hex"][0]
    bought = pl.read_parquet(pipeline.transactions).filter(
        pl.col("customer_id") == app.parse_customer_id(customer))["article_id"].n_unique()
    page.goto(f"{server}/?view=Customers&customer={customer}")
    wait_for_images(page, min(bought, app.RECENT_PURCHASES) + 12)
    page.get_by_text("Recommended next").wait_for()
    assert_no_traceback(page)
    print("screenshot:", screenshot(page, "app_customer.png"))

    page.goto(f"{server}/?view=Evaluation")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=RENDER_TIMEOUT)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=RENDER_TIMEOUT)
    time.sleep(1)  # charts draw after their container appears
    assert page.get_by_text("MAP@12 by strategy").count() == 1
    assert_no_traceback(page)
    print("screenshot:", screenshot(page, "app_evaluation.png"))


def test_shared_launch_link(server, browser, page, pipeline):
    """A merchandiser's link to a launch's audience: the customer list and both charts render."""
    import polars as pl

    scorer = launch.LaunchAudience.from_artifacts(pipeline)
    new = launch.launches(scorer.articles, pl.scan_parquet(pipeline.transactions))
    aid = next((a for a in new if scorer.score(a).height), None) or \
        next(a for a in scorer.articles["article_id"] if scorer.score(a).height)
    count = scorer.score(aid).height
    page.goto(f"{server}/?view=launch&article={format_article_id(aid)}&top=20")
    page.get_by_text(f"{count:,} customers to show it to").wait_for(timeout=RENDER_TIMEOUT)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=RENDER_TIMEOUT)
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(1).wait_for(timeout=RENDER_TIMEOUT)
    page.wait_for_function(  # both charts have drawn their marks
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                 .filter(c => c.querySelector('canvas, svg')).length >= 2""", timeout=RENDER_TIMEOUT)
    assert page.get_by_text("Who, and why").count() == 1
    assert page.get_by_text("Download the top 20 customer ids (CSV)").count() == 1
    assert_no_traceback(page)
    print("screenshot:", screenshot(page, "app_launch.png"))

    # switching tabs keeps this view's inputs in the URL, so the link still opens this audience later
    assert "view=launch" in page.url
    page.get_by_role("tab", name="Customers").click()
    page.wait_for_url(lambda url: "view=customers" in url, timeout=RENDER_TIMEOUT)
    time.sleep(1)
    assert f"article={format_article_id(aid)}" in page.url and "top=20" in page.url
    page.get_by_role("tab", name="Launch audience").click()  # and back: the same audience
    page.wait_for_url(lambda url: "view=launch" in url, timeout=RENDER_TIMEOUT)
    page.get_by_text(f"{count:,} customers to show it to").wait_for(timeout=RENDER_TIMEOUT)
    assert_no_traceback(page)


def test_search_uploads_a_photo_file(server, page, pipeline):
    """A photo file uploaded in the Search view: the photo and its 12 closest articles, itself first."""
    import numpy as np

    aid = int(np.load(pipeline.visual_article_ids)[0])
    page.goto(f"{server}/?view=search&q=trousers")
    page.get_by_text("the articles whose words match").first.wait_for(timeout=RENDER_TIMEOUT)  # words first
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(pipeline.image(aid)))
    page.get_by_text("looks like the photo (similarity 1.00)").first.wait_for(timeout=RENDER_TIMEOUT)
    images = wait_for_images(page, 1 + 2 * app.GRID_COLUMNS)  # the photo and the results
    assert all(image["w"] > 0 for image in images)
    assert page.get_by_text(format_article_id(aid)).count() >= 1
    assert "view=search" in page.url and "q=trousers" in page.url
    assert_no_traceback(page)
    print("screenshot:", screenshot(page, "app_search.png"))
