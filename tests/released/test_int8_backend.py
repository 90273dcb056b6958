"""The released torch backend at the int8 precision (sa3core/modules/int8.py): LoRA adapters
reach the int8 DiT, merged or kept apart (strength 0 then gives the base take bit for bit, as a
daemon's jobs without adapters need); layers whose weights did not change are not packed again;
a daemon packs them before it listens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.precision import compare
from sa3core.modules.int8 import Int8Linear, int8_layers, int8_supported
from sa3core.pipeline import Pipeline

pytestmark = pytest.mark.skipif(not int8_supported(), reason="torch has no x86 int8 kernels on this machine")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora" / "lora.safetensors"  # adapts every DiT Linear but layers.1.ff and the inpaint MLPs
N = 2 * 44_100


def take(pipeline: Pipeline, seed: int = 0) -> np.ndarray:
    return pipeline.generate("dry kick drum", N, steps=4, seed=seed)[0]


def same_take(reference: np.ndarray, other: np.ndarray) -> bool:
    found = compare(reference, other)
    return found["corr"] >= 0.999 and found["log_mel_l1"] <= 0.01


def test_a_merged_lora_is_packed_into_the_int8_layers():
    int8 = Pipeline.load(FIXTURES / "small", loras=[(LORA, 1.0)], int8=True)
    fp32 = Pipeline.load(FIXTURES / "small", loras=[(LORA, 1.0)], bf16=False)
    base = take(Pipeline.load(FIXTURES / "small", bf16=False))
    adapted = take(int8)
    assert same_take(take(fp32), adapted)
    assert not same_take(base, adapted)  # the adapter is heard: the comparison can fail
    assert len(int8_layers(int8.backend._dit())) == 5 * len(int8.backend.dit.transformer.layers)


def test_loras_kept_apart_run_beside_the_int8_layers_and_nothing_is_packed_twice():
    pipeline = Pipeline.load(FIXTURES / "small", int8=True)
    base = take(pipeline)
    before = int8_layers(pipeline.backend._dit())
    pipeline.use_loras([(LORA, 1.0)], merge=False)  # as a daemon does for per-job strengths
    after = int8_layers(pipeline.backend._dit())
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in after)  # not packed again
    adapted = [name for name, layer in after.items() if layer.lora is not None]
    assert adapted and not any(name.startswith("transformer.layers.1.ff.") for name in adapted)
    fp32 = Pipeline.load(FIXTURES / "small", loras=[(LORA, 1.0)], merge_loras=False, bf16=False)
    styled = take(pipeline)
    assert same_take(take(fp32), styled) and not same_take(base, styled)
    with pipeline.lora_strengths([0.0]):  # how a daemon makes a job without adapters: the base take, bit for bit
        np.testing.assert_array_equal(take(pipeline), base)
    pipeline.drop_loras()
    np.testing.assert_array_equal(take(pipeline), base)


def test_a_daemon_packs_the_int8_layers_before_it_listens():
    from sa3.cli.serve import load_models
    from sa3core.backends import cpu_has_bf16

    (pipeline,) = load_models([str(FIXTURES / "small")], "torch").values()
    expected = "bf16" if cpu_has_bf16() else "int8"  # the default precision of this CPU
    assert pipeline.backend.precision == expected
    if expected == "int8":
        assert any(isinstance(m, Int8Linear) for m in pipeline.backend._dit_run.modules())
        assert pipeline.backend._autoencoder_run is not None  # SAME's copy too
    one_shot = Pipeline.load(FIXTURES / "small", int8=True).backend
    assert one_shot._dit_run is None and one_shot._autoencoder_run is None  # one-shot commands: at the first use
