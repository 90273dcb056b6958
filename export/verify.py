"""The export checks itself: reload every written file, run it at two lengths, compare to torch.

A part passes when ``max |exported - torch| <= tolerance * (1 + max |torch|)`` (absolute for
outputs near one, relative for large ones). The measured differences go into the manifest;
any failure raises :class:`Sa3Error` naming the part, the length and the difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sa3core.errors import Sa3Error

# The encoder's log-magnitude front end turns float32 summation-order differences of its DFT in
# near-silent bins into latent differences of ~1e-4 (float32 eager agrees with float64 eager to
# 1e-7: this is onnxruntime's order, not an export error), so its check is 10x looser.
PART_TOLERANCE_FACTOR = {"same_encoder": 10.0}
CHECK_FRAMES = (3, 17)  # two lengths that differ from the traced one and from each other (17: not a window multiple)
CHECK_TOKENS = (4, 9)


def torch_reference(part: str, autoencoder, dit, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """What the eager model gives for ``inputs`` (the same call path the torch backend uses)."""
    from sa3core.models.dit import Condition
    from sa3core.text import TEXT_ENCODERS

    with torch.inference_mode():
        if part == "dit_condition":
            cond = dit.encode_condition(*inputs)
            outs = [cond.duration, cond.mask, torch.stack(cond.keys), torch.stack(cond.values)]
        elif part == "dit_step":
            x, t, duration, mask, keys, values, latents, keep, frame_mask, *music = inputs
            cond = Condition(duration, mask, list(keys.unbind(0)), list(values.unbind(0)), *music)
            outs = [dit(x, t, cond, latents, keep, frame_mask)]
        elif part == "same_encoder":
            outs = [autoencoder.encode(inputs[0], chunk_frames=0)]
        elif part == "same_decoder":
            latents = inputs[0]
            spectra = autoencoder.head_spectra(autoencoder.decoder_outputs(latents), latents=latents)
            outs = [autoencoder.decode(latents, chunk_frames=0), *spectra]
        elif part == "text_encoder":
            encoder = TEXT_ENCODERS.get("minilm")()
            ids, mask = inputs
            outs = [encoder._bert(ids, mask) * mask[..., None]]
        else:
            raise ValueError(f"unknown part {part!r}")
    return [o.detach().cpu().numpy() for o in outs]


def compare(part: str, got: list[np.ndarray], want: list[np.ndarray], tolerance: float, where: str) -> float:
    """Largest scaled difference; Sa3Error when a shape, a mask or a value is off."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            raise Sa3Error(f"export check failed: {part} {where} gives shape {g.shape}, torch {w.shape}; re-export")
        if w.dtype == bool:
            if not np.array_equal(g, w):
                raise Sa3Error(f"export check failed: {part} {where} mask differs from torch; re-export")
            continue
        diff = float(np.abs(g.astype(np.float64) - w).max()) if w.size else 0.0
        if not np.isfinite(diff) or diff > tolerance * (1.0 + float(np.abs(w).max())):
            raise Sa3Error(f"export check failed: {part} {where} differs from torch by {diff:.3g} (> {tolerance:g})")
        worst = max(worst, diff)
    return worst


def verify_onnx(folder: Path, manifest, autoencoder, dit) -> None:
    """Run every part of the ONNX export in ``folder`` at two lengths; record the differences."""
    from sa3core.onnx_backend import open_session

    from .onnx_export import inputs_at

    generator = torch.Generator().manual_seed(1)
    for part, spec in manifest.parts.items():
        session = open_session(Path(folder) / spec.file)
        worst = 0.0
        for frames, tokens in zip(CHECK_FRAMES, CHECK_TOKENS):
            batch = 1 if frames == CHECK_FRAMES[0] else 3  # the batch is dynamic too
            inputs = inputs_at(part, dit, batch, frames, tokens, generator)
            feeds = {s.name: t.numpy() for s, t in zip(spec.inputs, inputs, strict=True)}
            got = session.run(None, feeds)
            want = torch_reference(part, autoencoder, dit, inputs)
            tolerance = manifest.tolerance * PART_TOLERANCE_FACTOR.get(part, 1.0)
            worst = max(worst, compare(part, got, want, tolerance, f"at {frames} frames"))
        spec.checked_max_abs_diff = worst
