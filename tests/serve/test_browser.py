"""The search page in a real headless Chromium (the OS package), driven by selenium through the system chromedriver.

Marked ``browser``: `make test` leaves it out and `make test-browser` (run by .ci/run) installs Chromium,
chromedriver and selenium where it can, then runs it alone. Without them it is skipped, saying what is missing.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
HOW_TO_INSTALL = "run `make test-browser`, which installs chromium and chromium-driver (apt-get, as root) and selenium"


def find_browser() -> tuple[str, str]:
    """The Chromium binary and its chromedriver, or a skip naming what is missing."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip(f"selenium is not installed: {HOW_TO_INSTALL}")
    browser = next((path for path in map(shutil.which, BROWSERS) if path), None)
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromedriver (chromium-driver)", driver)) if not path]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found on PATH: {HOW_TO_INSTALL}")
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator:
    browser, driver_path = find_browser()  # skips, naming what is missing, before selenium is imported
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, server: str):
    """The search page, freshly loaded for each test."""
    browser.get(server + "/")
    return browser


def wait_for(driver, condition, what: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=f"the page never showed {what}")


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def cards(driver, section: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f"#{section} .card")


def search_for(driver, text: str) -> None:
    box = by_id(driver, "query-text")
    box.clear()
    box.send_keys(text)
    by_id(driver, "search-button").click()


def test_search_then_refine_by_clicking_a_result(page):
    wait_for(page, lambda d: "image+text" in by_id(d, "query-kinds").text, "the query kinds of the index")
    assert "items" in by_id(page, "index-info").text

    search_for(page, "")
    wait_for(page, lambda d: by_id(d, "error").is_displayed(), "an error for an empty query")
    assert "empty query" in by_id(page, "error").text

    search_for(page, "red striped dress")
    wait_for(page, lambda d: len(cards(d, "results")) == 20, "20 results")
    assert not by_id(page, "error").is_displayed()
    assert "text query" in by_id(page, "status").text
    first = [card.get_attribute("data-item-id") for card in cards(page, "results")]
    assert "score" in cards(page, "results")[0].text and first[0] in cards(page, "results")[0].text

    chosen = first[2]
    cards(page, "results")[2].click()
    wait_for(page, lambda d: by_id(d, "reference").is_displayed(), "the reference panel")
    assert by_id(page, "reference-label").text == f"item {chosen}"

    search_for(page, "in blue")
    wait_for(page, lambda d: "image+text query" in by_id(d, "status").text, "the composed query's results")
    assert f"reference {chosen}" in by_id(page, "status").text
    refined = [card.get_attribute("data-item-id") for card in cards(page, "results")]
    assert len(refined) == 20 and refined != first


def test_pick_from_the_catalogue_and_upload(page, tmp_path: Path):
    by_id(page, "pick-button").click()
    wait_for(page, lambda d: len(cards(d, "picks")) == 12, "12 catalogue picks")
    picked = cards(page, "picks")[0].get_attribute("data-item-id")
    cards(page, "picks")[0].click()
    assert by_id(page, "reference-label").text == f"item {picked}" and not by_id(page, "picks").is_displayed()
    search_for(page, "")
    wait_for(page, lambda d: f"reference {picked} (image query" in by_id(d, "status").text, "the picked item's results")

    by_id(page, "reference-clear").click()
    upload = tmp_path / "query.jpg"
    Image.new("RGB", (64, 64), "navy").save(upload, "JPEG")
    by_id(page, "query-image").send_keys(str(upload))
    assert by_id(page, "reference-label").text == "uploaded query.jpg"
    search_for(page, "")
    wait_for(page, lambda d: "uploaded image (image query" in by_id(d, "status").text, "the uploaded image's results")
    search_for(page, "with stripes")
    wait_for(page, lambda d: "uploaded image (image+text query" in by_id(d, "status").text, "composed results")

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"these are notes, not a picture")
    by_id(page, "query-image").send_keys(str(not_an_image))
    search_for(page, "")
    wait_for(page, lambda d: by_id(d, "error").is_displayed(), "an error for a file that is not an image")
    assert "415" in by_id(page, "error").text and "not an image" in by_id(page, "error").text


def test_category_filter_and_a_result_grid(page, searcher):
    from selenium.webdriver.support.ui import Select

    category = searcher.categories[-1]
    wait_for(page, lambda d: len(Select(by_id(d, "query-category")).options) > 1, "the categories")
    Select(by_id(page, "query-category")).select_by_value(category)
    search_for(page, "black sneakers")
    wait_for(page, lambda d: "text query" in by_id(d, "status").text, "results")
    assert all(card.text.endswith(category) for card in cards(page, "results"))
    png = page.get_screenshot_as_png()
    image = Image.open(io.BytesIO(png))
    assert image.width >= 1000 and len(set(image.convert("L").getdata())) > 50  # pictures, not a blank page
