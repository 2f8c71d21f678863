"""End to end in headless Chromium: the runs list, a run page with its plots, a comparison, and
the playground round trip, on real tiny runs served by `tuneforge ui`'s app.

Needs Debian's `chromium` (/usr/bin/chromium, or $TUNEFORGE_CHROMIUM) and the `playwright`
package (dev extra; its own browser downloads are not used). Skips, saying why, without them.
Screenshots go to $TUNEFORGE_TEST_ARTIFACTS/ui (default: test-artifacts/ui in the repository).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_helpers import running_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TUNEFORGE_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the "
        "browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = Path(os.environ.get("TUNEFORGE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path = root / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def ui_url(served_runs) -> Iterator[str]:
    from tuneforge.ui.app import LOOPBACK_HOSTS, create_app

    # As `tuneforge ui` builds it on 127.0.0.1: loopback Host names only.
    with running_server(create_app(served_runs, allowed_hosts=LOOPBACK_HOSTS)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, ui_url) -> Iterator[Any]:
    """A fresh page that records every URL it requests (all must be this server's)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    outside = [u for u in page.requested if not u.startswith((ui_url, "data:"))]
    context.close()
    assert not outside, f"the page fetched from elsewhere: {outside}"


def test_runs_list(page, ui_url, artifacts):
    page.goto(ui_url + "/")
    rows = page.locator("table#runs tbody tr")
    assert rows.count() == 3  # alpha, beta, loud
    alpha = page.locator('tr[data-run="alpha"]')
    assert alpha.is_visible()
    assert "accuracy" in alpha.inner_text()  # evaluated: its tuned score and interval
    assert "not evaluated" in page.locator('tr[data-run="beta"]').inner_text()
    page.screenshot(path=str(artifacts / "runs-list.png"), full_page=True)

    page.click('tr[data-run="alpha"] a')
    page.wait_for_url(ui_url + "/runs/alpha")
    assert page.locator("h1").inner_text().startswith("alpha")


def test_run_page_shows_its_plots_and_eval_report(page, ui_url, artifacts):
    page.goto(ui_url + "/runs/alpha")
    for chart in ("#loss-chart", "#lr-chart"):
        box = page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
    train = page.locator('#loss-chart polyline[data-series="train"]')
    assert train.get_attribute("data-points") == "4"  # 4 optimizer steps
    assert len(train.get_attribute("points").split()) == 4
    assert page.locator('#loss-chart polyline[data-series="val"]').count() == 1
    assert page.locator("#lr-chart polyline").count() == 1
    assert page.locator(".verdict").first.is_visible()
    confusion = page.locator('figure[data-name="confusion_tuned"] img')
    confusion.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=confusion.element_handle()
    )
    page.screenshot(path=str(artifacts / "run-page.png"), full_page=True)


def test_compare_two_runs_from_the_list(page, ui_url, artifacts):
    page.goto(ui_url + "/")
    page.check('input[value="alpha"]')
    page.check('input[value="beta"]')
    page.click("text=Compare selected")
    page.wait_for_selector("#compare-table")
    assert page.locator("#compare-table thead th").count() == 3
    assert page.locator("#loss-chart polyline").count() == 4  # train and val of each
    assert "train.lr" in page.locator("#config-diff").inner_text()
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)


def shown(text: str) -> str:
    """What the playground's script displays for an answer (see tuneforge.ui.assets.PLAYGROUND_JS)."""
    if text == "":
        return "(empty answer)"
    if not text.strip():
        return f"(whitespace only: {json.dumps(text, ensure_ascii=False)})"
    return text


def test_playground_round_trip(page, ui_url, artifacts):
    page.goto(ui_url + "/playground?adapter=alpha")
    assert page.locator("#adapter").input_value() == "alpha"
    page.select_option("#adapter", "loud")
    system = page.locator("#system").input_value()
    assert system.startswith("Classify the item")  # prefilled from the run's data
    page.fill("#prompt", "What is salmon?")
    page.fill("#max_tokens", "6")
    page.click("#send")
    for pane in ("#answer-base", "#answer-adapter"):
        page.wait_for_selector(f"{pane}[data-done]")
        assert page.get_attribute(pane, "data-done") == "ok", page.inner_text(pane)
    assert "loud ·" in page.locator("#answer-adapter .meta").inner_text()
    assert page.locator("#send").is_enabled()
    page.screenshot(path=str(artifacts / "playground.png"), full_page=True)

    # Each pane shows what the serve API answers for its model (greedy: the same every time),
    # and the two differ (loud's adapter weights are large).
    texts = {}
    for target in ("base", "adapter"):
        body = {"adapter": "loud", "target": target, "system": system,
                "prompt": "What is salmon?", "max_tokens": 6}  # fmt: skip
        answer = httpx.post(ui_url + "/api/chat", json=body, timeout=60).json()
        texts[target] = page.locator(f"#answer-{target} .text").text_content()
        assert texts[target] == shown(answer["text"])
        assert answer["model"] in page.locator(f"#answer-{target} .meta").inner_text()
    assert texts["base"] != texts["adapter"]
