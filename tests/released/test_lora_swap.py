"""Pipeline.drop_loras: a server swaps adapter sets between jobs on one loaded model."""

from pathlib import Path

import numpy as np
import pytest

from sa3core.errors import Sa3Error
from sa3core.pipeline import Pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
LORA = FIXTURES / "lora"


def test_dropping_an_unmerged_set_gives_the_base_back_bit_for_bit_and_takes_another():
    pipeline = Pipeline.load(FIXTURES / "small", bf16=False)

    def take():
        return pipeline.generate("dusty breakbeat", 4410, steps=2, seed=1)

    base = take()
    pipeline.use_loras([(LORA / "bora.safetensors", 1.0)], merge=False)
    adapted = take()
    pipeline.drop_loras()
    assert pipeline.loras is None
    np.testing.assert_array_equal(take(), base)
    pipeline.use_loras([(LORA / "lora.safetensors", 0.5), (LORA / "dora-rows.safetensors", 1.0)], merge=False)
    other = take()
    assert np.abs(adapted - base).max() > 0.05 and np.abs(other - adapted).max() > 0.05
    pipeline.drop_loras()
    np.testing.assert_array_equal(take(), base)
    pipeline.drop_loras()  # nothing applied: nothing to do


def test_merged_adapters_cannot_be_dropped():
    pipeline = Pipeline.load(FIXTURES / "small", bf16=False, loras=[LORA / "lora.safetensors"])
    with pytest.raises(Sa3Error, match="load the model again"):
        pipeline.drop_loras()
