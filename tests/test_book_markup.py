"""The book's MyST markup is well formed before the (slow) book build reads it.

A glue role with a broken backtick, such as ``{glue:text}`key:.3f} px``, is only
caught by ``jupyter-book build`` after every notebook has executed; this check
reads the sources in a second.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))

# {glue}`key`, {glue:text}`key:.3f`, {glue:figure} is a directive and not matched here.
ROLE = re.compile(r"\{glue(?::(?:text|any|md|math))?\}")
# a key, or another page's key (path::key, which then needs a format: myst-nb splits at the
# last colon), then an optional format
WELL_FORMED = re.compile(
    r"`(?:[A-Za-z_][A-Za-z0-9_]*(?::[^`\s{}:]*)?|[^`\s:]+\.ipynb::[A-Za-z_][A-Za-z0-9_]*:[^`\s{}:]+)`"
)


def _markdown(path):
    if path.suffix == ".md":
        return [path.read_text(encoding="utf-8")]
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def _bad_roles(text):
    bad = []
    for match in ROLE.finditer(text):
        rest = text[match.end() :]
        if not WELL_FORMED.match(rest):
            bad.append(text[match.start() : match.end() + 40])
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_glue_role_names_a_key_between_two_backticks(path):
    bad = [role for cell in _markdown(path) for role in _bad_roles(cell)]
    assert not bad, f"{path.name}: malformed glue roles: {bad}"


def test_the_check_catches_a_missing_backtick():
    assert _bad_roles("one look gives {glue:text}`val:.3f} px and {glue:text}`b:.3f` px")
    assert not _bad_roles("gives {glue:text}`val:.3f` px and {glue}`n` faces")
    page = "/notebooks/05-training.ipynb"
    assert not _bad_roles(f"{{glue:text}}`{page}::epochs:d` epochs")
    assert _bad_roles(f"{{glue:text}}`{page}::epochs` epochs")  # no format: key read as 'epochs'


# Decimals a chapter may type: geometry of the frame and settings of the code, not measurements.
CONSTANTS = {"0.5", "-0.5", "95.5", "47.5", "1.5", "0.85", "0.9", "0.99", "0.01"}


def _typed_decimals(text):
    text = re.sub(r"\{glue(?::\w+)?\}`[^`]*`", "", text)  # glued: computed by a cell
    text = re.sub(r"\$[^$]*\$", "", text)  # formulas
    text = re.sub(r"`[^`]*`", "", text)  # code
    return [m for m in re.findall(r"-?\d+\.\d+", text) if m not in CONSTANTS]


@pytest.mark.parametrize("path", [p for p in SOURCES if p.suffix == ".ipynb"], ids=lambda p: p.name)
def test_no_markdown_cell_types_a_measured_decimal(path):
    typed = [d for cell in _markdown(path) for d in _typed_decimals(cell)]
    assert not typed, f"{path.name}: decimals typed by hand (glue them from a cell): {typed}"


def test_the_decimal_check_catches_a_typed_figure():
    assert _typed_decimals("the model reaches 1.52 px") == ["1.52"]
    assert not _typed_decimals("it reaches {glue:text}`rmse:.2f` px about $x = 47.5$, `lr=0.001`")


NOTEBOOKS = [p for p in SOURCES if p.suffix == ".ipynb"]


def _unclean_cells(nb: dict) -> list[str]:
    """What keeps a notebook from being committed clean: cells without a unique id (nbformat
    4.5 needs one), code cells with outputs or an execution count."""
    bad, seen = [], set()
    for i, cell in enumerate(nb["cells"]):
        cid = cell.get("id")
        if not cid or cid in seen:
            bad.append(f"cell {i}: missing or repeated id {cid!r}")
        seen.add(cid)
        if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"]):
            bad.append(f"cell {i}: outputs or an execution count")
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_valid_and_committed_clean(path):
    import nbformat

    nb = json.loads(path.read_text(encoding="utf-8"))
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5)
    nbformat.validate(nb)
    assert _unclean_cells(nb) == []


def test_the_clean_check_catches_a_missing_id_and_an_output():
    cells = [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ""},
        {"cell_type": "code", "metadata": {}, "source": "", "outputs": [], "execution_count": None},
        {"cell_type": "code", "id": "a", "metadata": {}, "source": "", "outputs": [{}]},
    ]
    cells[2]["execution_count"] = 3
    assert _unclean_cells({"cells": cells}) == [
        "cell 1: missing or repeated id None",
        "cell 2: missing or repeated id 'a'",
        "cell 2: outputs or an execution count",
    ]
