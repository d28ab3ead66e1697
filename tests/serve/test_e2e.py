"""End to end in headless Chromium: paint a mask, generate, see the tile beside it; errors; browsing.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package; skips
with a message otherwise. Playwright drives the system Chromium (never ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import TILE, decode_data_url

CHROMIUM = os.environ.get("HISTOSYNTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Without these Chromium hangs on a closed network (update checks, sync, QUIC probes) or lacks a sandbox.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not found at {CHROMIUM}: apt-get install -y chromium (or set HISTOSYNTH_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses the system chromium)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 800})
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def test_paint_generate_and_see_the_tile_beside_its_mask(live_server, page) -> None:
    url, _ = live_server()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] * 0.25)  # a stroke across the top quarter (gland)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 10, box["y"] + box["height"] * 0.25, steps=8)
    page.mouse.up()
    page.select_option("#label", label="Polyp")
    page.fill("#steps", "3")
    page.click("#generate")
    page.wait_for_function("() => { const img = document.querySelector('.result-image');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    image = page.locator(".result-image").first
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [TILE, TILE]
    tile = decode_data_url(image.get_attribute("src"))
    assert tile.shape == (TILE, TILE, 3) and tile.std() > 0
    mask = decode_data_url(page.locator(".result .pair img").nth(1).get_attribute("src"))
    palette = page.evaluate("fetch('/api/info').then(r => r.json()).then(i => i.palette)")
    row = TILE // 4
    assert (mask[row, TILE // 2] == palette[1]).all() and (mask[-2, TILE // 2] == palette[0]).all()
    assert "Polyp" in page.locator(".result figcaption").first.inner_text()
    assert page.locator("#error").inner_text() == ""
    assert problems == []  # no script errors, no CSP violations, no failed loads


def test_a_non_image_upload_shows_the_servers_message(live_server, page, tmp_path: Path) -> None:
    url, _ = live_server()
    (tmp_path / "notes.png").write_text("not really a png")
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#mask-file", str(tmp_path / "notes.png"))
    page.wait_for_function("() => document.querySelector('#error').textContent.length > 0")
    assert page.locator("#error").inner_text() == \
        "mask: corrupt or unreadable mask (not a PNG, JPEG, TIFF, BMP or WebP file)"
    page.select_option("#mode", "transfer")
    assert page.locator("[data-common='guidance']").is_hidden()
    assert page.locator("[data-mode='transfer'] [data-field='appearance']").is_visible()
    page.click("#generate")  # no appearance chosen
    page.wait_for_function("() => document.querySelector('#error').textContent.startsWith('appearance')")
    assert page.locator(".result").count() == 0


def test_browse_a_dataset_and_open_its_report(live_server, page) -> None:
    url, _ = live_server()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    page.click("nav button[data-tab='browse']")
    page.wait_for_function("() => document.querySelectorAll('#tiles .tile img').length >= 5 && "
                           "[...document.querySelectorAll('#tiles img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#tiles .tile").count() == 5
    assert page.locator("#report-link").is_visible()
    with page.context.expect_page() as report_page:
        page.click("#report-link")
    report_page.value.wait_for_load_state()
    assert "audit of run_a" in report_page.value.content()
    page.select_option("#dataset", "run_b")
    page.wait_for_function("() => document.querySelectorAll('#tiles .tile').length === 2")
    assert page.locator("#report-link").is_hidden()
    assert "histosynth report run_b" in page.locator("#dataset-note").inner_text()
    assert np.all([page.locator("#tiles .tile").nth(i).locator("img").count() == 1 for i in range(2)])
