"""The built site in a real headless chromium: it renders from file://, the tables hold the
expected numbers, sorting and the all/correct switch work, no script errors, and a plugin named
``<script>alert(1)</script>`` shows as text and never runs.

The browser is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``),
with the standard library only. Without chromium the tests skip, unless XBENCH_REQUIRE_BROWSER=1
(CI), where they fail.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from xbench.leaderboard import build_leaderboard
from xbench.leaderboard.synthetic import table, write_run

pytestmark = pytest.mark.browser

EVIL = "<script>alert(1)</script>"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path:
        return path
    if os.environ.get("XBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail("XBENCH_REQUIRE_BROWSER=1 but no chromium on PATH: "
                    "apt-get update && apt-get install -y --no-install-recommends chromium")
    pytest.skip("chromium is not installed (apt-get install -y --no-install-recommends chromium)")


class Browser:
    """A minimal DevTools client: one page, commands with replies, events collected."""

    def __init__(self, binary: str, profile: str):
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # keep our ends away from 3 and 4, which the child must see as its protocol pipe
        r_in, w_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)

        def child_fds():
            os.dup2(r_in, 3)
            os.dup2(w_out, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(r_in)
        os.close(w_out)
        self.write, self.read = to_browser_w, from_browser_r
        self.buffer, self.next_id, self.events, self.session = b"", 0, [], None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self.read, 1 << 16)
            if not chunk:
                raise ConnectionError("chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.write, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        for i, e in enumerate(self.events):
            if e["method"] == event:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._message(deadline - time.monotonic())
            if msg.get("method") == event:
                return msg
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(event)

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre, once the element is really there (lazy
        images loading above it can move it between measuring and clicking)."""
        locate = (f"(async () => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                  " await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));"
                  " const b = e.getBoundingClientRect(); const x = b.x + b.width / 2, y = b.y + b.height / 2;"
                  " const hit = document.elementFromPoint(x, y);"
                  " return [x, y, hit !== null && (hit === e || e.contains(hit))]; })()")
        for _ in range(20):
            x, y, ready = self.js(locate)
            if ready:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{selector} never became clickable")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def errors(self) -> list[dict]:
        self.send("Runtime.evaluate", {"expression": "0"})  # flush pending events
        bad = {"Runtime.exceptionThrown", "Page.javascriptDialogOpening"}
        return [e for e in self.events if e["method"] in bad
                or (e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.write)
        os.close(self.read)


def run_with_known_numbers(path: Path) -> Path:
    """Two models; on m-a the order of "hit" means is good > EVIL > zeta, on m-b zeta is best."""
    means = {"m-a": {"good": 0.9, EVIL: 0.5, "zeta": 0.1}, "m-b": {"good": 0.6, EVIL: 0.5, "zeta": 0.95}}
    tables = []
    for model, by_method in means.items():
        for seed in (0, 1):
            cell = {"dataset_label": "toy", "model_label": model, "seed": seed,
                    "model_params": json.dumps({"variant": model, "untrained": False})}
            for method, mean in by_method.items():
                tables.append(table({**cell, "method_label": method, "metric_label": "loc", "value_name": "hit",
                                     "value": mean + np.array([-0.01, 0.01, 0.06]) * (seed + 1) - 0.02 * seed,
                                     "higher_is_better": True, "sample": [0, 1, 2], "label": [0, 1, 1],
                                     "prediction": [0, 1, 0]}, 3))
    claim = {"id": "good-beats-zeta", "claim": f"good beats {EVIL}", "source": EVIL, "metric": "loc", "value": "hit",
             "relation": "greater", "a": {"method": "good"}, "b": {"method": "zeta"}}
    return write_run(path, tables, {"plugins": [{"name": EVIL, "version": "1", "distribution": "x"}],
                                    "xbench_version": "browser-test", "claims": [claim]})


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium()
    site = build_leaderboard(run_with_known_numbers(tmp_path_factory.mktemp("run")))
    profile = tempfile.mkdtemp(prefix="xbench-chromium-")
    b = Browser(binary, profile)
    b.site = site
    yield b
    b.close()
    shutil.rmtree(profile, ignore_errors=True)


def column(browser: Browser, table: str, index: int) -> list[str]:
    return browser.js(f"Array.from(document.querySelectorAll('#{table} tbody tr'))"
                      f".map(r => r.cells[{index}].textContent.trim())")


def test_page_renders_with_expected_numbers(browser):
    browser.open((browser.site / "dataset-toy.html").as_uri())
    assert browser.js("document.querySelector('h1').textContent") == "toy"
    assert browser.js("document.querySelectorAll('table.leaderboard').length") >= 2
    methods = column(browser, "table-all-loc-hit", 0)
    assert methods[0] == "good"  # best mean rank: 1 on m-a, 2 on m-b
    first = column(browser, "table-all-loc-hit", 1)
    # good on m-a: seed 0 (0.89, 0.91, 0.96) and seed 1 (0.86, 0.90, 1.00) both average 0.92
    assert first[0].startswith("0.920") and "#1" in first[0]
    assert browser.js("getComputedStyle(document.getElementById('view-toggle')).display") != "none"
    assert browser.errors() == []


def test_sorting_by_a_column_and_back(browser):
    browser.open((browser.site / "dataset-toy.html").as_uri())
    header = "#table-all-loc-hit thead th:nth-child(3)"  # the m-b column
    browser.click(header)
    assert column(browser, "table-all-loc-hit", 0)[0] == "zeta"  # best first (higher is better)
    assert browser.js(f"document.querySelector('{header}').getAttribute('aria-sort')") == "descending"
    browser.click(header)
    assert column(browser, "table-all-loc-hit", 0)[-1] == "zeta"
    browser.click("#table-all-loc-hit thead th:nth-child(1)")  # method names, A → Z
    names = column(browser, "table-all-loc-hit", 0)
    assert names == sorted(names, key=str.lower)
    assert browser.errors() == []


def test_switch_to_correctly_classified_samples(browser):
    browser.open((browser.site / "dataset-toy.html").as_uri())
    visible = "Array.from(document.querySelectorAll('[data-view]')).filter(e => !e.hidden).map(e => e.dataset.view)"
    assert browser.js(visible) == ["all"]
    browser.click("input[name=view][value=correct]")
    assert browser.js(visible) == ["correct"]
    good = column(browser, "table-correct-loc-hit", 1)[0]
    assert good.startswith("0.890")  # samples 0 and 1 only: seed 0 (0.89, 0.91), seed 1 (0.86, 0.90)
    assert browser.errors() == []


def test_run_status_and_findings_open_the_index(browser):
    browser.open((browser.site / "index.html").as_uri())
    order = browser.js("Array.from(document.querySelectorAll('#run-status, h1, #findings, #run'))"
                       ".map(e => e.id || e.tagName)")
    assert order == ["run-status", "H1", "findings", "run"]
    assert browser.js("document.getElementById('run-status').innerText").startswith("Run complete")
    # the claim's models have no recorded accuracy: inconclusive, never scored
    assert browser.js("document.querySelector('#table-findings .badge').textContent") == "inconclusive"
    assert f"good-beats-zeta: good beats {EVIL}" in browser.js("document.getElementById('table-findings').innerText")
    assert browser.errors() == []


def test_hostile_plugin_name_is_text_and_never_runs(browser):
    for name in ("index.html", "dataset-toy.html", "provenance.html"):
        browser.open((browser.site / name).as_uri())
        browser.click("footer details summary")  # the plugin list, as a reader opens it
        footer = browser.js("document.querySelector('footer').innerText")
        assert f"{EVIL} 1 (x)" in footer, (name, footer)
        if name == "dataset-toy.html":
            assert browser.js(f"document.getElementById('table-all-loc-hit').innerText.includes({json.dumps(EVIL)})")
        assert browser.js("document.querySelectorAll('script').length") == 1  # only static/sort.js
        assert browser.js("Array.from(document.scripts).every(s => s.src.endsWith('static/sort.js'))")
    assert browser.errors() == []  # no alert() dialog, no exception, no console error


def test_the_index_and_each_dataset_page_open_with_the_rank_heatmap(browser, tmp_path):
    """The first thing under each page's title is the methods × categories heatmap, drawn (not a
    broken image), with its verification marks when the run has a record."""
    from test_leaderboard_verification import make_run

    site = build_leaderboard(make_run(tmp_path / "run"))
    first = ("(() => { const h = document.querySelector('main h1'); const f = h.nextElementSibling;"
             " const img = f && f.querySelector('img');"
             " return [f && f.id, img && img.complete, img && img.naturalWidth, img && img.getBoundingClientRect().height,"
             " f && f.querySelector('figcaption').innerText]; })()")
    for name in ("index.html", "dataset-set-a.html", "dataset-set-b.html"):
        browser.open((site / name).as_uri())
        figure, complete, width, height, caption = browser.js(first)
        assert (figure, complete) == ("glance", True), name
        assert width > 100 and height > 100, (name, width, height)
        assert caption.startswith("Which method to trust here") and "verified against an independent" in caption
    browser.open((site / "dataset-set-a.html").as_uri())
    marks = browser.js("Array.from(document.querySelectorAll('#table-overview a.mark')).map(a => a.textContent)")
    assert sorted(marks) == ["–", "✓", "✓", "✗"]
    browser.click("#table-overview a.mark-failed")
    browser.wait_for("Page.frameNavigated")
    assert browser.js("location.hash") == "#methods-bad"
    assert browser.js("document.getElementById('methods-bad').innerText").startswith("method")
    assert browser.errors() == []
