"""Open a rendered report in headless Chromium: it paints, every image loads, nothing is fetched from elsewhere.

Chromium is Debian's package (/usr/bin/chromium). Without it the test skips locally but fails under CI.
Images and requests are read through the Chrome DevTools Protocol over a minimal stdlib WebSocket
client, so the page is checked exactly as written (no injected probe) and no dependency is added.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL import ImageStat

from ganlab.report.render import render_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT = 15.0


def _load_test_render():
    """The hand-built ReportData lives in test_render.py; load it by path so any pytest import mode works."""
    spec = importlib.util.spec_from_file_location("_ganlab_test_render", Path(__file__).with_name("test_render.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chromium_path() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser test (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


class CDP:
    """Just enough RFC 6455 (client side, text frames) to speak the DevTools protocol to one page."""

    def __init__(self, ws_url: str):
        rest = ws_url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv_some()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id, self.events = 0, []

    def _recv_some(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv_some()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        length = struct.pack("!B", 0x80 | n) if n < 126 else (
            struct.pack("!BH", 0x80 | 126, n) if n < 65536 else struct.pack("!BQ", 0x80 | 127, n))
        mask = os.urandom(4)  # clients must mask every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def _message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)  # servers never mask
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode == 9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0, 1, 2):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send_frame(1, json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            msg = self._message()
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module; yields a function that loads a page and reports what happened."""
    exe = chromium_path()
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = open(profile.parent / "chromium.log", "wb")
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "about:blank"], stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start its DevTools server"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        cdp = CDP(page["webSocketDebuggerUrl"])
        cdp.call("Network.enable")
        cdp.call("Page.enable")

        def visit(index: Path) -> dict:
            cdp.events.clear()
            cdp.call("Page.navigate", url=index.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired")
            images = cdp.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete,"
                " width: i.naturalWidth}))"))["result"]["value"]
            requests = [e["params"]["request"]["url"] for e in cdp.events
                        if e.get("method") == "Network.requestWillBeSent"]
            text = cdp.call("Runtime.evaluate", returnByValue=True,
                            expression="document.body.innerText")["result"]["value"]
            return {"images": images, "requests": requests, "text": text}

        yield visit
        cdp.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    helpers = _load_test_render()
    series = {"fid": [(1, 40.0), (2, 30.5), (3, 25.25)], "inception score": [(1, 2.0), (2, 2.5), (3, 3.0)]}
    return render_report(helpers.make_report_data(across_epochs=series), tmp_path_factory.mktemp("browser") / "report")


def test_screenshot_is_not_blank(rendered, tmp_path):
    profile = tmp_path / "profile"
    shot = rendered.parent / "screenshot.png"
    subprocess.run([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1200,2000", rendered.resolve().as_uri()],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=True)
    with PILImage.open(shot) as image:
        image = image.convert("RGB")
        assert image.size == (1200, 2000)
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"
        assert max(ImageStat.Stat(image).stddev) > 10


def test_images_load_and_nothing_is_fetched_elsewhere(browser, rendered):
    seen = browser(rendered)
    assert len(seen["images"]) >= 7, seen["images"]  # history, samples, figure, 2 images, 2 across-epochs plots
    broken = [img["src"] for img in seen["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    folder = rendered.parent.resolve().as_uri() + "/"
    assert seen["requests"] and seen["requests"][0] == rendered.resolve().as_uri()
    outside = [url for url in seen["requests"] if not url.startswith(folder)]
    assert not outside, f"requests outside the report folder: {outside}"


def test_the_checks_notice_a_bad_page(browser, rendered, tmp_path):
    """A control: the same harness flags a broken image, a remote request and a file outside the folder."""
    secret = tmp_path / "outside.png"
    PILImage.new("RGB", (4, 4), "red").save(secret)
    bad = rendered.parent / "bad.html"
    bad.write_text(rendered.read_text().replace(
        "</main>", f'<img src="assets/missing.png"><img src="http://127.0.0.1:9/remote.png">'
                   f'<img src="{secret.resolve().as_uri()}"></main>'))
    try:
        seen = browser(bad)
    finally:
        bad.unlink()
    not_loaded = [i["src"] for i in seen["images"] if i["width"] == 0]
    assert not_loaded[:2] == ["assets/missing.png", "http://127.0.0.1:9/remote.png"], not_loaded
    folder = rendered.parent.resolve().as_uri() + "/"
    outside = [url for url in seen["requests"] if not url.startswith(folder)]
    assert "http://127.0.0.1:9/remote.png" in outside and secret.resolve().as_uri() in outside


ANALYSES = ("latent-walk", "guided-backprop", "vector-arithmetic", "forget-concept", "filter-health")


def test_the_analysis_sections_render_in_a_browser(browser, tiny_run, tmp_path):
    """A real report with the paper's section-6 analyses: every section is there and all its images load."""
    from ganlab.plugin import registry
    from ganlab.report import make_report

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [[0, 0, 8, 8]], "1": [[8, 8, 8, 8]]}))
    registry.reset()
    data, out = make_report(tiny_run, only=list(ANALYSES), out=tmp_path / "report", device="cpu", progress=False,
                            settings={"forget-concept.boxes": str(boxes), "forget-concept.detector": "",
                                      "forget-concept.bank": "20", "vector-arithmetic.train_limit": "300",
                                      "guided-backprop.filters": "3", "guided-backprop.top": "2"})
    assert {run.name: run.status for run in data.components} == dict.fromkeys(ANALYSES, "ok")
    seen = browser(out / "index.html")
    broken = [img["src"] for img in seen["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    html = (out / "index.html").read_text()
    for index, name in enumerate(ANALYSES, 1):
        assert f'id="component-{name}"' in html
        shown = [img for img in seen["images"] if img["src"].startswith(f"assets/c{index:02d}-{name}-")]
        assert shown, f"{name} shows no image"


def test_the_probe_shows_every_interval_and_says_what_it_means(browser, tiny_run, tmp_path):
    """What a reader sees of svm-probe: intervals on every accuracy, D against each baseline, the legend."""
    from ganlab.plugin import registry
    from ganlab.report import make_report

    registry.reset()
    settings = {"svm-probe.kmeans_k": "16", "svm-probe.draws": "3", "svm-probe.labels_per_class": "5,all",
                "svm-probe.baselines": "pixels,kmeans", "svm-probe.umap": "false", "svm-probe.C_grid": "1e-3,1e-1"}
    data, out = make_report(tiny_run, only=["svm-probe"], out=tmp_path / "report", device="cpu", progress=False,
                            settings=settings)
    metrics = data.components[0].result.metrics
    seen = browser(out / "index.html")
    low, high = 100 * metrics["d.all.low"], 100 * metrics["d.all.high"]
    shown = seen["text"]
    assert f"{100 * metrics['d.all.accuracy']:.2f} ({low:.2f}–{high:.2f})" in shown  # all labels: an interval
    assert "±" in shown and "Trained D minus each baseline" in shown
    assert "Bands: with N labels per class, mean ± one standard deviation" in shown
    assert "95% Wilson interval over the 899 test images" in shown and "Seconds per fit" in shown
    for reading in ("D ahead", "D behind", "within noise"):
        shown = shown.replace(reading, "READING")
    assert shown.count("READING") >= 4  # one per baseline and label budget
