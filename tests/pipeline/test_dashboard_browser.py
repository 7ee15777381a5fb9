"""The dashboard in a real browser (Debian's headless Chromium, driven by selenium and
chromium-driver) against the real pipeline: nginx -> the fluentd stand-in -> LocalStack's
Kinesis -> its mapping -> the handler -> its S3, and query/dashboard.py as a host process
on a free loopback port. What the page's charts and tables show equals the query tool's
answers over the same window; a failing API shows a clear message, not empty charts.

UPDATE_SCREENSHOT=1 saves the screenshot this test takes as image/dashboard.png (the
README's); otherwise it goes to the test's temporary folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support.net import free_port, wait_until
from support.query_data import QUERY
from support.tools import require

pytestmark = pytest.mark.localstack

ROOT = QUERY.parent
# needed as root in a container; the rest keep Chromium from calling home
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
]


class DashboardProcess:
    def __init__(self, endpoint: str, bucket: str, function: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
        target = ["--endpoint-url", endpoint, "--bucket", bucket, "--function", function]
        self.proc = subprocess.Popen(
            [sys.executable, str(QUERY / "dashboard.py"), "--host", "127.0.0.1", "--port", str(self.port), *target],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_until(self.healthy, 30), self.proc.stderr.read() if self.proc.poll() is not None else "no answer"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stderr.close()


@pytest.fixture
def browser(tmp_path, uplot):
    chromium = require("chromium", "the dashboard's browser test; apt-get install -y chromium chromium-driver")
    chromedriver = require("chromedriver", "drives Chromium; apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def uplot() -> None:
    dist = QUERY / "assets" / "node_modules" / "uplot" / "dist"
    if not (dist / "uPlot.iife.min.js").is_file():
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=QUERY / "assets", check=True)


def tool(endpoint: str, bucket: str, start: str, end: str, sql: str) -> list[dict]:
    """The query tool's (./start.sh query's) answer over [start, end), as JSON rows."""
    sys.path.insert(0, str(QUERY))
    import logs_query

    out = io.StringIO()
    code = logs_query.main(
        [
            "--endpoint-url",
            endpoint,
            "--bucket",
            bucket,
            "--quiet",
            "--format",
            "json",
            "--from",
            start,
            "--to",
            end,
            sql,
        ],
        out=out,
    )
    assert code == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def page_state(driver) -> dict:
    """What the page shows: its numbers, and what its request chart draws per class."""
    return driver.execute_script(
        """
        const d = window.dashboard, text = (id) => document.getElementById(id).textContent;
        const chart = d.charts["chart-requests"];
        const drawn = {};
        if (chart) {  // stacked: each series is a running sum; a class is the step from the one below
          const labels = chart.plot.series.map((s) => s.label), data = chart.plot.data;
          const order = ["2xx", "3xx", "4xx", "5xx", "1xx"];
          let below = data[0].map(() => 0);
          for (const c of order) {
            const top = data[labels.indexOf(c)];
            drawn[c] = top.reduce((sum, v, i) => sum + v - below[i], 0);
            below = top;
          }
        }
        const first = document.querySelector("#top-path tbody tr");
        return {
          updates: d.updates, failed: d.failed, window: d.data && d.data.traffic,
          totals: Object.fromEntries(["2xx", "3xx", "4xx", "5xx"].map((c) => [c, Number(text("total-" + c))])),
          requests: Number(text("total-requests")), drawn,
          canvases: document.querySelectorAll(".uplot canvas").length,
          top: first ? [...first.children].map((td) => td.textContent) : null,
          errors: Number(text("errors-total")),
          failure: document.getElementById("failure").hidden ? null : text("failure"),
          latency: document.getElementById("latency-note").hidden ? null : text("latency-note"),
        };
        """
    )


def test_the_page_shows_what_the_query_tool_answers_and_says_when_it_cannot(start_pipeline, browser, tmp_path):
    # given traffic through the real pipeline: the realistic mix, and lines that do not parse
    pipeline = start_pipeline()
    # a longer run for the README's screenshot: a few minutes of bars instead of one
    duration = "150" if os.environ.get("UPDATE_SCREENSHOT") == "1" else "6"
    mix = ["--rate", "40", "--duration", duration, "--seed", "21"]
    sent = subprocess.run(
        [sys.executable, str(QUERY / "traffic.py"), "--url", f"http://127.0.0.1:{pipeline.nginx.port}", *mix],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0, sent.stderr
    with pipeline.nginx.access_log.open("a", encoding="utf-8") as log:
        log.write("this is not an access-log line\nneither is this one\n")
    lines = len(pipeline.nginx.log_lines())
    assert wait_until(lambda: len(pipeline.records()) + len(pipeline.errors()) >= lines, 90)
    pipeline.settle()
    dash = DashboardProcess(pipeline.endpoint, pipeline.names.bucket, pipeline.names.function)
    try:
        # when Chromium opens the dashboard for the last 15 minutes and its charts are drawn
        browser.get(dash.url + "/#15m")
        assert wait_until(lambda: page_state(browser)["updates"] >= 1, 60), page_state(browser)
        state = page_state(browser)
        assert state["canvases"] >= 2 and state["failure"] is None
        # then it shows what the query tool answers over the same window
        start, end = state["window"]["start"], state["window"]["end"]
        bucket = pipeline.names.bucket
        classes = tool(
            pipeline.endpoint,
            bucket,
            start,
            end,
            "SELECT (status // 100)::VARCHAR || 'xx' AS class, count(*) AS n FROM logs GROUP BY 1",
        )
        expected = {row["class"]: row["n"] for row in classes}
        assert sum(expected.values()) > 200
        assert {c: n for c, n in state["totals"].items() if n} == {c: n for c, n in expected.items() if c != "1xx"}
        assert {c: n for c, n in state["drawn"].items() if n} == expected
        assert state["requests"] == sum(expected.values())
        import logs_query

        (top_path, *_) = tool(pipeline.endpoint, bucket, start, end, logs_query.TOP_PATHS_PLAIN)
        assert state["top"] == [top_path["path"], str(top_path["requests"]), str(top_path["errors"])]
        (errors,) = tool(pipeline.endpoint, bucket, start, end, "SELECT count(*) AS n FROM errors")
        assert state["errors"] == errors["n"] >= 2
        # the stack's nginx logs request times (main_timed): the latency chart is drawn
        assert state["latency"] is None
        # the README's screenshot, from this run
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, ROOT / "image" / "dashboard.png")
        # when the API stops answering, the page says so over its (now stale) numbers
        dash.stop()
        assert wait_until(lambda: page_state(browser)["failure"] is not None, 30)
        assert "Could not load the dashboard's data" in page_state(browser)["failure"]
        assert "not current" in page_state(browser)["failure"]
    finally:
        dash.stop()
    # and a page whose API fails from the start shows the message and no chart at all
    broken = DashboardProcess(pipeline.endpoint, "no-such-bucket", pipeline.names.function)
    try:
        browser.get(broken.url + "/#1h")
        assert wait_until(lambda: page_state(browser)["failure"] is not None, 30)
        state = page_state(browser)
        assert state["canvases"] == 0 and state["updates"] == 0
        assert "no bucket no-such-bucket" in state["failure"] and "Nothing below is data" in state["failure"]
    finally:
        broken.stop()
    assert Path(shot).stat().st_size > 10_000
