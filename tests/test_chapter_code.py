"""The chapters' saved cells are the package's code (as d2l's saved cells are).

A code cell that starts with ``# saved in fkp_helpers.<module>`` writes out definitions that the
package keeps, tested, in that module. Each definition must be the same code as the package's
(compared as syntax trees, decorators aside), and, executed from the notebook, must compute the
same outputs as the package's for the same inputs and weights.
"""

import ast
import importlib
import json
import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
SAVED = re.compile(r"^# saved in fkp_helpers\.(\w+)")


def saved_cells():
    out = []
    for nb in NOTEBOOKS:
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            m = SAVED.match(src)
            if cell["cell_type"] == "code" and m:
                out.append((nb.name, m.group(1), src))
    return out


def _strip(node):
    node = ast.parse(ast.unparse(node)).body[0]  # a copy
    if hasattr(node, "decorator_list"):
        node.decorator_list = []
    return ast.dump(node)


def test_chapter_5_writes_out_the_network_loss_and_training_code():
    names = {
        n.name
        for _, _, src in saved_cells()
        for n in ast.parse(src).body
        if isinstance(n, ast.FunctionDef | ast.ClassDef)
    }
    for needed in (
        "masked_mse",
        "masked_l1",
        "MaskedRMSE",
        "baseline_cnn",
        "Standardize",
        "heatmap_grid",
        "SoftArgmax2D",
        "heatmap_kl",
        "HeatmapLossTrainer",
        "residual_block",
        "keypoint_resnet",
        "warmup_cosine",
        "compile_model",
        "KeepBestWeights",
        "fill_from_predictions",
    ):
        assert needed in names, f"chapter 5 no longer writes out {needed}"


@pytest.mark.parametrize(
    "notebook,module,src", saved_cells(), ids=lambda v: v if len(str(v)) < 40 else ""
)
def test_each_saved_definition_is_the_package_code(notebook, module, src):
    mod = importlib.import_module(f"fkp_helpers.{module}")
    package_tree = ast.parse(Path(mod.__file__).read_text())
    package = {
        n.name: n for n in package_tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)
    }
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            assert node.name in package, f"{notebook}: {node.name} is not in fkp_helpers.{module}"
            assert _strip(node) == _strip(package[node.name]), (
                f"{notebook}: {node.name} differs from fkp_helpers.{module}.{node.name}"
            )


def _chapter_namespace():
    ns = {}
    exec(
        "import keras\nimport numpy as np\nfrom keras import layers, ops\n"
        "from fkp_helpers.keypoints import IMAGE_SIZE, N_KEYPOINTS\n",
        ns,
    )
    for _, _, src in saved_cells():
        exec(compile(src, "<chapter cell>", "exec"), ns)
    return ns


def test_the_chapter_networks_and_loss_compute_what_the_package_computes():
    import keras

    from fkp_helpers import models

    keras.mixed_precision.set_global_policy("float32")
    ns = _chapter_namespace()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 96, 96, 1)).astype(np.float32)
    for mine, theirs in (
        (ns["baseline_cnn"](), models.baseline_cnn()),
        (
            ns["keypoint_resnet"](widths=(8, 16, 16, 16)),
            models.keypoint_resnet(widths=(8, 16, 16, 16)),
        ),
    ):
        weights = [rng.normal(0, 0.05, w.shape).astype(np.float32) for w in mine.get_weights()]
        mine.set_weights(weights)
        theirs.set_weights(weights)
        np.testing.assert_allclose(
            mine.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-4
        )
    y = rng.uniform(0, 96, (4, 30)).astype(np.float32)
    y[1, 4:] = np.nan
    p = rng.uniform(0, 96, (4, 30)).astype(np.float32)
    for loss in ("masked_mse", "masked_l1"):
        np.testing.assert_allclose(
            np.asarray(ns[loss](y, p)), np.asarray(getattr(models, loss)(y, p)), rtol=1e-6
        )
    heat = rng.normal(0, 2, (4, 24, 24, 15)).astype(np.float32)
    np.testing.assert_allclose(
        float(ns["heatmap_kl"](y, heat)), float(models.heatmap_kl(y, heat)), rtol=1e-6
    )
    from fkp_helpers import missing

    np.testing.assert_array_equal(
        ns["fill_from_predictions"](y, p), missing.fill_from_predictions(y, p)
    )
