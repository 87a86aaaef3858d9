"""The page "Try it in your browser" against ``fkp predict``, and the book's formulas, in headless
Chromium.

Serves the built book (``$FKP_BOOK_HTML``; ``make browser`` points it at ``_build/check/_build/html``,
which ``make book-check`` has just built, so nothing is built again) on a 127.0.0.1 port, opens
``book/demo.html?image=...`` in headless Chromium through the DevTools protocol, and checks that
the keypoints the page writes into ``#fkp-result`` agree with :func:`fkp_helpers.photo.predict_faces`
(what ``fkp predict`` runs) on the same photo and the same network in float32 (what the page runs)
within 0.25 px per point, in the original photo's pixels. The formulas of the conventions page are
typeset by the MathJax copied into the built book (``book/_ext/offline_math.py``), served and from
``file://``, with nothing loaded from another origin; no page shows a library's warning.

Runs when ``$FKP_BOOK_HTML`` is set. Without Chromium it is skipped with a message, except under
CI (``CI=true``), where a missing browser or a missing built book fails. To run it by hand::

    apt-get install chromium      # Debian's package
    make book-check browser

``$FKP_SCREENSHOT_DIR``: where to keep screenshots of the page (default: the test's tmp dir).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BOOK_HTML = os.environ.get("FKP_BOOK_HTML")
PAGE = "book/demo.html"
TOLERANCE_PX = 0.25  # the same float32 network: only resampling and arithmetic order differ
HOW = "install Debian's chromium (apt-get install chromium), then run `make book-check browser`"


def _need(condition: bool, why: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"{why} (CI must run the browser test: {HOW})")
        pytest.skip(f"{why}: {HOW}")


def _chromium() -> str | None:
    for name in (os.environ.get("FKP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


pytestmark = pytest.mark.skipif(
    not BOOK_HTML, reason="the browser test runs through `make browser` (sets $FKP_BOOK_HTML)"
)


# ---------------------------------------------------------------------------------------------
# A static server and a browser


class _Handler(http.server.SimpleHTTPRequestHandler):
    extra: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.extra.get(self.path.split("?")[0])
        if body is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Browser:
    """Headless Chromium driven through the DevTools protocol over a websocket."""

    def __init__(self, exe: str, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1100,1400",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.close()
                raise RuntimeError(f"Chromium did not start: {err[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.loads(r.read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"]["args"]
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def run_page(self, url: str, timeout: float = 240, until: str = "done") -> dict:
        """Open ``url`` and wait for ``#fkp-result[data-status=done]`` (``until="ready"``: the
        page has loaded and waits for the reader): its JSON and dataset."""
        self.call("Page.navigate", url=url)
        probe = (
            "(() => { const e = document.getElementById('fkp-result');"
            f" if (!e || e.dataset.status !== {json.dumps(until)} || document.location.href !== {json.dumps(url)}) return null;"
            " return {text: e.textContent, data: Object.assign({}, e.dataset),"
            " status: document.getElementById('fkp-status').textContent}; })()"
        )
        got = self.wait_for(
            probe,
            timeout=timeout,
            why=lambda: (
                f"{url}: no result; status "
                + repr(self.evaluate("document.getElementById('fkp-status')?.textContent"))
            ),
        )
        got["result"] = json.loads(got["text"]) if until == "done" else None
        return got

    def wait_for(self, expression: str, ok=bool, timeout: float = 60, why=None):
        """Evaluate ``expression`` in the page every 0.2 s until ``ok(value)`` holds; return the
        value. After ``timeout`` seconds: a TimeoutError with the last value, ``why()`` (what else
        the page shows, read then) and the page's console."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if ok(value):
                return value
            time.sleep(0.2)
        more = f"{why()}; " if why else ""
        raise TimeoutError(f"{more}not ready in {timeout} s: last {value!r}; {self.console[-5:]}")

    def screenshot(self, path: Path) -> Path:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1100,
            height=1400,
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def book() -> Path:
    html = Path(BOOK_HTML).resolve()
    _need((html / PAGE).is_file(), f"no built page {html / PAGE}")
    _need((html / "_static/fkp-demo/model/model.onnx").is_file(), "the built book has no model")
    return html


@functools.cache
def book_pages(book: Path) -> dict[str, str]:
    """Every HTML page of the built book: its path under ``book`` -> its text (read once)."""
    return {
        str(page.relative_to(book)): page.read_text(encoding="utf-8")
        for page in sorted(book.rglob("*.html"))
    }


@pytest.fixture(scope="module")
def model(book):
    """The Keras model the page's ONNX file was exported from (recorded by the build)."""
    from fkp_helpers import models

    record = json.loads((book.parent / "fkp-demo-source.json").read_text())
    path = Path(record["model_keras"])
    _need(path.is_file(), f"the book's reference model {path} is gone")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"], (
        f"{path} changed since the book was built: rebuild it"
    )
    return models.load_model(path)


@pytest.fixture(scope="module")
def model_f32(model):
    """The same network rebuilt in float32: what ``fkp export`` turned into the page's ONNX file.
    The saved model may compute in bfloat16 (mixed precision), which moves points by a tenth of a
    pixel or more, and the second look can amplify that; the page is compared with this one."""
    from fkp_helpers import export

    return export.float32_model(model)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from fkp_helpers import photo

    astronaut = photo.sample_portrait("astronaut")
    hopper = photo.sample_portrait("hopper")
    from skimage import data as skdata

    return {
        "astronaut": astronaut,
        # 7300 x 7000 = 51.1 megapixels: over the page's limit (one colour: a small PNG)
        "huge": np.full((7000, 7300, 3), 128, np.uint8),
        # two faces, 2600 px wide: the detector works on a shrunk copy, the warp pre-shrinks
        "pair": photo.collage([hopper, astronaut], height=1400),
        "coffee": skdata.coffee(),
    }


@pytest.fixture(scope="module")
def site(book, photos):
    import io

    from PIL import Image

    extra = {}
    for name, img in photos.items():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        extra[f"/__test__/{name}.png"] = buf.getvalue()
    handler = type("H", (_Handler,), {"extra": extra})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(book))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = _chromium()
    _need(exe is not None, "no Chromium found")
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = os.environ.get("FKP_SCREENSHOT_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    return tmp_path_factory.mktemp("screenshots")


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("name", ["astronaut", "pair"])
def test_page_agrees_with_fkp_predict(name, site, browser, model, model_f32, photos, shots):
    from fkp_helpers import data as fdata
    from fkp_helpers import evaluate, photo

    got = browser.run_page(f"{site}/{PAGE}?image=/__test__/{name}.png")
    browser.screenshot(shots / f"demo-{name}.png")
    page = got["result"]
    assert isinstance(page, list), page
    faces = photo.predict_faces(model_f32, photos[name])  # like with like (see model_f32)
    assert len(faces) == len(page) >= 1
    for mine, theirs in zip(faces, page, strict=True):
        assert list(mine.box) == theirs["box"]  # the same detector, the same boxes
        c = mine.crop
        assert [c.left, c.top, c.size] == [theirs["crop"][k] for k in ("left", "top", "size")]
    ours = np.array([f.keypoints for f in faces])
    page_kp = np.array([[t["keypoints"][k] for k in fdata.KEYPOINT_NAMES] for t in page])
    worst = float(evaluate.point_errors(ours, page_kp.reshape(len(page), -1)).max())
    saved = np.array([f.keypoints for f in photo.predict_faces(model, photos[name])])
    vs_saved = float(evaluate.point_errors(ours, saved).max())
    print(
        f"{name}: {len(page)} face(s), largest point difference {worst:.3f} px "
        f"(float32 vs the saved model in Python: {vs_saved:.3f} px); page "
        f"{got['data'].get('msTotal')} ms ({got['data'].get('msPerFace')} ms per face, network "
        f"{float(got['data']['msNetwork']) / int(got['data']['networkRuns']):.2f} ms per run)"
    )
    assert worst <= TOLERANCE_PX


def test_no_face_is_an_error_on_the_page(site, browser, shots):
    got = browser.run_page(f"{site}/{PAGE}?image=/__test__/coffee.png")
    browser.screenshot(shots / "demo-coffee.png")
    assert "no face found" in got["result"]["error"].lower()
    assert "No face found" in got["status"]


def test_other_origins_and_missing_images_are_errors(site, browser):
    got = browser.run_page(f"{site}/{PAGE}?image=http://example.invalid/x.png")
    assert "only images from this site" in got["result"]["error"]
    got = browser.run_page(f"{site}/{PAGE}?image=/__test__/missing.png")
    assert "404" in got["result"]["error"]


def test_opened_from_a_file_says_how_to_serve_it(book, browser):
    got = browser.run_page((book / PAGE).as_uri())
    assert "make serve" in got["result"]["error"]


def test_a_huge_photo_is_refused_with_its_size(site, browser):
    got = browser.run_page(f"{site}/{PAGE}?image=/__test__/huge.png")
    assert "7300 x 7000 pixels" in got["result"]["error"]
    assert "too large" in got["status"]


def test_a_webcam_that_cannot_start_says_why(site, browser):
    """Headless Chromium has no camera and grants none: the page must say so, not hang."""
    browser.run_page(f"{site}/{PAGE}", until="ready")  # no ?image=: it waits for the reader
    browser.evaluate("document.getElementById('fkp-webcam').click()")
    status = browser.wait_for(
        "document.getElementById('fkp-result').dataset.status", lambda v: v == "done"
    )
    assert status == "done"
    error = json.loads(browser.evaluate("document.getElementById('fkp-result').textContent"))
    assert "webcam" in error["error"].lower()


def test_the_page_shows_what_it_downloaded(site, browser, book):
    browser.run_page(f"{site}/{PAGE}?image=/__test__/astronaut.png")
    text = browser.evaluate("document.getElementById('fkp-model').textContent")
    sizes = json.loads((book / "_static/fkp-demo/sizes.json").read_text())
    total = sum(sizes.values())
    assert f"This page downloaded {total / 1e6:.1f} MB" in text
    onnx = sizes["model/model.onnx"]
    assert f"Model: {onnx / 1e6:.1f} MB" in text
    # the budget the issue set: nothing the page needs is over 2 MB but the three big files
    assert {k for k, b in sizes.items() if b > 2e6} <= {
        "model/model.onnx",
        "vendor/ort/ort-wasm-simd-threaded.wasm",
        "vendor/opencv/opencv.js",
    }


# ---------------------------------------------------------------------------------------------
# Formulas: typeset by the MathJax inside the built book (book/_ext/offline_math.py), no CDN

MATH_PAGE = "book/conventions.html"
MATH_PROBE = r"""(() => {
  const maths = [...document.querySelectorAll('.math')];
  const raw = maths.filter(m => [...m.childNodes].some(
    c => c.nodeType === Node.TEXT_NODE && /\\[(\[]/.test(c.textContent))).length;
  const fonts = [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family);
  const typeset = maths.length > 0 && maths.every(m => m.querySelector('mjx-container'));
  return {
    href: document.location.href, n: maths.length, raw, typeset,
    // MathJax's web fonts load after it has typeset: wait for them as well
    ready: typeset && document.fonts.status === 'loaded' && fonts.includes('MJXTEX'),
    scripts: [...document.scripts].map(s => s.src).filter(s => s.includes('mathjax')),
    resources: performance.getEntriesByType('resource').map(e => e.name),
    fonts,
  };
})()"""


def _typeset(browser: Browser, url: str, timeout: float = 60) -> dict:
    """Open ``url`` and wait until every ``.math`` element holds MathJax's output and MathJax's
    main font has loaded."""
    browser.call("Page.navigate", url=url)
    return browser.wait_for(
        MATH_PROBE,
        lambda got: bool(got) and got["href"] == url and got["ready"],
        timeout,
        why=lambda: f"{url}: formulas not typeset",
    )


def test_formulas_are_typeset_by_the_books_own_mathjax(site, browser, shots):
    got = _typeset(browser, f"{site}/{MATH_PAGE}")
    browser.screenshot(shots / "conventions-math.png")
    assert got["n"] >= 10 and got["raw"] == 0, got
    assert got["scripts"] == [f"{site}/_static/vendor/mathjax/tex-mml-chtml.js"]
    # everything the page loaded came from the book's own server: no CDN, no font service
    assert got["resources"] and all(r.startswith(f"{site}/") for r in got["resources"]), [
        r for r in got["resources"] if not r.startswith(f"{site}/")
    ]
    fonts = [r for r in got["resources"] if "/_static/vendor/mathjax/output/chtml/fonts/" in r]
    assert fonts and "MJXTEX" in got["fonts"] and "MJXTEX-I" in got["fonts"], got


def test_formulas_are_typeset_when_the_book_is_opened_from_a_file(book, browser):
    """The README says: open _build/html/index.html. From file:// too, MathJax and its fonts load
    (Chromium lists no file:// resources in the performance timeline: the fonts' status says it)."""
    url = (book / MATH_PAGE).as_uri()
    got = _typeset(browser, url)
    assert got["raw"] == 0 and got["scripts"] == [
        (book / "_static/vendor/mathjax/tex-mml-chtml.js").as_uri()
    ]
    assert "MJXTEX" in got["fonts"] and "MJXTEX-I" in got["fonts"], got["fonts"]


def test_no_page_of_the_book_loads_a_script_or_style_from_another_origin(book):
    """The built book is read offline: every <script src> and <link href> a page loads (scripts,
    style sheets, fonts, preloads) is a file of the book itself. Links a reader follows
    (<a href>) may go anywhere."""
    from html.parser import HTMLParser

    class Loads(HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "script" and a.get("src"):
                self.urls.append(a["src"])
            elif tag == "link" and a.get("href") and a.get("rel") != "canonical":
                self.urls.append(a["href"])

    pages = book_pages(book)
    assert len(pages) >= 10
    remote = {}
    for name, html in pages.items():
        parser = Loads()
        parser.feed(html)
        far = [u for u in parser.urls if "://" in u or u.startswith("//")]
        if far:
            remote[name] = far
    assert not remote, remote


def test_no_page_of_the_book_shows_a_warning_from_its_code(book):
    """A learner reads the cells' outputs: none of them is a library's warning (the build keeps
    stderr off the pages, but a logger can still print to the page, as TensorFlow's retracing
    warning did in chapter 7's export cell)."""
    warning = re.compile(r"WARNING:(?:tensorflow|absl|root):|\b[A-Z]\w*Warning: ")
    shown = {name: warning.findall(html) for name, html in book_pages(book).items()}
    shown = {name: found for name, found in shown.items() if found}
    assert not shown, shown
