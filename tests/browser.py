"""Headless Chromium for the web page's tests: Debian's ``chromium`` driven by Selenium through ``chromium-driver``.

Nothing is downloaded: the browser and its driver are the system packages (``make browser-deps`` installs them).
Also a command that screenshots the page of a running server, for the docs::

    python -m tests.browser --url http://127.0.0.1:8000 --user 0 --steps 2 --out docs/images/ui.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

NOT_INSTALLED = "Chromium is not installed (Debian packages chromium and chromium-driver: `make browser-deps`)"
# the flags that keep Chromium off the network and quiet on a machine with no internet
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) when both are installed, else None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(profile: Path, width: int = 1280, height: int = 1000):
    """A Selenium driver of a fresh headless Chromium with its own empty profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(NOT_INSTALLED)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(paths[1]), options=options)


def wait_for(driver, condition, timeout: float = 60, what: str = "the page"):
    """Wait until ``condition(driver)`` is truthy; on timeout fail with the page's error box and what was awaited."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shown = driver.execute_script("const e = document.querySelector('#error'); return e && !e.hidden ? "
                                      "e.textContent : '(no error shown)'")
        raise AssertionError(f"timed out waiting for {what}; the page's error box: {shown}") from None


def full_page_png(driver, out: Path) -> Path:
    """A screenshot of the whole page (the window grown to the document's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(int(height) + 120, 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return out


def screenshot_recommendation(url: str, user: int, out: Path, k: int = 10, steps: int = 1) -> Path:
    """Open the page, load ``user``, recommend ``k``, take ``steps`` device steps (each adds the first choice: the
    user's real next item, then the top recommendation) and save the screenshot (what the docs show)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with tempfile.TemporaryDirectory() as profile:
        driver = start_chromium(Path(profile), 1360, 1000)
        try:
            driver.get(f"{url}/ui/")
            wait_for(driver, lambda d: d.find_element(By.ID, "user-range").text, what="the store to load")
            field = driver.find_element(By.ID, "user-id")
            field.clear()
            field.send_keys(str(user))
            driver.find_element(By.ID, "load-user").click()
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#history li"), what="the history")
            k_field = driver.find_element(By.ID, "k")
            k_field.clear()
            k_field.send_keys(str(k))
            driver.find_element(By.ID, "recommend").click()
            wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#list-fused li")) == k, 300,
                     what="the recommendation")
            for n in range(1, steps + 1):
                Select(driver.find_element(By.ID, "next-item")).select_by_index(0)
                driver.find_element(By.ID, "step").click()
                wait_for(driver, lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")) == n, 300,
                         what=f"device step {n}")
            return full_page_png(driver, out)
        finally:
            driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the web page of a running `tandem serve` after one "
                                     "recommendation (for the docs).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--user", type=int, default=0, help="known user to load (default: 0)")
    parser.add_argument("--k", type=int, default=10, help="items to recommend (default: 10)")
    parser.add_argument("--steps", type=int, default=1, help="device steps after the recommendation (default: 1)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    print(screenshot_recommendation(args.url.rstrip("/"), args.user, args.out, args.k, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
