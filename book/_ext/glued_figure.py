"""``{glued-figure} path/to/notebook.ipynb::key``: a numbered, captioned figure pasted from another
page's glued output.

myst-nb 1.4 pastes across pages only with ``{glue:any}`` + ``:doc:`` (no caption, no figure
number), and the image it points at is written only when the source page also displays it; a
figure glued with ``glue(key, fig, display=False)`` comes out as a broken link. This directive
wraps myst-nb's own pending cross-page reference in a figure (so the caption and numbering work,
and a missing key is still myst-nb's build warning), and writes the glued PNG where the reference
points, once the pages have been executed.
"""

from __future__ import annotations

import hashlib
from binascii import a2b_base64
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from myst_nb.ext.glue.crossref import read_glue_cache
from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)
CLASS = "glued-figure"


class GluedFigure(SphinxDirective):
    """Arguments: ``<notebook path relative to this page>::<glue key>``; content: the caption."""

    required_arguments = 1
    has_content = True
    option_spec = {
        "name": directives.unchanged,
        "width": directives.length_or_percentage_or_unitless,
        "alt": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        doc, sep, key = self.arguments[0].partition("::")
        if not sep or not doc or not key:
            raise self.error(f"expected 'notebook-path::key', got {self.arguments[0]!r}")
        try:
            ref = create_pending_glue_ref(
                self.state.document, self.get_source_info()[0], self.lineno, doc, key
            )
        except PendingGlueReferenceError as exc:
            raise self.error(str(exc)) from exc
        figure = nodes.figure("", ref, classes=[CLASS])
        figure["glue_doc"], figure["glue_key"] = ref["refdoc"], key
        for opt in ("width", "alt"):
            if opt in self.options:
                figure[f"glue_{opt}"] = self.options[opt]
        self.set_source_info(figure)
        if self.content:
            parsed = nodes.Element()
            self.state.nested_parse(self.content, self.content_offset, parsed)
            first = parsed[0]
            if not isinstance(first, nodes.paragraph):
                raise self.error("the caption must be a paragraph")
            caption = nodes.caption(first.rawsource, "", *first.children)
            caption.source, caption.line = first.source, first.line
            figure += caption
            if len(parsed) > 1:
                figure += nodes.legend("", *parsed[1:])
        self.add_name(figure)
        return [figure]


def _write_glued_images(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """After myst-nb resolved the references: write each glued PNG where its image points."""
    if app.builder.format != "html":
        return
    for figure in doctree.findall(nodes.figure):
        if CLASS not in figure["classes"]:
            continue
        output = read_glue_cache(app.env.mystnb_config.output_folder, figure["glue_doc"]).get(
            figure["glue_key"]
        )
        png = output and output.get("data", {}).get("image/png")
        if not png:
            continue  # myst-nb has already warned that the key is missing
        data = a2b_base64(png)
        target = Path(app.builder.outdir, app.builder.imagedir, hashlib.sha256(data).hexdigest())
        target = target.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_bytes(data)
        for image in figure.findall(nodes.image):
            for opt in ("width", "alt"):
                if f"glue_{opt}" in figure:
                    image[opt] = figure[f"glue_{opt}"]


def setup(app: Sphinx) -> dict:
    app.add_directive("glued-figure", GluedFigure)
    app.connect("doctree-resolved", _write_glued_images)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
