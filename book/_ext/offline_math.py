"""MathJax from the built book itself, not from a CDN (Sphinx extension).

Sphinx's default ``mathjax_path`` is a jsDelivr address, so a reader without a network (a train,
a classroom, the machine that built the book) sees every formula as raw TeX. ``_config.yml``
sets ``mathjax_path`` to a path relative to ``_static``; when an HTML build has finished, this
copies MathJax there: the packages that ``web-assets.lock.json`` marks ``used_by: "math"``
(pinned, checked against npm's integrity hash and cached by :mod:`web_assets`, like the demo's
packages) go into ``<outdir>/_static/vendor/``. MathJax finds its fonts and the extensions it
loads on demand beside its own script, so the book typesets offline, from a server or from
``file://``.

A build whose ``mathjax_path`` is a full URL is left alone (someone chose a CDN on purpose); a
relative ``mathjax_path`` that the installed packages do not provide fails the build by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
VENDOR = "vendor"


def is_local(mathjax_path: str) -> bool:
    """Whether ``mathjax_path`` names a file of the built book (not ``https://``, ``//`` or
    ``file:``): Sphinx reads such a path relative to ``_static``."""
    return "://" not in mathjax_path and not mathjax_path.startswith(("//", "file:"))


def install_mathjax(static_dir: Path, mathjax_path: str) -> dict[str, int]:
    """Copy the ``math`` packages into ``static_dir/vendor`` and check that ``mathjax_path``
    (relative to ``static_dir``) is among them. Returns ``{path under vendor: bytes}``."""
    sys.path.insert(0, str(HERE))
    try:
        import web_assets
    finally:
        sys.path.remove(str(HERE))
    files = web_assets.install(static_dir / VENDOR, used_by="math")
    if not (static_dir / mathjax_path).is_file():
        raise ExtensionError(
            f"offline_math: mathjax_path {mathjax_path!r} is not a file of the installed MathJax "
            f"(the lock's 'math' packages install {len(files)} files under _static/{VENDOR}/)"
        )
    return files


def _build_finished(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    path = app.config.mathjax_path
    if not is_local(path):
        LOGGER.info(f"offline_math: mathjax_path is {path}, not a local file: nothing to copy")
        return
    try:
        files = install_mathjax(Path(app.outdir) / "_static", path)
    except ExtensionError:
        raise
    except Exception as e:  # a download, a hash, a missing file: say which, and stop
        raise ExtensionError(f"offline_math: {e}") from e
    total = sum(files.values())
    LOGGER.info(f"offline_math: MathJax, {len(files)} files, {total / 1e6:.1f} MB in _static/")


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", _build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
