"""Fixtures for the export tests: a micro model (random weights, hash text encoder) saved as a
real model folder, and its ONNX export in the folder's ``onnx/`` subfolder (exported once)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

# Shapes chosen to keep an export short on 2 shared cores while keeping every code path:
# several blocks (shifted and unshifted windows), memory tokens, inpaint MLPs, chunked codec.
MICRO_DIT = dict(width=64, depth=2, heads=2, mlp_dim=128, memory_tokens=8, fourier_dim=32)
MICRO_SAME = dict(width=32, heads=2, encoder_layers=2, decoder_layers=2, mlp_hidden=64, chunk_frames=256)


def micro_pipeline():
    from sa3core.families.sa3 import ModelSettings
    from sa3core.models.dit import DiT, DiTConfig
    from sa3core.models.same import SAME, SAMEConfig
    from sa3core.pipeline import Pipeline

    torch.manual_seed(0)
    settings = ModelSettings(name="micro", text_encoder="hash", sampler="euler", steps=3)
    return Pipeline.from_parts(SAME(SAMEConfig(**MICRO_SAME)), DiT(DiTConfig(**MICRO_DIT)), settings)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    return micro_pipeline().save(tmp_path_factory.mktemp("export-models") / "micro")


@pytest.fixture(scope="session")
def micro_export(micro_model_dir) -> Path:
    """``micro_model_dir/onnx``: written (and self-checked) by the real exporter."""
    from export.onnx_export import export_onnx, load_for_export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        autoencoder, dit, settings = load_for_export(micro_model_dir)
        export_onnx(autoencoder, dit, settings, micro_model_dir / "onnx", progress=lambda _: None)
    return micro_model_dir / "onnx"
