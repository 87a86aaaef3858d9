"""One place to seed everything: Python, NumPy, TensorFlow/Keras.

The same seed gives the same split, the same augmentation and (with ``deterministic=True`` on a
CPU) bitwise the same training run.
"""

from __future__ import annotations

import os
import random

import numpy as np

DEFAULT_SEED = 2026


def seed_everything(
    seed: int = DEFAULT_SEED, *, deterministic: bool = False
) -> np.random.Generator:
    """Seed Python's ``random``, NumPy and, if it is imported, TensorFlow/Keras.

    With ``deterministic=True`` TensorFlow's ops are made deterministic and inter-op parallelism is
    set to one thread (needed for bitwise repeatability on a CPU; slower). Returns a NumPy
    ``Generator`` seeded with ``seed`` for the caller's own draws.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import sys

    if "tensorflow" in sys.modules or "keras" in sys.modules or deterministic:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
            try:
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # already initialised: the setting cannot change any more
                pass
    return np.random.default_rng(seed)


def rng(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """A NumPy generator for ``seed``: use it instead of the global ``np.random`` state."""
    return np.random.default_rng(seed)
