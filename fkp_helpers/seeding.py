"""One place to seed everything: Python's ``random``, NumPy and TensorFlow/Keras.

The same seed gives the same split, the same augmentation and, with TensorFlow's op determinism
switched on (:func:`enable_op_determinism`, a process-wide setting that slows training), bitwise
the same training run on a CPU.

What a running interpreter cannot do: Python's string hashing is seeded by ``PYTHONHASHSEED``
when the interpreter *starts*, so setting it here would change nothing. Nothing in this package
depends on hash order; the Makefile exports ``PYTHONHASHSEED=0`` for the processes it starts.
"""

from __future__ import annotations

import random
import sys

import numpy as np

DEFAULT_SEED = 2026


def seed_everything(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global state and, if it is imported, TensorFlow/Keras
    (``keras.utils.set_random_seed``). Returns a NumPy ``Generator`` seeded with ``seed`` for the
    caller's own draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


def enable_op_determinism() -> None:
    """Make TensorFlow's ops deterministic for the rest of this process (global, slower) and use
    one inter-op thread when TensorFlow has not started its thread pools yet."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: the setting cannot change any more
        pass


def rng(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """A NumPy generator for ``seed``: use it instead of the global ``np.random`` state."""
    return np.random.default_rng(seed)
