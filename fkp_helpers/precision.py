"""Which floating-point precision to train in, chosen from the hardware.

Keras trains in one of three *dtype policies* here:

``float32``
    Everything in 32-bit floats. Right wherever the hardware has no faster narrow type: most
    laptop CPUs (no native bfloat16), Apple silicon's CPU, and NVIDIA GPUs older than Volta
    (compute capability below 7.0, such as Kaggle's free P100).
``mixed_bfloat16``
    Layers compute in bfloat16 and keep float32 variables. bfloat16 has float32's range, so no
    loss scaling is needed. Fast on CPUs with native bfloat16 instructions (the ``avx512_bf16`` or
    ``amx_bf16`` flags of recent Xeons and Zen 4) and on GPUs of compute capability 8.0 or more
    (Ampere and later: A100, RTX 30xx, L4, H100), whose tensor cores do bfloat16.
``mixed_float16``
    Layers compute in float16, variables stay float32. The fast choice on compute capability 7.x
    (Volta and Turing: V100, and the T4 that Colab and Kaggle lend for free), whose tensor cores do
    float16 but not bfloat16. float16's small range makes small gradients underflow to zero, so the
    loss is scaled up before the backward pass and the gradients scaled back: in Keras 3,
    ``Model.compile`` wraps the optimizer in a ``keras.optimizers.LossScaleOptimizer`` by itself
    when the *model's* dtype policy is ``mixed_float16`` (``compile(auto_scale_loss=True)``, the
    default; see ``keras/src/trainers/trainer.py``). The model takes the global policy when its
    layers are built, so :func:`set_global_precision_policy` must run *before* the model is built.

:func:`choose_precision` is the pure decision (pass the device details to test it);
:func:`set_global_precision_policy` reads the real hardware, prints the choice and its reason, and
sets Keras's global policy.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
"""The accepted values of ``precision`` (``fkp train --precision``); ``auto`` asks the hardware."""

CPU_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags that mean native bfloat16 arithmetic on an x86 CPU."""

BF16_MIN_CAPABILITY = (8, 0)
"""NVIDIA compute capability from which tensor cores do bfloat16 (Ampere)."""
FP16_MIN_CAPABILITY = (7, 0)
"""NVIDIA compute capability from which tensor cores do float16 (Volta)."""


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)} "
            "('auto' picks from the hardware)"
        )
    return precision


def read_cpu_flags(path: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's feature flags as text (Linux's ``/proc/cpuinfo``); ``""`` where there is none.

    macOS and Windows have no ``/proc/cpuinfo``: their CPUs then count as having no native
    bfloat16, which is true of Apple silicon and of almost all laptop x86 CPUs.
    """
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def gpu_details() -> list[dict[str, Any]]:
    """One dict per visible GPU, from TensorFlow: ``device_name`` and ``compute_capability``.

    ``compute_capability`` is a ``(major, minor)`` tuple on NVIDIA GPUs and absent on others
    (for example Apple's Metal plugin). Imports TensorFlow.
    """
    import tensorflow as tf

    out = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = dict(tf.config.experimental.get_device_details(dev))
        except Exception:  # a plugin device that reports nothing
            details = {}
        details.setdefault("device_name", dev.name)
        out.append(details)
    return out


def _capability(details: dict[str, Any]) -> tuple[int, int] | None:
    cc = details.get("compute_capability")
    if cc is None:
        return None
    try:
        major, minor = (int(v) for v in cc)
    except (TypeError, ValueError):
        return None
    return major, minor


def _gpu_label(details: dict[str, Any]) -> str:
    name = details.get("device_name") or "GPU"
    cc = _capability(details)
    return f"{name} (compute capability {cc[0]}.{cc[1]})" if cc else f"{name}"


def choose_precision(
    gpus: Sequence[dict[str, Any]] | None = None, cpu_flags: str | None = None
) -> tuple[str, str]:
    """Choose the Keras dtype policy for this hardware. Returns ``(policy, reason)``.

    gpus: one dict per GPU as :func:`gpu_details` returns them (``compute_capability`` as
    ``(major, minor)``, ``device_name``); ``None`` asks TensorFlow; ``[]`` means no GPU.
    cpu_flags: the CPU's flags (``/proc/cpuinfo`` text or a space-separated list); ``None``
    reads ``/proc/cpuinfo`` (none on macOS or Windows: no flags).

    With GPUs, all of them must support the choice (``tf.distribute`` runs the same model on
    each), so the least capable one decides: compute capability 8.0 or more ``mixed_bfloat16``,
    7.x ``mixed_float16``, below 7.0 or unknown ``float32``. Without a GPU:
    ``mixed_bfloat16`` when the CPU has ``avx512_bf16`` or ``amx_bf16``, else ``float32``.
    """
    if gpus is None:
        gpus = gpu_details()
    if gpus:
        caps = [_capability(g) for g in gpus]
        many = f"{len(gpus)} GPUs, the least capable: " if len(gpus) > 1 else "GPU "
        if any(c is None for c in caps):
            unknown = next(g for g, c in zip(gpus, caps, strict=True) if c is None)
            return (
                "float32",
                f"{many}{_gpu_label(unknown)} reports no NVIDIA compute capability, so no "
                "known fast narrow type: float32",
            )
        lowest = min(range(len(gpus)), key=lambda i: caps[i])
        cc, label = caps[lowest], many + _gpu_label(gpus[lowest])
        if cc >= BF16_MIN_CAPABILITY:
            return "mixed_bfloat16", f"{label}: tensor cores do bfloat16 (8.0 and up)"
        if cc >= FP16_MIN_CAPABILITY:
            return (
                "mixed_float16",
                f"{label}: tensor cores do float16 but not bfloat16 (7.x); Keras adds loss "
                "scaling at compile",
            )
        return "float32", f"{label}: no tensor cores (below 7.0), float32 is as fast"
    if cpu_flags is None:
        cpu_flags = read_cpu_flags()
    tokens = set(cpu_flags.split())
    found = [f for f in CPU_BF16_FLAGS if f in tokens]
    if found:
        return "mixed_bfloat16", f"CPU with native bfloat16 ({', '.join(found)}), no GPU"
    return "float32", "CPU without native bfloat16 (no avx512_bf16 or amx_bf16 flag), no GPU"


def resolve_precision(
    precision: str = "auto",
    gpus: Sequence[dict[str, Any]] | None = None,
    cpu_flags: str | None = None,
) -> tuple[str, str]:
    """``(policy, reason)`` for a requested precision: ``auto`` asks :func:`choose_precision`."""
    check_precision(precision)
    if precision == "auto":
        return choose_precision(gpus, cpu_flags)
    return precision, "asked for explicitly"


def set_global_precision_policy(
    precision: str = "auto",
    *,
    gpus: Sequence[dict[str, Any]] | None = None,
    cpu_flags: str | None = None,
    verbose: bool = True,
) -> str:
    """Set Keras's **global** dtype policy and return its name.

    ``precision`` is one of :data:`PRECISIONS`; ``auto`` chooses from the hardware
    (:func:`choose_precision`). Prints the choice and the reason (``verbose=False`` to keep
    quiet). Call it before building the model: layers take the global policy when they are
    created, and ``compile`` adds loss scaling only for a model built under ``mixed_float16``.
    """
    policy, reason = resolve_precision(precision, gpus, cpu_flags)
    import keras

    keras.mixed_precision.set_global_policy(policy)
    if verbose:
        print(f"fkp: precision {policy}: {reason}", file=sys.stdout)
    return policy
