#!/usr/bin/env python3
"""The dashboard in a real browser (headless Chromium through selenium),
against a running api-server and job-runner (scripts/browser_test.sh starts
them). Logs in; creates an import from an uploaded file and opens its page
with rejected lines; watches a running import's progress bar advance and
cancels it; retries a failed job; logs out; checks that a page without a
session is refused. Screenshots go to target/ui-screenshots/.

Environment: UI_BASE (http://127.0.0.1:PORT), UI_KEY (an API key),
UI_BIG_KEY (an S3 key of a CSV large enough to watch), UI_BAD_LINES (a local
CSV with rejected lines), UI_SHOTS (the screenshot folder).
"""

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["UI_BASE"]
KEY = os.environ["UI_KEY"]
BIG_KEY = os.environ["UI_BIG_KEY"]
BAD_LINES = os.environ["UI_BAD_LINES"]
SHOTS = os.environ.get("UI_SHOTS", "target/ui-screenshots")


def log(msg):
    print(f"ui_test: {msg}", flush=True)


def api(method, path, body=None):
    req = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def create_import(s3_key, retry_count):
    return api(
        "POST",
        "/common/jobs/create",
        {"job_type": "insert_csv_file", "job_data": {"s3_key": s3_key}, "retry_count": retry_count},
    )["data"]["uuid"]


def job(uuid):
    return api("GET", f"/common/jobs/{uuid}")["data"]


def wait_for(what, check, timeout=120, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900",
        f"--user-data-dir={tempfile.mkdtemp(prefix='ui-test-chromium-')}",
    ]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    wait = WebDriverWait(driver, 30)
    checks = 0
    try:
        # 1. no session: the dashboard sends the browser to the login
        driver.get(BASE + "/ui/jobs")
        assert driver.current_url.endswith("/ui/login"), driver.current_url
        # a wrong key is refused
        driver.find_element(By.ID, "api_key").send_keys("not-the-key")
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(EC.presence_of_element_located((By.ID, "login-error")))
        checks += 1
        # 2. log in
        driver.find_element(By.ID, "api_key").send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(EC.presence_of_element_located((By.ID, "total-jobs")))
        cookie = driver.get_cookie("connectra_ui_session")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
        assert cookie["value"] != KEY
        log("logged in; the session cookie is HttpOnly and SameSite=Strict")
        checks += 1

        # 3. an import from an uploaded file, through the presigned upload; its page lists rejected lines
        driver.get(BASE + "/ui/imports/new")
        driver.find_element(By.ID, "file").send_keys(os.path.abspath(BAD_LINES))
        driver.find_element(By.ID, "retry_count").clear()
        driver.find_element(By.ID, "retry_count").send_keys("0")
        driver.find_element(By.ID, "create-import").click()
        wait.until(EC.alert_is_present()).accept()
        wait.until(lambda d: "notice=created" in d.current_url)
        bad_uuid = driver.current_url.split("/ui/jobs/")[1].split("?")[0]
        assert job(bad_uuid)["data"]["s3_key"].endswith("bad_lines.csv")
        wait_for("the uploaded import to finish", lambda: job(bad_uuid)["status"] in ("completed", "failed"))
        assert job(bad_uuid)["status"] == "completed", job(bad_uuid)
        driver.refresh()
        rows = driver.find_elements(By.CSS_SELECTOR, "#rejections tbody tr")
        assert len(rows) >= 1, "the page lists the rejected lines"
        report = driver.find_element(By.ID, "report-link").get_attribute("href")
        assert report.endswith(f"/ui/jobs/{bad_uuid}/report"), report
        log(f"import {bad_uuid} from the upload form: completed, {len(rows)} rejected lines shown")
        checks += 1
        # the report link is a presigned S3 download of the rejected lines
        driver.get(report)
        wait_for("the report", lambda: "line" in driver.page_source.lower(), timeout=15)
        driver.back()

        # 4. a running import's progress bar advances without a reload; then cancel it
        big = create_import(BIG_KEY, 0)
        driver.get(BASE + f"/ui/jobs/{big}")
        bar = f"progress-{big}"

        # htmx replaces the bar every poll, so an element found a moment ago may be gone (stale) by the time
        # its attributes are read: read them in one script, from whatever element is there now
        def bar_now():
            return driver.execute_script(
                "const e = document.getElementById(arguments[0]);"
                "if (!e) return null;"
                "const f = e.querySelector('.figures');"
                "return [e.dataset.status, e.dataset.rows, f ? f.textContent : ''];",
                bar,
            )

        def rows_now():
            now = bar_now()
            return (None, 0) if now is None else (now[0], int(now[1]))

        wait_for("the import to run", lambda: rows_now()[0] == "processing" and rows_now()[1] > 0, timeout=60)
        # mark the page: a reload would lose this, an htmx swap does not
        driver.execute_script("document.body.dataset.marker = 'same-page'")
        first = rows_now()[1]
        second = wait_for("the bar to move", lambda: rows_now()[1] > first and rows_now()[1], timeout=30)
        assert driver.execute_script("return document.body.dataset.marker") == "same-page"
        figures = " ".join(bar_now()[2].split())
        assert "rows/s" in figures and "%" in figures, figures
        driver.save_screenshot(os.path.join(SHOTS, "running-job.png"))
        log(f"progress bar moved from {first} to {second} rows without a reload: {figures!r}")
        checks += 1
        driver.find_element(By.ID, "cancel").click()
        wait.until(EC.alert_is_present()).accept()
        wait.until(lambda d: "notice=cancel" in d.current_url)
        wait_for("the cancelled import to stop", lambda: job(big)["status"] == "failed", timeout=60)
        assert job(big)["job_response"].get("cancelled") is True
        assert job(big)["rows_processed"] < 10**9
        log(f"cancelled the running import {big} from the dashboard")
        checks += 1

        # 5. a failed job (its file does not exist), retried from its page
        failed = create_import("uploads/ui-test-missing.csv", 0)
        wait_for("the import of a missing file to fail", lambda: job(failed)["status"] == "failed")
        attempts = job(failed)["attempts"]
        driver.get(BASE + f"/ui/jobs/{failed}")
        errors = driver.find_elements(By.CSS_SELECTOR, "#runtime-errors li")
        assert errors, "the failed job's page shows its runtime errors"
        driver.save_screenshot(os.path.join(SHOTS, "failed-job.png"))
        driver.find_element(By.ID, "retry").click()
        wait.until(EC.alert_is_present()).accept()
        wait.until(lambda d: "notice=retried" in d.current_url)
        wait_for("the retry to run", lambda: job(failed)["attempts"] > attempts, timeout=60)
        log(f"retried the failed job {failed}: attempts {attempts} -> {job(failed)['attempts']}")
        checks += 1

        # 6. the list filters, and the overview (screenshot)
        driver.get(BASE + "/ui/jobs?status=completed")
        uuids = [r.get_attribute("data-uuid") for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
        assert bad_uuid in uuids and big not in uuids, uuids
        driver.get(BASE + "/ui")
        total = int(driver.find_element(By.ID, "total-jobs").text)
        assert total >= 3, total
        tz = driver.find_element(By.ID, "tz").text
        assert "browser" in tz, tz
        driver.save_screenshot(os.path.join(SHOTS, "overview.png"))
        driver.set_window_size(390, 844)
        driver.save_screenshot(os.path.join(SHOTS, "overview-phone.png"))
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the phone layout scrolls sideways ({width} px)"
        driver.set_window_size(1280, 900)
        checks += 1

        # 7. log out; the old session no longer opens a page
        driver.find_element(By.ID, "logout").click()
        wait.until(lambda d: d.current_url.endswith("/ui/login"))
        driver.get(BASE + "/ui")
        assert driver.current_url.endswith("/ui/login"), driver.current_url
        stale = urllib.request.Request(BASE + "/ui", headers={"Cookie": f"connectra_ui_session={cookie['value']}"})

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(stale, timeout=10)
            raise AssertionError("a logged-out session still opened /ui")
        except urllib.error.HTTPError as e:
            assert e.code == 303 and e.headers["Location"] == "/ui/login", (e.code, e.headers)
        log("logged out; the old session cookie is refused (303 to the login)")
        checks += 1
    except Exception:
        driver.save_screenshot(os.path.join(SHOTS, "failure.png"))
        print(driver.current_url, file=sys.stderr)
        print(driver.page_source[:4000], file=sys.stderr)
        raise
    finally:
        driver.quit()
    print(f"ui_test: {checks} passed, 0 failed")


if __name__ == "__main__":
    main()
