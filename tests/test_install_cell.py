"""The install cell: first in every notebook, a no-op where the package is, an install where not.

The cell and the script that writes it are in ``tools/install_cell.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "install_cell", ROOT / "tools" / "install_cell.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ic = _load_tool()


class FakeShell:
    """Stands in for IPython's shell: records ``%pip`` lines instead of running pip."""

    def __init__(self, on_call=None):
        self.calls: list[tuple[str, str]] = []
        self.on_call = on_call

    def run_line_magic(self, name, line):
        self.calls.append((name, line))
        if self.on_call:
            self.on_call()


@pytest.fixture
def shell(monkeypatch):
    import IPython

    fake = FakeShell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: fake)
    return fake


def run_cell(source: str) -> dict:
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, "<install cell>", "exec"), ns)
    return ns


def test_seven_notebooks():
    assert len(NOTEBOOKS) == 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell_first_in_every_notebook(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = nb["cells"][0]
    assert first["cell_type"] == "code"
    assert {"remove-cell", "fkp-install"} <= set(first["metadata"]["tags"])
    assert "".join(first["source"]) == ic.cell_source(), "stale: run tools/install_cell.py"
    assert first["outputs"] == [] and first["execution_count"] is None
    assert sum(ic.is_install_cell(c) for c in nb["cells"]) == 1


def test_no_op_where_the_package_is_installed(shell, capsys):
    run_cell(ic.cell_source())
    assert shell.calls == []
    out = capsys.readouterr().out
    assert "found the course package" in out and "pip" not in out


def test_installs_without_deps_then_only_what_is_missing(shell, monkeypatch, capsys):
    monkeypatch.setenv("FKP_INSTALL_SOURCE", "/some/checkout")
    monkeypatch.setitem(sys.modules, "fkp_helpers", None)  # `import fkp_helpers` fails
    absent = {"cv2"}

    def installed():  # the first pip call installs the package, the second cv2
        if len(shell.calls) == 1:
            sys.modules.pop("fkp_helpers", None)
        else:
            absent.clear()

    shell.on_call = installed
    find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args):
        return None if name in absent else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    run_cell(ic.cell_source())
    assert shell.calls == [
        ("pip", 'install --quiet --no-deps "/some/checkout"'),
        # with pyproject's bounds, quoted for the shell; not tensorflow: it is here
        ("pip", 'install --quiet "opencv-python-headless>=4.8,<5"'),
    ]
    out = capsys.readouterr().out
    assert "installed the course package from /some/checkout and opencv-python-headless" in out


def test_default_source_is_the_repository_of_config():
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert ic.repository_source().startswith(f"git+{url.rstrip('/')}")
    assert f'"{ic.repository_source()}"' in ic.cell_source()


def test_dependencies_are_the_package_dependencies_tensorflow_and_export():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = set(project["dependencies"]) | set(extras["tensorflow"]) | set(extras["export"])
    needed = ic.dependencies()
    assert set(needed.values()) == reqs
    assert needed["tensorflow"].startswith("tensorflow>=") and needed["cv2"].startswith("opencv")
    for name in needed:  # every import name is real (all are installed here)
        assert importlib.util.find_spec(name) is not None, name


def test_script_is_idempotent_and_checks(tmp_path, capsys):
    nb = {
        "cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# Title"]}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "x.ipynb"
    path.write_text(ic.dumps(nb))
    assert ic.main(["--check", str(path)]) == 1
    assert ic.main([str(path)]) == 0
    once = path.read_text()
    assert ic.main([str(path)]) == 0 and path.read_text() == once
    assert ic.main(["--check", str(path)]) == 0
    cells = json.loads(once)["cells"]
    assert [c["id"] for c in cells] == ["fkp-install", "a"]
    # an older cell is replaced, not duplicated
    cells[0]["source"] = ["print('old')"]
    path.write_text(ic.dumps({**nb, "cells": [cells[1], cells[0]]}))
    assert ic.main([str(path)]) == 0 and path.read_text() == once
