"""The status page in headless Chromium against a live server and a real agent.

Chromium and its driver are Debian's (scripts/install-chromium); Selenium drives them, with
no download of its own. The page must show the model, the Running instance and the revision,
and an invalid commit's file:line without a reload.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_server_e2e import HTTP_SERVER, WEB, GitOps, agent, cluster, free_port, wait_for

pytestmark = pytest.mark.e2e
__all__ = ["agent"]  # a fixture, imported for its name
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
    pytest.fail("Chromium and chromedriver are missing: run scripts/install-chromium", pytrace=False)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--window-size=1280,1100")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_page_shows_the_cluster_and_an_invalid_commit_without_reload(
    agent: str, tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    (tmp_path / "cluster").mkdir()
    gitops = GitOps(tmp_path / "cluster")
    low = 46000 + free_port() % 1000
    head = gitops.push(
        {
            "cluster.yaml": cluster({"local": agent}, interval="1s", ports=f"{low}-{low + 9}"),
            "web.yaml": WEB.format(replicas=1, command=HTTP_SERVER),
        },
        "one web server",
    )
    gitops.start()
    try:
        wait_for(lambda: [i["state"] for i in gitops.status()["instances"]] == ["Running"], what="web-0 Running")
        wait = WebDriverWait(browser, 10)
        browser.get(f"{gitops.url}/")
        assert browser.find_elements(By.NAME, "token") and "web-0" not in browser.page_source
        browser.find_element(By.NAME, "token").send_keys("not-the-token")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(ready.text_to_be_present_in_element((By.TAG_NAME, "main"), "not valid"))
        assert "web-0" not in browser.page_source
        browser.find_element(By.NAME, "token").send_keys((gitops.data / "token").read_text().strip())
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        wait.until(ready.text_to_be_present_in_element((By.ID, "instances"), "web-0"))
        wait.until(ready.text_to_be_present_in_element((By.ID, "instances"), "Running"))
        assert browser.current_url == f"{gitops.url}/"  # no token in the address that stays in the history
        assert "web" in browser.find_element(By.ID, "models").text
        assert "1/1" in browser.find_element(By.ID, "models").text
        assert head[:12] in browser.find_element(By.ID, "revision").text
        assert "local" in browser.find_element(By.ID, "workers").text

        page = browser.execute_script("return window.performance.timeOrigin")
        gitops.push({"web.yaml": WEB.format(replicas="two", command=HTTP_SERVER)}, "broken")
        wait.until(ready.text_to_be_present_in_element((By.ID, "error"), "web.yaml:"))
        error = browser.find_element(By.ID, "error-lines").text
        assert error.startswith("web.yaml:") and "replicas" in error
        assert browser.execute_script("return window.performance.timeOrigin") == page, "the page was reloaded"
        assert head[:12] in browser.find_element(By.ID, "revision").text  # the good revision still runs
        browser.save_screenshot(str(tmp_path / "status-page.png"))
        assert (tmp_path / "status-page.png").stat().st_size > 10_000
    finally:
        gitops.stop()
