"""Put the course's install cell first in notebooks (or update it where it is already).

    python tools/install_cell.py notebooks/01-loading.ipynb ...   # insert or update
    python tools/install_cell.py --check notebooks/*.ipynb        # exit 1 where missing or stale

The cell makes a notebook run where the course package ``fkp_helpers`` is not installed (Colab,
Kaggle's notebooks, a bare Jupyter): it installs the package from the repository named in
``_config.yml`` with ``--no-deps``, then only those of its dependencies that cannot be imported,
so the TensorFlow (and NumPy, Keras, ...) already there are kept; TensorFlow itself is installed
only where there is none. Where the package is importable (``make``, Binder) it does nothing.
``$FKP_INSTALL_SOURCE`` replaces the repository (a local path, for a test).

The cell is tagged ``remove-cell``, which Jupyter Book 1.x (myst-nb) drops from the rendered page,
input and output, while nbval and Jupyter still run it; and ``fkp-install``, by which this script
finds it again. Notebooks are written as Jupyter writes them (one-space indent), without outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "fkp-install"
TAGS = ["remove-cell", TAG]
CELL_ID = "fkp-install"

# distribution -> import name, for the package's own dependencies (pyproject.toml) and TensorFlow
IMPORT_NAMES: dict[str, str] = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "pillow": "PIL",
    "opencv-python-headless": "cv2",
    "scikit-image": "skimage",
    "tqdm": "tqdm",
    "psutil": "psutil",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}


def dependencies(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Import name -> requirement, from pyproject.toml: TensorFlow (its extra) first, then the
    package's dependencies, then the ``export`` extra (chapter 7's ONNX section).

    The cell installs a requirement only when its import name is missing, with the version bounds
    that pyproject.toml gives, so what it adds agrees with the package.
    """
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [
        *project.get("optional-dependencies", {}).get("tensorflow", []),
        *project["dependencies"],
        *project.get("optional-dependencies", {}).get("export", []),
    ]
    out = {}
    for text in reqs:
        name = Requirement(text).name
        if name not in IMPORT_NAMES:
            raise SystemExit(f"{pyproject}: add {name}'s import name to IMPORT_NAMES in {__file__}")
        out[IMPORT_NAMES[name]] = text
    return out


TEMPLATE = """\
# Course setup: where the course package is missing (Colab, Kaggle, a bare Jupyter), install it
# and keep the TensorFlow already here; where it is installed, do nothing. See the setup page.
import os

try:
    import fkp_helpers
except ImportError:
    from importlib import invalidate_caches
    from importlib.util import find_spec

    from IPython import get_ipython

    repository = "{source}"
    source = os.environ.get("FKP_INSTALL_SOURCE") or repository
    needed = {needed}
    # The package without its dependencies, then only the missing ones: nothing installed moves.
    missing = [req for name, req in needed.items() if find_spec(name) is None]
    steps = [f'--no-deps "{{source}}"'] + ([" ".join(f'"{{r}}"' for r in missing)] if missing else [])
    for args in steps:
        print(f"fkp: pip install {{args}}")
        get_ipython().run_line_magic("pip", f"install --quiet {{args}}")
    invalidate_caches()
    import fkp_helpers

    if [name for name in needed if find_spec(name) is None]:
        raise ImportError("fkp: some dependencies did not install (pip's messages above)") from None
    also = f" and {{', '.join(missing)}}" if missing else ""
    print(f"fkp: installed the course package from {{source}}{{also}}; nothing else changed")
else:
    print(f"fkp: found the course package in {{os.path.dirname(fkp_helpers.__file__)}}")
"""


def repository_source(config: Path = ROOT / "_config.yml") -> str:
    """``git+<repository url>@<branch>`` from the book's ``_config.yml``."""
    import yaml

    repo = yaml.safe_load(config.read_text())["repository"]
    url = str(repo["url"]).rstrip("/")
    branch = repo.get("branch")
    return f"git+{url}@{branch}" if branch else f"git+{url}"


def _dict_literal(d: dict[str, str]) -> str:
    items = "".join(f'        "{k}": "{v}",\n' for k, v in d.items())
    return "{\n" + items + "    }"


def cell_source(source: str | None = None) -> str:
    """The install cell's code, installing from ``source`` (default: the repository)."""
    return TEMPLATE.format(
        source=source or repository_source(), needed=_dict_literal(dependencies())
    ).rstrip("\n")


def make_cell(source: str | None = None) -> dict:
    text = cell_source(source)
    lines = text.splitlines(keepends=True)
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": CELL_ID,
        "metadata": {"tags": list(TAGS)},
        "outputs": [],
        "source": lines,
    }


def is_install_cell(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def update(nb: dict, source: str | None = None) -> dict:
    """Return ``nb`` with exactly one install cell, first; any older copy is removed."""
    cells = [c for c in nb["cells"] if not is_install_cell(c)]
    return {**nb, "cells": [make_cell(source), *cells]}


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of date")
    args = ap.parse_args(argv)
    stale = 0
    for path in args.notebooks:
        text = path.read_text(encoding="utf-8")
        new = dumps(update(json.loads(text)))
        if new == text:
            print(f"{path}: up to date")
            continue
        if args.check:
            stale += 1
            print(f"{path}: the install cell is missing or out of date")
        else:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: install cell written")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
