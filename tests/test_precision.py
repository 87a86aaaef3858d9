"""The precision choice, with the device details stubbed for every hardware case."""

from __future__ import annotations

import pytest

from fkp_helpers import precision as P

XEON_SPR = "flags : fpu vme sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = "flags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"
LAPTOP = "flags : fpu vme sse2 ssse3 avx avx2 fma"
AVX512_NO_BF16 = "flags : fpu sse2 avx2 avx512f avx512bw avx512_vnni"


def gpu(cc, name="GPU"):
    return {"device_name": name, "compute_capability": cc}


@pytest.mark.parametrize(
    ("gpus", "policy"),
    [
        ([gpu((7, 5), "Tesla T4")], "mixed_float16"),  # Colab / Kaggle free GPU
        ([gpu((7, 0), "Tesla V100-SXM2-16GB")], "mixed_float16"),
        ([gpu((6, 0), "Tesla P100-PCIE-16GB")], "float32"),  # Kaggle's P100
        ([gpu((3, 7), "Tesla K80")], "float32"),
        ([gpu((8, 0), "NVIDIA A100-SXM4-40GB")], "mixed_bfloat16"),
        ([gpu((8, 6), "NVIDIA GeForce RTX 3080")], "mixed_bfloat16"),
        ([gpu((8, 9), "NVIDIA L4")], "mixed_bfloat16"),
        ([gpu((9, 0), "NVIDIA H100 80GB HBM3")], "mixed_bfloat16"),
        ([gpu((12, 0), "future")], "mixed_bfloat16"),
        ([{"device_name": "METAL"}], "float32"),  # Apple's plugin: no compute capability
        ([gpu(None, "odd")], "float32"),
    ],
)
def test_gpu_cases(gpus, policy):
    # The CPU's flags do not matter once a GPU is there.
    for flags in (XEON_SPR, LAPTOP):
        got, reason = P.choose_precision(gpus, flags)
        assert got == policy
        assert gpus[0]["device_name"] in reason


def test_t4_reason_mentions_loss_scaling():
    _, reason = P.choose_precision([gpu((7, 5), "Tesla T4")], "")
    assert "7.5" in reason and "loss scaling" in reason


def test_several_gpus_least_capable_decides():
    assert P.choose_precision([gpu((8, 0)), gpu((8, 6))], "")[0] == "mixed_bfloat16"
    policy, reason = P.choose_precision([gpu((8, 0), "A100"), gpu((7, 5), "T4")], "")
    assert policy == "mixed_float16" and "T4" in reason and "2 GPUs" in reason
    assert P.choose_precision([gpu((8, 0)), gpu((6, 1))], "")[0] == "float32"
    assert P.choose_precision([gpu((8, 0)), {"device_name": "x"}], "")[0] == "float32"


@pytest.mark.parametrize(
    ("flags", "policy"),
    [
        (XEON_SPR, "mixed_bfloat16"),
        (ZEN4, "mixed_bfloat16"),
        ("amx_bf16", "mixed_bfloat16"),
        (LAPTOP, "float32"),
        (AVX512_NO_BF16, "float32"),
        ("", "float32"),  # macOS, Windows: no /proc/cpuinfo
        ("flags : avx512_bf16x", "float32"),  # whole flags only
    ],
)
def test_cpu_cases(flags, policy):
    got, reason = P.choose_precision([], flags)
    assert got == policy
    assert "CPU" in reason


def test_defaults_read_the_hardware(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "gpu_details", lambda: [gpu((7, 5), "Tesla T4")])
    assert P.choose_precision()[0] == "mixed_float16"
    monkeypatch.setattr(P, "gpu_details", lambda: [])
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\n" + XEON_SPR + "\n")
    monkeypatch.setattr(P, "read_cpu_flags", lambda: cpuinfo.read_text())
    assert P.choose_precision()[0] == "mixed_bfloat16"


def test_read_cpu_flags_without_cpuinfo(tmp_path):
    assert P.read_cpu_flags(tmp_path / "absent") == ""
    (tmp_path / "cpuinfo").write_text(ZEN4)
    assert "avx512_bf16" in P.read_cpu_flags(tmp_path / "cpuinfo")


def test_resolve_and_validation():
    assert P.resolve_precision("mixed_float16", [], LAPTOP) == (
        "mixed_float16",
        "asked for explicitly",
    )
    assert P.resolve_precision("auto", [], LAPTOP)[0] == "float32"
    with pytest.raises(ValueError, match="choose one of auto, float32, mixed_bfloat16"):
        P.resolve_precision("bfloat16")
    with pytest.raises(ValueError, match="unknown precision"):
        P.check_precision("fp16")
    assert P.PRECISIONS == ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def test_set_global_precision_policy(capsys):
    keras = pytest.importorskip("keras")
    before = keras.mixed_precision.global_policy().name
    try:
        got = P.set_global_precision_policy("auto", gpus=[gpu((7, 5), "Tesla T4")], cpu_flags="")
        assert got == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        out = capsys.readouterr().out
        assert "mixed_float16" in out and "Tesla T4" in out
        assert P.set_global_precision_policy("float32", verbose=False) == "float32"
        assert capsys.readouterr().out == ""
        with pytest.raises(ValueError):
            P.set_global_precision_policy("half")
    finally:
        keras.mixed_precision.set_global_policy(before)


def test_mixed_float16_model_gets_loss_scaling():
    """Keras 3's compile wraps the optimizer in a LossScaleOptimizer under mixed_float16."""
    keras = pytest.importorskip("keras")
    before = keras.mixed_precision.global_policy().name
    try:
        P.set_global_precision_policy("mixed_float16", verbose=False)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        P.set_global_precision_policy("mixed_bfloat16", verbose=False)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="adam", loss="mse")
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy(before)
