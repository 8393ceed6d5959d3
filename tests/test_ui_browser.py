"""The web page in a real browser: headless Chromium (Debian's package, driven by Selenium) against a live
`tandem serve` on a tiny store with API keys on. Every step leaves a screenshot in the test's temporary folder.

Skipped with the reason "Chromium is not installed" when the browser is missing, except where
``TANDEM_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.browser import NOT_INSTALLED, chromium_paths, full_page_png, start_chromium, wait_for
from tests.live import free_port, serve_process
from tests.test_service import ENV, N_CANDIDATES, N_ITEMS, STALENESS, build_store

KEY = "browser-test-key"
K = 5
TITLE = re.compile(r"^Movie \d+$")

if chromium_paths() is None:
    if os.environ.get("TANDEM_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"TANDEM_REQUIRE_BROWSER=1 but {NOT_INSTALLED}")
    pytest.skip(NOT_INSTALLED, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402 - after the skip: selenium is only needed with a browser
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The service tests' tiny store, with a threshold the policy never reaches: a newer history reuses the cached
    list until it is more than STALENESS items ahead, then the cloud is asked again."""
    root = build_store(tmp_path_factory.mktemp("ui") / "store")
    th = json.loads((root / "thresholds.json").read_text())
    th["thresholds"]["lsc4rec"]["0.5"]["tau"] = 1e9
    (root / "thresholds.json").write_text(json.dumps(th))
    return root


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    port = free_port()
    cmd = [sys.executable, "-m", "pipelines", "serve", "--artifacts", str(store), "--port", str(port), "--threads",
           "1", "--log-level", "warning"]
    log = tmp_path_factory.mktemp("ui-log") / "serve.log"
    with serve_process(cmd, port, log, env={**ENV, "TANDEM_API_KEYS": KEY}, health="/healthz") as url:
        yield url


@pytest.fixture(scope="module")
def reasoning_server(store, tmp_path_factory):
    """The same store served with a tiny random ThinkRec model (the reasoning tests' one)."""
    from tests.test_service_reasoning import SRM_WIDTH, build_thinkrec

    model = build_thinkrec(tmp_path_factory.mktemp("ui-thinkrec") / "model", SRM_WIDTH)
    port = free_port()
    cmd = [sys.executable, "-m", "pipelines", "serve", "--artifacts", str(store), "--port", str(port), "--threads",
           "1", "--log-level", "warning", "--thinkrec", str(model)]
    log = tmp_path_factory.mktemp("ui-log") / "serve-thinkrec.log"
    with serve_process(cmd, port, log, env={**ENV, "TANDEM_API_KEYS": KEY}, health="/healthz") as url:
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield d
    d.quit()


@pytest.fixture()
def api(server):
    import httpx

    with httpx.Client(base_url=server, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


# WCAG contrast of each visible element's text colour against the first opaque background behind it
CONTRAST_JS = r"""
const lum = (colour) => {
  const [r, g, b] = colour.match(/[\d.]+/g).slice(0, 3).map((v) => {
    v = Number(v) / 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor, m = c.match(/[\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0)) return c;
  }
  return "rgb(255, 255, 255)";
};
return [...document.querySelectorAll(arguments[0])]
  .filter((el) => el.getClientRects().length && !el.disabled)
  .map((el) => {
    const a = lum(getComputedStyle(el).color), b = lum(background(el));
    return [`${el.tagName.toLowerCase()}#${el.id}.${el.className}`, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  });
"""
TEXT = "h1, h2, h3, label, p, .hint, .title, .scores, button, .flag, a, th, td, dt, dd, li, #error, .note"


def low_contrast(driver) -> list:
    return [(name, round(ratio, 2)) for name, ratio in driver.execute_script(CONTRAST_JS, TEXT) if ratio < 4.5]


def open_page(driver, server, with_key: bool = True) -> None:
    """A fresh page; with ``with_key`` the key is entered in the form the page shows after its first 401."""
    driver.set_window_size(1280, 1000)
    driver.get(f"{server}/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server}/ui/")
    wait_for(driver, lambda d: d.find_element(By.ID, "key-form").is_displayed(), what="the API key form")
    if with_key:
        driver.find_element(By.ID, "key-input").send_keys(KEY + Keys.ENTER)
        wait_for(driver, lambda d: d.find_element(By.ID, "user-range").text == "(0–29)", what="the store facts")


def type_into(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def list_items(driver, list_id: str) -> list[tuple[int, str]]:
    """(id, title) of a list's rows, read in one script (a row re-rendered meanwhile cannot go stale)."""
    rows = driver.execute_script(f"return [...document.querySelectorAll('#{list_id} li')].map(li => "
                                 "[Number(li.dataset.itemId), li.querySelector('span').textContent])")
    return [(int(i), title) for i, title in rows]


def history_ids(driver) -> list[int]:
    return [i for i, _ in list_items(driver, "history")]


def recommend(driver, k: int = K) -> None:
    before = driver.find_element(By.ID, "raw").get_attribute("textContent")
    type_into(driver, "k", str(k))
    driver.find_element(By.ID, "recommend").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "raw").get_attribute("textContent") not in ("", before),
             what="the recommendation")


def error_text(driver) -> str:
    wait_for(driver, lambda d: d.find_element(By.ID, "error").is_displayed(), what="the error box")
    return driver.find_element(By.ID, "error").text


def test_missing_key_shows_the_401_message(driver, server, api, shots) -> None:
    open_page(driver, server, with_key=False)
    expected = api.get("/v1/store", headers={"Authorization": ""}).json()["error"]["message"]
    assert error_text(driver) == f"Error 401: {expected}" and "missing API key" in expected
    assert driver.switch_to.active_element.get_attribute("id") == "key-input"  # asked once, focus on the field
    full_page_png(driver, shots / "01_missing_key.png")
    driver.find_element(By.ID, "key-input").send_keys(KEY + Keys.ENTER)
    wait_for(driver, lambda d: not d.find_element(By.ID, "error").is_displayed(), what="the error to clear")
    assert driver.find_element(By.ID, "user-range").text == "(0–29)"


def test_pick_a_user_and_see_the_three_lists(driver, server, api, shots) -> None:
    open_page(driver, server)
    type_into(driver, "user-id", "3")
    driver.find_element(By.ID, "load-user").click()
    user = api.get("/v1/users/3").json()
    wait_for(driver, lambda d: history_ids(d) == [it["item_id"] for it in user["history"]], what="user 3's history")
    assert [title for _, title in list_items(driver, "history")] == [it["title"] for it in user["history"]]
    recommend(driver)
    full_page_png(driver, shots / "02_recommend.png")
    # the same request from the API (now an exact cache hit): the page shows its lists, titles and scores
    body = api.post("/v1/recommend", json={"user_id": 3, "k": K, "candidates": True}).json()
    for list_id in ("list-llm", "list-srm", "list-fused"):
        shown = list_items(driver, list_id)
        assert len(shown) == K and all(TITLE.match(title) for _, title in shown), (list_id, shown)
    pool = body["candidates"]
    assert [i for i, _ in list_items(driver, "list-llm")] == [c["item_id"] for c in pool[:K]]
    by_srm = sorted(pool, key=lambda c: -c["srm_score"])[:K]
    assert [i for i, _ in list_items(driver, "list-srm")] == [c["item_id"] for c in by_srm]
    assert [i for i, _ in list_items(driver, "list-fused")] == [it["item_id"] for it in body["items"]]
    top = body["items"][0]
    first_scores = driver.find_element(By.CSS_SELECTOR, "#list-fused li .scores").text
    assert first_scores == f"fused {top['score']:.3f} · LLM {top['llm_score']:.3f} · SRM {top['srm_score']:.3f}"
    assert driver.find_element(By.ID, "decision-text").text.startswith("asked the cloud")
    assert driver.find_element(By.ID, "flag-degraded").text == "degraded: no"
    assert driver.find_element(By.ID, "flag-cold").text == "cold start: no"
    assert "Fusion rule: sum" in driver.find_element(By.ID, "fusion-rule").text
    timings = driver.find_element(By.ID, "timings").text
    assert all(stage in timings for stage in ("parameters", "srm", "policy", "llm", "fusion", "total"))
    wire = json.loads(driver.find_element(By.ID, "raw").get_attribute("textContent"))["wire_bytes"]
    assert wire["down"] == 8 * N_CANDIDATES and wire["up"] == 4 * min(len(user["history"]), 10)  # SRM max_len 10
    rows = driver.find_element(By.ID, "bytes").text.splitlines()
    assert f"device → cloud (history ids) {wire['up']} B" in rows
    assert f"cloud → device (candidate list) {wire['down']} B" in rows
    # Explain without a reasoning model: the page says how to get one (the API's feature_not_enabled message)
    driver.find_element(By.ID, "explain").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "explain-message"), what="the explain message")
    assert "tandem eval thinkrec" in driver.find_element(By.ID, "explain-message").text
    assert low_contrast(driver) == []
    # phone width: one column, nothing wider than the screen
    driver.set_window_size(390, 844)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    full_page_png(driver, shots / "03_phone.png")


def test_device_view_decisions_are_the_apis(driver, server, api, shots) -> None:
    open_page(driver, server)
    type_into(driver, "user-id", "5")
    driver.find_element(By.ID, "load-user").click()
    user = api.get("/v1/users/5").json()
    wait_for(driver, lambda d: len(history_ids(d)) == len(user["history"]), what="user 5's history")
    recommend(driver)
    choices = Select(driver.find_element(By.ID, "next-item")).options
    assert user["next_item"]["title"] in choices[0].text and "real next item" in choices[0].text
    assert len(choices) == 1 + K
    seen = []
    for step in range(1, STALENESS + 2):  # reuse while the cached list is at most STALENESS items behind, then ask
        Select(driver.find_element(By.ID, "next-item")).select_by_index(0)
        driver.find_element(By.ID, "step").click()
        wait_for(driver, lambda d, n=step: len(d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")) == n,
                 what=f"device step {step}")
        row = driver.find_elements(By.CSS_SELECTOR, "#steps tbody tr")[-1]
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        requested = row.get_attribute("data-requested") == "true"
        seen.append(requested)
        # what the API says of the same history now: a reused list is decided again the same way (the cache is
        # unchanged); a list that was asked for is now cached for exactly this history
        again = api.post("/v1/recommend", json={"history": history_ids(driver), "k": K}).json()["decision"]
        if requested:
            assert cells[2].startswith("asked the cloud") and again["cache_hit"] and again["score"] is None
        else:
            assert cells[2].startswith("reused the cached list") and not again["requested"]
            assert cells[3] == f"{again['score']:.3f} / {again['threshold']:.3f}"
        # the generated parameters' effect: SRM top-k items at another rank than under the static SRM
        pool = json.loads(driver.find_element(By.ID, "raw").get_attribute("textContent"))["candidates"]
        static_rank = {c["item_id"]: r for r, c in enumerate(sorted(pool, key=lambda c: -c["static_srm_score"]), 1)}
        top = sorted(pool, key=lambda c: -c["srm_score"])[:K]
        moved = sum(static_rank[c["item_id"]] != r for r, c in enumerate(top, 1))
        assert cells[5] == f"{moved} of the SRM's top {K}", cells
        full_page_png(driver, shots / f"04_device_step{step}.png")
    assert seen == [False] * STALENESS + [True]
    assert history_ids(driver)[len(user["history"])] == user["next_item"]["item_id"]


def test_search_by_keyboard_and_a_bad_history_shows_the_api_error(driver, server, api, shots) -> None:
    open_page(driver, server)
    search = driver.find_element(By.ID, "search")
    search.send_keys("movie 1")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results [role=option]")) == 10,
             what="the search results")
    search.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ENTER)  # the second match: Movie 10
    wait_for(driver, lambda d: history_ids(d) == [10], what="Movie 10 in the history")
    assert list_items(driver, "history") == [(10, "Movie 10")]
    full_page_png(driver, shots / "05_search.png")
    bad = N_ITEMS + 979
    type_into(driver, "ids", f"1, {bad}")
    driver.find_element(By.ID, "use-ids").click()
    wait_for(driver, lambda d: len(history_ids(d)) == 2, what="the typed history")
    driver.find_element(By.ID, "recommend").click()
    expected = api.post("/v1/recommend", json={"history": [1, bad], "k": K}).json()["error"]["message"]
    assert error_text(driver) == f"Error 422: {expected}" and str(bad) in expected
    assert low_contrast(driver) == []
    full_page_png(driver, shots / "06_bad_history.png")


def test_a_long_history_sends_its_newest_items(driver, server, api, shots) -> None:
    open_page(driver, server)
    ids = [1 + (i * 3) % N_ITEMS for i in range(205)]
    type_into(driver, "ids", ", ".join(map(str, ids)))
    driver.find_element(By.ID, "use-ids").click()
    wait_for(driver, lambda d: len(history_ids(d)) == 205, what="the typed history")
    assert "The newest 200 are sent." in driver.find_element(By.ID, "history-source").text
    recommend(driver)
    sent = api.post("/v1/recommend", json={"history": ids[-200:], "k": K}).json()
    assert sent["decision"]["cache_hit"]  # the page asked for exactly this
    assert [i for i, _ in list_items(driver, "list-fused")] == [it["item_id"] for it in sent["items"]]
    Select(driver.find_element(By.ID, "next-item")).select_by_index(0)
    driver.find_element(By.ID, "step").click()
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")) == 1, what="the device step")
    cell = driver.find_elements(By.CSS_SELECTOR, "#steps tbody td")[2].text
    assert cell.startswith("reused the cached list"), cell  # found through the LLM's window, not the whole history
    full_page_png(driver, shots / "07_long_history.png")


def test_store_page(driver, server, api, shots) -> None:
    open_page(driver, server)
    driver.find_element(By.ID, "nav-store").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "page-store").is_displayed(), what="the store page")
    facts = driver.find_element(By.ID, "store-facts").text
    info = api.get("/v1/store").json()
    assert f"users\n{info['n_users']}" in facts and f"items\n{info['n_items']}" in facts and "lsc4rec" in facts
    assert "none loaded" in facts
    links = {a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#page-store a")}
    assert {f"{server}/docs", f"{server}/metrics"} <= links
    full_page_png(driver, shots / "08_store.png")


def test_explain_with_a_reasoning_model(driver, reasoning_server, shots) -> None:
    import httpx

    open_page(driver, reasoning_server)
    assert "loaded (Explain works)" in driver.find_element(By.ID, "store-facts").get_attribute("textContent")
    type_into(driver, "user-id", "4")
    driver.find_element(By.ID, "load-user").click()
    wait_for(driver, lambda d: history_ids(d), what="user 4's history")
    recommend(driver)
    top = list_items(driver, "list-fused")[0]
    driver.find_element(By.ID, "explain").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#explanation h3"), 120, what="the explanation")
    with httpx.Client(base_url=reasoning_server, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as api:
        ex = api.post("/v1/explain", json={"history": history_ids(driver), "item_id": top[0]}).json()
    box = driver.find_element(By.ID, "explanation")
    assert box.find_element(By.TAG_NAME, "h3").text == f"Why “{top[1]}”"
    paragraphs = [p.text for p in box.find_elements(By.TAG_NAME, "p")]
    assert paragraphs[0] == ex["trace"].strip() or paragraphs[0] == ex["trace"]
    assert paragraphs[1].startswith(f"p(yes) with thinking {ex['p_yes']:.3f}, without {ex['p_yes_direct']:.3f}; "
                                    f"adapter {ex['adapter']}")
    full_page_png(driver, shots / "09_explain.png")
