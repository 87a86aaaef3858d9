"""Build step of the page "Try it in your browser" (``book/demo.md``).

When an HTML build has finished (Sphinx's ``build-finished`` event: every notebook has run, so
chapter 5's reference run exists), this writes ``<outdir>/_static/fkp-demo/``:

* ``demo.js``, ``demo.css``: the page's own code, from ``book/_static/demo/``;
* ``model/model.onnx``, ``model/fkp-model.json``: the book's reference model exported by
  ``python -m fkp_helpers.export --reference`` (a separate process: TensorFlow stays out of the
  Sphinx process), reused from ``<cache dir>/web/models`` while the model is unchanged;
* ``vendor/``: ONNX Runtime Web and OpenCV.js, pinned in ``web-assets.lock.json`` and checked
  against their npm integrity hashes (:mod:`web_assets`), cached in ``<cache dir>/web/npm``;
* the two Haar cascades of ``fkp predict``, copied from the installed OpenCV (same files);
* ``astronaut.png``: scikit-image's public-domain portrait, for the page's sample button;
* ``sizes.json``: the bytes of each of these files, which the page shows;

and, beside the HTML folder (not published), ``fkp-demo-source.json``: which ``model.keras`` was
exported, with its SHA-256, for ``tests/test_browser.py``.

Nothing of this is committed; a build without the page in ``_toc.yml`` skips the step.
``$FKP_DEMO_MODEL``: a ``model.keras`` to put on the page instead of the reference run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
PAGE = "book/demo"
FOLDER = "fkp-demo"
HERE = Path(__file__).resolve().parent
PAGE_FILES = HERE.parent / "_static" / "demo"
SIZES = "sizes.json"


def build_demo(out: Path, model: str | None = None) -> dict[str, int]:
    """Write the demo's folder ``out`` (see the module's docstring). ``model``: a model.keras to
    export instead of the book's reference run. Returns ``{relative path: bytes}``."""
    sys.path.insert(0, str(HERE))
    try:
        import web_assets
    finally:
        sys.path.remove(str(HERE))
    import cv2
    from PIL import Image
    from skimage import data as skdata

    out.mkdir(parents=True, exist_ok=True)
    for f in PAGE_FILES.iterdir():
        if f.suffix in (".js", ".css"):
            shutil.copyfile(f, out / f.name)
    web_assets.install(out / "vendor", used_by="demo")
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"):
        shutil.copyfile(Path(cv2.data.haarcascades) / name, out / name)
    Image.fromarray(skdata.astronaut()).save(out / "astronaut.png")
    source = ["--model", model] if model else ["--reference"]
    cmd = [sys.executable, "-m", "fkp_helpers.export", *source, "--out", str(out / "model")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise ExtensionError(
            "fkp_demo: exporting the reference model failed:\n" + done.stderr[-4000:]
        )
    # Which model.keras this is, for tests/test_browser.py: beside the HTML, never published.
    result = json.loads(done.stdout.strip().splitlines()[-1])
    record = out.parent.parent.parent / "fkp-demo-source.json"
    record.write_text(json.dumps({**result["source"], "measured": result["measured"]}, indent=1))
    files = {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    files.pop(SIZES, None)
    # What the page downloads, measured here: it shows the reader the sizes.
    (out / SIZES).write_text(json.dumps(dict(sorted(files.items())), indent=1) + "\n")
    return files


def _build_finished(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html" or PAGE not in app.env.found_docs:
        return
    out = Path(app.outdir) / "_static" / FOLDER
    try:
        files = build_demo(out, os.environ.get("FKP_DEMO_MODEL") or None)
    except ExtensionError:
        raise
    except Exception as e:  # a download, a hash, a missing package: say which, and stop
        raise ExtensionError(f"fkp_demo: {e}") from e
    total = sum(files.values())
    LOGGER.info(f"fkp_demo: {len(files)} files, {total / 1e6:.1f} MB in _static/{FOLDER}")


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", _build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # python book/_ext/fkp_demo.py OUT [MODEL]: the folder alone
    for name, size in sorted(build_demo(Path(sys.argv[1]), *sys.argv[2:3]).items()):
        print(f"{size / 1e6:8.2f} MB  {name}")
